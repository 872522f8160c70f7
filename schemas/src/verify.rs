//! Envelope verification as one pure function.
//!
//! [`verify_envelope`] takes the received bytes, the keys the device trusts, its own id,
//! its clock and its replay state, and returns the verified envelope or a typed
//! [`Rejection`]. It does no I/O, never panics, and allocates only after the signature
//! checks out, in proportion to a message already bounded by
//! [`MAX_ENVELOPE_BYTES`](crate::limits::MAX_ENVELOPE_BYTES).
//!
//! The checks run cheapest and least trusting first: size, framing, version, key,
//! signature; only signed content is then decoded and checked for target, validity
//! window and sequence. Verification never changes the replay state: the caller calls
//! [`ReplayState::accept`] only once the envelope is on durable storage.

use alloc::boxed::Box;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::envelope::{ENVELOPE_VERSION, Envelope, EnvelopeHeader};
use crate::ids::{DeviceId, JobId, KeyId};
use crate::job::RuntimeClass;
use crate::limits::{CLOCK_SKEW_SECS, MAX_ENVELOPE_BYTES, MAX_TRUSTED_KEYS};
use crate::signed::{SignedRef, Trusted};

/// Why a device refused a message. Carried to the controller in
/// [`crate::event::EventKind::Rejected`], so every variant is a thing an operator can act
/// on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// The bytes are not a well-formed message.
    #[error("malformed message")]
    Malformed,
    /// The message is larger than the protocol allows.
    #[error("message of {len} bytes is over the {max} byte limit")]
    TooLarge {
        /// Its size.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The message uses a format version this agent does not know.
    #[error("format version {got} is not supported (this agent reads version {supported})")]
    UnsupportedVersion {
        /// The version received.
        got: u16,
        /// The version this agent reads.
        supported: u16,
    },
    /// The message names a signing key the device does not trust.
    #[error("signed with key {key_id}, which this device does not trust")]
    UnknownKey {
        /// The key named.
        key_id: KeyId,
    },
    /// The signature does not match the bytes.
    #[error("bad signature")]
    BadSignature,
    /// The envelope is addressed to another device.
    #[error("addressed to device {addressed_to}")]
    WrongTarget {
        /// The device it names.
        addressed_to: DeviceId,
    },
    /// The envelope was issued after the device's clock (beyond the allowed skew).
    #[error("not valid before {issued_at} (device time {now})")]
    NotYetValid {
        /// When it was issued.
        issued_at: u64,
        /// The device's time.
        now: u64,
    },
    /// The envelope's validity has ended.
    #[error("expired at {not_after} (device time {now})")]
    Expired {
        /// Its end of validity.
        not_after: u64,
        /// The device's time.
        now: u64,
    },
    /// The envelope's sequence number is not above the last one accepted.
    #[error("sequence {seq} is not above the last accepted {last_accepted}")]
    Replayed {
        /// Its sequence number.
        seq: u64,
        /// The last sequence number the device accepted.
        last_accepted: u64,
    },
    /// A key rotation's new key set is empty, too large or inconsistent.
    #[error("the key set is invalid")]
    InvalidKeySet,
    /// The job needs something this device does not have.
    #[error("unsupported here: {0}")]
    Unsupported(Unsupported),
    /// The device's queue is full.
    #[error("the queue is full ({capacity} executions)")]
    QueueFull {
        /// The queue's capacity.
        capacity: u32,
    },
}

/// What a device lacks to run a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Unsupported {
    /// The job needs another runtime class.
    #[error("the job needs a {required:?} runtime")]
    Runtime {
        /// The class it needs.
        required: RuntimeClass,
    },
    /// The job needs a GPU and the device has none.
    #[error("the job needs a GPU")]
    GpuRequired,
    /// The device lacks a label the job requires.
    #[error("the device lacks a required label")]
    Label,
    /// The device has no data input of a name the job reads.
    #[error("the device has no data input the job names")]
    DataInput,
    /// The module is larger than this device can hold.
    #[error("the module is larger than this device can hold")]
    ModuleTooLarge,
}

/// What a device remembers to refuse replays: the last accepted sequence number and the
/// latest signed time it has seen.
///
/// `time_floor` gives a device without a trusted clock (most microcontrollers) a lower
/// bound on the time: an envelope that expired before an envelope the device already
/// accepted was issued is refused as expired, clock or no clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayState {
    /// The highest envelope sequence number accepted; 0 before the first.
    pub last_seq: u64,
    /// The highest `issued_at` of any accepted envelope.
    pub time_floor: u64,
}

impl ReplayState {
    /// Records an envelope as accepted. Call it once the envelope is stored durably.
    pub fn accept(&mut self, envelope: &Envelope) {
        self.last_seq = self.last_seq.max(envelope.seq);
        self.time_floor = self.time_floor.max(envelope.issued_at);
    }
}

/// The job-signing keys a device trusts (at most
/// [`MAX_TRUSTED_KEYS`](crate::limits::MAX_TRUSTED_KEYS)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<Trusted>,
}

impl KeyRing {
    /// A key ring of these keys; `None` if there are more than the limit.
    pub fn new(keys: Vec<Trusted>) -> Option<Self> {
        (keys.len() <= MAX_TRUSTED_KEYS).then_some(Self { keys })
    }

    /// The trusted key with this id.
    pub fn get(&self, key_id: &KeyId) -> Option<&Trusted> {
        self.keys.iter().find(|k| k.key_id == *key_id)
    }

