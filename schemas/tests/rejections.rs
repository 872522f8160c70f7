//! One test per reason `verify_envelope`, `verify_event`, `verify_ack` and
//! `verify_rotation` refuse a message, and the acceptance paths they guard.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fleet_schemas::limits::{CLOCK_SKEW_SECS, MAX_ENVELOPE_BYTES};
use fleet_schemas::*;

const NOW: Option<u64> = Some(ISSUED_AT + 60);

fn verify(bytes: &[u8]) -> Result<VerifiedEnvelope, Rejection> {
    verify_envelope(bytes, &ring(), &device(), NOW, &ReplayState::default())
}

#[test]
fn a_good_envelope_verifies() {
    let bytes = signed_bytes(&envelope(1, run_order()), &controller_key());
    assert_eq!(verify(&bytes).unwrap().envelope, envelope(1, run_order()));
}

#[test]
fn malformed() {
    assert_eq!(verify(b"").unwrap_err(), Rejection::Malformed);
    assert_eq!(verify(&[0xff; 40]).unwrap_err(), Rejection::Malformed);
    let mut bytes = signed_bytes(&envelope(1, run_order()), &controller_key());
    bytes.push(0);
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::Malformed, "trailing bytes");
}

#[test]
fn signed_but_undecodable_body_is_malformed() {
    // A body with a valid header and signature but garbage after it.
    let mut body = b"FENV".to_vec();
    body.extend(postcard::to_allocvec(&(ENVELOPE_VERSION, key_id(&controller_key()))).unwrap());
    body.extend_from_slice(&[0xff; 8]);
    let signature = ed25519_dalek::Signer::sign(&controller_key(), &body);
    let bytes = SignedMessage { body, signature: SignatureBytes(signature.to_bytes()) }.to_bytes().unwrap();
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::Malformed);
}

#[test]
fn too_large() {
    let bytes = vec![0u8; MAX_ENVELOPE_BYTES + 1];
    assert_eq!(
        verify(&bytes).unwrap_err(),
        Rejection::TooLarge { len: MAX_ENVELOPE_BYTES as u32 + 1, max: MAX_ENVELOPE_BYTES as u32 }
    );
}

#[test]
fn unsupported_version() {
    let mut newer = envelope(1, run_order());
    newer.version = ENVELOPE_VERSION + 1;
    let bytes = signed_bytes(&newer, &controller_key());
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::UnsupportedVersion { got: 2, supported: 1 });
}

#[test]
fn unsupported_version_is_reported_even_if_the_rest_is_a_newer_layout() {
    // A version-2 body whose remainder this agent cannot parse: the header alone decides.
    let mut body = b"FENV".to_vec();
    body.extend(postcard::to_allocvec(&(2u16, key_id(&controller_key()))).unwrap());
    body.extend_from_slice(b"a layout from the future");
    let signature = ed25519_dalek::Signer::sign(&controller_key(), &body);
    let bytes = SignedMessage { body, signature: SignatureBytes(signature.to_bytes()) }.to_bytes().unwrap();
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::UnsupportedVersion { got: 2, supported: 1 });
}

#[test]
fn unknown_key() {
    let stranger = SigningKey::from_bytes(&[0x99; 32]);
    let mut e = envelope(1, run_order());
    e.key_id = key_id(&stranger);
    let bytes = signed_bytes(&e, &stranger);
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::UnknownKey { key_id: key_id(&stranger) });
}

#[test]
fn bad_signature_from_a_key_claiming_a_trusted_id() {
    // Signed by a stranger but naming the trusted key's id: a forgery.
    let stranger = SigningKey::from_bytes(&[0x99; 32]);
    let bytes = signed_bytes(&envelope(1, run_order()), &stranger);
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::BadSignature);
}

#[test]
fn bad_signature_after_tampering() {
    let mut bytes = signed_bytes(&envelope(1, run_order()), &controller_key());
    // Flip a bit in the inline module, well inside the body.
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::BadSignature);
}

#[test]
fn wrong_target() {
    let mut e = envelope(1, run_order());
    e.device_id = DeviceId::new("gw-002").unwrap();
    let bytes = signed_bytes(&e, &controller_key());
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::WrongTarget { addressed_to: DeviceId::new("gw-002").unwrap() });
}

