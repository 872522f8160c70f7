//! Arbitrary bytes into every decoder and verifier of the protocol: none may panic.
//!
//! `cargo fuzz run decode_verify` from `schemas/` (cargo-fuzz; `RUSTC_BOOTSTRAP=1` on a
//! stable toolchain). CI runs the proptest equivalent, `schemas/tests/hostile.rs`.
#![no_main]

use fleet_schemas::golden::{CONTROLLER_SEED, DEVICE_ID, DEVICE_SEED, Kind, ROOT_SEED};
use fleet_schemas::status::from_json;
use fleet_schemas::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let controller = Trusted::of_signing_key(&SigningKey::from_bytes(&CONTROLLER_SEED));
    let root = Trusted::of_signing_key(&SigningKey::from_bytes(&ROOT_SEED));
    let device_key = SigningKey::from_bytes(&DEVICE_SEED).verifying_key();
    let Ok(device) = DeviceId::new(DEVICE_ID) else { return };
    let Some(ring) = KeyRing::new(vec![controller]) else { return };

    let _ = verify_envelope(bytes, &ring, &device, Some(1_790_000_000), &ReplayState::default());
    let _ = verify_envelope(bytes, &ring, &device, None, &ReplayState { last_seq: 1, time_floor: 5 });
    let _ = fleet_schemas::verify::claimed_job_id(bytes);
    let _ = verify_event(bytes, &device, &device_key);
    let _ = verify_ack(bytes, &ring, &device);
    let _ = verify_sync_grant(bytes, &ring, &device);
    let _ = verify_sync_request(bytes, &device, &device_key);
    let _ = verify_rotation(bytes, &root, 0);
    let _ = ModuleChunk::decode(bytes);
    let _ = from_json::<DeviceStatus>(bytes);
    let _ = from_json::<JobStatus>(bytes);
    let _ = fleet_schemas::golden::readable(Kind::Envelope, bytes);
});
