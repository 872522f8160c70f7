//! The fleet figures: fan-out, latency, throughput, each on the embedded broker and on
//! mosquitto in the same run.
//!
//! Timing starts when the job is committed to the controller's database (what
//! `fleetctl job push` does) and stops when the database records the last execution
//! succeeded, so it covers the controller noticing the push (its 20 ms database
//! poll), signing and storing one envelope per device, the broker, each device
//! verifying, queueing, running and reporting, and the controller verifying and
//! recording every event. Devices connect and come online before the clock starts:
//! a rollout goes to a fleet that is already there.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleet_schemas::DeviceId;

use crate::fleet::{BenchFleet, BrokerKind};
use crate::swarm::Swarm;
use crate::table::{self, Row, Table};

/// AWS IoT Jobs' published rollout ceiling: 1,000 devices a minute
/// (`maximumPerMinute`, "AWS IoT Jobs limits" in the AWS IoT Core endpoints and quotas).
const AWS_DEVICES_PER_MINUTE: f64 = 1_000.0;

/// Sizes of the fleet figures.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Devices in the fan-out.
    pub devices: usize,
    /// Latency samples.
    pub latency_samples: usize,
    /// Devices and jobs of the throughput figure.
    pub throughput_devices: usize,
    /// Jobs pushed back to back in the throughput figure.
    pub throughput_jobs: usize,
    /// Whether to run the mosquitto column.
    pub mosquitto: bool,
}

impl Settings {
    /// The sizes for a full or a quick run.
    pub fn new(quick: bool, devices: Option<usize>, mosquitto: bool) -> Self {
        Self {
            devices: devices.unwrap_or(if quick { 1_000 } else { 10_000 }),
            latency_samples: if quick { 30 } else { 200 },
            throughput_devices: 1_000,
            throughput_jobs: if quick { 3 } else { 10 },
            mosquitto,
        }
    }

    fn brokers(&self) -> Vec<BrokerKind> {
        if self.mosquitto { vec![BrokerKind::Embedded, BrokerKind::Mosquitto] } else { vec![BrokerKind::Embedded] }
    }
}

/// New connections a second while a swarm connects.
pub const CONNECTS_PER_SECOND: u32 = 2_000;

/// A fleet of `devices`, all connected and recorded online.
async fn online_fleet(broker: BrokerKind, devices: usize, tag: &str) -> anyhow::Result<(BenchFleet, Swarm)> {
    online_fleet_with(broker, devices, tag, false).await
}

/// Like [`online_fleet`]; with `tls`, every device on MQTT over TLS.
pub async fn online_fleet_with(
    broker: BrokerKind,
    devices: usize,
    tag: &str,
    tls: bool,
) -> anyhow::Result<(BenchFleet, Swarm)> {
    raise_open_file_limit(broker, devices)?;
    let fleet = BenchFleet::start_with(broker, devices, tag, tls).await?;
    let mut swarm = Swarm::start(&fleet.link(), fleet.trust(), fleet.devices().to_vec(), CONNECTS_PER_SECOND);
    let guard = Duration::from_secs(60) + Duration::from_millis(2 * devices as u64);
    swarm.wait_ready(guard).await.with_context(|| format!("{} devices connecting to {}", devices, broker.name()))?;
    fleet.wait_online(guard).await?;
    Ok((fleet, swarm))
}

async fn close(fleet: BenchFleet, swarm: Swarm) -> anyhow::Result<()> {
    swarm.stop().await;
    fleet.stop().await
}

fn ids(fleet: &BenchFleet) -> Vec<DeviceId> {
    fleet.devices().iter().map(|d| d.id.clone()).collect()
}

