//! A swarm of simulated devices in one process: each is a real MQTT connection running
//! the real agent core and the microcontroller agent's runtime.
//!
//! Why simulated at all: 10,000 `fleet-agent` processes (or QEMU boards) do not fit on a
//! two-core machine, and what a fan-out measures is the controller and the broker, not
//! the device's storage. So each device here is the same [`AgentCore`] the firmware and
//! `fleet-agent` run (it verifies every envelope, signs every event, keeps its outbox
//! until the controller acks it), fed by a `rumqttc` connection of its own and running
//! jobs in wasmi, as a microcontroller does. What it leaves out is durable storage: its
//! `Persist` batches are dropped, since the core keeps the same state in memory and a
//! benchmark device never restarts.
//!
//! Each device is one tokio task. A job runs on that task (the trivial jobs of a
//! benchmark take microseconds), so nothing here needs a thread per device.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fleet_agent_core::{
    Action, AgentConfig, AgentCore, Capabilities, DeliveryToken, Input, Now, Outcome, Publish, QoS as CoreQoS,
    Recovered, Tuning,
};
use fleet_executor::{ExecutorConfig, Job, NoInputs, WasmiExecutor};
use fleet_schemas::{DeviceId, JobSpec, KeyRing, RuntimeClass, SigningKey, Topics, Trusted};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::fleet::Link;

/// What a simulated device needs to join the fleet: what provisioning gives it.
#[derive(Clone)]
pub struct Identity {
    /// Its id (also its MQTT client id and user name).
    pub id: DeviceId,
    /// Its event-signing key.
    pub key: SigningKey,
    /// Its MQTT password.
    pub password: String,
}

/// The fleet-wide trust every device is provisioned with.
#[derive(Clone)]
pub struct Trust {
    /// The root key (signs key rotations).
    pub root: Trusted,
    /// The job keys.
    pub keys: KeyRing,
}

/// Counters the swarm keeps while it runs.
#[derive(Debug, Default)]
pub struct SwarmStats {
    /// Devices whose subscriptions are all acknowledged.
    pub ready: AtomicUsize,
    /// Jobs run to an outcome.
    pub runs: AtomicU64,
    /// Connections that failed (each one reconnects).
    pub link_errors: AtomicU64,
    /// Requests the MQTT client could not queue.
    pub dropped_requests: AtomicU64,
    /// Envelopes the core refused.
    pub rejected: AtomicU64,
}

/// The running swarm.
pub struct Swarm {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    stats: Arc<SwarmStats>,
    ready_rx: mpsc::UnboundedReceiver<()>,
}

impl Swarm {
    /// Connects every device in `devices` to `broker`, `per_second` new connections a
    /// second at most (a burst of thousands of TCP handshakes overflows the listen
    /// backlog; real fleets reconnect with jitter too).
    pub fn start(link: &Link, trust: &Trust, devices: Vec<Identity>, per_second: u32) -> Swarm {
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(SwarmStats::default());
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        let gap = Duration::from_secs(1) / per_second.max(1);
        let tasks = devices
            .into_iter()
            .enumerate()
            .map(|(n, identity)| {
                let device = SimDevice {
                    link: link.clone(),
                    identity,
                    trust: trust.clone(),
                    stats: stats.clone(),
                    ready: ready_tx.clone(),
                    stop: stop_rx.clone(),
                    started,
                    delay: gap * u32::try_from(n).unwrap_or(u32::MAX),
                };
                tokio::spawn(device.run())
            })
            .collect();
        Swarm { tasks, stop, stats, ready_rx }
    }

    /// The counters.
    pub fn stats(&self) -> &SwarmStats {
        &self.stats
    }

    /// Waits until every device has subscribed, or `guard` passes.
    pub async fn wait_ready(&mut self, guard: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        for n in 0..self.tasks.len() {
            let left = guard.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.ready_rx.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => anyhow::bail!("the swarm stopped after {n} devices were ready"),
                Err(_) => anyhow::bail!(
                    "only {n} of {} devices subscribed within {guard:?} ({} link errors)",
                    self.tasks.len(),
                    self.stats.link_errors.load(Ordering::Relaxed)
                ),
            }
        }
        Ok(started.elapsed())
    }

    /// Disconnects every device and waits for their tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

