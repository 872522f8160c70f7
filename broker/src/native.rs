//! The native engine's shared state: the [`Router`] and a queue to each connection.
//!
//! Every connection task calls the router through [`Hub::run`] under one lock, and what
//! the router returns is put on the connections' queues before the lock is released, so
//! the packets for one connection leave in the order the router decided them. The
//! queues are unbounded: QoS 1 traffic is bounded by each session's window
//! ([`crate::router::MAX_INFLIGHT`]), and a connection's writer drains its queue
//! into one socket write per wake-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use rumqttd::protocol::Packet;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::router::{ConnId, Out, Outbox, Router};

/// What a connection's writer sends: the engine's packets, or the front door's own
/// answers (a SUBACK for a SUBSCRIBE the ACL refused whole).
#[derive(Debug)]
pub(crate) enum Outgoing {
    Engine(Out),
    Front(Box<Packet>),
}

/// The router and the connections' queues.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    router: Mutex<Router>,
    links: Mutex<HashMap<ConnId, UnboundedSender<Outgoing>>>,
    next: AtomicU64,
}

impl Hub {
    /// A new connection: its id, its queue's receiving end and a sender for its own
    /// answers.
    pub fn open(&self) -> (ConnId, UnboundedReceiver<Outgoing>, UnboundedSender<Outgoing>) {
        let conn = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = unbounded_channel();
        self.links.lock().unwrap_or_else(PoisonError::into_inner).insert(conn, tx.clone());
        (conn, rx, tx)
    }

    /// The connection has ended: nothing more is queued for it.
    pub fn close(&self, conn: ConnId) {
        self.links.lock().unwrap_or_else(PoisonError::into_inner).remove(&conn);
    }

    /// Runs `f` on the router and queues what it returns, in order.
    pub fn run(&self, f: impl FnOnce(&mut Router) -> Outbox) {
        // A panic mid-update would leave the router as valid as any other moment: every
        // change is to owned maps, one entry at a time.
        let mut router = self.router.lock().unwrap_or_else(PoisonError::into_inner);
        let outbox = f(&mut router);
        if outbox.is_empty() {
            return;
        }
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        for (conn, packet) in outbox {
            if let Some(link) = links.get(&conn) {
                let _ = link.send(Outgoing::Engine(packet));
            }
        }
        drop(links);
        drop(router);
    }
}