/// Seconds from push to every execution succeeded: the first job on a fresh broker,
/// then a second job to the same fleet.
async fn fan_out_once(broker: BrokerKind, n: usize, tls: bool) -> anyhow::Result<(f64, f64)> {
    let (mut fleet, swarm) = online_fleet_with(broker, n, "fan", tls).await?;
    let targets = ids(&fleet);
    let guard = Duration::from_secs(120) + Duration::from_millis(20 * n as u64);
    let mut rounds = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let job = fleet.push(fleet_example_jobs::HELLO, &targets)?;
        fleet.wait_succeeded(&job, u32::try_from(n)?, Duration::from_millis(50), guard).await?;
        rounds.push(started.elapsed().as_secs_f64());
    }
    let stats = swarm.stats();
    println!(
        "fan-out on {}{}: {n} devices, first job {:.2} s, next job {:.2} s ({} runs, {} link errors, {} dropped requests)",
        broker.name(),
        if tls { " over TLS" } else { "" },
        rounds[0],
        rounds[1],
        stats.runs.load(Ordering::Relaxed),
        stats.link_errors.load(Ordering::Relaxed),
        stats.dropped_requests.load(Ordering::Relaxed),
    );
    close(fleet, swarm).await?;
    Ok((rounds[0], rounds[1]))
}

/// One job to every device, on each broker: the bar's figure.
///
/// With the embedded broker every device costs this process four open files (the
/// device's socket here, and three in the broker: the client's, the front door's link
/// to the engine, and the engine's end of it). Where the open-file limit cannot be raised
/// that far (a container without `CAP_SYS_RESOURCE`), the embedded run uses the largest
/// fleet that fits, mosquitto runs at that size too for the comparison, and mosquitto
/// alone runs at the full size.
pub async fn fan_out(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let n = settings.devices;
    let fits = embedded_capacity().min(n);
    let conditions = |devices: usize| {
        format!(
            "{} devices, each a real MQTT connection running the agent core and wasmi; `hello` inline; push to every \
             execution recorded succeeded",
            table::thousands(devices as u64)
        )
    };
    // A first fan-out in this process runs 1 to 2 s slower than a later one of the same
    // size, whichever broker it is on (measured both ways round): the swarm's first 10,000
    // devices grow the heap and warm the kernel's socket paths. So one untimed round
    // first, and both brokers are measured warm.
    fan_out_once(BrokerKind::Embedded, fits, false).await?;
    let embedded = fan_out_once(BrokerKind::Embedded, fits, false).await?;
    let tls = fan_out_once(BrokerKind::Embedded, fits, true).await?;
    let mosquitto =
        if settings.mosquitto { Some(fan_out_once(BrokerKind::Mosquitto, fits, false).await?) } else { None };
    for (label, ours, peer) in [
        ("first job on a fresh broker", embedded.0, mosquitto.map(|m| m.0)),
        ("next job", embedded.1, mosquitto.map(|m| m.1)),
    ] {
        let figure = format!("fan-out, {} devices, {label}", table::thousands(fits as u64));
        match peer {
            Some(peer) => table.add(Row {
                figure,
                ours: format!("{ours:.1} s (embedded broker)"),
                peer: format!("{peer:.1} s (mosquitto)"),
                ratio: table::time_ratio(ours, peer),
                conditions: conditions(fits),
            }),
            None => table.add(table::alone(figure, format!("{ours:.1} s"), conditions(fits))),
        }
    }
    for (label, ours, plain) in [("first job", tls.0, embedded.0), ("next job", tls.1, embedded.1)] {
        table.add(Row {
            figure: format!("fan-out, {} devices, MQTT over TLS, {label}", table::thousands(fits as u64)),
            ours: format!("{ours:.1} s (TLS 1.3)"),
            peer: format!("{plain:.1} s (plain MQTT, same run)"),
            ratio: table::time_ratio(ours, plain),
            conditions: format!(
                "{}; every device on the embedded broker's TLS port (ECDSA P-256 certificate from the controller's CA)",
                conditions(fits)
            ),
        });
    }
    if fits < n {
        let limit = open_file_limit();
        let why = format!(
            "embedded not run: it needs about {} open files and this process may have {limit} (ulimit -Hn)",
            table::thousands(per_device_files(BrokerKind::Embedded) * n as u64 + RESERVED_FILES)
        );
        if settings.mosquitto {
            let (cold, warm) = fan_out_once(BrokerKind::Mosquitto, n, false).await?;
            table.add(Row {
                figure: format!("fan-out, {} devices", table::thousands(n as u64)),
                ours: "-".into(),
                peer: format!("{cold:.1} s first job, {warm:.1} s next (mosquitto)"),
                ratio: "-".into(),
                conditions: format!("{}; {why}", conditions(n)),
            });
        } else {
            table.add(table::alone(format!("fan-out, {} devices", table::thousands(n as u64)), "-", why));
        }
    }
    let best = embedded.0.min(embedded.1);
    let aws = fits as f64 / AWS_DEVICES_PER_MINUTE * 60.0;
    table.add(Row {
        figure: "fan-out rate".into(),
        ours: format!("{} devices/min", table::thousands((fits as f64 / embedded.0 * 60.0) as u64)),
        peer: format!("{} devices/min (AWS IoT Jobs)", table::thousands(AWS_DEVICES_PER_MINUTE as u64)),
        ratio: table::time_ratio(embedded.0, aws),
        conditions: format!(
            "embedded broker, first job ({} devices/min for the next); AWS IoT Jobs' published rollout ceiling \
             (maximumPerMinute 1,000), not measured here",
            table::thousands((fits as f64 / best * 60.0) as u64)
        ),
    });
    Ok(())
}

