//! Invariant 8: a chunked module is fetched one chunk at a time (subscribe, receive,
//! persist data and assembler state, unsubscribe, next), survives a restart, and runs
//! only when complete; a module the device has is not fetched again.

use fleet_agent_core::{Action, Input, Notice, QoS, StoreOp, Tuning};
use fleet_schemas::chunk::{ChunkError, module_matches};
use fleet_schemas::{Digest, ExecutionKey};

use crate::support::*;

const CHUNK: u32 = 4096;

fn subscriptions(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Subscribe { topic, qos: QoS::AtLeastOnce } if topic.contains("/modules/") => Some(topic.clone()),
            _ => None,
        })
        .collect()
}

fn unsubscriptions(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Unsubscribe { topic } => Some(topic.clone()),
            _ => None,
        })
        .collect()
}

struct Setup {
    h: Harness,
    fixture: ChunkedFixture,
    key: ExecutionKey,
}

/// A device with the link up that has just accepted a job with a 3-chunk module.
fn accepted_chunked_job(tuning: Tuning) -> (Setup, Vec<Action>) {
    let mut h = Harness::with_tuning(tuning);
    h.link_up();
    let fixture = ChunkedFixture::new(10_000, CHUNK);
    let job = Fleet::chunked_job(1, fixture.spec);
    let key = h.fleet.key(job.job_id, 1);
    let envelope = h.fleet.run(&job, 1);
    let actions = h.deliver_job(&envelope);
    (Setup { h, fixture, key }, actions)
}

fn chunk_topic(s: &Setup, index: u32) -> String {
    s.h.fleet.topics.module_chunk(&s.fixture.spec.chain_head, index)
}

fn deliver_chunk(s: &mut Setup, index: u32) -> Vec<Action> {
    let topic = chunk_topic(s, index);
    let bytes = s.fixture.chunks[index as usize].encode();
    s.h.deliver(&topic, &bytes).1
}

#[test]
fn a_chunked_module_is_fetched_chunk_by_chunk_and_runs_when_complete() {
    let (mut s, actions) = accepted_chunked_job(Tuning::default());
    assert!(runs(&actions).is_empty());
    assert_eq!(subscriptions(&actions), vec![chunk_topic(&s, 0)]);

    for index in 0..3u32 {
        let actions = deliver_chunk(&mut s, index);
        let Action::Persist(batch) = &actions[0] else { panic!("{actions:#?}") };
        let offset = u64::from(index * CHUNK);
        assert!(matches!(&batch[0], StoreOp::WriteChunk { offset: o, .. } if *o == offset));
        assert!(matches!(actions[1], Action::AckDelivery(_)));
        assert_eq!(unsubscriptions(&actions), vec![chunk_topic(&s, index)]);
        if index < 2 {
            assert!(matches!(&batch[1], StoreOp::SetAssembly(a) if a.next_index() == Some(index + 1)));
            assert_eq!(subscriptions(&actions), vec![chunk_topic(&s, index + 1)]);
            assert!(runs(&actions).is_empty());
        } else {
            assert_eq!(batch[1], StoreOp::ModuleComplete(s.fixture.spec.hash));
            assert!(subscriptions(&actions).is_empty());
            assert_eq!(runs(&actions), vec![s.key.clone()]);
        }
    }
    let stored = &s.h.store.modules[&s.fixture.spec.hash];
    assert!(module_matches(stored, &s.fixture.spec));
    assert_eq!(stored, &s.fixture.module);
    assert!(s.h.store.assemblies.is_empty());
}

#[test]
fn a_module_the_device_has_is_not_fetched_again() {
    let (mut s, _) = accepted_chunked_job(Tuning::default());
    for index in 0..3 {
        deliver_chunk(&mut s, index);
    }
    // Another job with the same module runs without a fetch.
    let job = Fleet::chunked_job(2, s.fixture.spec);
    let envelope = s.h.fleet.run(&job, 1);
    let actions = s.h.deliver_job(&envelope);
    assert!(subscriptions(&actions).is_empty());
    s.h.succeed(&s.key.clone());
    // ... also after a restart, from the modules the store reports.
    s.h.restart();
    let mut actions = s.h.link_up();
    actions.extend(s.h.tick(0));
    assert!(subscriptions(&actions).is_empty());
    assert_eq!(runs(&actions), vec![s.h.fleet.key(job.job_id, 1)]);
}

