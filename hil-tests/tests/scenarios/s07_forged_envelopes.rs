//! Scenario 7: Forged, replayed, expired and misdirected envelopes on the wire.
//!
//! Invariant: nothing runs that was not signed by a trusted key, addressed to this
//! device, inside its validity window, with a sequence above the last accepted one. The
//! attacker here has the broker (it publishes as the controller identity, on every
//! device's jobs topic) and even the controller's job key from its disk (see
//! `fleet_hil::forge` for why each forgery has exactly one thing wrong):
//!
//! | injected | device answers | controller |
//! |---|---|---|
//! | signed by an unknown key | `Rejected(UnknownKey)`, attempt 0 | records the event, acks it, changes no job |
//! | the controller's key id, wrong signature | `Rejected(BadSignature)`, attempt 0 | same |
//! | the exact bytes of the envelope it ran | nothing (a redelivery) | nothing to record |
//! | a new job under a used sequence number | `Rejected(Replayed)` | records it (unknown execution) |
//! | `not_after` an hour ago | `Rejected(Expired)` | same |
//! | addressed to the next device | `Rejected(WrongTarget)`, attempt 0 | same |
//!
//! The reasons are read from the devices' own signed events (verified with each
//! device's key, as the controller does); the controller's side is its records: each
//! device's recorded event count grows by exactly its five rejections, the controller's
//! log names each forged job as an unknown execution, no forged job id becomes a job,
//! the real job's record does not change, and no event counts as malformed. Then every
//! device runs a job: nothing was left stuck.

use std::collections::BTreeMap;

use fleet_hil::forge::Forge;
use fleet_hil::report::Row;
use fleet_hil::{JobRequest, Result};
use fleet_schemas::{DeviceId, EventKind, JobId, Rejection, verify_event};

use crate::{Bench, assert_all_hello, retained_job_status};

/// What the device must say about each attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    UnknownKey,
    BadSignature,
    Replayed,
    Expired,
    WrongTarget,
}

