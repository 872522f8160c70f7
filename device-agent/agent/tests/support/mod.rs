//! The world around one agent, for the end-to-end tests: a real `fleet-broker` on
//! loopback, a TCP proxy the test can cut, a provisioned state directory, the real
//! `fleet-agent` binary as a child process, and a test controller (rumqttc +
//! fleet-schemas) that signs envelopes, verifies and dedupes events by seq as the real
//! controller does, and acknowledges them.
//!
//! Waits are hang guards only: a test asserts on what arrives, never on how fast.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_agent::store::Store;
use fleet_broker::{Authenticator, BrokerConfig, Identity, RunningBroker};
use fleet_schemas::provision::{BrokerEndpoint, CONFIG_VERSION, DeviceConfig, SecretSeed};
use fleet_schemas::signed::is_signed;
use fleet_schemas::signed::public_key_of;
use fleet_schemas::status::DeviceStatus;
use fleet_schemas::{
    ACK_VERSION, DeviceId, Digest, ENVELOPE_VERSION, Envelope, EventAck, EventKind, ExecutionEvent, ExecutionKey,
    JobId, JobSpec, Limits, ModuleSource, Order, Requirements, RuntimeClass, SYNC_VERSION, SignedMessage, SigningKey,
    SyncGrant, SyncRequest, Topics, TrustedKey, verify_event, verify_sync_request,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

/// Long enough never to fire on a healthy run; there so that a bug fails instead of hanging.
pub const HANG_GUARD: Duration = Duration::from_secs(90);

pub const DEVICE: &str = "gw-test-1";
const CONTROLLER_USER: &str = "controller";

/// Test credentials: username `controller` or a device id, password `pw-{username}`.
struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate(&self, _client_id: &str, username: &str, password: &[u8]) -> Option<Identity> {
        if password != format!("pw-{username}").as_bytes() {
            return None;
        }
        if username == CONTROLLER_USER {
            Some(Identity::Controller)
        } else {
            DeviceId::new(username).ok().map(Identity::Device)
        }
    }
}

/// How a test wants its world.
#[derive(Debug, Clone)]
pub struct Options {
    /// Put a cuttable TCP proxy between the agent and the broker.
    pub proxy: bool,
    /// The controller acknowledges events as they arrive.
    pub auto_ack: bool,
    /// Extra lines for agent.toml.
    pub local: String,
}

impl Default for Options {
    fn default() -> Self {
        Self { proxy: false, auto_ack: true, local: String::new() }
    }
}

/// Everything the controller has seen, deduplicated by event seq as the real
/// controller does.
#[derive(Debug, Default)]
pub struct Seen {
    /// Verified events by event seq (the first copy of each).
    pub events: BTreeMap<u64, ExecutionEvent>,
    /// The wire bytes of each seq's first copy.
    bytes: BTreeMap<u64, Vec<u8>>,
    /// Every arrival's seq, duplicates included, in arrival order.
    pub arrivals: Vec<u64>,
    /// When each seq first arrived (for the benchmark).
    pub arrived_at: BTreeMap<u64, Instant>,
    /// Protocol violations: two different events under one seq, bad signatures.
    pub violations: Vec<String>,
    /// Status documents, in arrival order.
    pub statuses: Vec<DeviceStatus>,
    /// The highest seq acknowledged to the device.
    pub acked_through: u64,
    /// Sync grants sent (one per new store).
    pub grants: u32,
    /// The event base of the last grant: every seq at or below it was recorded before.
    pub base: u64,
}

impl Seen {
    /// The events of one job, in seq order.
    pub fn of_job(&self, job_id: JobId) -> Vec<&ExecutionEvent> {
        self.events.values().filter(|e| e.key.job_id == job_id).collect()
    }

    /// The distinct terminal events of an execution.
    pub fn terminal(&self, key: &ExecutionKey) -> Vec<&ExecutionEvent> {
        self.events.values().filter(|e| e.key == *key && e.kind.is_terminal()).collect()
    }

    /// Whether the job has a terminal event.
    pub fn finished(&self, job_id: JobId) -> bool {
        self.of_job(job_id).iter().any(|e| e.kind.is_terminal())
    }