#[test]
fn a_fetch_resumes_where_the_store_says_after_a_restart() {
    let (mut s, _) = accepted_chunked_job(Tuning::default());
    deliver_chunk(&mut s, 0);
    deliver_chunk(&mut s, 1);
    s.h.restart();
    let actions = s.h.link_up();
    assert_eq!(subscriptions(&actions), vec![chunk_topic(&s, 2)]);
    // A late redelivery of an earlier chunk is harmless.
    let late = deliver_chunk(&mut s, 1);
    assert!(persisted(&late).next().is_none());
    let actions = deliver_chunk(&mut s, 2);
    assert_eq!(runs(&actions), vec![s.key.clone()]);
    assert!(module_matches(&s.h.store.modules[&s.fixture.spec.hash], &s.fixture.spec));
}

#[test]
fn a_forged_chunk_is_refused_and_the_chunk_asked_for_again() {
    let tuning = Tuning { chunk_timeout_ms: 5_000, ..Tuning::default() };
    let (mut s, _) = accepted_chunked_job(tuning);
    let mut forged = s.fixture.chunks[0].clone();
    forged.data[0] ^= 0xFF;
    let topic = chunk_topic(&s, 0);
    let (_, actions) = s.h.deliver(&topic, &forged.encode());
    assert!(persisted(&actions).next().is_none());
    assert!(actions.contains(&Action::Notice(Notice::ChunkRefused(ChunkError::ChainMismatch(0)))));

    assert!(subscriptions(&s.h.tick(4_000)).is_empty());
    let retry = s.h.tick(1_000);
    assert_eq!(unsubscriptions(&retry), vec![topic.clone()]);
    assert_eq!(subscriptions(&retry), vec![topic]);
    assert!(matches!(persisted(&deliver_chunk(&mut s, 0)).next(), Some(StoreOp::WriteChunk { .. })));
}

#[test]
fn canceling_the_job_that_needs_a_module_stops_its_fetch() {
    let (mut s, _) = accepted_chunked_job(Tuning::default());
    deliver_chunk(&mut s, 0);
    let cancel = s.h.fleet.cancel(s.key.job_id);
    let actions = s.h.deliver_job(&cancel);
    assert_eq!(unsubscriptions(&actions), vec![chunk_topic(&s, 1)]);
    assert!(persisted(&actions).any(|op| *op == StoreOp::DiscardModule(s.fixture.spec.hash)));
    assert!(s.h.store.assemblies.is_empty() && s.h.store.partial_modules.is_empty());
}

#[test]
fn a_lost_module_is_fetched_again_when_needed() {
    let (mut s, _) = accepted_chunked_job(Tuning::default());
    for index in 0..3 {
        deliver_chunk(&mut s, index);
    }
    s.h.succeed(&s.key.clone());
    let hash: Digest = s.fixture.spec.hash;
    let actions = s.h.input(Input::ModuleLost { hash });
    assert_eq!(actions, vec![Action::Persist(vec![StoreOp::DiscardModule(hash)])]);
    let job = Fleet::chunked_job(2, s.fixture.spec);
    let envelope = s.h.fleet.run(&job, 1);
    let actions = s.h.deliver_job(&envelope);
    assert_eq!(subscriptions(&actions), vec![chunk_topic(&s, 0)]);
}

#[test]
fn chunks_for_no_active_fetch_or_of_garbage_are_ignored() {
    let mut h = Harness::new();
    h.link_up();
    let fixture = ChunkedFixture::new(5_000, CHUNK);
    let topic = h.fleet.topics.module_chunk(&fixture.spec.chain_head, 0);
    for bytes in [fixture.chunks[0].encode(), vec![0xFF; 3]] {
        let (token, actions) = h.deliver(&topic, &bytes);
        assert!(persisted(&actions).next().is_none());
        assert_eq!(acks(&actions), vec![token]);
    }
}
