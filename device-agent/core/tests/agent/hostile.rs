//! Invariant 9: whatever arrives (garbage on any topic, oversized payloads, tampered
//! envelopes, valid envelopes and acks in any order and number, link flaps, restarts,
//! finishes for unknown executions), the core never panics, and after every input:
//!
//! * every message was acknowledged exactly once;
//! * nothing was published while the link was down;
//! * every published event had been persisted first;
//! * persisted event seqs rise by exactly one;
//! * only executions of genuinely signed envelopes ran, never two at once, and a
//!   chunked module only once it was stored whole;
//! * no execution got a second terminal event;
//! * the core's queue and outbox agree with the store (no state lost), within capacity.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use fleet_agent_core::{Action, AgentCore, DeliveryToken, Input, Now, Outcome, StoreOp, Tuning};
use fleet_schemas::limits::MAX_ENVELOPE_BYTES;
use fleet_schemas::{ExecutionKey, FailReason, JobId, ModuleSource, Order};
use proptest::prelude::*;

use crate::support::*;

const CAPACITY: u32 = 3;

/// Genuine messages, signed once for all cases (signing is the slow part).
struct Pool {
    fleet: Fleet,
    envelopes: Vec<Vec<u8>>,
    acks: Vec<Vec<u8>>,
    rotation: Vec<u8>,
    /// The module of the chunked job, and its chunks on their topics.
    module: ChunkedFixture,
    chunks: Vec<(String, Vec<u8>)>,
    /// The executions the genuine envelopes name.
    genuine: BTreeSet<ExecutionKey>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let fleet = Fleet::default();
        let mut envelopes = Vec::new();
        let mut genuine = BTreeSet::new();
        for seq in 1..=12u64 {
            let n = (seq % 5) as u8 + 1;
            let order = if seq % 4 == 0 {
                Order::Cancel { job_id: Fleet::job(n).job_id }
            } else {
                let attempt = (seq % 2) as u32 + 1;
                genuine.insert(fleet.key(Fleet::job(n).job_id, attempt));
                Order::Run { attempt, job: Box::new(Fleet::job(n)) }
            };
            envelopes.push(fleet.envelope_at(seq, order));
        }
        let module = ChunkedFixture::new(9_000, 2048);
        let chunked = Fleet::chunked_job(9, module.spec);
        genuine.insert(fleet.key(chunked.job_id, 1));
        envelopes.push(fleet.envelope_at(13, Order::Run { attempt: 1, job: Box::new(chunked) }));
        let chunks = module
            .chunks
            .iter()
            .map(|c| (fleet.topics.module_chunk(&module.spec.chain_head, c.index), c.encode()))
            .collect();
        let acks = (0..24).map(|through| fleet.ack(through)).collect();
        let rotation = fleet.rotation_signed_by(&fleet.root, 1, &[&fleet.controller]);
        Pool { fleet, envelopes, acks, rotation, module, chunks, genuine }
    })
}

#[derive(Debug, Clone)]
enum Op {
    Garbage { topic: Target, payload: Vec<u8> },
    Oversized(Target),
    Envelope(usize),
    Tampered { envelope: usize, at: usize, xor: u8 },
    Ack(usize),
    Chunk(usize),
    Rotation,
    LinkUp,
    LinkDown,
    Tick(u32),
    Finish { which: usize, success: bool },
    FinishUnknown(u8),
    Restart,
}

