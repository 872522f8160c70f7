//! Invariant 5: the core is rebuilt from what the store holds. Execution is at least
//! once (what ran at a crash runs again), the terminal event exactly once.
//!
//! The crash test runs one scenario to the end once, counting the actions the shell
//! performs, then once more for every count `k`, with a power cut after the `k`-th
//! action: the core is rebuilt from the store ops applied so far, the shell's running
//! executions are gone, and the broker redelivers what was not acknowledged. Whatever
//! `k`, the controller (deduplicating by event seq) must see each accepted execution end
//! exactly once, with the outcome the scenario decides, and nothing else. Two scenarios:
//! inline jobs with a run, a stop and a drop; and a job whose module is fetched in
//! retained chunks (the broker delivers a retained chunk on every subscribe).

use std::collections::{BTreeMap, VecDeque};

use fleet_agent_core::{Action, AgentCore, Input, Now, Outcome, RecoverError, StoredKeys, Tuning};
use fleet_schemas::chunk::module_matches;
use fleet_schemas::{EventKind, ExecutionEvent, ExecutionKey, KeyId, ModuleSource, PublicKey, TrustedKey};

use crate::support::*;

#[test]
fn an_execution_running_at_a_crash_runs_again_and_ends_once() {
    let mut h = Harness::new();
    let job = Fleet::job(1);
    let key = h.fleet.key(job.job_id, 1);
    let envelope = h.fleet.run(&job, 1);
    assert_eq!(runs(&h.deliver_job(&envelope)), vec![key.clone()]);

    h.restart();
    let actions = h.tick(0);
    assert_eq!(runs(&actions), vec![key.clone()], "re-run after the restart");
    assert!(persisted_events(&actions).is_empty(), "no second Started");
    h.succeed(&key);
    let kinds = kinds(&h.outbox_events());
    assert_eq!(kinds, vec![EventKind::Accepted, EventKind::Started, EventKind::Succeeded(report(b"ok"))]);
}

#[test]
fn recovery_restores_the_queue_the_outbox_the_replay_state_and_the_counter() {
    let mut h = Harness::new();
    let first = h.fleet.run(&Fleet::job(1), 1);
    let second = h.fleet.run(&Fleet::job(2), 1);
    h.deliver_job(&first);
    h.deliver_job(&second);
    h.restart();
    assert_eq!(h.core.queue_depth(), 2);
    assert_eq!(h.core.outbox_depth(), 3);
    assert_eq!(h.core.next_event_seq(), 4);
    assert_eq!(h.core.replay_state().last_seq, 2);
    // A redelivery after the restart is still recognised.
    let topic = h.fleet.jobs_topic();
    let (token, actions) = h.deliver(&topic, &second);
    assert_eq!(runs(&actions), vec![h.fleet.key(Fleet::job(1).job_id, 1)], "only the restart's re-run");
    assert!(persisted_events(&actions).is_empty());
    assert!(acks(&actions) == vec![token]);
}

#[test]
fn a_store_with_invalid_keys_is_refused() {
    let fleet = Fleet::default();
    let good = TrustedKey::new(PublicKey(fleet.controller.verifying_key().to_bytes()));
    let mismatched_id = TrustedKey { key_id: KeyId([9; 8]), ..good };
    for keys in [vec![mismatched_id], vec![good; 9]] {
        let mut recovered = MemStore::default().recovered();
        recovered.keys = Some(StoredKeys { rotation_seq: 1, keys });
        let refused = AgentCore::new(fleet.config(Tuning::default()), recovered).err();
        assert_eq!(refused, Some(RecoverError::InvalidKeySet));
    }
}

/// One step of the crash scenario.
enum Step {
    /// The controller sends this envelope (the broker queues it for the device).
    Send(Vec<u8>),
    /// The shell finishes its oldest running execution.
    Finish,
}

/// A device, its store, the broker's session for it and the controller, as one world.
struct World {
    fleet: Fleet,
    tuning: Tuning,
    core: AgentCore,
    store: MemStore,
    now: Now,
    /// Messages the broker holds for the device, in order.
    inbox: VecDeque<(String, Vec<u8>)>,
    /// Delivered and not acknowledged: sent again after a reconnect.
    unacked: BTreeMap<u64, (String, Vec<u8>)>,
    next_token: u64,
    /// Executions the shell runs.
    running: VecDeque<ExecutionKey>,
    /// How many times each execution was started.
    starts: BTreeMap<ExecutionKey, usize>,
    /// Retained module chunks, by topic: delivered on every subscribe.
    retained: BTreeMap<String, Vec<u8>>,
    /// Every event payload the controller received, in order, duplicates included.
    received: Vec<Vec<u8>>,
    /// The highest seq the controller acknowledged.
    acked: u64,
    performed: usize,
    crash_after: Option<usize>,
    crashes: usize,
}