impl Expect {
    fn matches(self, reason: &Rejection) -> bool {
        matches!(
            (self, reason),
            (Expect::UnknownKey, Rejection::UnknownKey { .. })
                | (Expect::BadSignature, Rejection::BadSignature)
                | (Expect::Replayed, Rejection::Replayed { .. })
                | (Expect::Expired, Rejection::Expired { .. })
                | (Expect::WrongTarget, Rejection::WrongTarget { .. })
        )
    }
}

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s07", 8)?;
    fleet.start()?;
    let ids = fleet.ids();
    let n = ids.len();

    // The attacker watches the wire first: it will replay what the controller sends.
    let wire = fleet.observer()?;
    assert!(wire.subscribe("fleet/devices/+/jobs")?);
    assert!(wire.subscribe("fleet/devices/+/events")?);

    let hello = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    assert_all_hello(&fleet, &hello)?;
    let hello_before = fleet.fleetctl().run(&["job", "status", &hello, "--json"])?;
    let recorded_before: BTreeMap<String, u64> =
        fleet.device_records()?.into_iter().map(|d| (d.id, d.acked_event_seq)).collect();

    let forge = fleet.forge()?;
    // (device, forged job id) -> the rejection it must produce.
    let mut expected: BTreeMap<(String, JobId), Expect> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let me = fleet.device_id(id)?;
        let next = fleet.device_id(&ids[(i + 1) % n])?;
        let topic = format!("fleet/devices/{id}/jobs");
        let captured = wire.messages_on(&topic).into_iter().next().map(|m| m.payload);
        let captured = captured.unwrap_or_else(|| panic!("the controller's envelope to {id} was not seen on the wire"));

        let mut attack =
            |expect: Option<Expect>, build: &dyn Fn(&DeviceId, &fleet_schemas::JobSpec) -> Result<Vec<u8>>| {
                let job = Forge::job_id();
                let bytes = build(&me, &Forge::spec(job, fleet_example_jobs::HELLO))?;
                if let Some(expect) = expect {
                    expected.insert((id.clone(), job), expect);
                }
                wire.publish(&topic, &bytes, false)
            };
        attack(Some(Expect::UnknownKey), &|d, s| forge.unknown_key(d, s))?;
        attack(Some(Expect::BadSignature), &|d, s| forge.bad_signature(d, s))?;
        attack(None, &|_, _| Ok(captured.clone()))?;
        attack(Some(Expect::Replayed), &|d, s| forge.stale_seq(d, s))?;
        attack(Some(Expect::Expired), &|d, s| forge.expired(d, s))?;
        attack(Some(Expect::WrongTarget), &|_, s| forge.misdirected(&next, s))?;
    }

    // Every device refuses each forgery with its reason, in an event it signed.
    let keys: BTreeMap<String, fleet_schemas::VerifyingKey> = ids
        .iter()
        .map(|id| Ok((id.clone(), fleet.config(id)?.device_key.signing_key().verifying_key())))
        .collect::<Result<_>>()?;
    let refusals = wire.wait_for("every device to refuse every forgery", fleet.guard(), |messages| {
        let mut seen: BTreeMap<(String, JobId), Rejection> = BTreeMap::new();
        for message in messages {
            let Some(device) = message.topic.strip_prefix("fleet/devices/").and_then(|t| t.strip_suffix("/events"))
            else {
                continue;
            };
            let (Some(key), Ok(sender)) = (keys.get(device), DeviceId::new(device)) else { continue };
            let Ok(event) = verify_event(&message.payload, &sender, key) else { continue };
            if let EventKind::Rejected { reason } = &event.kind {
                seen.insert((device.to_string(), event.key.job_id), reason.clone());
            }
            assert!(
                !expected.contains_key(&(device.to_string(), event.key.job_id))
                    || matches!(event.kind, EventKind::Rejected { .. }),
                "a forged job got further than a refusal on {device}: {event:?}"
            );
        }
        let missing = expected.keys().filter(|k| !seen.contains_key(k)).count();
        if missing == 0 { Ok(seen) } else { Err(format!("{missing} refusals not seen yet")) }
    })?;
    for (key, expect) in &expected {
        let reason = &refusals[key];
        assert!(expect.matches(reason), "{} refused a forgery expected as {expect:?} with {reason:?}", key.0);
    }

    // The controller recorded exactly the five refusals per device (the replayed bytes
    // produced none) and logged each forged job as an unknown execution.
    fleet_hil::wait::until("the controller to record every refusal", fleet.guard(), || {
        let now: BTreeMap<String, u64> =
            fleet.device_records()?.into_iter().map(|d| (d.id, d.acked_event_seq)).collect();
        let behind: Vec<String> = ids
            .iter()
            .filter(|id| now.get(*id).copied().unwrap_or(0) < recorded_before.get(*id).copied().unwrap_or(0) + 5)
            .cloned()
            .collect();
        Ok(if behind.is_empty() { Ok(now) } else { Err(behind) })
    })
    .map(|now| {
        for id in &ids {
            assert_eq!(now[id], recorded_before[id] + 5, "{id}: recorded events beyond its five refusals");
        }
    })?;
    let log = fleet.controller_logs();
    for (device, job) in expected.keys() {
        let job = job.to_hex();
        log.wait_for(&["unknown execution", device.as_str(), job.as_str()], fleet.guard())?;
    }
    let jobs = fleet.fleetctl().run(&["job", "list", "--json"])?;
    for (_, job) in expected.keys() {
        assert!(!jobs.contains(&job.to_hex()), "a forged job id became a job");
    }
    assert_eq!(fleet.fleetctl().run(&["job", "status", &hello, "--json"])?, hello_before, "the real job changed");
    assert_eq!(fleet.controller_record()?.counter("events.malformed"), 0, "a device's refusal counted as malformed");

    // Every device is healthy: it runs the next job.
    let after = fleet.push(&JobRequest::new("hello-after", fleet_example_jobs::HELLO))?;
    let record = assert_all_hello(&fleet, &after)?;
    retained_job_status(&mut fleet, &after, |s| s.counts.succeeded as usize == n)?;

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: format!("{} forged envelopes: bad key/sig, replays, expired, misdirected", 6 * n),
        expected: format!("{} refusals, 0 runs; then {n} ok", 5 * n),
        recorded: format!("{} refusals, 0 runs; then {}", refusals.len(), record.outcome_line()),
        ..Row::default()
    })
}
