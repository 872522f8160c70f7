//! [`AgentCore`]: routes each input to the state it concerns and turns decisions into
//! ordered actions.
//!
//! Every `handle` call follows one shape, which is where the durability rules live:
//!
//! 1. the input's own work: store ops collected in one batch, follow-up actions aside;
//! 2. `Persist(batch)`, then the delivery ack (for a message), then the follow-ups;
//! 3. `pump`: start what can start (its own batch: `Started` events), drive fetches;
//! 4. publish the status document if due, then the outbox events that are due.
//!
//! Events are only ever published in step 4, from the outbox, after every batch of the
//! call: an event is stored before it is published by construction.
//!
//! The handlers live in three child modules: `orders` (envelopes and finished
//! executions: the execution lifecycle), `trust` (event acks and key rotations) and
//! `sync` (a new store learning where it stands before anything runs).

mod orders;
mod sync;
mod trust;

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use fleet_schemas::signed::is_signed;
use fleet_schemas::{
    Digest, EVENT_VERSION, EventKind, ExecutionEvent, ExecutionKey, Incarnation, JobSpec, KeyRing, ModuleSource,
    Presence, ReplayState, SyncGrant, Topic, Trusted, TrustedKey,
};

use crate::action::{Action, Notice, Publish, QoS};
use crate::config::AgentConfig;
use crate::error::RecoverError;
use crate::event::sign_event;
use crate::fetch::{ChunkResult, Conditions, Fetcher};
use crate::history::History;
use crate::input::{DeliveryToken, Input, Now};
use crate::outbox::Outbox;
use crate::queue::Queue;
use crate::status::{self, Depths, StatusTracker};
use crate::store::{OutboxEvent, Recovered, StoreOp};

/// The device agent's state machine. See the crate docs for the contract.
pub struct AgentCore {
    config: AgentConfig,
    own: OwnTopics,
    keys: KeyRing,
    rotation_seq: u64,
    replay: ReplayState,
    queue: Queue,
    history: History,
    outbox: Outbox,
    /// Complete modules the shell holds.
    modules: BTreeSet<Digest>,
    fetch: Fetcher,
    link_up: bool,
    status: StatusTracker,
    /// The store's incarnation (the fresh one, for a new store not yet synced).
    incarnation: Incarnation,
    sync: SyncState,
    /// Store ops the core owes from its construction (the incarnation of a store written
    /// before incarnations existed), persisted first thing in the next `handle`.
    owed: Vec<StoreOp>,
}

/// Whether the store knows where it stands (`fleet_schemas::sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncState {
    /// The store has its incarnation: envelopes are judged as usual.
    Synced,
    /// A new store, waiting for the controller's grant: nothing is accepted, a sync
    /// request goes out (again every `resend_after_ms`). `requested_at` is when it was
    /// last sent on this link (`None`: not yet).
    Waiting { requested_at: Option<u64> },
}

/// This device's topic names, built once.
struct OwnTopics {
    jobs: String,
    acks: String,
    events: String,
    status: String,
    keys: String,
}

/// What handling one input produced: store ops to persist first, then actions.
#[derive(Default)]
struct Step {
    batch: Vec<StoreOp>,
    after: Vec<Action>,
}

impl AgentCore {
    /// Rebuilds the core from what the store holds (`Recovered::default()` for a new
    /// device). Then feed [`Input::Tick`] to restart interrupted executions.
    pub fn new(config: AgentConfig, recovered: Recovered) -> Result<Self, RecoverError> {
        let (keys, rotation_seq) = match &recovered.keys {
            None => (config.provisioned_keys.clone(), 0),
            Some(stored) => (key_ring(&stored.keys)?, stored.rotation_seq),
        };
        let me = &config.device_id;
        let own = OwnTopics {
            jobs: config.topics.device_jobs(me),
            acks: config.topics.device_acks(me),
            events: config.topics.device_events(me),
            status: config.topics.device_status(me),
            keys: config.topics.keys(),
        };
        let history_len = usize::try_from(config.tuning.history_len).unwrap_or(usize::MAX);
        let fresh = config.fresh_incarnation;
        let (incarnation, sync, owed) = match recovered.incarnation {
            Some(incarnation) => (incarnation, SyncState::Synced, Vec::new()),
            // Written before incarnations: it never lost its counters, so it keeps them,
            // and takes an incarnation now.
            None if recovered.has_state() => (fresh, SyncState::Synced, alloc::vec![StoreOp::SetIncarnation(fresh)]),
            None => (fresh, SyncState::Waiting { requested_at: None }, Vec::new()),
        };
        Ok(Self {
            incarnation,
            sync,
            owed,
            own,
            keys,
            rotation_seq,
            replay: recovered.replay,
            queue: Queue::recovered(&recovered.executions),
            history: History::new(&recovered.history, history_len),
            outbox: Outbox::recovered(&recovered.outbox, recovered.acked_through),
            modules: crate::by_insertion(recovered.modules.iter().copied()),
            fetch: Fetcher::recovered(&recovered.assemblies),
            link_up: false,
            status: StatusTracker::default(),
            config,
        })
    }

