//! Retained status documents, in JSON so that anyone can watch the fleet with
//! `mosquitto_sub -t 'fleet/#' -v`.
//!
//! Readers ignore fields they do not know, so a newer writer may add fields without
//! breaking an older reader; a field's meaning never changes.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, JobId};
use crate::job::RuntimeClass;
use crate::limits::MAX_STATUS_BYTES;

/// Online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Connected.
    Online,
    /// Disconnected (set by the MQTT last-will when the link dies).
    Offline,
}

/// A GPU a gateway found at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct GpuInfo {
    /// Vendor, e.g. "nvidia".
    pub vendor: String,
    /// Model name.
    pub model: String,
    /// Memory in bytes.
    pub memory: u64,
}

/// `fleet/devices/{id}/status`, retained, written by the device (its last-will writes
/// the offline form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct DeviceStatus {
    /// The device.
    pub device_id: DeviceId,
    /// Online or offline.
    pub state: Presence,
    /// Its runtime class.
    pub runtime: RuntimeClass,
    /// The agent's version.
    pub agent_version: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Executions waiting or running.
    #[serde(default)]
    pub queue_depth: u32,
    /// Events on storage not yet confirmed by the controller.
    #[serde(default)]
    pub outbox_depth: u32,
    /// Its GPU, if any.
    #[serde(default)]
    pub gpu: Option<GpuInfo>,
    /// The inference backends it offers jobs through wasi-nn, e.g. `onnx:cpu`,
    /// `onnx:cuda`; empty where it offers none (microcontrollers).
    #[serde(default)]
    pub inference: Vec<String>,
    /// The WASI versions it runs jobs for (`preview1`); empty where it runs only the
    /// fleet job ABI (older agents and firmware). `fleetctl job push` sends a WASI
    /// module only to devices that list it.
    #[serde(default)]
    pub wasi: Vec<String>,
    /// Envelope format versions the agent reads.
    #[serde(default)]
    pub formats: Vec<u16>,
    /// Unix seconds when written (0 if the device has no clock).
    pub ts: u64,
}

/// The state of a job as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Executions are being sent or run.
    InProgress,
    /// Every execution has ended.
    Completed,
    /// Stopped because failures passed the threshold.
    Aborted,
    /// Canceled by the operator.
    Canceled,
}

/// Executions of a job, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct JobCounts {
    /// Waiting to be sent, or sent and not yet accepted.
    pub queued: u32,
    /// Accepted or started on the device.
    pub running: u32,
    /// Finished and returned.
    pub succeeded: u32,
    /// Finished with a failure.
    pub failed: u32,
    /// Refused by the device.
    pub rejected: u32,
    /// No result before the execution's deadline.
    pub timed_out: u32,
    /// Canceled.
    pub canceled: u32,
}

/// `fleet/jobs/{job_id}/status`, retained, written by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct JobStatus {
    /// The job.
    pub job_id: JobId,
    /// Its state.
    pub state: JobState,
    /// Executions in all.
    pub total: u32,
    /// Executions by state.
    pub counts: JobCounts,
    /// Unix seconds when written.
    pub ts: u64,
}

/// `fleet/controller/status`, retained, written by the controller (its last-will
/// writes the offline form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct ControllerStatus {
    /// Online or offline.
    pub state: Presence,
    /// The controller's version.
    pub version: String,
    /// Unix seconds when written.
    pub ts: u64,
}

/// Why a status document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// Larger than [`MAX_STATUS_BYTES`].
    #[error("status document of {0} bytes is over the {MAX_STATUS_BYTES} byte limit")]
    TooLarge(usize),
    /// Not the JSON document expected.
    #[error("malformed status document")]
    Malformed,
}

/// Encodes a status document as JSON.
pub fn to_json<T: Serialize>(doc: &T) -> Vec<u8> {
    // Status documents hold only strings, numbers, maps and enums: serializing them
    // into a Vec cannot fail.
    serde_json::to_vec(doc).unwrap_or_default()
}

/// Decodes a status document from JSON, refusing oversized input first.
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StatusError> {
    if bytes.len() > MAX_STATUS_BYTES {
        return Err(StatusError::TooLarge(bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|_| StatusError::Malformed)
}
