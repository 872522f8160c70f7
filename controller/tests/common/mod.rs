//! Helpers shared by the integration tests: devices with known keys, jobs, signed events.
#![allow(clippy::unwrap_used, dead_code)]

pub mod sim;

use fleet_controller::auth::password_hash;
use fleet_controller::model::{DeviceKind, Labels, RolloutParams, Target, parse_labels};
use fleet_controller::signer::prepare_module;
use fleet_controller::store::{NewDevice, NewJob, Store};
use fleet_schemas::digest::sha256;
use fleet_schemas::signed::public_key_of;
use fleet_schemas::{
    DeviceId, EVENT_VERSION, EventKind, ExecutionEvent, ExecutionKey, JobId, JobSpec, Limits, ModuleSource,
    Requirements, SignedMessage, SigningKey,
};

/// A tiny valid WebAssembly module (the header of an empty module).
pub const MODULE: &[u8] = b"\0asm\x01\0\0\0";

pub fn device_id(name: &str) -> DeviceId {
    DeviceId::new(name).unwrap()
}

/// A deterministic device key per name.
pub fn device_key(name: &str) -> SigningKey {
    SigningKey::from_bytes(&sha256(name.as_bytes()).0)
}

/// The MQTT password the tests give a device.
pub fn password(name: &str) -> String {
    format!("pw-{name}")
}

pub fn new_device(name: &str, labels: &str) -> NewDevice {
    NewDevice {
        id: device_id(name),
        kind: DeviceKind::Linux,
        labels: parse_labels(labels).unwrap(),
        public_key: public_key_of(&device_key(name)).1,
        password_hash: password_hash(password(name).as_bytes()),
        mosquitto_hash: fleet_controller::acl::mosquitto_hash(&password(name), b"salt"),
    }
}

pub fn add_device(store: &mut Store, name: &str, labels: &str) {
    store.insert_device(&new_device(name, labels), "test", 1).unwrap();
}

pub fn job_id(n: u8) -> JobId {
    JobId([n; 16])
}

/// Stores a job over `targets` (first attempts queued) and returns its id.
pub fn add_job(store: &mut Store, n: u8, target: Target, targets: &[&str], params: RolloutParams) -> JobId {
    let id = job_id(n);
    let spec = JobSpec {
        job_id: id,
        module: ModuleSource::Inline(Vec::new()),
        entry: "run".into(),
        args: vec![],
        limits: Limits { fuel: 0, memory_pages: 0, timeout_ms: 0 },
        requirements: Requirements::default(),
        inputs: vec![],
    };
    let prepared = prepare_module(spec, MODULE).unwrap();
    let job = NewJob {
        id,
        spec: postcard::to_allocvec(&prepared.spec).unwrap(),
        module_hash: sha256(MODULE),
        chunked_module: None,
        module_size: MODULE.len() as u64,
        entry: "run".into(),
        target,
        params,
    };
    let targets: Vec<DeviceId> = targets.iter().map(|t| device_id(t)).collect();
    store.insert_job(&job, &targets, "test", 1).unwrap();
    id
}

pub fn labels(text: &str) -> Labels {
    parse_labels(text).unwrap()
}

/// A device-signed event's wire bytes.
pub fn event(device: &str, job: JobId, attempt: u32, seq: u64, kind: EventKind) -> Vec<u8> {
    let event = ExecutionEvent {
        version: EVENT_VERSION,
        key: ExecutionKey { job_id: job, device_id: device_id(device), attempt },
        event_seq: seq,
        at: 0,
        kind,
    };
    SignedMessage::sign(&event, &device_key(device)).unwrap().to_bytes().unwrap()
}
