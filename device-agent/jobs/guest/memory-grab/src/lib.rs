//! `memory-grab` (hostile): grows its linear memory 16 pages (1 MiB) at a time, writing
//! to every new page, until the host refuses, then panics the way an allocator does
//! when it runs out. The executor must report OutOfMemory, not crash.
#![no_std]

use core::arch::wasm32;

fn main() -> Result<(), i32> {
    loop {
        let old = wasm32::memory_grow(0, 16);
        if old == usize::MAX {
            break;
        }
        // Touch every new page so a lazy host really commits it.
        for page in old..old + 16 {
            let addr = page * 65536;
            // SAFETY: the page was just added to linear memory 0; no Rust object lives there.
            unsafe { core::ptr::write_volatile(addr as *mut u8, 1) };
        }
    }
    panic!("out of memory at {} pages", wasm32::memory_size(0));
}

fleet_job::entry!(main);
