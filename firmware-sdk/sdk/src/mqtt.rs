//! The MQTT 5 session of a fleet device, on `rust-mqtt` over any [`Transport`].
//!
//! What the fleet asks of a device's connection is fixed by the protocol
//! (`docs/protocol.md`): log in with the provisioned username and password; leave a
//! last-will that sets the retained `{prefix}/devices/{id}/status` to offline when
//! the link dies; subscribe to `{prefix}/devices/{id}/jobs` at QoS 1; then publish
//! the retained online status. [`Link::open`] does exactly that, in that order (the
//! subscription comes before the online status, so whoever sees the device online can
//! already send it a job), and [`Link::poll`] hands back what arrives on the jobs topic.
//!
//! Received packets are bounded: the client announces [`MAX_PACKET_BYTES`] (an envelope
//! at its limit plus MQTT framing) as its maximum packet size, so a broker may not send
//! more and the heap cost of one packet is a constant, not a length from the network.
//!
//! `rust-mqtt` speaks MQTT 5 only; mosquitto, EMQX, HiveMQ, VerneMQ and rumqttd's v5
//! listener all accept it.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::num::NonZero;

use fleet_schemas::provision::DeviceConfig;
use fleet_schemas::status::to_json;
use fleet_schemas::{DeviceStatus, ENVELOPE_VERSION, Presence, Topics};
use rust_mqtt::buffer::AllocBuffer;
use rust_mqtt::client::event::Event;
use rust_mqtt::client::options::{
    ConnectOptions, PublicationOptions, SubscriptionOptions, TopicReference, WillOptions,
};
use rust_mqtt::client::{Client, MqttError};
use rust_mqtt::config::{KeepAlive, SessionExpiryInterval};
use rust_mqtt::types::{MqttBinary, MqttString, TopicFilter, TopicName};

use crate::transport::Transport;

/// The largest MQTT packet the device accepts: a maximal envelope plus framing.
pub const MAX_PACKET_BYTES: u32 = fleet_schemas::limits::MAX_ENVELOPE_BYTES as u32 + 1024;

/// The keep-alive the device asks for, in seconds.
pub const KEEP_ALIVE_SECS: u16 = 60;

/// The `rust-mqtt` client as the fleet configures it: one subscription, four QoS 1
/// messages in flight each way, no subscription identifiers, user properties or topic
/// aliases (the fleet's protocol uses none, and each costs RAM per packet).
pub type MqttClient<'c, N> = Client<'c, 'c, N, AllocBuffer, 1, 4, 4, 0, 0, 0, 0>;

/// Why the link failed. Every variant means: close the transport, wait, reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The config cannot make a session (a topic or credential MQTT cannot carry).
    #[error("the device config cannot be used for MQTT: {0}")]
    Config(&'static str),
    /// The byte stream failed or closed.
    #[error("the transport failed")]
    Transport,
    /// The broker refused or closed the session, with this MQTT 5 reason code.
    #[error("the broker closed the session (reason code {0:#04x})")]
    Refused(u8),
    /// The broker broke the protocol or sent more than the device accepts.
    #[error("MQTT protocol error")]
    Protocol,
}

impl<const P: usize> From<MqttError<'_, P>> for LinkError {
    fn from(error: MqttError<'_, P>) -> Self {
        match error {
            MqttError::Network(_) => LinkError::Transport,
            MqttError::Disconnect { reason, .. } => LinkError::Refused(reason.value()),
            _ => LinkError::Protocol,
        }
    }
}

/// Everything a session needs, derived once from the device's config.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    /// MQTT client id: the device id.
    pub client_id: String,
    /// MQTT username.
    pub username: String,
    password: String,
    /// The retained status topic.
    pub status_topic: String,
    /// The jobs topic.
    pub jobs_topic: String,
    /// The online status document (JSON).
    pub online: Vec<u8>,
    /// The offline status document (JSON), the last-will.
    pub offline: Vec<u8>,
}

