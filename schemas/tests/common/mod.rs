//! Builders shared by the schemas tests: fixed keys and a well-formed envelope.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use fleet_schemas::golden::{CONTROLLER_SEED, DEVICE_ID, DEVICE_SEED, ROOT_SEED};
use fleet_schemas::*;

pub fn controller_key() -> SigningKey {
    SigningKey::from_bytes(&CONTROLLER_SEED)
}

pub fn device_key() -> SigningKey {
    SigningKey::from_bytes(&DEVICE_SEED)
}

pub fn root_key() -> SigningKey {
    SigningKey::from_bytes(&ROOT_SEED)
}

pub fn device() -> DeviceId {
    DeviceId::new(DEVICE_ID).unwrap()
}

pub fn ring() -> KeyRing {
    KeyRing::new(vec![Trusted::of_signing_key(&controller_key())]).unwrap()
}

pub fn key_id(key: &SigningKey) -> KeyId {
    fleet_schemas::signed::public_key_of(key).0
}

/// A minimal valid Wasm module: `(module (func (export "run")))`.
pub const TINY_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x07,
    0x07, 0x01, 0x03, 0x72, 0x75, 0x6e, 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
];

pub const ISSUED_AT: u64 = 1_790_000_000;

pub fn job_spec(module: ModuleSource) -> JobSpec {
    JobSpec {
        job_id: JobId([0xa1; 16]),
        module,
        entry: "run".into(),
        args: vec!["--window".into(), "60".into()],
        limits: Limits { fuel: 1_000_000, memory_pages: 16, timeout_ms: 5_000 },
        requirements: Requirements {
            runtime: Some(RuntimeClass::Gateway),
            gpu: GpuRequirement::None,
            labels: BTreeMap::from([("site".into(), "plant-3".into())]),
        },
        inputs: vec!["temperatures".into()],
    }
}

pub fn envelope(seq: u64, order: Order) -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        key_id: key_id(&controller_key()),
        issued_at: ISSUED_AT,
        not_after: ISSUED_AT + 3_600,
        device_id: device(),
        seq,
        order,
    }
}

pub fn run_order() -> Order {
    Order::Run { attempt: 1, job: Box::new(job_spec(ModuleSource::Inline(TINY_MODULE.to_vec()))) }
}

pub fn signed_bytes<T: Signable>(value: &T, key: &SigningKey) -> Vec<u8> {
    SignedMessage::sign(value, key).unwrap().to_bytes().unwrap()
}
