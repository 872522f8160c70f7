//! Scenario 13: TLS on every link that crosses a network, under link faults.
//!
//! The operator's `fleetctl` reaches `serve` over its HTTPS API (found through the data
//! directory, as on the controller's machine); every gateway reaches the broker's MQTT
//! over TLS port through its fault proxy, half of them logging in with a password, half
//! with a client certificate (mTLS). The boards have no TLS client in their image:
//! they reach the first gateway's board relay in plain MQTT, as over a site's serial
//! line or segment, and the gateway carries them to the broker over TLS. A compute job
//! runs everywhere; the moment one password gateway and one certificate
//! gateway are recorded running, their links are cut. They finish while cut off; when
//! the links come back, each must make a new TLS handshake and log in again before
//! anything it holds can reach the controller, and every result must then arrive
//! exactly once: one execution per device, three events each.

use fleet_hil::proxy::Fault;
use fleet_hil::report::Row;
use fleet_hil::{DeviceKind, FleetOptions, Result};

use crate::{Bench, assert_events_recorded, assert_succeeded_once, job_of, push_compute};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet_with(FleetOptions::named("s13").tls(), 8)?;
    fleet.start()?;
    let lock = std::fs::read_to_string(fleet.fleetctl().data_dir().join("serve.lock"))
        .map_err(fleet_hil::error::io("reading serve.lock"))?;
    let lock: serde_json::Value = serde_json::from_str(&lock).expect("serve.lock is JSON");
    assert!(lock["api"].as_str().is_some_and(|url| url.starts_with("https://")), "serve's API is not HTTPS: {lock}");
    let gateways = fleet.ids_of(DeviceKind::Linux);
    let (with_cert, with_password): (Vec<String>, Vec<String>) =
        gateways.iter().cloned().partition(|id| fleet.device_dir(id).join("device.crt").is_file());
    assert!(
        !with_cert.is_empty() && !with_password.is_empty(),
        "certificates {with_cert:?}, passwords {with_password:?}"
    );
    let affected = [with_password[0].clone(), with_cert[0].clone()];
    let boards = fleet.ids_of(DeviceKind::Mcu);
    let relay = fleet.relay_gateway().map(str::to_string).unwrap_or_default();
    for board in &boards {
        assert!(fleet.relayed(board), "{board} does not go through {relay}'s board relay");
    }
    if !boards.is_empty() {
        // Online already, so the relay carried each of them to the broker.
        fleet.logs(&relay)?.wait_count(&["board relay: carrying a board"], boards.len(), fleet.guard())?;
    }

    let jobs = push_compute(&fleet)?;
    let mut pending: Vec<String> = affected.to_vec();
    fleet_hil::wait::until("both affected gateways to start their job", fleet.guard(), || {
        let mut still = Vec::new();
        for id in pending.drain(..) {
            let record = fleet.job(&job_of(&fleet, &jobs, &id)?)?;
            match record.latest().get(id.as_str()).map(|e| e.state.as_str()) {
                Some("running") => fleet.inject(&id, Fault::Cut)?,
                Some("succeeded" | "failed") => {
                    panic!("{id} finished before its link could be cut; make the job longer")
                }
                _ => still.push(id),
            }
        }
        pending = still;
        Ok(if pending.is_empty() { Ok(()) } else { Err(pending.len()) })
    })?;
    for id in &affected {
        let job = job_of(&fleet, &jobs, id)?;
        fleet.logs(id)?.wait_for(&[job.as_str(), "succeeded"], fleet.guard())?;
        let record = fleet.job(&job)?;
        let state = record.latest().get(id.as_str()).map(|e| e.state.clone()).unwrap_or_default();
        assert_eq!(state, "running", "{id}'s result reached the controller through a cut link");
    }
    for id in &affected {
        fleet.restore(id)?;
    }

    let n = fleet.ids().len();
    let mut succeeded = 0;
    for job in &jobs {
        let record = assert_succeeded_once(&fleet, job)?;
        succeeded += record.count_latest("succeeded");
    }
    assert_events_recorded(&fleet, 3)?;
    // Each cut gateway came back through a new connection, and a new TLS handshake.
    for id in &affected {
        let accepted = fleet.proxy(id)?.stats().accepted;
        assert!(accepted >= 2, "{id} never reconnected ({accepted} connections)");
    }

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: format!(
            "fleetctl over HTTPS; {} gateways on MQTT over TLS ({} with certificates), {} boards relayed over TLS by \
             {relay}; 2 TLS links cut mid-job",
            gateways.len(),
            with_cert.len(),
            boards.len()
        ),
        expected: format!("{n} succeeded, 3 events each"),
        recorded: format!("{succeeded} succeeded, 3 events each"),
        ..Row::default()
    })
}
