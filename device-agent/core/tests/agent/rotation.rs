//! Invariant 7: a key rotation on the keys topic is verified against the root key; on
//! success the new key ring and rotation seq are persisted, then used.

use fleet_agent_core::{Action, Notice, StoreOp};
use fleet_schemas::{EventKind, Order, Rejection, SigningKey};

use crate::support::*;

#[test]
fn a_verified_rotation_is_persisted_before_its_ack_and_then_used() {
    let mut h = Harness::new();
    let new_key = SigningKey::from_bytes(&[0x44; 32]);
    let rotation = h.fleet.rotation_signed_by(&h.fleet.root, 5, &[&new_key]);
    let (token, actions) = h.deliver("fleet/keys", &rotation);
    let Action::Persist(batch) = &actions[0] else { panic!("{actions:#?}") };
    assert!(matches!(batch.as_slice(), [StoreOp::SetKeys(k)] if k.rotation_seq == 5 && k.keys.len() == 1));
    assert_eq!(actions[1], Action::AckDelivery(token));
    assert_eq!(h.core.rotation_seq(), 5);

    // The old key is retired, the new one works.
    let job = Fleet::job(1);
    let order = || Order::Run { attempt: 1, job: Box::new(Fleet::job(1)) };
    let old = h.fleet.envelope_at(1, order());
    let events = persisted_events(&h.deliver_job(&old));
    assert!(matches!(events[0].kind, EventKind::Rejected { reason: Rejection::UnknownKey { .. } }));
    let new = h.fleet.envelope_with(&new_key, 2, order(), NOW_UNIX - 60, NOW_UNIX + 60);
    assert_eq!(runs(&h.deliver_job(&new)), vec![h.fleet.key(job.job_id, 1)]);

    // It survives a restart.
    h.restart();
    assert_eq!(h.core.rotation_seq(), 5);
    assert!(h.core.trusted_keys().keys().iter().all(|k| k.key == new_key.verifying_key()));
}

#[test]
fn bad_rotations_are_refused_and_the_retained_one_is_quietly_ignored() {
    let mut h = Harness::new();
    let new_key = SigningKey::from_bytes(&[0x44; 32]);
    let current = h.fleet.rotation_signed_by(&h.fleet.root, 5, &[&new_key]);
    h.deliver("fleet/keys", &current);

    // The retained rotation, delivered again on every subscribe: nothing at all.
    let (token, actions) = h.deliver("fleet/keys", &current);
    assert_eq!(actions, vec![Action::AckDelivery(token)]);

    let older = h.fleet.rotation_signed_by(&h.fleet.root, 4, &[&h.fleet.controller]);
    let not_root = h.fleet.rotation_signed_by(&h.fleet.controller, 6, &[&h.fleet.controller]);
    for bytes in [older, not_root, vec![0xFF; 10]] {
        let (_, actions) = h.deliver("fleet/keys", &bytes);
        assert!(persisted(&actions).next().is_none());
        assert!(actions.iter().any(|a| matches!(a, Action::Notice(Notice::RotationRefused(_)))));
    }
    assert_eq!(h.core.rotation_seq(), 5);
}
