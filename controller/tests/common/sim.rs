//! A device played by the tests: rumqttc plus fleet-schemas, verifying envelopes and
//! acks and signing events with the device's key.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_schemas::status::to_json;
use fleet_schemas::{
    DeviceId, DeviceStatus, EVENT_VERSION, EventKind, ExecutionEvent, ExecutionKey, JobId, KeyRing, Order, Presence,
    ReplayState, RunReport, RuntimeClass, SignedMessage, SigningKey, Topics, Trusted, verify_ack, verify_envelope,
    verify_rotation,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::watch;

use super::{device_id, device_key, password};

/// Hang guard for every wait.
pub const GUARD: Duration = Duration::from_secs(30);

/// Waits until `condition` holds (polling), panicking only if the hang guard runs out.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "hang guard: still waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a simulated device answers envelopes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accepted, Started, Succeeded for every new run; Canceled for a cancel.
    Auto,
    /// Records envelopes and answers nothing; the test sends events itself.
    Manual,
}

/// Every envelope a device received, duplicates included: (seq, raw bytes, order).
pub type Received = Vec<(u64, Vec<u8>, Order)>;

/// Publishes on topics the device does not expect: (topic, payload).
pub type Foreign = Vec<(String, Vec<u8>)>;

/// A device played by the test.
pub struct Sim {
    pub id: DeviceId,
    pub key: SigningKey,
    pub client: AsyncClient,
    pub topics: Topics,
    pub next_event: Arc<AtomicU64>,
    pub envelopes: Arc<Mutex<Received>>,
    /// Module chunks received (raw), in arrival order.
    pub chunks: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Publishes on any other topic (another device's jobs or acks, say): (topic, payload).
    pub foreign: Arc<Mutex<Foreign>>,
    /// The return codes of every SUBACK, in arrival order.
    pub subacks: Arc<Mutex<Vec<Vec<SubscribeReasonCode>>>>,
    pub acked: watch::Receiver<u64>,
    pub ready: watch::Receiver<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Sim {
    /// A device provisioned by [`super::add_device`].
    pub async fn start(name: &str, broker: SocketAddr, keys: KeyRing, mode: Mode) -> Sim {
        Sim::start_with(name, device_key(name), &password(name), broker, keys, None, mode).await
    }

    /// A device with this key and password.
    pub async fn start_with(
        name: &str,
        key: SigningKey,
        password: &str,
        broker: SocketAddr,
        keys: KeyRing,
        root: Option<Trusted>,
        mode: Mode,
    ) -> Sim {
        let id = device_id(name);
        let topics = Topics::default();
        let mut options = MqttOptions::new(name, broker.ip().to_string(), broker.port());
        options
            .set_credentials(name, password)
            .set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let next_event = Arc::new(AtomicU64::new(1));
        let envelopes = Arc::new(Mutex::new(Vec::new()));
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let foreign = Arc::new(Mutex::new(Vec::new()));
        let subacks = Arc::new(Mutex::new(Vec::new()));
        let (acked_tx, acked) = watch::channel(0u64);
        let (ready_tx, ready) = watch::channel(false);
        let task = {
            let (client, id, key, topics, next_event, envelopes, chunks, foreign, subacks) = (
                client.clone(),
                id.clone(),
                key.clone(),
                topics.clone(),
                next_event.clone(),
                envelopes.clone(),
                chunks.clone(),
                foreign.clone(),
                subacks.clone(),
            );
            tokio::spawn(async move {
                let mut replay = ReplayState::default();
                let mut keys = keys;
                let mut rotation_seq = 0;
                loop {
                    let event = match eventloop.poll().await {
                        Ok(event) => event,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    match event {
                        Event::Incoming(Packet::ConnAck(_)) => {
                            client.subscribe(topics.device_jobs(&id), QoS::AtLeastOnce).await.unwrap();
                            client.subscribe(topics.device_acks(&id), QoS::AtLeastOnce).await.unwrap();
                            if root.is_some() {
                                client.subscribe(topics.keys(), QoS::AtLeastOnce).await.unwrap();
                            }
                            let status = DeviceStatus {
                                device_id: id.clone(),
                                state: Presence::Online,
                                runtime: RuntimeClass::Gateway,
                                agent_version: "sim".into(),
                                labels: BTreeMap::new(),
                                queue_depth: 0,
                                outbox_depth: 0,
                                gpu: None,
                                inference: Vec::new(),
                                wasi: Vec::new(),
                                formats: vec![1],
                                ts: 0,
                            };
                            client
                                .publish(topics.device_status(&id), QoS::AtLeastOnce, true, to_json(&status))
                                .await
                                .unwrap();
                        }
                        Event::Incoming(Packet::SubAck(ack)) => {
                            subacks.lock().unwrap().push(ack.return_codes);
                            let _ = ready_tx.send(true);
                        }
                        Event::Incoming(Packet::Publish(p)) if p.topic.starts_with("fleet/modules/") => {
                            chunks.lock().unwrap().push(p.payload.to_vec());
                        }
                        Event::Incoming(Packet::Publish(p)) if p.topic == topics.keys() => {
                            let Some(root) = &root else { continue };
                            match verify_rotation(&p.payload, root, rotation_seq) {
                                Ok((rotation, ring)) => {
                                    rotation_seq = rotation.rotation_seq;
                                    keys = ring;
                                }
                                Err(fleet_schemas::Rejection::Replayed { .. }) => {}
                                Err(rejection) => panic!("{id}: rotation refused: {rejection}"),
                            }
                        }
                        Event::Incoming(Packet::Publish(p)) if p.topic == topics.device_acks(&id) => {
                            let ack = verify_ack(&p.payload, &keys, &id).expect("acks verify with the job key");
                            acked_tx.send_modify(|seen| *seen = (*seen).max(ack.through_seq));
                        }
                        Event::Incoming(Packet::Publish(p)) if p.topic == topics.device_jobs(&id) => {
                            let verified = match verify_envelope(&p.payload, &keys, &id, None, &replay) {
                                Ok(verified) => verified.envelope,
                                Err(fleet_schemas::Rejection::Replayed { .. }) => {
                                    // A redelivered copy: the sequence check makes it harmless.
                                    let signed = SignedMessage::from_bytes(&p.payload).unwrap();
                                    let envelope: fleet_schemas::Envelope = signed.decode_body().unwrap();
                                    envelopes.lock().unwrap().push((envelope.seq, p.payload.to_vec(), envelope.order));
                                    continue;
                                }
                                Err(rejection) => panic!("{id}: envelope refused: {rejection}"),
                            };
                            replay.accept(&verified);
                            envelopes.lock().unwrap().push((verified.seq, p.payload.to_vec(), verified.order.clone()));
                            if mode == Mode::Manual {
                                continue;
                            }
                            let answers = match &verified.order {
                                Order::Run { attempt, job } => {
                                    let report = RunReport {
                                        output: format!("ok from {id}").into_bytes(),
                                        logs: vec!["ran".into()],
                                        fuel_used: 100,
                                        duration_ms: 1,
                                    };
                                    let key = (job.job_id, *attempt);
                                    vec![
                                        (key, EventKind::Accepted),
                                        (key, EventKind::Started),
                                        (key, EventKind::Succeeded(report)),
                                    ]
                                }
                                Order::Cancel { .. } => vec![],
                            };
                            for ((job, attempt), kind) in answers {
                                let seq = next_event.fetch_add(1, Ordering::SeqCst);
                                let bytes = signed_event(&key, &id, job, attempt, seq, kind);
                                client
                                    .publish(topics.device_events(&id), QoS::AtLeastOnce, false, bytes)
                                    .await
                                    .unwrap();
                            }
                        }
                        Event::Incoming(Packet::Publish(p)) => {
                            foreign.lock().unwrap().push((p.topic.clone(), p.payload.to_vec()));
                        }
                        _ => {}
                    }
                }
            })
        };
        let mut sim =
            Sim { id, key, client, topics, next_event, envelopes, chunks, foreign, subacks, acked, ready, task };
        tokio::time::timeout(GUARD, sim.ready.wait_for(|ready| *ready))
            .await
            .unwrap_or_else(|_| panic!("hang guard: {name} never subscribed (credentials refused?)"))
            .unwrap();
        sim
    }

    /// Signs and publishes an event with the next sequence number; returns the bytes.
    pub async fn send(&self, job: JobId, attempt: u32, kind: EventKind) -> Vec<u8> {
        let seq = self.next_event.fetch_add(1, Ordering::SeqCst);
        let bytes = signed_event(&self.key, &self.id, job, attempt, seq, kind);
        self.publish_raw(bytes.clone()).await;
        bytes
    }

    pub async fn publish_raw(&self, bytes: Vec<u8>) {
        self.client.publish(self.topics.device_events(&self.id), QoS::AtLeastOnce, false, bytes).await.unwrap();
    }

    /// The highest event seq this device used.
    pub fn last_event(&self) -> u64 {
        self.next_event.load(Ordering::SeqCst) - 1
    }

    pub async fn wait_acked(&mut self, through: u64) {
        tokio::time::timeout(GUARD, self.acked.wait_for(|seen| *seen >= through))
            .await
            .expect("hang guard: ack")
            .unwrap();
    }

    pub fn envelopes(&self) -> Received {
        self.envelopes.lock().unwrap().clone()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn signed_event(key: &SigningKey, id: &DeviceId, job: JobId, attempt: u32, seq: u64, kind: EventKind) -> Vec<u8> {
    let event = ExecutionEvent {
        version: EVENT_VERSION,
        key: ExecutionKey { job_id: job, device_id: id.clone(), attempt },
        event_seq: seq,
        at: 0,
        kind,
    };
    SignedMessage::sign(&event, key).unwrap().to_bytes().unwrap()
}
