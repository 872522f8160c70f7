//! Test fixtures: a controller that signs what the fleet would send, an in-memory store
//! that applies persist batches the way a real shell must (atomically, in order), and a
//! harness that drives an `AgentCore` like a shell does.

use std::collections::{BTreeMap, BTreeSet};

use fleet_agent_core::{
    Action, AgentConfig, AgentCore, Capabilities, DeliveryToken, HistoryEntry, Input, Now, OutboxEvent, Outcome,
    Publish, Recovered, StoreOp, StoredExecution, StoredKeys, Tuning,
};
use fleet_schemas::chunk::split_module;
use fleet_schemas::rotation::ROTATION_VERSION;
use fleet_schemas::signed::public_key_of;
use fleet_schemas::{
    ACK_VERSION, ChunkAssembler, ChunkedModule, DeviceId, Digest, ENVELOPE_VERSION, Envelope, EventAck, EventKind,
    ExecutionEvent, ExecutionKey, GpuRequirement, Incarnation, JobId, JobSpec, KeyRing, KeyRotation, Limits,
    ModuleChunk, ModuleSource, Order, ReplayState, Requirements, RunReport, RuntimeClass, SYNC_VERSION, SignedMessage,
    SigningKey, SyncGrant, Topics, Trusted, TrustedKey, verify_event,
};

pub const DEVICE: &str = "gw-001";
/// A Unix time inside every fixture envelope's validity window.
pub const NOW_UNIX: u64 = 1_800_000_000;

/// The fleet around one device: the controller's job-signing key, the root key, the
/// device's own key, and the controller's envelope counter.
pub struct Fleet {
    pub controller: SigningKey,
    pub root: SigningKey,
    pub device: SigningKey,
    pub me: DeviceId,
    pub topics: Topics,
    pub next_seq: u64,
    /// Starts so far: each start's fresh incarnation is different, as the OS's
    /// randomness would make it.
    pub starts: std::sync::atomic::AtomicU8,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            controller: SigningKey::from_bytes(&[0x11; 32]),
            root: SigningKey::from_bytes(&[0x33; 32]),
            device: SigningKey::from_bytes(&[0x22; 32]),
            me: DeviceId::new(DEVICE).unwrap(),
            topics: Topics::default(),
            next_seq: 1,
            starts: std::sync::atomic::AtomicU8::new(0),
        }
    }
}

impl Fleet {
    pub fn capabilities() -> Capabilities {
        Capabilities {
            runtime: RuntimeClass::Gateway,
            gpu: None,
            labels: BTreeMap::from([("site".into(), "plant-3".into())]),
            data_inputs: BTreeSet::from(["temperature".into()]),
            max_module_bytes: 1024 * 1024,
            inference: Vec::new(),
            wasi: Vec::new(),
        }
    }

