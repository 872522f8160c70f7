//! Example fleet jobs as plain programs, compiled to WASI preview 1: in C, and
//! csv-summary also in Rust with its standard library and in AssemblyScript; and as
//! WASI 0.2 components: csv-summary in Rust and in JavaScript.
//!
//! Each is built from `c/` by this crate's build script with clang
//! (`--target=wasm32-wasi`) against wasi-libc, exactly as a user builds one:
//!
//! ```sh
//! clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -Wl,-z,stack-size=8192 -o csv_summary.wasm c/csv_summary.c
//! ```
//!
//! The AssemblyScript one with the compiler and its WASI shim from npm (versions pinned
//! by `assemblyscript/package-lock.json`):
//!
//! ```sh
//! cd assemblyscript && npm ci
//! npx asc assembly/csv_summary.ts --config node_modules/@assemblyscript/wasi-shim/asconfig.json -Oz --runtime stub -o csv_summary.wasm
//! ```
//!
//! The JavaScript one with ComponentizeJS (npm: `@bytecodealliance/componentize-js`,
//! pinned by `javascript/package-lock.json`), which puts the program into the
//! SpiderMonkey engine as a WASI 0.2 component:
//!
//! ```sh
//! cd javascript && npm ci && node build.mjs csv_summary.wasm
//! ```
//!
//! (Debian: `apt-get install clang lld wasi-libc libclang-rt-dev-wasm32`, and `nodejs npm`
//! for AssemblyScript and JavaScript.) Nothing here
//! is a committed binary. The small stack (8 KiB, not wasm-ld's 64 KiB) lets a program fit
//! the one 64 KiB page of memory a microcontroller gives a job.
//!
//! | job | does | expected outcome |
//! |---|---|---|
//! | [`HELLO`] | prints `hello from C` and its arguments, logs a line; 14 KB (`fputs`, not `printf`), so it runs on boards too | success |
//! | [`CSV_SUMMARY`] | the Rust `csv-summary` example in C: reads `/inputs/readings`, prints the same `count=.. min=.. max=.. mean=.. skipped=..` | success |
//! | [`CSV_SUMMARY_RUST`] | the same csv-summary as a std Rust program (`rust/`, `cargo build --release --target wasm32-wasip1`) | success, the same output |
//! | [`CSV_SUMMARY_AS`] | the same csv-summary in AssemblyScript (`assemblyscript/`, the compiler and its WASI shim from npm); 14 KB, so it runs on boards too | success, the same output |
//! | [`CSV_SUMMARY_JS`] | the same csv-summary in JavaScript (`javascript/`): a WASI 0.2 component with the SpiderMonkey engine inside, 12 MB and 145 pages (9 MiB) of memory, so for gateways | success, the same output |
//! | [`CSV_SUMMARY_COMPONENT`] | the same std Rust csv-summary built for `wasm32-wasip2`: a WASI 0.2 component (`wasi:cli/run`), for gateways | success, the same output |
//! | [`PROBE_COMPONENT`] | `rust/src/bin/probe.rs` as a component: `escape`, `loop`, `bomb`, `print N`, `exit N` | as the bounds and the sandbox decide |
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
/// `csv-summary` in AssemblyScript, from `assemblyscript/`.
pub const CSV_SUMMARY_AS: &[u8] = job!("csv_summary_as.wasm");
/// `csv-summary` in JavaScript as a WASI 0.2 component, from `javascript/`.
pub const CSV_SUMMARY_JS: &[u8] = job!("csv_summary_js.wasm");
/// `csv-summary` as a WASI 0.2 component: the same Rust source built for
/// `wasm32-wasip2`.
pub const CSV_SUMMARY_COMPONENT: &[u8] = job!("csv_summary_component.wasm");
/// `probe` in std Rust as a WASI 0.2 component (`rust/src/bin/probe.rs`, `wasm32-wasip2`).
pub const PROBE_COMPONENT: &[u8] = job!("probe_component.wasm");
/// `probe` in C (hostile and curious behaviours, by argument).
pub const PROBE: &[u8] = job!("probe.wasm");
/// `clocks` in C (which clocks and randomness the device offers).
pub const CLOCKS: &[u8] = job!("clocks.wasm");
/// `sleepy` in C (calls `sleep`, a WASI function the fleet does not offer).
pub const SLEEPY: &[u8] = job!("sleepy.wasm");