impl World {
    fn new(crash_after: Option<usize>) -> Self {
        let fleet = Fleet::default();
        let tuning = Tuning { inflight_window: 4, ..Tuning::default() };
        let core = AgentCore::new(fleet.config(tuning), MemStore::synced().recovered()).unwrap();
        Self {
            fleet,
            tuning,
            core,
            store: MemStore::synced(),
            now: Now::new(0, Some(NOW_UNIX)),
            inbox: VecDeque::new(),
            unacked: BTreeMap::new(),
            next_token: 0,
            running: VecDeque::new(),
            starts: BTreeMap::new(),
            retained: BTreeMap::new(),
            received: Vec::new(),
            acked: 0,
            performed: 0,
            crash_after,
            crashes: 0,
        }
    }

    /// Feeds one input and performs its actions in order, unless the power is cut.
    fn feed(&mut self, input: Input<'_>) {
        self.now.monotonic_ms += 10;
        let actions = self.core.handle(input, self.now);
        for action in actions {
            if self.crash_after == Some(self.performed) {
                self.crash();
                return;
            }
            self.perform(action);
            self.performed += 1;
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Persist(batch) => self.store.apply(&batch),
            Action::Publish(p) if p.topic == self.fleet.events_topic() => self.received.push(p.payload),
            Action::AckDelivery(token) => {
                self.unacked.remove(&token.0);
            }
            Action::Subscribe { topic, .. } => {
                if let Some(chunk) = self.retained.get(&topic) {
                    self.inbox.push_back((topic, chunk.clone()));
                }
            }
            Action::Run { key, job } => {
                if let ModuleSource::Chunked(spec) = &job.module {
                    let module = self.store.modules.get(&spec.hash).expect("run before its module is stored");
                    assert!(module_matches(module, spec), "{key:?}: the stored module does not match");
                }
                assert!(!self.running.contains(&key), "{key:?} started while running");
                *self.starts.entry(key.clone()).or_default() += 1;
                self.running.push_back(key);
            }
            // A stopped execution stays in `running` until the shell reports it.
            _ => {}
        }
    }

    /// Power cut: the store survives, nothing else does. The device comes back, the
    /// broker sends what was never acknowledged again, then the rest.
    fn crash(&mut self) {
        self.crash_after = None;
        self.crashes += 1;
        self.core = AgentCore::new(self.fleet.config(self.tuning), self.store.recovered()).unwrap();
        self.running.clear();
        let mut redelivered: VecDeque<_> = std::mem::take(&mut self.unacked).into_values().collect();
        redelivered.extend(self.inbox.drain(..));
        self.inbox = redelivered;
        self.feed(Input::Tick);
        self.feed(Input::LinkUp);
    }

    /// The highest seq such that the controller has it and every one before it.
    fn controller_through(&self) -> u64 {
        let seqs: std::collections::BTreeSet<u64> =
            self.received.iter().map(|bytes| self.fleet.decode_event(bytes).event_seq).collect();
        (1..).take_while(|seq| seqs.contains(seq)).last().unwrap_or(0)
    }

    /// Delivers everything the broker holds and lets the controller ack what it has.
    fn settle(&mut self) {
        loop {
            if let Some((topic, payload)) = self.inbox.pop_front() {
                self.next_token += 1;
                let delivery = fleet_agent_core::DeliveryToken(self.next_token);
                self.unacked.insert(self.next_token, (topic.clone(), payload.clone()));
                self.feed(Input::Message { topic: &topic, payload: &payload, delivery });
                continue;
            }
            let through = self.controller_through();
            if through > self.acked {
                self.acked = through;
                self.inbox.push_back((self.fleet.acks_topic(), self.fleet.ack(through)));
                continue;
            }
            break;
        }
    }

    fn play(&mut self, script: Vec<Step>) {
        self.feed(Input::LinkUp);
        for step in script {
            match step {
                Step::Send(envelope) => self.inbox.push_back((self.fleet.jobs_topic(), envelope)),
                Step::Finish => {
                    if let Some(key) = self.running.pop_front() {
                        self.feed(Input::ExecutionFinished { key, outcome: Outcome::Succeeded(report(b"ok")) });
                    }
                }
            }
            self.settle();
        }
        // Run everything left to the end; resend what the controller lacks.
        for _ in 0..50 {
            self.settle();
            if let Some(key) = self.running.pop_front() {
                self.feed(Input::ExecutionFinished { key, outcome: Outcome::Succeeded(report(b"ok")) });
            } else if self.store.outbox.is_empty() {
                return;
            } else {
                self.now.monotonic_ms += self.tuning.resend_after_ms;
                self.feed(Input::Tick);
            }
        }
        panic!("the scenario did not settle");
    }
}

/// A scenario: its script, and the terminal event each job must end with.
struct Scenario {
    script: Vec<Step>,
    retained: BTreeMap<String, Vec<u8>>,
    expected: Vec<(u8, EventKind)>,
}

