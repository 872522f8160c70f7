//! Event ingest: what the controller does with one message on a device's events topic.
//!
//! The order is the protocol's (docs/protocol.md, section 4): take the sender's id from
//! the topic (the broker's ACL binds it to the connection), look up that device's public
//! key, verify the signature ([`fleet_schemas::verify_event`], which also refuses an
//! event that speaks for another device), then record the event and apply it to its
//! execution in one transaction ([`Store::record_event`]). Redelivery is the normal case
//! with QoS 1, so recording is idempotent twice over: by `(device, event_seq)` and by
//! `(execution, kind)`. Last comes the answer the device waits for before it deletes the
//! event from its outbox: a signed cumulative [`fleet_schemas::EventAck`].
//!
//! Anything that fails before the store is reached (unknown device, bad signature,
//! malformed, oversized) is an [`IngestError`]: the caller counts it, logs it and drops
//! the message. Nothing here panics on input.

use fleet_schemas::{
    DeviceId, EventError, EventKind, ExecutionEvent, FailReason, JobSpec, Order, Rejection, SyncRequest, VerifyingKey,
    verify_sync_request,
};

use crate::model::ExecState;
use crate::signer::Signer;
use crate::store::{EventOutcome, Resync, ResyncSigner, Store, StoreError};

/// Why an event was dropped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The topic names a device the registry does not have.
    #[error("event from unknown device {0:?}")]
    UnknownDevice(String),
    /// The device's registered public key is not a valid ed25519 point.
    #[error("device {0} has an unusable public key in the registry")]
    BadDeviceKey(DeviceId),
    /// The event failed verification.
    #[error("event from {device} refused: {error}")]
    Refused {
        /// The sender.
        device: DeviceId,
        /// Why.
        error: EventError,
    },
    /// The store failed: this one is not the sender's fault, and the event is not
    /// acknowledged (MQTT will deliver it again).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    /// Whether the message is the sender's fault (counted as malformed) rather than ours.
    pub fn is_malformed(&self) -> bool {
        !matches!(self, IngestError::Store(_))
    }
}

/// A recorded event and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The verified event.
    pub event: ExecutionEvent,
    /// What recording it did (duplicate, state change, the seq to ack).
    pub outcome: EventOutcome,
}

/// Verifies and records one event received on `topic_device`'s events topic.
pub fn ingest_event(store: &mut Store, topic_device: &str, bytes: &[u8], now_ms: u64) -> Result<Ingested, IngestError> {
    let device = DeviceId::new(topic_device).map_err(|_| IngestError::UnknownDevice(topic_device.to_string()))?;
    let public =
        store.device_public_key(device.as_str())?.ok_or_else(|| IngestError::UnknownDevice(device.to_string()))?;
    let key = VerifyingKey::from_bytes(&public.0).map_err(|_| IngestError::BadDeviceKey(device.clone()))?;
    let event = fleet_schemas::verify_event(bytes, &device, &key)
        .map_err(|error| IngestError::Refused { device: device.clone(), error })?;
    let outcome = store.record_event(&event, now_ms)?;
    Ok(Ingested { event, outcome })
}

/// Verifies a sync request received on `topic_device`'s events topic (a device whose
/// store is new asks where it stands, `fleet_schemas::sync`) and answers it
/// ([`Store::resync_device`]): the grant and the envelopes signed again, to publish
/// after the commit, the grant first.
pub fn ingest_sync_request(
    store: &mut Store,
    topic_device: &str,
    bytes: &[u8],
    now_ms: u64,
    signer: &Signer,
) -> Result<(SyncRequest, Resync), IngestError> {
    let device = DeviceId::new(topic_device).map_err(|_| IngestError::UnknownDevice(topic_device.to_string()))?;
    let public =
        store.device_public_key(device.as_str())?.ok_or_else(|| IngestError::UnknownDevice(device.to_string()))?;
    let key = VerifyingKey::from_bytes(&public.0).map_err(|_| IngestError::BadDeviceKey(device.clone()))?;
    let request = verify_sync_request(bytes, &device, &key)
        .map_err(|error| IngestError::Refused { device: device.clone(), error })?;
    let mut sign = ResyncSigning { signer, device: &device, request: &request, now_ms };
    let resync = store.resync_device(&device, &request.incarnation, now_ms, &mut sign)?;
    Ok((request, resync))
}

/// Signs a resync's grant and envelopes with the controller's active job key.
struct ResyncSigning<'a> {
    signer: &'a Signer,
    device: &'a DeviceId,
    request: &'a SyncRequest,
    now_ms: u64,
}

