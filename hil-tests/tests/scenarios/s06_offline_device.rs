//! Scenario 6: A device offline for a whole rollout gets the job when it comes back; one that
//! comes back after the deadline does not run it, and the controller says `timed_out`.
//!
//! Invariants: status is pushed, never polled (the controller knows the device is gone
//! from its last-will, and knows it is back from its retained status); every execution
//! ends in exactly one terminal state; nothing runs outside its validity window.
//!
//! - A: one device loses power before the job is pushed. Everyone else succeeds; the job
//!   stays in progress (also in its retained status) with that device's execution
//!   unanswered. The device powers up on its old state, gets the envelope, runs it, and
//!   the job completes.
//! - B: another Linux agent (and a board, when there are boards) loses power, and the
//!   job is pushed with `--deadline 3s`. The controller marks their executions
//!   `timed_out` and the job completes without them. When they come back, the stale
//!   envelope is still queued in their broker sessions. The Linux agent, which has a
//!   clock, refuses it as expired and runs nothing. The board has no clock: it judges
//!   expiry by the newest envelope it has accepted (docs/protocol.md, "The clock"),
//!   which is older, so it may run the job, and does; what must hold is that the
//!   controller's record stays `timed_out`, one terminal state, the late result ignored.
//!   Both run the next job.

use fleet_hil::report::Row;
use fleet_hil::{DeviceKind, JobRequest, Result};
use fleet_schemas::JobState;

use crate::{Bench, assert_all_hello, retained_job_status};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s06", 8)?;
    fleet.start()?;
    let ids = fleet.ids();
    let n = ids.len();
    let late = ids[2].clone();
    let expired = ids[3].clone();
    let clockless = fleet.ids_of(DeviceKind::Mcu).last().cloned();
    let mut gone: Vec<String> = vec![expired.clone()];
    gone.extend(clockless.iter().cloned());
    let gone_refs: Vec<&str> = gone.iter().map(String::as_str).collect();

    // A: offline for the whole rollout.
    fleet.device(&late)?.power_cut()?;
    fleet.wait_offline(&[late.as_str()])?;
    let job_a = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    let record = fleet
        .wait_job_where(&job_a, "done everywhere but the offline device", |r| r.count_latest("succeeded") == n - 1)?;
    assert_eq!(record.job.state, "in_progress");
    let waiting = record.latest().get(late.as_str()).map(|e| e.state.clone()).unwrap_or_default();
    assert!(matches!(waiting.as_str(), "queued" | "sent"), "{late} is offline but its execution is {waiting}");
    retained_job_status(&mut fleet, &job_a, |s| {
        s.state == JobState::InProgress && s.counts.succeeded as usize == n - 1
    })?;
    fleet.device(&late)?.start()?;
    let record_a = assert_all_hello(&fleet, &job_a)?;
    retained_job_status(&mut fleet, &job_a, |s| s.state == JobState::Completed && s.counts.succeeded as usize == n)?;

    // B: back only after the deadline.
    for id in &gone {
        fleet.device(id)?.power_cut()?;
    }
    fleet.wait_offline(&gone_refs)?;
    let job_b = fleet.push(&JobRequest::new("hello-deadline", fleet_example_jobs::HELLO).flag("--deadline", "3s"))?;
    let record_b = fleet.wait_job(&job_b)?;
    assert_eq!(record_b.job.state, "completed", "{}", record_b.outcome_line());
    assert_eq!(record_b.count_latest("succeeded"), n - gone.len(), "{}", record_b.outcome_line());
    for id in &gone {
        let missed = record_b.latest().get(id.as_str()).map(|e| e.state.clone()).unwrap_or_default();
        assert_eq!(missed, "timed_out", "{id} missed the deadline");
    }
    retained_job_status(&mut fleet, &job_b, |s| {
        s.state == JobState::Completed && s.counts.timed_out as usize == gone.len()
    })?;

    // The envelope's `not_after` is the deadline rounded up to a whole second, and valid
    // through that second: the device may still take it for up to two seconds after the
    // controller gave up. Come back once it has surely expired.
    let not_after = gone
        .iter()
        .filter_map(|id| record_b.latest().get(id.as_str()).and_then(|e| e.deadline_ms))
        .max()
        .unwrap_or(0)
        .div_ceil(1000);
    fleet_hil::wait::until_true("the stale envelope to expire", fleet.guard(), || {
        fleet_hil::forge::unix_now() > not_after
    })?;
    for id in &gone {
        fleet.device(id)?.start()?;
    }
    fleet.wait_online(&gone_refs)?;
    // The next job is a sync point: the devices have dealt with what was queued for them.
    let job_c = fleet.push(&JobRequest::new("hello-after", fleet_example_jobs::HELLO).to(&gone_refs))?;
    let record_c = fleet.wait_job(&job_c)?;
    assert_eq!(record_c.count_latest("succeeded"), gone.len(), "{}", record_c.outcome_line());
    let ran_stale = fleet.logs(&expired)?.count(&[job_b.as_str()]);
    assert_eq!(ran_stale, 0, "{expired} queued or ran the job whose deadline had passed");
    let after = fleet.job(&job_b)?;
    for id in &gone {
        assert_eq!(after.latest().get(id.as_str()).map(|e| e.state.as_str()), Some("timed_out"), "{id}");
        assert_eq!(after.executions_of(id).len(), 1, "{id}");
    }
    let clockless_ran = match &clockless {
        Some(id) => fleet.logs(id)?.count(&[job_b.as_str(), "succeeded"]) > 0,
        None => false,
    };

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: format!("{late} off for a rollout; {} off past a 3s deadline", gone.join(", ")),
        expected: format!("{n} succeeded; {} succeeded + {} timed_out", n - gone.len(), gone.len()),
        recorded: format!(
            "{}; {}{}",
            record_a.outcome_line(),
            record_b.outcome_line(),
            if clockless_ran { " (clockless board ran it late: ignored)" } else { "" }
        ),
        ..Row::default()
    })
}