/// Inline jobs: one succeeds, one is stopped while running, one is dropped while queued.
fn inline_jobs() -> Scenario {
    let mut fleet = Fleet::default();
    let job = Fleet::job;
    let script = vec![
        Step::Send(fleet.run(&job(1), 1)),
        Step::Send(fleet.run(&job(2), 1)),
        Step::Finish, // 1 succeeds, 2 starts
        Step::Send(fleet.run(&job(3), 1)),
        Step::Send(fleet.cancel(job(2).job_id)), // 2 is stopped
        Step::Finish,                            // the shell confirms 2 stopped; 3 starts
        Step::Send(fleet.run(&job(4), 1)),
        Step::Send(fleet.cancel(job(4).job_id)), // 4 is dropped from the queue
    ];
    let ok = EventKind::Succeeded(report(b"ok"));
    let expected = vec![(1, ok.clone()), (2, EventKind::Canceled), (3, ok), (4, EventKind::Canceled)];
    Scenario { script, retained: BTreeMap::new(), expected }
}

/// A job whose module comes in three retained chunks, then an inline one.
fn chunked_job() -> Scenario {
    let mut fleet = Fleet::default();
    let fixture = ChunkedFixture::new(10_000, 4096);
    let retained = fixture
        .chunks
        .iter()
        .map(|chunk| (fleet.topics.module_chunk(&fixture.spec.chain_head, chunk.index), chunk.encode()))
        .collect();
    let script = vec![
        Step::Send(fleet.run(&Fleet::chunked_job(5, fixture.spec), 1)),
        Step::Send(fleet.run(&Fleet::job(6), 1)),
        Step::Finish,
    ];
    let ok = EventKind::Succeeded(report(b"ok"));
    Scenario { script, retained, expected: vec![(5, ok.clone()), (6, ok)] }
}

fn play(scenario: fn() -> Scenario, crash_after: Option<usize>) -> (World, Vec<(u8, EventKind)>) {
    let Scenario { script, retained, expected } = scenario();
    let mut world = World::new(crash_after);
    world.retained = retained;
    world.play(script);
    (world, expected)
}

/// What the controller concludes, checked against what the scenario decides.
fn check(world: &World, expected: &[(u8, EventKind)], what: &str) {
    // Deduplicate by seq as the controller does; one seq must always be one event.
    let mut by_seq: BTreeMap<u64, &Vec<u8>> = BTreeMap::new();
    for bytes in &world.received {
        let seq = world.fleet.decode_event(bytes).event_seq;
        assert_eq!(*by_seq.entry(seq).or_insert(bytes), bytes, "{what}: seq {seq} reused for another event");
    }
    let events: Vec<ExecutionEvent> = by_seq.values().map(|b| world.fleet.decode_event(b)).collect();
    let seqs: Vec<u64> = by_seq.keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{what}: seqs have gaps");

    for (n, terminal) in expected {
        let key = world.fleet.key(Fleet::job(*n).job_id, 1);
        let of_key: Vec<&EventKind> = events.iter().filter(|e| e.key == key).map(|e| &e.kind).collect();
        let terminals: Vec<&&EventKind> = of_key.iter().filter(|k| k.is_terminal()).collect();
        assert_eq!(terminals, vec![&terminal], "{what}: job {n}: {of_key:?}");
        assert_eq!(of_key.iter().filter(|k| ***k == EventKind::Accepted).count(), 1, "{what}: job {n}: {of_key:?}");
        assert!(world.starts.get(&key).copied().unwrap_or(0) <= 1 + world.crashes, "{what}: job {n}");
    }
    assert_eq!(events.len(), by_seq.len());
    assert!(events.iter().all(|e| e.key.attempt == 1), "{what}: an unexpected event: {events:#?}");
    assert!(world.store.outbox.is_empty() && world.store.executions.is_empty(), "{what}: store not drained");
}

/// Plays the scenario without a crash, then with a crash after each of its actions.
fn crash_everywhere(scenario: fn() -> Scenario) {
    let (baseline, expected) = play(scenario, None);
    check(&baseline, &expected, "no crash");
    let total = baseline.performed;
    assert!(total > 20, "the scenario is too small to mean much: {total} actions");
    for k in 0..total {
        let (world, expected) = play(scenario, Some(k));
        assert_eq!(world.crashes, 1, "crash after action {k} did not happen");
        check(&world, &expected, &format!("crash after action {k}"));
    }
}

#[test]
fn a_crash_after_any_action_loses_nothing_and_doubles_nothing() {
    crash_everywhere(inline_jobs);
}

#[test]
fn a_crash_after_any_action_of_a_chunked_fetch_loses_nothing_and_doubles_nothing() {
    crash_everywhere(chunked_job);
}