#[test]
fn not_yet_valid() {
    let mut e = envelope(1, run_order());
    e.issued_at = NOW.unwrap() + CLOCK_SKEW_SECS + 1;
    e.not_after = e.issued_at + 100;
    let bytes = signed_bytes(&e, &controller_key());
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::NotYetValid { issued_at: e.issued_at, now: NOW.unwrap() });
    // Within the allowed skew it is fine.
    e.issued_at = NOW.unwrap() + CLOCK_SKEW_SECS;
    assert!(verify(&signed_bytes(&e, &controller_key())).is_ok());
}

#[test]
fn expired() {
    let mut e = envelope(1, run_order());
    e.not_after = NOW.unwrap() - 1;
    let bytes = signed_bytes(&e, &controller_key());
    assert_eq!(verify(&bytes).unwrap_err(), Rejection::Expired { not_after: e.not_after, now: NOW.unwrap() });
}

#[test]
fn replayed() {
    let bytes = signed_bytes(&envelope(5, run_order()), &controller_key());
    let mut replay = ReplayState::default();
    let verified = verify_envelope(&bytes, &ring(), &device(), NOW, &replay).unwrap();
    replay.accept(&verified.envelope);
    assert_eq!(
        verify_envelope(&bytes, &ring(), &device(), NOW, &replay).unwrap_err(),
        Rejection::Replayed { seq: 5, last_accepted: 5 }
    );
    let older = signed_bytes(&envelope(4, run_order()), &controller_key());
    assert_eq!(
        verify_envelope(&older, &ring(), &device(), NOW, &replay).unwrap_err(),
        Rejection::Replayed { seq: 4, last_accepted: 5 }
    );
    let newer = signed_bytes(&envelope(6, run_order()), &controller_key());
    assert!(verify_envelope(&newer, &ring(), &device(), NOW, &replay).is_ok());
}

#[test]
fn an_authentic_refused_envelope_comes_back_with_its_refusal() {
    let bytes = signed_bytes(&envelope(5, run_order()), &controller_key());
    let replay = ReplayState { last_seq: 5, time_floor: 0 };
    let refused = verify_envelope_detailed(&bytes, &ring(), &device(), NOW, &replay).unwrap_err();
    assert_eq!(refused.reason, Rejection::Replayed { seq: 5, last_accepted: 5 });
    assert_eq!(refused.authentic.as_deref(), Some(&envelope(5, run_order())));
    // A forgery never comes back as an envelope.
    let forged = signed_bytes(&envelope(6, run_order()), &SigningKey::from_bytes(&[0x99; 32]));
    let refused = verify_envelope_detailed(&forged, &ring(), &device(), NOW, &replay).unwrap_err();
    assert_eq!(refused, Refused { reason: Rejection::BadSignature, authentic: None });
}

#[test]
fn verification_does_not_advance_replay_state() {
    let bytes = signed_bytes(&envelope(5, run_order()), &controller_key());
    let replay = ReplayState::default();
    assert!(verify_envelope(&bytes, &ring(), &device(), NOW, &replay).is_ok());
    assert!(verify_envelope(&bytes, &ring(), &device(), NOW, &replay).is_ok());
}

#[test]
fn a_device_without_a_clock_judges_expiry_by_its_time_floor() {
    let mut e = envelope(1, run_order());
    e.issued_at = 10_000;
    e.not_after = 10_100;
    let bytes = signed_bytes(&e, &controller_key());
    // No clock, nothing seen yet: accepted (nothing proves it stale).
    assert!(verify_envelope(&bytes, &ring(), &device(), None, &ReplayState::default()).is_ok());
    // It has since accepted an envelope issued later than this one's expiry.
    let replay = ReplayState { last_seq: 0, time_floor: 20_000 };
    assert_eq!(
        verify_envelope(&bytes, &ring(), &device(), None, &replay).unwrap_err(),
        Rejection::Expired { not_after: 10_100, now: 20_000 }
    );
    // And a future-dated envelope is never "not yet valid" without a clock.
    let mut future = envelope(2, run_order());
    future.issued_at = u64::MAX / 2;
    future.not_after = u64::MAX;
    assert!(verify_envelope(&signed_bytes(&future, &controller_key()), &ring(), &device(), None, &replay).is_ok());
}

