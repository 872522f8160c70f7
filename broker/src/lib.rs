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
mod gate;
pub mod logs;
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
use tracing::{info, warn};

pub use auth::{Authenticator, Identity};
pub use config::{
    BrokerConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENGINE_SHARDS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PACKET_BYTES,
    DEFAULT_MAX_PENDING_PER_ADDRESS, EngineKind, TlsListener,
};
pub use error::BrokerError;
pub use stats::BrokerStats;
/// The TLS library the broker serves with (for building a [`TlsListener`]'s config).
pub use tokio_rustls::rustls;

use engine::Engine;
use stats::Counters;

/// A broker that is accepting connections. Dropping it stops it without waiting;
/// [`RunningBroker::shutdown`] stops it and waits until every connection is closed.
pub struct RunningBroker {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    max_connections: usize,
    counters: Arc<Counters>,
    clients: Arc<frontdoor::Clients>,
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

    /// The address MQTT over TLS is served on, if it is.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The most client connections it holds at once: the configured
    /// [`BrokerConfig::max_connections`], or less where the open-file limit says so.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// The counters since start.
    pub fn stats(&self) -> BrokerStats {
        self.counters.snapshot()
    }

    /// A handle for the broker's owner: its counters, and closing a client's
    /// connections.
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle { counters: self.counters.clone(), clients: self.clients.clone() }
    }

    /// Closes every connection of `client_id` at once, as an unclean end (its last-will
    /// is published); how many there were. For a client whose credentials were just
    /// revoked: it is cut off now, and its next CONNECT is the authenticator's to refuse.
    pub fn disconnect(&self, client_id: &str) -> usize {
        self.clients.disconnect(client_id)
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

/// What the broker's owner needs of a running broker without holding it: its counters,
/// and closing a client's connections.
#[derive(Clone)]
pub struct BrokerHandle {
    counters: Arc<Counters>,
    clients: Arc<frontdoor::Clients>,
}

impl BrokerHandle {
    /// The counters now.
    pub fn snapshot(&self) -> BrokerStats {
        self.counters.snapshot()
    }

    /// See [`RunningBroker::disconnect`].
    pub fn disconnect(&self, client_id: &str) -> usize {
        self.clients.disconnect(client_id)
    }
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BrokerHandle").field(&self.snapshot()).finish()
    }
}

/// Open files the process keeps for everything but client connections (its database,
/// logs, the controller's own connections, a socket accepted only to be refused).
pub const RESERVED_FILES: u64 = 128;

/// How many connections fit the process's open-file limit (`ulimit -n`), with
/// [`RESERVED_FILES`] kept back and `files_per_connection` descriptors each; `None`
/// when the process has no limit.
pub fn connections_the_file_limit_allows(files_per_connection: u64) -> Option<usize> {
    use rustix::process::{Resource, getrlimit};
    let limit = getrlimit(Resource::Nofile).current?;
    let usable = limit.saturating_sub(RESERVED_FILES) / files_per_connection.max(1);
    Some(usize::try_from(usable).unwrap_or(usize::MAX).max(1))
}

/// Starts the broker on a tokio runtime of its own (worker threads `fleet-broker`), so
/// that whatever else the process does on its runtime (the controller's SQLite commits,
/// which block a worker while they fsync) never delays a client's packets. Returns once
/// the public listener and the engine are ready.
pub async fn start(config: BrokerConfig, auth: Arc<dyn Authenticator>) -> Result<RunningBroker, BrokerError> {
    config.validate()?;
    let bind = |source| BrokerError::Bind { addr: config.listen, source };
    // Bound before the runtime exists: a runtime dropped on this error path, inside the
    // caller's async context, would panic instead of reporting the address in use.
    let std_listener = std::net::TcpListener::bind(config.listen).map_err(bind)?;
    std_listener.set_nonblocking(true).map_err(bind)?;
    let tls_listener = match &config.tls {
        Some(tls) => {
            let bind = |source| BrokerError::Bind { addr: tls.listen, source };
            let listener = std::net::TcpListener::bind(tls.listen).map_err(bind)?;
            listener.set_nonblocking(true).map_err(bind)?;
            Some((listener, tokio_rustls::TlsAcceptor::from(tls.config.clone())))
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fleet-broker")
        .enable_all()
        .build()
        .map_err(bind)?;
    match start_on(&runtime, std_listener, tls_listener, config, auth).await {
        Ok(mut running) => {
            running.runtime = Some(runtime);
            Ok(running)
        }
        Err(error) => {
            runtime.shutdown_background();
            Err(error)
        }
    }
}

async fn start_on(
    runtime: &tokio::runtime::Runtime,
    std_listener: std::net::TcpListener,
    tls_listener: Option<(std::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    config: BrokerConfig,
    auth: Arc<dyn Authenticator>,
) -> Result<RunningBroker, BrokerError> {
    let bind = |source| BrokerError::Bind { addr: config.listen, source };
    let (listener, tls_listener) = {
        let _in_broker_runtime = runtime.enter();
        let tls = match tls_listener {
            Some((listener, acceptor)) => {
                let addr = listener.local_addr().map_err(bind)?;
                let bind = |source| BrokerError::Bind { addr, source };
                Some((TcpListener::from_std(listener).map_err(bind)?, acceptor))
            }
            None => None,
        };
        (TcpListener::from_std(std_listener).map_err(bind)?, tls)
    };
    let local_addr = listener.local_addr().map_err(bind)?;
    let tls_addr = match &tls_listener {
        Some((listener, _)) => Some(listener.local_addr().map_err(bind)?),
        None => None,
    };
    let files_per_connection = match config.engine {
        EngineKind::Native => 1,
        EngineKind::Rumqttd => 3,
    };
    let max_connections = match connections_the_file_limit_allows(files_per_connection) {
        Some(fit) if fit < config.max_connections => {
            warn!(
                configured = config.max_connections,
                max_connections = fit,
                "the open-file limit (ulimit -n) holds fewer connections than configured; raise it for a larger fleet"
            );
            fit
        }
        _ => config.max_connections,
    };
    let (engine, hub) = match config.engine {
        EngineKind::Rumqttd => (Some(engine::start(&config).await?), None),
        EngineKind::Native => (None, Some(Arc::new(native::Hub::default()))),
    };

    let counters = Arc::new(Counters::default());
    let clients = Arc::new(frontdoor::Clients::default());
    let gate = gate::Gate::new(gate::Limits::new(max_connections, config.max_pending_per_address));
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
        gate,
        logs: frontdoor::LogGates::default(),
        clients: clients.clone(),
    });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    if let Some((listener, acceptor)) = tls_listener {
        tracker.spawn_on(
            frontdoor::accept_loop(listener, Some(acceptor), shared.clone(), cancel.clone(), tracker.clone()),
            runtime.handle(),
        );
        info!(addr = ?tls_addr, "MQTT over TLS listening");
    }
    tracker.spawn_on(frontdoor::accept_loop(listener, None, shared, cancel.clone(), tracker.clone()), runtime.handle());
    info!(
        addr = %local_addr,
        prefix = config.topics.prefix(),
        max_connections,
        max_pending_per_address = config.max_pending_per_address,
        max_packet_bytes = config.max_packet_bytes,
        engine = ?config.engine,
        "MQTT broker listening"
    );
    Ok(RunningBroker {
        local_addr,
        tls_addr,
        max_connections,
        counters,
        clients,
        cancel,
        tracker,
        engine,
        runtime: None,
    })
}
