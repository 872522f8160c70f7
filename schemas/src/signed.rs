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
impl Signable for crate::sync::SyncRequest {
    const TAG: [u8; 4] = *b"FSYQ";
}
impl Signable for crate::sync::SyncGrant {
    const TAG: [u8; 4] = *b"FSYN";
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

/// The checks of a message signed by one of the controller's job-signing keys, cheapest
/// and least trusting first: size, frame, type tag, version, key, signature; only the
/// signed body is then decoded. `version` is the first field after the tag, the key id
/// the second (the frozen header, docs/protocol.md section 7).
pub(crate) fn verify_by_ring<T: Signable + serde::de::DeserializeOwned>(
    bytes: &[u8],
    keys: &crate::verify::KeyRing,
    max_bytes: usize,
    version: u16,
) -> Result<T, crate::verify::Rejection> {
    use crate::verify::{Rejection, too_large};
    #[derive(Deserialize)]
    struct Header {
        version: u16,
        key_id: KeyId,
    }
    if bytes.len() > max_bytes {
        return Err(too_large(bytes.len(), max_bytes));
    }
    let signed = SignedRef::decode(bytes).ok_or(Rejection::Malformed)?;
    let payload = signed.payload::<T>().ok_or(Rejection::Malformed)?;
    let (header, _) = postcard::take_from_bytes::<Header>(payload).map_err(|_| Rejection::Malformed)?;
    if header.version != version {
        return Err(Rejection::UnsupportedVersion { got: header.version, supported: version });
    }
    let key = keys.get(&header.key_id).ok_or(Rejection::UnknownKey { key_id: header.key_id })?;
    if !signed.verify(&key.key) {
        return Err(Rejection::BadSignature);
    }
    postcard::from_bytes(payload).map_err(|_| Rejection::Malformed)
}

/// The checks of a message signed by a device (with the key the controller holds for
/// the device whose topic it came on): size, frame, type tag, version, signature; then
/// the body is decoded.
pub(crate) fn verify_by_device<T: Signable + serde::de::DeserializeOwned>(
    bytes: &[u8],
    device_key: &VerifyingKey,
    max_bytes: usize,
    version: u16,
) -> Result<T, crate::event::EventError> {
    use crate::event::EventError;
    if bytes.len() > max_bytes {
        return Err(EventError::TooLarge(bytes.len()));
    }
    let signed = SignedRef::decode(bytes).ok_or(EventError::Malformed)?;
    let payload = signed.payload::<T>().ok_or(EventError::Malformed)?;
    let (found, _) = postcard::take_from_bytes::<u16>(payload).map_err(|_| EventError::Malformed)?;
    if found != version {
        return Err(EventError::UnsupportedVersion(found));
    }
    if !signed.verify(device_key) {
        return Err(EventError::BadSignature);
    }
    postcard::from_bytes(payload).map_err(|_| EventError::Malformed)
}

/// Whether `bytes` are a signed message of type `T`, by its type tag alone (nothing is
/// verified): lets one topic carry two message types (a device's events topic carries
/// events and sync requests, its jobs topic envelopes and sync grants).
pub fn is_signed<T: Signable>(bytes: &[u8]) -> bool {
    SignedRef::decode(bytes).is_some_and(|signed| signed.payload::<T>().is_some())
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
