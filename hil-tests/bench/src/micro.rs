//! The figures that need no network: event ingest into SQLite, envelope verification,
//! and wasmtime against wasmi on the same modules.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleet_controller::datadir::DataDir;
use fleet_controller::ingest::ingest_event;
use fleet_controller::signer::Signer;
use fleet_controller::unix_ms;
use fleet_executor::{ExecutorConfig, Job, MemoryInputs, NoInputs, WasmiExecutor, WasmtimeExecutor};
use fleet_schemas::{
    DeviceId, EVENT_VERSION, EventKind, ExecutionEvent, ExecutionKey, KeyRing, Order, ReplayState, RunReport,
    SignedMessage, Trusted, verify_envelope,
};

use crate::fleet::{identity, new_job, registration};
use crate::table::{self, Row, Table};

/// Events recorded per second: each verified against its device's key and recorded in
/// its own transaction (`synchronous=FULL`), as the controller's ingest does.
pub fn ingest(quick: bool, table: &mut Table) -> anyhow::Result<()> {
    let devices = if quick { 300 } else { 1_000 };
    let dir = tempfile::Builder::new().prefix("fleet-bench-ingest-").tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    let mut store = data.open_or_init()?;
    let identities: Vec<_> = (0..devices).map(|n| identity("ingest", n)).collect::<anyhow::Result<_>>()?;
    for device in &identities {
        store.insert_device(&registration(device), "bench", unix_ms())?;
    }
    let ids: Vec<DeviceId> = identities.iter().map(|d| d.id.clone()).collect();
    let job = new_job(fleet_example_jobs::HELLO, &ids)?;
    store.insert_job(&job, &ids, "bench", unix_ms())?;
    let signer = Signer::new(data.active_job_key(&store)?);
    let spec: fleet_schemas::JobSpec = postcard::from_bytes(&job.spec)?;
    let now = unix_ms();
    for id in &ids {
        let order = Order::Run { attempt: 1, job: Box::new(spec.clone()) };
        store.send_execution(&job.id, id, 1, now, now + 600_000, |seq| {
            signer.envelope(id, seq, order, now / 1000, now / 1000 + 600).map_err(|e| e.to_string())
        })?;
    }
    let report = RunReport { output: b"hello".to_vec(), logs: vec!["hi".into()], fuel_used: 1_000, duration_ms: 1 };
    let mut events = Vec::with_capacity(devices * 3);
    for device in &identities {
        let key = ExecutionKey { job_id: job.id, device_id: device.id.clone(), attempt: 1 };
        for (seq, kind) in
            [EventKind::Accepted, EventKind::Started, EventKind::Succeeded(report.clone())].into_iter().enumerate()
        {
            let event =
                ExecutionEvent { version: EVENT_VERSION, key: key.clone(), event_seq: seq as u64 + 1, at: 0, kind };
            let bytes = SignedMessage::sign(&event, &device.key)?.to_bytes()?;
            events.push((device.id.clone(), bytes));
        }
    }
    let started = Instant::now();
    for (device, bytes) in &events {
        let ingested = ingest_event(&mut store, device.as_str(), bytes, unix_ms())?;
        anyhow::ensure!(!ingested.outcome.duplicate, "an event was taken for a duplicate");
    }
    let rate = events.len() as f64 / started.elapsed().as_secs_f64();
    table.add(table::alone(
        "event ingest into SQLite",
        table::per_second(rate, "events"),
        format!(
            "{} events (Accepted, Started, Succeeded from {devices} devices): signature verified, one transaction \
             each, synchronous=FULL (WAL)",
            table::thousands(events.len() as u64)
        ),
    ));
    Ok(())
}

/// Envelope verifications per second on the device side, beside a bare ed25519
/// signature check of the same bytes.
pub fn crypto(quick: bool, table: &mut Table) -> anyhow::Result<()> {
    let budget = if quick { Duration::from_millis(300) } else { Duration::from_secs(2) };
    let dir = tempfile::Builder::new().prefix("fleet-bench-crypto-").tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    let store = data.open_or_init()?;
    let key = data.active_job_key(&store)?;
    let signer = Signer::new(key.clone());
    let device = DeviceId::new("crypto-00001")?;
    let job = new_job(fleet_example_jobs::HELLO, std::slice::from_ref(&device))?;
    let spec: fleet_schemas::JobSpec = postcard::from_bytes(&job.spec)?;
    let now = unix_ms() / 1000;
    let bytes = signer.envelope(&device, 1, Order::Run { attempt: 1, job: Box::new(spec) }, now, now + 600)?;
    let ring = KeyRing::new(vec![Trusted::of_signing_key(&key)]).context("a one-key ring")?;
    let replay = ReplayState::default();
    let envelope_rate = rate(budget, || {
        black_box(verify_envelope(black_box(&bytes), &ring, &device, Some(now), &replay).is_ok());
    });
    anyhow::ensure!(
        verify_envelope(&bytes, &ring, &device, Some(now), &replay).is_ok(),
        "the envelope does not verify"
    );
    let verifying = key.verifying_key();
    let signature = ed25519_dalek::Signer::sign(&key, &bytes);
    let bare_rate = rate(budget, || {
        black_box(verifying.verify_strict(black_box(&bytes), &signature).is_ok());
    });
    table.add(Row {
        figure: "envelope verifications".into(),
        ours: table::per_second(envelope_rate, "envelopes"),
        peer: format!("{} (bare ed25519 verify_strict)", table::per_second(bare_rate, "signatures")),
        ratio: format!("{:.0}% of bare", 100.0 * envelope_rate / bare_rate),
        conditions: format!(
            "{} byte envelope with `hello` inline: decode, key lookup, signature, expiry, replay and address checks; \
             one core",
            bytes.len()
        ),
    });
    Ok(())
}

