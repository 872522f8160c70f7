//! An MQTT client for the scenarios: the observer's eyes and the attacker's hands.
//!
//! Why a client of our own next to the controller: the controller's records are half
//! the truth. Devices, dashboards and a restarted controller read the **retained
//! topics** (`fleet/devices/{id}/status`, `fleet/jobs/{job}/status`), so a scenario
//! checks those too, by subscribing as any MQTT client would. Connected with the
//! controller's identity (username `fleet-controller`, the password from the data dir's
//! `controller.password`, and a client id of its own so it never takes over the
//! controller's session), it can also *publish* anywhere: that is how the forged,
//! replayed, expired and misdirected envelopes get on the wire. Connected with a
//! device's credentials, it is a compromised device probing the ACL.
//!
//! Everything received is kept in memory, in order; the scenario waits for what it
//! expects with a hang guard ([`MqttClient::wait_for`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::error::{HarnessError, Result};

/// The largest packet the fleet allows (the controller's and broker's limit).
const MAX_PACKET: usize = 256 * 1024;
/// How long a connect or a subscribe may take before the harness gives up.
const GUARD: Duration = Duration::from_secs(30);

/// A message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether it came as a retained message.
    pub retain: bool,
}

#[derive(Debug, Default)]
struct Inbox {
    messages: Vec<Message>,
    subacks: Vec<Vec<SubscribeReasonCode>>,
    pubacks: usize,
    connacks: usize,
    /// The first error that ended a connection, and how many there were.
    errors: Vec<String>,
    /// The broker refused the CONNECT.
    refused: Option<String>,
    /// The event loop stopped (no reconnect).
    stopped: bool,
}

/// A connected MQTT client, polled by a task on the harness's runtime.
#[derive(Debug)]
pub struct MqttClient {
    name: String,
    client: AsyncClient,
    inbox: Arc<Mutex<Inbox>>,
    task: JoinHandle<()>,
    handle: Handle,
}