#[test]
fn a_signature_made_for_one_message_type_never_verifies_as_another() {
    // An ack, signed by the controller's job key, offered as an envelope: the same key
    // signs both, so only the type tag keeps them apart.
    let ack = EventAck { version: ACK_VERSION, key_id: key_id(&controller_key()), device_id: device(), through_seq: 1 };
    let signed = SignedMessage::sign(&ack, &controller_key()).unwrap();
    assert_eq!(verify(&signed.to_bytes().unwrap()).unwrap_err(), Rejection::Malformed);
    // Even with the tag swapped, the signature no longer matches.
    let mut swapped = signed.clone();
    swapped.body[..4].copy_from_slice(b"FENV");
    assert!(verify(&swapped.to_bytes().unwrap()).is_err());
    // And an envelope offered as an ack.
    let envelope = signed_bytes(&envelope(1, run_order()), &controller_key());
    assert_eq!(verify_ack(&envelope, &ring(), &device()), Err(Rejection::Malformed));
}

#[test]
fn claimed_execution_reads_job_and_attempt_without_trusting_them() {
    let bytes = signed_bytes(&envelope(1, run_order()), &SigningKey::from_bytes(&[0x99; 32]));
    assert_eq!(fleet_schemas::verify::claimed_execution(&bytes), (JobId([0xa1; 16]), 1));
    let cancel = signed_bytes(&envelope(2, Order::Cancel { job_id: JobId([7; 16]) }), &controller_key());
    assert_eq!(fleet_schemas::verify::claimed_execution(&cancel), (JobId([7; 16]), 0));
}

#[test]
fn claimed_job_id_labels_rejections() {
    let bytes = signed_bytes(&envelope(1, run_order()), &SigningKey::from_bytes(&[0x99; 32]));
    assert_eq!(fleet_schemas::verify::claimed_job_id(&bytes), JobId([0xa1; 16]));
    assert_eq!(fleet_schemas::verify::claimed_job_id(b"junk"), JobId::NIL);
}

mod events {
    use super::*;
    use fleet_schemas::limits::MAX_EVENT_BYTES;

    fn event(device: &str) -> ExecutionEvent {
        ExecutionEvent {
            version: EVENT_VERSION,
            key: ExecutionKey { job_id: JobId([1; 16]), device_id: DeviceId::new(device).unwrap(), attempt: 1 },
            event_seq: 1,
            at: 0,
            kind: EventKind::Started,
        }
    }

    #[test]
    fn a_good_event_verifies() {
        let bytes = signed_bytes(&event("gw-001"), &device_key());
        assert_eq!(verify_event(&bytes, &device(), &device_key().verifying_key()).unwrap(), event("gw-001"));
    }

    #[test]
    fn each_refusal() {
        let key = device_key().verifying_key();
        assert_eq!(
            verify_event(&vec![0; MAX_EVENT_BYTES + 1], &device(), &key),
            Err(EventError::TooLarge(MAX_EVENT_BYTES + 1))
        );
        assert_eq!(verify_event(b"\x01", &device(), &key), Err(EventError::Malformed));
        let mut newer = event("gw-001");
        newer.version = 9;
        assert_eq!(
            verify_event(&signed_bytes(&newer, &device_key()), &device(), &key),
            Err(EventError::UnsupportedVersion(9))
        );
        let other_device_key = SigningKey::from_bytes(&[0x55; 32]);
        assert_eq!(
            verify_event(&signed_bytes(&event("gw-001"), &other_device_key), &device(), &key),
            Err(EventError::BadSignature)
        );
        // A device signing an event that speaks for another device.
        assert_eq!(
            verify_event(&signed_bytes(&event("gw-002"), &device_key()), &device(), &key),
            Err(EventError::WrongDevice { sender: device(), claimed: DeviceId::new("gw-002").unwrap() })
        );
    }

    #[test]
    fn what_an_event_claims_to_end_is_read_without_its_signature() {
        use fleet_schemas::event::claims_terminal;
        let mut done = event("gw-001");
        done.kind = EventKind::Succeeded(RunReport::default());
        assert!(claims_terminal(&signed_bytes(&done, &device_key())));
        // Unverified: another key's signature reads the same (verify_event decides).
        assert!(claims_terminal(&signed_bytes(&done, &SigningKey::from_bytes(&[0x55; 32]))));
        done.kind = EventKind::Canceled;
        assert!(claims_terminal(&signed_bytes(&done, &device_key())));
        assert!(!claims_terminal(&signed_bytes(&event("gw-001"), &device_key())), "Started ends nothing");
        assert!(!claims_terminal(b"\x01junk"));
        assert!(!claims_terminal(&vec![0; MAX_EVENT_BYTES + 1]));
    }
}

mod acks {
    use super::*;
    use fleet_schemas::verify_ack;

    fn ack(device: &str, signer: &SigningKey) -> EventAck {
        EventAck {
            version: ACK_VERSION,
            key_id: key_id(signer),
            device_id: DeviceId::new(device).unwrap(),
            through_seq: 9,
        }
    }

