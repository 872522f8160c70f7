//! `bad-pointer` (hostile): hands the host a pointer range outside its memory. The
//! host must trap the job, never read out of bounds or panic itself.
#![no_std]

fn main() -> Result<(), i32> {
    // SAFETY: deliberately wrong; that is the point of this job. The host only reads
    // (and refuses) the range, it never dereferences it on the guest's behalf.
    unsafe { fleet_job::raw::log(0xFFFF_FF00 as *const u8, 4096) };
    fleet_job::output(b"the host accepted a bad pointer");
    Ok(())
}

fleet_job::entry!(main);
