//! Shared helpers: a broker on an ephemeral port, real rumqttc clients, and waits that
//! are hang guards only (a test asserts on what arrives, never on how fast).

#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleet_broker::{Authenticator, BrokerConfig, Identity, RunningBroker};
use fleet_schemas::DeviceId;
use rumqttc::{AsyncClient, ConnAck, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubAck};
use tokio::sync::mpsc;

/// Long enough never to fire on a healthy run; only there so a bug fails instead of hanging.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// Credentials for tests: username `controller` or a device id, password `pw-{username}`.
pub struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate(&self, _client_id: &str, username: &str, password: &[u8]) -> Option<Identity> {
        if password != format!("pw-{username}").as_bytes() {
            return None;
        }
        if username == "controller" {
            Some(Identity::Controller)
        } else {
            DeviceId::new(username).ok().map(Identity::Device)
        }
    }
}

pub async fn broker() -> RunningBroker {
    broker_with(|_| {}).await
}

/// A broker on a free loopback port, on the engine `FLEET_TEST_BROKER_ENGINE` names
/// (`native`, the default, or `rumqttd`: CI runs the MQTT tests on both).
pub async fn broker_with(configure: impl FnOnce(&mut BrokerConfig)) -> RunningBroker {
    let mut config = BrokerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.engine = match std::env::var("FLEET_TEST_BROKER_ENGINE").as_deref() {
        Ok("rumqttd") => fleet_broker::EngineKind::Rumqttd,
        _ => fleet_broker::EngineKind::Native,
    };
    configure(&mut config);
    fleet_broker::start(config, Arc::new(TestAuth)).await.unwrap()
}

/// Options for `client_id` logging in as `username` with its right password.
pub fn options(broker: &RunningBroker, client_id: &str, username: &str) -> MqttOptions {
    let addr = broker.local_addr();
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_credentials(username, format!("pw-{username}"));
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options
}

/// A client whose event loop runs in a task, stopping at the first error (no silent
/// reconnects: a test reconnects explicitly).
pub struct Client {
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Starts connecting; see [`Client::connack`] and [`Client::refusal`].
    pub fn start(options: MqttOptions) -> Self {
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx));
        Self { client, events, task }
    }

    /// Connects and waits for a successful CONNACK.
    pub async fn connect(options: MqttOptions) -> Self {
        let mut client = Self::start(options);
        let ack = client.connack().await;
        assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
        client
    }

    async fn next(&mut self) -> Option<Result<Event, ConnectionError>> {
        tokio::time::timeout(HANG_GUARD, self.events.recv()).await.expect("hang guard: no event from the client")
    }

    /// The CONNACK (panics on a refusal or an error).
    pub async fn connack(&mut self) -> ConnAck {
        loop {
            match self.next().await {
                Some(Ok(Event::Incoming(Packet::ConnAck(ack)))) => return ack,
                Some(Ok(_)) => {}
                other => panic!("expected CONNACK, got {other:?}"),
            }
        }
    }

    /// The refusal code the broker answered the CONNECT with.
    pub async fn refusal(&mut self) -> rumqttc::ConnectReturnCode {
        loop {
            match self.next().await {
                Some(Err(ConnectionError::ConnectionRefused(code))) => return code,
                Some(Ok(Event::Outgoing(_))) => {}
                other => panic!("expected a refused CONNECT, got {other:?}"),
            }
        }
    }

    /// The next incoming PUBLISH (panics if the connection ends first).
    pub async fn publish(&mut self) -> Publish {
        loop {
            match self.next().await {
                Some(Ok(Event::Incoming(Packet::Publish(publish)))) => return publish,
                Some(Ok(_)) => {}
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }

    /// The next SUBACK.
    pub async fn suback(&mut self) -> SubAck {
        loop {
            match self.next().await {
                Some(Ok(Event::Incoming(Packet::SubAck(ack)))) => return ack,
                Some(Ok(_)) => {}
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }

    /// The next PUBACK's packet id.
    pub async fn puback(&mut self) -> u16 {
        loop {
            match self.next().await {
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => return ack.pkid,
                Some(Ok(_)) => {}
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }

    /// Waits until the broker closes the connection; returns the PUBLISHes that arrived
    /// meanwhile.
    pub async fn closed_by_broker(&mut self) -> Vec<Publish> {
        let mut received = Vec::new();
        loop {
            match self.next().await {
                Some(Ok(Event::Incoming(Packet::Publish(publish)))) => received.push(publish),
                Some(Ok(_)) => {}
                Some(Err(ConnectionError::Io(_) | ConnectionError::MqttState(_))) | None => return received,
                Some(Err(other)) => panic!("expected the broker to close the connection, got {other:?}"),
            }
        }
    }

    /// Subscribes and returns the SUBACK.
    pub async fn subscribe(&mut self, filter: &str) -> SubAck {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        self.suback().await
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub async fn publish_acked(&mut self, topic: &str, retain: bool, payload: &[u8]) {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload.to_vec()).await.unwrap();
        self.puback().await;
    }

    /// Ends the connection without DISCONNECT, as a device losing power would.
    pub fn kill(self) {
        self.task.abort();
    }

    /// A clean DISCONNECT; waits until the event loop has sent it.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        loop {
            match self.next().await {
                Some(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
        let _ = tokio::time::timeout(HANG_GUARD, self.task).await;
    }
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Event, ConnectionError>>) {
    loop {
        let event = eventloop.poll().await;
        let stop = event.is_err();
        if tx.send(event).is_err() || stop {
            return;
        }
    }
}

/// Shorthand for a device's topic.
pub fn device_topic(id: &str, leaf: &str) -> String {
    format!("fleet/devices/{id}/{leaf}")
}
