//! The fleet's embedded MQTT broker, started in-process by `fleetctl serve` so an
//! operator installs nothing else.
//!
//! Why this crate exists: the fleet's security rests on "a device can only speak for
//! itself" (`docs/protocol.md`, section 2, "ACL"), which an embeddable broker's auth hook
//! cannot express. So this crate puts an MQTT-aware front door before the engine that
//! routes messages:
//!
//! ```text
//!  devices, controller ──TCP──▶ front door ──▶ engine: router (in-process, default) | rumqttd (loopback)
//!                              │ authenticate CONNECT (Authenticator)
//!                              │ ACL on CONNECT (client id, last-will), PUBLISH, SUBSCRIBE
//!                              │ size and form limits per connection
//! ```
//!
//! Map of the crate, one question per module:
//! - [`acl`]: may this identity do this? A pure function, table-tested.
//! - `session`: what happens to this packet? Sans-IO policy per connection.
//! - `framing`: where does one packet end, and is it MQTT 3.1.1?
//! - `frontdoor`: the sockets (listener, one relay task per client).
//! - `router`: the native engine: MQTT sessions and routing as a sans-IO state machine.
//! - `native`: the router behind one lock, and a queue to each connection.
//! - `wire`: the bytes of what the native engine sends.
//! - `engine`: rumqttd, configured and started on secret-guarded loopback ports (several
//!   servers, "shards", sharing one router); `EngineKind::Rumqttd`.
//!
//! ```no_run
//! # async fn run() -> Result<(), fleet_broker::BrokerError> {
//! use std::sync::Arc;
//! use fleet_broker::{Authenticator, BrokerConfig, Identity};
//!
//! struct Everyone;
//! impl Authenticator for Everyone {
//!     fn authenticate(&self, _client_id: &str, username: &str, _password: &[u8]) -> Option<Identity> {
//!         username.parse().ok().map(Identity::Device)
//!     }
//! }
//!
//! let broker = fleet_broker::start(BrokerConfig::new(([0, 0, 0, 0], 1883).into()), Arc::new(Everyone)).await?;
//! println!("MQTT on {}", broker.local_addr());
//! broker.shutdown().await;
//! # Ok(()) }
//! ```

pub mod acl;
mod auth;
mod config;
mod engine;
mod error;
mod framing;
mod frontdoor;
mod native;
mod router;
mod session;
mod stats;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use auth::{Authenticator, Identity};
pub use config::{
    BrokerConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENGINE_SHARDS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PACKET_BYTES,
    EngineKind,
};
pub use error::BrokerError;
pub use stats::BrokerStats;

use engine::Engine;
use stats::Counters;

/// A broker that is accepting connections. Dropping it stops it without waiting;
/// [`RunningBroker::shutdown`] stops it and waits until every connection is closed.
pub struct RunningBroker {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    engine: Option<Engine>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RunningBroker {
    /// The address clients connect to (the bound port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters since start.
    pub fn stats(&self) -> BrokerStats {
        self.counters.snapshot()
    }

    /// Stops accepting, closes every client connection, then stops the engine.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        info!(addr = %self.local_addr, "MQTT broker stopped");
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        self.cancel.cancel();
        // Dropping the engine tells its thread to stop.
        self.engine.take();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for RunningBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningBroker").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// Starts the broker on a tokio runtime of its own (worker threads `fleet-broker`), so
/// that whatever else the process does on its runtime (the controller's SQLite commits,
/// which block a worker while they fsync) never delays a client's packets. Returns once
/// the public listener and the engine are ready.
pub async fn start(config: BrokerConfig, auth: Arc<dyn Authenticator>) -> Result<RunningBroker, BrokerError> {
    config.validate()?;
    let bind = |source| BrokerError::Bind { addr: config.listen, source };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fleet-broker")
        .enable_all()
        .build()
        .map_err(bind)?;
    let std_listener = std::net::TcpListener::bind(config.listen).map_err(bind)?;
    std_listener.set_nonblocking(true).map_err(bind)?;
    let listener = {
        let _in_broker_runtime = runtime.enter();
        TcpListener::from_std(std_listener).map_err(bind)?
    };
    let local_addr = listener.local_addr().map_err(bind)?;
    let (engine, hub) = match config.engine {
        EngineKind::Rumqttd => (Some(engine::start(&config).await?), None),
        EngineKind::Native => (None, Some(Arc::new(native::Hub::default()))),
    };

    let counters = Arc::new(Counters::default());
    let shared = Arc::new(frontdoor::Shared {
        topics: Arc::new(config.topics.clone()),
        auth,
        counters: counters.clone(),
        engine_shards: engine
            .iter()
            .flat_map(|engine| engine.addrs().iter())
            .map(|&addr| frontdoor::EngineShard { addr, gate: Arc::new(Semaphore::new(frontdoor::ENGINE_HANDSHAKES)) })
            .collect(),
        engine_login: engine
            .as_ref()
            .map(|engine| engine.login().clone())
            .unwrap_or_else(|| session::EngineLogin { username: String::new(), password: String::new() }),
        hub,
        max_packet_bytes: config.max_packet_bytes,
        connect_timeout: config.connect_timeout,
        slots: Arc::new(Semaphore::new(config.max_connections.min(Semaphore::MAX_PERMITS))),
    });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn_on(frontdoor::accept_loop(listener, shared, cancel.clone(), tracker.clone()), runtime.handle());
    info!(
        addr = %local_addr,
        prefix = config.topics.prefix(),
        max_connections = config.max_connections,
        max_packet_bytes = config.max_packet_bytes,
        engine = ?config.engine,
        "MQTT broker listening"
    );
    Ok(RunningBroker { local_addr, counters, cancel, tracker, engine, runtime: Some(runtime) })
}
