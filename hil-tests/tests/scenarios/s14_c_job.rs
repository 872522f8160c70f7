//! Scenario 14: A plain C program pushed to the whole fleet, gateways and boards together.
//!
//! A WASI preview 1 module (`hello` in C, built with clang and wasi-libc) is pushed to
//! `--all` of a mixed fleet. Every device, gateway (wasmtime) and board (the firmware's
//! wasmi, in QEMU), runs the same signed module and prints its arguments through stdout,
//! its logs through stderr. Then a C program that calls what the fleet does not offer
//! (`sleep`, which is WASI's `poll_oneoff`) is refused on every device before it runs,
//! with the call named; and the fleet-ABI `hello` still runs everywhere.

use fleet_hil::report::Row;
use fleet_hil::{DeviceKind, JobRequest, Result};
use fleet_schemas::JobState;

use crate::{Bench, assert_all_hello, retained_job_status};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s14", 8)?;
    fleet.start()?;
    let gateways = fleet.ids_of(DeviceKind::Linux);
    let boards = fleet.ids_of(DeviceKind::Mcu);
    let devices = gateways.len() + boards.len();

    let request = JobRequest::new("hello-c", fleet_wasi_jobs::HELLO).flag("--arg", "fleet").flag("--arg", "in C");
    let job = fleet.push(&request)?;
    let record = fleet.wait_job(&job)?;
    assert_eq!(record.job.state, "completed", "{}", record.outcome_line());
    assert_eq!(record.job.total as usize, devices, "{}", record.outcome_line());
    for id in gateways.iter().chain(&boards) {
        let rows = record.executions_of(id);
        assert_eq!(rows.len(), 1, "{id}");
        assert_eq!(rows[0].state, "succeeded", "{id}: {:?}", rows[0]);
        assert_eq!(rows[0].output.as_deref(), Some("hello from C fleet in C\n"), "{id}");
        assert_eq!(rows[0].logs, ["hello job in C running with 2 argument(s)"], "{id}");
    }
    retained_job_status(&mut fleet, &job, |s| {
        s.state == JobState::Completed && s.counts.succeeded as usize == devices
    })?;

    let refused = fleet.push(&JobRequest::new("sleepy-c", fleet_wasi_jobs::SLEEPY))?;
    let refusals = fleet.wait_job(&refused)?;
    assert_eq!(refusals.job.total as usize, devices, "{}", refusals.outcome_line());
    for id in gateways.iter().chain(&boards) {
        let rows = refusals.executions_of(id);
        assert_eq!(rows.len(), 1, "{id}");
        assert_eq!(rows[0].state, "failed", "{id}: {:?}", rows[0]);
        let why = rows[0].reason.as_deref().unwrap_or_default();
        assert!(why.starts_with("unsupported"), "{id}: {why}");
        assert!(why.contains("wasi_snapshot_preview1.poll_oneoff"), "{id}: {why}");
        assert_eq!(rows[0].output.as_deref().unwrap_or_default(), "", "{id}: it ran");
    }

    let hello = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    let after = assert_all_hello(&fleet, &hello)?;
    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: "none; C (WASI) jobs to --all".into(),
        expected: format!(
            "hello in C ok on {} gateways and {} boards; sleep() refused everywhere, poll_oneoff named; then all ok",
            gateways.len(),
            boards.len()
        ),
        recorded: format!(
            "{}; sleepy: {}; then {}",
            record.outcome_line(),
            refusals.outcome_line(),
            after.outcome_line()
        ),
        ..Row::default()
    })
}
