//! Key rotation: the root key replaces the set of job-signing keys a device trusts.
//!
//! The root key is provisioned into each device and signs nothing but rotations, so it
//! can live offline. A rotation is published retained on the fleet-wide keys topic, so
//! a device that was offline picks up the latest on reconnect; its `rotation_seq` must
//! rise, so an old rotation (one that would bring back a retired key) is refused.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::ids::{KeyId, PublicKey};
use crate::limits::{MAX_ROTATION_BYTES, MAX_TRUSTED_KEYS};
use crate::signed::{SignedRef, Trusted};
use crate::verify::{KeyRing, Rejection, too_large};

/// The rotation format this crate writes and reads (same versioning rule as envelopes).
pub const ROTATION_VERSION: u16 = 1;

/// A job-signing key as named in a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct TrustedKey {
    /// Its id, which must be [`KeyId::of`] its public key.
    pub key_id: KeyId,
    /// The ed25519 public key.
    pub public_key: PublicKey,
}

impl TrustedKey {
    /// The entry for a public key.
    pub fn new(public_key: PublicKey) -> Self {
        Self { key_id: KeyId::of(&public_key), public_key }
    }
}

/// A new set of trusted job-signing keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct KeyRotation {
    /// Format version, [`ROTATION_VERSION`].
    pub version: u16,
    /// The root key that signed it.
    pub root_key_id: KeyId,
    /// Unix seconds when it was signed.
    pub issued_at: u64,
    /// Rises with every rotation.
    pub rotation_seq: u64,
    /// The complete new set of trusted job-signing keys.
    pub keys: Vec<TrustedKey>,
}

#[derive(Deserialize)]
struct RotationHeader {
    version: u16,
    root_key_id: KeyId,
}

/// Verifies a rotation against the device's root key and the last rotation it applied,
/// and returns the rotation with the key ring it installs.
pub fn verify_rotation(
    bytes: &[u8],
    root: &Trusted,
    last_rotation_seq: u64,
) -> Result<(KeyRotation, KeyRing), Rejection> {
    if bytes.len() > MAX_ROTATION_BYTES {
        return Err(too_large(bytes.len(), MAX_ROTATION_BYTES));
    }
    let signed = SignedRef::decode(bytes).ok_or(Rejection::Malformed)?;
    let payload = signed.payload::<KeyRotation>().ok_or(Rejection::Malformed)?;
    let (header, _) = postcard::take_from_bytes::<RotationHeader>(payload).map_err(|_| Rejection::Malformed)?;
    if header.version != ROTATION_VERSION {
        return Err(Rejection::UnsupportedVersion { got: header.version, supported: ROTATION_VERSION });
    }
    if header.root_key_id != root.key_id {
        return Err(Rejection::UnknownKey { key_id: header.root_key_id });
    }
    if !signed.verify(&root.key) {
        return Err(Rejection::BadSignature);
    }
    let rotation: KeyRotation = postcard::from_bytes(payload).map_err(|_| Rejection::Malformed)?;
    if rotation.rotation_seq <= last_rotation_seq {
        return Err(Rejection::Replayed { seq: rotation.rotation_seq, last_accepted: last_rotation_seq });
    }
    if rotation.keys.is_empty() || rotation.keys.len() > MAX_TRUSTED_KEYS {
        return Err(Rejection::InvalidKeySet);
    }
    let mut ring = Vec::with_capacity(rotation.keys.len());
    for entry in &rotation.keys {
        match Trusted::new(&entry.public_key) {
            Some(trusted) if trusted.key_id == entry.key_id => ring.push(trusted),
            _ => return Err(Rejection::InvalidKeySet),
        }
    }
    let ring = KeyRing::new(ring).ok_or(Rejection::InvalidKeySet)?;
    Ok((rotation, ring))
}