    pub fn config(&self, tuning: Tuning) -> AgentConfig {
        AgentConfig {
            device_id: self.me.clone(),
            topics: self.topics.clone(),
            device_key: self.device.clone(),
            root_key: Trusted::of_signing_key(&self.root),
            provisioned_keys: KeyRing::new(vec![Trusted::of_signing_key(&self.controller)]).unwrap(),
            capabilities: Self::capabilities(),
            agent_version: "0.1.0-test".into(),
            tuning,
            fresh_incarnation: Incarnation(
                [self.starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed).wrapping_add(1); 16],
            ),
        }
    }

    /// The controller's sync grant for a store of `incarnation`.
    pub fn grant(&self, incarnation: Incarnation, replay_floor: u64, event_base: u64) -> Vec<u8> {
        let (key_id, _) = public_key_of(&self.controller);
        let grant = SyncGrant {
            version: SYNC_VERSION,
            key_id,
            device_id: self.me.clone(),
            incarnation,
            replay_floor,
            issued_at: NOW_UNIX - 30,
            event_base,
        };
        SignedMessage::sign(&grant, &self.controller).unwrap().to_bytes().unwrap()
    }

    /// A small inline job, distinct per `n`.
    pub fn job(n: u8) -> JobSpec {
        JobSpec {
            job_id: JobId([n; 16]),
            module: ModuleSource::Inline(vec![0, b'a', b's', b'm', 1, 0, 0, 0, n]),
            entry: "run".into(),
            args: vec![],
            limits: Limits { fuel: 0, memory_pages: 0, timeout_ms: 0 },
            requirements: Requirements::default(),
            inputs: vec![],
        }
    }

    /// A job whose module travels in chunks.
    pub fn chunked_job(n: u8, spec: ChunkedModule) -> JobSpec {
        JobSpec { module: ModuleSource::Chunked(spec), ..Self::job(n) }
    }

    pub fn key(&self, job_id: JobId, attempt: u32) -> ExecutionKey {
        ExecutionKey { job_id, device_id: self.me.clone(), attempt }
    }

    /// Signs an envelope with every field chosen by the caller.
    pub fn envelope_with(&self, key: &SigningKey, seq: u64, order: Order, issued_at: u64, not_after: u64) -> Vec<u8> {
        let (key_id, _) = public_key_of(key);
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            key_id,
            issued_at,
            not_after,
            device_id: self.me.clone(),
            seq,
            order,
        };
        SignedMessage::sign(&envelope, key).unwrap().to_bytes().unwrap()
    }

    /// A valid envelope at a given seq.
    pub fn envelope_at(&self, seq: u64, order: Order) -> Vec<u8> {
        self.envelope_with(&self.controller, seq, order, NOW_UNIX - 60, NOW_UNIX + 3600)
    }

    /// A valid envelope at the next seq.
    pub fn envelope(&mut self, order: Order) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.envelope_at(seq, order)
    }

    pub fn run(&mut self, job: &JobSpec, attempt: u32) -> Vec<u8> {
        self.envelope(Order::Run { attempt, job: Box::new(job.clone()) })
    }

    pub fn cancel(&mut self, job_id: JobId) -> Vec<u8> {
        self.envelope(Order::Cancel { job_id })
    }

    pub fn ack_signed_by(&self, key: &SigningKey, through_seq: u64) -> Vec<u8> {
        let (key_id, _) = public_key_of(key);
        let ack = EventAck { version: ACK_VERSION, key_id, device_id: self.me.clone(), through_seq };
        SignedMessage::sign(&ack, key).unwrap().to_bytes().unwrap()
    }

    pub fn ack(&self, through_seq: u64) -> Vec<u8> {
        self.ack_signed_by(&self.controller, through_seq)
    }

    pub fn rotation_signed_by(&self, root: &SigningKey, rotation_seq: u64, keys: &[&SigningKey]) -> Vec<u8> {
        let (root_key_id, _) = public_key_of(root);
        let rotation = KeyRotation {
            version: ROTATION_VERSION,
            root_key_id,
            issued_at: NOW_UNIX,
            rotation_seq,
            keys: keys.iter().map(|k| TrustedKey::new(public_key_of(k).1)).collect(),
        };
        SignedMessage::sign(&rotation, root).unwrap().to_bytes().unwrap()
    }

    pub fn jobs_topic(&self) -> String {
        self.topics.device_jobs(&self.me)
    }
    pub fn acks_topic(&self) -> String {
        self.topics.device_acks(&self.me)
    }
    pub fn events_topic(&self) -> String {
        self.topics.device_events(&self.me)
    }
    pub fn status_topic(&self) -> String {
        self.topics.device_status(&self.me)
    }

    /// Verifies and decodes an event the device published.
    pub fn decode_event(&self, bytes: &[u8]) -> ExecutionEvent {
        verify_event(bytes, &self.me, &self.device.verifying_key()).unwrap()
    }
}

/// A module split into chunks, with the topics they are published on.
pub struct ChunkedFixture {
    pub module: Vec<u8>,
    pub spec: ChunkedModule,
    pub chunks: Vec<ModuleChunk>,
}

impl ChunkedFixture {
    pub fn new(len: usize, chunk_size: u32) -> Self {
        let module: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let (spec, chunks) = split_module(&module, chunk_size).unwrap();
        Self { module, spec, chunks }
    }
}

