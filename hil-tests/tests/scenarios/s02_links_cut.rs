//! Scenario 2: Links cut mid-execution on a third of the devices: every result arrives after
//! the link is back, none doubled.
//!
//! Invariants: an event is on durable storage before it is published and leaves it only
//! after the controller has it; every execution ends in exactly one terminal state at the
//! controller. A compute job runs on every device (a longer one on Linux agents than on
//! the boards, so both run for seconds). The moment the controller records a device of
//! the affected third as running, its link breaks, each in a different way: cut (closed,
//! refused), black-holed (nothing crosses, the device must find out by keep-alive), or
//! half-open (what the device sends is lost). The devices finish their jobs while cut
//! off; the controller must still show them running, since nothing got through. Then
//! the links come back, and every result must arrive: one execution per device, one
//! success, exactly three events recorded per device (accepted, started, succeeded),
//! however many times the devices had to publish them.

use fleet_hil::Result;
use fleet_hil::proxy::{Direction, Fault};
use fleet_hil::report::Row;
use fleet_schemas::JobState;

use crate::{Bench, assert_events_recorded, assert_succeeded_once, job_of, push_compute, retained_job_status};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s02", 9)?;
    fleet.start()?;
    let ids = fleet.ids();
    let n = ids.len();
    // Every third device, so the boards (last in the sorted ids) are hit too.
    let affected: Vec<String> = ids.iter().skip(2).step_by(3).cloned().collect();
    let faults = [Fault::Cut, Fault::BlackHole, Fault::HalfOpen(Direction::DeviceToBroker)];

    let jobs = push_compute(&fleet)?;

    // Break each affected link the moment its device is running the job.
    let mut pending: Vec<(String, Fault)> = affected.iter().cloned().zip(faults).collect();
    fleet_hil::wait::until("every affected device to start its job", fleet.guard(), || {
        let mut still = Vec::new();
        for (id, fault) in pending.drain(..) {
            let record = fleet.job(&job_of(&fleet, &jobs, &id)?)?;
            match record.latest().get(id.as_str()).map(|e| e.state.as_str()) {
                Some("running") => fleet.inject(&id, fault)?,
                Some("succeeded" | "failed") => {
                    panic!("{id} finished before its link could be cut; make the job longer")
                }
                _ => still.push((id, fault)),
            }
        }
        pending = still;
        Ok(if pending.is_empty() { Ok(()) } else { Err(pending.len()) })
    })?;

    // Each affected device finishes its job while cut off ...
    for id in &affected {
        let job = job_of(&fleet, &jobs, id)?;
        let logs = fleet.logs(id)?;
        logs.wait_for(&[job.as_str(), "succeeded"], fleet.guard())?;
        let fault_at = logs.position(&["--- harness: link fault"]);
        let done_at = logs.position(&[job.as_str(), "succeeded"]);
        assert!(fault_at < done_at, "{id} finished before its link broke: not mid-execution");
    }
    // ... and the others' results are all in, but not theirs: nothing got through.
    for job in &jobs {
        fleet.wait_job_where(job, "with every unaffected device done", |record| {
            record.latest().iter().all(|(id, e)| affected.iter().any(|a| a == id) || e.state == "succeeded")
        })?;
    }
    for id in &affected {
        let record = fleet.job(&job_of(&fleet, &jobs, id)?)?;
        let state = record.latest().get(id.as_str()).map(|e| e.state.clone()).unwrap_or_default();
        assert_eq!(state, "running", "{id}'s result reached the controller through a broken link");
    }

    for id in &affected {
        fleet.restore(id)?;
    }
    let mut succeeded = 0;
    for job in &jobs {
        let record = assert_succeeded_once(&fleet, job)?;
        let status = retained_job_status(&mut fleet, job, |s| s.state == JobState::Completed)?;
        assert_eq!(status.counts.succeeded, status.total);
        succeeded += record.count_latest("succeeded");
    }
    // None doubled: three events recorded per device, whatever was redelivered.
    assert_events_recorded(&fleet, 3)?;
    let reconnects: u64 =
        affected.iter().map(|id| fleet.proxy(id).map(|p| p.stats().accepted.saturating_sub(1)).unwrap_or(0)).sum();

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: format!("{} links broken mid-job (cut, black-hole, half-open)", affected.len()),
        expected: format!("{n} succeeded, 3 events each"),
        recorded: format!("{succeeded} succeeded, 3 events each (after {reconnects} reconnects)"),
        ..Row::default()
    })
}
