//! Invariant 4: executions run one at a time by default (or up to the configured
//! concurrency), in FIFO order, with `Started` and terminal events; a verified cancel
//! drops a queued execution or stops a running one with one `Canceled` event, and a
//! cancel of anything else is harmless.

use fleet_agent_core::{Action, Input, Outcome, Tuning};
use fleet_schemas::{EventKind, FailReason, JobId};

use crate::support::*;

fn accept(h: &mut Harness, n: u8) -> Vec<Action> {
    let envelope = h.fleet.run(&Fleet::job(n), 1);
    h.deliver_job(&envelope)
}

fn key(h: &Harness, n: u8) -> fleet_schemas::ExecutionKey {
    h.fleet.key(Fleet::job(n).job_id, 1)
}

#[test]
fn executions_run_one_at_a_time_in_fifo_order() {
    let mut h = Harness::new();
    assert_eq!(runs(&accept(&mut h, 1)), vec![key(&h, 1)]);
    assert!(runs(&accept(&mut h, 2)).is_empty());
    assert!(runs(&accept(&mut h, 3)).is_empty());
    assert_eq!(h.core.queue_depth(), 3);

    let actions = h.succeed(&key(&h, 1));
    assert_eq!(kinds(&persisted_events(&actions)), vec![EventKind::Succeeded(report(b"ok")), EventKind::Started]);
    assert_eq!(runs(&actions), vec![key(&h, 2)]);
    let failed = Outcome::Failed { reason: FailReason::OutOfFuel, message: "fuel".into(), report: report(b"") };
    let actions = h.input(Input::ExecutionFinished { key: key(&h, 2), outcome: failed });
    assert!(matches!(persisted_events(&actions)[0].kind, EventKind::Failed { reason: FailReason::OutOfFuel, .. }));
    assert_eq!(runs(&actions), vec![key(&h, 3)]);
    assert!(runs(&h.succeed(&key(&h, 3))).is_empty());
    assert_eq!(h.core.queue_depth(), 0);
    assert!(h.store.executions.is_empty());
}

#[test]
fn concurrency_is_configurable() {
    let mut h = Harness::with_tuning(Tuning { max_concurrent: 2, ..Tuning::default() });
    assert_eq!(runs(&accept(&mut h, 1)), vec![key(&h, 1)]);
    assert_eq!(runs(&accept(&mut h, 2)), vec![key(&h, 2)]);
    assert!(runs(&accept(&mut h, 3)).is_empty());
    assert_eq!(runs(&h.succeed(&key(&h, 2))), vec![key(&h, 3)]);
}

#[test]
fn a_cancel_drops_a_queued_execution() {
    let mut h = Harness::new();
    accept(&mut h, 1);
    accept(&mut h, 2);
    let cancel = h.fleet.cancel(Fleet::job(2).job_id);
    let actions = h.deliver_job(&cancel);
    let events = persisted_events(&actions);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].key.clone(), events[0].kind.clone()), (key(&h, 2), EventKind::Canceled));
    assert!(!actions.iter().any(|a| matches!(a, Action::Stop { .. })));
    assert!(runs(&h.succeed(&key(&h, 1))).is_empty(), "the canceled one never runs");
    assert_eq!(h.core.queue_depth(), 0);
}

#[test]
fn a_cancel_stops_a_running_execution_which_keeps_its_slot_until_it_stopped() {
    let mut h = Harness::new();
    accept(&mut h, 1);
    accept(&mut h, 2);
    let cancel = h.fleet.cancel(Fleet::job(1).job_id);
    let actions = h.deliver_job(&cancel);
    let ack = position(&actions, |a| matches!(a, Action::AckDelivery(_)));
    let stop = position(&actions, |a| *a == Action::Stop { key: key(&h, 1) });
    assert!(ack < stop);
    assert_eq!(kinds(&persisted_events(&actions)), vec![EventKind::Canceled]);
    assert!(runs(&actions).is_empty(), "the slot is held until the shell confirms the stop");

    // The shell confirms (whatever the outcome): no second terminal event, next job runs.
    let actions = h.input(Input::ExecutionFinished {
        key: key(&h, 1),
        outcome: Outcome::Failed { reason: FailReason::Trap, message: "interrupted".into(), report: report(b"") },
    });
    assert_eq!(kinds(&persisted_events(&actions)), vec![EventKind::Started]);
    assert_eq!(runs(&actions), vec![key(&h, 2)]);
}

#[test]
fn a_cancel_of_an_unknown_or_finished_job_is_harmless() {
    let mut h = Harness::new();
    accept(&mut h, 1);
    h.succeed(&key(&h, 1));
    for job_id in [Fleet::job(1).job_id, JobId([0xEE; 16])] {
        let cancel = h.fleet.cancel(job_id);
        let actions = h.deliver_job(&cancel);
        assert!(persisted_events(&actions).is_empty());
        assert_eq!(acks(&actions).len(), 1);
        // Redelivered: still nothing.
        let actions = h.deliver_job(&cancel);
        assert_eq!(actions.len(), 1, "{actions:#?}");
    }
    assert_eq!(h.store.outbox.len(), 3, "accepted, started, succeeded: nothing else");
}

#[test]
fn a_finish_for_an_unknown_execution_is_ignored() {
    let mut h = Harness::new();
    let actions = h.succeed(&key(&h, 4));
    assert!(matches!(actions.as_slice(), [Action::Notice(_)]));
    assert!(h.store.outbox.is_empty());
}
