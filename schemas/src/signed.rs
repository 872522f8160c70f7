//! Signed messages: the exact bytes of a value plus an ed25519 signature over those
//! bytes.
//!
//! The signed bytes are a 4-byte type tag ([`Signable::TAG`]) followed by the value's
//! postcard encoding. The tag separates the signing domains: envelopes and event acks
//! are signed by the same controller key, and without it the bytes of one could be
//! offered as the other; with it, a signature made for one type never verifies as
//! another.
//!
//! The signature covers bytes, not a value: a verifier checks the bytes it received
//! before it decodes them, and nobody ever has to re-encode a value to check it. One
//! wrapper serves envelopes (signed by the controller), execution events (signed by the
//! device) and key rotations (signed by the root key).

use alloc::vec::Vec;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{KeyId, PublicKey, SignatureBytes};

/// A message type that travels signed, with the tag that opens its signed bytes.
pub trait Signable: Serialize {
    /// The first four signed bytes of every message of this type.
    const TAG: [u8; 4];
}

impl Signable for crate::envelope::Envelope {
    const TAG: [u8; 4] = *b"FENV";
}
impl Signable for crate::event::ExecutionEvent {
    const TAG: [u8; 4] = *b"FEVT";
}
impl Signable for crate::ack::EventAck {
    const TAG: [u8; 4] = *b"FACK";
}
impl Signable for crate::rotation::KeyRotation {
    const TAG: [u8; 4] = *b"FROT";
}

/// A value's tagged postcard bytes and the signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMessage {
    /// The signed bytes: [`Signable::TAG`] then the postcard encoding of the value.
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
    /// Encodes `value` (tag, then postcard) and signs the bytes.
    pub fn sign<T: Signable>(value: &T, key: &SigningKey) -> Result<Self, EncodeError> {
        let body = Vec::from(T::TAG);
        postcard::to_extend(value, body).map_err(|_| EncodeError).map(|body| {
            let signature = key.sign(&body);
            Self { body, signature: SignatureBytes(signature.to_bytes()) }
        })
    }

    /// Decodes the signed value (the signature is not checked here).
    pub fn decode_body<T: Signable + serde::de::DeserializeOwned>(&self) -> Option<T> {
        postcard::from_bytes(self.body.strip_prefix(&T::TAG)?).ok()
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

    /// The postcard bytes after the tag, if the tag is `T`'s.
    pub(crate) fn payload<T: Signable>(&self) -> Option<&'a [u8]> {
        self.body.strip_prefix(&T::TAG)
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
