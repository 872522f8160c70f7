//! Messages signed by the fleet's keys that change what the device trusts or keeps:
//! event acknowledgements (which empty the outbox) and key rotations (which replace the
//! job-signing keys). Both are verified before anything changes, and persisted before
//! the delivery is acknowledged.

use fleet_schemas::{Rejection, verify_ack, verify_rotation};

use super::{AgentCore, Step};
use crate::action::{Action, Notice};
use crate::store::{StoreOp, StoredKeys};

impl AgentCore {
    pub(super) fn on_event_ack(&mut self, payload: &[u8], step: &mut Step) {
        match verify_ack(payload, &self.keys, &self.config.device_id) {
            Ok(ack) => {
                if let Some(through_seq) = self.outbox.ack(ack.through_seq) {
                    step.batch.push(StoreOp::AckEvents { through_seq });
                }
            }
            Err(reason) => step.after.push(Action::Notice(Notice::AckRefused(reason))),
        }
    }

    pub(super) fn on_rotation(&mut self, payload: &[u8], step: &mut Step) {
        match verify_rotation(payload, &self.config.root_key, self.rotation_seq) {
            Ok((rotation, ring)) => {
                step.batch
                    .push(StoreOp::SetKeys(StoredKeys { rotation_seq: rotation.rotation_seq, keys: rotation.keys }));
                self.keys = ring;
                self.rotation_seq = rotation.rotation_seq;
                step.after.push(Action::Notice(Notice::RotationApplied { rotation_seq: rotation.rotation_seq }));
            }
            // The retained rotation already in force, delivered again on subscribe.
            Err(Rejection::Replayed { seq, .. }) if seq == self.rotation_seq => {}
            Err(reason) => step.after.push(Action::Notice(Notice::RotationRefused(reason))),
        }
    }
}
