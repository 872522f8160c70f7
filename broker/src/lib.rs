//! The fleet's embedded MQTT broker, started in-process by `fleetctl serve` so an
//! operator installs nothing else.
//!
//! Why this crate exists: the fleet's security rests on "a device can only speak for
//! itself" (`docs/protocol.md`, section 2, "ACL"), and the embeddable broker we build on,
//! rumqttd, authenticates but has no per-topic authorization. So this crate puts an
//! MQTT-aware front door before it:
//!
//! ```text
//!  devices, controller ──TCP──▶ front door ──loopback TCP──▶ rumqttd (engine)
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
//! - `engine`: rumqttd, configured and started on secret-guarded loopback ports (several
//!   servers, "shards", sharing one router).
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
mod session;
mod stats;

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
        info!(addr = %self.local_addr, "MQTT broker stopped");
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        self.cancel.cancel();
        // Dropping the engine tells its thread to stop.
        self.engine.take();
    }
}

impl std::fmt::Debug for RunningBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningBroker").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// Starts the broker on the caller's tokio runtime (the engine gets a thread of its
/// own). Returns once both the public listener and the engine are ready.
pub async fn start(config: BrokerConfig, auth: Arc<dyn Authenticator>) -> Result<RunningBroker, BrokerError> {
    config.validate()?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| BrokerError::Bind { addr: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| BrokerError::Bind { addr: config.listen, source })?;
    let engine = engine::start(&config).await?;

    let counters = Arc::new(Counters::default());
    let shared = Arc::new(frontdoor::Shared {
        topics: Arc::new(config.topics.clone()),
        auth,
        counters: counters.clone(),
        engine_shards: engine
            .addrs()
            .iter()
            .map(|&addr| frontdoor::EngineShard { addr, gate: Arc::new(Semaphore::new(frontdoor::ENGINE_HANDSHAKES)) })
            .collect(),
        engine_login: engine.login().clone(),
        max_packet_bytes: config.max_packet_bytes,
        connect_timeout: config.connect_timeout,
        slots: Arc::new(Semaphore::new(config.max_connections.min(Semaphore::MAX_PERMITS))),
    });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(frontdoor::accept_loop(listener, shared, cancel.clone(), tracker.clone()));
    info!(
        addr = %local_addr,
        prefix = config.topics.prefix(),
        max_connections = config.max_connections,
        max_packet_bytes = config.max_packet_bytes,
        "MQTT broker listening"
    );
    Ok(RunningBroker { local_addr, counters, cancel, tracker, engine: Some(engine) })
}
