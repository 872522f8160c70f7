//! Time and cancellation, as seen by an execution.
//!
//! Why a trait for the clock: the microcontroller build has no `std::time`, and the
//! firmware knows its own timer. Without a clock the wasmi backend still bounds every
//! job by fuel; with one it also enforces `timeout_ms` and fills in `duration_ms`.
//! Wasmtime always uses the standard clock.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

/// A monotonic millisecond clock. `Send`, so an executor that holds one can move to
/// another thread (an async task that runs jobs, a worker pool), and `Sync`, so the
/// executor can share it with a running WASI job's clocks.
pub trait Clock: Send + Sync {
    /// Milliseconds since an arbitrary start; never goes backwards.
    fn now_ms(&self) -> u64;
}

/// [`Clock`] over `std::time::Instant`.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    start: std::time::Instant,
}

#[cfg(feature = "std")]
impl StdClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self { start: std::time::Instant::now() }
    }
}

#[cfg(feature = "std")]
impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "std")]
impl Clock for StdClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Asks a running job to stop (the agent core's `Action::Stop`, when a job is canceled).
///
/// Clone it, put one clone in the [`Job`](crate::Job), keep the other, and call
/// [`StopSignal::stop`] from any thread. Wasmtime notices within one epoch tick,
/// wasmi at the end of the current fuel slice. The job then fails with
/// `FailReason::Timeout` and the message "stopped by the agent"; the core records
/// the cancellation itself and ignores that outcome.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the signal.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the signal was raised.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
