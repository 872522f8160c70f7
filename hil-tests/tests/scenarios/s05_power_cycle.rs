//! Scenario 5: Power cycles during a job: Linux agents (`SIGKILL`, then started on the same
//! state dir) and boards (QEMU killed, then booted on the same flash file).
//!
//! Invariants: an envelope is on durable storage before it is acknowledged; every
//! execution ends in exactly one terminal state. A compute job runs everywhere; the
//! moment two Linux agents and two boards are recorded as running it, their power is
//! cut, and they come back on what they had written. Each must find the interrupted
//! execution in its store, run it again, and report one success: one execution per
//! device at the controller, and exactly three events recorded per device (accepted,
//! started, succeeded), so the restart did not send `Started` twice or lose anything.

use fleet_hil::report::Row;
use fleet_hil::{DeviceKind, Result};
use fleet_schemas::JobState;

use crate::{Bench, assert_events_recorded, assert_succeeded_once, job_of, push_compute, retained_job_status};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s05", 8)?;
    fleet.start()?;
    let ids = fleet.ids();
    let n = ids.len();
    let linux = fleet.ids_of(DeviceKind::Linux);
    let mut victims: Vec<String> = vec![linux[1].clone(), linux[linux.len() - 2].clone()];
    victims.extend(fleet.ids_of(DeviceKind::Mcu));

    let jobs = push_compute(&fleet)?;
    let mut pending = victims.clone();
    fleet_hil::wait::until("every victim to be cycled while running", fleet.guard(), || {
        let mut still = Vec::new();
        for id in pending.drain(..) {
            let record = fleet.job(&job_of(&fleet, &jobs, &id)?)?;
            match record.latest().get(id.as_str()).map(|e| e.state.as_str()) {
                Some("running") => fleet.device(&id)?.power_cycle()?,
                Some("succeeded" | "failed") => panic!("{id} finished before its power could be cut"),
                _ => still.push(id),
            }
        }
        pending = still;
        Ok(if pending.is_empty() { Ok(()) } else { Err(pending.clone()) })
    })?;

    let mut succeeded = 0;
    for job in &jobs {
        let record = assert_succeeded_once(&fleet, job)?;
        succeeded += record.count_latest("succeeded");
        retained_job_status(&mut fleet, job, |s| s.state == JobState::Completed && s.counts.succeeded == s.total)?;
    }
    // The victims finished after the power cut, on their second boot.
    for id in &victims {
        let job = job_of(&fleet, &jobs, id)?;
        let logs = fleet.logs(id)?;
        assert_eq!(logs.count(&["--- harness: starting"]), 2, "{id} was not restarted");
        let cut_at = logs.position(&["--- harness: SIGKILL"]);
        let done_at = logs.position(&[job.as_str(), "succeeded"]);
        assert!(cut_at < done_at, "{id} finished before the power cut");
    }
    assert_events_recorded(&fleet, 3)?;

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: format!("{} power cycles mid-job ({})", victims.len(), victims.join(", ")),
        expected: format!("{n} succeeded, 3 events each"),
        recorded: format!("{succeeded} succeeded, 3 events each"),
        ..Row::default()
    })
}
