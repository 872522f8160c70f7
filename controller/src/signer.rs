//! Everything the controller signs: envelopes and acks (job-signing key), key rotations
//! (root key), and the decision whether a module travels inline or in chunks.
//!
//! Signing is a pure function of its inputs; the caller decides the sequence number and
//! stores the bytes before publishing them (see [`crate::store::Store::send_execution`]).

use fleet_schemas::chunk::{ModuleChunk, split_module};
use fleet_schemas::limits::{MAX_CHUNK_DATA, MAX_ENVELOPE_BYTES, MAX_MODULE_BYTES};
use fleet_schemas::rotation::ROTATION_VERSION;
use fleet_schemas::signed::public_key_of;
use fleet_schemas::{
    ACK_VERSION, ChunkedModule, DeviceId, ENVELOPE_VERSION, Envelope, EventAck, Incarnation, JobSpec, KeyId,
    KeyRotation, ModuleSource, Order, SYNC_VERSION, SignedMessage, SigningKey, SyncGrant, TrustedKey,
};

/// Bytes kept free below [`MAX_ENVELOPE_BYTES`] when deciding to inline a module, for
/// anything a future envelope version might add.
pub const ENVELOPE_HEADROOM: usize = 1024;

/// Why something could not be signed or a module could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The value could not be encoded.
    #[error("could not encode the message")]
    Encode,
    /// The module is larger than the protocol allows.
    #[error("the module is {size} bytes; the most a job may carry is {MAX_MODULE_BYTES}")]
    ModuleTooLarge {
        /// Its size.
        size: usize,
    },
    /// The module is empty.
    #[error("the module is empty")]
    EmptyModule,
    /// The job spec without its module is already larger than an envelope.
    #[error("the job's arguments and settings alone are over the {MAX_ENVELOPE_BYTES} byte envelope limit")]
    SpecTooLarge,
}

/// Signs envelopes and acks with one job-signing key.
pub struct Signer {
    key: SigningKey,
    key_id: KeyId,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with this key.
    pub fn new(key: SigningKey) -> Self {
        let (key_id, _) = public_key_of(&key);
        Self { key, key_id }
    }

    /// The id of the key it signs with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Signs an envelope for `device` and returns its wire bytes.
    pub fn envelope(
        &self,
        device: &DeviceId,
        seq: u64,
        order: Order,
        issued_at: u64,
        not_after: u64,
    ) -> Result<Vec<u8>, SignError> {
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            key_id: self.key_id,
            issued_at,
            not_after,
            device_id: device.clone(),
            seq,
            order,
        };
        SignedMessage::sign(&envelope, &self.key).and_then(|m| m.to_bytes()).map_err(|_| SignError::Encode)
    }

    /// Signs a cumulative event ack for `device`.
    pub fn ack(&self, device: &DeviceId, through_seq: u64) -> Result<Vec<u8>, SignError> {
        let ack = EventAck { version: ACK_VERSION, key_id: self.key_id, device_id: device.clone(), through_seq };
        SignedMessage::sign(&ack, &self.key).and_then(|m| m.to_bytes()).map_err(|_| SignError::Encode)
    }
}

impl Signer {
    /// Signs the sync grant answering a new store of `device` (`fleet_schemas::sync`).
    pub fn sync_grant(
        &self,
        device: &DeviceId,
        incarnation: Incarnation,
        replay_floor: u64,
        issued_at: u64,
        event_base: u64,
    ) -> Result<Vec<u8>, SignError> {
        let grant = SyncGrant {
            version: SYNC_VERSION,
            key_id: self.key_id,
            device_id: device.clone(),
            incarnation,
            replay_floor,
            issued_at,
            event_base,
        };
        SignedMessage::sign(&grant, &self.key).and_then(|m| m.to_bytes()).map_err(|_| SignError::Encode)
    }
}

/// Signs a key rotation with the root key.
pub fn sign_rotation(root: &SigningKey, seq: u64, issued_at: u64, keys: Vec<TrustedKey>) -> Result<Vec<u8>, SignError> {
    let (root_key_id, _) = public_key_of(root);
    let rotation = KeyRotation { version: ROTATION_VERSION, root_key_id, issued_at, rotation_seq: seq, keys };
    SignedMessage::sign(&rotation, root).and_then(|m| m.to_bytes()).map_err(|_| SignError::Encode)
}

/// A job spec ready to store, and the chunks to publish if its module travels in chunks.
#[derive(Debug, Clone)]
pub struct PreparedModule {
    /// The spec, with `module` inline or chunked.
    pub spec: JobSpec,
    /// The chunks, when the module is too large for an envelope.
    pub chunks: Option<Vec<ModuleChunk>>,
}

/// Puts `module` into `spec` inline if the largest envelope that can carry it (longest
/// device id, largest numbers) stays [`ENVELOPE_HEADROOM`] under the limit, and in
/// chunks of [`MAX_CHUNK_DATA`] otherwise.
pub fn prepare_module(mut spec: JobSpec, module: &[u8]) -> Result<PreparedModule, SignError> {
    if module.is_empty() {
        return Err(SignError::EmptyModule);
    }
    if module.len() > MAX_MODULE_BYTES as usize {
        return Err(SignError::ModuleTooLarge { size: module.len() });
    }
    spec.module = ModuleSource::Inline(module.to_vec());
    if worst_case_envelope_len(&spec)? + ENVELOPE_HEADROOM <= MAX_ENVELOPE_BYTES {
        return Ok(PreparedModule { spec, chunks: None });
    }
    let (chunked, chunks) =
        split_module(module, MAX_CHUNK_DATA as u32).map_err(|_| SignError::ModuleTooLarge { size: module.len() })?;
    spec.module = ModuleSource::Chunked(chunked);
    if worst_case_envelope_len(&spec)? + ENVELOPE_HEADROOM > MAX_ENVELOPE_BYTES {
        return Err(SignError::SpecTooLarge);
    }
    Ok(PreparedModule { spec, chunks: Some(chunks) })
}

/// The chunks of a module, as [`prepare_module`] cut them (the same bytes give the same
/// chunks, so `serve` recomputes them from the stored module).
pub fn module_chunks(module: &[u8]) -> Result<(ChunkedModule, Vec<ModuleChunk>), SignError> {
    split_module(module, MAX_CHUNK_DATA as u32).map_err(|_| SignError::ModuleTooLarge { size: module.len() })
}

fn worst_case_envelope_len(spec: &JobSpec) -> Result<usize, SignError> {
    let longest_id = DeviceId::new("x".repeat(fleet_schemas::ids::MAX_DEVICE_ID_LEN)).map_err(|_| SignError::Encode)?;
    let probe = Signer::new(SigningKey::from_bytes(&[7; 32]));
    let order = Order::Run { attempt: u32::MAX, job: Box::new(spec.clone()) };
    Ok(probe.envelope(&longest_id, u64::MAX, order, u64::MAX, u64::MAX)?.len())
}
