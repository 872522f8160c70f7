//! What an operator (or a test) can tune, with defaults sized for a fleet.
//!
//! Why these knobs and no more: each one bounds a resource a hostile or broken client
//! could otherwise take (memory per packet, sockets, time before CONNECT). Everything
//! else the engine needs is derived from them in [`crate::engine`].

use std::net::SocketAddr;
use std::time::Duration;

use fleet_schemas::Topics;

use crate::error::BrokerError;

/// Default largest MQTT packet body accepted from a client: 256 KiB.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 256 * 1024;
/// Default number of client connections held at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
/// Default number of engine servers (see [`BrokerConfig::engine_shards`]).
pub const DEFAULT_ENGINE_SHARDS: usize = 8;
/// Default number of unauthenticated connections one address may hold at once.
pub const DEFAULT_MAX_PENDING_PER_ADDRESS: usize = 128;
/// Default time a client has, after the TCP handshake, to send its CONNECT.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which engine routes messages behind the front door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// The broker's own (`router`), in-process: one socket per client, routing that
    /// does not grow with the fleet. The default.
    #[default]
    Native,
    /// rumqttd on loopback ports: three sockets per client in this process.
    Rumqttd,
}

/// The broker's configuration. Build it with [`BrokerConfig::new`] and change fields.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where clients connect (e.g. `0.0.0.0:1883`; port 0 picks a free port, see
    /// [`crate::RunningBroker::local_addr`]).
    pub listen: SocketAddr,
    /// The fleet's topic names; the ACL is expressed in them.
    pub topics: Topics,
    /// Largest MQTT packet body (the "remaining length") accepted from a client. A
    /// larger packet closes that connection before its body is buffered.
    pub max_packet_bytes: usize,
    /// Most client connections held at once; past it a connection is answered CONNACK
    /// "server unavailable" and closed. Each connection holds one socket in this process
    /// (three with the rumqttd engine), so [`crate::start`] lowers this to what the
    /// open-file limit (`ulimit -n`) allows, less a reserve for the process's other
    /// files ([`crate::RunningBroker::max_connections`] says what it settled on).
    pub max_connections: usize,
    /// Most connections one address may hold before their CONNECT is admitted (see
    /// `gate.rs`): one client's idle sockets cannot take every slot.
    pub max_pending_per_address: usize,
    /// Time a client has to send CONNECT after connecting.
    pub connect_timeout: Duration,
    /// With the rumqttd engine: its servers (each a thread and a loopback port) sharing one router. One
    /// admits a few hundred connections a second; more shards admit a reconnecting
    /// fleet faster. A client id always lands on the same shard.
    pub engine_shards: usize,
    /// Which engine routes messages.
    pub engine: EngineKind,
    /// A second listener that speaks MQTT over TLS (the same front door behind it).
    pub tls: Option<TlsListener>,
}

/// Where MQTT over TLS is served, and with which certificate.
#[derive(Clone)]
pub struct TlsListener {
    /// The address (8883 by convention; port 0 picks a free one).
    pub listen: SocketAddr,
    /// The server's rustls configuration (certificate chain and key).
    pub config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener").field("listen", &self.listen).finish_non_exhaustive()
    }
}

impl BrokerConfig {
    /// A configuration listening on `listen`, with the default prefix (`fleet`) and limits.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            topics: Topics::default(),
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending_per_address: DEFAULT_MAX_PENDING_PER_ADDRESS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            engine_shards: DEFAULT_ENGINE_SHARDS,
            engine: EngineKind::default(),
            tls: None,
        }
    }

    /// Refuses values the broker cannot honour.
    pub(crate) fn validate(&self) -> Result<(), BrokerError> {
        // MQTT's remaining length tops out at 256 MiB - 1; leave room for the engine's slack.
        const MAX_PACKET_CEILING: usize = 128 * 1024 * 1024;
        if self.max_packet_bytes < 1024 || self.max_packet_bytes > MAX_PACKET_CEILING {
            return Err(BrokerError::InvalidConfig(format!(
                "max_packet_bytes must be between 1 KiB and {MAX_PACKET_CEILING} bytes, got {}",
                self.max_packet_bytes
            )));
        }
        if self.max_connections == 0 {
            return Err(BrokerError::InvalidConfig("max_connections must be at least 1".into()));
        }
        if self.max_pending_per_address == 0 {
            return Err(BrokerError::InvalidConfig("max_pending_per_address must be at least 1".into()));
        }
        if self.engine_shards == 0 || self.engine_shards > 256 {
            return Err(BrokerError::InvalidConfig(format!(
                "engine_shards must be between 1 and 256, got {}",
                self.engine_shards
            )));
        }
        if self.connect_timeout.is_zero() {
            return Err(BrokerError::InvalidConfig("connect_timeout must be more than zero".into()));
        }
        Ok(())
    }
}
