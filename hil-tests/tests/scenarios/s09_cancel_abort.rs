//! Scenario 9: Cancel and the abort threshold during a rollout.
//!
//! - Cancel: a job that never ends on its own (an infinite loop with a 60 s clock) runs
//!   on every Linux agent when the operator runs `fleetctl job cancel`. Every device must
//!   get the signed cancel order and stop the running job: the job is `canceled` at once,
//!   and every execution ends `canceled` as its device reports, in the records and in
//!   the retained status.
//! - Abort: a job that fails everywhere (out of fuel), rolled out in batches of two with
//!   `--abort-failures 50 --abort-min 3`. Once three devices have failed, the rollout
//!   must stop: the job is `aborted`, nothing succeeded, every execution is failed or
//!   canceled, and the devices of the later batches never got an envelope.
//!
//! Then every device runs `hello`: a device still spinning in the canceled loop (one job
//! at a time) could not.
//!
//! [`run_on_boards`] is the same cancel on the boards: the firmware runs the job in fuel
//! slices and reads its link between them, so the cancel order reaches the running job,
//! which ends `canceled`; the boards never drop off the broker meanwhile (no reconnect
//! in their consoles).

use fleet_hil::report::Row;
use fleet_hil::{DeviceKind, Fleet, JobRecord, JobRequest, Result};
use fleet_schemas::JobState;

use crate::{Bench, assert_all_hello, retained_job_status};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s09", 8)?;
    fleet.start()?;
    let ids = fleet.ids();
    let n = ids.len();

    // Cancel, with every Linux agent running the job.
    let linux = fleet.ids_of(DeviceKind::Linux);
    let cancel = cancel_running(&mut fleet, "kind=gw", &linux)?;
    let record = fleet.job(&cancel)?;
    check_canceled(&mut fleet, &cancel, &record, &linux)?;

    // Abort: failures past the threshold stop the rollout.
    let failing = JobRequest::new("infinite-loop-fuel", fleet_example_jobs::INFINITE_LOOP)
        .flag("--fuel", "5000000")
        .flag("--batch", "2")
        .flag("--abort-failures", "50")
        .flag("--abort-min", "3");
    let abort = fleet.push(&failing)?;
    let aborted = fleet.wait_job_where(&abort, "aborted, every execution ended", |r| {
        r.is_finished() && r.executions.iter().all(|e| e.is_terminal())
    })?;
    assert_eq!(aborted.job.state, "aborted", "{}", aborted.outcome_line());
    let failed = aborted.count_latest("failed");
    let canceled = aborted.count_latest("canceled");
    assert_eq!(aborted.count_latest("succeeded"), 0);
    assert!((3..=4).contains(&failed), "the rollout went on past the threshold: {}", aborted.outcome_line());
    assert_eq!(failed + canceled, n, "{}", aborted.outcome_line());
    let never_sent = aborted.latest().values().filter(|e| e.envelope_seq.is_none()).count();
    assert!(never_sent >= n - 4, "later batches got envelopes: {}", aborted.outcome_line());
    for execution in aborted.latest().values().filter(|e| e.state == "failed") {
        assert!(execution.reason.as_deref().unwrap_or_default().starts_with("out of fuel"), "{execution:?}");
    }
    retained_job_status(&mut fleet, &abort, |s| s.state == JobState::Aborted)?;

    let hello = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    let after = assert_all_hello(&fleet, &hello)?;

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: "cancel, all linux running; abort at 50% of >=3, batches of 2".into(),
        expected: format!("{} canceled; aborted (3-4 failed, >={} never sent); then {n} ok", linux.len(), n - 4),
        recorded: format!(
            "{} canceled; aborted ({failed} failed, {never_sent} never sent); then {}",
            record.count_latest("canceled"),
            after.outcome_line()
        ),
        ..Row::default()
    })
}

/// Pushes the endless job to `selector`, waits until `ids` all run it, cancels it, and
/// waits until every execution has ended.
fn cancel_running(fleet: &mut Fleet, selector: &str, ids: &[String]) -> Result<String> {
    let spin = JobRequest::new("infinite-loop", fleet_example_jobs::INFINITE_LOOP)
        .selector(selector)
        .flag("--timeout", "60s")
        .flag("--fuel", "100000000000");
    let cancel = fleet.push(&spin)?;
    fleet.wait_executions(&cancel, &ids.iter().map(String::as_str).collect::<Vec<_>>(), &["running"])?;
    fleet.fleetctl().run(&["job", "cancel", &cancel])?;
    // The job is canceled at once; each running execution ends when its device reports.
    fleet.wait_job_where(&cancel, "canceled, every execution ended", |r| {
        r.is_finished() && r.executions.iter().all(|e| e.is_terminal())
    })?;
    Ok(cancel)
}

fn check_canceled(fleet: &mut Fleet, job: &str, record: &JobRecord, ids: &[String]) -> Result<()> {
    assert_eq!(record.job.state, "canceled", "{}", record.outcome_line());
    assert!(record.job.cancel_requested);
    for id in ids {
        let rows = record.executions_of(id);
        assert_eq!(rows.len(), 1, "{id}");
        assert_eq!(rows[0].state, "canceled", "{id}: {:?}", rows[0]);
    }
    let n = ids.len();
    retained_job_status(fleet, job, |s| s.state == JobState::Canceled && s.counts.canceled as usize == n)?;
    Ok(())
}

pub fn run_on_boards(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s09b", 8)?;
    fleet.start()?;
    let boards = fleet.ids_of(DeviceKind::Mcu);
    assert!(!boards.is_empty(), "no boards on this bench");
    let connects = |fleet: &Fleet| -> Result<Vec<usize>> {
        boards.iter().map(|id| Ok(fleet.logs(id)?.count(&["mqtt: connected"]))).collect()
    };
    let before = connects(&fleet)?;
    let cancel = cancel_running(&mut fleet, "kind=mcu", &boards)?;
    let record = fleet.job(&cancel)?;
    check_canceled(&mut fleet, &cancel, &record, &boards)?;
    assert_eq!(connects(&fleet)?, before, "a board dropped off the broker while it ran the job");
    for id in &boards {
        let logs = fleet.logs(id)?;
        assert!(logs.find(&["job: failed", "slices"]).is_some(), "{id}: the job did not end in slices");
    }
    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: "cancel with the boards running".into(),
        expected: format!("{} canceled", boards.len()),
        recorded: record.outcome_line(),
        ..Row::default()
    })
}