/// Push to result for one device, one job at a time: p50 and p99 per broker.
pub async fn latency(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    for broker in settings.brokers() {
        let (mut fleet, swarm) = online_fleet(broker, 1, "lat").await?;
        let targets = ids(&fleet);
        let mut samples = Vec::with_capacity(settings.latency_samples);
        let mut answered = Vec::with_capacity(settings.latency_samples);
        for _ in 0..settings.latency_samples + 1 {
            let started = Instant::now();
            let job = fleet.push_api(fleet_example_jobs::HELLO, &targets).await?;
            answered.push(started.elapsed().as_secs_f64());
            fleet.wait_succeeded(&job, 1, Duration::from_micros(100), Duration::from_secs(30)).await?;
            samples.push(started.elapsed().as_secs_f64());
        }
        samples.remove(0); // the first run compiles the module
        answered.remove(0);
        samples.sort_by(f64::total_cmp);
        answered.sort_by(f64::total_cmp);
        println!(
            "latency on {}: the API answers a push in {} p50, {} p99; the result is recorded {} p50, {} p99 after it was pushed",
            broker.name(),
            table::ms(percentile(&answered, 50)),
            table::ms(percentile(&answered, 99)),
            table::ms(percentile(&samples, 50)),
            table::ms(percentile(&samples, 99)),
        );
        // What the store's commits (each an fsync) took meanwhile, from the controller's
        // own histogram: the tail of the figure above is theirs.
        let buckets = fleet.commit_histogram().await?;
        let total = buckets.last().map_or(0, |b| b.1);
        let line: Vec<String> = buckets
            .iter()
            .filter(|(le, _)| le.is_finite() && *le <= 0.01)
            .map(|(le, n)| format!("<= {} {:.1}%", table::ms(*le), 100.0 * *n as f64 / total.max(1) as f64))
            .collect();
        println!("latency on {}: {total} store commits: {}", broker.name(), line.join(", "));
        figures.push((percentile(&samples, 50), percentile(&samples, 99)));
        close(fleet, swarm).await?;
    }
    let (p50, p99) = figures[0];
    let conditions = format!(
        "{} jobs, one device, loopback; each pushed through the operator API (HTTPS, one kept-alive connection), which hands it to the rollout loop (recorded, planned, signed in one commit, published), until the result is recorded (seen within 0.1 ms)",
        settings.latency_samples
    );
    match figures.get(1) {
        Some(&(m50, m99)) => {
            table.add(Row {
                figure: "push-to-result latency p50".into(),
                ours: table::ms(p50),
                peer: format!("{} (mosquitto)", table::ms(m50)),
                ratio: table::time_ratio(p50, m50),
                conditions: conditions.clone(),
            });
            table.add(Row {
                figure: "push-to-result latency p99".into(),
                ours: table::ms(p99),
                peer: format!("{} (mosquitto)", table::ms(m99)),
                ratio: table::time_ratio(p99, m99),
                conditions,
            });
        }
        None => {
            table.add(table::alone("push-to-result latency p50", table::ms(p50), conditions.clone()));
            table.add(table::alone("push-to-result latency p99", table::ms(p99), conditions));
        }
    }
    Ok(())
}

