//! Example fleet jobs as plain programs, compiled to WASI preview 1: in C, and one in
//! Rust with its standard library.
//!
//! Each is built from `c/` by this crate's build script with clang
//! (`--target=wasm32-wasi`) against wasi-libc, exactly as a user builds one:
//!
//! ```sh
//! clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -Wl,-z,stack-size=8192 -o csv_summary.wasm c/csv_summary.c
//! ```
//!
//! (Debian: `apt-get install clang lld wasi-libc libclang-rt-dev-wasm32`.) Nothing here
//! is a committed binary. The small stack (8 KiB, not wasm-ld's 64 KiB) lets a program fit
//! the one 64 KiB page of memory a microcontroller gives a job.
//!
//! | job | does | expected outcome |
//! |---|---|---|
//! | [`HELLO`] | prints `hello from C` and its arguments, logs a line; 14 KB (`fputs`, not `printf`), so it runs on boards too | success |
//! | [`CSV_SUMMARY`] | the Rust `csv-summary` example in C: reads `/inputs/readings`, prints the same `count=.. min=.. max=.. mean=.. skipped=..` | success |
//! | [`CSV_SUMMARY_RUST`] | the same csv-summary as a std Rust program (`rust/`, `cargo build --release --target wasm32-wasip1`) | success, the same output |
//! | [`CLOCKS`] | prints which of the monotonic clock, the wall clock and `getentropy` the device gives it (`ok` or `unsupported` each) | success |
//! | [`SLEEPY`] | `sleep(1)`, which wasi-libc does with `poll_oneoff` | refused before it runs, the call named |
//! | [`PROBE`] | by argument: `escape` tries files outside its inputs, `loop` spins, `bomb` allocates until refused, `exit N` exits with N | as the bounds and the sandbox decide |
#![no_std]

macro_rules! job {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// `hello` in C.
pub const HELLO: &[u8] = job!("hello.wasm");
/// `csv-summary` in C.
pub const CSV_SUMMARY: &[u8] = job!("csv_summary.wasm");
/// `csv-summary` as a plain Rust program (std, `wasm32-wasip1`), from `rust/`.
pub const CSV_SUMMARY_RUST: &[u8] = job!("csv_summary_rust.wasm");
/// `probe` in C (hostile and curious behaviours, by argument).
pub const PROBE: &[u8] = job!("probe.wasm");
/// `clocks` in C (which clocks and randomness the device offers).
pub const CLOCKS: &[u8] = job!("clocks.wasm");
/// `sleepy` in C (calls `sleep`, a WASI function the fleet does not offer).
pub const SLEEPY: &[u8] = job!("sleepy.wasm");