/// Mean seconds per call of `f` over at least `budget` (after one warm-up call).
pub(crate) fn mean(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let started = Instant::now();
    let mut runs = 0u32;
    while runs < 3 || started.elapsed() < budget {
        f();
        runs += 1;
    }
    started.elapsed().as_secs_f64() / f64::from(runs)
}

/// Calls of `f` per second over at least `budget`.
fn rate(budget: Duration, f: impl FnMut()) -> f64 {
    1.0 / mean(budget, f)
}

fn executor_config(cache_entries: usize) -> anyhow::Result<ExecutorConfig> {
    let mut config = ExecutorConfig::gateway(DeviceId::new("bench-device")?);
    config.module_cache_entries = cache_entries;
    Ok(config)
}

/// The gateway's runtime (wasmtime, ours) beside the microcontroller's (wasmi, as peer)
/// on the same modules, both on this host.
pub fn runtimes(quick: bool, table: &mut Table) -> anyhow::Result<()> {
    let budget = if quick { Duration::from_millis(200) } else { Duration::from_secs(2) };
    let iterations: u64 = if quick { 1_000_000 } else { 10_000_000 };
    let wasmtime = WasmtimeExecutor::new(executor_config(8)?)?;
    let mut wasmi = WasmiExecutor::new(executor_config(8)?)?;
    let hello = Job::new(fleet_example_jobs::HELLO);
    let (wt, wi) = (
        mean(budget, || {
            black_box(wasmtime.run(&hello, NoInputs).is_ok());
        }),
        mean(budget, || {
            black_box(wasmi.run(&hello, NoInputs).is_ok());
        }),
    );
    table.add(runtime_row(
        "hello: instantiate + run",
        wt,
        wi,
        "module cached (SHA-256 of the module per run included)",
    ));

    let cold_wasmtime = WasmtimeExecutor::new(executor_config(0)?)?;
    let mut cold_wasmi = WasmiExecutor::new(executor_config(0)?)?;
    let listed = ["readings".to_string()];
    for (name, bytes) in [("hello", fleet_example_jobs::HELLO), ("csv-summary", fleet_example_jobs::CSV_SUMMARY)] {
        let job = Job::new(bytes).with_inputs(&listed);
        let inputs = || MemoryInputs::new().with("readings", &b"1,2\n2,3\n"[..]);
        let (wt, wi) = (
            mean(budget, || {
                black_box(cold_wasmtime.run(&job, inputs()).is_ok());
            }),
            mean(budget, || {
                black_box(cold_wasmi.run(&job, inputs()).is_ok());
            }),
        );
        table.add(runtime_row(
            &format!("{name}: compile + instantiate + run"),
            wt,
            wi,
            &format!("no cache; {} byte module; wasmtime Cranelift, wasmi lazy translation", bytes.len()),
        ));
    }

    wasi_rows(budget, table)?;

    let args = [iterations.to_string()];
    let sum = Job::new(fleet_example_jobs::SUM_COMPUTE).with_args(&args);
    let expected = wasmtime.run(&sum, NoInputs)?;
    let interpreted = wasmi.run(&sum, NoInputs)?;
    anyhow::ensure!(expected.output == interpreted.output, "the runtimes disagree on sum-compute");
    let compute_budget = if quick { Duration::from_millis(100) } else { Duration::from_secs(1) };
    let (wt, wi) = (
        mean(compute_budget, || {
            black_box(wasmtime.run(&sum, NoInputs).is_ok());
        }),
        mean(compute_budget, || {
            black_box(wasmi.run(&sum, NoInputs).is_ok());
        }),
    );
    table.add(runtime_row(
        "sum-compute: run",
        wt,
        wi,
        &format!("n={iterations}, module cached, fuel metering on, same output on both"),
    ));
    Ok(())
}

