//! The agent end to end, as a device sees it: `cargo bench -p fleet-agent --bench agent
//! [-- --quick]`.
//!
//! One real `fleet-agent` process (built with the bench profile), a real broker on
//! loopback and the test controller of `tests/support`. Prints:
//!
//! * envelope-to-result latency of `hello`: from the controller publishing the envelope
//!   to the controller receiving the signed `Succeeded` event (p50, p99), one job at a
//!   time, module already compiled;
//! * jobs per second through one agent: a burst of `hello` envelopes, first publish to
//!   last terminal event (concurrency 1 and 2);
//! * cold versus cached module start: the same latency for a module the agent has never
//!   seen (compiled on arrival) and for its second run (compiled-module cache hit);
//! * the agent's resident memory (VmRSS) idle after start and idle after the workload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use fleet_schemas::JobSpec;
use support::{Agent, Options, World, hello, job};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (latency_jobs, burst_jobs, cold_samples) = if quick { (100, 200, 8) } else { (500, 1000, 30) };
    println!("fleet-agent benchmark{}", if quick { " (--quick)" } else { "" });

    let mut world = World::start(Options { local: "queue_capacity = 2048".into(), ..Options::default() });
    let agent = world.spawn_quiet_agent();
    world.wait_online();
    // Let start-up settle before reading memory.
    std::thread::sleep(Duration::from_millis(500));
    let rss_start = rss_kib(&agent);

    // Warm-up: compiles hello once.
    run_one(&mut world, &hello());

    let mut latencies: Vec<Duration> = (0..latency_jobs).map(|_| run_one(&mut world, &hello())).collect();
    latencies.sort();
    println!(
        "envelope-to-result latency, hello, cached module ({latency_jobs} jobs, one at a time): p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&latencies, 50)),
        ms(percentile(&latencies, 99))
    );

    let rate = burst(&mut world, burst_jobs);
    println!("throughput, burst of {burst_jobs} hello jobs, concurrency 1: {rate:.0} jobs/s");

    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    let (mut cold_runs, mut cached_runs) = (Vec::new(), Vec::new());
    for sample in 0..cold_samples {
        // A custom section makes a module the agent has never seen (a new hash).
        let spec = job(&with_custom_section(fleet_example_jobs::HELLO, sample), &[]);
        cold.push(run_one(&mut world, &spec));
        cold_runs.push(spec.job_id);
        let again = JobSpec { job_id: fleet_schemas::JobId(std::array::from_fn(|_| fastrand::u8(..))), ..spec };
        cached.push(run_one(&mut world, &again));
        cached_runs.push(again.job_id);
    }
    cold.sort();
    cached.sort();
    let log = std::fs::read_to_string(world.dir.path().join("agent.log")).unwrap_or_default();
    let mut cold_runs = run_times(&log, &cold_runs);
    let mut cached_runs = run_times(&log, &cached_runs);
    cold_runs.sort();
    cached_runs.sort();
    println!(
        "module start, hello ({cold_samples} modules): run on the agent (compile + instantiate + run) cold p50 {:.2} ms, \
         cached p50 {:.2} ms; envelope-to-result cold p50 {:.2} ms, cached p50 {:.2} ms",
        ms(percentile(&cold_runs, 50)),
        ms(percentile(&cached_runs, 50)),
        ms(percentile(&cold, 50)),
        ms(percentile(&cached, 50))
    );

    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss_kib(&agent);
    println!("agent idle RSS: {rss_start} KiB after start, {rss_after} KiB after the workload");
    agent.kill();

    // Concurrency 2, in a fresh world (the setting is read at start).
    let mut world =
        World::start(Options { local: "queue_capacity = 2048\nconcurrency = 2".into(), ..Options::default() });
    let agent = world.spawn_quiet_agent();
    world.wait_online();
    run_one(&mut world, &hello());
    let rate = burst(&mut world, burst_jobs);
    println!("throughput, burst of {burst_jobs} hello jobs, concurrency 2: {rate:.0} jobs/s");
    agent.kill();
}

/// Pushes one job and waits for its terminal event; returns publish-to-arrival time.
fn run_one(world: &mut World, spec: &JobSpec) -> Duration {
    let start = Instant::now();
    let key = world.push(spec);
    world.wait_for("a benchmark job", |s| s.finished(key.job_id));
    world.seen(|s| {
        let terminal = s.terminal(&key);
        assert!(matches!(terminal[0].kind, fleet_schemas::EventKind::Succeeded(_)), "{terminal:?}");
        s.arrived_at[&terminal[0].event_seq] - start
    })
}

/// Pushes `n` jobs back to back; returns jobs per second until the last terminal event.
fn burst(world: &mut World, n: usize) -> f64 {
    let start = Instant::now();
    let keys: Vec<_> = (0..n).map(|_| world.push(&hello())).collect();
    world.wait_for("the burst", |s| keys.iter().all(|k| s.finished(k.job_id)));
    let last = world.seen(|s| keys.iter().map(|k| s.arrived_at[&s.terminal(k)[0].event_seq]).max().unwrap());
    n as f64 / (last - start).as_secs_f64()
}

/// The agent-side run times of these jobs, from its debug log (`execution ended ... run_us=`).
fn run_times(log: &str, jobs: &[fleet_schemas::JobId]) -> Vec<Duration> {
    jobs.iter()
        .filter_map(|job| {
            let needle = format!("job={job}");
            let line = log.lines().find(|l| l.contains("execution ended") && l.contains(&needle))?;
            let us = line.split("run_us=").nth(1)?.split_whitespace().next()?.parse().ok()?;
            Some(Duration::from_micros(us))
        })
        .collect()
}

/// `module` with a custom section appended (valid Wasm, different bytes).
fn with_custom_section(module: &[u8], tag: u32) -> Vec<u8> {
    let name = b"fleet-bench";
    let mut content = vec![name.len() as u8];
    content.extend_from_slice(name);
    content.extend_from_slice(&tag.to_le_bytes());
    let mut out = module.to_vec();
    out.push(0); // custom section id
    out.push(content.len() as u8); // < 128: one LEB128 byte
    out.extend_from_slice(&content);
    out
}

fn rss_kib(agent: &Agent) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let index = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
