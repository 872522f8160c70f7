//! Scenario 14: A plain C program pushed to the whole fleet.
//!
//! A WASI preview 1 module (`hello` in C, built with clang and wasi-libc) is pushed to
//! `--all` of a mixed fleet. Every gateway runs it and prints its arguments through
//! stdout; the boards, whose image has no WASI yet, get no envelope at all (`job push`
//! skips them and says so), so nothing is refused on a board and the job completes.
//! Then the fleet-ABI `hello` still runs everywhere, boards included.

use fleet_hil::report::Row;
use fleet_hil::{DeviceKind, JobRequest, Result};
use fleet_schemas::JobState;

use crate::{Bench, assert_all_hello, retained_job_status};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s14", 8)?;
    fleet.start()?;
    let gateways = fleet.ids_of(DeviceKind::Linux);
    let boards = fleet.ids_of(DeviceKind::Mcu);

    let request = JobRequest::new("hello-c", fleet_wasi_jobs::HELLO).flag("--arg", "fleet").flag("--arg", "in C");
    let job = fleet.push(&request)?;
    let record = fleet.wait_job(&job)?;
    assert_eq!(record.job.state, "completed", "{}", record.outcome_line());
    assert_eq!(record.job.total as usize, gateways.len(), "{}", record.outcome_line());
    for id in &gateways {
        let rows = record.executions_of(id);
        assert_eq!(rows.len(), 1, "{id}");
        assert_eq!(rows[0].state, "succeeded", "{id}: {:?}", rows[0]);
        assert_eq!(rows[0].output.as_deref(), Some("hello from C fleet in C\n"), "{id}");
        assert_eq!(rows[0].logs, ["hello job in C running with 2 argument(s)"], "{id}");
    }
    for id in &boards {
        assert!(record.executions_of(id).is_empty(), "{id} was sent a WASI job");
    }
    retained_job_status(&mut fleet, &job, |s| {
        s.state == JobState::Completed && s.counts.succeeded as usize == gateways.len()
    })?;

    let hello = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    let after = assert_all_hello(&fleet, &hello)?;
    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: "none; a C (WASI) job to --all".into(),
        expected: format!("{} gateways succeeded, {} boards skipped; then all ok", gateways.len(), boards.len()),
        recorded: format!("{}, {} boards skipped; then {}", record.outcome_line(), boards.len(), after.outcome_line()),
        ..Row::default()
    })
}
