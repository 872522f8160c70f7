//! Identifiers and fixed-size byte values that appear on the wire.
//!
//! Every fixed-size value (job ids, key ids, digests, public keys, signatures) is one
//! newtype made by [`fixed_bytes!`], so they share one encoding rule: raw bytes in
//! postcard (compact for microcontrollers), lowercase hex in JSON (readable with
//! `mosquitto_sub`). Device ids are validated on construction *and* on decode, so a
//! value of type [`DeviceId`] is always safe to splice into an MQTT topic.

use alloc::string::String;
use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid hex encoding of a fixed-size value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} hex digits")]
pub struct HexError {
    /// The number of hex digits the value needs.
    pub expected: usize,
}

macro_rules! fixed_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The length of this value in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lowercase hex, as used in topics and JSON.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for byte in &self.0 {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, HexError> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| HexError { expected: $len * 2 })?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    deserializer.deserialize_str(FixedVisitor::<$len>).map(Self)
                } else {
                    deserializer.deserialize_bytes(FixedVisitor::<$len>).map(Self)
                }
            }
        }

        #[cfg(feature = "arbitrary")]
        impl proptest::arbitrary::Arbitrary for $name {
            type Parameters = ();
            type Strategy = proptest::strategy::BoxedStrategy<Self>;
            fn arbitrary_with(_: ()) -> Self::Strategy {
                use proptest::prelude::*;
                proptest::collection::vec(any::<u8>(), $len)
                    .prop_map(|v| {
                        let mut out = [0u8; $len];
                        out.copy_from_slice(&v);
                        Self(out)
                    })
                    .boxed()
            }
        }
    };
}

struct FixedVisitor<const N: usize>;

impl<'de, const N: usize> serde::de::Visitor<'de> for FixedVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{N} bytes or {} hex digits", N * 2)
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
        <[u8; N]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<[u8; N], E> {
        let mut out = [0u8; N];
        hex::decode_to_slice(v, &mut out).map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))?;
        Ok(out)
    }
}

fixed_bytes!(
    /// A job's id: 128 random bits chosen by the controller.
    JobId, 16
);
fixed_bytes!(
    /// Names a signing key: the first 8 bytes of SHA-256 over its ed25519 public key.
    KeyId, 8
);
fixed_bytes!(
    /// A SHA-256 digest (module hashes, chunk chain links).
    Digest, 32
);
fixed_bytes!(
    /// An ed25519 public key, 32 bytes compressed.
    PublicKey, 32
);
fixed_bytes!(
    /// An ed25519 signature.
    SignatureBytes, 64
);
fixed_bytes!(
    /// One life of a device's store: 128 random bits the agent draws when its store is
    /// new, echoed by the controller's [`crate::sync::SyncGrant`].
    Incarnation, 16
);

impl JobId {
    /// The all-zero id, used in a rejection event when the rejected envelope carried no
    /// readable job id.
    pub const NIL: JobId = JobId([0; 16]);
}

impl KeyId {
    /// The key id of an ed25519 public key.
    pub fn of(public_key: &PublicKey) -> KeyId {
        let digest = crate::digest::sha256(&public_key.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.0[..8]);
        KeyId(id)
    }
}

pub use crate::limits::MAX_DEVICE_ID_LEN;

/// A device's id: 1 to 64 of `A-Z a-z 0-9 _ -`, starting with a letter or digit, and
/// not one of the names the fleet's own clients use ([`RESERVED_IDS`]). So it is safe
/// inside an MQTT topic (never `/`, `+`, `#`, nor `.`, which some brokers read as a level
/// separator: NATS maps MQTT's `/` to `.`), as a file name (never `.` or `..`), and as a
/// command-line word (never a leading `-`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

/// Why a string is not a device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// The id is empty.
    #[error("a device id cannot be empty")]
    Empty,
    /// The id is longer than [`MAX_DEVICE_ID_LEN`].
    #[error("a device id is at most {MAX_DEVICE_ID_LEN} bytes, this one has {0}")]
    TooLong(usize),
    /// The id holds a character other than `A-Z a-z 0-9 _ -`.
    #[error("a device id may hold only A-Z a-z 0-9 _ - (found {0:?})")]
    BadChar(char),
    /// The id does not start with a letter or digit.
    #[error("a device id must start with a letter or digit")]
    BadStart,
    /// The id is one the fleet's own clients log in with ([`RESERVED_IDS`]).
    #[error("that id is reserved for the fleet's own clients (fleet-controller, fleet-observer)")]
    Reserved,
}

/// Names the fleet's own MQTT clients use as client id and username, which no device
/// may have: a device named so could never log in, and would be mistaken for them.
pub const RESERVED_IDS: [&str; 2] = ["fleet-controller", "fleet-observer"];

impl DeviceId {
    /// Checks and wraps a device id.
    pub fn new(id: impl Into<String>) -> Result<Self, DeviceIdError> {
        let id = id.into();
        validate_device_id(&id)?;
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a device id without allocating.
pub fn validate_device_id(id: &str) -> Result<(), DeviceIdError> {
    validate_name(id)?;
    if RESERVED_IDS.contains(&id) {
        return Err(DeviceIdError::Reserved);
    }
    Ok(())
}

/// The character rule device ids and topic prefix levels share: 1 to 64 of
/// `A-Z a-z 0-9 _ -`, the first a letter or digit.
pub fn validate_name(id: &str) -> Result<(), DeviceIdError> {
    if id.is_empty() {
        return Err(DeviceIdError::Empty);
    }
    if id.len() > MAX_DEVICE_ID_LEN {
        return Err(DeviceIdError::TooLong(id.len()));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))) {
        return Err(DeviceIdError::BadChar(c));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(DeviceIdError::BadStart);
    }
    Ok(())
}

impl TryFrom<String> for DeviceId {
    type Error = DeviceIdError;
    fn try_from(id: String) -> Result<Self, DeviceIdError> {
        Self::new(id)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, DeviceIdError> {
        Self::new(s)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({:?})", self.0)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(feature = "arbitrary")]
impl proptest::arbitrary::Arbitrary for DeviceId {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<Self>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        use proptest::prelude::*;
        "[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
            .prop_filter("not reserved", |id| !RESERVED_IDS.contains(&id.as_str()))
            .prop_map(DeviceId)
            .boxed()
    }
}

/// Serde helpers for variable-length byte fields: `serialize_bytes` in postcard (the
/// same wire form as a `Vec<u8>` sequence, decoded in one copy) and hex in JSON.
pub(crate) mod hex_bytes {
    use alloc::vec::Vec;
    use core::fmt;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(bytes))
        } else {
            serializer.serialize_bytes(bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes or hex digits")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                hex::decode(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(BytesVisitor)
        } else {
            deserializer.deserialize_bytes(BytesVisitor)
        }
    }
}
