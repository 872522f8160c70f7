//! Scenario 10: A device trying another device's topics is refused.
//!
//! Invariant: a device can only speak for itself (the broker's topic ACL, and the device
//! signature on events). Device A is compromised: its agent is stopped and the attacker
//! uses its credentials to go after device B (the victim):
//!
//! | attempt | broker | controller |
//! |---|---|---|
//! | connect with A's password but B's client id (take over B's session) | CONNACK refused | - |
//! | subscribe to B's jobs and acks, to every device's events, to `fleet/#` | SUBACK `0x80` for each | - |
//! | publish on B's events, B's status, B's jobs, a job's status | connection closed | never sees it |
//! | publish on its own events an event signed by A that speaks for B | passes (A's topic) | refused (`WrongDevice`), counted in `events.malformed` |
//!
//! Then B's records at the controller are unchanged (its recorded events, envelope
//! sequence, presence), B's link was never touched (its proxy saw no new connection),
//! exactly one malformed event was counted, and after A's agent is back every device
//! runs a job.

use fleet_hil::forge::{Forge, event_for_other_device};
use fleet_hil::report::Row;
use fleet_hil::{JobRequest, Result};

use crate::{Bench, assert_all_hello};

pub fn run(bench: &Bench) -> Result<Row> {
    let mut fleet = bench.fleet("s10", 8)?;
    fleet.start()?;
    let ids = fleet.ids();
    let n = ids.len();
    let attacker = ids[0].clone();
    let victim = ids[n - 1].clone();

    let hello = fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO))?;
    assert_all_hello(&fleet, &hello)?;
    let hello_before = fleet.fleetctl().run(&["job", "status", &hello, "--json"])?;
    let victim_before = fleet.device_record(&victim)?;
    let victim_links = fleet.proxy(&victim)?.stats().accepted;

    // The attacker takes A's credentials; A's agent is off so they are free to use.
    fleet.device(&attacker)?.stop()?;
    fleet.wait_offline(&[attacker.as_str()])?;
    let mut refused = 0;

    // 1. Take over B's session with A's credentials.
    let takeover = fleet.connect_as_device(&attacker, &victim);
    let error = takeover.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("refused"), "connecting as {victim} with {attacker}'s credentials: {error:?}");
    refused += 1;

    // 2. Listen in on B.
    let probe = fleet.connect_as_device(&attacker, &attacker)?;
    assert!(probe.subscribe(&format!("fleet/devices/{attacker}/jobs"))?, "its own jobs topic must be allowed");
    for filter in [
        format!("fleet/devices/{victim}/jobs"),
        format!("fleet/devices/{victim}/acks"),
        "fleet/devices/+/events".to_string(),
        "fleet/#".to_string(),
    ] {
        assert!(!probe.subscribe(&filter)?, "{attacker} was allowed to subscribe to {filter}");
        refused += 1;
    }
    probe.disconnect();

    // 3. Speak for B: each publish ends the connection before anything is delivered.
    let a_key = fleet.config(&attacker)?.device_key.signing_key();
    let b_id = fleet.device_id(&victim)?;
    let forged_event = event_for_other_device(&a_key, &b_id, Forge::job_id())?;
    let fake_status =
        format!(r#"{{"device_id":"{victim}","state":"offline","runtime":"gateway","agent_version":"0.0.0","ts":1}}"#);
    let job_status_topic = format!("fleet/jobs/{hello}/status");
    for (topic, payload) in [
        (format!("fleet/devices/{victim}/events"), forged_event.clone()),
        (format!("fleet/devices/{victim}/status"), fake_status.into_bytes()),
        (format!("fleet/devices/{victim}/jobs"), b"not an envelope".to_vec()),
        (job_status_topic, b"{}".to_vec()),
    ] {
        let probe = fleet.connect_as_device(&attacker, &attacker)?;
        assert!(!probe.publish_acked(&topic, &payload)?, "{attacker} could publish on {topic}");
        probe.wait_closed(fleet.guard())?;
        refused += 1;
    }

    // 4. On its own topic, an event signed by A that speaks for B: the broker lets it
    // through (A may publish there), the controller refuses it.
    let probe = fleet.connect_as_device(&attacker, &attacker)?;
    assert!(probe.publish_acked(&format!("fleet/devices/{attacker}/events"), &forged_event)?);
    probe.disconnect();
    fleet_hil::wait::until("the controller to count the forged event", fleet.guard(), || {
        let record = fleet.controller_record()?;
        let malformed = record.counter("events.malformed");
        Ok(if malformed >= 1 { Ok(()) } else { Err(malformed) })
    })?;

    // B is untouched: same records, same link, still online.
    let victim_after = fleet.device_record(&victim)?;
    assert_eq!(victim_after.acked_event_seq, victim_before.acked_event_seq, "events recorded for {victim}");
    assert_eq!(victim_after.next_envelope_seq, victim_before.next_envelope_seq);
    assert!(victim_after.is_online(), "{victim} looks {} to the controller", victim_after.state);
    assert_eq!(fleet.proxy(&victim)?.stats().accepted, victim_links, "{victim}'s connection was disturbed");
    assert_eq!(fleet.fleetctl().run(&["job", "status", &hello, "--json"])?, hello_before, "the job's record changed");
    let counters = fleet.controller_record()?;
    assert_eq!(counters.counter("events.malformed"), 1, "only the event on A's own topic reaches the controller");
    assert_eq!(counters.counter("status.malformed"), 0);

    // A comes back, and the whole fleet runs the next job.
    fleet.device(&attacker)?.start()?;
    fleet.wait_online(&[attacker.as_str()])?;
    let after = fleet.push(&JobRequest::new("hello-after", fleet_example_jobs::HELLO))?;
    let record = assert_all_hello(&fleet, &after)?;

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: format!("{attacker} as {victim}: 1 takeover, 4 subscribes, 4 publishes, 1 forged event"),
        expected: format!("{refused} refused by broker, 1 by controller; then {n} ok"),
        recorded: format!(
            "{refused} + {} refused, {victim} unchanged; then {}",
            counters.counter("events.malformed"),
            record.outcome_line()
        ),
        ..Row::default()
    })
}
