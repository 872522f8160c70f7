//! Signed messages: the exact postcard bytes of a value plus an ed25519 signature over
//! those bytes.
//!
//! The signature covers bytes, not a value: a verifier checks the bytes it received
//! before it decodes them, and nobody ever has to re-encode a value to check it. One
//! wrapper serves envelopes (signed by the controller), execution events (signed by the
//! device) and key rotations (signed by the root key).

use alloc::vec::Vec;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{KeyId, PublicKey, SignatureBytes};

/// A value's postcard bytes and the signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMessage {
    /// The exact postcard encoding of the signed value.
    #[serde(with = "crate::ids::hex_bytes")]
    pub body: Vec<u8>,
    /// ed25519 over `body`.
    pub signature: SignatureBytes,
}

/// The same wire form as [`SignedMessage`], borrowed from the received bytes so that
/// verification copies nothing before the signature is checked.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct SignedRef<'a> {
    #[serde(borrow)]
    pub body: &'a [u8],
    pub signature: SignatureBytes,
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("could not encode the message")]
pub struct EncodeError;

impl SignedMessage {
    /// Encodes `value` with postcard and signs the bytes.
    pub fn sign<T: Serialize>(value: &T, key: &SigningKey) -> Result<Self, EncodeError> {
        let body = postcard::to_allocvec(value).map_err(|_| EncodeError)?;
        let signature = key.sign(&body);
        Ok(Self { body, signature: SignatureBytes(signature.to_bytes()) })
    }

    /// The wire bytes of this signed message.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        postcard::to_allocvec(self).map_err(|_| EncodeError)
    }

    /// Decodes a signed message from wire bytes (the signature is not checked here).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl<'a> SignedRef<'a> {
    pub(crate) fn decode(bytes: &'a [u8]) -> Option<Self> {
        match postcard::take_from_bytes::<SignedRef<'a>>(bytes) {
            // Trailing bytes make the message malformed: one message, one encoding.
            Ok((signed, [])) => Some(signed),
            _ => None,
        }
    }

    pub(crate) fn verify(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(self.body, &Signature::from_bytes(&self.signature.0)).is_ok()
    }
}

/// A public key the verifier trusts, ready to verify with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    /// The key's id.
    pub key_id: KeyId,
    /// The decompressed key.
    pub key: VerifyingKey,
}

impl Trusted {
    /// Checks that `public` is a valid ed25519 point and wraps it with its key id.
    pub fn new(public: &PublicKey) -> Option<Self> {
        let key = VerifyingKey::from_bytes(&public.0).ok()?;
        Some(Self { key_id: KeyId::of(public), key })
    }

    /// The public key of a signing key, ready to verify with.
    pub fn of_signing_key(key: &SigningKey) -> Self {
        let public = PublicKey(key.verifying_key().to_bytes());
        Self { key_id: KeyId::of(&public), key: key.verifying_key() }
    }

    /// The public key bytes.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.to_bytes())
    }
}

/// The public key and key id of a signing key.
pub fn public_key_of(key: &SigningKey) -> (KeyId, PublicKey) {
    let public = PublicKey(key.verifying_key().to_bytes());
    (KeyId::of(&public), public)
}