    /// Handles one input; returns the actions to perform, in order.
    pub fn handle(&mut self, input: Input<'_>, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        commit(core::mem::take(&mut self.owed), &mut out);
        match input {
            Input::LinkUp => self.on_link_up(&mut out),
            Input::LinkDown => self.on_link_down(),
            Input::Message { topic, payload, delivery } => self.on_message(topic, payload, delivery, now, &mut out),
            Input::ExecutionFinished { key, outcome } => self.on_finished(key, outcome, now, &mut out),
            Input::ModuleLost { hash } => self.on_module_lost(hash, &mut out),
            Input::Tick => {
                if self.link_up {
                    self.fetch.retry_if_stalled(now.monotonic_ms, self.config.tuning.chunk_timeout_ms, &mut out);
                }
            }
        }
        self.pump(now, &mut out);
        self.publish_status(now, &mut out);
        self.request_sync(now, &mut out);
        self.publish_events(now, &mut out);
        out
    }

    /// The offline status document, for the shell to set as its MQTT last-will.
    pub fn last_will(&self) -> Publish {
        Publish {
            topic: self.own.status.clone(),
            payload: status::offline_document(&self.config),
            qos: QoS::AtLeastOnce,
            retain: true,
        }
    }

    /// Executions waiting or running.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Events not yet acknowledged by the controller.
    pub fn outbox_depth(&self) -> usize {
        self.outbox.len()
    }

    /// The seq the next event will get.
    pub fn next_event_seq(&self) -> u64 {
        self.outbox.next_seq()
    }

    /// The replay state.
    pub fn replay_state(&self) -> ReplayState {
        self.replay
    }

    /// The seq of the key rotation in force (0: the provisioned keys).
    pub fn rotation_seq(&self) -> u64 {
        self.rotation_seq
    }

    /// The trusted job-signing keys.
    pub fn trusted_keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Whether the link is up.
    pub fn is_link_up(&self) -> bool {
        self.link_up
    }

    /// Whether the store knows where it stands; a new store waits for the controller's
    /// sync grant before it accepts anything.
    pub fn is_synced(&self) -> bool {
        self.sync == SyncState::Synced
    }

    /// The store's incarnation (for a new store not yet synced, the one its request
    /// names).
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    fn on_link_up(&mut self, out: &mut Vec<Action>) {
        self.link_up = true;
        if let SyncState::Waiting { requested_at } = &mut self.sync {
            *requested_at = None;
        }
        self.outbox.link_lost();
        self.fetch.link_lost();
        self.status.link_up();
        for topic in [&self.own.jobs, &self.own.acks, &self.own.keys] {
            out.push(Action::Subscribe { topic: topic.clone(), qos: QoS::AtLeastOnce });
        }
    }

