//! Invariants 1 and 3: nothing runs that `verify_envelope` did not pass, every refusal is
//! reported as a signed `Rejected` event, and a QoS 1 redelivery is acknowledged again
//! and changes nothing.

use fleet_agent_core::{Action, StoreOp, Tuning};
use fleet_schemas::limits::MAX_ENVELOPE_BYTES;
use fleet_schemas::{
    ChunkedModule, DeviceId, Digest, ENVELOPE_VERSION, Envelope, EventKind, JobId, ModuleSource, Order, Rejection,
    RuntimeClass, SignedMessage, SigningKey, Unsupported,
};

use crate::support::*;

#[test]
fn an_accepted_envelope_is_stored_in_one_batch_before_its_ack_then_runs() {
    let mut h = Harness::new();
    let job = Fleet::job(1);
    let envelope = h.fleet.run(&job, 1);
    let topic = h.fleet.jobs_topic();
    let (token, actions) = h.deliver(&topic, &envelope);
    let key = h.fleet.key(job.job_id, 1);

    let Action::Persist(batch) = &actions[0] else { panic!("first action is not a persist: {actions:#?}") };
    assert!(batch.iter().any(|op| matches!(op, StoreOp::PutExecution(e) if e.key == key && e.seq == 1)));
    assert!(batch.iter().any(|op| matches!(op, StoreOp::SetReplay(r) if r.last_seq == 1)));
    let accepted = persisted_events(&actions[..1]);
    assert_eq!(kinds(&accepted), vec![EventKind::Accepted]);
    assert_eq!(accepted[0].key, key);

    assert_eq!(actions[1], Action::AckDelivery(token));
    assert!(position(&actions, |a| matches!(a, Action::Run { .. })) > 1);
    assert_eq!(runs(&actions), vec![key]);
    assert_eq!(kinds(&persisted_events(&actions)), vec![EventKind::Accepted, EventKind::Started]);
}

/// Signs an envelope for another device.
fn envelope_for(fleet: &Fleet, device: &str, seq: u64, job: &fleet_schemas::JobSpec) -> Vec<u8> {
    let (key_id, _) = fleet_schemas::signed::public_key_of(&fleet.controller);
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        key_id,
        issued_at: NOW_UNIX - 60,
        not_after: NOW_UNIX + 3600,
        device_id: DeviceId::new(device).unwrap(),
        seq,
        order: Order::Run { attempt: 1, job: Box::new(job.clone()) },
    };
    SignedMessage::sign(&envelope, &fleet.controller).unwrap().to_bytes().unwrap()
}

#[test]
fn bytes_that_do_not_verify_are_reported_at_attempt_zero_and_the_agent_keeps_working() {
    let mut h = Harness::new();
    let job = Fleet::job(7);
    let stranger = SigningKey::from_bytes(&[0x99; 32]);
    let mut tampered = h.fleet.envelope_at(1, Order::Run { attempt: 1, job: Box::new(job.clone()) });
    *tampered.last_mut().unwrap() ^= 1;

    type Case = (&'static str, Vec<u8>, JobId, fn(&Rejection) -> bool);
    let cases: Vec<Case> = vec![
        ("garbage", vec![1, 2, 3], JobId::NIL, |r| *r == Rejection::Malformed),
        ("too large", vec![0; MAX_ENVELOPE_BYTES + 1], JobId::NIL, |r| matches!(r, Rejection::TooLarge { .. })),
        (
            "unknown key",
            h.fleet.envelope_with(&stranger, 1, Order::Run { attempt: 1, job: Box::new(job.clone()) }, 0, u64::MAX),
            job.job_id,
            |r| matches!(r, Rejection::UnknownKey { .. }),
        ),
        ("bad signature", tampered, job.job_id, |r| *r == Rejection::BadSignature),
        ("wrong target", envelope_for(&h.fleet, "gw-002", 1, &job), job.job_id, |r| {
            matches!(r, Rejection::WrongTarget { .. })
        }),
    ];
    for (name, bytes, job_id, is_expected) in cases {
        let topic = h.fleet.jobs_topic();
        let (token, actions) = h.deliver(&topic, &bytes);
        assert!(runs(&actions).is_empty(), "{name}: something ran");
        assert!(acks(&actions) == vec![token], "{name}: not acked exactly once");
        let events = persisted_events(&actions);
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert_eq!(events[0].key, h.fleet.key(job_id, 0), "{name}");
        match &events[0].kind {
            EventKind::Rejected { reason } => assert!(is_expected(reason), "{name}: {reason:?}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(h.core.replay_state().last_seq, 0, "{name}: consumed a seq");
    }
    // Still working: a valid envelope runs.
    let envelope = h.fleet.run(&job, 1);
    let actions = h.deliver_job(&envelope);
    assert_eq!(runs(&actions), vec![h.fleet.key(job.job_id, 1)]);
}

#[test]
fn genuine_envelopes_outside_their_window_are_refused_with_their_attempt_once() {
    let mut h = Harness::new();
    let job = Fleet::job(2);
    let order = || Order::Run { attempt: 3, job: Box::new(Fleet::job(2)) };
    let expired = h.fleet.envelope_with(&h.fleet.controller, 1, order(), NOW_UNIX - 7200, NOW_UNIX - 3600);
    let early = h.fleet.envelope_with(&h.fleet.controller, 2, order(), NOW_UNIX + 3600, NOW_UNIX + 7200);

    let actions = h.deliver_job(&expired);
    let events = persisted_events(&actions);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key, h.fleet.key(job.job_id, 3));
    assert!(matches!(events[0].kind, EventKind::Rejected { reason: Rejection::Expired { .. } }));

    // Redelivered: already refused, nothing more. A second envelope for the same
    // execution (refused already) says nothing either: one terminal event per execution.
    for bytes in [&expired, &early] {
        let actions = h.deliver_job(bytes);
        assert!(persisted_events(&actions).is_empty(), "{actions:#?}");
        assert!(runs(&actions).is_empty());
    }
    assert_eq!(h.core.replay_state().last_seq, 0);
}

#[test]
fn a_job_the_device_cannot_serve_is_refused_as_unsupported() {
    let too_big = ChunkedModule {
        hash: Digest([5; 32]),
        size: 2 * 1024 * 1024,
        chunk_size: 16 * 1024,
        chain_head: Digest([6; 32]),
    };
    let cases: Vec<(fleet_schemas::JobSpec, Unsupported)> = vec![
        (
            demanding_job(1, |j| j.requirements.runtime = Some(RuntimeClass::Microcontroller)),
            Unsupported::Runtime { required: RuntimeClass::Microcontroller },
        ),
        (demanding_job(2, gpu_required), Unsupported::GpuRequired),
        (demanding_job(3, |j| drop(j.requirements.labels.insert("site".into(), "plant-9".into()))), Unsupported::Label),
        (demanding_job(4, |j| j.inputs.push("humidity".into())), Unsupported::DataInput),
        (demanding_job(5, |j| j.module = ModuleSource::Chunked(too_big)), Unsupported::ModuleTooLarge),
    ];
    let mut h = Harness::new();
    for (job, unsupported) in cases {
        let envelope = h.fleet.run(&job, 1);
        let actions = h.deliver_job(&envelope);
        assert!(runs(&actions).is_empty());
        let events = persisted_events(&actions);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].key, h.fleet.key(job.job_id, 1));
        assert_eq!(events[0].kind, EventKind::Rejected { reason: Rejection::Unsupported(unsupported) });
        // The seq is consumed with the refusal: a redelivery reports nothing new.
        assert_eq!(h.core.replay_state().last_seq, h.fleet.next_seq - 1);
        let again = h.deliver_job(&envelope);
        assert!(persisted_events(&again).is_empty());
    }
    assert_eq!(h.core.queue_depth(), 0);
}

