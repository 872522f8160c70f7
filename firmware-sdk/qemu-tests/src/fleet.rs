//! The fleet around one emulated device: the fleet's own broker on loopback and a test
//! controller that signs envelopes and acks, and verifies what the device reports.
//!
//! The broker is `fleet-broker` (rumqttd behind the fleet's auth and ACL front door,
//! MQTT 3.1.1), the one the device meets in production, so the board is tested against
//! the ACL too: it may only publish its own events and status and subscribe to its own
//! jobs and acks. The controller is a rumqttc client using `fleet-schemas` exactly as
//! the real controller does: it signs with the job key the device was provisioned with,
//! and checks every event against the device's public key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_broker::{Authenticator, BrokerConfig, Identity, RunningBroker};
use fleet_schemas::golden::{CONTROLLER_SEED, DEVICE_ID, DEVICE_SEED};
use fleet_schemas::signed::public_key_of;
use fleet_schemas::status::from_json;
use fleet_schemas::{
    ACK_VERSION, DeviceId, DeviceStatus, ENVELOPE_VERSION, Envelope, EventAck, ExecutionEvent, JobId, JobSpec, Limits,
    ModuleSource, Order, Requirements, SignedMessage, SigningKey, Topics, VerifyingKey, verify_event,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// The controller's MQTT login.
pub const CONTROLLER: (&str, &str) = ("controller", "controller-pw");
/// The device's MQTT password (its username is its id).
pub const DEVICE_PASSWORD: &str = "device-pw";

/// Logins: the controller, and each device with its password.
struct Logins(BTreeMap<String, String>);

impl Authenticator for Logins {
    fn authenticate(&self, _client_id: &str, username: &str, password: &[u8]) -> Option<Identity> {
        let expected = self.0.get(username)?;
        if expected.as_bytes() != password {
            return None;
        }
        if username == CONTROLLER.0 {
            Some(Identity::Controller)
        } else {
            DeviceId::new(username).ok().map(Identity::Device)
        }
    }
}

/// What the controller received.
#[derive(Debug, Clone)]
pub enum Received {
    /// A device event that verified, with its wire bytes.
    Event(ExecutionEvent, Vec<u8>),
    /// Bytes on the events topic that did not verify.
    Forged(String),
    /// A status document.
    Status(DeviceStatus),
}

/// The broker and the controller. Dropping it stops both.
pub struct Fleet {
    runtime: tokio::runtime::Runtime,
    broker: Option<RunningBroker>,
    client: AsyncClient,
    incoming: Receiver<Received>,
    /// Everything received so far, in order.
    pub received: Vec<Received>,
    controller: SigningKey,
    me: DeviceId,
    topics: Topics,
    next_seq: u64,
    /// The broker's port on 127.0.0.1.
    pub port: u16,
}

impl Fleet {
    /// Starts the broker on a free port and connects the controller, subscribed to the
    /// golden device's events and status.
    pub fn start() -> Fleet {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start tokio: {e}"));
        let logins = Logins(BTreeMap::from([
            (CONTROLLER.0.to_string(), CONTROLLER.1.to_string()),
            (DEVICE_ID.to_string(), DEVICE_PASSWORD.to_string()),
        ]));
        let config = BrokerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        let broker = runtime
            .block_on(fleet_broker::start(config, Arc::new(logins)))
            .unwrap_or_else(|e| panic!("cannot start the fleet broker: {e}"));
        let port = broker.local_addr().port();
        let me = DeviceId::new(DEVICE_ID).unwrap_or_else(|e| panic!("golden device id: {e}"));
        let topics = Topics::default();
        let device_key = SigningKey::from_bytes(&DEVICE_SEED).verifying_key();

        let mut options = MqttOptions::new("fleet-test-controller", "127.0.0.1", port);
        options.set_credentials(CONTROLLER.0, CONTROLLER.1);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (tx, incoming) = channel();
        let (subscribed_tx, subscribed) = channel();
        let events_topic = topics.device_events(&me);
        let status_topic = topics.device_status(&me);
        runtime.spawn(drive(eventloop, tx, subscribed_tx, events_topic.clone(), me.clone(), device_key));
        for topic in [&events_topic, &status_topic] {
            runtime
                .block_on(client.subscribe(topic.as_str(), QoS::AtLeastOnce))
                .unwrap_or_else(|e| panic!("cannot subscribe to {topic}: {e}"));
        }
        for _ in 0..2 {
            subscribed.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("no SUBACK: {e}"));
        }
        Fleet {
            runtime,
            broker: Some(broker),
            client,
            incoming,
            received: Vec::new(),
            controller: SigningKey::from_bytes(&CONTROLLER_SEED),
            me,
            topics,
            next_seq: 1,
            port,
        }
    }

    /// A job running `module` with `args`, its id derived from `n`.
    pub fn job(n: u8, module: &[u8], args: &[&str], fuel: u64) -> JobSpec {
        JobSpec {
            job_id: JobId([n; 16]),
            module: ModuleSource::Inline(module.to_vec()),
            entry: "run".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            limits: Limits { fuel, memory_pages: 0, timeout_ms: 0 },
            requirements: Requirements::default(),
            inputs: vec![],
        }
    }

    /// Signs an envelope running `job` (attempt 1) at the next seq, valid for an hour.
    pub fn envelope(&mut self, job: JobSpec) -> Vec<u8> {
        let (key_id, _) = public_key_of(&self.controller);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            key_id,
            issued_at: now,
            not_after: now + 3600,
            device_id: self.me.clone(),
            seq: self.next_seq,
            order: Order::Run { attempt: 1, job: Box::new(job) },
        };
        self.next_seq += 1;
        let signed = SignedMessage::sign(&envelope, &self.controller).and_then(|s| s.to_bytes());
        signed.unwrap_or_else(|e| panic!("cannot sign the envelope: {e:?}"))
    }

    /// Publishes bytes on the device's jobs topic at QoS 1.
    pub fn send_job(&self, envelope: Vec<u8>) {
        let topic = self.topics.device_jobs(&self.me);
        self.publish(&topic, envelope);
    }

    /// Acknowledges the device's events through `through_seq` (a signed `EventAck`).
    pub fn ack(&self, through_seq: u64) {
        let (key_id, _) = public_key_of(&self.controller);
        let ack = EventAck { version: ACK_VERSION, key_id, device_id: self.me.clone(), through_seq };
        let bytes = SignedMessage::sign(&ack, &self.controller).and_then(|s| s.to_bytes());
        let bytes = bytes.unwrap_or_else(|e| panic!("cannot sign the ack: {e:?}"));
        let topic = self.topics.device_acks(&self.me);
        self.publish(&topic, bytes);
    }

    fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.runtime
            .block_on(self.client.publish(topic, QoS::AtLeastOnce, false, payload))
            .unwrap_or_else(|e| panic!("cannot publish to {topic}: {e}"));
    }

    /// Takes in what arrived, for up to `wait`, until `done` holds for what was received.
    pub fn wait_until(&mut self, wait: Duration, done: impl Fn(&[Received]) -> bool) -> bool {
        let start = Instant::now();
        loop {
            if done(&self.received) {
                return true;
            }
            let left = wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return false;
            }
            match self.incoming.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(received) => self.received.push(received),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return done(&self.received),
            }
        }
    }

    /// The verified events received so far, in arrival order.
    pub fn events(&self) -> Vec<&ExecutionEvent> {
        self.received
            .iter()
            .filter_map(|r| match r {
                Received::Event(event, _) => Some(event),
                _ => None,
            })
            .collect()
    }

    /// The latest status document received.
    pub fn last_status(&self) -> Option<&DeviceStatus> {
        self.received.iter().rev().find_map(|r| match r {
            Received::Status(status) => Some(status),
            _ => None,
        })
    }

    /// Stops the broker.
    pub fn stop_broker(&mut self) {
        if let Some(broker) = self.broker.take() {
            self.runtime.block_on(broker.shutdown());
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_broker();
    }
}

/// Drives the controller's event loop; forwards SUBACKs, verified events and statuses.
async fn drive(
    mut eventloop: rumqttc::EventLoop,
    tx: Sender<Received>,
    subscribed: Sender<()>,
    events_topic: String,
    me: DeviceId,
    device_key: VerifyingKey,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = subscribed.send(());
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let received = if publish.topic == events_topic {
                    match verify_event(&publish.payload, &me, &device_key) {
                        Ok(event) => Received::Event(event, publish.payload.to_vec()),
                        Err(e) => Received::Forged(format!("{e:?}")),
                    }
                } else {
                    match from_json::<DeviceStatus>(&publish.payload) {
                        Ok(status) => Received::Status(status),
                        Err(_) => continue,
                    }
                };
                if tx.send(received).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            // The broker went away (a test stopped it): reconnect after a pause.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
