//! Scenario 8: Hostile Wasm fails with its reason, and the device runs the next job.
//!
//! Invariant: hostile input costs bounded memory and time and never takes a process
//! down. Three hostile jobs go to every device at once: a loop that never ends, bounded
//! by fuel; the same loop bounded by the wall clock; a module that grows its memory
//! until refused. Each execution must fail with the reason an operator can act on (`out
//! of fuel`, `timeout`, `out of memory`), no agent may crash or restart, and then a
//! plain `hello` must succeed everywhere.

use fleet_hil::report::Row;
use fleet_hil::{JobRequest, Result};
use fleet_schemas::JobState;

use crate::{Bench, assert_all_hello, retained_job_status};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s08", 8)?;
    fleet.start()?;
    let ids = fleet.ids();
    let n = ids.len();

    let hostile = [
        (
            JobRequest::new("infinite-loop-fuel", fleet_example_jobs::INFINITE_LOOP).flag("--fuel", "5000000"),
            "out of fuel",
        ),
        (
            JobRequest::new("infinite-loop-clock", fleet_example_jobs::INFINITE_LOOP)
                .flag("--timeout", "2s")
                .flag("--fuel", "100000000000"),
            "timeout",
        ),
        (JobRequest::new("memory-grab", fleet_example_jobs::MEMORY_GRAB).flag("--memory-pages", "32"), "out of memory"),
    ];
    let mut jobs = Vec::new();
    for (request, reason) in &hostile {
        jobs.push((fleet.push(request)?, *reason));
    }
    let mut recorded = Vec::new();
    for (job, reason) in &jobs {
        let record = fleet.wait_job(job)?;
        assert_eq!(record.job.state, "completed", "{}", record.outcome_line());
        assert_eq!(record.job.counts.failed as usize, n, "{job}: {}", record.outcome_line());
        for id in &ids {
            let rows = record.executions_of(id);
            assert_eq!(rows.len(), 1, "{id}: one execution, no retry");
            let why = rows[0].reason.as_deref().unwrap_or_default();
            assert!(why.starts_with(reason), "{id} failed with {why:?}, expected {reason:?}");
        }
        let status = retained_job_status(&mut fleet, job, |s| s.state == JobState::Completed)?;
        assert_eq!(status.counts.failed as usize, n);
        recorded.push(format!("{n} {reason}"));
    }

    // Nothing crashed: every device still runs on its first start.
    for id in &ids {
        let device = fleet.device(id)?;
        assert!(device.is_running(), "{id} is not running after the hostile jobs");
        assert_eq!(device.logs().count(&["--- harness: starting"]), 1, "{id} was restarted");
    }

    let hello = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    let record = assert_all_hello(&fleet, &hello)?;
    retained_job_status(&mut fleet, &hello, |s| s.state == JobState::Completed && s.counts.succeeded as usize == n)?;
    let recorded = format!("{}; then {}", recorded.join(", "), record.outcome_line());

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: "hostile wasm: loop (fuel), loop (clock), memory grab".into(),
        expected: format!("3x{n} failed with reason; then {n} ok"),
        recorded,
        ..Row::default()
    })
}
