//! The MQTT link: rumqttc's event loop on tokio, turned into core inputs.
//!
//! Why it is shaped this way:
//!
//! * **Persistent session** (`clean_session = false`, client id = device id): while the
//!   device is offline the broker keeps its QoS 1 envelopes and acks, and delivers them
//!   on reconnect.
//! * **Manual acks**: the broker may forget an envelope once it has our PUBACK, so the
//!   PUBACK goes out only when the core says [`Action::AckDelivery`], after the envelope
//!   is in the store. The link hands each PUBLISH over with the *generation* of the
//!   connection it came on; an ack for an older connection is dropped rather than sent
//!   (the broker redelivers that message anyway, and rumqttd closes a connection that
//!   acks a packet id it is not waiting for).
//! * **Last-will**: the retained offline status, so the fleet sees a dead device as
//!   offline without polling.
//! * **Reconnect** with jittered exponential backoff ([`crate::backoff`]).
//!
//! The event loop never blocks on the core: it forwards into an unbounded channel, so
//! the core thread can always wait on the client's request channel without a cycle.
//!
//! [`Action::AckDelivery`]: fleet_agent_core::Action::AckDelivery

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use fleet_agent_core::{Publish, QoS};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet};
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::backoff::{Backoff, BackoffConfig};
use crate::shell::Wake;

/// The largest MQTT packet sent or received: room for the largest envelope or event
/// (64 KiB) several times over, and what the fleet broker accepts by default.
pub const MAX_PACKET_BYTES: usize = 256 * 1024;

/// Requests the core thread may queue for the event loop before it waits.
const REQUEST_CAPACITY: usize = 1024;

/// How long the shell waits for room in a full request channel before it drops the
/// request. Only reachable if the link dies under a burst of thousands of requests; a
/// dropped event is republished by the core, a dropped ack is redelivered by the broker.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// No connection is up (a generation that is never issued).
const NO_GENERATION: u64 = 0;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id (the device id).
    pub client_id: String,
    /// MQTT username.
    pub username: String,
    /// MQTT password.
    pub password: String,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// The retained offline status to leave behind.
    pub last_will: Publish,
    /// TLS to the broker (its certificate checked against the fleet's CA), or plain TCP.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// The core thread's handle on the link: publish, ack, subscribe.
pub struct Link {
    client: AsyncClient,
    runtime: Handle,
    generation: Arc<AtomicU64>,
}

/// Starts the event loop on `runtime`; everything it hears goes to `wake`. Returns the
/// link and the task, which ends after [`Link::disconnect`] or once `wake` is closed.
pub fn start(config: LinkConfig, runtime: &Handle, wake: Sender<Wake>) -> (Link, tokio::task::JoinHandle<()>) {
    let mut options = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(config.keep_alive)
        .set_credentials(config.username.clone(), config.password.clone())
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_last_will(LastWill::new(
            config.last_will.topic.clone(),
            config.last_will.payload.clone(),
            qos(config.last_will.qos),
            config.last_will.retain,
        ));
    if let Some(tls) = &config.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
    }
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    // Small packets (PUBACKs, events) must not wait for Nagle's algorithm and the
    // peer's delayed ACK: that alone adds ~40 ms per hop.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let generation = Arc::new(AtomicU64::new(NO_GENERATION));
    let task = runtime.spawn(drive(eventloop, Backoff::new(config.backoff), generation.clone(), wake));
    (Link { client, runtime: runtime.clone(), generation }, task)
}

/// Polls the event loop forever, reconnecting with backoff.
async fn drive(mut eventloop: EventLoop, mut backoff: Backoff, current: Arc<AtomicU64>, wake: Sender<Wake>) {
    let mut generation = NO_GENERATION;
    let mut up = false;
    // Failed connects since the link was last up: the first is worth a warning (a wrong
    // password, a broker that is down), the retries only a debug line.
    let mut failed_connects = 0u32;
    loop {
        let forwarded = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                generation += 1;
                current.store(generation, Ordering::SeqCst);
                backoff.reset();
                up = true;
                failed_connects = 0;
                info!(session_present = connack.session_present, "MQTT link up");
                wake.send(Wake::LinkUp)
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => wake.send(Wake::Message { generation, publish }),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                current.store(NO_GENERATION, Ordering::SeqCst);
                debug!("MQTT disconnect sent; link task ends");
                return;
            }
            Ok(_) => Ok(()),
            Err(error) => {
                current.store(NO_GENERATION, Ordering::SeqCst);
                let delay = backoff.next_delay();
                let sent = if up {
                    up = false;
                    warn!(%error, retry_in_ms = delay.as_millis(), "MQTT link down");
                    wake.send(Wake::LinkDown)
                } else {
                    failed_connects = failed_connects.saturating_add(1);
                    if failed_connects == 1 {
                        warn!(%error, retry_in_ms = delay.as_millis(), "cannot connect to the MQTT broker; retrying");
                    } else {
                        debug!(%error, retry_in_ms = delay.as_millis(), attempt = failed_connects, "MQTT connect failed");
                    }
                    Ok(())
                };
                tokio::time::sleep(delay).await;
                sent
            }
        };
        if forwarded.is_err() {
            // The core thread is gone: nobody to deliver to.
            return;
        }
    }
}

impl Link {
    /// The generation of the connection now up, if one is.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Queues a publish. Waits only if the request channel is full.
    pub fn publish(&self, publish: Publish) {
        let request = self.client.publish(publish.topic, qos(publish.qos), publish.retain, publish.payload);
        self.queue("publish (the core republishes events until acknowledged)", request);
    }

    /// Sends the PUBACK for a message that came on connection `generation`; dropped if
    /// that connection is gone (the broker redelivers the message on the next one).
    pub fn ack(&self, generation: u64, publish: &rumqttc::Publish) {
        if generation != self.generation() {
            debug!(pkid = publish.pkid, "not acking a message from an earlier connection");
            return;
        }
        self.queue("ack (the broker will redeliver)", self.client.ack(publish));
    }

    /// Subscribes to a topic filter.
    pub fn subscribe(&self, topic: String, level: QoS) {
        self.queue("subscribe", self.client.subscribe(topic, qos(level)));
    }

    /// Unsubscribes from a topic filter.
    pub fn unsubscribe(&self, topic: String) {
        self.queue("unsubscribe", self.client.unsubscribe(topic));
    }

    /// Hands a request to the event loop, waiting at most [`REQUEST_WAIT`] for room.
    fn queue(&self, what: &str, request: impl Future<Output = Result<(), rumqttc::ClientError>>) {
        match self.runtime.block_on(async { tokio::time::timeout(REQUEST_WAIT, request).await }) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, request = what, "cannot queue an MQTT request"),
            Err(_) => {
                warn!(request = what, wait_s = REQUEST_WAIT.as_secs(), "MQTT request channel full; request dropped")
            }
        }
    }

    /// Publishes the offline status (a clean DISCONNECT suppresses the last-will) and
    /// disconnects.
    pub fn disconnect(&self, offline: Publish) {
        if self.generation() != NO_GENERATION {
            self.publish(offline);
        }
        self.queue("disconnect", self.client.disconnect());
    }
}

fn qos(level: QoS) -> rumqttc::QoS {
    match level {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
    }
}
