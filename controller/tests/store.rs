//! The store on real SQLite files: migrations, state that survives a restart, event
//! idempotency, the data directory's secrets.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use fleet_controller::datadir::{self, DataDir};
use fleet_controller::ingest::{IngestError, ingest_event};
use fleet_controller::model::{ExecState, RolloutParams, Target};
use fleet_controller::store::{SCHEMA_VERSION, Store, StoreError};
use fleet_schemas::{EventError, EventKind, FailReason, JobId, Rejection, RunReport};

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn a_new_database_is_migrated_and_reopening_changes_nothing() {
    let dir = temp();
    let path = dir.path().join("fleet.db");
    {
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        add_device(&mut store, "gw-1", "site=a");
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.devices().unwrap().len(), 1, "a second open must not re-run migrations");

    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

/// Finding unfinished jobs must not scan every job ever pushed: a job's row holds its
/// inline module in overflow pages, and the rollout asks on every push and tick.
#[test]
fn unfinished_jobs_are_found_through_an_index() {
    let dir = temp();
    let path = dir.path().join("fleet.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state = 'in_progress'").unwrap();
    let plan: Vec<String> = stmt.query_map([], |row| row.get::<_, String>(3)).unwrap().map(Result::unwrap).collect();
    assert!(plan.iter().any(|step| step.contains("jobs_by_state")), "{plan:?}");
}

#[test]
fn a_database_from_a_newer_controller_is_refused() {
    let dir = temp();
    let path = dir.path().join("fleet.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", (SCHEMA_VERSION + 1) as i64).unwrap();
    drop(conn);
    match Store::open(&path) {
        Err(StoreError::TooNew { found }) => assert_eq!(found, SCHEMA_VERSION + 1),
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn initialising_twice_keeps_the_keys_and_secrets_are_private() {
    let dir = temp();
    let data = DataDir::new(dir.path().join("fleet-data"));
    assert!(matches!(data.open(), Err(datadir::DataDirError::NotInitialised(_))));
    let store = data.open_or_init().unwrap();
    let keys = store.keys().unwrap();
    assert_eq!(keys.len(), 2, "a root key and one job key");
    let job_key = data.active_job_key(&store).unwrap();
    drop(store);

    let store = data.open_or_init().unwrap();
    assert_eq!(store.keys().unwrap(), keys);
    assert_eq!(data.active_job_key(&store).unwrap().to_bytes(), job_key.to_bytes());
    data.root_key(&store).unwrap();

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.path()), 0o700);
    assert_eq!(mode(&data.path().join(datadir::ROOT_KEY_FILE)), 0o600);
    assert_eq!(mode(&data.path().join(datadir::CONTROLLER_PASSWORD_FILE)), 0o600);
    for entry in std::fs::read_dir(data.path().join(datadir::JOB_KEY_DIR)).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }
}

#[test]
fn sent_envelopes_and_sequence_numbers_survive_a_restart() {
    let dir = temp();
    let path = dir.path().join("fleet.db");
    let job;
    let first_bytes;
    {
        let mut store = Store::open(&path).unwrap();
        add_device(&mut store, "gw-1", "");
        add_device(&mut store, "gw-2", "");
        job = add_job(&mut store, 1, Target::All, &["gw-1", "gw-2"], RolloutParams::default());
        let sent = store
            .send_execution(&job, &device_id("gw-1"), 1, 10, 1_000, |seq| Ok(format!("envelope {seq}").into_bytes()))
            .unwrap()
            .unwrap();
        assert_eq!(sent.seq, 1);
        first_bytes = sent.bytes;
        // A second send of the same execution signs nothing.
        let again = store.send_execution(&job, &device_id("gw-1"), 1, 11, 1_000, |_| panic!("signed twice")).unwrap();
        assert!(again.is_none());
    }
    let mut store = Store::open(&path).unwrap();
    let executions = store.executions(&job).unwrap();
    assert_eq!(executions.len(), 2);
    assert_eq!(executions[0].state, ExecState::Sent);
    assert_eq!(executions[0].envelope_seq, Some(1));
    assert_eq!(executions[0].deadline_ms, Some(1_000));
    assert_eq!(executions[1].state, ExecState::Queued);
    assert_eq!(store.device("gw-1").unwrap().unwrap().next_seq, 2);

    let pending = store.unanswered_envelopes().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].device.as_str(), pending[0].seq), ("gw-1", 1));
    assert_eq!(pending[0].bytes, first_bytes, "a restart republishes the same bytes");

    // The next envelope for the device, any job, takes the next number.
    store.enqueue(&job, &device_id("gw-1"), 2, 20).unwrap();
    store.time_out(&job, &device_id("gw-1"), 1, 20).unwrap();
    let retry =
        store.send_execution(&job, &device_id("gw-1"), 2, 21, 2_000, |seq| Ok(vec![seq as u8])).unwrap().unwrap();
    assert_eq!(retry.seq, 2);
}

