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
    /// CONNECTs refused with a CONNACK error code (credentials, client id, last-will,
    /// protocol version, capacity).
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
