//! Invariant 2: an event is stored before it is published and leaves the outbox only on
//! a verified ack covering it; event seqs start at 1, have no gaps and rise; events are
//! signed by the device. (The envelope batch before its ack is in `admission`.)

use std::collections::BTreeSet;

use fleet_agent_core::{Action, StoreOp};
use fleet_schemas::{EventKind, SigningKey};

use crate::support::*;

/// Runs three jobs to the end with the link up and returns every action.
fn three_jobs(h: &mut Harness) -> Vec<Action> {
    let mut all = h.link_up();
    for n in 1..=3 {
        let envelope = h.fleet.run(&Fleet::job(n), 1);
        all.extend(h.deliver_job(&envelope));
    }
    for n in 1..=3 {
        all.extend(h.succeed(&h.fleet.key(Fleet::job(n).job_id, 1)));
    }
    all
}

#[test]
fn every_event_is_stored_before_it_is_published() {
    let mut h = Harness::new();
    let actions = three_jobs(&mut h);
    let mut stored = BTreeSet::new();
    let events_topic = h.fleet.events_topic();
    let mut published = 0;
    for action in &actions {
        match action {
            Action::Persist(batch) => stored.extend(batch.iter().filter_map(|op| match op {
                StoreOp::PutEvent(e) => Some(e.bytes.clone()),
                _ => None,
            })),
            Action::Publish(p) if p.topic == events_topic => {
                assert!(stored.contains(&p.payload), "published before stored");
                published += 1;
            }
            _ => {}
        }
    }
    assert_eq!(published, 9, "accepted, started and succeeded for each job");
}

#[test]
fn event_seqs_start_at_one_without_gaps_and_events_are_signed_by_the_device() {
    let mut h = Harness::new();
    let actions = three_jobs(&mut h);
    let events = persisted_events(&actions); // decode_event verifies the device signature
    let seqs: Vec<u64> = events.iter().map(|e| e.event_seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
    assert_eq!(published_events(&actions).iter().map(|e| e.event_seq).collect::<Vec<_>>(), seqs);
    assert_eq!(h.core.next_event_seq(), 10);
    assert!(events.iter().all(|e| e.at == NOW_UNIX));
}

#[test]
fn an_event_leaves_the_outbox_only_on_a_verified_ack_covering_it() {
    let mut h = Harness::new();
    three_jobs(&mut h);
    assert_eq!(h.store.outbox.len(), 9);
    let topic = h.fleet.acks_topic();

    let forged = h.fleet.ack_signed_by(&SigningKey::from_bytes(&[0x77; 32]), 9);
    let (token, actions) = h.deliver(&topic, &forged);
    assert!(persisted(&actions).next().is_none());
    assert_eq!(acks(&actions), vec![token]);
    assert_eq!(h.store.outbox.len(), 9);

    let (token, actions) = h.deliver(&topic, &h.fleet.ack(4));
    assert_eq!(actions[0], Action::Persist(vec![StoreOp::AckEvents { through_seq: 4 }]));
    assert_eq!(actions[1], Action::AckDelivery(token));
    assert_eq!(h.store.outbox.keys().copied().collect::<Vec<_>>(), (5..=9).collect::<Vec<_>>());
    assert_eq!(h.core.outbox_depth(), 5);

    // An old ack changes nothing.
    let (_, actions) = h.deliver(&topic, &h.fleet.ack(2));
    assert!(persisted(&actions).next().is_none());
    assert_eq!(h.core.outbox_depth(), 5);
}

#[test]
fn an_ack_covers_only_events_that_may_have_been_published() {
    let mut h = Harness::new(); // link down: nothing is published
    let envelope = h.fleet.run(&Fleet::job(1), 1);
    h.deliver_job(&envelope);
    assert_eq!(h.store.outbox.len(), 2);
    let topic = h.fleet.acks_topic();
    let (_, actions) = h.deliver(&topic, &h.fleet.ack(100));
    assert!(persisted(&actions).next().is_none(), "nothing was published, nothing can be acked");
    assert_eq!(h.store.outbox.len(), 2);

    // Once published, a high ack covers what was published, and the counter goes on.
    h.link_up();
    let (_, actions) = h.deliver(&topic, &h.fleet.ack(100));
    assert_eq!(actions[0], Action::Persist(vec![StoreOp::AckEvents { through_seq: 2 }]));
    assert_eq!(h.core.next_event_seq(), 3);
}

#[test]
fn an_oversized_report_is_shrunk_to_fit_the_event_limit() {
    let mut h = Harness::new();
    let job = Fleet::job(1);
    let envelope = h.fleet.run(&job, 1);
    h.deliver_job(&envelope);
    let mut big = report(&vec![7; 100 * 1024]);
    big.logs = vec!["x".repeat(1000); 20];
    let actions = h.input(fleet_agent_core::Input::ExecutionFinished {
        key: h.fleet.key(job.job_id, 1),
        outcome: fleet_agent_core::Outcome::Succeeded(big),
    });
    let stored = persisted(&actions)
        .find_map(|op| match op {
            StoreOp::PutEvent(e) => Some(e.bytes.clone()),
            _ => None,
        })
        .unwrap();
    assert!(stored.len() <= fleet_schemas::limits::MAX_EVENT_BYTES);
    let event = h.fleet.decode_event(&stored);
    let EventKind::Succeeded(report) = event.kind else { panic!("{:?}", event.kind) };
    assert!(report.output.len() > 60 * 1024, "kept most of the output: {}", report.output.len());
    assert_eq!(report.logs.len(), 1, "logs replaced by a marker");
}
