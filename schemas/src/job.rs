//! The job spec: what to run, with what, within which bounds, and where it may run.
//!
//! A spec is written once per job by the controller and carried, unchanged, inside every
//! device's signed envelope. It says nothing about *which* device runs it: addressing,
//! ordering and validity belong to [`crate::envelope::Envelope`].

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::ids::{Digest, JobId};

/// One job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct JobSpec {
    /// The job's id, shared by all its executions.
    pub job_id: JobId,
    /// The WebAssembly module.
    pub module: ModuleSource,
    /// The exported function to call.
    pub entry: String,
    /// Arguments handed to the job (WASI `argv` on gateways, `arg_*` host calls on
    /// microcontrollers).
    pub args: Vec<String>,
    /// Bounds on the execution.
    pub limits: Limits,
    /// Where the job may run.
    pub requirements: Requirements,
    /// Named data inputs the job may read on the device. The device's own configuration
    /// maps each name to local data; a job reads nothing it does not name here.
    pub inputs: Vec<String>,
}

/// Where the module's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum ModuleSource {
    /// The module travels inside the envelope.
    Inline(
        #[serde(with = "crate::ids::hex_bytes")]
        #[cfg_attr(
            feature = "arbitrary",
            proptest(strategy = "proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..256)")
        )]
        Vec<u8>,
    ),
    /// The module is too large for an envelope and travels as chunks (see
    /// [`crate::chunk`]).
    Chunked(ChunkedModule),
}

/// A module sent in chunks: its content hash, size, chunk size and the head of the
/// chunk hash chain. All four are signed with the envelope, so every chunk is
/// authenticated as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct ChunkedModule {
    /// SHA-256 of the whole module: its cache key and its final check.
    pub hash: Digest,
    /// Module size in bytes.
    pub size: u32,
    /// Payload bytes in every chunk but the last.
    pub chunk_size: u32,
    /// The chain link of chunk 0 (see [`crate::chunk::chain_link`]).
    pub chain_head: Digest,
}

/// Bounds on one execution. A bound of zero means "the device's default".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Limits {
    /// Fuel (wasmtime) or instruction budget (wasmi).
    pub fuel: u64,
    /// Linear memory cap, in 64 KiB Wasm pages.
    pub memory_pages: u32,
    /// Wall-clock bound, in milliseconds.
    pub timeout_ms: u32,
}

/// The kind of device an agent runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum RuntimeClass {
    /// A Cortex-M class microcontroller running the firmware agent (wasmi).
    Microcontroller,
    /// A Linux gateway running `fleet-agent` (wasmtime).
    Gateway,
}

/// What a job asks of an accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum GpuRequirement {
    /// The job does not use an accelerator.
    None,
    /// The job uses a GPU where there is one and runs on the CPU otherwise.
    Preferred,
    /// The job must run on a GPU; a device without one rejects it.
    Required,
}

/// Where a job may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Requirements {
    /// The runtime class, or `None` for any.
    pub runtime: Option<RuntimeClass>,
    /// Accelerator use.
    pub gpu: GpuRequirement,
    /// Labels the device must carry, with these values.
    pub labels: BTreeMap<String, String>,
}

impl Default for Requirements {
    fn default() -> Self {
        Self { runtime: None, gpu: GpuRequirement::None, labels: BTreeMap::new() }
    }
}