#[derive(Debug, Clone)]
enum Target {
    Jobs,
    Acks,
    Keys,
    Chunk,
    Other(String),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Jobs),
        Just(Target::Acks),
        Just(Target::Keys),
        Just(Target::Chunk),
        "[a-z/+#]{0,24}".prop_map(Target::Other),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (target(), proptest::collection::vec(any::<u8>(), 0..96))
            .prop_map(|(topic, payload)| Op::Garbage { topic, payload }),
        1 => target().prop_map(Op::Oversized),
        4 => (0..13usize).prop_map(Op::Envelope),
        3 => (0..5usize).prop_map(Op::Chunk),
        2 => (0..13usize, any::<usize>(), 1..=255u8).prop_map(|(envelope, at, xor)| Op::Tampered { envelope, at, xor }),
        2 => (0..24usize).prop_map(Op::Ack),
        1 => Just(Op::Rotation),
        1 => Just(Op::LinkUp),
        1 => Just(Op::LinkDown),
        1 => (0..120_000u32).prop_map(Op::Tick),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(which, success)| Op::Finish { which, success }),
        1 => any::<u8>().prop_map(Op::FinishUnknown),
        1 => Just(Op::Restart),
    ]
}

/// A shell that checks every action the core returns.
struct Checker {
    tuning: Tuning,
    core: AgentCore,
    store: MemStore,
    now: Now,
    link_up: bool,
    running: BTreeSet<ExecutionKey>,
    next_token: u64,
    last_event_seq: u64,
    stored_events: BTreeSet<Vec<u8>>,
    terminals: BTreeMap<ExecutionKey, usize>,
}

impl Checker {
    fn new() -> Self {
        let tuning =
            Tuning { queue_capacity: CAPACITY, inflight_window: 4, outbox_soft_limit: 16, ..Tuning::default() };
        Self {
            tuning,
            core: AgentCore::new(pool().fleet.config(tuning), MemStore::synced().recovered()).unwrap(),
            store: MemStore::synced(),
            now: Now::new(0, Some(NOW_UNIX)),
            link_up: false,
            running: BTreeSet::new(),
            next_token: 0,
            last_event_seq: 0,
            stored_events: BTreeSet::new(),
            terminals: BTreeMap::new(),
        }
    }

    fn message(&mut self, topic: &str, payload: &[u8]) -> Result<(), TestCaseError> {
        self.next_token += 1;
        let delivery = DeliveryToken(self.next_token);
        let actions = self.feed(Input::Message { topic, payload, delivery })?;
        let acked = actions.iter().filter(|a| **a == Action::AckDelivery(delivery)).count();
        prop_assert_eq!(acked, 1, "message not acked exactly once");
        Ok(())
    }

