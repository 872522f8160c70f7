//! The job envelope: one signed order for one device.
//!
//! The envelope binds a [`JobSpec`] (or a cancel) to a device, a point in its sequence
//! and a validity window, under a named signing key. Its first two fields, `version` and
//! `key_id`, are the [`EnvelopeHeader`]: a verifier reads them alone (postcard is a
//! plain sequence, so the header is a prefix of the body) to refuse a newer format or
//! an unknown key before it decodes anything else.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, JobId, KeyId};
use crate::job::JobSpec;

/// The envelope format this crate writes and reads.
///
/// Versioning rule: postcard is not self-describing, so no field is ever added to or
/// removed from a version. Any change to the envelope or anything inside it is a new
/// version. An agent refuses a version it does not know with
/// [`crate::verify::Rejection::UnsupportedVersion`] (reported to the controller, which
/// keeps sending the device the newest version it advertises) and never guesses.
pub const ENVELOPE_VERSION: u16 = 1;

/// One signed order for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct Envelope {
    /// Format version, [`ENVELOPE_VERSION`].
    pub version: u16,
    /// The key that signed this envelope.
    pub key_id: KeyId,
    /// Unix seconds when the controller signed it.
    pub issued_at: u64,
    /// Unix seconds after which the device must refuse it.
    pub not_after: u64,
    /// The one device this envelope is for.
    pub device_id: DeviceId,
    /// This device's envelope sequence number: every envelope the controller signs for
    /// a device has a higher one than the last, and a device accepts each number once.
    pub seq: u64,
    /// What to do.
    pub order: Order,
}

/// What an envelope tells the device to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum Order {
    /// Run a job. `attempt` counts the controller's tries of this job on this device,
    /// from 1; with the job and device ids it is the execution's idempotency key.
    Run {
        /// Which try this is.
        attempt: u32,
        /// The job (boxed: a cancel is far smaller).
        job: alloc::boxed::Box<JobSpec>,
    },
    /// Cancel a job: drop it if it is queued, stop it if it is running.
    Cancel {
        /// The job to cancel.
        job_id: JobId,
    },
}

impl Order {
    /// The job this order is about.
    pub fn job_id(&self) -> JobId {
        match self {
            Order::Run { job, .. } => job.job_id,
            Order::Cancel { job_id } => *job_id,
        }
    }
}

/// The prefix of every envelope body: what a verifier needs before it trusts anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) struct EnvelopeHeader {
    pub version: u16,
    pub key_id: KeyId,
}
