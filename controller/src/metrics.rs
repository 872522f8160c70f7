//! Prometheus metrics: `GET /metrics` on the API port, in the text exposition format.
//!
//! Operators already run Prometheus (or something that scrapes its format); the fleet
//! should plug into it rather than ask for a dashboard of its own. Names follow the
//! Prometheus conventions: a `fleet_` prefix, base units, `_total` for counters, one
//! label per dimension. Gauges are read from the store when scraped (one indexed
//! `GROUP BY` each), counters are the controller's own (`fleetctl status`), the embedded
//! broker's (from the controller's last heartbeat, at most 5 s old) and the API's.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::store::{Store, StoreError};

/// A metric family being written: its `# HELP`/`# TYPE` once, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, label)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(label));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value as the exposition format quotes it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A counter name from one of the controller's (`events.malformed` →
/// `fleet_controller_events_malformed_total`).
fn counter_name(prefix: &str, name: &str) -> String {
    let mut metric = String::from(prefix);
    for c in name.chars() {
        metric.push(if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' });
    }
    if !metric.ends_with("_total") {
        metric.push_str("_total");
    }
    metric
}

/// How long the store's commits take (the `fsync` of each write transaction), in this
/// process: what every push, every recorded event and every signed envelope waits for.
pub static COMMITS: Histogram = Histogram::new();

/// Upper bounds of [`Histogram`]'s buckets, in microseconds (250 µs to 1 s).
const BUCKETS_US: [u64; 12] =
    [250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

/// A latency histogram in the Prometheus sense: cumulative buckets, a sum and a count.
/// Lock-free, so the store's commit path only adds two atomic increments.
#[derive(Debug)]
pub struct Histogram {
    /// Observations in each bucket (not cumulative); the last one is above every bound.
    buckets: [std::sync::atomic::AtomicU64; BUCKETS_US.len() + 1],
    sum_us: std::sync::atomic::AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            buckets: [const { std::sync::atomic::AtomicU64::new(0) }; BUCKETS_US.len() + 1],
            sum_us: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US.iter().position(|&bound| us <= bound).unwrap_or(BUCKETS_US.len());
        if let Some(slot) = self.buckets.get(bucket) {
            slot.fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Writes the histogram as the family `name`.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, slot) in self.buckets.iter().enumerate() {
            cumulative += slot.load(Relaxed);
            match BUCKETS_US.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The broker's counters that are gauges, not totals.
const BROKER_GAUGES: [&str; 1] = ["open_connections"];

/// The whole exposition: gauges from the store, the controller's counters, the
/// broker's (as the controller last recorded them).
pub fn render(store: &Store) -> Result<String, StoreError> {
    let snapshot = store.metrics_snapshot()?;
    let mut out = String::new();
    {
        let mut family =
            Family::new(&mut out, "fleet_devices", "gauge", "Devices by presence (removed ones included).");
        for (state, n) in &snapshot.devices {
            family.sample("fleet_devices", &[("state", state)], *n);
        }
    }
    {
        let mut family = Family::new(&mut out, "fleet_executions", "gauge", "Executions (every attempt) by state.");
        for (state, n) in &snapshot.executions {
            family.sample("fleet_executions", &[("state", state)], *n);
        }
    }
    {
        let mut family = Family::new(
            &mut out,
            "fleet_execution_rejections",
            "gauge",
            "Executions a device refused, by the reason it gave.",
        );
        for (reason, n) in &snapshot.rejections {
            family.sample("fleet_execution_rejections", &[("reason", reason)], *n);
        }
    }
    {
        let mut family = Family::new(&mut out, "fleet_jobs", "gauge", "Jobs by state.");
        for (state, n) in &snapshot.jobs {
            family.sample("fleet_jobs", &[("state", state)], *n);
        }
    }
    Family::new(&mut out, "fleet_events_recorded_total", "counter", "Device events verified and recorded.").sample(
        "fleet_events_recorded_total",
        &[],
        snapshot.events,
    );
    Family::new(&mut out, "fleet_envelopes_signed_total", "counter", "Envelopes signed for devices.").sample(
        "fleet_envelopes_signed_total",
        &[],
        snapshot.envelopes,
    );
    COMMITS.render(
        &mut out,
        "fleet_store_commit_duration_seconds",
        "How long the store's commits took in this controller process (each one's fsync).",
    );
    for (name, value) in store.counters()? {
        let metric = counter_name("fleet_controller_", &name);
        Family::new(&mut out, &metric, "counter", &format!("The controller's `{name}` counter.")).sample(
            &metric,
            &[],
            value,
        );
    }
    for (name, value) in broker_counters(store)? {
        let gauge = BROKER_GAUGES.contains(&name.as_str());
        let metric = if gauge { format!("fleet_broker_{name}") } else { counter_name("fleet_broker_", &name) };
        let kind = if gauge { "gauge" } else { "counter" };
        Family::new(&mut out, &metric, kind, &format!("The embedded broker's `{name}`, as of the last heartbeat."))
            .sample(&metric, &[], value);
    }
    Ok(out)
}

/// The embedded broker's counters from the controller's last heartbeat, if any.
fn broker_counters(store: &Store) -> Result<BTreeMap<String, u64>, StoreError> {
    Ok(store
        .controller_info()?
        .and_then(|(info, _)| serde_json::from_str::<serde_json::Value>(&info).ok())
        .and_then(|info| info.get("broker_counters").cloned())
        .and_then(|counters| serde_json::from_value(counters).ok())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        assert_eq!(counter_name("fleet_controller_", "events.malformed"), "fleet_controller_events_malformed_total");
        assert_eq!(counter_name("fleet_api_", "requests_total"), "fleet_api_requests_total");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_histogram_is_cumulative_with_its_sum_and_count() {
        let histogram = Histogram::new();
        for us in [100, 250, 251, 4_000, 2_000_000] {
            histogram.observe(std::time::Duration::from_micros(us));
        }
        let mut out = String::new();
        histogram.render(&mut out, "t_seconds", "test");
        for line in [
            "# TYPE t_seconds histogram",
            "t_seconds_bucket{le=\"0.00025\"} 2",
            "t_seconds_bucket{le=\"0.0005\"} 3",
            "t_seconds_bucket{le=\"0.005\"} 4",
            "t_seconds_bucket{le=\"1\"} 4",
            "t_seconds_bucket{le=\"+Inf\"} 5",
            "t_seconds_sum 2.004601",
            "t_seconds_count 5",
        ] {
            assert!(out.lines().any(|l| l == line), "no `{line}` in\n{out}");
        }
    }
}