    /// The keys.
    pub fn keys(&self) -> &[Trusted] {
        &self.keys
    }
}

/// An envelope whose signature, target, validity and sequence have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEnvelope {
    /// The envelope.
    pub envelope: Envelope,
}

/// Verifies a signed envelope received by device `me`.
///
/// `now` is the device's trusted Unix time in seconds, or `None` on a device without a
/// trusted clock: it then refuses nothing as not yet valid and judges expiry against
/// [`ReplayState::time_floor`].
pub fn verify_envelope(
    bytes: &[u8],
    keys: &KeyRing,
    me: &DeviceId,
    now: Option<u64>,
    replay: &ReplayState,
) -> Result<VerifiedEnvelope, Rejection> {
    verify_envelope_detailed(bytes, keys, me, now, replay).map_err(|refused| refused.reason)
}

/// Why [`verify_envelope_detailed`] refused an envelope, with the envelope itself when
/// its signature checked out (refused for its target, validity window or sequence), so
/// an agent can tell a redelivery from a replay and report the real attempt without
/// verifying the signature a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why.
    pub reason: Rejection,
    /// The envelope, if it was authentic.
    pub authentic: Option<Box<Envelope>>,
}

impl From<Rejection> for Refused {
    fn from(reason: Rejection) -> Self {
        Self { reason, authentic: None }
    }
}

/// [`verify_envelope`], returning an authentic envelope along with its refusal.
pub fn verify_envelope_detailed(
    bytes: &[u8],
    keys: &KeyRing,
    me: &DeviceId,
    now: Option<u64>,
    replay: &ReplayState,
) -> Result<VerifiedEnvelope, Refused> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(too_large(bytes.len(), MAX_ENVELOPE_BYTES).into());
    }
    let signed = SignedRef::decode(bytes).ok_or(Rejection::Malformed)?;
    let payload = signed.payload::<Envelope>().ok_or(Rejection::Malformed)?;
    let (header, _) = postcard::take_from_bytes::<EnvelopeHeader>(payload).map_err(|_| Rejection::Malformed)?;
    if header.version != ENVELOPE_VERSION {
        return Err(Rejection::UnsupportedVersion { got: header.version, supported: ENVELOPE_VERSION }.into());
    }
    let key = keys.get(&header.key_id).ok_or(Rejection::UnknownKey { key_id: header.key_id })?;
    if !signed.verify(&key.key) {
        return Err(Rejection::BadSignature.into());
    }
    let envelope: Envelope = postcard::from_bytes(payload).map_err(|_| Rejection::Malformed)?;
    match check_envelope(&envelope, me, now, replay) {
        Ok(()) => Ok(VerifiedEnvelope { envelope }),
        Err(reason) => Err(Refused { reason, authentic: Some(Box::new(envelope)) }),
    }
}

/// The checks on signed content: target, validity window, sequence.
fn check_envelope(envelope: &Envelope, me: &DeviceId, now: Option<u64>, replay: &ReplayState) -> Result<(), Rejection> {
    if envelope.device_id != *me {
        return Err(Rejection::WrongTarget { addressed_to: envelope.device_id.clone() });
    }
    let effective_now = now.unwrap_or(0).max(replay.time_floor);
    if let Some(now) = now
        && envelope.issued_at > now.saturating_add(CLOCK_SKEW_SECS)
    {
        return Err(Rejection::NotYetValid { issued_at: envelope.issued_at, now });
    }
    if envelope.not_after < effective_now {
        return Err(Rejection::Expired { not_after: envelope.not_after, now: effective_now });
    }
    if envelope.seq <= replay.last_seq {
        return Err(Rejection::Replayed { seq: envelope.seq, last_accepted: replay.last_seq });
    }
    Ok(())
}

/// The job id and attempt an envelope claims, read without checking anything: used
/// only to label a rejection event so the operator can see which job was refused.
/// `(JobId::NIL, 0)` if the bytes say nothing readable. It decodes only the fixed
/// prefix of the envelope, borrowing the device id, so hostile input costs no
/// allocation here.
pub fn claimed_execution(bytes: &[u8]) -> (JobId, u32) {
    #[derive(Deserialize)]
    struct Prefix<'a> {
        _version: u16,
        _key_id: KeyId,
        _issued_at: u64,
        _not_after: u64,
        #[serde(borrow)]
        _device_id: &'a str,
        _seq: u64,
        order: OrderPrefix,
    }
    #[derive(Deserialize)]
    enum OrderPrefix {
        Run { attempt: u32, job_id: JobId },
        Cancel { job_id: JobId },
    }
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return (JobId::NIL, 0);
    }
    let claimed = SignedRef::decode(bytes)
        .and_then(|signed| signed.payload::<Envelope>())
        .and_then(|payload| postcard::take_from_bytes::<Prefix<'_>>(payload).ok());
    match claimed {
        Some((Prefix { order: OrderPrefix::Run { attempt, job_id }, .. }, _)) => (job_id, attempt),
        Some((Prefix { order: OrderPrefix::Cancel { job_id }, .. }, _)) => (job_id, 0),
        None => (JobId::NIL, 0),
    }
}

/// The job id an envelope claims; see [`claimed_execution`].
pub fn claimed_job_id(bytes: &[u8]) -> JobId {
    claimed_execution(bytes).0
}

pub(crate) fn too_large(len: usize, max: usize) -> Rejection {
    Rejection::TooLarge { len: u32::try_from(len).unwrap_or(u32::MAX), max: u32::try_from(max).unwrap_or(u32::MAX) }
}
