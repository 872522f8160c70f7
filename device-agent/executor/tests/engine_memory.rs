//! A microcontroller runs many different jobs over its life: the wasmi executor's
//! memory must not grow with each new module it compiles. Measured with a counting
//! allocator, in its own test binary so nothing else allocates meanwhile.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fleet_executor::{ExecutorConfig, Job, NoInputs, WasmiExecutor};
use fleet_schemas::DeviceId;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CURRENT.fetch_add(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `hello` made into a distinct module: a custom section (id 0) naming `n` at the end.
fn distinct_hello(n: u32) -> Vec<u8> {
    let mut module = fleet_example_jobs::HELLO.to_vec();
    let name = b"fleet-test";
    let payload = n.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    module.push(0);
    module.push(u8::try_from(size).unwrap());
    module.push(u8::try_from(name.len()).unwrap());
    module.extend_from_slice(name);
    module.extend_from_slice(&payload);
    module
}

#[test]
fn running_many_different_modules_on_the_microcontroller_config_does_not_grow_memory() {
    let config = ExecutorConfig::microcontroller(DeviceId::new("mcu-01").unwrap());
    let mut executor = WasmiExecutor::new(config).unwrap();
    let mut after = Vec::new();
    for n in 0..40 {
        let module = distinct_hello(n);
        let report = executor.run(&Job::new(&module), NoInputs).unwrap();
        assert_eq!(report.output, b"hello from mcu-01");
        drop(report);
        drop(module);
        after.push(CURRENT.load(Ordering::SeqCst));
    }
    let (early, last) = (after[2], after[39]);
    assert!(last <= early + 4096, "memory grew from {early} to {last} bytes over 37 different modules: {after:?}");
}
