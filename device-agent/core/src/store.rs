//! The agent's durable state, as operations to apply and a snapshot to recover from.
//!
//! The core never touches storage: it says what to write as [`StoreOp`]s, grouped in
//! batches ([`Action::Persist`](crate::Action::Persist)) that the shell applies
//! atomically, and it is rebuilt at start from a [`Recovered`] snapshot the shell reads
//! back. The operations are deliberately dumb (put, remove, set) so that a SQLite shell
//! maps each to a statement in one transaction and a flash shell to a log record; all
//! types are `serde` so either can encode them with postcard.
//!
//! The logical tables:
//!
//! | table | key | written by |
//! |---|---|---|
//! | executions | [`ExecutionKey`] | [`StoreOp::PutExecution`], [`StoreOp::MarkStarted`], [`StoreOp::RemoveExecution`] |
//! | replay state | (one row) | [`StoreOp::SetReplay`] |
//! | history | envelope seq | [`StoreOp::Remember`], [`StoreOp::Forget`] |
//! | keys | (one row) | [`StoreOp::SetKeys`] |
//! | outbox | event seq | [`StoreOp::PutEvent`], [`StoreOp::AckEvents`] |
//! | acked-through | (one row) | [`StoreOp::AckEvents`] |
//! | modules | module hash | [`StoreOp::SetAssembly`], [`StoreOp::WriteChunk`], [`StoreOp::ModuleComplete`], [`StoreOp::DiscardModule`] |
//! | incarnation | (one row) | [`StoreOp::SetIncarnation`] |
//!
//! A store without an incarnation is new (a device's first start, or a store that came
//! back empty): the core runs nothing until the controller's sync grant has told it
//! where it stands, and then stores the incarnation (`fleet_schemas::sync`).

use alloc::vec::Vec;

use fleet_schemas::{ChunkAssembler, Digest, ExecutionKey, Incarnation, JobId, JobSpec, ReplayState, TrustedKey};
use serde::{Deserialize, Serialize};

/// One write to the store. A batch of them is applied atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreOp {
    /// Insert (or replace) a queued execution.
    PutExecution(StoredExecution),
    /// Set `started` on a stored execution (no-op if it is not stored).
    MarkStarted(ExecutionKey),
    /// Remove an execution (no-op if it is not stored).
    RemoveExecution(ExecutionKey),
    /// Replace the replay state.
    SetReplay(ReplayState),
    /// Insert a history entry.
    Remember(HistoryEntry),
    /// Remove the history entry of this envelope seq.
    Forget {
        /// The envelope seq.
        seq: u64,
    },
    /// Replace the trusted key set.
    SetKeys(StoredKeys),
    /// Insert an event into the outbox.
    PutEvent(OutboxEvent),
    /// Delete every outbox event with `seq <= through_seq`, and set acked-through to
    /// `through_seq` (the core only ever raises it).
    AckEvents {
        /// The controller's cumulative ack.
        through_seq: u64,
    },
    /// Replace the assembly state of a partly fetched module.
    SetAssembly(ChunkAssembler),
    /// Write chunk bytes at `offset` in the partly fetched module `module`. Idempotent:
    /// the same chunk may be written again after a crash.
    WriteChunk {
        /// The module hash.
        module: Digest,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The module `hash` is complete: drop its assembly state and keep its bytes as a
    /// module the shell can load (and report in [`Recovered::modules`]).
    ModuleComplete(Digest),
    /// Drop a module, complete or partial, with its assembly state.
    DiscardModule(Digest),
    /// The store's incarnation: set once, when the controller's sync grant has been
    /// applied (or, for a store written before incarnations, at its first start). Last
    /// of the variants, so that journals written before it decode as they did.
    SetIncarnation(Incarnation),
}

/// A queued (or running) execution as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredExecution {
    /// The seq of the envelope that carried it. Seqs rise with acceptance, so they give
    /// the queue its FIFO order.
    pub seq: u64,
    /// The execution.
    pub key: ExecutionKey,
    /// The job.
    pub job: JobSpec,
    /// Whether its `Started` event was written (it is not written twice).
    pub started: bool,
}

/// What an envelope the device has dealt with asked for, remembered (a bounded number,
/// most recent first kept) so that a QoS 1 redelivery is recognised and an execution key
/// never runs twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The envelope seq.
    pub seq: u64,
    /// What it asked.
    pub order: SeenOrder,
}

/// The gist of an envelope's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeenOrder {
    /// Run this execution (finished, canceled or refused by now).
    Run(ExecutionKey),
    /// Cancel this job.
    Cancel(JobId),
}

/// The trusted job-signing keys installed by the latest rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKeys {
    /// The rotation's seq.
    pub rotation_seq: u64,
    /// The keys.
    pub keys: Vec<TrustedKey>,
}

/// A signed event waiting for the controller's ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// The device event seq.
    pub seq: u64,
    /// The signed wire bytes, published as they are.
    pub bytes: Vec<u8>,
}

/// Everything the store holds, read back at start. `Recovered::default()` is a device
/// that has never run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The replay state.
    pub replay: ReplayState,
    /// The keys of the latest rotation, or `None` to use the provisioned ones.
    pub keys: Option<StoredKeys>,
    /// Queued and interrupted executions (any order).
    pub executions: Vec<StoredExecution>,
    /// The history entries (any order).
    pub history: Vec<HistoryEntry>,
    /// The outbox (any order).
    pub outbox: Vec<OutboxEvent>,
    /// The highest event seq the controller acknowledged (0 if none).
    pub acked_through: u64,
    /// Assembly states of partly fetched modules.
    pub assemblies: Vec<ChunkAssembler>,
    /// Hashes of the complete modules the shell has (fetched, or cached by other means).
    pub modules: Vec<Digest>,
    /// The store's incarnation; `None` for a new store.
    pub incarnation: Option<Incarnation>,
}

impl Recovered {
    /// Whether the store holds anything the core wrote (a store written before
    /// incarnations existed has state but no incarnation; a new store has neither).
    pub fn has_state(&self) -> bool {
        self.replay != ReplayState::default()
            || self.keys.is_some()
            || !self.executions.is_empty()
            || !self.history.is_empty()
            || !self.outbox.is_empty()
            || self.acked_through > 0
            || !self.assemblies.is_empty()
            || !self.modules.is_empty()
    }
}
