//! Counters of what the front door refused, for `fleetctl` status and for tests.
//!
//! Why counters and not only logs: a test can assert that a message was *refused* (not
//! merely late), and an operator can watch a misbehaving fleet without grepping logs.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the broker's counters, all since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Client connections accepted at the TCP level.
    pub accepted_connections: u64,
    /// Client connections open now (TCP accepted and not yet closed).
    pub open_connections: u64,
    /// Connections answered with a CONNACK refusal (credentials, client id, last-will,
    /// protocol version; capacity or the address's share of unauthenticated
    /// connections, which are answered before their CONNECT is read).
    pub refused_connections: u64,
    /// PUBLISHes the ACL refused (each one also closed its connection).
    pub denied_publishes: u64,
    /// Topic filters the ACL refused in SUBSCRIBEs (one SUBSCRIBE can count several).
    pub denied_subscribes: u64,
    /// Connections closed because a client sent bytes that are not MQTT 3.1.1, a packet
    /// a client may not send, or no CONNECT in time.
    pub malformed_packets: u64,
    /// Connections closed because a client's packet was larger than
    /// [`crate::BrokerConfig::max_packet_bytes`].
    pub oversized_packets: u64,
    /// Connections closed at once because their address already held its share of
    /// unauthenticated connections ([`crate::BrokerConfig::max_pending_per_address`]).
    pub refused_per_address: u64,
    /// Connections closed at once because the broker held all it can.
    pub refused_at_capacity: u64,
    /// Unauthenticated connections closed to make room for newer ones.
    pub evicted_unauthenticated: u64,
    /// CONNECTs refused for their credentials, client id or last-will.
    pub failed_logins: u64,
    /// CONNECTs made to wait because their address failed to log in too often.
    pub slowed_logins: u64,
    /// TLS connections closed because their handshake failed or did not finish in time.
    pub tls_handshake_failures: u64,
}

impl BrokerStats {
    /// Every counter by name, for status documents and metrics.
    pub fn named(&self) -> [(&'static str, u64); 13] {
        [
            ("accepted_connections", self.accepted_connections),
            ("open_connections", self.open_connections),
            ("refused_connections", self.refused_connections),
            ("denied_publishes", self.denied_publishes),
            ("denied_subscribes", self.denied_subscribes),
            ("malformed_packets", self.malformed_packets),
            ("oversized_packets", self.oversized_packets),
            ("refused_per_address", self.refused_per_address),
            ("refused_at_capacity", self.refused_at_capacity),
            ("evicted_unauthenticated", self.evicted_unauthenticated),
            ("failed_logins", self.failed_logins),
            ("slowed_logins", self.slowed_logins),
            ("tls_handshake_failures", self.tls_handshake_failures),
        ]
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted_connections: AtomicU64,
    pub open_connections: AtomicU64,
    pub refused_connections: AtomicU64,
    pub denied_publishes: AtomicU64,
    pub denied_subscribes: AtomicU64,
    pub malformed_packets: AtomicU64,
    pub oversized_packets: AtomicU64,
    pub refused_per_address: AtomicU64,
    pub refused_at_capacity: AtomicU64,
    pub evicted_unauthenticated: AtomicU64,
    pub failed_logins: AtomicU64,
    pub slowed_logins: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> BrokerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerStats {
            accepted_connections: get(&self.accepted_connections),
            open_connections: get(&self.open_connections),
            refused_connections: get(&self.refused_connections),
            denied_publishes: get(&self.denied_publishes),
            denied_subscribes: get(&self.denied_subscribes),
            malformed_packets: get(&self.malformed_packets),
            oversized_packets: get(&self.oversized_packets),
            refused_per_address: get(&self.refused_per_address),
            refused_at_capacity: get(&self.refused_at_capacity),
            evicted_unauthenticated: get(&self.evicted_unauthenticated),
            failed_logins: get(&self.failed_logins),
            slowed_logins: get(&self.slowed_logins),
            tls_handshake_failures: get(&self.tls_handshake_failures),
        }
    }
}

/// Decrements `open_connections` when a connection task ends, however it ends.
pub(crate) struct OpenGuard<'a>(pub &'a Counters);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}