#[test]
fn a_full_queue_refuses_with_its_capacity() {
    let mut h = Harness::with_tuning(Tuning { queue_capacity: 2, ..Tuning::default() });
    for n in 1..=2 {
        let envelope = h.fleet.run(&Fleet::job(n), 1);
        h.deliver_job(&envelope);
    }
    let envelope = h.fleet.run(&Fleet::job(3), 1);
    let actions = h.deliver_job(&envelope);
    let events = persisted_events(&actions);
    assert_eq!(events[0].kind, EventKind::Rejected { reason: Rejection::QueueFull { capacity: 2 } });
    assert_eq!(h.core.queue_depth(), 2);
}

#[test]
fn a_redelivery_of_a_queued_running_or_finished_envelope_is_acked_and_changes_nothing() {
    let mut h = Harness::new();
    let (job1, job2) = (Fleet::job(1), Fleet::job(2));
    let running = h.fleet.run(&job1, 1);
    let queued = h.fleet.run(&job2, 1);
    h.deliver_job(&running);
    h.deliver_job(&queued);
    let topic = h.fleet.jobs_topic();
    for bytes in [&running, &queued] {
        let (token, actions) = h.deliver(&topic, bytes);
        assert_eq!(actions, vec![Action::AckDelivery(token)]);
    }
    h.succeed(&h.fleet.key(job1.job_id, 1));
    let (token, actions) = h.deliver(&topic, &running);
    assert_eq!(actions, vec![Action::AckDelivery(token)], "finished");
    assert_eq!(h.core.queue_depth(), 1);
}

#[test]
fn a_genuine_replay_with_other_content_is_refused_as_replayed() {
    let mut h = Harness::new();
    let first = h.fleet.run(&Fleet::job(1), 1);
    let second = h.fleet.run(&Fleet::job(2), 1);
    h.deliver_job(&first);
    h.deliver_job(&second);
    // Seq 1 again, but another job: not what seq 1 was.
    let replay = h.fleet.envelope_at(1, Order::Run { attempt: 1, job: Box::new(Fleet::job(9)) });
    let actions = h.deliver_job(&replay);
    assert!(runs(&actions).is_empty());
    let events = persisted_events(&actions);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key, h.fleet.key(JobId([9; 16]), 1));
    assert_eq!(events[0].kind, EventKind::Rejected { reason: Rejection::Replayed { seq: 1, last_accepted: 2 } });
}

#[test]
fn an_execution_signed_again_under_a_new_seq_runs_once() {
    let mut h = Harness::new();
    let job = Fleet::job(1);
    let key = h.fleet.key(job.job_id, 1);
    let first = h.fleet.run(&job, 1);
    assert_eq!(runs(&h.deliver_job(&first)), vec![key.clone()]);
    let again = h.fleet.run(&job, 1);
    let actions = h.deliver_job(&again);
    assert!(persisted_events(&actions).is_empty(), "no second Accepted");
    assert!(runs(&actions).is_empty());
    assert_eq!(h.core.replay_state().last_seq, 2, "the new seq is consumed");
    h.succeed(&key);
    // After it ended, a third signing is ignored too.
    let third = h.fleet.run(&job, 1);
    let actions = h.deliver_job(&third);
    assert!(persisted_events(&actions).is_empty());
    assert!(runs(&actions).is_empty());
}

#[test]
fn attempt_zero_is_refused_as_malformed() {
    let mut h = Harness::new();
    let envelope = h.fleet.run(&Fleet::job(1), 0);
    let actions = h.deliver_job(&envelope);
    assert!(runs(&actions).is_empty());
    assert_eq!(persisted_events(&actions)[0].kind, EventKind::Rejected { reason: Rejection::Malformed });
}
