//! Golden vectors: committed bytes of every message type with their decoded value in
//! readable JSON.
//!
//! The host tests rebuild each vector from code and compare bytes, so an accidental
//! change to the encoding fails a test. The firmware runs [`check_all`] on the emulated
//! board, so the microcontroller decodes the same bytes to the same values. The keys
//! that signed the vectors come from the fixed seeds below: never use them elsewhere.

use alloc::string::String;
use alloc::vec::Vec;

use serde_json::json;

use crate::ack::EventAck;
use crate::chunk::ModuleChunk;
use crate::envelope::Envelope;
use crate::event::ExecutionEvent;
use crate::rotation::KeyRotation;
use crate::signed::{Signable, SignedMessage};
use crate::status::{ControllerStatus, DeviceStatus, JobStatus, from_json};
use crate::sync::{SyncGrant, SyncRequest};

/// Seed of the job-signing key that signed the golden envelopes.
pub const CONTROLLER_SEED: [u8; 32] = [0x11; 32];
/// Seed of the device key that signed the golden events.
pub const DEVICE_SEED: [u8; 32] = [0x22; 32];
/// Seed of the root key that signed the golden rotation.
pub const ROOT_SEED: [u8; 32] = [0x33; 32];
/// The device the golden envelopes address.
pub const DEVICE_ID: &str = "gw-001";

/// The message type of a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A [`SignedMessage`] holding an [`Envelope`].
    Envelope,
    /// A [`ModuleChunk`].
    Chunk,
    /// A [`SignedMessage`] holding an [`ExecutionEvent`].
    Event,
    /// A [`SignedMessage`] holding a [`KeyRotation`].
    Rotation,
    /// A [`SignedMessage`] holding an [`EventAck`].
    Ack,
    /// A [`SignedMessage`] holding a [`SyncRequest`].
    SyncRequest,
    /// A [`SignedMessage`] holding a [`SyncGrant`].
    SyncGrant,
    /// A [`DeviceStatus`] JSON document.
    DeviceStatus,
    /// A [`JobStatus`] JSON document.
    JobStatus,
    /// A [`ControllerStatus`] JSON document.
    ControllerStatus,
}

/// One golden vector.
#[derive(Debug, Clone, Copy)]
pub struct Vector {
    /// Its name (the file stem under `schemas/golden/`).
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The wire bytes.
    pub bytes: &'static [u8],
    /// The decoded value, as pretty JSON.
    pub readable: &'static str,
}

macro_rules! vectors {
    ($($name:literal => $kind:ident),* $(,)?) => {
        /// Every committed vector.
        pub const VECTORS: &[Vector] = &[$(Vector {
            name: $name,
            kind: Kind::$kind,
            bytes: include_bytes!(concat!("../golden/", $name, ".bin")),
            readable: include_str!(concat!("../golden/", $name, ".json")),
        }),*];
    };
}

vectors! {
    "envelope_run_inline" => Envelope,
    "envelope_run_chunked" => Envelope,
    "envelope_cancel" => Envelope,
    "module_chunk" => Chunk,
    "event_accepted" => Event,
    "event_rejected" => Event,
    "event_started" => Event,
    "event_succeeded" => Event,
    "event_failed" => Event,
    "event_canceled" => Event,
    "key_rotation" => Rotation,
    "event_ack" => Ack,
    "sync_request" => SyncRequest,
    "sync_grant" => SyncGrant,
    "device_status" => DeviceStatus,
    "job_status" => JobStatus,
    "controller_status" => ControllerStatus,
}