/// Jobs pushed back to back to the same 1,000 devices: executions per second.
pub async fn throughput(settings: &Settings, table: &mut Table) -> anyhow::Result<()> {
    let n = settings.throughput_devices;
    let jobs = settings.throughput_jobs;
    let mut rates = Vec::new();
    for broker in settings.brokers() {
        let (mut fleet, swarm) = online_fleet(broker, n, "tput").await?;
        let targets = ids(&fleet);
        let started = Instant::now();
        let pushed =
            (0..jobs).map(|_| fleet.push(fleet_example_jobs::HELLO, &targets)).collect::<Result<Vec<_>, _>>()?;
        for job in &pushed {
            fleet.wait_succeeded(job, u32::try_from(n)?, Duration::from_millis(50), Duration::from_secs(600)).await?;
        }
        rates.push((n * jobs) as f64 / started.elapsed().as_secs_f64());
        close(fleet, swarm).await?;
    }
    let ours = rates[0];
    let conditions =
        format!("{jobs} jobs pushed back to back to the same {} devices; `hello`", table::thousands(n as u64));
    let figure = format!("executions/s to {} devices", table::thousands(n as u64));
    match rates.get(1) {
        Some(&mosquitto) => table.add(Row {
            figure,
            ours: table::per_second(ours, "executions"),
            peer: format!("{} (mosquitto)", table::per_second(mosquitto, "executions")),
            ratio: table::rate_ratio(ours, mosquitto),
            conditions,
        }),
        None => table.add(table::alone(figure, table::per_second(ours, "executions"), conditions)),
    }
    Ok(())
}

/// The `p`th percentile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Open files kept for everything but the devices (database, logs, listeners).
const RESERVED_FILES: u64 = 512;

/// Open files one device costs the process that needs the most of them: this one (the
/// device's socket) and `fleetctl serve` (the embedded broker's one socket per client)
/// alike; mosquitto's ends are in mosquitto.
fn per_device_files(broker: BrokerKind) -> u64 {
    match broker {
        BrokerKind::Embedded | BrokerKind::Mosquitto => 1,
    }
}

/// The hard open-file limit of this process (what it may raise its own limit to).
fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(u64::MAX)
}

/// The largest fleet the embedded broker can hold in this process, in steps of 500.
fn embedded_capacity() -> usize {
    let files = open_file_limit().saturating_sub(RESERVED_FILES) / per_device_files(BrokerKind::Embedded);
    usize::try_from(files / 500 * 500).unwrap_or(usize::MAX).max(500)
}

/// Raises the soft open-file limit to what `devices` need on `broker` (up to the hard
/// limit, which only a privileged process can raise).
fn raise_open_file_limit(broker: BrokerKind, devices: usize) -> anyhow::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let want = per_device_files(broker).saturating_mul(devices as u64).saturating_add(RESERVED_FILES);
    let current = getrlimit(Resource::Nofile);
    if current.current.is_none_or(|c| c >= want) {
        return Ok(());
    }
    let hard = current.maximum.map_or(want, |m| m.max(want));
    if setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum: Some(hard) }).is_ok() {
        return Ok(());
    }
    let allowed = current.maximum.unwrap_or(want);
    if allowed < want {
        anyhow::bail!(
            "{devices} devices on the {} broker need about {want} open files and this process may have {allowed}: \
             raise the hard limit (`ulimit -Hn {want}` with CAP_SYS_RESOURCE) or pass fewer --devices",
            broker.name()
        );
    }
    setrlimit(Resource::Nofile, Rlimit { current: Some(want), maximum: current.maximum })
        .map_err(|e| anyhow::anyhow!("cannot raise the open-file limit: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50), 50.0);
        assert_eq!(percentile(&samples, 99), 99.0);
        assert_eq!(percentile(&[7.0], 99), 7.0);
        assert_eq!(percentile(&[], 50), 0.0);
    }
}
