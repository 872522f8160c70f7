//! Runs one fleet job: a WebAssembly module speaking the fleet job ABI
//! (`docs/job-abi.md`), inside bounds on fuel, memory and time, returning a
//! [`RunReport`](fleet_schemas::RunReport) or a [`Failure`] with a
//! [`FailReason`](fleet_schemas::FailReason).
//!
//! Why one crate with two backends: a job is signed once and may land on a Linux gateway
//! or on a Cortex-M microcontroller. Both must give it the same host functions, with the
//! same bounds checks, caps and failure mapping, or a job tested on one behaves
//! differently on the other. So everything that is *the ABI* (the host state, every host
//! call on a plain byte slice, the import check, turning an ending into a report) lives
//! once, in [`abi`] and [`outcome`], and each backend only adapts its runtime to it:
//!
//! * [`WasmtimeExecutor`] (feature `wasmtime`, default, std): Cranelift-compiled code,
//!   fuel for the budget, epoch interruption for the wall-clock timeout and for
//!   [`StopSignal`], a [`ResourceLimiter`](::wasmtime::ResourceLimiter) for the memory
//!   cap, and a compiled-module cache keyed by the module's SHA-256. For gateways.
//!   With `components`, it also runs WASI 0.2 components ([`component`]).
//! * [`WasmiExecutor`] (feature `wasmi`, `no_std` + `alloc`): an interpreter, fuel for
//!   the budget, fuel slices checked against an optional [`Clock`] for a timeout and for
//!   [`StopSignal`], wasmi's resource limiter for the memory cap. For microcontrollers
//!   (`--no-default-features --features wasmi --target thumbv7em-none-eabihf`); it also
//!   runs on std, which the tests and benchmarks use to compare the two.
//!
//! The shells call it the same way on both: build a [`Job`] from the signed
//! [`JobSpec`](fleet_schemas::JobSpec) and the module bytes, hand over the device's
//! [`DataInputs`], and map the result onto the agent core's outcome.
//!
//! ```ignore
//! let executor = WasmtimeExecutor::new(ExecutorConfig::gateway(device_id))?;
//! let job = Job::from_spec(&spec, &module_bytes);
//! match executor.run(&job, FileInputs::new(configured_inputs)) {
//!     Ok(report) => Outcome::Succeeded(report),
//!     Err(f) => Outcome::Failed { reason: f.reason, message: f.message, report: f.report },
//! }
//! ```
#![no_std]
// Without a backend only the ABI layer is built (to check it compiles); the shared
// runtime glue then has no user.
#![cfg_attr(not(any(feature = "wasmi", feature = "wasmtime")), allow(dead_code))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod abi;
mod cache;
#[cfg(feature = "components")]
pub mod component;
mod config;
mod control;
mod inputs;
mod job;
mod limiter;
#[cfg(feature = "nn")]
pub mod nn;
mod outcome;
#[cfg(feature = "wasi")]
pub mod wasi;

#[cfg(feature = "wasmi")]
mod wasmi_backend;
#[cfg(feature = "wasmtime")]
mod wasmtime_backend;

/// The WASI versions this build runs jobs for, as a device advertises them in its status
/// (`DeviceStatus::wasi`): `preview1` with the `wasi` feature ([`wasi`]), and `0.2`
/// (components, [`component`]) with `components`.
pub const WASI_VERSIONS: &[&str] = if cfg!(feature = "components") {
    &["preview1", "0.2"]
} else if cfg!(feature = "wasi") {
    &["preview1"]
} else {
    &[]
};

/// Whether `bytes` are a WebAssembly component (the binary's layer field says 1) rather
/// than a core module. Only the 8-byte header is looked at.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

pub use cache::CacheStats;
pub use config::{ExecutorConfig, OutputCaps, ResolvedLimits, SetupError};
#[cfg(feature = "std")]
pub use control::StdClock;
pub use control::{Clock, StopSignal};
#[cfg(feature = "std")]
pub use inputs::FileInputs;
pub use inputs::{DataInput, DataInputs, InputError, MemoryInputs, NoInputs};
pub use job::{Accelerator, Job};
pub use outcome::{Failure, RunResult};
#[cfg(feature = "wasmi")]
pub use wasmi_backend::{Slice, WasmiExecutor, WasmiRun};
#[cfg(feature = "wasmtime")]
pub use wasmtime_backend::WasmtimeExecutor;
