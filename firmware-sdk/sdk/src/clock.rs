//! Time, as the firmware needs it.
//!
//! The agent needs a monotonic clock for keep-alives, timeouts and retries, and would
//! like a wall clock to judge an envelope's validity window; most microcontrollers
//! have the first and not the second. [`Clock::unix_time`] therefore may say `None`,
//! and verification then falls back on the replay state's time floor (see
//! `fleet_schemas::verify_envelope`).

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

/// A monotonic millisecond clock, and a wall clock if the board has a trusted one.
pub trait Clock {
    /// Milliseconds since boot; never goes backwards.
    fn now_ms(&self) -> u64;

    /// Trusted Unix time in seconds, if the board has it (an RTC set by a trusted
    /// source). `None` by default.
    fn unix_time(&self) -> Option<u64> {
        None
    }
}

/// A future that is ready once `clock` reaches `deadline_ms`.
///
/// It polls the clock instead of arming a timer interrupt: the SDK's executor
/// ([`crate::exec`]) polls continuously anyway, and a board needs no interrupt wiring.
pub fn sleep_until<C: Clock>(clock: &C, deadline_ms: u64) -> SleepUntil<'_, C> {
    SleepUntil { clock, deadline_ms }
}

/// The future of [`sleep_until`].
#[derive(Debug)]
pub struct SleepUntil<'a, C> {
    clock: &'a C,
    deadline_ms: u64,
}

impl<C: Clock> Future for SleepUntil<'_, C> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.clock.now_ms() >= self.deadline_ms {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