    fn feed(&mut self, input: Input<'_>) -> Result<Vec<Action>, TestCaseError> {
        match input {
            Input::LinkUp => self.link_up = true,
            Input::LinkDown => self.link_up = false,
            _ => {}
        }
        let actions = self.core.handle(input, self.now);
        let fleet = &pool().fleet;
        let events_topic = fleet.events_topic();
        for action in &actions {
            match action {
                Action::Persist(batch) => {
                    for op in batch {
                        if let StoreOp::PutEvent(event) = op {
                            prop_assert_eq!(event.seq, self.last_event_seq + 1, "event seq gap");
                            self.last_event_seq = event.seq;
                            self.stored_events.insert(event.bytes.clone());
                            let decoded = fleet.decode_event(&event.bytes);
                            if decoded.kind.is_terminal() && decoded.key.attempt > 0 {
                                let count = self.terminals.entry(decoded.key).or_default();
                                *count += 1;
                                prop_assert!(*count == 1, "second terminal event");
                            }
                        }
                    }
                    self.store.apply(batch);
                }
                Action::Publish(p) => {
                    prop_assert!(self.link_up, "published while the link is down");
                    if p.topic == events_topic {
                        prop_assert!(self.stored_events.contains(&p.payload), "published before stored");
                    }
                }
                Action::Run { key, job } => {
                    prop_assert!(pool().genuine.contains(key), "ran something not genuinely signed: {:?}", key);
                    if let ModuleSource::Chunked(spec) = &job.module {
                        let stored = self.store.modules.get(&spec.hash);
                        prop_assert!(stored == Some(&pool().module.module), "ran before its module was complete");
                    }
                    prop_assert!(self.running.insert(key.clone()), "started twice at once: {:?}", key);
                }
                Action::Stop { key } => prop_assert!(self.running.contains(key), "stop of what is not running"),
                _ => {}
            }
        }
        prop_assert_eq!(self.core.queue_depth(), self.store.executions.len(), "queue and store disagree");
        prop_assert_eq!(self.core.outbox_depth(), self.store.outbox.len(), "outbox and store disagree");
        prop_assert!(self.core.queue_depth() <= CAPACITY as usize);
        Ok(actions)
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let fleet = &pool().fleet;
        let topic_of = |target: &Target| match target {
            Target::Jobs => fleet.jobs_topic(),
            Target::Acks => fleet.acks_topic(),
            Target::Keys => "fleet/keys".into(),
            Target::Chunk => fleet.topics.module_chunk(&fleet_schemas::Digest([3; 32]), 0),
            Target::Other(topic) => topic.clone(),
        };
        match op {
            Op::Garbage { topic, payload } => self.message(&topic_of(&topic), &payload)?,
            Op::Oversized(topic) => self.message(&topic_of(&topic), &vec![0x5A; MAX_ENVELOPE_BYTES + 1])?,
            Op::Envelope(i) => self.message(&fleet.jobs_topic(), &pool().envelopes[i])?,
            Op::Tampered { envelope, at, xor } => {
                let mut bytes = pool().envelopes[envelope].clone();
                let at = at % bytes.len();
                bytes[at] ^= xor;
                self.message(&fleet.jobs_topic(), &bytes)?;
            }
            Op::Ack(i) => self.message(&fleet.acks_topic(), &pool().acks[i])?,
            Op::Chunk(i) => {
                let (topic, bytes) = &pool().chunks[i];
                self.message(topic, bytes)?;
            }
            Op::Rotation => self.message("fleet/keys", &pool().rotation)?,
            Op::LinkUp => drop(self.feed(Input::LinkUp)?),
            Op::LinkDown => drop(self.feed(Input::LinkDown)?),
            Op::Tick(ms) => {
                self.now.monotonic_ms += u64::from(ms);
                self.feed(Input::Tick)?;
            }
            Op::Finish { which, success } => {
                let Some(key) = self.running.iter().nth(which % self.running.len().max(1)).cloned() else {
                    return Ok(());
                };
                self.running.remove(&key);
                let outcome = if success {
                    Outcome::Succeeded(report(b"done"))
                } else {
                    Outcome::Failed { reason: FailReason::Trap, message: "trap".into(), report: report(b"") }
                };
                self.feed(Input::ExecutionFinished { key, outcome })?;
            }
            Op::FinishUnknown(n) => {
                let key = fleet.key(JobId([n; 16]), u32::from(n));
                if !self.running.contains(&key) {
                    self.feed(Input::ExecutionFinished { key, outcome: Outcome::Succeeded(report(b"?")) })?;
                }
            }
            Op::Restart => {
                self.core = AgentCore::new(fleet.config(self.tuning), self.store.recovered()).unwrap();
                self.running.clear();
                self.link_up = false;
                self.feed(Input::Tick)?;
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics_and_keeps_every_invariant(ops in proptest::collection::vec(op(), 1..40)) {
        let mut checker = Checker::new();
        for op in ops {
            checker.apply(op)?;
        }
    }

    #[test]
    fn arbitrary_bytes_on_any_topic_are_refused_without_harm(
        topic in "\\PC{0,64}",
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut checker = Checker::new();
        checker.feed(Input::LinkUp)?;
        checker.message(&topic, &payload)?;
        let fleet = &pool().fleet;
        checker.message(&fleet.jobs_topic(), &payload)?;
        checker.message(&fleet.acks_topic(), &payload)?;
        checker.message("fleet/keys", &payload)?;
        prop_assert!(checker.running.is_empty());
        prop_assert_eq!(checker.core.queue_depth(), 0);
    }
}