#[test]
fn events_are_idempotent_by_sequence_and_by_kind() {
    let dir = temp();
    let mut store = Store::open(&dir.path().join("fleet.db")).unwrap();
    add_device(&mut store, "gw-1", "");
    let job = add_job(&mut store, 1, Target::All, &["gw-1"], RolloutParams::default());
    store.send_execution(&job, &device_id("gw-1"), 1, 10, 1_000, |_| Ok(vec![1])).unwrap();

    let accepted = event("gw-1", job, 1, 1, EventKind::Accepted);
    let r = ingest_event(&mut store, "gw-1", &accepted, 20).unwrap();
    assert_eq!(r.outcome.transition, Some((ExecState::Sent, ExecState::Accepted)));
    assert_eq!(r.outcome.acked_through, 1);

    let report = RunReport { output: b"42".to_vec(), logs: vec!["hello".into()], fuel_used: 7, duration_ms: 3 };
    let succeeded = event("gw-1", job, 1, 2, EventKind::Succeeded(report.clone()));
    let r = ingest_event(&mut store, "gw-1", &succeeded, 30).unwrap();
    assert_eq!(r.outcome.transition, Some((ExecState::Accepted, ExecState::Succeeded)));

    // The same bytes again: a duplicate, nothing changes, the ack is repeated.
    let r = ingest_event(&mut store, "gw-1", &succeeded, 40).unwrap();
    assert!(r.outcome.duplicate);
    assert_eq!(r.outcome.transition, None);
    assert_eq!(r.outcome.acked_through, 2);

    // The same kind under a new sequence number (an agent that re-sent it): recorded for
    // the ack, but applied once.
    let other = RunReport { output: b"other".to_vec(), ..RunReport::default() };
    let r = ingest_event(&mut store, "gw-1", &event("gw-1", job, 1, 3, EventKind::Succeeded(other)), 50).unwrap();
    assert!(!r.outcome.duplicate);
    assert_eq!(r.outcome.transition, None);
    assert_eq!(r.outcome.acked_through, 3);

    // A terminal state never changes.
    let failed = EventKind::Failed { reason: FailReason::Trap, message: "late".into(), report: RunReport::default() };
    let r = ingest_event(&mut store, "gw-1", &event("gw-1", job, 1, 4, failed), 60).unwrap();
    assert_eq!(r.outcome.transition, None);

    let row = &store.executions(&job).unwrap()[0];
    assert_eq!(row.state, ExecState::Succeeded);
    assert_eq!(row.output.as_deref(), Some(&b"42"[..]));
    assert_eq!(row.logs, vec!["hello".to_string()]);
    assert_eq!((row.fuel_used, row.duration_ms), (Some(7), Some(3)));
    assert_eq!(store.event_count(&device_id("gw-1")).unwrap(), 4);
}

#[test]
fn the_ack_covers_only_contiguous_sequence_numbers() {
    let dir = temp();
    let mut store = Store::open(&dir.path().join("fleet.db")).unwrap();
    add_device(&mut store, "gw-1", "");
    // Events for an execution the controller does not know are recorded and acked too,
    // or the device's outbox would never drain.
    let unknown = JobId([9; 16]);
    let ack = |store: &mut Store, seq| {
        ingest_event(store, "gw-1", &event("gw-1", unknown, 1, seq, EventKind::Started), seq * 10).unwrap().outcome
    };
    assert_eq!(ack(&mut store, 1).acked_through, 1);
    let out_of_order = ack(&mut store, 3);
    assert!(!out_of_order.known_execution);
    assert_eq!(out_of_order.acked_through, 1, "2 is missing");
    assert_eq!(ack(&mut store, 2).acked_through, 3, "the gap is filled");
}

