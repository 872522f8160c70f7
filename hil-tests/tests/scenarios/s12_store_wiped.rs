//! Scenario 12: a device's store is wiped mid-rollout: a gateway's state directory
//! removed (a reinstall, a new SD card) and a board's flash store erased, each while it
//! runs a job, and each started again on its empty store with its provisioned identity.
//!
//! Invariants: every execution ends in exactly one terminal state, no result is lost or
//! taken for a duplicate, and a store that comes back empty re-opens no replay
//! (docs/protocol.md, "Store resync"). A wiped device syncs with the controller before
//! it takes anything: the controller raises its replay floor above every envelope it
//! signed for it, numbers its events after every one it recorded, and signs the
//! execution it was running again.
//!
//! Checked: each job completes with one succeeded execution per device (the victims' on
//! their second life); the controller counts one store reset per victim (and none
//! elsewhere) and audits it; the envelope a victim ran before the wipe, replayed on its
//! jobs topic while still valid, is refused as `Replayed` in an event the device signed;
//! then every device runs a job.

use fleet_hil::report::Row;
use fleet_hil::{DeviceKind, JobRequest, Result};
use fleet_schemas::signed::is_signed;
use fleet_schemas::{DeviceId, Envelope, EventKind, Rejection, verify_event};

use crate::{Bench, assert_all_hello, assert_succeeded_once, job_of, push_compute};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s12", 8)?;
    fleet.start()?;
    let ids = fleet.ids();
    let linux = fleet.ids_of(DeviceKind::Linux);
    let mut victims = vec![linux[1].clone(), linux[linux.len() - 2].clone()];
    victims.extend(fleet.ids_of(DeviceKind::Mcu).into_iter().take(1));

    // A first job everywhere: every device has run an envelope and has events recorded.
    let wire = fleet.observer()?;
    assert!(wire.subscribe("fleet/devices/+/jobs")?);
    assert!(wire.subscribe("fleet/devices/+/events")?);
    let hello = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    assert_all_hello(&fleet, &hello)?;
    let ran: Vec<(String, Vec<u8>)> = victims
        .iter()
        .map(|id| {
            let topic = format!("fleet/devices/{id}/jobs");
            let envelope = wire.messages_on(&topic).into_iter().map(|m| m.payload).find(|p| is_signed::<Envelope>(p));
            (id.clone(), envelope.unwrap_or_else(|| panic!("the envelope {id} ran was not seen on the wire")))
        })
        .collect();

    // Mid-rollout: the moment a victim runs its compute job, its store is wiped and it
    // starts again on nothing but its identity.
    let jobs = push_compute(&fleet)?;
    let mut pending = victims.clone();
    fleet_hil::wait::until("every victim to be wiped while running", fleet.guard(), || {
        let mut still = Vec::new();
        for id in pending.drain(..) {
            let record = fleet.job(&job_of(&fleet, &jobs, &id)?)?;
            match record.latest().get(id.as_str()).map(|e| e.state.as_str()) {
                Some("running") => {
                    let device = fleet.device(&id)?;
                    device.logs().push("--- harness: store wiped");
                    device.wipe_store()?;
                    device.start()?;
                }
                Some("succeeded" | "failed") => panic!("{id} finished before its store could be wiped"),
                _ => still.push(id),
            }
        }
        pending = still;
        Ok(if pending.is_empty() { Ok(()) } else { Err(pending.clone()) })
    })?;

    // Every execution ends once, succeeded: the victims ran theirs again after the wipe.
    let mut succeeded = 0;
    for job in &jobs {
        let record = assert_succeeded_once(&fleet, job)?;
        succeeded += record.count_latest("succeeded");
    }
    for id in &victims {
        // Synced once on its first start, once more on its new store.
        let logs = fleet.logs(id)?;
        assert_eq!(logs.count(&["store synced"]), 2, "{id} did not sync its new store after the wipe");
    }

    // The controller saw each reset, once, and nowhere else.
    let records = fleet.device_records()?;
    for record in &records {
        let expected = u64::from(victims.contains(&record.id));
        assert_eq!(record.store.resets, expected, "{}: {:?}", record.id, record.store);
    }
    let audit = fleet.fleetctl().run(&["audit", "--json"])?;
    assert_eq!(audit.matches("device.store_reset").count(), victims.len(), "{audit}");

    // The envelopes the victims ran before their wipe are replays for the new stores.
    for (id, envelope) in &ran {
        wire.publish(&format!("fleet/devices/{id}/jobs"), envelope, false)?;
    }
    let keys: Vec<(String, fleet_schemas::VerifyingKey)> = victims
        .iter()
        .map(|id| Ok((id.clone(), fleet.config(id)?.device_key.signing_key().verifying_key())))
        .collect::<Result<_>>()?;
    wire.wait_for("every victim to refuse its old envelope as a replay", fleet.guard(), |messages| {
        let refused = keys
            .iter()
            .filter(|(id, key)| {
                let (Ok(sender), topic) = (DeviceId::new(id.as_str()), format!("fleet/devices/{id}/events")) else {
                    return false;
                };
                messages.iter().filter(|m| m.topic == topic).any(|m| {
                    verify_event(&m.payload, &sender, key).is_ok_and(|event| {
                        matches!(event.kind, EventKind::Rejected { reason: Rejection::Replayed { .. } })
                    })
                })
            })
            .count();
        if refused == keys.len() { Ok(()) } else { Err(format!("{refused} of {} refused so far", keys.len())) }
    })?;

    // Nothing is left stuck: every device runs a job.
    let after = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    assert_all_hello(&fleet, &after)?;

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: format!("store wiped mid-job ({})", victims.join(", ")),
        expected: format!("{} succeeded, {} resets, old envelopes replays", ids.len(), victims.len()),
        recorded: format!("{succeeded} succeeded, {} resets, old envelopes replays", victims.len()),
        ..Row::default()
    })
}
