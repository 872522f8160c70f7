//! The agent core's invariants, one file per concern, all in one test binary (one link).
//!
//! | file | invariant |
//! |---|---|
//! | `admission` | 1, 3: only verified envelopes run; rejections are reported; redeliveries are harmless |
//! | `durability` | 2: stored before acked, stored before published, deleted only on a verified ack |
//! | `queue` | 4: FIFO, concurrency, started/terminal events, cancel |
//! | `recovery` | 5: rebuild from the store; a crash after every action loses nothing and doubles nothing |
//! | `link` | 6: nothing published while down; status and outbox on link up; window and resend |
//! | `rotation` | 7: verified rotations persisted, then used |
//! | `chunks` | 8: chunked modules fetched, persisted, resumed, not fetched twice |
//! | `hostile` | 9: arbitrary input never panics and never breaks the invariants (proptest) |
//! | `resync` | 10: a new store runs nothing until the controller's grant; then old envelopes are replays and events are numbered past the old ones |
#![allow(clippy::unwrap_used)]

mod admission;
mod chunks;
mod durability;
mod hostile;
mod link;
mod queue;
mod recovery;
mod resync;
mod rotation;
mod support;
