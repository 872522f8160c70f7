//! What a shell tells the core.
//!
//! Everything that happens to a device reaches the core as one [`Input`], together with
//! the time ([`Now`]): the core never reads a clock itself, so it behaves the same in a
//! test, on a gateway and on a microcontroller without a real-time clock.

use alloc::string::String;

use fleet_schemas::{Digest, ExecutionKey, FailReason, RunReport};

/// The time, as the shell knows it.
///
/// Two clocks, because they answer different questions: the monotonic one times resends
/// and debounces (it only has to move forward, and may restart from zero at boot), the
/// Unix one judges envelope validity and stamps events (a microcontroller without a
/// trusted clock passes `None`, and validity is then judged against the latest signed
/// time the device has seen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds since an arbitrary start (boot, typically). Never goes backwards.
    pub monotonic_ms: u64,
    /// Trusted Unix time in seconds, if the device has one.
    pub unix_secs: Option<u64>,
}

impl Now {
    /// A time with both clocks.
    pub const fn new(monotonic_ms: u64, unix_secs: Option<u64>) -> Self {
        Self { monotonic_ms, unix_secs }
    }
}

/// Names one MQTT delivery so that the shell can acknowledge it (PUBACK) when the core
/// says so. The core never interprets it; the shell picks what it means (a packet id, an
/// index into its own table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryToken(pub u64);

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// The MQTT connection is up (CONNACK received). The core subscribes, publishes its
    /// status and republishes unacknowledged events.
    LinkUp,
    /// The MQTT connection is gone. Nothing is published until the next `LinkUp`.
    LinkDown,
    /// An MQTT message arrived. The core answers every message with exactly one
    /// [`Action::AckDelivery`](crate::Action::AckDelivery) of its token, placed after
    /// any persist the message caused.
    Message {
        /// The topic name.
        topic: &'a str,
        /// The payload.
        payload: &'a [u8],
        /// The token to acknowledge it with.
        delivery: DeliveryToken,
    },
    /// An execution the core asked for with [`Action::Run`](crate::Action::Run) ended,
    /// or one it asked to stop has stopped.
    ExecutionFinished {
        /// The execution.
        key: ExecutionKey,
        /// How it ended.
        outcome: Outcome,
    },
    /// The shell no longer has this module (evicted, or it failed
    /// `fleet_schemas::chunk::module_matches` when loaded): the core fetches it again
    /// for the executions that still need it.
    ModuleLost {
        /// The module's hash.
        hash: Digest,
    },
    /// Periodic wake-up (every second or so): resends, status refresh, fetch retries.
    Tick,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned.
    Succeeded(RunReport),
    /// It failed.
    Failed {
        /// Why, as a type.
        reason: FailReason,
        /// Why, in words.
        message: String,
        /// What it produced before failing.
        report: RunReport,
    },
}
