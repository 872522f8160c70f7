//! Helpers shared by the integration tests: devices with known keys, jobs, signed events.
#![allow(clippy::unwrap_used, dead_code)]

pub mod sim;

use fleet_controller::auth::password_hash;
use fleet_controller::datadir::DataDir;
use fleet_controller::model::{DeviceKind, ExecState, Labels, RolloutParams, Target, parse_labels};
use fleet_controller::signer::prepare_module;
use fleet_controller::store::{NewDevice, NewJob, Store};
use fleet_schemas::digest::sha256;
use fleet_schemas::signed::public_key_of;
use fleet_schemas::{
    DeviceId, EVENT_VERSION, EventKind, ExecutionEvent, ExecutionKey, JobId, JobSpec, JobState, KeyRing, Limits,
    ModuleSource, Order, Presence, Requirements, SignedMessage, SigningKey, Trusted,
};

use sim::{Sim, wait_until};

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
        // 12 bytes of salt, as `fleetctl device provision` uses: mosquitto drops an entry
        // whose salt is any other length ("Unable to decode password salt").
        mosquitto_hash: fleet_controller::acl::mosquitto_hash(&password(name), b"salt-12bytes"),
        cert_sha256: None,
    }
}

pub fn add_device(store: &mut Store, name: &str, labels: &str) {
    store.insert_device(&new_device(name, labels), "test", 1).unwrap();
}

pub fn job_id(n: u8) -> JobId {
    JobId([n; 16])
}

/// A job spec with defaults everywhere: the module is filled in by `prepare_module`.
pub fn bare_spec(id: JobId) -> JobSpec {
    JobSpec {
        job_id: id,
        module: ModuleSource::Inline(Vec::new()),
        entry: "run".into(),
        args: vec![],
        limits: Limits { fuel: 0, memory_pages: 0, timeout_ms: 0 },
        requirements: Requirements::default(),
        inputs: vec![],
    }
}

/// Stores a job over `targets` (first attempts queued) and returns its id.
pub fn add_job(store: &mut Store, n: u8, target: Target, targets: &[&str], params: RolloutParams) -> JobId {
    let id = job_id(n);
    let spec = bare_spec(id);
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

/// A data directory with `names` provisioned (label `site=a`), and the keys devices trust.
pub fn fleet(dir: &std::path::Path, names: &[&str]) -> (DataDir, KeyRing) {
    let data = DataDir::new(dir.join("fleet-data"));
    let mut store = data.open_or_init().unwrap();
    for name in names {
        add_device(&mut store, name, "site=a");
    }
    let keys = store.trusted_job_keys().unwrap().iter().map(|k| Trusted::new(&k.public_key).unwrap()).collect();
    (data, KeyRing::new(keys).unwrap())
}

/// Waits until the controller has recorded every registered device online.
pub async fn wait_all_online(store: &Store) {
    wait_until("every device online", || {
        store.devices().unwrap().iter().all(|d| d.status.as_ref().is_some_and(|s| s.state == Presence::Online))
    })
    .await;
}

/// Waits for `job` (sent to every device of `sims`, which answer in [`sim::Mode::Auto`])
/// to complete, then checks what the store and the devices saw: every execution
/// succeeded with its device's output, one envelope (seq 1) per device, all three events
/// acked, every device online.
pub async fn assert_every_device_succeeded(store: &Store, job: &JobId, sims: &mut [Sim]) {
    wait_until("the job to complete", || store.job(job).unwrap().unwrap().state == JobState::Completed).await;
    let executions = store.executions(job).unwrap();
    assert_eq!(executions.len(), sims.len());
    for row in &executions {
        assert_eq!(row.state, ExecState::Succeeded);
        assert_eq!(row.output.as_deref(), Some(format!("ok from {}", row.device_id).as_bytes()));
        assert_eq!(row.envelope_seq, Some(1));
    }
    for sim in sims.iter_mut() {
        sim.wait_acked(3).await; // Accepted, Started, Succeeded
        let envelopes = sim.envelopes();
        assert_eq!(envelopes.len(), 1);
        assert!(matches!(&envelopes[0].2, Order::Run { attempt: 1, job: spec } if spec.job_id == *job));
    }
    wait_until("device statuses", || {
        store.devices().unwrap().iter().all(|d| d.status.as_ref().is_some_and(|s| s.state == Presence::Online))
    })
    .await;
}
