//! Scenario 3: The broker restarts during a rollout.
//!
//! With the embedded broker a broker restart is a controller restart (scenario 4), so
//! this one runs the fleet on mosquitto (`fleetctl serve --broker`, credentials and ACL
//! from `fleetctl broker acl`, persistence on): the broker goes away on its own while
//! the controller and every device stay up.
//!
//! A `hello` rollout in batches of two is under way when every device's link is cut
//! and mosquitto is stopped and started again. Before the links come back, a fresh
//! subscriber must find the retained documents restored from the broker's persistence:
//! every device's status and the job's status (nobody could have published them again:
//! the devices are cut off, and the job has not changed). Then the links come back:
//! the devices and the controller reconnect to their persistent sessions, and the
//! rollout completes, one success per device, nothing signed twice, three events
//! recorded per device, the controller never restarted.

use std::time::Duration;

use fleet_hil::mosquitto::Mosquitto;
use fleet_hil::report::Row;
use fleet_hil::{BrokerMode, FleetOptions, JobRequest, Result};
use fleet_schemas::status::from_json;
use fleet_schemas::{DeviceStatus, JobState, JobStatus};

use crate::{Bench, assert_all_hello, assert_events_recorded, retained_devices_online, retained_job_status};

pub fn run(bench: &Bench) -> Result<Row> {
    Mosquitto::available()?;
    let mut fleet = bench.fleet_with(FleetOptions::named("s03").broker(BrokerMode::Mosquitto), 8)?;
    fleet.start()?;
    let ids = fleet.ids();
    let n = ids.len();

    let job = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO).flag("--batch", "2"))?;
    fleet.wait_job_where(&job, "one batch done and the next running", |r| {
        r.count_latest("succeeded") >= 2 && r.count_latest("running") >= 1
    })?;

    for id in &ids {
        fleet.inject(id, fleet_hil::Fault::Cut)?;
    }
    fleet.restart_broker()?;

    // Retained documents came back from the broker's disk, not from their publishers.
    let observer = fleet.observer()?;
    observer.subscribe("fleet/devices/+/status")?;
    observer.subscribe(&format!("fleet/jobs/{job}/status"))?;
    let restored = observer.wait_for("retained documents restored", fleet.guard(), |messages| {
        let devices = messages
            .iter()
            .filter(|m| m.retain)
            .filter_map(|m| from_json::<DeviceStatus>(&m.payload).ok())
            .filter(|s| ids.iter().any(|id| id == s.device_id.as_str()))
            .count();
        let job_status = messages
            .iter()
            .filter(|m| m.retain && m.topic.ends_with(&format!("{job}/status")))
            .filter_map(|m| from_json::<JobStatus>(&m.payload).ok())
            .any(|s| s.state == JobState::InProgress);
        if devices == n && job_status {
            Ok(devices)
        } else {
            Err(format!("{devices} device statuses, job {job_status}"))
        }
    })?;
    observer.disconnect();

    for id in &ids {
        fleet.restore(id)?;
    }
    let record = assert_all_hello(&fleet, &job)?;
    for row in &record.executions {
        assert_eq!(row.envelope_seq, Some(1), "{}: signed again", row.device);
    }
    assert_events_recorded(&fleet, 3)?;
    retained_job_status(&mut fleet, &job, |s| s.state == JobState::Completed && s.counts.succeeded as usize == n)?;
    retained_devices_online(&mut fleet)?;
    assert_eq!(fleet.controller().starts(), 1, "the controller restarted");
    let broker_starts = fleet.mosquitto().map_or(0, |m| m.starts());
    assert_eq!(broker_starts, 2);
    for id in &ids {
        assert!(fleet.proxy(id)?.stats().accepted >= 2, "{id} never reconnected");
    }
    // The broker restart is visible to the controller as one lost connection.
    fleet.controller_logs().wait_for(&["connected to the broker"], Duration::from_secs(1))?;

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: "mosquitto restarted mid-rollout, all links down meanwhile".into(),
        expected: format!("{n} retained statuses restored; {n} succeeded"),
        recorded: format!("{restored} restored; {}", record.outcome_line()),
        ..Row::default()
    })
}
