//! Wasmtime against wasmi on the example jobs: what a job costs to start and to run on
//! each runtime, to size gateways and to decide what belongs on a microcontroller.
//!
//! `cargo bench -p fleet-executor --bench runtimes [-- --quick]`
//!
//! Prints one row per figure: `figure | wasmtime | wasmi | ratio | conditions`, where
//! ratio is wasmi's time over wasmtime's: "6.3x" means the interpreter took 6.3 times as
//! long, "1/80" that it took an 80th of the time (starting an interpreter is cheap,
//! compiling with Cranelift is not).
//! Both run on this host; on a Cortex-M the wasmi column is one to two orders of
//! magnitude slower again.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use fleet_executor::{ExecutorConfig, Job, NoInputs, WasmiExecutor, WasmtimeExecutor};
use fleet_schemas::DeviceId;

fn config(cache_entries: usize) -> ExecutorConfig {
    let mut config = ExecutorConfig::gateway(DeviceId::new("bench-device").unwrap());
    config.module_cache_entries = cache_entries;
    config
}

/// Mean time of one call of `f`, over at least `budget` of repeated calls (after one
/// warm-up call).
fn time(budget: Duration, mut f: impl FnMut()) -> (Duration, u32) {
    f();
    let started = Instant::now();
    let mut runs = 0u32;
    while runs < 3 || started.elapsed() < budget {
        f();
        runs += 1;
    }
    (started.elapsed() / runs, runs)
}

fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 { format!("{us:.1} µs") } else { format!("{:.2} ms", us / 1_000.0) }
}

fn row(figure: &str, wasmtime: (Duration, u32), wasmi: (Duration, u32), conditions: &str) {
    let ratio = wasmi.0.as_secs_f64() / wasmtime.0.as_secs_f64();
    // Below 1 the interpreter is the faster one: say by how much as "1/N".
    let ratio = match ratio {
        r if r >= 1.0 => format!("{r:.1}x"),
        r if r > 0.1 => format!("1/{:.1}", 1.0 / r),
        r => format!("1/{:.0}", 1.0 / r),
    };
    println!(
        "{figure:<32} | {:>10} | {:>10} | {ratio:>8} | {conditions}; runs {}/{}",
        show(wasmtime.0),
        show(wasmi.0),
        wasmtime.1,
        wasmi.1
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = if quick { Duration::from_millis(200) } else { Duration::from_secs(2) };
    let iterations: u64 = if quick { 1_000_000 } else { 10_000_000 };

    println!("fleet-executor runtimes ({} mode, {} CPU(s))", if quick { "quick" } else { "full" }, num_cpus());
    println!("{:<32} | {:>10} | {:>10} | {:>8} | conditions", "figure", "wasmtime", "wasmi", "ratio");
    println!("{}", "-".repeat(110));

    let hello = Job::new(fleet_example_jobs::HELLO);
    let cached_wt = WasmtimeExecutor::new(config(8)).unwrap();
    let mut cached_wi = WasmiExecutor::new(config(8)).unwrap();
    row(
        "hello: instantiate + run",
        time(budget, || {
            black_box(cached_wt.run(&hello, NoInputs).unwrap());
        }),
        time(budget, || {
            black_box(cached_wi.run(&hello, NoInputs).unwrap());
        }),
        &format!("module cached (SHA-256 of {} bytes per run included)", fleet_example_jobs::HELLO.len()),
    );

    let cold_wt = WasmtimeExecutor::new(config(0)).unwrap();
    let mut cold_wi = WasmiExecutor::new(config(0)).unwrap();
    for (name, bytes) in [("hello", fleet_example_jobs::HELLO), ("csv-summary", fleet_example_jobs::CSV_SUMMARY)] {
        let job = Job::new(bytes);
        let inputs = || fleet_executor::MemoryInputs::new().with("readings", &b"1,2\n2,3\n"[..]);
        let listed = ["readings".to_string()];
        let job = job.with_inputs(&listed);
        row(
            &format!("{name}: cold compile + run"),
            time(budget, || {
                black_box(cold_wt.run(&job, inputs()).unwrap());
            }),
            time(budget, || {
                black_box(cold_wi.run(&job, inputs()).unwrap());
            }),
            &format!("no cache; {} byte module; wasmtime Cranelift, wasmi lazy translation", bytes.len()),
        );
    }

    let args = [iterations.to_string()];
    let sum = Job::new(fleet_example_jobs::SUM_COMPUTE).with_args(&args);
    let expected = cached_wt.run(&sum, NoInputs).unwrap();
    let wi_report = cached_wi.run(&sum, NoInputs).unwrap();
    assert_eq!(expected.output, wi_report.output, "the runtimes disagree on sum-compute");
    let compute_budget = if quick { Duration::from_millis(100) } else { Duration::from_secs(1) };
    row(
        "sum-compute: run",
        time(compute_budget, || {
            black_box(cached_wt.run(&sum, NoInputs).unwrap());
        }),
        time(compute_budget, || {
            black_box(cached_wi.run(&sum, NoInputs).unwrap());
        }),
        &format!(
            "n={iterations}, module cached, fuel metering on; fuel used: wasmtime {}, wasmi {}",
            expected.fuel_used, wi_report.fuel_used
        ),
    );
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