    /// The highest seq such that every seq from 1 (or the last grant's base) to it has
    /// arrived.
    pub fn contiguous_through(&self) -> u64 {
        let mut through = self.base;
        while self.events.contains_key(&(through + 1)) {
            through += 1;
        }
        through
    }

    /// The `Rejected` reasons received, in seq order.
    pub fn rejections(&self) -> Vec<&fleet_schemas::Rejection> {
        self.events
            .values()
            .filter_map(|e| match &e.kind {
                EventKind::Rejected { reason } => Some(reason),
                _ => None,
            })
            .collect()
    }
}

/// The controller's view, shared with its event-loop task.
struct Shared {
    seen: Mutex<Seen>,
    changed: Condvar,
    auto_ack: AtomicBool,
    /// The next envelope seq (the floor a sync grant gives is the one before it).
    next_seq: AtomicU64,
}

/// One device's world.
pub struct World {
    pub runtime: Runtime,
    pub dir: tempfile::TempDir,
    broker: Option<RunningBroker>,
    pub proxy: Option<Proxy>,
    pub device: DeviceId,
    pub topics: Topics,
    job_key: SigningKey,
    pub device_key: SigningKey,
    controller: AsyncClient,
    shared: Arc<Shared>,
}

impl World {
    /// Starts the broker (and proxy), provisions the device and connects the controller.
    pub fn start(options: Options) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let broker = runtime
            .block_on(fleet_broker::start(BrokerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))), Arc::new(TestAuth)))
            .unwrap();
        let proxy = options.proxy.then(|| runtime.block_on(Proxy::start(broker.local_addr())));
        let agent_addr = proxy.as_ref().map(|p| p.addr).unwrap_or(broker.local_addr());

        let job_key = SigningKey::from_bytes(&random_seed());
        let root_key = SigningKey::from_bytes(&random_seed());
        let device_seed = random_seed();
        let device_key = SigningKey::from_bytes(&device_seed);
        let device = DeviceId::new(DEVICE).unwrap();
        let config = DeviceConfig {
            version: CONFIG_VERSION,
            device_id: device.clone(),
            device_key: SecretSeed(Digest(device_seed)),
            root_key: public_key_of(&root_key).1,
            job_keys: vec![TrustedKey::new(public_key_of(&job_key).1)],
            broker: BrokerEndpoint { host: agent_addr.ip().to_string(), port: agent_addr.port(), tls: false },
            username: DEVICE.into(),
            password: format!("pw-{DEVICE}"),
            topic_prefix: "fleet".into(),
            runtime: RuntimeClass::Gateway,
            labels: BTreeMap::from([("site".into(), "test".into())]),
        };
        let config_path = dir.path().join("agent.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        // As `fleetctl device provision` writes it: it holds the device's secret key.
        std::fs::set_permissions(&config_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let local = format!(
            "tick_ms = 100\nreconnect_min_ms = 50\nreconnect_max_ms = 300\nresend_after_ms = 3000\n\
             status_refresh_ms = 1000\nkeep_alive_secs = 5\n{}\n",
            options.local
        );
        std::fs::write(dir.path().join("agent.toml"), local).unwrap();

        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen::default()),
            changed: Condvar::new(),
            auto_ack: AtomicBool::new(options.auto_ack),
            next_seq: AtomicU64::new(1),
        });
        let topics = Topics::default();
        let controller = runtime.block_on(connect_controller(
            broker.local_addr(),
            shared.clone(),
            topics.clone(),
            device.clone(),
            device_key.verifying_key(),
            job_key.clone(),
        ));
        Self { runtime, dir, broker: Some(broker), proxy, device, topics, job_key, device_key, controller, shared }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("agent.json")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts the agent binary on this world's config, logging at debug level.
    pub fn spawn_agent(&self) -> Agent {
        Agent::spawn(&self.config_path(), &self.dir.path().join("agent.log"), "fleet_agent=debug,info")
    }

    /// Starts the agent binary logging warnings and run times only (for the benchmark).
    pub fn spawn_quiet_agent(&self) -> Agent {
        Agent::spawn(&self.config_path(), &self.dir.path().join("agent.log"), "warn,fleet_agent::exec=debug")
    }

    /// The agent's log so far (for failure messages).
    pub fn agent_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Waits (hang guard only) until `done` holds for what the controller has seen.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        self.wait_for_within(what, HANG_GUARD, done);
    }

    /// As [`World::wait_for`], with a longer hang guard for what takes a debug build
    /// long (compiling a job of megabytes).
    pub fn wait_for_within(&self, what: &str, guard: Duration, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + guard;
        let mut seen = self.shared.seen.lock().unwrap();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let summary = format!(
                    "{:#?}",
                    seen.events.values().map(|e| (&e.key.job_id, e.event_seq, &e.kind)).collect::<Vec<_>>()
                );
                drop(seen);
                panic!("hang guard: still waiting for {what}\nevents: {summary}\nagent log:\n{}", self.agent_log());
            }
            seen = self.shared.changed.wait_timeout(seen, left.min(Duration::from_millis(200))).unwrap().0;
        }
    }

    /// Waits (hang guard only) until the agent's log holds `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + HANG_GUARD;
        let path = self.dir.path().join("agent.log");
        while !std::fs::read_to_string(&path).unwrap_or_default().contains(needle) {
            assert!(Instant::now() < deadline, "hang guard: no {needle:?} in the agent's log:\n{}", self.agent_log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Looks at what the controller has seen.
    pub fn seen<T>(&self, look: impl FnOnce(&Seen) -> T) -> T {
        look(&self.shared.seen.lock().unwrap())
    }

    /// Waits (hang guard only) until the agent's store satisfies `done`.
    pub fn wait_for_store(&self, what: &str, done: impl Fn(&fleet_agent_core::Recovered) -> bool) {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Ok(store) = Store::open_read_only(&self.state_dir())
                && let Ok(recovered) = store.recover()
                && done(&recovered)
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("hang guard: the store never showed {what}\nagent log:\n{}", self.agent_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the agent has connected and subscribed (its online status is out)
    /// and its store is synced (a new store has had its grant), so that what is pushed
    /// next is judged, not dropped.
    pub fn wait_online(&self) {
        let before = self.seen(|s| s.statuses.len());
        self.wait_for("the agent's online status", |s| {
            s.statuses[before..].iter().any(|st| st.state == fleet_schemas::Presence::Online)
        });
        self.wait_for_store("an incarnation (the store synced)", |r| r.incarnation.is_some());
    }

    /// Turns automatic event acks on or off.
    pub fn set_auto_ack(&self, on: bool) {
        self.shared.auto_ack.store(on, Ordering::SeqCst);
    }

    /// Acknowledges every event through `through_seq`.
    pub fn ack_through(&self, through_seq: u64) {
        let payload = sign_ack(&self.job_key, &self.device, through_seq);
        let topic = self.topics.device_acks(&self.device);
        self.runtime.block_on(self.controller.publish(topic, QoS::AtLeastOnce, false, payload)).unwrap();
        self.shared.seen.lock().unwrap().acked_through = through_seq;
    }

    /// A fresh envelope seq.
    pub fn take_seq(&mut self) -> u64 {
        self.shared.next_seq.fetch_add(1, Ordering::SeqCst)
    }

    /// Signs an envelope with every field chosen by the caller.
    pub fn envelope_with(
        &self,
        key: &SigningKey,
        device: &DeviceId,
        seq: u64,
        order: Order,
        issued_at: u64,
        not_after: u64,
    ) -> Vec<u8> {
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            key_id: public_key_of(key).0,
            issued_at,
            not_after,
            device_id: device.clone(),
            seq,
            order,
        };
        SignedMessage::sign(&envelope, key).unwrap().to_bytes().unwrap()
    }

    /// A valid envelope for this device at `seq`.
    pub fn envelope_at(&self, seq: u64, order: Order) -> Vec<u8> {
        let now = unix_now();
        self.envelope_with(&self.job_key, &self.device, seq, order, now, now + 3600)
    }

    /// A valid run envelope at the next seq; returns its execution key and bytes.
    pub fn run_envelope(&mut self, job: &JobSpec) -> (ExecutionKey, Vec<u8>) {
        let seq = self.take_seq();
        let key = ExecutionKey { job_id: job.job_id, device_id: self.device.clone(), attempt: 1 };
        (key, self.envelope_at(seq, Order::Run { attempt: 1, job: Box::new(job.clone()) }))
    }

    /// Publishes bytes on the device's jobs topic (QoS 1; returns once queued).
    pub fn push_bytes(&self, payload: Vec<u8>) {
        let topic = self.topics.device_jobs(&self.device);
        self.runtime.block_on(self.controller.publish(topic, QoS::AtLeastOnce, false, payload)).unwrap();
    }

    /// Signs and pushes a job; returns its execution key.
    pub fn push(&mut self, job: &JobSpec) -> ExecutionKey {
        let (key, bytes) = self.run_envelope(job);
        self.push_bytes(bytes);
        key
    }

    /// Publishes a retained message (module chunks).
    pub fn publish_retained(&self, topic: String, payload: Vec<u8>) {
        self.runtime.block_on(self.controller.publish(topic, QoS::AtLeastOnce, true, payload)).unwrap();
    }

    /// The controller's job-signing key (to sign envelopes by hand).
    pub fn job_key(&self) -> &SigningKey {
        &self.job_key
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(broker) = self.broker.take() {
            self.runtime.block_on(broker.shutdown());
        }
    }
}

async fn connect_controller(
    broker: SocketAddr,
    shared: Arc<Shared>,
    topics: Topics,
    device: DeviceId,
    device_key: fleet_schemas::VerifyingKey,
    job_key: SigningKey,
) -> AsyncClient {
    let mut options = MqttOptions::new("test-controller", broker.ip().to_string(), broker.port());
    options.set_credentials(CONTROLLER_USER, format!("pw-{CONTROLLER_USER}"));
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 4096);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task_client = client.clone();
    let events_topic = topics.device_events(&device);
    let status_topic = topics.device_status(&device);
    let acks_topic = topics.device_acks(&device);
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut subacks = 0;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    task_client.subscribe(events_topic.clone(), QoS::AtLeastOnce).await.unwrap();
                    task_client.subscribe(status_topic.clone(), QoS::AtLeastOnce).await.unwrap();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    subacks += 1;
                    if subacks == 2
                        && let Some(ready) = ready.take()
                    {
                        let _ = ready.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if publish.topic == events_topic && is_signed::<SyncRequest>(&publish.payload) {
                        match verify_sync_request(&publish.payload, &device, &device_key) {
                            Ok(request) => {
                                let grant = grant(&shared, &job_key, &device, request.incarnation);
                                task_client
                                    .publish(topics.device_jobs(&device), QoS::AtLeastOnce, false, grant)
                                    .await
                                    .unwrap();
                                shared.seen.lock().unwrap().grants += 1;
                                shared.changed.notify_all();
                            }
                            Err(e) => shared.seen.lock().unwrap().violations.push(format!("bad sync request: {e}")),
                        }
                    } else if publish.topic == events_topic {
                        let ack = on_event(&shared, &publish.payload, &device, &device_key);
                        if let Some(through) = ack {
                            let payload = sign_ack(&job_key, &device, through);
                            let client = task_client.clone();
                            let topic = acks_topic.clone();
                            tokio::spawn(async move {
                                let _ = client.publish(topic, QoS::AtLeastOnce, false, payload).await;
                            });
                        }
                    } else if publish.topic == status_topic
                        && let Ok(status) = serde_json::from_slice::<DeviceStatus>(&publish.payload)
                    {
                        shared.seen.lock().unwrap().statuses.push(status);
                        shared.changed.notify_all();
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(HANG_GUARD, ready_rx).await.expect("hang guard: controller never subscribed").unwrap();
    client
}

/// The grant for a new store: every seq signed so far is a replay for it, and its
/// events are numbered past every one recorded.
fn grant(shared: &Shared, job_key: &SigningKey, device: &DeviceId, incarnation: fleet_schemas::Incarnation) -> Vec<u8> {
    let mut seen = shared.seen.lock().unwrap();
    let base = seen.events.keys().next_back().copied().unwrap_or(0).max(seen.base);
    seen.base = base;
    seen.acked_through = seen.acked_through.max(base);
    let grant = SyncGrant {
        version: SYNC_VERSION,
        key_id: public_key_of(job_key).0,
        device_id: device.clone(),
        incarnation,
        replay_floor: shared.next_seq.load(Ordering::SeqCst) - 1,
        issued_at: unix_now(),
        event_base: base,
    };
    SignedMessage::sign(&grant, job_key).unwrap().to_bytes().unwrap()
}

/// Records one event; returns the seq to acknowledge through, if an ack is due.
fn on_event(
    shared: &Shared,
    payload: &[u8],
    device: &DeviceId,
    device_key: &fleet_schemas::VerifyingKey,
) -> Option<u64> {
    let mut seen = shared.seen.lock().unwrap();
    match verify_event(payload, device, device_key) {
        Ok(event) => {
            let seq = event.event_seq;
            seen.arrivals.push(seq);
            match seen.bytes.get(&seq) {
                Some(first) if first.as_slice() != payload => {
                    seen.violations.push(format!("two different events under seq {seq}"));
                }
                Some(_) => {}
                None => {
                    seen.arrived_at.insert(seq, Instant::now());
                    seen.bytes.insert(seq, payload.to_vec());
                    seen.events.insert(seq, event);
                }
            }
        }
        Err(e) => seen.violations.push(format!("event failed verification: {e}")),
    }
    let through = seen.contiguous_through();
    let ack = (shared.auto_ack.load(Ordering::SeqCst) && through > seen.acked_through).then(|| {
        seen.acked_through = through;
        through
    });
    shared.changed.notify_all();
    ack
}

fn sign_ack(job_key: &SigningKey, device: &DeviceId, through_seq: u64) -> Vec<u8> {
    let ack =
        EventAck { version: ACK_VERSION, key_id: public_key_of(job_key).0, device_id: device.clone(), through_seq };
    SignedMessage::sign(&ack, job_key).unwrap().to_bytes().unwrap()
}

pub fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed.iter_mut().for_each(|b| *b = fastrand::u8(..));
    seed
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A job running `module` (inline) with `args`, under a fresh random job id.
pub fn job(module: &[u8], args: &[&str]) -> JobSpec {
    JobSpec {
        job_id: JobId(std::array::from_fn(|_| fastrand::u8(..))),
        module: ModuleSource::Inline(module.to_vec()),
        entry: "run".into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        limits: Limits { fuel: 0, memory_pages: 0, timeout_ms: 0 },
        requirements: Requirements::default(),
        inputs: vec![],
    }
}

/// The `hello` example job.
pub fn hello() -> JobSpec {
    job(fleet_example_jobs::HELLO, &[])
}

/// The `fleet-agent` binary as a child process; SIGKILLed when dropped.
pub struct Agent {
    child: Child,
}

impl Agent {
    pub fn spawn(config: &Path, log: &Path, rust_log: &str) -> Self {
        let log = File::options().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            // Only what agent.toml configures: a test that wants ONNX Runtime names it there.
            .env_remove("ORT_DYLIB_PATH")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a power cut would; waits until the process is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits for a clean exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "hang guard: the agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (hang guard only) for the process to exit on its own.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "hang guard: the agent did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy between the agent and the broker that the test can cut (every
/// connection closed, new ones refused) and restore: a link failure the test controls.
pub struct Proxy {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept_task: AbortHandle,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (task_open, task_connections) = (open.clone(), connections.clone());
        let accept_task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !task_open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let handle = tokio::spawn(async move {
                    let _ = inbound.set_nodelay(true);
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                })
                .abort_handle();
                task_connections.lock().unwrap().push(handle);
            }
        })
        .abort_handle();
        Self { addr, open, connections, accept_task }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut();
    }
}

/// The distinct job ids in a set of keys.
pub fn job_ids(keys: &[ExecutionKey]) -> BTreeSet<JobId> {
    keys.iter().map(|k| k.job_id).collect()
}
