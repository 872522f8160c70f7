//! The example fleet jobs, as WebAssembly bytes.
//!
//! Each module is compiled from the Rust sources in `guest/` (the `fleet-job` guest
//! library and one crate per job) by this crate's build script, for
//! `wasm32-unknown-unknown` in release mode; nothing here is a committed binary. The
//! executor's tests and benchmarks run them on both runtimes, and a developer can push
//! them to a fleet to try it out.
//!
//! | job | does | expected outcome |
//! |---|---|---|
//! | [`HELLO`] | outputs `hello from {device id}`, logs a line | success |
//! | [`CSV_SUMMARY`] | reads input `readings` (`timestamp,value` lines), outputs `count=.. min=.. max=.. mean=.. skipped=..` | success |
//! | [`SUM_COMPUTE`] | xorshift64* sum over N iterations (arg 0, default 1 000 000), outputs `n=N sum=HEX` | success, same output everywhere |
//! | [`INFINITE_LOOP`] | spins forever | out of fuel, or timeout |
//! | [`MEMORY_GRAB`] | grows memory until refused, then panics | out of memory |
//! | [`DEEP_RECURSION`] | unbounded recursion | trap (stack overflow) |
//! | [`BAD_POINTER`] | calls `log` with an out-of-bounds range | trap |
//! | [`WINDOW_CLASSIFY`] | reads input `readings`, classifies its last 16 values with an ONNX model through wasi-nn, outputs `class=.. scores=.. samples=..` | success where the device offers wasi-nn; `Unsupported` elsewhere (microcontrollers) |
#![no_std]

macro_rules! job {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// `hello`: outputs `hello from {device id}` and logs a line.
pub const HELLO: &[u8] = job!("hello.wasm");
/// `csv-summary`: summarises the data input `readings`.
pub const CSV_SUMMARY: &[u8] = job!("csv_summary.wasm");
/// `sum-compute`: a deterministic compute loop; argument 0 is the iteration count.
pub const SUM_COMPUTE: &[u8] = job!("sum_compute.wasm");
/// `infinite-loop` (hostile): never returns.
pub const INFINITE_LOOP: &[u8] = job!("infinite_loop.wasm");
/// `memory-grab` (hostile): grows memory until refused.
pub const MEMORY_GRAB: &[u8] = job!("memory_grab.wasm");
/// `deep-recursion` (hostile): recurses until the call stack is exhausted.
pub const DEEP_RECURSION: &[u8] = job!("deep_recursion.wasm");
/// `bad-pointer` (hostile): passes an out-of-bounds pointer to the host.
pub const BAD_POINTER: &[u8] = job!("bad_pointer.wasm");
/// `window-classify`: classifies the data input `readings` as steady, rising or falling
/// with the ONNX model it carries (`guest/window-classify/model`), through wasi-nn.
pub const WINDOW_CLASSIFY: &[u8] = job!("window_classify.wasm");
/// The ONNX model `window-classify` carries (input `window`: f32 [1, 16]; output
/// `scores`: f32 [1, 3], softmax over steady, rising, falling), for running it outside
/// Wasm (the inference benchmark's peer).
pub const WINDOW_CLASSIFIER_ONNX: &[u8] = include_bytes!("../guest/window-classify/model/window-classifier.onnx");

const ALL: &[(&str, &[u8])] = &[
    ("hello", HELLO),
    ("csv-summary", CSV_SUMMARY),
    ("sum-compute", SUM_COMPUTE),
    ("infinite-loop", INFINITE_LOOP),
    ("memory-grab", MEMORY_GRAB),
    ("deep-recursion", DEEP_RECURSION),
    ("bad-pointer", BAD_POINTER),
    ("window-classify", WINDOW_CLASSIFY),
];

/// Every job, by name.
pub fn all() -> &'static [(&'static str, &'static [u8])] {
    ALL
}

/// The job called `name`, if there is one.
pub fn get(name: &str) -> Option<&'static [u8]> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}
