//! Log lines that hostile input cannot inflate.
//!
//! Why: anyone who can open a socket can make the broker log, before they have
//! authenticated anything. A CONNECT may carry a 65,535-byte client id, and a flood of
//! refused CONNECTs writes one line each; logged as they come, 300 attempts grew a log
//! by 40 MB in a fifth of a second. So two rules, for every line about a client:
//!
//! - **Bounded fields.** Strings from the client (client ids, usernames, topics,
//!   filters) go through [`Bounded`], which prints at most [`MAX_LOGGED_CHARS`]
//!   characters, escaped, and says how long the rest was.
//! - **Rate-limited kinds.** Each kind of line (refusals, protocol violations, accept
//!   errors) passes a [`LogGate`]: at most [`LINES_PER_WINDOW`] per [`WINDOW`], then
//!   silence, and the next line that passes says how many were held back.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most characters of one client-supplied string that reach the log.
pub const MAX_LOGGED_CHARS: usize = 64;
/// Lines of one kind let through per [`WINDOW`].
pub(crate) const LINES_PER_WINDOW: u32 = 20;
/// The window of a [`LogGate`].
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// A client-supplied string as a log field: at most [`MAX_LOGGED_CHARS`] characters,
/// control characters escaped, and the length of what was cut.
#[derive(Clone, Copy)]
pub struct Bounded<'a>(pub &'a str);

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.0.chars().enumerate() {
            if shown == MAX_LOGGED_CHARS {
                return write!(f, "...({} bytes in all)", self.0.len());
            }
            write!(f, "{}", c.escape_debug())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Lets through at most [`LINES_PER_WINDOW`] lines of one kind per [`WINDOW`].
#[derive(Debug)]
pub(crate) struct LogGate {
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    window_start: Instant,
    passed: u32,
    held_back: u64,
}

impl Default for LogGate {
    fn default() -> Self {
        Self { state: Mutex::new(GateState { window_start: Instant::now(), passed: 0, held_back: 0 }) }
    }
}

impl LogGate {
    /// Whether a line may be written now: `Some(n)` with the number of lines held back
    /// since the last one that passed, `None` to stay silent.
    pub fn pass(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(state.window_start) >= WINDOW {
            state.window_start = now;
            state.passed = 0;
        }
        if state.passed >= LINES_PER_WINDOW {
            state.held_back += 1;
            return None;
        }
        state.passed += 1;
        Some(std::mem::take(&mut state.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut_and_say_how_long_they_were() {
        let long = "x".repeat(65_535);
        let shown = Bounded(&long).to_string();
        assert_eq!(shown, format!("{}...(65535 bytes in all)", "x".repeat(MAX_LOGGED_CHARS)));
        assert_eq!(Bounded("gw-1").to_string(), "gw-1");
        assert_eq!(Bounded("a\nb\u{1b}[2J").to_string(), "a\\nb\\u{1b}[2J");
    }

    #[test]
    fn a_gate_passes_its_quota_then_counts_what_it_held_back() {
        let gate = LogGate::default();
        let t0 = Instant::now();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(gate.pass(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(gate.pass(t0), None);
        }
        assert_eq!(gate.pass(t0 + WINDOW), Some(1000));
        assert_eq!(gate.pass(t0 + WINDOW), Some(0));
    }
}