impl ResyncSigner for ResyncSigning<'_> {
    fn grant(&mut self, replay_floor: u64, event_base: u64) -> Result<Vec<u8>, String> {
        self.signer
            .sync_grant(self.device, self.request.incarnation, replay_floor, self.now_ms / 1000, event_base)
            .map_err(|e| e.to_string())
    }

    fn run(&mut self, seq: u64, spec: &[u8], attempt: u32, deadline_ms: u64) -> Result<Vec<u8>, String> {
        let job: JobSpec = postcard::from_bytes(spec).map_err(|e| format!("stored job spec: {e}"))?;
        let order = Order::Run { attempt, job: Box::new(job) };
        self.signer
            .envelope(self.device, seq, order, self.now_ms / 1000, deadline_ms.div_ceil(1000))
            .map_err(|e| e.to_string())
    }
}

/// The execution state an event moves an execution to, or `None` if it changes nothing.
///
/// A terminal state never changes. `Accepted` and `Started` only move forward. A
/// rejection counts only before the device has accepted the envelope (after that it is
/// the agent refusing a redelivered copy, which says nothing about the execution:
/// docs/protocol.md, "Duplicates"), and only when the refused bytes were authentic
/// (refusals 1 to 6 are about bytes anyone could have sent, and name the execution
/// without proof: "Labelling a rejection"); such a diagnostic is recorded and acked but
/// leaves the execution to its deadline.
pub fn transition(current: ExecState, kind: &EventKind) -> Option<ExecState> {
    if current.is_terminal() {
        return None;
    }
    let not_yet_accepted = matches!(current, ExecState::Queued | ExecState::Sent);
    match kind {
        EventKind::Accepted if not_yet_accepted => Some(ExecState::Accepted),
        EventKind::Started if current != ExecState::Running => Some(ExecState::Running),
        EventKind::Rejected { reason } if not_yet_accepted && rejection_is_authenticated(reason) => {
            Some(ExecState::Rejected)
        }
        EventKind::Succeeded(_) => Some(ExecState::Succeeded),
        EventKind::Failed { .. } => Some(ExecState::Failed),
        EventKind::Canceled => Some(ExecState::Canceled),
        _ => None,
    }
}

/// Whether a rejection is about an envelope whose signature checked out (verification
/// steps 8 to 11, or the agent's own checks), as opposed to unauthenticated bytes.
pub fn rejection_is_authenticated(reason: &Rejection) -> bool {
    !matches!(
        reason,
        Rejection::Malformed
            | Rejection::TooLarge { .. }
            | Rejection::UnsupportedVersion { .. }
            | Rejection::UnknownKey { .. }
            | Rejection::BadSignature
    )
}

/// The name of an event kind, as stored for deduplication.
pub fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Accepted => "accepted",
        EventKind::Rejected { .. } => "rejected",
        EventKind::Started => "started",
        EventKind::Succeeded(_) => "succeeded",
        EventKind::Failed { .. } => "failed",
        EventKind::Canceled => "canceled",
    }
}

/// The name of a failure reason, as shown to operators.
pub fn fail_reason_name(reason: FailReason) -> &'static str {
    match reason {
        FailReason::Trap => "trap",
        FailReason::OutOfFuel => "out of fuel",
        FailReason::OutOfMemory => "out of memory",
        FailReason::Timeout => "timeout",
        FailReason::Unsupported => "unsupported",
        FailReason::ModuleUnavailable => "module unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_schemas::RunReport;

    #[test]
    fn terminal_states_never_change() {
        let kinds = [
            EventKind::Accepted,
            EventKind::Started,
            EventKind::Succeeded(RunReport::default()),
            EventKind::Canceled,
            EventKind::Rejected { reason: Rejection::QueueFull { capacity: 1 } },
        ];
        for state in ExecState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for kind in &kinds {
                assert_eq!(transition(state, kind), None, "{state} changed by {kind:?}");
            }
        }
    }

    #[test]
    fn a_rejection_after_acceptance_is_ignored() {
        let replayed = EventKind::Rejected { reason: Rejection::Replayed { seq: 3, last_accepted: 4 } };
        assert_eq!(transition(ExecState::Sent, &replayed), Some(ExecState::Rejected));
        assert_eq!(transition(ExecState::Accepted, &replayed), None);
        assert_eq!(transition(ExecState::Running, &replayed), None);
    }

    #[test]
    fn a_rejection_of_unauthenticated_bytes_is_only_a_diagnostic() {
        for reason in [
            Rejection::BadSignature,
            Rejection::Malformed,
            Rejection::UnknownKey { key_id: fleet_schemas::KeyId([0; 8]) },
        ] {
            assert_eq!(transition(ExecState::Sent, &EventKind::Rejected { reason }), None);
        }
        let authentic = Rejection::Expired { not_after: 1, now: 2 };
        assert_eq!(transition(ExecState::Sent, &EventKind::Rejected { reason: authentic }), Some(ExecState::Rejected));
    }

    #[test]
    fn late_accept_after_start_is_ignored() {
        assert_eq!(transition(ExecState::Running, &EventKind::Accepted), None);
        assert_eq!(transition(ExecState::Sent, &EventKind::Started), Some(ExecState::Running));
        assert_eq!(
            transition(ExecState::Sent, &EventKind::Succeeded(RunReport::default())),
            Some(ExecState::Succeeded)
        );
    }
}
