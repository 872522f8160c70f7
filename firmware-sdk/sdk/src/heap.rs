//! The global allocator, with a high-water mark.
//!
//! The agent decodes envelopes, verifies signatures and (later) instantiates Wasm
//! modules on the heap, so the heap is the RAM figure that grows with input. The
//! fleet's size budget (640 KiB flash, 256 KiB RAM) is only checkable if the firmware
//! can say how much heap it ever used: [`TrackedHeap`] wraps `embedded-alloc`'s
//! linked-list allocator and records the peak of bytes in use.
//!
//! `fetch_max` needs atomic read-modify-write, which ARMv7-M (Cortex-M3/M4/M7) and
//! ARMv8-M have; a Cortex-M0 board would track the peak inside a critical section.

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use embedded_alloc::LlffHeap;

/// A linked-list heap that remembers the most bytes it ever had in use.
pub struct TrackedHeap {
    heap: LlffHeap,
    initialized: AtomicBool,
    size: AtomicUsize,
    peak: AtomicUsize,
}

/// What the heap has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// The heap's size in bytes.
    pub size: usize,
    /// Bytes in use now.
    pub used: usize,
    /// The most bytes ever in use (the high-water mark).
    pub peak: usize,
}

impl TrackedHeap {
    /// A heap with no memory yet; give it some with [`Self::init`].
    pub const fn empty() -> Self {
        Self {
            heap: LlffHeap::empty(),
            initialized: AtomicBool::new(false),
            size: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Hands the heap its memory. Returns `false` (and ignores `memory`) if the heap
    /// already has memory: the allocator must never be given a second region.
    pub fn init<const N: usize>(&self, memory: &'static mut [MaybeUninit<u8>; N]) -> bool {
        if self.initialized.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.size.store(N, Ordering::Relaxed);
        #[allow(unsafe_code)]
        // SAFETY: `memory` is a `'static` exclusive borrow, so nothing else uses the
        // region for the rest of the program, and the flag above makes this the only
        // call to `init`, as `LlffHeap::init` requires.
        unsafe {
            self.heap.init(memory.as_mut_ptr() as usize, N)
        };
        true
    }

    /// The heap's size, use and high-water mark.
    pub fn stats(&self) -> HeapStats {
        HeapStats {
            size: self.size.load(Ordering::Relaxed),
            used: self.heap.used(),
            peak: self.peak.load(Ordering::Relaxed),
        }
    }
}

impl Default for TrackedHeap {
    fn default() -> Self {
        Self::empty()
    }
}

#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to `LlffHeap`, which upholds the
// `GlobalAlloc` contract; the peak is bookkeeping only.
unsafe impl GlobalAlloc for TrackedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { self.heap.alloc(layout) };
        if !ptr.is_null() {
            self.peak.fetch_max(self.heap.used(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}