/// The WASI hello in C beside the fleet-ABI hello in Rust, on each runtime: what a job
/// written as a plain program costs to start and run, and to ship.
fn wasi_rows(budget: Duration, table: &mut Table) -> anyhow::Result<()> {
    let c = Job::new(fleet_wasi_jobs::HELLO);
    let rust = Job::new(fleet_example_jobs::HELLO);
    for (label, cache) in [("instantiate + run", 8), ("compile + instantiate + run", 0)] {
        let wasmtime = WasmtimeExecutor::new(executor_config(cache)?)?;
        let mut wasmi = WasmiExecutor::new(executor_config(cache)?)?;
        anyhow::ensure!(wasmtime.run(&c, NoInputs).is_ok() && wasmi.run(&c, NoInputs).is_ok(), "the C hello fails");
        let mut time = |job: &Job<'_>, on_wasmi: bool| {
            if on_wasmi {
                mean(budget, || {
                    black_box(wasmi.run(job, NoInputs).is_ok());
                })
            } else {
                mean(budget, || {
                    black_box(wasmtime.run(job, NoInputs).is_ok());
                })
            }
        };
        for (runtime, on_wasmi) in [("wasmtime", false), ("wasmi", true)] {
            let (ours, peer) = (time(&c, on_wasmi), time(&rust, on_wasmi));
            table.add(Row {
                figure: format!("hello in C (WASI): {label}, {runtime}"),
                ours: table::us(ours),
                peer: format!("{} (Rust, fleet ABI)", table::us(peer)),
                ratio: table::time_ratio(ours, peer),
                conditions: if cache > 0 { "module cached".into() } else { "no cache".into() },
            });
        }
    }
    component_rows(budget, table)?;
    let (abi_hello, abi_summary) = (fleet_example_jobs::HELLO, fleet_example_jobs::CSV_SUMMARY);
    let rows = [
        (
            "hello: module size, C (WASI) vs Rust (fleet ABI)",
            fleet_wasi_jobs::HELLO,
            abi_hello,
            "clang 14 -O2 + wasi-libc (fputs), stripped; Rust release for wasm32-unknown-unknown",
        ),
        (
            "csv-summary: module size, C (WASI) vs Rust (fleet ABI)",
            fleet_wasi_jobs::CSV_SUMMARY,
            abi_summary,
            "the same job: C with stdio and strtod, Rust no_std with core's float parsing",
        ),
        (
            "csv-summary: module size, AssemblyScript (WASI) vs Rust (fleet ABI)",
            fleet_wasi_jobs::CSV_SUMMARY_AS,
            abi_summary,
            "the same job: AssemblyScript 0.28 -Oz, stub runtime, WASI shim",
        ),
        (
            "csv-summary: module size, std Rust (WASI) vs Rust (fleet ABI)",
            fleet_wasi_jobs::CSV_SUMMARY_RUST,
            abi_summary,
            "the same job: std Rust for wasm32-wasip1, release",
        ),
    ];
    for (figure, ours, peer, conditions) in rows {
        table.add(size_row(figure, ours, peer, "Rust", conditions));
    }
    Ok(())
}

/// A row comparing two times in seconds, `(ours, peer)`.
fn time_row(figure: &str, (ours, peer): (f64, f64), peer_is: &str, conditions: &str) -> Row {
    Row {
        figure: figure.into(),
        ours: table::us(ours),
        peer: format!("{} ({peer_is})", table::us(peer)),
        ratio: table::time_ratio(ours, peer),
        conditions: conditions.into(),
    }
}

/// A row comparing two modules' sizes.
fn size_row(figure: &str, ours: &[u8], peer: &[u8], peer_is: &str, conditions: &str) -> Row {
    Row {
        figure: figure.into(),
        ours: table::size(ours.len() as u64),
        peer: format!("{} ({peer_is})", table::size(peer.len() as u64)),
        ratio: table::size_ratio(ours.len() as f64, peer.len() as f64),
        conditions: conditions.into(),
    }
}

