//! `fleetctl serve`: the I/O shell around the store, the rollout engine and ingest.
//!
//! The shell owns one MQTT connection (client id `fleet-controller`, persistent session,
//! manual acks) and one database connection, and does these in one loop:
//!
//! - **Incoming**: an event is verified, recorded and acknowledged with a signed
//!   [`fleet_schemas::EventAck`]; a device status is recorded. The MQTT PUBACK is sent only
//!   after the database commit, so an event the controller crashed on is delivered again.
//!   Bad input is counted (`events.malformed`, `status.malformed`, `other.malformed`),
//!   logged and dropped.
//! - **Pushes from the operator API** ([`crate::api::PushOrder`]): recorded, planned and
//!   signed in one transaction with the first round of the rollout, published, then
//!   answered; a cancel, relabel or removal through the API wakes a tick at once.
//! - **Ticks** (every `poll_interval`): if another process committed to the database
//!   (`PRAGMA data_version` changed: `fleetctl` pushed a job, provisioned a device, asked
//!   for a cancel or rotated keys), or a deadline or rate window came due, every job that
//!   is not finished is planned ([`crate::rollout::plan`]) and the actions applied.
//! - **Publishing** follows the rule *store, then publish*: an envelope is signed with its
//!   sequence number and stored before it is published, so a restarted controller
//!   publishes the same bytes again instead of signing anew.
//!
//! The loop is single-threaded on purpose: SQLite serialises writers anyway, and one
//! writer makes every decision in order.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleet_schemas::signed::is_signed;
use fleet_schemas::status::to_json;
use fleet_schemas::{
    ControllerStatus, DeviceId, DeviceStatus, Digest, JobCounts, JobId, JobSpec, JobState, JobStatus, Order, Presence,
    SyncRequest, Topic, Topics,
};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::auth::StoreAuthenticator;
use crate::datadir::{DataDir, DataDirError, ServeInfo, ServeLock, StoreUnwritable};
use crate::ingest::{IngestError, ingest_event, ingest_sync_request};
use crate::model::job_state_str;
use crate::rollout::{self, Action, JobView};
use crate::signer::{SignError, Signer, module_chunks};
use crate::store::{JobRow, PendingEnvelope, Store, StoreError};
use crate::{CONTROLLER_CLIENT_ID, VERSION, unix_ms};

/// Largest MQTT packet the controller sends or accepts. Envelopes are at most 64 KiB,
/// chunks 16.5 KiB, events 64 KiB; oversized events are refused by `verify_event`
/// rather than by the MQTT client, which would drop the whole connection.
pub const MAX_PACKET_BYTES: usize = 256 * 1024;

/// QoS 1 publishes handed to the MQTT client and not yet acknowledged by the broker.
///
/// Why the controller keeps its own window: rumqttc takes requests (publishes *and* the
/// PUBACKs for the events it received) from one queue, and stops reading that queue
/// while its in-flight window is full. A rollout that queues thousands of envelopes
/// would put the PUBACKs for the devices' events behind them; the broker, waiting for
/// those PUBACKs, stops delivering events, and with them the PUBACKs the window waits
/// for: a deadlock. So publishes wait here, at most this many go to the client, and a
/// PUBACK never waits behind more than this many publishes.
const PUBLISH_WINDOW: usize = 1_000;

/// Messages recorded in one database transaction at most (group commit): a burst of
/// events costs one `fsync` per batch instead of one each.
const INGEST_BATCH: usize = 256;

/// How long a batch that ends no execution waits for more before it commits (see the
/// loop in [`Server::run`]). tokio's timer rounds it up to its 1 ms tick: an Accepted or
/// Started is recorded at most about a millisecond later, and the event that ends a
/// short job joins it in one commit.
const INGEST_LINGER: Duration = Duration::from_micros(500);

/// How often jobs whose executions changed are planned again (finished, retried, the
/// next batch started, their retained status published). Planning a job reads all of
/// its executions; the database is checked for pushes far more often (`poll_interval`).
const TOUCHED_DRIVE_INTERVAL_MS: u64 = 100;

/// Where the controller's broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerChoice {
    /// Start the embedded broker, listening here.
    Embedded {
        /// The listen address (port 0 picks a free one).
        listen: SocketAddr,
    },
    /// Use a broker that runs elsewhere.
    External {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl BrokerChoice {
    /// Parses `mqtt://host:port` (or `host:port`; port 1883 if absent).
    pub fn parse_url(url: &str) -> Result<Self, String> {
        Self::parse_url_tls(url).map(|(choice, _)| choice)
    }

    /// Parses `mqtt://host:port` or `mqtts://host:port` (MQTT over TLS, port 8883 if
    /// absent): the broker, and whether TLS was asked for.
    pub fn parse_url_tls(url: &str) -> Result<(Self, bool), String> {
        let (rest, tls) = match url.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => (rest, false),
            Some(("mqtts" | "ssl" | "tls", rest)) => (rest, true),
            Some((scheme, _)) => {
                return Err(format!(
                    "unsupported broker scheme `{scheme}://`: mqtt:// (plain TCP) or mqtts:// (MQTT over TLS)"
                ));
            }
            None => (url, false),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                (host, port.parse::<u16>().map_err(|_| format!("`{port}` in `{url}` is not a port number"))?)
            }
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("`{url}` names no host; expected mqtt://HOST:PORT"));
        }
        Ok((BrokerChoice::External { host: host.trim_start_matches('[').trim_end_matches(']').to_string(), port }, tls))
    }
}

/// How to run the controller.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory (initialised on first run).
    pub data_dir: PathBuf,
    /// The broker.
    pub broker: BrokerChoice,
    /// How often the database is checked for changes and deadlines.
    pub poll_interval: Duration,
    /// The operator API, if it is served.
    pub api: Option<crate::api::ApiConfig>,
    /// With the embedded broker: where it also serves MQTT over TLS, if it does (a
    /// certificate from the controller's CA for the loopback names and `names`).
    pub mqtt_tls: Option<SocketAddr>,
    /// Host names devices and clients use to reach this controller, for its certificates.
    pub names: Vec<String>,
    /// With an external broker: connect to it over TLS, trusting the CA (PEM) in this
    /// file (the controller's own, `DATA/tls/ca.pem`, when the broker's certificate came
    /// from `fleetctl broker acl`).
    pub broker_tls: Option<PathBuf>,
}

