//! Who the device is, what it trusts, what it can run, and the knobs of the core.
//!
//! Built once by the shell from provisioning data (a config file on a gateway, a flash
//! page on a microcontroller) and handed to [`AgentCore::new`](crate::AgentCore::new).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use fleet_schemas::status::GpuInfo;
use fleet_schemas::{DeviceId, Incarnation, KeyRing, RuntimeClass, SigningKey, Topics, Trusted};

/// The device's identity and trust anchors.
pub struct AgentConfig {
    /// This device.
    pub device_id: DeviceId,
    /// The fleet's topic names.
    pub topics: Topics,
    /// The device's own key: signs its events.
    pub device_key: SigningKey,
    /// The root key: verifies key rotations.
    pub root_key: Trusted,
    /// The job-signing keys trusted until the first rotation is applied.
    pub provisioned_keys: KeyRing,
    /// What the device can run.
    pub capabilities: Capabilities,
    /// The agent's version, reported in the status document.
    pub agent_version: String,
    /// Limits and timers.
    pub tuning: Tuning,
    /// Fresh randomness from this start (16 bytes from the operating system, or a
    /// board's TRNG): the incarnation of the store if the store turns out to be new.
    /// Only its uniqueness matters, not its secrecy.
    pub fresh_incarnation: Incarnation,
}

/// What a device offers jobs: checked against each job's requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Its runtime class.
    pub runtime: RuntimeClass,
    /// Its GPU, if any.
    pub gpu: Option<GpuInfo>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The names of the data inputs it can hand to jobs.
    pub data_inputs: BTreeSet<String>,
    /// The largest module it can hold, in bytes (capped by the protocol's limit).
    pub max_module_bytes: u32,
    /// The inference backends it offers jobs through wasi-nn (`onnx:cpu`, `onnx:cuda`);
    /// empty where it offers none. Advertised in the retained status.
    pub inference: Vec<String>,
    /// The WASI versions it runs jobs for (`preview1`, as its executor offers them:
    /// `fleet_executor::WASI_VERSIONS`); empty where it runs only the fleet job ABI.
    /// Advertised in the retained status.
    pub wasi: Vec<String>,
}

/// Limits and timers. [`Tuning::default`] suits a gateway; a microcontroller wants
/// smaller queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Executions that may run at once (0 is taken as 1).
    pub max_concurrent: u32,
    /// Executions that may wait or run; past this, envelopes are refused as `QueueFull`.
    pub queue_capacity: u32,
    /// Unacknowledged events published at once (the lowest seqs first).
    pub inflight_window: u32,
    /// An event not acknowledged this long after it was published is published again.
    pub resend_after_ms: u64,
    /// The least time between two status documents when the queue depth changes.
    pub status_min_interval_ms: u64,
    /// The status document is published again at least this often.
    pub status_refresh_ms: u64,
    /// A chunk not received this long after subscribing is asked for again.
    pub chunk_timeout_ms: u64,
    /// Envelopes remembered after they are dealt with, to recognise redeliveries.
    pub history_len: u32,
    /// Past this many events in the outbox, rejections of envelopes that did not verify
    /// are no longer stored (they cost storage and anyone can send them).
    pub outbox_soft_limit: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            max_concurrent: 1,
            queue_capacity: 32,
            inflight_window: 16,
            resend_after_ms: 30_000,
            status_min_interval_ms: 1_000,
            status_refresh_ms: 300_000,
            chunk_timeout_ms: 30_000,
            history_len: 64,
            outbox_soft_limit: 256,
        }
    }
}
