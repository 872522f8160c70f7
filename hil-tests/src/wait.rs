//! Waiting for the fleet to reach a state, with a hang guard.
//!
//! Why poll instead of sleeping: a test that sleeps "long enough" is slow on a fast
//! machine and flaky on a loaded one (CI shares two cores between several builds). The
//! scenarios therefore never assert that something happened *within* a time: they wait
//! until it has happened, checking often, and the timeout is only a guard against a hang,
//! set generously. When it fires, the error carries the last state seen, which is the
//! first thing one wants when reading a red run.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};

/// How often [`until`] checks.
pub const POLL: Duration = Duration::from_millis(250);

/// Calls `check` every [`POLL`] until it returns `Ok(Some(value))`, or fails with
/// [`HarnessError::Timeout`] after `guard`, reporting the last `Ok(None)` state seen via
/// `last`. An `Err` from `check` ends the wait at once.
pub fn until<T, S: Debug>(what: &str, guard: Duration, mut check: impl FnMut() -> Result<Result<T, S>>) -> Result<T> {
    let start = Instant::now();
    loop {
        let last = match check()? {
            Ok(value) => return Ok(value),
            Err(state) => state,
        };
        if start.elapsed() >= guard {
            return Err(HarnessError::Timeout { what: what.to_string(), after: guard, last: format!("{last:?}") });
        }
        std::thread::sleep(POLL);
    }
}

/// Like [`until`] for a plain condition.
pub fn until_true(what: &str, guard: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    until(what, guard, || Ok(if check() { Ok(()) } else { Err("not yet") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_check_passes() {
        let mut calls = 0;
        let value = until("three calls", Duration::from_secs(10), || {
            calls += 1;
            Ok(if calls >= 3 { Ok(calls) } else { Err(calls) })
        });
        assert_eq!(value.ok(), Some(3));
    }

    #[test]
    fn a_hang_guard_reports_the_last_state() {
        let error = until::<(), _>("never", Duration::from_millis(1), || Ok(Err("still waiting")));
        let message = error.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("never") && message.contains("still waiting"), "{message}");
    }
}
