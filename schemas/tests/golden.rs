//! Golden vectors: every message type, built here from code, must encode to the bytes
//! committed under `schemas/golden/`, and those bytes must decode to the committed
//! readable JSON. Regenerate after an intended format change (which is a new format
//! version, see docs/protocol.md) with `FLEET_BLESS=1 cargo test -p fleet-schemas --test golden`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use fleet_schemas::golden::{self, Kind, VECTORS};
use fleet_schemas::status::to_json;
use fleet_schemas::*;

fn event(seq: u64, kind: EventKind) -> ExecutionEvent {
    ExecutionEvent {
        version: EVENT_VERSION,
        key: ExecutionKey { job_id: JobId([0xa1; 16]), device_id: device(), attempt: 1 },
        event_seq: seq,
        at: ISSUED_AT + 10,
        kind,
    }
}

/// Every vector, built from code.
fn built() -> Vec<(&'static str, Kind, Vec<u8>)> {
    let ctl = controller_key();
    let dev = device_key();
    let (chunked, chunks) = fleet_schemas::chunk::split_module(&[0x5a; 100], 64).unwrap();
    let report = RunReport {
        output: b"hello from gw-001".to_vec(),
        logs: vec!["starting".into(), "done".into()],
        fuel_used: 1_234,
        duration_ms: 7,
    };
    let rotation = KeyRotation {
        version: fleet_schemas::rotation::ROTATION_VERSION,
        root_key_id: key_id(&root_key()),
        issued_at: ISSUED_AT,
        rotation_seq: 2,
        keys: vec![
            TrustedKey::new(fleet_schemas::signed::public_key_of(&ctl).1),
            TrustedKey::new(fleet_schemas::signed::public_key_of(&SigningKey::from_bytes(&[0x44; 32])).1),
        ],
    };
    let ack = EventAck { version: ACK_VERSION, key_id: key_id(&ctl), device_id: device(), through_seq: 6 };
    let sync_request = SyncRequest { version: SYNC_VERSION, device_id: device(), incarnation: Incarnation([0x5e; 16]) };
    let sync_grant = SyncGrant {
        version: SYNC_VERSION,
        key_id: key_id(&ctl),
        device_id: device(),
        incarnation: Incarnation([0x5e; 16]),
        replay_floor: 41,
        issued_at: ISSUED_AT,
        event_base: 117,
    };
    let device_status = DeviceStatus {
        device_id: device(),
        state: Presence::Online,
        runtime: RuntimeClass::Gateway,
        agent_version: "0.1.0".into(),
        labels: BTreeMap::from([("site".into(), "plant-3".into())]),
        queue_depth: 2,
        outbox_depth: 1,
        gpu: None,
        inference: Vec::new(),
        wasi: vec!["preview1".into()],
        formats: vec![ENVELOPE_VERSION],
        ts: ISSUED_AT,
    };
    let job_status = JobStatus {
        job_id: JobId([0xa1; 16]),
        state: JobState::InProgress,
        total: 10,
        counts: JobCounts { queued: 2, running: 1, succeeded: 4, failed: 1, rejected: 1, timed_out: 1, canceled: 0 },
        ts: ISSUED_AT,
    };
    let controller_status = ControllerStatus { state: Presence::Online, version: "0.1.0".into(), ts: ISSUED_AT };
    vec![
        ("envelope_run_inline", Kind::Envelope, signed_bytes(&envelope(1, run_order()), &ctl)),
        (
            "envelope_run_chunked",
            Kind::Envelope,
            signed_bytes(
                &envelope(2, Order::Run { attempt: 2, job: Box::new(job_spec(ModuleSource::Chunked(chunked))) }),
                &ctl,
            ),
        ),
        (
            "envelope_cancel",
            Kind::Envelope,
            signed_bytes(&envelope(3, Order::Cancel { job_id: JobId([0xa1; 16]) }), &ctl),
        ),
        ("module_chunk", Kind::Chunk, chunks[1].encode()),
        ("event_accepted", Kind::Event, signed_bytes(&event(1, EventKind::Accepted), &dev)),
        (
            "event_rejected",
            Kind::Event,
            signed_bytes(&event(2, EventKind::Rejected { reason: Rejection::Expired { not_after: 5, now: 9 } }), &dev),
        ),
        ("event_started", Kind::Event, signed_bytes(&event(3, EventKind::Started), &dev)),
        ("event_succeeded", Kind::Event, signed_bytes(&event(4, EventKind::Succeeded(report.clone())), &dev)),
        (
            "event_failed",
            Kind::Event,
            signed_bytes(
                &event(
                    5,
                    EventKind::Failed { reason: FailReason::OutOfFuel, message: "all fuel consumed".into(), report },
                ),
                &dev,
            ),
        ),
        ("event_canceled", Kind::Event, signed_bytes(&event(6, EventKind::Canceled), &dev)),
        ("key_rotation", Kind::Rotation, signed_bytes(&rotation, &root_key())),
        ("event_ack", Kind::Ack, signed_bytes(&ack, &ctl)),
        ("sync_request", Kind::SyncRequest, signed_bytes(&sync_request, &dev)),
        ("sync_grant", Kind::SyncGrant, signed_bytes(&sync_grant, &ctl)),
        ("device_status", Kind::DeviceStatus, to_json(&device_status)),
        ("job_status", Kind::JobStatus, to_json(&job_status)),
        ("controller_status", Kind::ControllerStatus, to_json(&controller_status)),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

#[test]
fn code_encodes_to_the_committed_bytes() {
    let bless = std::env::var_os("FLEET_BLESS").is_some();
    let built = built();
    assert_eq!(built.len(), VECTORS.len(), "every built vector is listed in golden::VECTORS");
    for (name, kind, bytes) in built {
        if bless {
            std::fs::write(golden_dir().join(format!("{name}.bin")), &bytes).unwrap();
            let readable = golden::readable(kind, &bytes).unwrap();
            std::fs::write(golden_dir().join(format!("{name}.json")), readable).unwrap();
            continue;
        }
        let committed = VECTORS.iter().find(|v| v.name == name).unwrap();
        assert_eq!(committed.kind, kind, "{name}");
        assert_eq!(
            committed.bytes,
            bytes.as_slice(),
            "{name}: the encoding changed (a format change needs a new version)"
        );
    }
}

#[test]
fn committed_bytes_decode_to_the_committed_values() {
    assert_eq!(golden::check_all().unwrap(), VECTORS.len());
}

#[test]
fn a_changed_byte_fails_the_check() {
    let vector = VECTORS.iter().find(|v| v.name == "event_succeeded").unwrap();
    let mut bytes = vector.bytes.to_vec();
    // The last body byte is the duration: change it and the readable form no longer matches.
    let last = bytes.len() - 65;
    bytes[last] ^= 0x01;
    let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let tampered = golden::Vector { bytes: leaked, ..*vector };
    assert!(golden::check(&tampered).is_err());
}

#[test]
fn golden_envelopes_verify_for_their_device() {
    for vector in VECTORS.iter().filter(|v| v.kind == Kind::Envelope) {
        let verified = verify_envelope(vector.bytes, &ring(), &device(), Some(ISSUED_AT), &ReplayState::default());
        assert!(verified.is_ok(), "{}: {verified:?}", vector.name);
    }
}

#[test]
fn golden_events_verify_with_the_device_key() {
    let key = device_key().verifying_key();
    for vector in VECTORS.iter().filter(|v| v.kind == Kind::Event) {
        let event = verify_event(vector.bytes, &device(), &key);
        assert!(event.is_ok(), "{}: {event:?}", vector.name);
    }
}

#[test]
fn golden_sync_messages_verify_for_their_device() {
    let request = VECTORS.iter().find(|v| v.kind == Kind::SyncRequest).unwrap();
    let verified = verify_sync_request(request.bytes, &device(), &device_key().verifying_key()).unwrap();
    assert_eq!(verified.incarnation, Incarnation([0x5e; 16]));
    let grant = VECTORS.iter().find(|v| v.kind == Kind::SyncGrant).unwrap();
    let verified = verify_sync_grant(grant.bytes, &ring(), &device()).unwrap();
    assert_eq!((verified.replay_floor, verified.event_base), (41, 117));
}