/// A WASI 0.2 component (std Rust csv-summary for `wasm32-wasip2`) beside the same
/// source as a preview 1 module (`wasm32-wasip1`), on wasmtime: what a component costs
/// to start (a component links several core modules through WASI 0.2's resources) and
/// to ship.
fn component_rows(budget: Duration, table: &mut Table) -> anyhow::Result<()> {
    let inputs = vec!["readings".to_string()];
    let readings =
        || fleet_executor::MemoryInputs::new().with("readings", &b"timestamp,value\n1,20.5\n2,21.25\n3,19.75\n"[..]);
    let limits = fleet_schemas::Limits { fuel: 1_000_000_000, memory_pages: 0, timeout_ms: 0 };
    let component = Job::new(fleet_wasi_jobs::CSV_SUMMARY_COMPONENT).with_inputs(&inputs).with_limits(limits);
    let module = Job::new(fleet_wasi_jobs::CSV_SUMMARY_RUST).with_inputs(&inputs).with_limits(limits);
    for (label, cache) in [("instantiate + run", 8), ("compile + instantiate + run", 0)] {
        let wasmtime = WasmtimeExecutor::new(executor_config(cache)?)?;
        let (a, b) = (wasmtime.run(&component, readings()), wasmtime.run(&module, readings()));
        anyhow::ensure!(
            a.as_ref().ok().map(|r| &r.output) == b.as_ref().ok().map(|r| &r.output) && a.is_ok(),
            "the component and the module disagree: {a:?} / {b:?}"
        );
        let ours = mean(budget, || {
            black_box(wasmtime.run(&component, readings()).is_ok());
        });
        let peer = mean(budget, || {
            black_box(wasmtime.run(&module, readings()).is_ok());
        });
        table.add(time_row(
            &format!("csv-summary as a WASI 0.2 component: {label}, wasmtime"),
            (ours, peer),
            "preview 1 module",
            &format!(
                "the same std Rust source for wasm32-wasip2 and wasm32-wasip1; {}",
                if cache > 0 { "cached" } else { "no cache" }
            ),
        ));
    }
    table.add(size_row(
        "csv-summary: size, WASI 0.2 component vs preview 1 module",
        fleet_wasi_jobs::CSV_SUMMARY_COMPONENT,
        fleet_wasi_jobs::CSV_SUMMARY_RUST,
        "preview 1",
        "std Rust release, opt-level s, LTO, stripped; over 64 KiB travels in chunks",
    ));
    javascript_rows(budget, table, &component, readings)
}

/// csv-summary in JavaScript (ComponentizeJS: the program inside the SpiderMonkey engine)
/// beside the Rust component: what a JavaScript job costs to ship and to start. Its
/// compile is timed once (tens of seconds in a debug build).
fn javascript_rows(
    budget: Duration,
    table: &mut Table,
    rust: &Job<'_>,
    readings: impl Fn() -> fleet_executor::MemoryInputs,
) -> anyhow::Result<()> {
    let inputs = vec!["readings".to_string()];
    let limits = fleet_schemas::Limits { fuel: 1_000_000_000, memory_pages: 256, timeout_ms: 0 };
    let js = Job::new(fleet_wasi_jobs::CSV_SUMMARY_JS).with_inputs(&inputs).with_limits(limits);
    let wasmtime = WasmtimeExecutor::new(executor_config(8)?)?;
    let started = Instant::now();
    let first = wasmtime.run(&js, readings());
    let compiled = started.elapsed().as_secs_f64();
    let expected = wasmtime.run(rust, readings());
    anyhow::ensure!(
        first.as_ref().ok().map(|r| &r.output) == expected.as_ref().ok().map(|r| &r.output) && first.is_ok(),
        "the JavaScript and the Rust component disagree: {first:?} / {expected:?}"
    );
    let rust_cold = {
        let uncached = WasmtimeExecutor::new(executor_config(0)?)?;
        mean(budget, || {
            black_box(uncached.run(rust, readings()).is_ok());
        })
    };
    let conditions = "ComponentizeJS 0.23 (SpiderMonkey), HTTP left out; the Rust component beside it";
    table.add(time_row(
        "csv-summary in JavaScript (component): compile + instantiate + run, wasmtime",
        (compiled, rust_cold),
        "Rust component",
        &format!("{conditions}; one run, no cache"),
    ));
    let (ours, peer) = (
        mean(budget, || {
            black_box(wasmtime.run(&js, readings()).is_ok());
        }),
        mean(budget, || {
            black_box(wasmtime.run(rust, readings()).is_ok());
        }),
    );
    table.add(time_row(
        "csv-summary in JavaScript (component): instantiate + run, wasmtime",
        (ours, peer),
        "Rust component",
        &format!("{conditions}; cached"),
    ));
    table.add(size_row(
        "csv-summary: size, JavaScript component vs Rust component",
        fleet_wasi_jobs::CSV_SUMMARY_JS,
        fleet_wasi_jobs::CSV_SUMMARY_COMPONENT,
        "Rust component",
        "the engine travels with every job: 12 MB in 16 KiB chunks, under the 16 MiB module limit",
    ));
    Ok(())
}

fn runtime_row(figure: &str, wasmtime: f64, wasmi: f64, conditions: &str) -> Row {
    Row {
        figure: figure.into(),
        ours: format!("{} (wasmtime)", table::us(wasmtime)),
        peer: format!("{} (wasmi)", table::us(wasmi)),
        ratio: table::time_ratio(wasmtime, wasmi),
        conditions: conditions.into(),
    }
}