struct SimDevice {
    link: Link,
    identity: Identity,
    trust: Trust,
    stats: Arc<SwarmStats>,
    ready: mpsc::UnboundedSender<()>,
    stop: watch::Receiver<bool>,
    started: Instant,
    delay: Duration,
}

/// One device's link and core, between events.
struct Running {
    core: AgentCore,
    client: AsyncClient,
    executor: Option<WasmiExecutor>,
    id: DeviceId,
    pending: HashMap<u64, rumqttc::Publish>,
    next_token: u64,
    /// Subscriptions asked for on this connection and not yet acknowledged.
    awaiting_subacks: usize,
    reported_ready: bool,
    stats: Arc<SwarmStats>,
    started: Instant,
}

impl SimDevice {
    async fn run(mut self) {
        tokio::time::sleep(self.delay).await;
        let id = self.identity.id.clone();
        let config = AgentConfig {
            device_id: id.clone(),
            topics: Topics::default(),
            device_key: self.identity.key.clone(),
            root_key: self.trust.root.clone(),
            provisioned_keys: self.trust.keys.clone(),
            capabilities: Capabilities {
                runtime: RuntimeClass::Microcontroller,
                gpu: None,
                labels: Default::default(),
                data_inputs: Default::default(),
                max_module_bytes: 64 * 1024,
                inference: Vec::new(),
                wasi: Vec::new(),
            },
            agent_version: concat!("bench-", env!("CARGO_PKG_VERSION")).to_string(),
            // A benchmark fleet is quiet otherwise: no periodic status refresh inside a run.
            tuning: Tuning { status_refresh_ms: 3_600_000, ..Tuning::default() },
            fresh_incarnation: fleet_schemas::Incarnation(fleet_controller::random_32().map_or([0; 16], |r| {
                let mut incarnation = [0u8; 16];
                incarnation.copy_from_slice(&r[..16]);
                incarnation
            })),
        };
        let core = match AgentCore::new(config, Recovered::default()) {
            Ok(core) => core,
            Err(error) => {
                eprintln!("{id}: the agent core refused its config: {error}");
                return;
            }
        };
        let will = core.last_will();
        let mut options = MqttOptions::new(id.as_str(), self.link.addr.ip().to_string(), self.link.addr.port());
        if let Some(tls) = &self.link.tls {
            options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
        }
        options
            .set_credentials(id.as_str(), self.identity.password.as_str())
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(60))
            .set_max_packet_size(256 * 1024, 256 * 1024)
            .set_last_will(LastWill::new(will.topic, will.payload, qos(will.qos), will.retain));
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(60);
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let mut device = Running {
            core,
            client,
            executor: None,
            id,
            pending: HashMap::new(),
            next_token: 0,
            awaiting_subacks: 0,
            reported_ready: false,
            stats: self.stats.clone(),
            started: self.started,
        };
        // The event loop runs in a task of its own: `EventLoop::poll` is not cancel-safe
        // while it connects (a `select!` that drops it mid-handshake opens a second
        // connection with the same client id, and the broker drops the first).
        let (link_tx, mut link) = mpsc::unbounded_channel();
        let mut link_stop = self.stop.clone();
        let link_task = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = link_stop.changed() => break,
                    event = eventloop.poll() => event,
                };
                let failed = event.is_err();
                if link_tx.send(event).is_err() {
                    break;
                }
                if failed {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            // Let the DISCONNECT go out, so the broker does not publish the last-will.
            let _ = tokio::time::timeout(Duration::from_millis(200), async { while eventloop.poll().await.is_ok() {} })
                .await;
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.changed() => break,
                _ = tick.tick() => device.feed(Input::Tick),
                event = link.recv() => match event {
                    None => break,
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        device.awaiting_subacks = 0;
                        device.feed(Input::LinkUp);
                    }
                    Some(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                        device.awaiting_subacks = device.awaiting_subacks.saturating_sub(1);
                    }
                    Some(Ok(Event::Incoming(Packet::Publish(publish)))) => device.message(publish),
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        let seen = self.stats.link_errors.fetch_add(1, Ordering::Relaxed);
                        if seen < 5 {
                            eprintln!("{}: link error (reconnecting): {error}", device.id);
                        }
                        device.pending.clear();
                        device.feed(Input::LinkDown);
                    }
                },
            }
            // Ready once subscribed and synced (a new device's store waits for the
            // controller's grant before it takes envelopes).
            if !device.reported_ready
                && device.awaiting_subacks == 0
                && device.core.is_synced()
                && device.core.is_link_up()
            {
                device.reported_ready = true;
                self.stats.ready.fetch_add(1, Ordering::Relaxed);
                let _ = self.ready.send(());
            }
        }
        let _ = device.client.try_disconnect();
        let _ = link_task.await;
    }
}

