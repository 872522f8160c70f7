//! Hostile bytes: every decoder and verifier, fed arbitrary input or a mutated valid
//! message, returns an error and never panics; a mutated signed message never
//! verifies. This is the in-CI equivalent of the cargo-fuzz target in `schemas/fuzz`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fleet_schemas::golden::{Kind, VECTORS};
use fleet_schemas::status::from_json;
use fleet_schemas::*;
use proptest::prelude::*;

/// Every entry point that reads bytes from the network.
fn feed_everything(bytes: &[u8]) {
    let now = Some(ISSUED_AT);
    let _ = verify_envelope(bytes, &ring(), &device(), now, &ReplayState::default());
    let _ = verify_envelope(bytes, &ring(), &device(), None, &ReplayState { last_seq: 3, time_floor: 9 });
    let _ = fleet_schemas::verify::claimed_job_id(bytes);
    let _ = verify_event(bytes, &device(), &device_key().verifying_key());
    let _ = verify_ack(bytes, &ring(), &device());
    let _ = verify_sync_grant(bytes, &ring(), &device());
    let _ = verify_sync_request(bytes, &device(), &device_key().verifying_key());
    let _ = verify_rotation(bytes, &Trusted::of_signing_key(&root_key()), 0);
    let _ = ModuleChunk::decode(bytes);
    let _ = SignedMessage::from_bytes(bytes);
    let _ = from_json::<DeviceStatus>(bytes);
    let _ = from_json::<JobStatus>(bytes);
    let _ = from_json::<ControllerStatus>(bytes);
    let _ = fleet_schemas::golden::readable(Kind::Envelope, bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        feed_everything(&bytes);
    }

    #[test]
    fn mutated_golden_vectors(which in any::<prop::sample::Index>(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let vector = VECTORS[which.index(VECTORS.len())];
        let mut bytes = vector.bytes.to_vec();
        for (at, value) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        feed_everything(&bytes);
        let truncated = &bytes[..cut.index(bytes.len())];
        feed_everything(truncated);
        if bytes != vector.bytes && vector.kind == Kind::Envelope {
            prop_assert!(verify_envelope(&bytes, &ring(), &device(), Some(ISSUED_AT), &ReplayState::default()).is_err());
        }
        if bytes != vector.bytes && vector.kind == Kind::Event {
            prop_assert!(verify_event(&bytes, &device(), &device_key().verifying_key()).is_err());
        }
    }
}

#[test]
fn huge_length_prefixes_allocate_nothing_large() {
    // A body that claims a 4 GiB inline module: refused by length, not by allocation.
    let mut bytes = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    bytes.extend_from_slice(&[0; 64]);
    feed_everything(&bytes);
    assert_eq!(verify_envelope(&bytes, &ring(), &device(), None, &ReplayState::default()), Err(Rejection::Malformed));
}