    fn on_link_down(&mut self) {
        self.link_up = false;
        self.outbox.link_lost();
        self.fetch.link_lost();
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], delivery: DeliveryToken, now: Now, out: &mut Vec<Action>) {
        let mut step = Step::default();
        let me = self.config.device_id.as_str();
        match self.config.topics.parse(topic) {
            Some(Topic::DeviceJobs(id)) if id == me => {
                if is_signed::<SyncGrant>(payload) {
                    self.on_sync_grant(payload, &mut step);
                } else if self.is_synced() {
                    self.on_envelope(payload, now, &mut step);
                } else {
                    step.after.push(Action::Notice(Notice::EnvelopeBeforeSync));
                }
            }
            Some(Topic::DeviceAcks(id)) if id == me => self.on_event_ack(payload, &mut step),
            Some(Topic::Keys) => self.on_rotation(payload, &mut step),
            Some(Topic::ModuleChunk { .. }) => {
                let cx = Conditions { link_up: self.link_up, now_ms: now.monotonic_ms, topics: &self.config.topics };
                if let ChunkResult::Complete(hash) = self.fetch.on_chunk(payload, &cx, &mut step.batch, &mut step.after)
                {
                    self.modules.insert(hash);
                }
            }
            _ => step.after.push(Action::Notice(Notice::IgnoredTopic)),
        }
        commit(step.batch, out);
        out.push(Action::AckDelivery(delivery));
        out.extend(step.after);
    }

    fn on_module_lost(&mut self, hash: Digest, out: &mut Vec<Action>) {
        if self.modules.remove(&hash) {
            out.push(Action::Persist(alloc::vec![StoreOp::DiscardModule(hash)]));
        }
    }

    /// Starts what can start and drives module fetches.
    fn pump(&mut self, now: Now, out: &mut Vec<Action>) {
        let mut step = Step::default();
        let modules = &self.modules;
        let missing = self.queue.missing_modules(|spec| modules.contains(&spec.hash));
        let cx = Conditions { link_up: self.link_up, now_ms: now.monotonic_ms, topics: &self.config.topics };
        self.fetch.drive(&missing, &cx, &mut step.batch, &mut step.after);

        let slots = usize::try_from(self.config.tuning.max_concurrent.max(1)).unwrap_or(1);
        while self.queue.busy_slots() < slots {
            let modules = &self.modules;
            let Some(slot) = self.queue.next_startable(|job| module_at_hand(job, modules)) else {
                break;
            };
            slot.running = true;
            let first_start = !slot.execution.started;
            slot.execution.started = true;
            let key = slot.execution.key.clone();
            let job = Box::new(slot.execution.job.clone());
            if first_start {
                step.batch.push(StoreOp::MarkStarted(key.clone()));
                self.emit(key.clone(), EventKind::Started, now, &mut step);
            }
            step.after.push(Action::Run { key, job });
        }
        commit(step.batch, out);
        out.extend(step.after);
    }

    /// Writes an event into the batch and the outbox (it is published later, from the
    /// outbox, once the batch is persisted).
    fn emit(&mut self, key: ExecutionKey, kind: EventKind, now: Now, step: &mut Step) {
        let seq = self.outbox.next_seq();
        let event =
            ExecutionEvent { version: EVENT_VERSION, key, event_seq: seq, at: now.unix_secs.unwrap_or(0), kind };
        match sign_event(event, &self.config.device_key) {
            Some(bytes) => {
                step.batch.push(StoreOp::PutEvent(OutboxEvent { seq, bytes: bytes.clone() }));
                self.outbox.push(bytes);
            }
            None => step.after.push(Action::Notice(Notice::EventNotEncoded)),
        }
    }

    fn publish_status(&mut self, now: Now, out: &mut Vec<Action>) {
        let depth = self.queue.len();
        if !self.link_up || !self.status.due(depth, now.monotonic_ms, &self.config.tuning) {
            return;
        }
        let depths = Depths { queue: depth, outbox: self.outbox.len() };
        out.push(Action::Publish(Publish {
            topic: self.own.status.clone(),
            payload: status::document(&self.config, Presence::Online, depths, now.unix_secs),
            qos: QoS::AtLeastOnce,
            retain: true,
        }));
        self.status.published(depth, now.monotonic_ms);
    }

    fn publish_events(&mut self, now: Now, out: &mut Vec<Action>) {
        if !self.link_up {
            return;
        }
        let tuning = &self.config.tuning;
        let window = usize::try_from(tuning.inflight_window).unwrap_or(usize::MAX);
        for payload in self.outbox.due(now.monotonic_ms, window, tuning.resend_after_ms) {
            out.push(Action::Publish(Publish {
                topic: self.own.events.clone(),
                payload,
                qos: QoS::AtLeastOnce,
                retain: false,
            }));
        }
    }
}

fn commit(batch: Vec<StoreOp>, out: &mut Vec<Action>) {
    if !batch.is_empty() {
        out.push(Action::Persist(batch));
    }
}

/// Whether the module a job runs is at hand: inline, or chunked and complete.
fn module_at_hand(job: &JobSpec, modules: &BTreeSet<Digest>) -> bool {
    match &job.module {
        ModuleSource::Inline(_) => true,
        ModuleSource::Chunked(spec) => modules.contains(&spec.hash),
    }
}

fn key_ring(keys: &[TrustedKey]) -> Result<KeyRing, RecoverError> {
    let trusted: Option<Vec<Trusted>> =
        keys.iter().map(|k| Trusted::new(&k.public_key).filter(|t| t.key_id == k.key_id)).collect();
    KeyRing::new(trusted.ok_or(RecoverError::InvalidKeySet)?).ok_or(RecoverError::InvalidKeySet)
}
