//! `deep-recursion` (hostile): recurses without bound until the runtime's call stack
//! is exhausted. The executor must report a Trap (stack overflow), not crash.
//!
//! The recursion uses only Wasm locals, so it exhausts the runtime's call stack rather
//! than the shadow stack in linear memory (that would be a memory fault instead), and
//! its result feeds a rotate-and-xor, so the compiler cannot turn it into a loop.
#![no_std]

#[inline(never)]
fn dive(depth: u32, stop: u32) -> u32 {
    if depth == stop {
        return depth;
    }
    dive(depth.wrapping_add(1), stop).rotate_left(3) ^ depth
}

fn main() -> Result<(), i32> {
    // `stop` comes from the host, so it is not a constant the compiler can see; with
    // no arguments it is u32::MAX, far deeper than any runtime allows.
    let stop = u32::MAX - fleet_job::arg_count() as u32;
    let result = dive(0, stop);
    let _ = fleet_job::output!("returned {result}");
    Ok(())
}

fleet_job::entry!(main);
