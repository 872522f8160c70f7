//! How an execution ended, in the protocol's terms.
//!
//! Each backend translates its runtime's errors into an [`Ending`] (that part is
//! runtime-specific); turning an ending into `Ok(RunReport)` or a [`Failure`] with a
//! `FailReason` is done here, once, so both runtimes report the same job the same way:
//!
//! | ending | reported as |
//! |---|---|
//! | entry returned 0 | `Ok(report)` |
//! | entry returned N ≠ 0 | `Trap`, "job returned N" |
//! | fuel exhausted | `OutOfFuel` |
//! | wall clock passed / stop signal | `Timeout` |
//! | any trap or nonzero return after a refused memory growth | `OutOfMemory` |
//! | stack overflow, bad host-call pointer, other trap | `Trap`, with the trap message |
//! | invalid module, foreign import, no `memory`, no or mistyped entry | `Unsupported` |

use alloc::format;
use alloc::string::String;

use fleet_schemas::{FailReason, RunReport};

use crate::abi::Host;

/// What [`run`](crate::WasmtimeExecutor::run) returns.
pub type RunResult = Result<RunReport, Failure>;

/// A failed execution: why, in words, and what it produced before failing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job failed ({reason:?}): {message}")]
pub struct Failure {
    /// Why, as the protocol says it.
    pub reason: FailReason,
    /// Why, in words (the trap message, for example).
    pub message: String,
    /// Output, logs and fuel up to the failure.
    pub report: RunReport,
}

/// How an execution ended, before it is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The entry returned this value.
    Returned(i32),
    /// The fuel budget ran out.
    OutOfFuel,
    /// The wall-clock bound passed.
    Timeout(u32),
    /// The stop signal was raised.
    Stopped,
    /// A WASI command ended (returned from `_start`: 0, or `proc_exit(code)`).
    #[cfg(feature = "wasi")]
    Exited(i32),
    /// The module could not be set up (see the table above).
    Unsupported(String),
    /// Memory for the module could not be had (the runtime said so directly).
    OutOfMemory(String),
    /// Any trap, with its message.
    Trap(String),
}

/// Turns an ending into the execution's result.
pub(crate) fn conclude(
    host: Host,
    ending: Ending,
    memory_refused: Option<u32>,
    fuel_used: u64,
    duration_ms: u32,
) -> RunResult {
    let mut host = host;
    if let Some(pages) = memory_refused {
        host.note(format!("memory growth refused at the cap of {pages} pages"));
    }
    let (reason, message) = match ending {
        Ending::Returned(0) => return Ok(host.into_report(fuel_used, duration_ms)),
        Ending::Returned(code) => (FailReason::Trap, format!("job returned {code}")),
        #[cfg(feature = "wasi")]
        Ending::Exited(0) => return Ok(host.into_report(fuel_used, duration_ms)),
        #[cfg(feature = "wasi")]
        Ending::Exited(code) => (FailReason::Trap, format!("exited with code {code}")),
        Ending::OutOfFuel => (FailReason::OutOfFuel, format!("fuel budget of {fuel_used} exhausted")),
        Ending::Timeout(ms) => (FailReason::Timeout, format!("wall-clock bound of {ms} ms passed")),
        Ending::Stopped => (FailReason::Timeout, String::from("stopped by the agent")),
        Ending::Unsupported(message) => (FailReason::Unsupported, message),
        Ending::OutOfMemory(message) => (FailReason::OutOfMemory, message),
        Ending::Trap(message) => (FailReason::Trap, message),
    };
    let (reason, message) = match (reason, memory_refused) {
        (FailReason::Trap, Some(pages)) => {
            (FailReason::OutOfMemory, format!("memory cap of {pages} pages reached, then: {message}"))
        }
        (reason, _) => (reason, message),
    };
    Err(Failure { reason, message, report: host.into_report(fuel_used, duration_ms) })
}