    #[test]
    fn each_outcome() {
        let ctl = controller_key();
        assert_eq!(verify_ack(&signed_bytes(&ack("gw-001", &ctl), &ctl), &ring(), &device()).unwrap().through_seq, 9);
        assert_eq!(verify_ack(&[0; 600], &ring(), &device()), Err(Rejection::TooLarge { len: 600, max: 512 }));
        assert_eq!(verify_ack(b"zz", &ring(), &device()), Err(Rejection::Malformed));
        let stranger = SigningKey::from_bytes(&[0x99; 32]);
        assert_eq!(
            verify_ack(&signed_bytes(&ack("gw-001", &stranger), &stranger), &ring(), &device()),
            Err(Rejection::UnknownKey { key_id: key_id(&stranger) })
        );
        assert_eq!(
            verify_ack(&signed_bytes(&ack("gw-001", &ctl), &stranger), &ring(), &device()),
            Err(Rejection::BadSignature)
        );
        assert!(matches!(
            verify_ack(&signed_bytes(&ack("gw-002", &ctl), &ctl), &ring(), &device()),
            Err(Rejection::WrongTarget { .. })
        ));
        let mut newer = ack("gw-001", &ctl);
        newer.version = 3;
        assert_eq!(
            verify_ack(&signed_bytes(&newer, &ctl), &ring(), &device()),
            Err(Rejection::UnsupportedVersion { got: 3, supported: 1 })
        );
    }
}

mod syncs {
    use super::*;

    fn grant(device: &str, signer: &SigningKey) -> SyncGrant {
        SyncGrant {
            version: SYNC_VERSION,
            key_id: key_id(signer),
            device_id: DeviceId::new(device).unwrap(),
            incarnation: Incarnation([7; 16]),
            replay_floor: 12,
            issued_at: ISSUED_AT,
            event_base: 30,
        }
    }

    fn request(device: &str) -> SyncRequest {
        SyncRequest {
            version: SYNC_VERSION,
            device_id: DeviceId::new(device).unwrap(),
            incarnation: Incarnation([7; 16]),
        }
    }

    #[test]
    fn each_grant_outcome() {
        let ctl = controller_key();
        let good = verify_sync_grant(&signed_bytes(&grant("gw-001", &ctl), &ctl), &ring(), &device()).unwrap();
        assert_eq!((good.replay_floor, good.event_base, good.incarnation), (12, 30, Incarnation([7; 16])));
        assert_eq!(verify_sync_grant(&[0; 600], &ring(), &device()), Err(Rejection::TooLarge { len: 600, max: 512 }));
        assert_eq!(verify_sync_grant(b"zz", &ring(), &device()), Err(Rejection::Malformed));
        let stranger = SigningKey::from_bytes(&[0x99; 32]);
        assert_eq!(
            verify_sync_grant(&signed_bytes(&grant("gw-001", &stranger), &stranger), &ring(), &device()),
            Err(Rejection::UnknownKey { key_id: key_id(&stranger) })
        );
        assert_eq!(
            verify_sync_grant(&signed_bytes(&grant("gw-001", &ctl), &stranger), &ring(), &device()),
            Err(Rejection::BadSignature)
        );
        assert!(matches!(
            verify_sync_grant(&signed_bytes(&grant("gw-002", &ctl), &ctl), &ring(), &device()),
            Err(Rejection::WrongTarget { .. })
        ));
        // An ack signed by the same key is not a grant, nor a grant an envelope.
        let ack = EventAck { version: ACK_VERSION, key_id: key_id(&ctl), device_id: device(), through_seq: 9 };
        assert_eq!(verify_sync_grant(&signed_bytes(&ack, &ctl), &ring(), &device()), Err(Rejection::Malformed));
        let as_envelope = signed_bytes(&grant("gw-001", &ctl), &ctl);
        assert_eq!(
            verify_envelope(&as_envelope, &ring(), &device(), Some(ISSUED_AT), &ReplayState::default()),
            Err(Rejection::Malformed)
        );
        assert!(fleet_schemas::signed::is_signed::<SyncGrant>(&as_envelope));
        assert!(!fleet_schemas::signed::is_signed::<Envelope>(&as_envelope));
    }

