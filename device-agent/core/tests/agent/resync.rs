//! Invariant 10: a store that comes back empty (a device's first start, a reinstalled
//! gateway, an erased flash) runs nothing until the controller's sync grant for its
//! incarnation is applied; after it, envelopes signed for the old store are refused as
//! replays and events are numbered past every one the controller has recorded, so no
//! result is taken for a duplicate.

use fleet_agent_core::{Action, Notice, StoreOp};
use fleet_schemas::{EventKind, Incarnation, Order, Rejection, SyncRequest, verify_sync_request};

use crate::support::*;

/// The sync requests published in `actions`, verified with the device's key.
fn sync_requests(h: &Harness, actions: &[Action]) -> Vec<SyncRequest> {
    let topic = h.fleet.events_topic();
    publishes(actions)
        .filter(|p| p.topic == topic && fleet_schemas::signed::is_signed::<SyncRequest>(&p.payload))
        .map(|p| verify_sync_request(&p.payload, &h.fleet.me, &h.fleet.device.verifying_key()).unwrap())
        .collect()
}

fn notices(actions: &[Action]) -> Vec<&Notice> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notice(n) => Some(n),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_store_asks_where_it_stands_and_runs_nothing_until_told() {
    let mut h = Harness::new_store();
    assert!(!h.core.is_synced());
    let up = h.link_up();
    let requests = sync_requests(&h, &up);
    assert_eq!(requests.len(), 1, "{up:#?}");
    assert_eq!(requests[0].incarnation, h.core.incarnation());

    // An envelope before the grant is acknowledged and dropped: nothing stored, no event.
    let envelope = h.fleet.run(&Fleet::job(1), 1);
    let before = h.deliver_job(&envelope);
    assert_eq!(acks(&before).len(), 1);
    assert_eq!(persisted(&before).count(), 0, "{before:#?}");
    assert!(notices(&before).contains(&&Notice::EnvelopeBeforeSync));
    assert_eq!(h.core.queue_depth(), 0);

    // Unanswered, the request goes out again after the resend interval, not before.
    let soon = h.tick(1_000);
    assert!(sync_requests(&h, &soon).is_empty());
    let again = h.tick(h.tuning.resend_after_ms);
    assert_eq!(sync_requests(&h, &again).len(), 1);

    // The grant: floor 5, base 40, applied and stored in one batch before its PUBACK.
    let grant = h.fleet.grant(h.core.incarnation(), 5, 40);
    let applied = h.deliver_job(&grant);
    let persisted_at = position(&applied, |a| matches!(a, Action::Persist(_)));
    let acked_at = position(&applied, |a| matches!(a, Action::AckDelivery(_)));
    assert!(persisted_at < acked_at);
    assert!(persisted(&applied).any(|op| matches!(op, StoreOp::SetIncarnation(i) if *i == h.core.incarnation())));
    assert!(h.core.is_synced());
    assert_eq!(h.store.replay.last_seq, 5);
    assert_eq!(h.store.incarnation, Some(h.core.incarnation()));
    assert_eq!(h.core.next_event_seq(), 41);

    // Old seqs are replays now; a new one runs, its events numbered after the base.
    let old = h.fleet.envelope_at(4, Order::Run { attempt: 1, job: Box::new(Fleet::job(2)) });
    let refused = h.deliver_job(&old);
    let events = persisted_events(&refused);
    assert!(
        matches!(events.as_slice(), [e] if e.event_seq == 41
            && matches!(e.kind, EventKind::Rejected { reason: Rejection::Replayed { seq: 4, last_accepted: 5 } })),
        "{events:?}"
    );
    let fresh = h.fleet.envelope_at(6, Order::Run { attempt: 1, job: Box::new(Fleet::job(3)) });
    let accepted = persisted_events(&h.deliver_job(&fresh));
    assert!(matches!(accepted.first(), Some(e) if e.event_seq == 42 && e.kind == EventKind::Accepted), "{accepted:?}");
    // No more requests once synced.
    let later = h.tick(h.tuning.resend_after_ms * 2);
    assert!(sync_requests(&h, &later).is_empty());
}