/// How a vector failed its check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The bytes did not decode.
    #[error("{0}: the bytes do not decode")]
    Decode(&'static str),
    /// The decoded value reads differently from the committed JSON.
    #[error("{0}: the decoded value differs from the committed JSON")]
    Readable(&'static str),
    /// Encoding the decoded value does not give the same bytes back.
    #[error("{0}: re-encoding gives other bytes")]
    Reencode(&'static str),
}

/// The readable form of wire bytes of a given kind: pretty JSON of the decoded value
/// (for signed messages, the signature and the decoded body).
pub fn readable(kind: Kind, bytes: &[u8]) -> Option<String> {
    let value = match kind {
        Kind::Envelope => signed_json::<Envelope>(bytes)?,
        Kind::Event => signed_json::<ExecutionEvent>(bytes)?,
        Kind::Rotation => signed_json::<KeyRotation>(bytes)?,
        Kind::Ack => signed_json::<EventAck>(bytes)?,
        Kind::SyncRequest => signed_json::<SyncRequest>(bytes)?,
        Kind::SyncGrant => signed_json::<SyncGrant>(bytes)?,
        Kind::Chunk => serde_json::to_value(postcard::from_bytes::<ModuleChunk>(bytes).ok()?).ok()?,
        Kind::DeviceStatus => serde_json::to_value(from_json::<DeviceStatus>(bytes).ok()?).ok()?,
        Kind::JobStatus => serde_json::to_value(from_json::<JobStatus>(bytes).ok()?).ok()?,
        Kind::ControllerStatus => serde_json::to_value(from_json::<ControllerStatus>(bytes).ok()?).ok()?,
    };
    let mut text = serde_json::to_string_pretty(&value).ok()?;
    text.push('\n');
    Some(text)
}

/// Re-encodes the decoded value of wire bytes of a given kind.
pub fn reencode(kind: Kind, bytes: &[u8]) -> Option<Vec<u8>> {
    fn signed<T: serde::de::DeserializeOwned + Signable>(bytes: &[u8]) -> Option<Vec<u8>> {
        let signed = SignedMessage::from_bytes(bytes).ok()?;
        let value: T = signed.decode_body()?;
        let body = postcard::to_extend(&value, Vec::from(T::TAG)).ok()?;
        SignedMessage { body, signature: signed.signature }.to_bytes().ok()
    }
    fn json<T: serde::de::DeserializeOwned + serde::Serialize>(bytes: &[u8]) -> Option<Vec<u8>> {
        Some(crate::status::to_json(&from_json::<T>(bytes).ok()?))
    }
    match kind {
        Kind::Envelope => signed::<Envelope>(bytes),
        Kind::Event => signed::<ExecutionEvent>(bytes),
        Kind::Rotation => signed::<KeyRotation>(bytes),
        Kind::Ack => signed::<EventAck>(bytes),
        Kind::SyncRequest => signed::<SyncRequest>(bytes),
        Kind::SyncGrant => signed::<SyncGrant>(bytes),
        Kind::Chunk => postcard::to_allocvec(&postcard::from_bytes::<ModuleChunk>(bytes).ok()?).ok(),
        Kind::DeviceStatus => json::<DeviceStatus>(bytes),
        Kind::JobStatus => json::<JobStatus>(bytes),
        Kind::ControllerStatus => json::<ControllerStatus>(bytes),
    }
}

fn signed_json<T: serde::de::DeserializeOwned + Signable>(bytes: &[u8]) -> Option<serde_json::Value> {
    let signed = SignedMessage::from_bytes(bytes).ok()?;
    let body: T = signed.decode_body()?;
    Some(json!({ "signature": signed.signature, "body": body }))
}

/// Checks one vector: it decodes, reads as committed, and re-encodes to its bytes.
pub fn check(vector: &Vector) -> Result<(), Mismatch> {
    let text = readable(vector.kind, vector.bytes).ok_or(Mismatch::Decode(vector.name))?;
    if text != vector.readable {
        return Err(Mismatch::Readable(vector.name));
    }
    if reencode(vector.kind, vector.bytes).as_deref() != Some(vector.bytes) {
        return Err(Mismatch::Reencode(vector.name));
    }
    Ok(())
}

/// Checks every vector; returns how many passed.
pub fn check_all() -> Result<usize, Mismatch> {
    VECTORS.iter().try_for_each(check)?;
    Ok(VECTORS.len())
}
