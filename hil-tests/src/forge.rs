//! Envelopes an attacker (or a broken broker) would put on a device's jobs topic.
//!
//! Why build them with `fleet-schemas` and the controller's own key: each attack must
//! fail for exactly one reason, so that the device's `Rejected { reason }` proves the
//! check that stopped it. An envelope with a wrong key *and* an expired date proves
//! nothing about expiry. So every forgery here is a genuine envelope with one thing
//! wrong:
//!
//! | attack | built as | the device must answer |
//! |---|---|---|
//! | forged, unknown key | signed by a fresh key, under that key's id | `UnknownKey` |
//! | forged, bad signature | the controller's key id, signed by another key | `BadSignature` |
//! | replayed bytes | the exact bytes of an envelope the device already ran | nothing: a redelivery (acked, not run, no event) |
//! | replayed seq | the controller's key, a new job under a sequence number already used | `Replayed` |
//! | expired | the controller's key, `not_after` an hour ago | `Expired` |
//! | misdirected | the controller's key, addressed to another device | `WrongTarget` |
//!
//! The controller's job-signing key is read from its data directory
//! (`keys/job-<key id>.key`, a hex seed), as anyone who stole the controller's disk
//! could. Sequence numbers are set far above anything the controller has used, so that
//! `Replayed` can only be the answer to the replay.
//!
//! Why a replay of the exact bytes is answered with silence: the device cannot tell it
//! from a QoS 1 redelivery of an envelope it already took, so it acknowledges it and
//! does nothing (docs/protocol.md, "Duplicates"). A replayed *sequence number* on an
//! envelope it never saw is refused as `Replayed`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use fleet_schemas::signed::public_key_of;
use fleet_schemas::{
    DeviceId, ENVELOPE_VERSION, EVENT_VERSION, Envelope, EventKind, ExecutionEvent, ExecutionKey, JobId, JobSpec,
    KeyId, Limits, ModuleSource, Order, Requirements, RunReport, SignedMessage, SigningKey,
};

use crate::error::{HarnessError, Result, io};

/// The sequence numbers forgeries use: far above any the controller signs in a test.
pub const FORGED_SEQ: u64 = 1_000_000;

/// Builds and signs envelopes with (or without) the controller's job key.
#[derive(Debug)]
pub struct Forge {
    job_key: SigningKey,
    key_id: KeyId,
}

impl Forge {
    /// Reads the job-signing key `key_id` (hex) from the data directory's `keys/`.
    pub fn from_data_dir(data_dir: &Path, key_id_hex: &str) -> Result<Self> {
        let path = data_dir.join("keys").join(format!("job-{key_id_hex}.key"));
        let text = std::fs::read_to_string(&path).map_err(io(format!("cannot read {}", path.display())))?;
        let seed: [u8; 32] = hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
            HarnessError::Parse { what: path.display().to_string(), detail: "not a 32-byte hex seed".into() }
        })?;
        let job_key = SigningKey::from_bytes(&seed);
        let key_id = public_key_of(&job_key).0;
        if !key_id.to_hex().eq_ignore_ascii_case(key_id_hex) {
            return Err(HarnessError::Parse {
                what: path.display().to_string(),
                detail: format!("holds key {key_id}, not {key_id_hex}"),
            });
        }
        Ok(Self { job_key, key_id })
    }

    /// The controller key's id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// A fresh random job id.
    pub fn job_id() -> JobId {
        let mut id = [0u8; 16];
        fastrand::fill(&mut id);
        JobId(id)
    }

    /// A job that runs `module` inline with the device's default limits.
    pub fn spec(job_id: JobId, module: &[u8]) -> JobSpec {
        JobSpec {
            job_id,
            module: ModuleSource::Inline(module.to_vec()),
            entry: "run".into(),
            args: Vec::new(),
            limits: Limits { fuel: 0, memory_pages: 0, timeout_ms: 0 },
            requirements: Requirements::default(),
            inputs: Vec::new(),
        }
    }

    /// An envelope that runs `spec` (attempt 1) on `device`, valid for the next hour.
    pub fn run_envelope(&self, device: &DeviceId, seq: u64, spec: &JobSpec) -> Envelope {
        let now = unix_now();
        Envelope {
            version: ENVELOPE_VERSION,
            key_id: self.key_id,
            issued_at: now,
            not_after: now + 3_600,
            device_id: device.clone(),
            seq,
            order: Order::Run { attempt: 1, job: Box::new(spec.clone()) },
        }
    }

    /// Signs with the controller's key.
    pub fn sign(&self, envelope: &Envelope) -> Result<Vec<u8>> {
        sign_with(envelope, &self.job_key)
    }

    /// Signed by a key nobody trusts, under that key's own id: `UnknownKey`.
    pub fn unknown_key(&self, device: &DeviceId, spec: &JobSpec) -> Result<Vec<u8>> {
        let stranger = random_key();
        let mut envelope = self.run_envelope(device, FORGED_SEQ, spec);
        envelope.key_id = public_key_of(&stranger).0;
        sign_with(&envelope, &stranger)
    }

    /// The controller's key id, but signed by another key: `BadSignature`.
    pub fn bad_signature(&self, device: &DeviceId, spec: &JobSpec) -> Result<Vec<u8>> {
        sign_with(&self.run_envelope(device, FORGED_SEQ, spec), &random_key())
    }

    /// Genuine, but its validity ended an hour ago: `Expired`.
    pub fn expired(&self, device: &DeviceId, spec: &JobSpec) -> Result<Vec<u8>> {
        let mut envelope = self.run_envelope(device, FORGED_SEQ, spec);
        envelope.issued_at -= 7_200;
        envelope.not_after = envelope.issued_at + 3_600;
        self.sign(&envelope)
    }

    /// Genuine, but under sequence number 1, which the device has used: `Replayed`.
    pub fn stale_seq(&self, device: &DeviceId, spec: &JobSpec) -> Result<Vec<u8>> {
        self.sign(&self.run_envelope(device, 1, spec))
    }

    /// Genuine, but addressed to `other` (and published on someone else's topic):
    /// `WrongTarget`.
    pub fn misdirected(&self, other: &DeviceId, spec: &JobSpec) -> Result<Vec<u8>> {
        self.sign(&self.run_envelope(other, FORGED_SEQ, spec))
    }
}

/// An event signed by `signer` (a device's key) that claims to be about `claimed`'s
/// execution of `job`: what a compromised device would send to speak for another.
pub fn event_for_other_device(signer: &SigningKey, claimed: &DeviceId, job: JobId) -> Result<Vec<u8>> {
    let event = ExecutionEvent {
        version: EVENT_VERSION,
        key: ExecutionKey { job_id: job, device_id: claimed.clone(), attempt: 1 },
        event_seq: FORGED_SEQ,
        at: unix_now(),
        kind: EventKind::Succeeded(RunReport::default()),
    };
    SignedMessage::sign(&event, signer)
        .and_then(|signed| signed.to_bytes())
        .map_err(|_| HarnessError::Parse { what: "an event".into(), detail: "cannot encode it".into() })
}

fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    fastrand::fill(&mut seed);
    SigningKey::from_bytes(&seed)
}

fn sign_with(envelope: &Envelope, key: &SigningKey) -> Result<Vec<u8>> {
    SignedMessage::sign(envelope, key)
        .and_then(|signed| signed.to_bytes())
        .map_err(|_| HarnessError::Parse { what: "an envelope".into(), detail: "cannot encode it".into() })
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