#[test]
fn rejections_apply_before_acceptance_only_and_transient_ones_are_marked() {
    let dir = temp();
    let mut store = Store::open(&dir.path().join("fleet.db")).unwrap();
    add_device(&mut store, "gw-1", "");
    add_device(&mut store, "gw-2", "");
    let job = add_job(&mut store, 1, Target::All, &["gw-1", "gw-2"], RolloutParams::default());
    for device in ["gw-1", "gw-2"] {
        store.send_execution(&job, &device_id(device), 1, 10, 1_000, |_| Ok(vec![1])).unwrap();
    }
    let replayed = EventKind::Rejected { reason: Rejection::Replayed { seq: 1, last_accepted: 5 } };
    ingest_event(&mut store, "gw-1", &event("gw-1", job, 1, 1, replayed.clone()), 20).unwrap();
    ingest_event(&mut store, "gw-2", &event("gw-2", job, 1, 1, EventKind::Accepted), 20).unwrap();
    ingest_event(&mut store, "gw-2", &event("gw-2", job, 1, 2, replayed), 21).unwrap();
    let rows = store.executions(&job).unwrap();
    assert_eq!((rows[0].state, rows[0].transient), (ExecState::Rejected, true));
    assert_eq!(rows[1].state, ExecState::Accepted, "a redelivered copy refused after acceptance changes nothing");
}

#[test]
fn bad_events_are_refused_before_the_store() {
    let dir = temp();
    let mut store = Store::open(&dir.path().join("fleet.db")).unwrap();
    add_device(&mut store, "gw-1", "");
    add_device(&mut store, "gw-2", "");
    let job = add_job(&mut store, 1, Target::All, &["gw-1"], RolloutParams::default());

    let good = event("gw-1", job, 1, 1, EventKind::Accepted);
    assert!(matches!(ingest_event(&mut store, "ghost", &good, 1), Err(IngestError::UnknownDevice(_))));
    // gw-2 publishing gw-1's event (or gw-1's bytes on gw-2's topic): wrong key.
    assert!(matches!(
        ingest_event(&mut store, "gw-2", &good, 1),
        Err(IngestError::Refused { error: EventError::BadSignature, .. })
    ));
    // gw-2 signing an event that speaks for gw-1.
    let mut forged = event("gw-1", job, 1, 1, EventKind::Accepted);
    forged.clear();
    let impostor = fleet_schemas::ExecutionEvent {
        version: fleet_schemas::EVENT_VERSION,
        key: fleet_schemas::ExecutionKey { job_id: job, device_id: device_id("gw-1"), attempt: 1 },
        event_seq: 1,
        at: 0,
        kind: EventKind::Accepted,
    };
    forged.extend(fleet_schemas::SignedMessage::sign(&impostor, &device_key("gw-2")).unwrap().to_bytes().unwrap());
    assert!(matches!(
        ingest_event(&mut store, "gw-2", &forged, 1),
        Err(IngestError::Refused { error: EventError::WrongDevice { .. }, .. })
    ));
    assert!(matches!(
        ingest_event(&mut store, "gw-1", b"garbage", 1),
        Err(IngestError::Refused { error: EventError::Malformed, .. })
    ));
    let huge = vec![0u8; fleet_schemas::limits::MAX_EVENT_BYTES + 1];
    assert!(matches!(
        ingest_event(&mut store, "gw-1", &huge, 1),
        Err(IngestError::Refused { error: EventError::TooLarge(_), .. })
    ));
    assert_eq!(store.event_count(&device_id("gw-1")).unwrap(), 0, "nothing refused was recorded");
    assert_eq!(store.executions(&job).unwrap()[0].state, ExecState::Queued);
}

#[test]
fn jobs_resolve_by_prefix_and_cancel_only_while_in_progress() {
    let dir = temp();
    let mut store = Store::open(&dir.path().join("fleet.db")).unwrap();
    add_device(&mut store, "gw-1", "site=a");
    add_device(&mut store, "gw-2", "site=b");
    let a = add_job(&mut store, 0xab, Target::Selector(labels("site=a")), &["gw-1"], RolloutParams::default());
    let b = add_job(&mut store, 0xac, Target::All, &["gw-1", "gw-2"], RolloutParams::default());
    assert_eq!(store.resolve_job("abab").unwrap(), a);
    assert_eq!(store.resolve_job(&b.to_hex().to_uppercase()).unwrap(), b);
    assert!(matches!(store.resolve_job("a"), Err(StoreError::AmbiguousJob(_))));
    assert!(matches!(store.resolve_job("ff"), Err(StoreError::NoJob(_))));
    assert!(matches!(store.resolve_job("xyz"), Err(StoreError::NoJob(_))));

    assert_eq!(store.matching_devices(&Target::Selector(labels("site=b"))).unwrap(), vec![device_id("gw-2")]);
    assert!(store.request_cancel(&a, "test", 5).unwrap());
    store.finish_job(&b, fleet_schemas::JobState::Completed, 5).unwrap();
    assert!(!store.request_cancel(&b, "test", 6).unwrap(), "a finished job cannot be canceled");
    let audit = store.audit_log(10).unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["job.cancel", "job.push", "job.push", "device.provision", "device.provision"]);
}

