//! The errors `start` can return: each one a thing the caller can act on.

use std::net::SocketAddr;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The public address could not be bound (in use, no permission, not local).
    #[error("cannot listen on {addr}: {source} (is another broker running, or is the port privileged?)")]
    Bind {
        /// The address in [`crate::BrokerConfig::listen`].
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value the broker cannot honour.
    #[error("invalid broker configuration: {0}")]
    InvalidConfig(String),
    /// The embedded engine (rumqttd) did not start.
    #[error("the embedded MQTT engine did not start: {0}")]
    Engine(String),
}