impl ServeConfig {
    /// A configuration with the default poll interval (20 ms: a check of the database
    /// for another process's commit is one cheap PRAGMA, and it is what a push waits for).
    pub fn new(data_dir: impl Into<PathBuf>, broker: BrokerChoice) -> Self {
        Self {
            data_dir: data_dir.into(),
            broker,
            poll_interval: Duration::from_millis(20),
            api: None,
            mqtt_tls: None,
            names: Vec::new(),
            broker_tls: None,
        }
    }
}

/// Why `serve` stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be used.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] fleet_broker::BrokerError),
    /// Something could not be signed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The serve task died.
    #[error("the controller task failed: {0}")]
    Task(String),
    /// The operator API did not start.
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    /// The broker's TLS could not be set up.
    #[error("MQTT over TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl ServeError {
    /// Whether the store refused a write for want of space or I/O: `serve` holds what it
    /// could not record and waits for the store to take writes again.
    pub fn is_unwritable(&self) -> bool {
        match self {
            ServeError::Store(error) | ServeError::DataDir(DataDirError::Store(error)) => error.is_unwritable(),
            _ => false,
        }
    }
}

/// A running controller.
pub struct RunningController {
    broker: Option<fleet_broker::RunningBroker>,
    broker_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    net_task: JoinHandle<()>,
    api: Option<crate::api::RunningApi>,
}

impl std::fmt::Debug for RunningController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningController").field("broker_addr", &self.broker_addr).finish_non_exhaustive()
    }
}

impl RunningController {
    /// The address of the broker the controller uses (the embedded one's bound address).
    pub fn broker_addr(&self) -> SocketAddr {
        self.broker_addr
    }

    /// The operator API's URL and the CA file its clients trust, if it is served.
    pub fn api(&self) -> Option<(&str, &std::path::Path)> {
        self.api.as_ref().map(|api| (api.url.as_str(), api.ca_file.as_path()))
    }

    /// Where the embedded broker serves MQTT over TLS, if it does.
    pub fn broker_tls_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().and_then(fleet_broker::RunningBroker::tls_addr)
    }

    /// The most device connections the embedded broker holds (what the open-file limit
    /// allows); `None` with an external broker.
    pub fn broker_capacity(&self) -> Option<usize> {
        self.broker.as_ref().map(fleet_broker::RunningBroker::max_connections)
    }

    /// Stops cleanly: marks the controller offline, flushes counters, disconnects, and
    /// stops the embedded broker.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(api) = self.api.take() {
            api.stop();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = (&mut self.task).await.map_err(|e| ServeError::Task(e.to_string())).and_then(|r| r);
        // Give the network task a moment to flush the disconnect, then stop it.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.net_task).await;
        self.net_task.abort();
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await;
        }
        result
    }

    /// Stops abruptly, as a crash would: no offline status, no disconnect (the broker
    /// publishes the last-will), nothing flushed that was not already committed.
    pub async fn kill(mut self) {
        if let Some(api) = self.api.take() {
            api.stop();
        }
        self.task.abort();
        self.net_task.abort();
        let _ = (&mut self.task).await;
        let _ = (&mut self.net_task).await;
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await;
        }
    }

    /// Waits until the controller stops by itself (it does only on a fatal error) or
    /// `stop` resolves, then shuts down cleanly.
    pub async fn run_until(mut self, stop: impl std::future::Future<Output = ()>) -> Result<(), ServeError> {
        tokio::select! {
            result = &mut self.task => {
                if let Some(api) = self.api.take() {
                    api.stop();
                }
                self.net_task.abort();
                if let Some(broker) = self.broker.take() {
                    broker.shutdown().await;
                }
                result.map_err(|e| ServeError::Task(e.to_string())).and_then(|r| r)
            }
            () = stop => self.shutdown().await,
        }
    }
}