impl SessionPlan {
    /// The session of `config`'s device. `ts` stamps the status documents (Unix
    /// seconds, 0 without a wall clock).
    pub fn new(config: &DeviceConfig, agent_version: &str, ts: u64) -> Result<Self, LinkError> {
        let topics = Topics::new(&config.topic_prefix).map_err(|_| LinkError::Config("topic prefix"))?;
        let status = |state| DeviceStatus {
            device_id: config.device_id.clone(),
            state,
            runtime: config.runtime,
            agent_version: agent_version.into(),
            labels: config.labels.clone(),
            queue_depth: 0,
            outbox_depth: 0,
            gpu: None,
            formats: vec![ENVELOPE_VERSION],
            ts,
        };
        Ok(Self {
            client_id: config.device_id.as_str().into(),
            username: config.username.clone(),
            password: config.password.clone(),
            status_topic: topics.device_status(&config.device_id),
            jobs_topic: topics.device_jobs(&config.device_id),
            online: to_json(&status(Presence::Online)),
            offline: to_json(&status(Presence::Offline)),
        })
    }
}

/// What [`Link::poll`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message on the jobs topic: the bytes of a signed envelope, not yet verified.
    Job(Vec<u8>),
    /// Anything else (acks of our publications, pings, other topics).
    Other,
}

fn string<'s>(s: &'s str, what: &'static str) -> Result<MqttString<'s>, LinkError> {
    MqttString::try_from(s).map_err(|_| LinkError::Config(what))
}

fn topic(s: &str) -> Result<TopicName<'_>, LinkError> {
    TopicName::new(string(s, "topic")?).ok_or(LinkError::Config("topic"))
}

/// A device's MQTT session over one transport.
pub struct Link<'c, N: Transport> {
    client: MqttClient<'c, N>,
}

impl<'c, N: Transport> Link<'c, N> {
    /// A disconnected link; `buffer` allocates received packets on the heap.
    pub fn new(buffer: &'c mut AllocBuffer) -> Self {
        Self { client: Client::new(buffer) }
    }

    /// Connects over `net` (with last-will), subscribes to the jobs topic, and
    /// publishes the retained online status.
    pub async fn open(&mut self, net: N, plan: &SessionPlan) -> Result<(), LinkError> {
        let will = WillOptions::new(
            topic(&plan.status_topic)?,
            MqttBinary::try_from(plan.offline.as_slice()).map_err(|_| LinkError::Config("status"))?,
        )
        .at_least_once()
        .retain();
        let keep_alive = NonZero::new(KEEP_ALIVE_SECS).map_or(KeepAlive::Infinite, KeepAlive::Seconds);
        let max_packet = NonZero::new(MAX_PACKET_BYTES).ok_or(LinkError::Config("packet size"))?;
        let options = ConnectOptions::new()
            .clean_start()
            .session_expiry_interval(SessionExpiryInterval::EndOnDisconnect)
            .keep_alive(keep_alive)
            .maximum_packet_size(max_packet)
            .user_name(string(&plan.username, "username")?)
            .password(MqttBinary::try_from(plan.password.as_str()).map_err(|_| LinkError::Config("password"))?)
            .will(will);
        self.client.connect(net, &options, Some(string(&plan.client_id, "client id")?)).await?;

        let filter = TopicFilter::new(string(&plan.jobs_topic, "topic")?).ok_or(LinkError::Config("topic"))?;
        self.client.subscribe(filter, &SubscriptionOptions::new().at_least_once()).await?;

        let status = TopicReference::Name(topic(&plan.status_topic)?);
        let publication = PublicationOptions::new(status).at_least_once().retain();
        self.client.publish(&publication, plan.online.as_slice().into()).await?;
        Ok(())
    }

    /// Waits for the next packet from the broker.
    pub async fn poll(&mut self, plan: &SessionPlan) -> Result<Incoming, LinkError> {
        match self.client.poll().await? {
            Event::Publish(publish) => {
                let on_jobs =
                    publish.topic.name().is_some_and(|name| name.as_ref().as_str() == plan.jobs_topic.as_str());
                Ok(if on_jobs { Incoming::Job(publish.message.as_ref().to_vec()) } else { Incoming::Other })
            }
            _ => Ok(Incoming::Other),
        }
    }

    /// Sends a keep-alive ping (call at least every [`KEEP_ALIVE_SECS`]).
    pub async fn ping(&mut self) -> Result<(), LinkError> {
        self.client.ping().await?;
        Ok(())
    }
}
