//! Event acknowledgements: the controller tells a device which of its events it has.
//!
//! An MQTT PUBACK only says the *broker* has an event. A device may delete an event
//! from its outbox only once the *controller* has recorded it, so the controller
//! answers on `{prefix}/devices/{id}/acks` with a cumulative [`EventAck`]: "I have every
//! event of yours through `through_seq`". Device event sequence numbers start at 1 and
//! have no gaps, which is what makes one number enough. Acks are signed with a
//! job-signing key: a forged ack would make a device delete results the controller
//! never saw. An old ack replayed is harmless (the device keeps the highest).

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, KeyId};
use crate::limits::MAX_ACK_BYTES;
use crate::signed::verify_by_ring;
use crate::verify::{KeyRing, Rejection};

/// The ack format this crate writes and reads (same versioning rule as envelopes).
pub const ACK_VERSION: u16 = 1;

/// "I have every event of yours through `through_seq`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct EventAck {
    /// Format version, [`ACK_VERSION`].
    pub version: u16,
    /// The key that signed it.
    pub key_id: KeyId,
    /// The device whose events are acknowledged.
    pub device_id: DeviceId,
    /// The highest event sequence number such that the controller has recorded it and
    /// every one before it.
    pub through_seq: u64,
}

/// Verifies an ack received by device `me`.
pub fn verify_ack(bytes: &[u8], keys: &KeyRing, me: &DeviceId) -> Result<EventAck, Rejection> {
    let ack: EventAck = verify_by_ring(bytes, keys, MAX_ACK_BYTES, ACK_VERSION)?;
    if ack.device_id != *me {
        return Err(Rejection::WrongTarget { addressed_to: ack.device_id });
    }
    Ok(ack)
}
