//! # fleet-agent-core: the device agent's decisions, without I/O
//!
//! Every fleet device runs the same agent logic: verify signed envelopes, queue them
//! durably, run them one by one, report signed events until the controller has them,
//! follow key rotations and fetch large modules chunk by chunk. The Linux agent
//! (`fleet-agent`: rumqttc, SQLite, wasmtime) and the microcontroller firmware (UART
//! MQTT, flash, wasmi) differ only in how they move bytes, store state and run Wasm, so
//! that logic lives here once, as a sans-IO state machine in the style of `quinn-proto`:
//!
//! ```text
//!   shell ──Input──▶ AgentCore::handle(input, now) ──Vec<Action>──▶ shell performs, in order
//!   (link up/down, MQTT message, execution finished, tick)   (persist, publish, ack, run, stop, subscribe)
//! ```
//!
//! The core reads no clock, opens no socket, spawns nothing and touches no storage: it
//! is `#![no_std]` + `alloc`, deterministic, and every rule it keeps is tested with
//! plain function calls.
//!
//! | module | what |
//! |---|---|
//! | [`input`] | what the shell tells the core: [`Input`], [`Now`], [`Outcome`] |
//! | [`action`] | what the core tells the shell to do: [`Action`], [`Publish`], [`Notice`] |
//! | [`store`] | the durable state: [`StoreOp`]s to apply atomically, [`Recovered`] to rebuild from |
//! | [`config`] | the device's identity, keys, capabilities and tuning |
//! | `agent` | [`AgentCore`]: routes inputs and keeps the invariants below |
//! | `admission` | envelope verification, redelivery detection and requirement checks |
//! | `queue`, `history`, `outbox`, `fetch`, `status`, `event` | one piece of state each |
//!
//! ## The contract with a shell
//!
//! * Perform the actions of one `handle` call in the order returned.
//! * Apply each [`Action::Persist`] batch atomically and durably before performing any
//!   later action. This is what makes "stored before acknowledged" and "stored before
//!   published" true.
//! * On start, rebuild the core with [`AgentCore::new`] from what the store holds
//!   ([`Recovered`]), then feed [`Input::Tick`] (it restarts interrupted executions).
//! * Execution is at least once, the terminal event exactly once: an execution that was
//!   running when the device lost power runs again after restart, but its terminal
//!   event is written in the same atomic batch that removes it from the queue, so it is
//!   never reported twice.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod action;
mod admission;
mod agent;
pub mod config;
mod error;
mod event;
mod fetch;
mod history;
pub mod input;
mod outbox;
mod queue;
mod status;
pub mod store;

/// A map or set built by inserting `items` one by one (`Extend`), last wins, as
/// `collect()` would.
///
/// Not `collect()`: `BTreeMap`'s and `BTreeSet`'s `FromIterator` sort the items first,
/// and each collection type it is used for brings its own copy of the standard
/// library's stable sort, about 3 KB of microcontroller flash apiece (five of them were
/// 15 KB of the agent image). What a device recovers is small (a queue of two, a
/// history of 16), and inserting reuses the code the collection's later updates need
/// anyway.
pub(crate) fn by_insertion<C: Default + Extend<T>, T>(items: impl IntoIterator<Item = T>) -> C {
    let mut collection = C::default();
    collection.extend(items);
    collection
}

pub use action::{Action, Notice, Publish, QoS};
pub use agent::AgentCore;
pub use config::{AgentConfig, Capabilities, Tuning};
pub use error::RecoverError;
pub use input::{DeliveryToken, Input, Now, Outcome};
pub use store::{HistoryEntry, OutboxEvent, Recovered, SeenOrder, StoreOp, StoredExecution, StoredKeys};