impl Running {
    fn now(&self) -> Now {
        let monotonic_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Now::new(monotonic_ms, Some(fleet_controller::unix_ms() / 1000))
    }

    fn message(&mut self, publish: rumqttc::Publish) {
        let token = self.next_token;
        self.next_token += 1;
        let now = self.now();
        let topic = publish.topic.clone();
        let payload = publish.payload.clone();
        self.pending.insert(token, publish);
        let actions =
            self.core.handle(Input::Message { topic: &topic, payload: &payload, delivery: DeliveryToken(token) }, now);
        self.perform(actions);
    }

    fn feed(&mut self, input: Input<'_>) {
        let now = self.now();
        let actions = self.core.handle(input, now);
        self.perform(actions);
    }

    /// Performs actions in order; a run's outcome goes back to the core at once.
    fn perform(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                // RAM only: see the module docs.
                Action::Persist(_) => {}
                Action::Publish(publish) => self.publish(publish),
                Action::AckDelivery(DeliveryToken(token)) => {
                    if let Some(publish) = self.pending.remove(&token)
                        && self.client.try_ack(&publish).is_err()
                    {
                        self.stats.dropped_requests.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Action::Run { key, job } => {
                    let outcome = self.run_job(&job);
                    self.stats.runs.fetch_add(1, Ordering::Relaxed);
                    let now = self.now();
                    let more = self.core.handle(Input::ExecutionFinished { key, outcome }, now);
                    // The run's consequences come after what this batch still holds.
                    queue.extend(more);
                }
                Action::Stop { .. } => {}
                Action::Subscribe { topic, qos: level } => {
                    self.awaiting_subacks += 1;
                    if self.client.try_subscribe(topic, qos(level)).is_err() {
                        self.stats.dropped_requests.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Action::Unsubscribe { topic } => {
                    let _ = self.client.try_unsubscribe(topic);
                }
                Action::Notice(fleet_agent_core::Notice::EnvelopeRejected(rejection)) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{}: envelope refused: {rejection}", self.id);
                }
                Action::Notice(_) => {}
            }
        }
    }

    fn publish(&mut self, publish: Publish) {
        if self.client.try_publish(publish.topic, qos(publish.qos), publish.retain, publish.payload).is_err() {
            self.stats.dropped_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn run_job(&mut self, spec: &JobSpec) -> Outcome {
        let Some(job) = Job::inline(spec) else {
            return failure("the benchmark swarm runs inline modules only");
        };
        if self.executor.is_none() {
            match WasmiExecutor::new(ExecutorConfig::microcontroller(self.id.clone())) {
                Ok(executor) => self.executor = Some(executor),
                Err(error) => return failure(&error.to_string()),
            }
        }
        let Some(executor) = self.executor.as_mut() else { return failure("no executor") };
        match executor.run(&job, NoInputs) {
            Ok(report) => Outcome::Succeeded(report),
            Err(failure) => {
                Outcome::Failed { reason: failure.reason, message: failure.message, report: failure.report }
            }
        }
    }
}

fn failure(message: &str) -> Outcome {
    Outcome::Failed {
        reason: fleet_schemas::FailReason::Unsupported,
        message: message.to_string(),
        report: fleet_schemas::RunReport::default(),
    }
}

fn qos(level: CoreQoS) -> QoS {
    match level {
        CoreQoS::AtMostOnce => QoS::AtMostOnce,
        CoreQoS::AtLeastOnce => QoS::AtLeastOnce,
    }
}