/// Starts the controller: initialises the data directory if needed, starts the embedded
/// broker (or not), connects, and returns once everything is running.
pub async fn start(config: ServeConfig) -> Result<RunningController, ServeError> {
    let data = DataDir::new(&config.data_dir);
    let mut lock = data.lock_for_serve()?;
    let store = match data.open_or_init() {
        Err(DataDirError::Store(error)) if error.is_unwritable() && data.release_reserve() => {
            // Opening needs a little new space (SQLite's shared-memory index): the
            // reserve is there for this, so a full disk does not keep serve down.
            warn!(%error, "the data directory's disk is full: freed its 1 MiB reserve to start");
            data.open_or_init()?
        }
        opened => opened?,
    };
    data.keep_reserve();
    let signer = Signer::new(data.active_job_key(&store)?);
    let password = data.controller_password()?;
    let topics = Topics::default();

    let (broker, host, port) = match &config.broker {
        BrokerChoice::Embedded { listen } => {
            let auth = Arc::new(StoreAuthenticator::new(&data)?);
            let mut broker_config = fleet_broker::BrokerConfig::new(*listen);
            broker_config.topics = topics.clone();
            broker_config.max_packet_bytes = MAX_PACKET_BYTES;
            if let Some(tls_listen) = config.mqtt_tls {
                let names = crate::tls::api_names(tls_listen, &config.names);
                let tls = crate::tls::broker_from_own_ca(&data.path().join("tls"), &names)?;
                broker_config.tls = Some(fleet_broker::TlsListener { listen: tls_listen, config: tls });
            }
            let broker = fleet_broker::start(broker_config, auth).await?;
            let addr = broker.local_addr();
            let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
            (Some(broker), host, addr.port())
        }
        BrokerChoice::External { host, port } => (None, host.clone(), *port),
    };
    let broker_addr = match &broker {
        Some(broker) => broker.local_addr(),
        None => tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port))),
    };
    let mqtt = match &broker {
        Some(_) => broker_addr.to_string(),
        None => format!("{host}:{port} (external)"),
    };
    // The API binds before anything is announced, so a busy port stops serve at start.
    let wake: crate::api::Wake = Arc::new(tokio::sync::Notify::new());
    let (push_tx, push_rx) = mpsc::channel(crate::api::PUSH_QUEUE);
    let api = match &config.api {
        Some(api) => Some(crate::api::start(api, &data, wake.clone(), push_tx)?),
        None => None,
    };
    let mqtt_tls = broker.as_ref().and_then(fleet_broker::RunningBroker::tls_addr).map(|addr| addr.to_string());
    let info = ServeInfo {
        pid: std::process::id(),
        mqtt,
        mqtt_tls,
        started_at_ms: unix_ms(),
        api: api.as_ref().filter(|api| api.local_token).map(|api| api.url.clone()),
        ..ServeInfo::default()
    };
    if let Err(error) = lock.record(&info) {
        warn!(%error, "cannot write who holds the data directory's lock");
    }
    let lock = (lock, info);
    let broker_handle = broker.as_ref().map(fleet_broker::RunningBroker::handle);

    let mut options = MqttOptions::new(CONTROLLER_CLIENT_ID, host.clone(), port);
    options
        .set_credentials(CONTROLLER_CLIENT_ID, password)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(15))
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_request_channel_capacity(10_000)
        // The window that matters is the controller's own (`PUBLISH_WINDOW`); this only
        // has to stay above it, so rumqttc never stops taking requests (acks among them).
        .set_inflight(u16::MAX)
        .set_last_will(LastWill::new(
            topics.controller_status(),
            to_json(&ControllerStatus { state: Presence::Offline, version: VERSION.to_string(), ts: unix_ms() / 1000 }),
            QoS::AtLeastOnce,
            true,
        ));
    if let (None, Some(ca)) = (&broker, &config.broker_tls) {
        // Checked against that CA and the broker's host name; never a plain fallback.
        let tls = crate::tls::client_config(ca)?;
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
    }
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    // Envelopes and acks are small packets: without TCP_NODELAY each can wait on
    // Nagle's algorithm and the broker's delayed ACK, about 40 ms per hop.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (net_tx, net_rx) = mpsc::unbounded_channel();
    let net_task = tokio::spawn(network_loop(eventloop, net_tx));

    let counters = store.counters()?;
    let data_version = store.data_version()?;
    let server = Server {
        data,
        store,
        signer,
        topics,
        client,
        counters,
        counter_deltas: BTreeMap::new(),
        counters_dirty: true,
        last_data_version: data_version,
        dirty: true,
        next_wake: None,
        published_modules: HashSet::new(),
        published_rotation: 0,
        published_status: HashMap::new(),
        connected_once: false,
        online_since_fresh_broker: HashSet::new(),
        broker_label: format!("{host}:{port}"),
        broker_handle,
        revocations_seen_ms: unix_ms(),
        published_broker_stats: None,
        last_heartbeat: 0,
        touched: HashSet::new(),
        last_touched_drive: 0,
        planned_at: HashMap::new(),
        outgoing: VecDeque::new(),
        in_flight: 0,
        lock,
        unwritable: None,
        held: Vec::new(),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(server.run(net_rx, stop_rx, config.poll_interval, wake, push_rx));
    info!(broker = %broker_addr, data_dir = %config.data_dir.display(), "controller started");
    Ok(RunningController { broker, broker_addr, stop: Some(stop_tx), task, net_task, api })
}

/// Takes what is already waiting, up to a batch.
fn drain_into(batch: &mut Vec<Net>, net: &mut mpsc::UnboundedReceiver<Net>) {
    while batch.len() < INGEST_BATCH {
        match net.try_recv() {
            Ok(message) => batch.push(message),
            Err(_) => break,
        }
    }
}

/// What the network task tells the main loop.
enum Net {
    Connected {
        session_present: bool,
    },
    Publish(Publish),
    /// The broker acknowledged one of our QoS 1 publishes.
    PubAck,
    Disconnected(String),
}

impl Net {
    /// Whether a batch holding this commits at once instead of waiting a moment for
    /// more: an event that claims to end an execution (what a pusher waits for; the
    /// claim is checked when it is recorded), a PUBACK (it frees the publish window) and
    /// the link coming or going.
    fn commits_now(&self) -> bool {
        match self {
            Net::Publish(publish) => fleet_schemas::event::claims_terminal(&publish.payload),
            Net::PubAck | Net::Connected { .. } | Net::Disconnected(_) => true,
        }
    }
}

/// Drives rumqttc's event loop and forwards what matters. rumqttc reconnects by itself
/// on the next `poll` after an error; the pause keeps a dead broker from spinning us.
async fn network_loop(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Net>) {
    loop {
        let message = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => Net::Connected { session_present: ack.session_present },
            Ok(Event::Incoming(Packet::Publish(publish))) => Net::Publish(publish),
            Ok(Event::Incoming(Packet::PubAck(_))) => Net::PubAck,
            Ok(_) => continue,
            Err(error) => {
                let message = Net::Disconnected(error.to_string());
                if tx.send(message).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if tx.send(message).is_err() {
            return;
        }
    }
}

/// The controller status document, with the malformed-input counters added (readers
/// ignore fields they do not know, docs/protocol.md section 7).
#[derive(Serialize)]
struct StatusDoc<'a> {
    #[serde(flatten)]
    base: ControllerStatus,
    counters: &'a BTreeMap<String, u64>,
    /// The embedded broker's counters since it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    broker: Option<BTreeMap<&'static str, u64>>,
    /// Present while the store refuses writes: why, and since when (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    store_unwritable: Option<serde_json::Value>,
}

