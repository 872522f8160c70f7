//! What the core tells a shell to do.
//!
//! One `handle` call returns a list of [`Action`]s that the shell performs in order. The
//! order carries the durability rules: a [`Action::Persist`] must be applied, atomically
//! and durably, before anything after it is performed, so an envelope is stored before
//! its delivery is acknowledged and an event is stored before it is published.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use fleet_schemas::chunk::ChunkError;
use fleet_schemas::{ExecutionKey, JobSpec, Rejection};

use crate::input::DeliveryToken;
use crate::store::StoreOp;

/// MQTT quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoS {
    /// At most once.
    AtMostOnce,
    /// At least once (PUBACK).
    AtLeastOnce,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The topic name.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Its QoS.
    pub qos: QoS,
    /// Whether the broker keeps it as the topic's retained message.
    pub retain: bool,
}

/// One thing for the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Apply these store operations atomically and durably, in order, before performing
    /// any later action.
    Persist(Vec<StoreOp>),
    /// Publish a message. Only returned while the link is up.
    Publish(Publish),
    /// Acknowledge (PUBACK) a delivery.
    AckDelivery(DeliveryToken),
    /// Start an execution. For a `ModuleSource::Chunked` module the shell loads the
    /// bytes it stored under the module's hash and must check them with
    /// `fleet_schemas::chunk::module_matches` first; on mismatch it reports
    /// [`Input::ModuleLost`](crate::Input::ModuleLost) and a failed outcome.
    Run {
        /// The execution.
        key: ExecutionKey,
        /// What to run.
        job: Box<JobSpec>,
    },
    /// Stop a running execution (it was canceled). The shell reports
    /// [`Input::ExecutionFinished`](crate::Input::ExecutionFinished) once it has stopped;
    /// until then the execution keeps its slot.
    Stop {
        /// The execution.
        key: ExecutionKey,
    },
    /// Subscribe to a topic.
    Subscribe {
        /// The topic filter.
        topic: String,
        /// Its QoS.
        qos: QoS,
    },
    /// Unsubscribe from a topic.
    Unsubscribe {
        /// The topic filter.
        topic: String,
    },
    /// Something worth a log line; no action needed.
    Notice(Notice),
}

/// Why the core ignored or refused something, for the shell's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A message on a topic this agent does not read.
    IgnoredTopic,
    /// An envelope was refused (a `Rejected` event reports it, unless
    /// [`Notice::RejectionNotReported`] follows).
    EnvelopeRejected(Rejection),
    /// The outbox is over its soft limit, so the rejection of an unauthenticated
    /// envelope was not stored as an event (bounds what garbage can cost).
    RejectionNotReported,
    /// An event acknowledgement failed verification.
    AckRefused(Rejection),
    /// A key rotation failed verification.
    RotationRefused(Rejection),
    /// A key rotation was applied.
    RotationApplied {
        /// Its sequence number.
        rotation_seq: u64,
    },
    /// A module chunk was refused.
    ChunkRefused(ChunkError),
    /// A chunk arrived for a module not being fetched, or its topic and content disagree.
    UnexpectedChunk,
    /// A finished execution the core was not running.
    UnknownExecution(ExecutionKey),
    /// An event could not be encoded and was not stored (should not happen).
    EventNotEncoded,
    /// An envelope arrived while the store is new and not yet synced: dropped (the
    /// controller signs every execution still in flight again after the grant).
    EnvelopeBeforeSync,
    /// A sync request went out: the store is new, nothing runs until the grant.
    SyncRequested,
    /// The controller's sync grant was applied: the store is synced.
    Synced {
        /// Envelopes at or below this seq are refused from now on.
        replay_floor: u64,
        /// Events are numbered from here + 1.
        event_base: u64,
    },
    /// A sync grant failed verification.
    SyncRefused(Rejection),
    /// A sync grant for another incarnation of this device's store (an old one, or one
    /// answering a request this store did not make): ignored.
    SyncForAnotherIncarnation,
}
