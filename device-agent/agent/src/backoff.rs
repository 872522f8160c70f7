//! Reconnect delays: exponential, capped, with jitter.
//!
//! Why jitter: when a broker restarts, every device of a site loses its link at the same
//! moment; without jitter they would all reconnect in lockstep and hit the broker in
//! waves. Each delay is drawn uniformly from the upper half of the current exponential
//! step ("equal jitter"), so it still grows fast but no two devices stay in phase. The
//! cap (5 s by default) keeps a device that lost its link briefly from sleeping long.

use std::time::Duration;

/// The bounds of the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first step.
    pub min: Duration,
    /// The largest step.
    pub max: Duration,
}

/// The delay before each reconnect attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// A backoff at its first step.
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, failures: 0, rng: fastrand::Rng::new() }
    }

    /// The delay before the next attempt; each call after a failure doubles the step up
    /// to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let max = self.config.max.max(self.config.min);
        let step = self.config.min.saturating_mul(1u32 << self.failures.min(20)).min(max);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        let jitter_ms = u64::try_from((step - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(self.rng.u64(0..=jitter_ms))
    }

    /// The link is up: the next failure starts from the first step again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig { min: Duration::from_millis(100), max: Duration::from_secs(5) }
    }

    #[test]
    fn grows_to_the_cap_and_never_past_it() {
        let mut backoff = Backoff::new(config());
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let delays: Vec<Duration> = (0..40).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        // Far along, every step is the cap: the delay lies in its upper half.
        assert!(delays[30..].iter().all(|d| *d >= Duration::from_millis(2_500)));
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(config());
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_max_below_the_min_is_raised_to_it() {
        let mut backoff = Backoff::new(BackoffConfig { min: Duration::from_secs(10), max: Duration::from_secs(1) });
        let delay = backoff.next_delay();
        assert!(delay >= Duration::from_secs(5) && delay <= Duration::from_secs(10));
    }
}
