//! A new store learning where it stands (`fleet_schemas::sync`): until the controller's
//! grant for this store's incarnation is applied, nothing is accepted and a signed sync
//! request goes out on the events topic, again every `resend_after_ms` while the link is
//! up. The grant raises the replay floor (so envelopes signed for the old store are
//! refused), the time floor, and the event counter's base (so the controller never takes
//! a new event for an old one), then the incarnation is stored: from then on the store
//! is synced and envelopes are judged as usual.

use alloc::vec::Vec;

use fleet_schemas::{SYNC_VERSION, SyncRequest, verify_sync_grant};

use super::{AgentCore, Step, SyncState};
use crate::action::{Action, Notice, Publish, QoS};
use crate::event::sign_message;
use crate::input::Now;
use crate::store::StoreOp;

impl AgentCore {
    pub(super) fn on_sync_grant(&mut self, payload: &[u8], step: &mut Step) {
        let grant = match verify_sync_grant(payload, &self.keys, &self.config.device_id) {
            Ok(grant) => grant,
            Err(reason) => return step.after.push(Action::Notice(Notice::SyncRefused(reason))),
        };
        if grant.incarnation != self.incarnation {
            return step.after.push(Action::Notice(Notice::SyncForAnotherIncarnation));
        }
        if self.sync == SyncState::Synced {
            // The grant this store already applied, delivered again.
            return;
        }
        let mut replay = self.replay;
        replay.last_seq = replay.last_seq.max(grant.replay_floor);
        replay.time_floor = replay.time_floor.max(grant.issued_at);
        self.set_replay(replay, step);
        self.outbox.rebase(grant.event_base);
        if grant.event_base > 0 {
            // The acked-through row is what the next start numbers events after.
            step.batch.push(StoreOp::AckEvents { through_seq: grant.event_base });
        }
        step.batch.push(StoreOp::SetIncarnation(self.incarnation));
        self.sync = SyncState::Synced;
        step.after
            .push(Action::Notice(Notice::Synced { replay_floor: grant.replay_floor, event_base: grant.event_base }));
    }

    /// Sends the sync request of a new store, if one is due.
    pub(super) fn request_sync(&mut self, now: Now, out: &mut Vec<Action>) {
        let SyncState::Waiting { requested_at } = self.sync else { return };
        let due =
            requested_at.is_none_or(|at| now.monotonic_ms.saturating_sub(at) >= self.config.tuning.resend_after_ms);
        if !self.link_up || !due {
            return;
        }
        let request = SyncRequest {
            version: SYNC_VERSION,
            device_id: self.config.device_id.clone(),
            incarnation: self.incarnation,
        };
        match sign_message(&request, &self.config.device_key) {
            Some(payload) => {
                out.push(Action::Publish(Publish {
                    topic: self.own.events.clone(),
                    payload,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                }));
                out.push(Action::Notice(Notice::SyncRequested));
            }
            None => out.push(Action::Notice(Notice::EventNotEncoded)),
        }
        self.sync = SyncState::Waiting { requested_at: Some(now.monotonic_ms) };
    }
}