#[test]
fn a_batch_commits_as_one_and_a_failed_operation_rolls_back_alone() {
    let dir = temp();
    let path = dir.path().join("fleet.db");
    let mut store = Store::open(&path).unwrap();
    let reader = Store::open(&path).unwrap();
    store.begin_batch().unwrap();
    assert!(store.in_batch());
    assert!(store.begin_batch().is_err(), "batches do not nest");
    add_device(&mut store, "gw-1", "site=a");
    // The same id again fails inside the batch and takes only itself back.
    assert!(store.insert_device(&new_device("gw-1", "site=a"), "test", 2).is_err());
    add_device(&mut store, "gw-2", "site=a");
    assert!(reader.devices().unwrap().is_empty(), "nothing is visible before the commit");
    store.commit_batch().unwrap();
    assert!(!store.in_batch());
    let ids: Vec<String> = reader.devices().unwrap().iter().map(|d| d.id.to_string()).collect();
    assert_eq!(ids, ["gw-1", "gw-2"]);
    let provisions = reader.audit_log(10).unwrap().iter().filter(|a| a.action == "device.provision").count();
    assert_eq!(provisions, 2, "the failed insert left no audit entry");
    // Outside a batch each operation commits on its own, as before.
    add_device(&mut store, "gw-3", "site=a");
    assert_eq!(reader.devices().unwrap().len(), 3);
    store.commit_batch().unwrap(); // nothing open: a no-op
}

/// Signs nothing real: the store only keeps the bytes it is given.
struct MarkSigner;

impl fleet_controller::store::ResyncSigner for MarkSigner {
    fn grant(&mut self, replay_floor: u64, event_base: u64) -> Result<Vec<u8>, String> {
        Ok(format!("grant {replay_floor} {event_base}").into_bytes())
    }
    fn run(&mut self, seq: u64, _spec: &[u8], attempt: u32, deadline_ms: u64) -> Result<Vec<u8>, String> {
        Ok(format!("run seq {seq} attempt {attempt} until {deadline_ms}").into_bytes())
    }
}

#[test]
fn a_store_reset_raises_the_floor_rebases_events_and_signs_what_is_in_flight_again() {
    let dir = temp();
    let mut store = Store::open(&dir.path().join("fleet.db")).unwrap();
    add_device(&mut store, "gw-1", "");
    let gw = device_id("gw-1");
    let done = add_job(&mut store, 1, Target::All, &["gw-1"], RolloutParams::default());
    let running = add_job(&mut store, 2, Target::All, &["gw-1"], RolloutParams::default());
    let canceling = add_job(&mut store, 3, Target::All, &["gw-1"], RolloutParams::default());
    let queued = add_job(&mut store, 4, Target::All, &["gw-1"], RolloutParams::default());
    for (job, at) in [(done, 10), (running, 11), (canceling, 12)] {
        store.send_execution(&job, &gw, 1, at, 5_000, |seq| Ok(vec![seq as u8])).unwrap().unwrap();
    }
    // The device finished the first, started the second (events 1 to 5), then lost its
    // store; the operator asked to cancel the third.
    for (seq, job, kind) in [
        (1, done, EventKind::Accepted),
        (2, done, EventKind::Succeeded(RunReport::default())),
        (3, running, EventKind::Accepted),
        (4, running, EventKind::Started),
        (5, canceling, EventKind::Accepted),
    ] {
        ingest_event(&mut store, "gw-1", &event("gw-1", job, 1, seq, kind), 20).unwrap();
    }
    store.request_cancel(&canceling, "tester", 21).unwrap();

    let incarnation = fleet_schemas::Incarnation([9; 16]);
    let resync = store.resync_device(&gw, &incarnation, 30, &mut MarkSigner).unwrap();
    assert!(resync.reset && !resync.repeated);
    assert_eq!((resync.replay_floor, resync.event_base), (3, 5));
    assert_eq!(resync.grant, b"grant 3 5");
    // The running execution is signed again above the floor (same attempt, same
    // deadline); the queued one waits for its turn, the finished one is left alone.
    assert_eq!(resync.envelopes.len(), 1);
    assert_eq!(
        (resync.envelopes[0].seq, resync.envelopes[0].bytes.as_slice()),
        (4, &b"run seq 4 attempt 1 until 5000"[..])
    );
    let row = &store.executions(&running).unwrap()[0];
    assert_eq!((row.state, row.envelope_seq), (ExecState::Running, Some(4)));
    assert_eq!(store.executions(&done).unwrap()[0].state, ExecState::Succeeded);
    assert_eq!(store.executions(&queued).unwrap()[0].state, ExecState::Queued);
    // The one being canceled ends canceled: the new store never heard of it.
    assert_eq!(resync.touched, vec![canceling]);
    let row = &store.executions(&canceling).unwrap()[0];
    assert_eq!(row.state, ExecState::Canceled);
    assert!(row.reason.as_deref().unwrap().contains("store was reset"), "{:?}", row.reason);
    // Events are acknowledged through the base, and the next one (6) is recorded.
    assert_eq!(store.acked_through(&gw).unwrap(), 5);
    let next =
        ingest_event(&mut store, "gw-1", &event("gw-1", running, 1, 6, EventKind::Succeeded(RunReport::default())), 40)
            .unwrap();
    assert!(!next.outcome.duplicate);
    assert_eq!(next.outcome.transition, Some((ExecState::Running, ExecState::Succeeded)));
    assert_eq!(next.outcome.acked_through, 6);

    // The same request again (QoS 1): the same grant, nothing signed or changed.
    let again = store.resync_device(&gw, &incarnation, 50, &mut MarkSigner).unwrap();
    assert!(again.repeated && again.envelopes.is_empty());
    assert_eq!(again.grant, resync.grant);
    assert_eq!(store.device("gw-1").unwrap().unwrap().next_seq, 5);
    let recorded = store.device("gw-1").unwrap().unwrap().store;
    assert_eq!((recorded.incarnation, recorded.resets, recorded.synced_at_ms), (Some(incarnation), 1, Some(30)));
    let audit = store.audit_log(10).unwrap();
    assert_eq!(audit.iter().filter(|a| a.action == "device.store_reset").count(), 1);
}

