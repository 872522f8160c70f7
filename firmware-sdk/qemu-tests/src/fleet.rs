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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_broker::{Authenticator, BrokerConfig, Identity, RunningBroker};
use fleet_schemas::golden::{CONTROLLER_SEED, DEVICE_ID, DEVICE_SEED};
use fleet_schemas::signed::{is_signed, public_key_of};
use fleet_schemas::status::from_json;
use fleet_schemas::{
    ACK_VERSION, DeviceId, DeviceStatus, ENVELOPE_VERSION, Envelope, EventAck, ExecutionEvent, JobId, JobSpec, Limits,
    ModuleSource, Order, Requirements, SYNC_VERSION, SignedMessage, SigningKey, SyncGrant, SyncRequest, Topics,
    VerifyingKey, verify_event, verify_sync_request,
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
    /// The device's new store asked where it stands and was granted: replay floor and
    /// event base (the grant is out, ahead of anything published after this).
    Synced {
        /// The grant's replay floor.
        replay_floor: u64,
        /// The grant's event base.
        event_base: u64,
    },
}

/// Whether the device is online and its store synced: what is sent from now on is
/// judged, not dropped.
pub fn ready(received: &[Received]) -> bool {
    received.iter().any(|r| matches!(r, Received::Status(s) if s.state == fleet_schemas::Presence::Online))
        && received.iter().any(|r| matches!(r, Received::Synced { .. }))
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
    /// The next envelope seq, shared with the task that answers sync requests (the
    /// floor it grants is the seq before it).
    next_seq: Arc<AtomicU64>,
    /// The broker's port on 127.0.0.1.
    pub port: u16,
    /// Its MQTT over TLS port, when started with [`Fleet::start_with_tls`].
    pub tls_port: Option<u16>,
}

impl Fleet {
    /// Starts the broker on a free port and connects the controller, subscribed to the
    /// golden device's events and status.
    pub fn start() -> Fleet {
        Self::start_with_tls(None)
    }

    /// Like [`Fleet::start`]; with `tls`, the broker also serves MQTT over TLS (with
    /// this server configuration) on a free port, [`Fleet::tls_port`].
    pub fn start_with_tls(tls: Option<Arc<fleet_broker::rustls::ServerConfig>>) -> Fleet {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start tokio: {e}"));
        let logins = Logins(BTreeMap::from([
            (CONTROLLER.0.to_string(), CONTROLLER.1.to_string()),
            (DEVICE_ID.to_string(), DEVICE_PASSWORD.to_string()),
        ]));
        let mut config = BrokerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.tls =
            tls.map(|config| fleet_broker::TlsListener { listen: SocketAddr::from(([127, 0, 0, 1], 0)), config });
        let broker = runtime
            .block_on(fleet_broker::start(config, Arc::new(logins)))
            .unwrap_or_else(|e| panic!("cannot start the fleet broker: {e}"));
        let port = broker.local_addr().port();
        let tls_port = broker.tls_addr().map(|addr| addr.port());
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
        let next_seq = Arc::new(AtomicU64::new(1));
        let answer = Answer {
            client: client.clone(),
            controller: SigningKey::from_bytes(&CONTROLLER_SEED),
            jobs_topic: topics.device_jobs(&me),
            next_seq: next_seq.clone(),
            max_event_seq: 0,
        };
        runtime.spawn(drive(eventloop, tx, subscribed_tx, events_topic.clone(), me.clone(), device_key, answer));
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
            next_seq,
            port,
            tls_port,
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
            seq: self.next_seq.fetch_add(1, Ordering::SeqCst),
            order: Order::Run { attempt: 1, job: Box::new(job) },
        };
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

/// What the controller needs to answer a sync request as the real one does.
struct Answer {
    client: AsyncClient,
    controller: SigningKey,
    jobs_topic: String,
    next_seq: Arc<AtomicU64>,
    max_event_seq: u64,
}

impl Answer {
    /// Grants the floor (every seq signed so far) and the base (every event seen), and
    /// publishes the grant on the device's jobs topic.
    async fn grant(&mut self, me: &DeviceId, incarnation: fleet_schemas::Incarnation) -> Received {
        let (key_id, _) = public_key_of(&self.controller);
        let replay_floor = self.next_seq.load(Ordering::SeqCst) - 1;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let grant = SyncGrant {
            version: SYNC_VERSION,
            key_id,
            device_id: me.clone(),
            incarnation,
            replay_floor,
            issued_at: now,
            event_base: self.max_event_seq,
        };
        let bytes = SignedMessage::sign(&grant, &self.controller).and_then(|s| s.to_bytes());
        let bytes = bytes.unwrap_or_else(|e| panic!("cannot sign the grant: {e:?}"));
        self.client
            .publish(self.jobs_topic.as_str(), QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap_or_else(|e| panic!("cannot publish the grant: {e}"));
        Received::Synced { replay_floor, event_base: self.max_event_seq }
    }
}

/// Drives the controller's event loop; forwards SUBACKs, verified events and statuses,
/// and answers sync requests.
async fn drive(
    mut eventloop: rumqttc::EventLoop,
    tx: Sender<Received>,
    subscribed: Sender<()>,
    events_topic: String,
    me: DeviceId,
    device_key: VerifyingKey,
    mut answer: Answer,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = subscribed.send(());
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let received = if publish.topic == events_topic && is_signed::<SyncRequest>(&publish.payload) {
                    match verify_sync_request(&publish.payload, &me, &device_key) {
                        Ok(request) => answer.grant(&me, request.incarnation).await,
                        Err(e) => Received::Forged(format!("sync request: {e:?}")),
                    }
                } else if publish.topic == events_topic {
                    match verify_event(&publish.payload, &me, &device_key) {
                        Ok(event) => {
                            answer.max_event_seq = answer.max_event_seq.max(event.event_seq);
                            Received::Event(event, publish.payload.to_vec())
                        }
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