    #[test]
    fn each_request_outcome() {
        let dev = device_key();
        let key = dev.verifying_key();
        let good = verify_sync_request(&signed_bytes(&request("gw-001"), &dev), &device(), &key).unwrap();
        assert_eq!(good.incarnation, Incarnation([7; 16]));
        assert_eq!(verify_sync_request(&[0; 600], &device(), &key), Err(EventError::TooLarge(600)));
        let other = SigningKey::from_bytes(&[0x98; 32]);
        assert_eq!(
            verify_sync_request(&signed_bytes(&request("gw-001"), &other), &device(), &key),
            Err(EventError::BadSignature)
        );
        assert!(matches!(
            verify_sync_request(&signed_bytes(&request("gw-002"), &dev), &device(), &key),
            Err(EventError::WrongDevice { .. })
        ));
        // A request is not an event, though the device signs both on the same topic.
        assert_eq!(verify_event(&signed_bytes(&request("gw-001"), &dev), &device(), &key), Err(EventError::Malformed));
    }
}

mod rotations {
    use super::*;
    use fleet_schemas::rotation::ROTATION_VERSION;
    use fleet_schemas::signed::public_key_of;

    fn rotation(seq: u64, keys: Vec<TrustedKey>) -> KeyRotation {
        KeyRotation {
            version: ROTATION_VERSION,
            root_key_id: key_id(&root_key()),
            issued_at: ISSUED_AT,
            rotation_seq: seq,
            keys,
        }
    }

    fn new_key() -> TrustedKey {
        TrustedKey::new(public_key_of(&SigningKey::from_bytes(&[0x44; 32])).1)
    }

    fn root() -> Trusted {
        Trusted::of_signing_key(&root_key())
    }

    #[test]
    fn a_rotation_replaces_the_ring() {
        let bytes = signed_bytes(&rotation(2, vec![new_key()]), &root_key());
        let (rot, ring) = verify_rotation(&bytes, &root(), 1).unwrap();
        assert_eq!(rot.rotation_seq, 2);
        assert!(ring.get(&new_key().key_id).is_some());
        assert!(ring.get(&key_id(&controller_key())).is_none(), "the old key is gone");
        // Envelopes signed by the retired key are now refused.
        let old = signed_bytes(&envelope(1, run_order()), &controller_key());
        assert!(matches!(
            verify_envelope(&old, &ring, &device(), NOW, &ReplayState::default()),
            Err(Rejection::UnknownKey { .. })
        ));
    }

    #[test]
    fn each_refusal() {
        let root = root();
        assert_eq!(verify_rotation(&[0; 5000], &root, 0), Err(Rejection::TooLarge { len: 5000, max: 4096 }));
        assert_eq!(verify_rotation(b"\x00", &root, 0), Err(Rejection::Malformed));
        // Signed by a job key rather than the root key.
        let mut by_job_key = rotation(2, vec![new_key()]);
        by_job_key.root_key_id = key_id(&controller_key());
        assert_eq!(
            verify_rotation(&signed_bytes(&by_job_key, &controller_key()), &root, 0),
            Err(Rejection::UnknownKey { key_id: key_id(&controller_key()) })
        );
        assert_eq!(
            verify_rotation(&signed_bytes(&rotation(2, vec![new_key()]), &controller_key()), &root, 0),
            Err(Rejection::BadSignature)
        );
        // Rolled back: an older rotation would bring retired keys back.
        assert_eq!(
            verify_rotation(&signed_bytes(&rotation(2, vec![new_key()]), &root_key()), &root, 2),
            Err(Rejection::Replayed { seq: 2, last_accepted: 2 })
        );
        assert_eq!(
            verify_rotation(&signed_bytes(&rotation(3, vec![]), &root_key()), &root, 2),
            Err(Rejection::InvalidKeySet)
        );
        let mut lying = new_key();
        lying.key_id = KeyId([0; 8]);
        assert_eq!(
            verify_rotation(&signed_bytes(&rotation(3, vec![lying]), &root_key()), &root, 2),
            Err(Rejection::InvalidKeySet)
        );
        let too_many = vec![new_key(); fleet_schemas::limits::MAX_TRUSTED_KEYS + 1];
        assert_eq!(
            verify_rotation(&signed_bytes(&rotation(3, too_many), &root_key()), &root, 2),
            Err(Rejection::InvalidKeySet)
        );
        let mut newer = rotation(3, vec![new_key()]);
        newer.version = 2;
        assert_eq!(
            verify_rotation(&signed_bytes(&newer, &root_key()), &root, 2),
            Err(Rejection::UnsupportedVersion { got: 2, supported: 1 })
        );
    }
}