struct Server {
    data: DataDir,
    store: Store,
    signer: Signer,
    topics: Topics,
    client: AsyncClient,
    /// Totals (database plus not yet flushed).
    counters: BTreeMap<String, u64>,
    counter_deltas: BTreeMap<String, u64>,
    counters_dirty: bool,
    last_data_version: i64,
    /// Something changed: plan every job on the next tick.
    dirty: bool,
    next_wake: Option<u64>,
    published_modules: HashSet<Digest>,
    published_rotation: u64,
    published_status: HashMap<JobId, (JobState, u32, JobCounts)>,
    connected_once: bool,
    /// Devices whose online status the controller has seen since it last connected to a
    /// broker that had lost its state. A device's first online status after that is the
    /// moment to send its unanswered envelopes again: the agent publishes it only once
    /// it has subscribed, and its old subscription died with the old broker.
    online_since_fresh_broker: HashSet<String>,
    broker_label: String,
    /// The embedded broker's counters (refusals, ACL denials, malformed packets), for
    /// the controller's status; `None` with an external broker.
    broker_handle: Option<fleet_broker::BrokerHandle>,
    /// Credentials revoked up to this time (ms) have had their connections cut off.
    revocations_seen_ms: u64,
    /// The broker's counters as last published in the controller's status.
    published_broker_stats: Option<fleet_broker::BrokerStats>,
    last_heartbeat: u64,
    /// Jobs whose executions changed since the last tick: planned (and their status
    /// published) on the next one. Planning reads every execution of a job, so doing it
    /// per event would make a rollout to N devices cost N² row reads.
    touched: HashSet<JobId>,
    /// When touched jobs were last planned, Unix ms.
    last_touched_drive: u64,
    /// When each job was last planned after its events (see [`Server::drive_touched_now`]).
    planned_at: HashMap<JobId, u64>,
    /// Publishes waiting for room in [`PUBLISH_WINDOW`].
    outgoing: VecDeque<(String, Vec<u8>, bool)>,
    /// Publishes handed to the client and not yet acknowledged.
    in_flight: usize,
    /// The data directory's lock (one serve per directory), and what serve last wrote
    /// into it about itself.
    lock: (ServeLock, ServeInfo),
    /// Set while the store refuses writes (a full disk): nothing is acknowledged or
    /// published, the broker keeps serving, and [`Server::retry_unwritable`] tries again.
    unwritable: Option<Unwritable>,
    /// Messages received but not recorded because the store refused the write: recorded
    /// (and only then acknowledged) once it takes writes again.
    held: Vec<Publish>,
}

/// The store refusing writes, as serve lives with it.
struct Unwritable {
    error: String,
    since_ms: u64,
    logged_ms: u64,
    tried_ms: u64,
}

/// How often a store that refuses writes is tried again.
const UNWRITABLE_RETRY_MS: u64 = 1_000;
/// How often serve says again that its store still refuses writes.
const UNWRITABLE_LOG_MS: u64 = 60_000;