/// What a shell's store would hold: every persist batch applied, atomically, in order.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    pub replay: ReplayState,
    pub keys: Option<StoredKeys>,
    pub executions: BTreeMap<ExecutionKey, StoredExecution>,
    pub history: BTreeMap<u64, HistoryEntry>,
    pub outbox: BTreeMap<u64, OutboxEvent>,
    pub acked_through: u64,
    pub assemblies: BTreeMap<Digest, ChunkAssembler>,
    pub partial_modules: BTreeMap<Digest, Vec<u8>>,
    pub modules: BTreeMap<Digest, Vec<u8>>,
    pub incarnation: Option<Incarnation>,
}

impl MemStore {
    pub fn apply(&mut self, batch: &[StoreOp]) {
        for op in batch {
            match op.clone() {
                StoreOp::PutExecution(e) => {
                    self.executions.insert(e.key.clone(), e);
                }
                StoreOp::MarkStarted(key) => {
                    if let Some(e) = self.executions.get_mut(&key) {
                        e.started = true;
                    }
                }
                StoreOp::RemoveExecution(key) => {
                    self.executions.remove(&key);
                }
                StoreOp::SetReplay(replay) => self.replay = replay,
                StoreOp::Remember(entry) => {
                    self.history.insert(entry.seq, entry);
                }
                StoreOp::Forget { seq } => {
                    self.history.remove(&seq);
                }
                StoreOp::SetKeys(keys) => self.keys = Some(keys),
                StoreOp::PutEvent(event) => {
                    self.outbox.insert(event.seq, event);
                }
                StoreOp::AckEvents { through_seq } => {
                    self.outbox.retain(|seq, _| *seq > through_seq);
                    self.acked_through = through_seq;
                }
                StoreOp::SetAssembly(assembler) => {
                    self.assemblies.insert(assembler.spec().hash, assembler);
                }
                StoreOp::WriteChunk { module, offset, data } => {
                    let bytes = self.partial_modules.entry(module).or_default();
                    let offset = usize::try_from(offset).unwrap();
                    if bytes.len() < offset + data.len() {
                        bytes.resize(offset + data.len(), 0);
                    }
                    bytes[offset..offset + data.len()].copy_from_slice(&data);
                }
                StoreOp::ModuleComplete(hash) => {
                    self.assemblies.remove(&hash);
                    let bytes = self.partial_modules.remove(&hash).unwrap_or_default();
                    self.modules.insert(hash, bytes);
                }
                StoreOp::DiscardModule(hash) => {
                    self.assemblies.remove(&hash);
                    self.partial_modules.remove(&hash);
                    self.modules.remove(&hash);
                }
                StoreOp::SetIncarnation(incarnation) => self.incarnation = Some(incarnation),
            }
        }
    }

    pub fn recovered(&self) -> Recovered {
        Recovered {
            replay: self.replay,
            keys: self.keys.clone(),
            executions: self.executions.values().cloned().collect(),
            history: self.history.values().cloned().collect(),
            outbox: self.outbox.values().cloned().collect(),
            acked_through: self.acked_through,
            assemblies: self.assemblies.values().copied().collect(),
            modules: self.modules.keys().copied().collect(),
            incarnation: self.incarnation,
        }
    }

    /// A store that has been synced once (the usual device: every test that is not about
    /// a new store starts from one).
    pub fn synced() -> Self {
        Self { incarnation: Some(Incarnation([0xee; 16])), ..Self::default() }
    }
}

