//! Execution events: what a device tells the controller about an execution.
//!
//! Each event is signed with the device's own key, so the controller can prove which
//! device produced a result even if the broker is compromised, and each carries the
//! execution's idempotency key `(job id, device id, attempt)` plus the device's event
//! sequence number, so a redelivered event changes nothing at the controller.

use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, JobId};
use crate::limits::MAX_EVENT_BYTES;
use crate::signed::verify_by_device;
use crate::verify::Rejection;

/// The event format this crate writes and reads (same versioning rule as envelopes).
pub const EVENT_VERSION: u16 = 1;

/// Names one execution: a job, on a device, at one attempt.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct ExecutionKey {
    /// The job.
    pub job_id: JobId,
    /// The device.
    pub device_id: DeviceId,
    /// The attempt, from 1 (0 in a rejection of an envelope that could not be read).
    pub attempt: u32,
}

/// One thing that happened to an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct ExecutionEvent {
    /// Format version, [`EVENT_VERSION`].
    pub version: u16,
    /// The execution.
    pub key: ExecutionKey,
    /// The device's event counter: strictly increasing per device, so the controller
    /// sees events in the order they happened and can drop ones it already has.
    pub event_seq: u64,
    /// Device time, Unix seconds (0 if the device has no clock).
    pub at: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The envelope verified and is queued on durable storage.
    Accepted,
    /// The envelope was refused.
    Rejected {
        /// Why.
        reason: Rejection,
    },
    /// The execution started.
    Started,
    /// The execution finished and returned.
    Succeeded(RunReport),
    /// The execution failed.
    Failed {
        /// Why, as a type.
        reason: FailReason,
        /// Why, in words (the trap message, for example).
        message: String,
        /// What the execution produced before it failed.
        report: RunReport,
    },
    /// The execution was canceled before it finished.
    Canceled,
}

impl EventKind {
    /// Whether this event ends the execution.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::Rejected { .. } | EventKind::Succeeded(_) | EventKind::Failed { .. } | EventKind::Canceled
        )
    }
}

/// What an execution produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct RunReport {
    /// The job's result bytes.
    #[serde(with = "crate::ids::hex_bytes")]
    pub output: Vec<u8>,
    /// Log lines the job wrote.
    pub logs: Vec<String>,
    /// Fuel (instructions) used.
    pub fuel_used: u64,
    /// Wall time, in milliseconds.
    pub duration_ms: u32,
}

/// Why an execution failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The module trapped (unreachable, out-of-bounds access, stack overflow, ...).
    Trap,
    /// The fuel or instruction budget ran out.
    OutOfFuel,
    /// The module asked for more memory than its cap.
    OutOfMemory,
    /// The wall-clock bound passed.
    Timeout,
    /// The module needs something this runtime does not offer (an import, a feature).
    Unsupported,
    /// The module could not be had: its chunks did not arrive or the stored bytes no
    /// longer match the signed hash.
    ModuleUnavailable,
}

/// Why the controller refused an event (or a sync request, which a device sends on the
/// same topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The message is larger than its limit ([`MAX_EVENT_BYTES`] for an event,
    /// [`crate::limits::MAX_SYNC_BYTES`] for a sync request).
    #[error("message of {0} bytes is over its size limit (an event may have {MAX_EVENT_BYTES})")]
    TooLarge(usize),
    /// The bytes are not a signed event.
    #[error("malformed event")]
    Malformed,
    /// The event format is newer than this controller.
    #[error("event format version {0} is not supported (this controller reads {EVENT_VERSION})")]
    UnsupportedVersion(u16),
    /// The device's signature does not match.
    #[error("bad device signature")]
    BadSignature,
    /// The event speaks for another device than the one that sent it.
    #[error("event from {sender} speaks for device {claimed}")]
    WrongDevice {
        /// The device whose topic and key it came with.
        sender: DeviceId,
        /// The device the event names.
        claimed: DeviceId,
    },
}

/// Whether `bytes` claim to be an event that ends an execution, by decoding them
/// without checking the signature. Trust nothing on it: a receiver uses it only to
/// schedule work (the controller commits a batch of events at once when it holds the
/// end of an execution, and otherwise waits a moment for it); [`verify_event`] decides.
pub fn claims_terminal(bytes: &[u8]) -> bool {
    if bytes.len() > MAX_EVENT_BYTES {
        return false;
    }
    crate::signed::SignedRef::decode(bytes)
        .and_then(|signed| signed.payload::<ExecutionEvent>())
        .and_then(|payload| postcard::from_bytes::<ExecutionEvent>(payload).ok())
        .is_some_and(|event| event.kind.is_terminal())
}

/// Verifies an event received on device `sender`'s events topic against that device's
/// public key.
pub fn verify_event(bytes: &[u8], sender: &DeviceId, device_key: &VerifyingKey) -> Result<ExecutionEvent, EventError> {
    let event: ExecutionEvent = verify_by_device(bytes, device_key, MAX_EVENT_BYTES, EVENT_VERSION)?;
    if event.key.device_id != *sender {
        return Err(EventError::WrongDevice { sender: sender.clone(), claimed: event.key.device_id });
    }
    Ok(event)
}
