//! Store resync: how a device whose store came back empty rejoins the fleet without
//! losing a result or re-opening replays.
//!
//! A device's durable store carries two counters the protocol leans on: the last
//! envelope `seq` it accepted ([`ReplayState`](crate::ReplayState), which refuses
//! replays) and its event counter (`event_seq`, by which the controller drops the events
//! it already has). A reinstalled gateway, a replaced SD card or an erased flash starts
//! both again from zero: the controller would then drop the device's new events as
//! duplicates of old ones, and the device would accept old envelopes again. So a device
//! whose store is new runs nothing until the controller has told it where it stands:
//!
//! ```text
//!  device (new store: no incarnation yet)                       controller
//!  SyncRequest { device, incarnation } ── p/devices/d/events ──▶ verify (device key)
//!    (device key; sent again until answered)                     replay_floor = highest seq signed for d
//!                                                                event_base   = highest event seq recorded for d
//!                                                                sign again every execution still in flight for d
//!  verify (job key), same incarnation ◀── p/devices/d/jobs ──── SyncGrant { incarnation, replay_floor,
//!  last_seq   = max(last_seq, replay_floor)                                  issued_at, event_base }
//!  time_floor = max(time_floor, issued_at)                       then the envelopes signed again, same topic
//!  next event_seq = event_base + 1
//!  store the incarnation: the store is synced
//! ```
//!
//! The grant travels on the jobs topic ahead of the envelopes signed again, so MQTT's
//! per-topic order delivers it before them. Whatever a device receives on that topic
//! before its grant (copies the broker kept for the old store) it drops: the controller
//! signs every execution still in flight again, above the floor. The incarnation (16
//! random bytes the device draws when its store is new) binds a grant to one request: a
//! grant of an earlier reset replayed to a later one names another incarnation and is
//! refused, so it cannot lower the floor.
//!
//! Both messages are signed with the keys that sign events and acks, behind their own
//! type tags (`FSYQ`, `FSYN`), so neither passes for anything else.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::event::EventError;
use crate::ids::{DeviceId, Incarnation, KeyId};
use crate::limits::MAX_SYNC_BYTES;
use crate::signed::{verify_by_device, verify_by_ring};
use crate::verify::{KeyRing, Rejection};

/// The format of both sync messages (same versioning rule as envelopes).
pub const SYNC_VERSION: u16 = 1;

/// "My store is new: tell me where I stand." Signed by the device, on its events topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct SyncRequest {
    /// Format version, [`SYNC_VERSION`].
    pub version: u16,
    /// The device.
    pub device_id: DeviceId,
    /// The new store's incarnation.
    pub incarnation: Incarnation,
}

/// "Here is where you stand." Signed by a job-signing key, on the device's jobs topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct SyncGrant {
    /// Format version, [`SYNC_VERSION`].
    pub version: u16,
    /// The key that signed it.
    pub key_id: KeyId,
    /// The device.
    pub device_id: DeviceId,
    /// The incarnation of the request it answers.
    pub incarnation: Incarnation,
    /// Every envelope the controller signed for this device before the grant has a seq
    /// at or below this: the device refuses them all from now on.
    pub replay_floor: u64,
    /// The controller's time, Unix seconds: the device's new time floor.
    pub issued_at: u64,
    /// Every event of this device the controller has recorded has a seq at or below
    /// this: the device numbers its events from `event_base + 1`.
    pub event_base: u64,
}

/// Verifies a sync request received on device `sender`'s events topic against that
/// device's public key (the controller's side).
pub fn verify_sync_request(
    bytes: &[u8],
    sender: &DeviceId,
    device_key: &VerifyingKey,
) -> Result<SyncRequest, EventError> {
    let request: SyncRequest = verify_by_device(bytes, device_key, MAX_SYNC_BYTES, SYNC_VERSION)?;
    if request.device_id != *sender {
        return Err(EventError::WrongDevice { sender: sender.clone(), claimed: request.device_id });
    }
    Ok(request)
}

/// Verifies a sync grant received by device `me` (the device's side). Whether it answers
/// this store's request, by its incarnation, is the caller's check.
pub fn verify_sync_grant(bytes: &[u8], keys: &KeyRing, me: &DeviceId) -> Result<SyncGrant, Rejection> {
    let grant: SyncGrant = verify_by_ring(bytes, keys, MAX_SYNC_BYTES, SYNC_VERSION)?;
    if grant.device_id != *me {
        return Err(Rejection::WrongTarget { addressed_to: grant.device_id });
    }
    Ok(grant)
}