impl MqttClient {
    /// Connects to `broker` as `client_id` with these credentials (clean session) and
    /// waits for the CONNACK. With `reconnect`, it reconnects after a lost connection
    /// (an observer that outlives a broker restart); without, it stops at the first
    /// error (a probe whose disconnection is the result). A refused CONNECT is
    /// [`HarnessError::Mqtt`] with the broker's return code.
    pub fn connect(
        broker: SocketAddr,
        client_id: &str,
        username: &str,
        password: &str,
        reconnect: bool,
    ) -> Result<Self> {
        let handle = crate::runtime::handle()?;
        let mut options = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        options
            .set_credentials(username, password)
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, eventloop) = AsyncClient::new(options, 256);
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let task = handle.spawn(poll(eventloop, inbox.clone(), reconnect));
        let this = Self { name: client_id.to_string(), client, inbox, task, handle };
        crate::wait::until(&format!("MQTT client {client_id} to connect to {broker}"), GUARD, || {
            let inbox = this.lock();
            if inbox.connacks > 0 {
                return Ok(Ok(()));
            }
            if let Some(refused) = &inbox.refused {
                return Err(HarnessError::Mqtt(format!("{client_id}: connection refused: {refused}")));
            }
            if !reconnect && let Some(error) = inbox.errors.first() {
                return Err(HarnessError::Mqtt(format!("{client_id}: cannot connect: {error}")));
            }
            Ok(Err(inbox.errors.last().cloned().unwrap_or_default()))
        })?;
        Ok(this)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to `filter` (QoS 1) and returns whether the broker granted it (a
    /// SUBACK failure code `0x80` is `false`).
    pub fn subscribe(&self, filter: &str) -> Result<bool> {
        let before = self.lock().subacks.len();
        self.handle
            .block_on(self.client.subscribe(filter, QoS::AtLeastOnce))
            .map_err(|e| HarnessError::Mqtt(format!("{}: cannot subscribe to {filter}: {e}", self.name)))?;
        crate::wait::until(&format!("{}: the SUBACK for {filter}", self.name), GUARD, || {
            let inbox = self.lock();
            if let Some(codes) = inbox.subacks.get(before) {
                return Ok(Ok(codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_)))));
            }
            if inbox.stopped {
                return Err(HarnessError::Mqtt(format!("{}: disconnected before the SUBACK for {filter}", self.name)));
            }
            Ok(Err(inbox.subacks.len()))
        })
    }

    /// Publishes `payload` on `topic` at QoS 1.
    pub fn publish(&self, topic: &str, payload: &[u8], retain: bool) -> Result<()> {
        self.handle
            .block_on(self.client.publish(topic, QoS::AtLeastOnce, retain, payload.to_vec()))
            .map_err(|e| HarnessError::Mqtt(format!("{}: cannot publish to {topic}: {e}", self.name)))
    }

    /// Publishes and waits for the broker's PUBACK (or for the connection to end: then
    /// `Ok(false)`, which is how a broker refuses a publish it does not allow).
    pub fn publish_acked(&self, topic: &str, payload: &[u8]) -> Result<bool> {
        let before = self.lock().pubacks;
        self.publish(topic, payload, false)?;
        crate::wait::until(&format!("{}: the PUBACK for {topic}", self.name), GUARD, || {
            let inbox = self.lock();
            if inbox.pubacks > before {
                return Ok(Ok(true));
            }
            if inbox.stopped {
                return Ok(Ok(false));
            }
            Ok(Err(inbox.pubacks))
        })
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Message> {
        self.lock().messages.clone()
    }

    /// Messages received on `topic`.
    pub fn messages_on(&self, topic: &str) -> Vec<Message> {
        self.lock().messages.iter().filter(|m| m.topic == topic).cloned().collect()
    }

    /// The last message received on `topic`.
    pub fn last_on(&self, topic: &str) -> Option<Message> {
        self.lock().messages.iter().rev().find(|m| m.topic == topic).cloned()
    }

    /// Waits until the messages received so far satisfy `check`, which returns the
    /// value wanted or a description of what it saw.
    pub fn wait_for<T>(
        &self,
        what: &str,
        guard: Duration,
        mut check: impl FnMut(&[Message]) -> std::result::Result<T, String>,
    ) -> Result<T> {
        crate::wait::until(what, guard, || Ok(check(&self.lock().messages)))
    }

    /// Waits until the last message on `topic` satisfies `check`; returns it.
    pub fn wait_last_on(&self, topic: &str, guard: Duration, check: impl Fn(&[u8]) -> bool) -> Result<Message> {
        self.wait_for(&format!("a message on {topic} that passes the check"), guard, |messages| {
            let last = messages.iter().rev().find(|m| m.topic == topic);
            match last {
                Some(m) if check(&m.payload) => Ok(m.clone()),
                Some(m) => Err(format!("last: {}", String::from_utf8_lossy(&m.payload))),
                None => Err("nothing yet".into()),
            }
        })
    }

    /// Whether the connection has ended for good (without reconnect).
    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Waits until the broker has closed the connection; returns why.
    pub fn wait_closed(&self, guard: Duration) -> Result<String> {
        crate::wait::until(&format!("{}: the broker to close the connection", self.name), guard, || {
            let inbox = self.lock();
            Ok(if inbox.stopped { Ok(inbox.errors.first().cloned().unwrap_or_default()) } else { Err(()) })
        })
    }

    /// How many times it connected (more than once: it reconnected).
    pub fn connects(&self) -> usize {
        self.lock().connacks
    }

    /// Sends DISCONNECT and stops.
    pub fn disconnect(self) {
        self.handle.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.client.disconnect()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn poll(mut eventloop: EventLoop, inbox: Arc<Mutex<Inbox>>, reconnect: bool) {
    loop {
        let event = eventloop.poll().await;
        let failed = event.is_err();
        let stop = {
            let mut guard = inbox.lock().unwrap_or_else(PoisonError::into_inner);
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => guard.connacks += 1,
                Ok(Event::Incoming(Packet::Publish(publish))) => guard.messages.push(Message {
                    topic: publish.topic.clone(),
                    payload: publish.payload.to_vec(),
                    retain: publish.retain,
                }),
                Ok(Event::Incoming(Packet::SubAck(suback))) => guard.subacks.push(suback.return_codes),
                Ok(Event::Incoming(Packet::PubAck(_))) => guard.pubacks += 1,
                Ok(_) => {}
                Err(error) => {
                    if let ConnectionError::ConnectionRefused(code) = &error {
                        guard.refused = Some(format!("{code:?}"));
                    }
                    guard.errors.push(error.to_string());
                }
            }
            if failed && (!reconnect || guard.refused.is_some()) {
                guard.stopped = true;
                true
            } else {
                false
            }
        };
        if stop {
            return;
        }
        if failed {
            // rumqttc reconnects on the next poll; do not spin while the broker is down.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
