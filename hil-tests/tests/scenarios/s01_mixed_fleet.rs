//! Scenario 1: A mixed fleet, one job, every device succeeds.
//!
//! The baseline every other scenario breaks: Linux agents and boards, provisioned as an
//! operator would, all online, the `hello` job pushed to `--all`. Every device runs it
//! exactly once and says hello with its own id; the controller records one succeeded
//! execution per device; the retained job status says completed with every count right;
//! every device's retained status says online.

use fleet_hil::report::Row;
use fleet_hil::{JobRequest, Result};
use fleet_schemas::JobState;

use crate::{Bench, assert_all_hello, retained_devices_online, retained_job_status};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s01", 8)?;
    fleet.start()?;
    let n = fleet.ids().len();

    let job = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    let record = assert_all_hello(&fleet, &job)?;
    for row in &record.executions {
        assert_eq!(row.attempt, 1, "{row:?}");
        assert_eq!(row.envelope_seq, Some(1), "the first envelope each device got: {row:?}");
    }

    let status = retained_job_status(&mut fleet, &job, |s| s.state == JobState::Completed)?;
    assert_eq!(status.total as usize, n);
    assert_eq!(status.counts.succeeded as usize, n, "{:?}", status.counts);
    let online = retained_devices_online(&mut fleet)?;
    assert_eq!(online.len(), n);
    for (id, status) in &online {
        let kind = if id.starts_with("mcu") { "mcu" } else { "gw" };
        assert_eq!(status.labels.get("kind").map(String::as_str), Some(kind), "{id}");
    }

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: "none".into(),
        expected: format!("{n} succeeded"),
        recorded: record.outcome_line(),
        ..Row::default()
    })
}