#[test]
fn a_grant_for_another_incarnation_or_badly_signed_changes_nothing() {
    let mut h = Harness::new_store();
    h.link_up();
    let stale = h.fleet.grant(Incarnation([0x42; 16]), 9, 9);
    let ignored = h.deliver_job(&stale);
    assert!(notices(&ignored).contains(&&Notice::SyncForAnotherIncarnation));
    assert_eq!(persisted(&ignored).count(), 0);
    let mut forged = h.fleet.grant(h.core.incarnation(), 9, 9);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let refused = h.deliver_job(&forged);
    assert!(notices(&refused).contains(&&Notice::SyncRefused(Rejection::BadSignature)), "{refused:#?}");
    assert!(!h.core.is_synced());
    assert_eq!(h.store.replay.last_seq, 0);
}

#[test]
fn a_store_that_came_back_empty_refuses_what_it_ran_and_loses_no_result() {
    // A device that ran a job, had its events acknowledged, then lost its store.
    let mut h = Harness::new();
    h.link_up();
    let ran = h.fleet.run(&Fleet::job(1), 1);
    h.deliver_job(&ran);
    let key = h.fleet.key(Fleet::job(1).job_id, 1);
    h.succeed(&key);
    let (topic, ack) = (h.fleet.acks_topic(), h.fleet.ack(3));
    let (_, acked) = h.deliver(&topic, &ack);
    assert!(persisted(&acked).any(|op| matches!(op, StoreOp::AckEvents { through_seq: 3 })));
    let old_incarnation = h.store.incarnation;

    h.store = MemStore::default();
    h.restart();
    assert!(!h.core.is_synced());
    assert_ne!(Some(h.core.incarnation()), old_incarnation);
    let up = h.link_up();
    assert_eq!(sync_requests(&h, &up).len(), 1);
    // The controller signed seq 1 for it and recorded events 1 to 3.
    let grant = h.fleet.grant(h.core.incarnation(), 1, 3);
    h.deliver_job(&grant);

    // The envelope it ran before is refused as a replay, while it is still valid.
    let replayed = persisted_events(&h.deliver_job(&ran));
    assert!(
        matches!(replayed.as_slice(), [e] if matches!(e.kind, EventKind::Rejected { reason: Rejection::Replayed { .. } })),
        "{replayed:?}"
    );
    // A new job's result is numbered after the old ones: the controller cannot take it
    // for a duplicate.
    let next = h.fleet.run(&Fleet::job(2), 1);
    h.deliver_job(&next);
    let key = h.fleet.key(Fleet::job(2).job_id, 1);
    let done = h.succeed(&key);
    let terminal = persisted_events(&done);
    assert!(matches!(terminal.as_slice(), [e] if matches!(e.kind, EventKind::Succeeded(_)) && e.event_seq > 3));
    // An old ack (through 3) covers none of the new events.
    let (_, old_ack) = h.deliver(&topic, &ack);
    assert_eq!(persisted(&old_ack).count(), 0);
    assert!(h.store.outbox.keys().all(|seq| *seq > 3));
}

#[test]
fn a_synced_store_keeps_its_incarnation_across_restarts_and_ignores_its_grant_again() {
    let mut h = Harness::new_store();
    h.link_up();
    let grant = h.fleet.grant(h.core.incarnation(), 0, 0);
    h.deliver_job(&grant);
    let incarnation = h.core.incarnation();
    h.restart();
    assert!(h.core.is_synced());
    assert_eq!(h.core.incarnation(), incarnation);
    let up = h.link_up();
    assert!(sync_requests(&h, &up).is_empty());
    // The broker delivers the grant again: nothing changes.
    let again = h.deliver_job(&grant);
    assert_eq!(persisted(&again).count(), 0);
    assert_eq!(acks(&again).len(), 1);
}

#[test]
fn a_store_written_before_incarnations_keeps_its_counters_and_takes_one() {
    // State, but no incarnation: not a new store, so no resync.
    let mut h = Harness::new();
    h.link_up();
    let envelope = h.fleet.run(&Fleet::job(1), 1);
    h.deliver_job(&envelope);
    h.store.incarnation = None;
    h.restart();
    assert!(h.core.is_synced());
    let first = h.tick(0);
    assert!(persisted(&first).any(|op| matches!(op, StoreOp::SetIncarnation(_))), "{first:#?}");
    assert_eq!(h.store.incarnation, Some(h.core.incarnation()));
    // Accepted and Started were numbered 1 and 2 before the restart.
    assert_eq!(h.core.next_event_seq(), 3);
}