#[test]
fn a_new_devices_first_sync_is_not_a_reset() {
    let dir = temp();
    let mut store = Store::open(&dir.path().join("fleet.db")).unwrap();
    add_device(&mut store, "gw-1", "");
    let gw = device_id("gw-1");
    // A job pushed before the device ever came online: its envelope is signed again.
    let job = add_job(&mut store, 1, Target::All, &["gw-1"], RolloutParams::default());
    store.send_execution(&job, &gw, 1, 10, 5_000, |seq| Ok(vec![seq as u8])).unwrap().unwrap();
    let resync = store.resync_device(&gw, &fleet_schemas::Incarnation([1; 16]), 20, &mut MarkSigner).unwrap();
    assert!(!resync.reset);
    assert_eq!((resync.replay_floor, resync.event_base), (1, 0));
    assert_eq!(resync.envelopes.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
    assert_eq!(store.device("gw-1").unwrap().unwrap().store.resets, 0);
    assert!(store.audit_log(10).unwrap().iter().all(|a| a.action != "device.store_reset"));
    assert!(matches!(
        store.resync_device(&device_id("gw-9"), &fleet_schemas::Incarnation([1; 16]), 20, &mut MarkSigner),
        Err(StoreError::NoDevice(_))
    ));
}

#[test]
fn a_removed_device_has_nothing_recorded_and_is_no_target() {
    let dir = temp();
    let mut store = Store::open(&dir.path().join("fleet.db")).unwrap();
    add_device(&mut store, "gw-1", "site=a");
    add_device(&mut store, "gw-2", "site=a");
    let job = add_job(&mut store, 1, Target::All, &["gw-1", "gw-2"], RolloutParams::default());
    store.send_execution(&job, &device_id("gw-1"), 1, 10, 5_000, |seq| Ok(vec![seq as u8])).unwrap().unwrap();
    assert_eq!(store.remove_device(&device_id("gw-1"), "tester", 20).unwrap(), Some(vec![job]));
    assert_eq!(store.remove_device(&device_id("gw-1"), "tester", 21).unwrap(), None);
    // Its execution ended canceled; what it still sends is refused before the store.
    let row = store.executions(&job).unwrap().into_iter().find(|e| e.device_id.as_str() == "gw-1").unwrap();
    assert_eq!((row.state, row.reason.as_deref()), (ExecState::Canceled, Some("the device was removed")));
    let late = event("gw-1", job, 1, 1, EventKind::Succeeded(RunReport::default()));
    assert!(matches!(ingest_event(&mut store, "gw-1", &late, 30), Err(IngestError::UnknownDevice(_))));
    assert_eq!(store.event_count(&device_id("gw-1")).unwrap(), 0);
    // No login, no target; its history stays.
    assert_eq!(store.device_password_hash("gw-1").unwrap(), None);
    let targets = store.matching_devices(&Target::All).unwrap();
    assert_eq!(targets.iter().map(|d| d.as_str()).collect::<Vec<_>>(), vec!["gw-2"]);
    assert!(store.device("gw-1").unwrap().unwrap().removed_at_ms.is_some());
}