impl Server {
    async fn run(
        mut self,
        mut net: mpsc::UnboundedReceiver<Net>,
        mut stop: oneshot::Receiver<()>,
        poll_interval: Duration,
        wake: crate::api::Wake,
        mut pushes: mpsc::Receiver<crate::api::PushOrder>,
    ) -> Result<(), ServeError> {
        let mut ticker = tokio::time::interval(poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                // While the store refuses writes, what arrives stays unread (and so
                // unacknowledged at the broker, which keeps it and stops sending more
                // once its window is full).
                message = net.recv(), if self.unwritable.is_none() => match message {
                    Some(message) => {
                        let mut batch = vec![message];
                        drain_into(&mut batch, &mut net);
                        // Group commit: a batch that ends no execution (a device's
                        // Accepted and Started, a PUBACK) waits a moment for what follows
                        // (its Succeeded a few hundred microseconds later), so the events
                        // of a short job share one commit instead of one each.
                        while batch.len() < INGEST_BATCH && !batch.iter().any(Net::commits_now) {
                            match tokio::time::timeout(INGEST_LINGER, net.recv()).await {
                                Ok(Some(message)) => {
                                    batch.push(message);
                                    drain_into(&mut batch, &mut net);
                                }
                                Ok(None) | Err(_) => break,
                            }
                        }
                        let result = self.on_net_batch(batch).await;
                        self.live_with(result).await?;
                    }
                    None => break,
                },
                // A push from the API: recorded, planned and signed in one commit.
                Some(order) = pushes.recv() => {
                    let result = self.on_push(order).await;
                    self.live_with(result).await?;
                }
                // The API committed a cancel (a relabel, ...): act on it now, not at the
                // next tick.
                () = wake.notified(), if self.unwritable.is_none() => {
                    let batch = self.begin_batch();
                    let ticked = self.on_tick().await;
                    let ended = self.end_batch(batch).await;
                    self.live_with(ticked.and(ended)).await?;
                }
                _ = ticker.tick() => {
                    if self.unwritable.is_some() {
                        self.retry_unwritable().await?;
                        continue;
                    }
                    let batch = self.begin_batch();
                    let ticked = self.on_tick().await;
                    let ended = self.end_batch(batch).await;
                    self.live_with(ticked.and(ended)).await?;
                }
            }
        }
        if self.unwritable.is_none() {
            self.flush_counters()?;
        }
        self.publish_controller_status(Presence::Offline).await;
        let _ = self.client.disconnect().await;
        info!("controller stopped");
        Ok(())
    }

    /// Handles what arrived together in one database transaction (group commit), then
    /// acknowledges it to the broker and publishes what it produced. A message whose
    /// recording fails is rolled back alone and not acknowledged (the broker delivers it
    /// again after a reconnect); if the commit fails, nothing of the batch is
    /// acknowledged or published.
    ///
    /// If the store refuses a write (a full disk), the whole batch is rolled back and its
    /// messages are held, unacknowledged, to be recorded again (recording is idempotent)
    /// once the store takes writes: the error says so ([`ServeError::is_unwritable`]).
    async fn on_net_batch(&mut self, batch: Vec<Net>) -> Result<(), ServeError> {
        let open = self.begin_batch();
        let mut recorded = Vec::new();
        let mut result = Ok(());
        let mut unwritable: Option<StoreError> = None;
        for message in batch {
            match message {
                Net::Publish(publish) if unwritable.is_some() => self.held.push(publish),
                Net::Publish(publish) => match self.on_publish(&publish).await {
                    Ok(()) => recorded.push(publish),
                    Err(error) if error.is_unwritable() => {
                        unwritable = Some(error);
                        self.held.append(&mut recorded);
                        self.held.push(publish);
                    }
                    // Not acknowledged: the broker delivers it again after a reconnect.
                    Err(error) => error!(%error, topic = %publish.topic, "could not record a message"),
                },
                Net::Connected { session_present } => {
                    result = self.on_connected(session_present).await;
                    if result.is_err() {
                        break;
                    }
                }
                Net::Disconnected(reason) => warn!(%reason, "broker connection lost; reconnecting"),
                Net::PubAck => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.pump().await;
                }
            }
        }
        if let Some(error) = unwritable {
            self.store.rollback_batch();
            if let Some(mark) = open {
                self.outgoing.truncate(mark);
            }
            return Err(error.into());
        }
        if result.is_ok() {
            self.drive_touched_now().await;
        }
        let committed = self.end_batch(open).await;
        match &committed {
            Ok(()) => {
                for publish in &recorded {
                    if let Err(error) = self.client.ack(publish).await {
                        warn!(%error, "could not acknowledge a message to the broker");
                    }
                }
            }
            Err(error) if error.is_unwritable() => self.held.append(&mut recorded),
            Err(_) => {}
        }
        committed?;
        result
    }

    /// A push from the API, in one transaction with the first round of its rollout:
    /// the job is recorded, [`Server::on_tick`] plans and signs its first envelopes, all
    /// of it commits at once (one fsync, where a push committed apart and then planned
    /// took two), the envelopes are published, and only then does the API answer. A
    /// store that refuses writes answers 503 at once and nothing is recorded.
    async fn on_push(&mut self, order: crate::api::PushOrder) -> Result<(), ServeError> {
        let crate::api::PushOrder { request, module, actor, reply } = order;
        if let Some(state) = &self.unwritable {
            let _ = reply.send(Err(crate::operate::OpError::Unavailable {
                message: format!("the controller's store refuses writes: {}", state.error),
                help: Some("free space in its data directory, then push again".into()),
            }));
            return Ok(());
        }
        let batch = self.begin_batch();
        let pushed = crate::operate::push(&mut self.store, &request, &module, &actor, unix_ms());
        if pushed.is_ok() {
            self.dirty = true;
        }
        let ticked = self.on_tick().await;
        let ended = self.end_batch(batch).await;
        let answer = match (pushed, &ended) {
            (Ok(pushed), Ok(())) => Ok(pushed),
            (Err(refused), _) => Err(refused),
            (Ok(_), Err(error)) => Err(crate::operate::OpError::Unavailable {
                message: format!("the push could not be recorded: {error}"),
                help: Some("nothing of it was kept; push again once the controller's store takes writes".into()),
            }),
        };
        let _ = reply.send(answer);
        ticked.and(ended)
    }

    /// Goes on after a batch or a tick: a store that refused a write puts serve in its
    /// unwritable state (it stays up); any other error stops it.
    async fn live_with(&mut self, result: Result<(), ServeError>) -> Result<(), ServeError> {
        match result {
            Ok(()) => Ok(()),
            Err(error) if error.is_unwritable() => {
                self.enter_unwritable(&error.to_string()).await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn enter_unwritable(&mut self, error: &str) {
        let now = unix_ms();
        match &mut self.unwritable {
            Some(state) => {
                state.error = error.to_string();
                if now.saturating_sub(state.logged_ms) >= UNWRITABLE_LOG_MS {
                    state.logged_ms = now;
                    error!(
                        error,
                        held = self.held.len(),
                        for_s = now.saturating_sub(state.since_ms) / 1000,
                        "the store still cannot be written; nothing is acknowledged until it can"
                    );
                }
            }
            None => {
                error!(
                    error,
                    data_dir = %self.data.path().display(),
                    "the store cannot be written (is the disk full?): serve stays up and its broker keeps serving, \
                     but it acknowledges nothing until it can write again (devices keep what they send); \
                     free space in the data directory and it resumes by itself"
                );
                self.unwritable =
                    Some(Unwritable { error: error.to_string(), since_ms: now, logged_ms: now, tried_ms: now });
                self.count("store.unwritable");
                self.record_self();
                self.publish_controller_status(Presence::Online).await;
            }
        }
    }

    /// While the store refuses writes: records what was held (or, with nothing held,
    /// writes the heartbeat) once a second; when that works, serve resumes.
    async fn retry_unwritable(&mut self) -> Result<(), ServeError> {
        let now = unix_ms();
        let Some(state) = &mut self.unwritable else { return Ok(()) };
        if now.saturating_sub(state.tried_ms) < UNWRITABLE_RETRY_MS {
            return Ok(());
        }
        state.tried_ms = now;
        if now.saturating_sub(self.last_heartbeat) >= 5_000 {
            self.last_heartbeat = now;
            self.record_self();
        }
        let tried = if self.held.is_empty() {
            self.store.set_controller_info(&self.info(Presence::Online).to_string(), now).map_err(ServeError::from)
        } else {
            let held: Vec<Net> = std::mem::take(&mut self.held).into_iter().map(Net::Publish).collect();
            self.on_net_batch(held).await
        };
        match tried {
            Ok(()) => {
                let since = self.unwritable.take().map_or(now, |state| state.since_ms);
                info!(after_s = now.saturating_sub(since) / 1000, "the store takes writes again: serve resumes");
                self.dirty = true;
                self.counters_dirty = true;
                self.data.keep_reserve();
                self.record_self();
                self.publish_controller_status(Presence::Online).await;
                Ok(())
            }
            Err(error) if error.is_unwritable() => {
                self.enter_unwritable(&error.to_string()).await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Writes what serve says about itself into the data directory's lock file (in
    /// place: it needs no new space), for `fleetctl status` to read even when the store
    /// cannot be written.
    fn record_self(&mut self) {
        let (lock, info) = &mut self.lock;
        info.updated_at_ms = unix_ms();
        info.store_unwritable = self
            .unwritable
            .as_ref()
            .map(|state| StoreUnwritable { error: state.error.clone(), since_ms: state.since_ms });
        if let Err(error) = lock.record(info) {
            debug!(%error, "cannot write the lock file");
        }
    }

    /// Opens a store batch if none is open; returns where the publish queue stood.
    fn begin_batch(&mut self) -> Option<usize> {
        if self.store.in_batch() {
            return None;
        }
        match self.store.begin_batch() {
            Ok(()) => Some(self.outgoing.len()),
            Err(error) => {
                // Unbatched, each operation commits on its own: slower, still correct.
                warn!(%error, "could not open a batch");
                None
            }
        }
    }

    /// Commits the batch `begin_batch` opened, then publishes what it queued; if the
    /// commit fails, drops what the batch queued (acks for events that are not stored,
    /// envelopes whose sequence numbers were not kept).
    async fn end_batch(&mut self, opened: Option<usize>) -> Result<(), ServeError> {
        if let Some(mark) = opened
            && let Err(error) = self.store.commit_batch()
        {
            self.outgoing.truncate(mark);
            error!(%error, "could not commit a batch; nothing of it is acknowledged or published");
            return Err(error.into());
        }
        self.pump().await;
        Ok(())
    }

    async fn on_connected(&mut self, session_present: bool) -> Result<(), ServeError> {
        info!(session_present, "connected to the broker");
        // rumqttc sends what was in flight again on its own; counting those as gone errs
        // by at most one window, and a count that drifted heals here.
        self.in_flight = 0;
        for filter in [self.topics.all_device_events(), self.topics.all_device_status()] {
            if let Err(error) = self.client.subscribe(filter, QoS::AtLeastOnce).await {
                error!(%error, "could not subscribe");
            }
        }
        self.publish_controller_status(Presence::Online).await;
        // A broker without our session (first start, or it lost state) has none of the
        // retained documents or in-flight envelopes either: publish them again.
        if !self.connected_once || !session_present {
            self.online_since_fresh_broker.clear();
            self.republish_all().await?;
        }
        self.connected_once = true;
        self.dirty = true;
        Ok(())
    }

    async fn on_publish(&mut self, publish: &Publish) -> Result<(), StoreError> {
        let now = unix_ms();
        match self.topics.parse(&publish.topic) {
            Some(Topic::DeviceEvents(device)) if is_signed::<SyncRequest>(&publish.payload) => {
                return self.on_sync_request(device, &publish.payload, now).await;
            }
            Some(Topic::DeviceEvents(device)) => match ingest_event(&mut self.store, device, &publish.payload, now) {
                Ok(ingested) => {
                    let outcome = &ingested.outcome;
                    let key = &ingested.event.key;
                    debug!(
                        device, seq = ingested.event.event_seq, job = %key.job_id, attempt = key.attempt,
                        duplicate = outcome.duplicate, transition = ?outcome.transition, "event"
                    );
                    if !outcome.known_execution && !outcome.duplicate {
                        info!(device, job = %key.job_id, attempt = key.attempt, "event for an unknown execution recorded and acknowledged");
                    }
                    self.publish_ack(&key.device_id, outcome.acked_through).await;
                    if outcome.transition.is_some() {
                        self.touched.insert(key.job_id);
                    }
                }
                Err(IngestError::Store(error)) => return Err(error),
                Err(error) => {
                    warn!(topic = %publish.topic, %error, "event dropped");
                    self.count("events.malformed");
                }
            },
            Some(Topic::DeviceStatus(device)) => {
                if publish.payload.is_empty() {
                    return Ok(()); // a cleared retained status
                }
                match fleet_schemas::status::from_json::<DeviceStatus>(&publish.payload) {
                    Ok(status) if status.device_id.as_str() == device => {
                        let was_online = self
                            .store
                            .device(device)?
                            .and_then(|d| d.status)
                            .is_some_and(|s| s.state == Presence::Online);
                        let json = String::from_utf8_lossy(&publish.payload);
                        if !self.store.set_device_status(&status.device_id, &json, now)? {
                            warn!(device, "status from an unknown device dropped");
                            self.count("status.malformed");
                        } else if status.state == Presence::Online
                            && (self.online_since_fresh_broker.insert(device.to_owned()) || !was_online)
                        {
                            // A device that just came online may never have had a session
                            // at the broker (first connect, or a broker that restarted
                            // without its state; its last-will died with it, so it never
                            // looked offline), so anything sent before is gone: send it
                            // again, the same bytes (the agent drops a copy it already has
                            // by its sequence number).
                            let pending = self.store.unanswered_envelopes_for(&status.device_id)?;
                            if !pending.is_empty() {
                                info!(
                                    device,
                                    count = pending.len(),
                                    "device came online; publishing its unanswered envelopes again"
                                );
                            }
                            for envelope in &pending {
                                self.publish_envelope(envelope).await;
                            }
                        }
                    }
                    Ok(status) => {
                        warn!(device, claimed = %status.device_id, "status names another device; dropped");
                        self.count("status.malformed");
                    }
                    Err(error) => {
                        warn!(device, %error, "status dropped");
                        self.count("status.malformed");
                    }
                }
            }
            _ => {
                warn!(topic = %publish.topic, "message on an unexpected topic dropped");
                self.count("other.malformed");
            }
        }
        Ok(())
    }

    /// A device whose store is new asks where it stands: answer with its grant, then the
    /// envelopes still in flight for it, signed again above the floor (same topic, in
    /// that order, after the commit).
    async fn on_sync_request(&mut self, device: &str, payload: &[u8], now: u64) -> Result<(), StoreError> {
        let (request, resync) = match ingest_sync_request(&mut self.store, device, payload, now, &self.signer) {
            Ok(answered) => answered,
            Err(IngestError::Store(error)) => return Err(error),
            Err(error) => {
                warn!(device = %fleet_broker::logs::Bounded(device), %error, "sync request dropped");
                self.count("events.malformed");
                return Ok(());
            }
        };
        if resync.reset {
            warn!(
                device,
                incarnation = %request.incarnation,
                replay_floor = resync.replay_floor,
                event_base = resync.event_base,
                signed_again = resync.envelopes.len(),
                canceled = resync.touched.len(),
                "the device's store was reset: it refuses every envelope signed before, numbers its events after \
                 the ones recorded, and gets what is still in flight signed again"
            );
            self.count("devices.store_resets");
        } else if !resync.repeated {
            info!(device, incarnation = %request.incarnation, signed_again = resync.envelopes.len(), "device synced its new store");
        }
        let device_id = request.device_id;
        self.publish(self.topics.device_jobs(&device_id), resync.grant, false).await;
        for envelope in &resync.envelopes {
            self.publish_envelope(envelope).await;
        }
        self.touched.extend(resync.touched);
        Ok(())
    }

    /// Plans, inside the batch that recorded their events, the jobs it touched that were
    /// not planned in the last [`TOUCHED_DRIVE_INTERVAL_MS`]: a job's finish (its state,
    /// its retained status) then shares the commit of its last event, and nothing waits
    /// for the next tick. A job whose events keep coming (a rollout to thousands) is
    /// still planned at most once per interval; the tick picks up what is left.
    async fn drive_touched_now(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        let now = unix_ms();
        if self.planned_at.len() > 4_096 {
            self.planned_at.retain(|_, at| now.saturating_sub(*at) < TOUCHED_DRIVE_INTERVAL_MS);
        }
        let due: Vec<JobId> = self
            .touched
            .iter()
            .filter(|job| {
                self.planned_at.get(*job).is_none_or(|at| now.saturating_sub(*at) >= TOUCHED_DRIVE_INTERVAL_MS)
            })
            .copied()
            .collect();
        for job_id in due {
            self.touched.remove(&job_id);
            self.planned_at.insert(job_id, now);
            let driven = match self.store.job(&job_id) {
                Ok(Some(job)) => self.drive_job(job, now).await,
                Ok(None) => Ok(()),
                Err(error) => Err(error.into()),
            };
            if let Err(error) = driven {
                // The events are recorded; the next reconcile tries the job again.
                error!(job = %job_id, %error, "could not drive the job");
                self.dirty = true;
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), ServeError> {
        let now = unix_ms();
        let version = self.store.data_version()?;
        if version != self.last_data_version {
            self.last_data_version = version;
            self.dirty = true;
        }
        let due = self.next_wake.is_some_and(|wake| wake <= now);
        if self.dirty || due {
            self.dirty = false;
            self.touched.clear();
            self.reconcile(now).await?;
        } else if !self.touched.is_empty() && now.saturating_sub(self.last_touched_drive) >= TOUCHED_DRIVE_INTERVAL_MS {
            self.last_touched_drive = now;
            for job_id in std::mem::take(&mut self.touched) {
                if let Some(job) = self.store.job(&job_id)?
                    && let Err(error) = self.drive_job(job, now).await
                {
                    // The events are recorded; the next reconcile tries the job again.
                    error!(job = %job_id, %error, "could not drive the job");
                    self.dirty = true;
                }
            }
        }
        if self.counters_dirty || now.saturating_sub(self.last_heartbeat) >= 5_000 {
            self.flush_counters()?;
            let broker_now = self.broker_handle.as_ref().map(fleet_broker::BrokerHandle::snapshot);
            if self.counters_dirty || broker_now != self.published_broker_stats {
                self.publish_controller_status(Presence::Online).await;
                self.counters_dirty = false;
                self.published_broker_stats = broker_now;
            }
            self.last_heartbeat = now;
            self.record_self();
        }
        Ok(())
    }

    /// Plans every job that is not finished, publishes a newer key rotation, and cuts
    /// off the connections of devices whose credentials were revoked.
    async fn reconcile(&mut self, now: u64) -> Result<(), ServeError> {
        let (revoked, seen) = self.store.revoked_since(self.revocations_seen_ms)?;
        self.revocations_seen_ms = seen;
        for device in revoked {
            let closed = self.broker_handle.as_ref().map_or(0, |broker| broker.disconnect(device.as_str()));
            warn!(%device, connections = closed, "credentials revoked: the device is cut off and cannot log in again");
        }
        if let Some((seq, bytes)) = self.store.latest_rotation()?
            && seq > self.published_rotation
        {
            self.signer = Signer::new(self.data.active_job_key(&self.store)?);
            self.publish(self.topics.keys(), bytes, true).await;
            self.published_rotation = seq;
            info!(seq, key = %self.signer.key_id(), "key rotation published; signing with the new key");
        }
        self.next_wake = None;
        for job in self.store.jobs_to_drive()? {
            let id = job.id;
            // One job that cannot be driven (a corrupt row, a module that no longer
            // splits) must not stop the others.
            if let Err(error) = self.drive_job(job, now).await {
                error!(job = %id, %error, "could not drive the job");
            }
        }
        Ok(())
    }

    /// Plans one job and applies the actions until the plan is empty.
    async fn drive_job(&mut self, mut job: JobRow, now: u64) -> Result<(), ServeError> {
        let mut spec: Option<JobSpec> = None;
        for _ in 0..16 {
            let executions = self.store.exec_views(&job.id)?;
            let matching = if job.params.continuous { self.store.matching_devices(&job.target)? } else { Vec::new() };
            let plan = rollout::plan(
                now,
                &JobView {
                    state: job.state,
                    cancel_requested: job.cancel_requested,
                    params: &job.params,
                    executions: &executions,
                    matching: &matching,
                },
            );
            if let Some(wake) = plan.wake_at_ms {
                self.next_wake = Some(self.next_wake.map_or(wake, |w| w.min(wake)));
            }
            if plan.actions.is_empty() {
                break;
            }
            for action in plan.actions {
                self.apply(&job, action, now, &mut spec).await?;
            }
            match self.store.job(&job.id)? {
                Some(updated) => job = updated,
                None => break,
            }
        }
        self.publish_job_status(&job).await?;
        Ok(())
    }

    async fn apply(
        &mut self,
        job: &JobRow,
        action: Action,
        now: u64,
        spec: &mut Option<JobSpec>,
    ) -> Result<(), ServeError> {
        match action {
            Action::Enqueue { device } => {
                if self.store.enqueue(&job.id, &device, 1, now)? {
                    info!(job = %job.id, %device, "continuous job picked up a new device");
                }
            }
            Action::Retry { device, attempt } => {
                if self.store.enqueue(&job.id, &device, attempt, now)? {
                    info!(job = %job.id, %device, attempt, "retrying");
                }
            }
            Action::Send { device, attempt } => {
                if spec.is_none() {
                    let bytes = self.store.job_spec(&job.id)?;
                    let decoded: JobSpec =
                        postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt(format!("job spec: {e}")))?;
                    *spec = Some(decoded);
                }
                let Some(spec) = spec.as_ref() else { return Ok(()) };
                if job.chunked {
                    self.publish_module(job).await?;
                }
                let deadline = now.saturating_add(job.params.exec_timeout_ms);
                let (issued, not_after) = (now / 1000, deadline.div_ceil(1000));
                let order = Order::Run { attempt, job: Box::new(spec.clone()) };
                let signer = &self.signer;
                let sent = self.store.send_execution(&job.id, &device, attempt, now, deadline, |seq| {
                    signer.envelope(&device, seq, order, issued, not_after).map_err(|e| e.to_string())
                })?;
                if let Some(envelope) = sent {
                    debug!(job = %job.id, %device, attempt, seq = envelope.seq, "envelope sent");
                    self.publish_envelope(&envelope).await;
                }
            }
            Action::TimeOut { device, attempt } => {
                if self.store.time_out(&job.id, &device, attempt, now)? {
                    warn!(job = %job.id, %device, attempt, "execution timed out");
                }
            }
            Action::CancelQueued { device, attempt } => {
                self.store.cancel_queued(&job.id, &device, attempt, now)?;
            }
            Action::SendCancel { device, attempt } => {
                let validity = job.params.exec_timeout_ms.max(3_600_000);
                let (issued, not_after) = (now / 1000, now.saturating_add(validity).div_ceil(1000));
                let signer = &self.signer;
                let job_id = job.id;
                let sent = self.store.send_cancel(&job.id, &device, attempt, now, |seq| {
                    signer
                        .envelope(&device, seq, Order::Cancel { job_id }, issued, not_after)
                        .map_err(|e| e.to_string())
                })?;
                if let Some(envelope) = sent {
                    info!(job = %job.id, %device, attempt, "cancel order sent");
                    self.publish_envelope(&envelope).await;
                }
            }
            Action::Finish(state) => {
                if self.store.finish_job(&job.id, state, now)? {
                    info!(job = %job.id, state = job_state_str(state), "job finished");
                }
            }
        }
        Ok(())
    }

    async fn publish_envelope(&mut self, envelope: &PendingEnvelope) {
        self.publish(self.topics.device_jobs(&envelope.device), envelope.bytes.clone(), false).await;
    }

    async fn publish_ack(&mut self, device: &DeviceId, through: u64) {
        match self.signer.ack(device, through) {
            Ok(bytes) => self.publish(self.topics.device_acks(device), bytes, false).await,
            Err(error) => error!(%device, %error, "could not sign an ack"),
        }
    }

    async fn publish_module(&mut self, job: &JobRow) -> Result<(), ServeError> {
        if self.published_modules.contains(&job.module_hash) {
            return Ok(());
        }
        let Some(module) = self.store.module_bytes(&job.module_hash)? else {
            error!(job = %job.id, "the chunked module is missing from the database");
            return Ok(());
        };
        let (described, chunks) = module_chunks(&module)?;
        for chunk in &chunks {
            self.publish(self.topics.module_chunk(&described.chain_head, chunk.index), chunk.encode(), true).await;
        }
        info!(module = %job.module_hash, chunks = chunks.len(), "module chunks published");
        self.published_modules.insert(job.module_hash);
        Ok(())
    }

    async fn publish_job_status(&mut self, job: &JobRow) -> Result<(), ServeError> {
        let executions = self.store.exec_views(&job.id)?;
        let (total, counts) = rollout::counts(&executions);
        let key = (job.state, total, counts);
        if self.published_status.get(&job.id) == Some(&key) {
            return Ok(());
        }
        let status = JobStatus { job_id: job.id, state: job.state, total, counts, ts: unix_ms() / 1000 };
        self.publish(self.topics.job_status(&job.id), to_json(&status), true).await;
        self.published_status.insert(job.id, key);
        Ok(())
    }

    /// After a (re)connect without our session: retained documents and every envelope
    /// the devices have not answered, the same bytes as before.
    async fn republish_all(&mut self) -> Result<(), ServeError> {
        if let Some((seq, bytes)) = self.store.latest_rotation()? {
            self.publish(self.topics.keys(), bytes, true).await;
            self.published_rotation = seq;
        }
        self.published_modules.clear();
        self.published_status.clear();
        for job in self.store.jobs()? {
            if job.chunked && job.state == JobState::InProgress {
                self.publish_module(&job).await?;
            }
            self.publish_job_status(&job).await?;
        }
        let pending = self.store.unanswered_envelopes()?;
        if !pending.is_empty() {
            info!(count = pending.len(), "publishing unanswered envelopes again (same bytes, same sequence numbers)");
        }
        for envelope in &pending {
            self.publish_envelope(envelope).await;
        }
        Ok(())
    }

    async fn publish_controller_status(&mut self, state: Presence) {
        let doc = StatusDoc {
            base: ControllerStatus { state, version: VERSION.to_string(), ts: unix_ms() / 1000 },
            counters: &self.counters,
            broker: self.broker_counters(),
            store_unwritable: self
                .unwritable
                .as_ref()
                .map(|state| serde_json::json!({ "error": state.error, "since": state.since_ms / 1000 })),
        };
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        self.publish(self.topics.controller_status(), bytes, true).await;
        if self.unwritable.is_none()
            && let Err(error) = self.store.set_controller_info(&self.info(state).to_string(), unix_ms())
        {
            warn!(%error, "could not record the controller's state");
        }
    }

    fn broker_counters(&self) -> Option<BTreeMap<&'static str, u64>> {
        self.broker_handle.as_ref().map(|stats| stats.snapshot().named().into_iter().collect())
    }

    /// What `serve` records about itself for `fleetctl status`.
    fn info(&self, state: Presence) -> serde_json::Value {
        serde_json::json!({
            "state": match state { Presence::Online => "online", Presence::Offline => "offline" },
            "version": VERSION,
            "broker": self.broker_label,
            "pid": std::process::id(),
            "broker_counters": self.broker_counters(),
        })
    }

    /// Queues a QoS 1 publish; it goes to the client as the window allows.
    async fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        self.outgoing.push_back((topic, payload, retain));
        self.pump().await;
    }

    /// Hands queued publishes to the client while the window has room.
    async fn pump(&mut self) {
        // Store, then publish: nothing leaves while a batch is not committed.
        if self.store.in_batch() {
            return;
        }
        while self.in_flight < PUBLISH_WINDOW {
            let Some((topic, payload, retain)) = self.outgoing.pop_front() else { break };
            match self.client.publish(topic.clone(), QoS::AtLeastOnce, retain, payload).await {
                Ok(()) => self.in_flight += 1,
                Err(error) => error!(%topic, %error, "could not queue a message for the broker"),
            }
        }
    }

    fn count(&mut self, name: &str) {
        *self.counters.entry(name.to_string()).or_default() += 1;
        *self.counter_deltas.entry(name.to_string()).or_default() += 1;
        self.counters_dirty = true;
    }

    fn flush_counters(&mut self) -> Result<(), StoreError> {
        if !self.counter_deltas.is_empty() {
            self.store.add_counters(&self.counter_deltas)?;
            self.counter_deltas.clear();
        }
        self.store.set_controller_info(&self.info(Presence::Online).to_string(), unix_ms())?;
        Ok(())
    }
}