/// An agent core with its store, driven like a shell drives it: every persist batch is
/// applied to the store as it comes.
pub struct Harness {
    pub fleet: Fleet,
    pub tuning: Tuning,
    pub core: AgentCore,
    pub store: MemStore,
    pub now: Now,
    next_token: u64,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_tuning(Tuning::default())
    }

    pub fn with_tuning(tuning: Tuning) -> Self {
        Self::on_store(tuning, MemStore::synced())
    }

    /// A harness on a new store (a device's first start, or a store that came back empty).
    pub fn new_store() -> Self {
        Self::on_store(Tuning::default(), MemStore::default())
    }

    fn on_store(tuning: Tuning, store: MemStore) -> Self {
        let fleet = Fleet::default();
        let core = AgentCore::new(fleet.config(tuning), store.recovered()).unwrap();
        Self { fleet, tuning, core, store, now: Now::new(0, Some(NOW_UNIX)), next_token: 0 }
    }

    /// Feeds one input; applies its persist batches to the store.
    pub fn input(&mut self, input: Input<'_>) -> Vec<Action> {
        let actions = self.core.handle(input, self.now);
        for action in &actions {
            if let Action::Persist(batch) = action {
                self.store.apply(batch);
            }
        }
        actions
    }

    /// Delivers a message with a fresh token; returns the token with the actions.
    pub fn deliver(&mut self, topic: &str, payload: &[u8]) -> (DeliveryToken, Vec<Action>) {
        self.next_token += 1;
        let delivery = DeliveryToken(self.next_token);
        (delivery, self.input(Input::Message { topic, payload, delivery }))
    }

    pub fn deliver_job(&mut self, payload: &[u8]) -> Vec<Action> {
        let topic = self.fleet.jobs_topic();
        self.deliver(&topic, payload).1
    }

    pub fn link_up(&mut self) -> Vec<Action> {
        self.input(Input::LinkUp)
    }

    pub fn tick(&mut self, advance_ms: u64) -> Vec<Action> {
        self.now.monotonic_ms += advance_ms;
        self.input(Input::Tick)
    }

    pub fn succeed(&mut self, key: &ExecutionKey) -> Vec<Action> {
        self.input(Input::ExecutionFinished { key: key.clone(), outcome: Outcome::Succeeded(report(b"ok")) })
    }

    /// Rebuilds the core from the store, as after a power cycle.
    pub fn restart(&mut self) {
        self.core = AgentCore::new(self.fleet.config(self.tuning), self.store.recovered()).unwrap();
    }

    /// The events in the store's outbox, decoded, in seq order.
    pub fn outbox_events(&self) -> Vec<ExecutionEvent> {
        self.store.outbox.values().map(|e| self.fleet.decode_event(&e.bytes)).collect()
    }
}

/// The fixture fleet, built once (the keys are fixed).
pub fn fleet() -> &'static Fleet {
    static FLEET: std::sync::OnceLock<Fleet> = std::sync::OnceLock::new();
    FLEET.get_or_init(Fleet::default)
}

/// The events published in `actions`, decoded.
pub fn published_events(actions: &[Action]) -> Vec<ExecutionEvent> {
    let topic = fleet().events_topic();
    publishes(actions).filter(|p| p.topic == topic).map(|p| fleet().decode_event(&p.payload)).collect()
}

/// The events persisted in `actions`, decoded.
pub fn persisted_events(actions: &[Action]) -> Vec<ExecutionEvent> {
    persisted(actions)
        .filter_map(|op| match op {
            StoreOp::PutEvent(e) => Some(fleet().decode_event(&e.bytes)),
            _ => None,
        })
        .collect()
}

pub fn report(output: &[u8]) -> RunReport {
    RunReport { output: output.to_vec(), logs: vec!["hello".into()], fuel_used: 42, duration_ms: 3 }
}

pub fn publishes(actions: &[Action]) -> impl Iterator<Item = &Publish> {
    actions.iter().filter_map(|a| match a {
        Action::Publish(p) => Some(p),
        _ => None,
    })
}

pub fn persisted(actions: &[Action]) -> impl Iterator<Item = &StoreOp> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Persist(batch) => Some(batch.iter()),
            _ => None,
        })
        .flatten()
}

pub fn runs(actions: &[Action]) -> Vec<ExecutionKey> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Run { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

pub fn acks(actions: &[Action]) -> Vec<DeliveryToken> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AckDelivery(t) => Some(*t),
            _ => None,
        })
        .collect()
}

/// The position of the first action matching `f`.
pub fn position(actions: &[Action], f: impl Fn(&Action) -> bool) -> usize {
    actions.iter().position(f).unwrap_or_else(|| panic!("no such action in {actions:#?}"))
}

pub fn kinds(events: &[ExecutionEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind.clone()).collect()
}

/// A job that asks for more than the fixture device has.
pub fn demanding_job(n: u8, edit: impl FnOnce(&mut JobSpec)) -> JobSpec {
    let mut job = Fleet::job(n);
    edit(&mut job);
    job
}

pub fn gpu_required(job: &mut JobSpec) {
    job.requirements.gpu = GpuRequirement::Required;
}
