//! One device's MQTT 3.1.1 client session, without I/O: bytes in, events and bytes out.
//!
//! Why our own session instead of a client library: the agent core decides when an
//! inbound QoS 1 message may be acknowledged (after the envelope it carries is on
//! flash), and every embedded client we looked at acknowledges on receipt. Here a QoS 1
//! message is handed over with a [`Token`], and its PUBACK is written only when
//! [`Session::ack`] is called with that token; if the link drops first, the broker
//! delivers the message again on the next connection (the session is persistent:
//! clean session off), which is exactly what "stored before acknowledged" needs.
//!
//! The session is sans-IO in the `quinn-proto` sense: it never reads a socket or a clock.
//! A driver ([`super::link`]) feeds it received bytes ([`Session::received`]) and the
//! time ([`Session::poll`]), writes what it queued ([`Session::outgoing`]), and sleeps
//! until [`Session::next_deadline`]. So every protocol rule here is a host unit test.
//!
//! What it keeps:
//!
//! * **Connect**: CONNECT with username, password, the last-will (retained, QoS 1 for
//!   the fleet's offline status) and clean session off; a CONNACK within
//!   `connect_timeout_ms` or the attempt fails.
//! * **Keep-alive**: a PINGREQ after half the keep-alive without sending anything; no
//!   PINGRESP within another half and the link is declared lost. On a UART bridged to
//!   TCP this is the *only* way the device learns that the connection is gone.
//! * **Outbound QoS 1**: each PUBLISH is kept until its PUBACK and sent again (DUP set)
//!   after a reconnect, as MQTT 3.1.1 asks of a persistent session. At most
//!   `max_inflight` are kept; past that the oldest is forgotten, not blocked on: the
//!   agent core's outbox, not this session, is what guarantees an event arrives.
//! * **Inbound**: QoS 0 and 1 PUBLISH (QoS 2 is never subscribed to, so it is a
//!   protocol error), SUBACK, UNSUBACK, PUBACK, PINGRESP. Anything else a server may
//!   not send a client closes the connection. A PUBLISH over `max_packet_bytes` is
//!   skipped and acknowledged (see [`super::frame`]): it can never be stored, and
//!   unacknowledged it would come back on every connection.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use mqttrs::{
    Connect, ConnectReturnCode, LastWill, Packet, Pid, Protocol, Publish, QosPid, Subscribe, SubscribeReturnCodes,
    SubscribeTopic, Unsubscribe,
};

use super::frame::{Frame, FrameError, Inbound};

/// The longest topic filter a SUBSCRIBE or UNSUBSCRIBE can carry (mqttrs without std
/// keeps filters in a 256-byte string).
pub const MAX_FILTER_BYTES: usize = 256;

/// The longest string MQTT can carry.
const MAX_STRING_BYTES: usize = u16::MAX as usize;

/// Room for a fixed header: the type byte and up to four length bytes.
const FIXED_HEADER: usize = 5;

/// Quality of service (the fleet uses no QoS 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QoS {
    /// At most once.
    AtMostOnce,
    /// At least once: acknowledged with PUBACK.
    AtLeastOnce,
}

impl QoS {
    fn codec(self) -> mqttrs::QoS {
        match self {
            QoS::AtMostOnce => mqttrs::QoS::AtMostOnce,
            QoS::AtLeastOnce => mqttrs::QoS::AtLeastOnce,
        }
    }
}

/// The last-will: what the broker publishes for the device when its link dies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Its QoS.
    pub qos: QoS,
    /// Whether the broker keeps it as the topic's retained message.
    pub retain: bool,
}

/// How a session connects and what it accepts.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The MQTT client id (the fleet's device id).
    pub client_id: String,
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
    /// The keep-alive in seconds (0: none).
    pub keep_alive_secs: u16,
    /// The last-will, registered with every CONNECT.
    pub will: Option<Will>,
    /// The largest inbound packet kept; larger PUBLISHes are skipped.
    pub max_packet_bytes: usize,
    /// How long to wait for CONNACK.
    pub connect_timeout_ms: u64,
    /// Outbound QoS 1 PUBLISHes kept for resending.
    pub max_inflight: usize,
}

/// Names one inbound QoS 1 delivery, for [`Session::ack`]. A token of an earlier
/// connection acknowledges nothing: its message is redelivered on the new one, with a
/// new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

/// Something that happened on the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The broker accepted the connection.
    Connected {
        /// Whether the broker kept the session (subscriptions, queued messages).
        session_present: bool,
    },
    /// A message arrived. A QoS 1 message has a token: call [`Session::ack`] with it
    /// once it has been dealt with.
    Message {
        /// The topic name.
        topic: String,
        /// The payload.
        payload: Vec<u8>,
        /// Its delivery token, if QoS 1.
        token: Option<Token>,
        /// Whether it is a retained message.
        retain: bool,
    },
    /// The broker has a QoS 1 message of ours.
    Published {
        /// Its packet id.
        pid: u16,
    },
    /// A SUBSCRIBE was answered.
    Subscribed {
        /// Its packet id.
        pid: u16,
        /// Whether the broker granted it (it may refuse a filter).
        granted: bool,
    },
    /// An UNSUBSCRIBE was answered.
    Unsubscribed {
        /// Its packet id.
        pid: u16,
    },
    /// A PUBLISH over `max_packet_bytes` was dropped (and acknowledged, if QoS 1).
    Skipped {
        /// Its topic (lossy UTF-8).
        topic: String,
        /// Its body's size in bytes.
        len: usize,
    },
}

/// Why a CONNECT was refused (the MQTT 3.1.1 CONNACK return codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The broker does not speak MQTT 3.1.1.
    ProtocolVersion,
    /// The client id is not allowed.
    IdentifierRejected,
    /// The broker cannot take connections now.
    ServerUnavailable,
    /// Bad username or password.
    BadCredentials,
    /// Not authorized (a last-will or client id the ACL refuses).
    NotAuthorized,
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Refusal::ProtocolVersion => "unsupported protocol version",
            Refusal::IdentifierRejected => "client id rejected",
            Refusal::ServerUnavailable => "server unavailable",
            Refusal::BadCredentials => "bad username or password",
            Refusal::NotAuthorized => "not authorized",
        })
    }
}

/// Why the session failed. Every variant but [`SessionError::NotConnected`] and
/// [`SessionError::Unsendable`] means the connection is gone: reconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The broker refused the CONNECT.
    #[error("the broker refused the connection: {0}")]
    Refused(Refusal),
    /// No CONNACK in time.
    #[error("no CONNACK within {0} ms")]
    ConnectTimeout(u64),
    /// No PINGRESP in time: the link is gone.
    #[error("no PINGRESP within {0} ms: the link is gone")]
    PingTimeout(u64),
    /// The broker sent something MQTT 3.1.1 does not allow here.
    #[error("the broker broke MQTT 3.1.1: {0}")]
    Protocol(&'static str),
    /// There is no connection to send on.
    #[error("not connected")]
    NotConnected,
    /// A packet cannot be encoded (a string over MQTT's limits); nothing was sent.
    #[error("cannot send this {0}: {1}")]
    Unsendable(&'static str, &'static str),
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No connection.
    Disconnected,
    /// CONNECT sent, waiting for CONNACK.
    Connecting {
        /// When the CONNECT was queued.
        since_ms: u64,
    },
    /// Connected.
    Connected,
}

/// An MQTT 3.1.1 client session. See the module docs.
pub struct Session {
    config: SessionConfig,
    state: State,
    /// Counts connections, so that a token names the connection it was given on.
    generation: u64,
    inbound: Inbound,
    tx: Vec<u8>,
    /// Something was queued since the last `poll` (which stamps `last_tx_ms`).
    queued: bool,
    last_tx_ms: u64,
    ping_sent_ms: Option<u64>,
    last_pid: u16,
    /// Our QoS 1 PUBLISHes awaiting PUBACK, oldest first, as encoded.
    inflight: VecDeque<(u16, Vec<u8>)>,
    /// SUBSCRIBE and UNSUBSCRIBE packet ids awaiting their ack (a few at a time).
    requests: Vec<u16>,
    /// Inbound QoS 1 packet ids handed out and not yet acknowledged (the agent
    /// acknowledges each before it takes the next, so one or two).
    unacked: Vec<u16>,
}

impl Session {
    /// A disconnected session.
    pub fn new(config: SessionConfig) -> Self {
        let inbound = Inbound::new(config.max_packet_bytes);
        Self {
            config,
            state: State::Disconnected,
            generation: 0,
            inbound,
            tx: Vec::new(),
            queued: false,
            last_tx_ms: 0,
            ping_sent_ms: None,
            last_pid: 0,
            inflight: VecDeque::new(),
            requests: Vec::new(),
            unacked: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Replaces the last-will used by the next CONNECT.
    pub fn set_will(&mut self, will: Option<Will>) {
        self.config.will = will;
    }

    /// Where the connection stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the broker accepted the connection and it is not known to be lost.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Outbound QoS 1 messages awaiting PUBACK.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Starts a new connection on a fresh byte stream: forgets what the previous one
    /// left half-read or unsent, and queues CONNECT.
    pub fn connect(&mut self, now_ms: u64) -> Result<(), SessionError> {
        self.link_lost();
        self.generation += 1;
        let config = &self.config;
        for (what, s) in
            [("client id", &config.client_id), ("username", &config.username), ("password", &config.password)]
        {
            if s.len() > MAX_STRING_BYTES {
                return Err(SessionError::Unsendable("CONNECT", what));
            }
        }
        let will = config.will.as_ref().map(|w| LastWill {
            topic: &w.topic,
            message: &w.payload,
            qos: w.qos.codec(),
            retain: w.retain,
        });
        if let Some(w) = &will
            && (w.topic.len() > MAX_STRING_BYTES || w.message.len() > MAX_STRING_BYTES)
        {
            return Err(SessionError::Unsendable("CONNECT", "last-will"));
        }
        let size = FIXED_HEADER
            + 10
            + 2
            + config.client_id.len()
            + will.as_ref().map_or(0, |w| 4 + w.topic.len() + w.message.len())
            + 4
            + config.username.len()
            + config.password.len();
        let connect = Packet::Connect(Connect {
            protocol: Protocol::MQTT311,
            keep_alive: config.keep_alive_secs,
            client_id: &config.client_id,
            clean_session: false,
            last_will: will,
            username: Some(&config.username),
            password: Some(config.password.as_bytes()),
        });
        let bytes = encode(&connect, size).ok_or(SessionError::Unsendable("CONNECT", "encoding failed"))?;
        self.tx.extend_from_slice(&bytes);
        self.queued = true;
        self.last_tx_ms = now_ms;
        self.state = State::Connecting { since_ms: now_ms };
        Ok(())
    }

    /// The connection is gone (the transport failed, or the driver gives up on it).
    /// Outbound QoS 1 messages are kept for the next connection; everything else of
    /// this one is dropped.
    pub fn link_lost(&mut self) {
        self.state = State::Disconnected;
        self.inbound.reset();
        self.tx.clear();
        self.queued = false;
        self.ping_sent_ms = None;
        self.requests.clear();
        self.unacked.clear();
    }

    /// Bytes received from the broker. Takes them up to the end of the next complete
    /// packet and returns how many it took: call [`Session::poll`] to handle that
    /// packet, then offer the rest. Without a connection, everything is dropped.
    pub fn received(&mut self, bytes: &[u8]) -> Result<usize, SessionError> {
        if self.state == State::Disconnected {
            return Ok(bytes.len());
        }
        self.inbound.push(bytes).map_err(|error| {
            self.link_lost();
            SessionError::Protocol(match error {
                FrameError::Length => "a remaining length over four bytes",
                FrameError::Unexpected => "a packet type a server may not send this client",
                FrameError::Shape => "a packet of the wrong length for its type",
                FrameError::HeaderTooLarge => "a PUBLISH header over the packet size limit",
            })
        })
    }

    /// Handles the packet received, if one is complete, and the timers: the next event,
    /// or `None`. An error means the connection is gone (see [`SessionError`]).
    pub fn poll(&mut self, now_ms: u64) -> Result<Option<Event>, SessionError> {
        if self.queued {
            self.queued = false;
            self.last_tx_ms = now_ms;
        }
        if let Some(frame) = self.inbound.take() {
            let event = self.handle(frame, now_ms).inspect_err(|_| self.link_lost())?;
            if event.is_some() {
                return Ok(event);
            }
        }
        self.timers(now_ms).inspect_err(|_| self.link_lost())?;
        Ok(None)
    }

    /// When [`Session::poll`] next has something to do on its own (a timeout, a ping).
    pub fn next_deadline(&self) -> Option<u64> {
        match self.state {
            State::Disconnected => None,
            State::Connecting { since_ms } => Some(since_ms.saturating_add(self.config.connect_timeout_ms)),
            State::Connected if self.config.keep_alive_secs == 0 => None,
            State::Connected => Some(match self.ping_sent_ms {
                Some(sent) => sent.saturating_add(self.half_keep_alive_ms()),
                None => self.last_tx_ms.saturating_add(self.half_keep_alive_ms()),
            }),
        }
    }

    /// Queues a PUBLISH; returns its packet id if QoS 1.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<Option<u16>, SessionError> {
        self.require_connected()?;
        if topic.len() > MAX_STRING_BYTES {
            return Err(SessionError::Unsendable("PUBLISH", "topic over 65535 bytes"));
        }
        let pid = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(self.next_pid()?),
        };
        let qospid = match pid {
            None => QosPid::AtMostOnce,
            Some(pid) => QosPid::AtLeastOnce(pid),
        };
        let packet = Packet::Publish(Publish { dup: false, qospid, retain, topic_name: topic, payload });
        let size = FIXED_HEADER + 4 + topic.len() + payload.len();
        let bytes = encode(&packet, size).ok_or(SessionError::Unsendable("PUBLISH", "over the MQTT size limit"))?;
        self.tx.extend_from_slice(&bytes);
        self.queued = true;
        let pid = pid.map(Pid::get);
        if let Some(pid) = pid {
            if self.inflight.len() >= self.config.max_inflight.max(1) {
                self.inflight.pop_front();
            }
            self.inflight.push_back((pid, bytes));
        }
        Ok(pid)
    }

    /// Queues a SUBSCRIBE of one filter; returns its packet id.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<u16, SessionError> {
        self.require_connected()?;
        let topic_path = filter_string(filter)?;
        let pid = self.next_pid()?;
        let mut topics = heapless::Vec::new();
        topics
            .push(SubscribeTopic { topic_path, qos: qos.codec() })
            .map_err(|_| SessionError::Unsendable("SUBSCRIBE", "too many filters"))?;
        let packet = Packet::Subscribe(Subscribe { pid, topics });
        self.queue(&packet, FIXED_HEADER + 5 + filter.len(), "SUBSCRIBE")?;
        self.requests.push(pid.get());
        Ok(pid.get())
    }

    /// Queues an UNSUBSCRIBE of one filter; returns its packet id.
    pub fn unsubscribe(&mut self, filter: &str) -> Result<u16, SessionError> {
        self.require_connected()?;
        let topic = filter_string(filter)?;
        let pid = self.next_pid()?;
        let mut topics = heapless::Vec::new();
        topics.push(topic).map_err(|_| SessionError::Unsendable("UNSUBSCRIBE", "too many filters"))?;
        let packet = Packet::Unsubscribe(Unsubscribe { pid, topics });
        self.queue(&packet, FIXED_HEADER + 4 + filter.len(), "UNSUBSCRIBE")?;
        self.requests.push(pid.get());
        Ok(pid.get())
    }

    /// Acknowledges an inbound QoS 1 message (PUBACK). Returns whether a PUBACK was
    /// queued: `false` for a token of an earlier connection, or one already used.
    pub fn ack(&mut self, token: Token) -> bool {
        let generation = token.0 >> 16;
        let pid = (token.0 & 0xffff) as u16;
        if !self.is_connected() || generation != self.generation || !take(&mut self.unacked, pid) {
            return false;
        }
        self.queue_puback(pid)
    }

    /// The bytes queued for the broker.
    pub fn outgoing(&self) -> &[u8] {
        &self.tx
    }

    /// The first `n` queued bytes were written.
    pub fn consume_outgoing(&mut self, n: usize) {
        self.tx.drain(..n.min(self.tx.len()));
    }

    fn half_keep_alive_ms(&self) -> u64 {
        (u64::from(self.config.keep_alive_secs) * 1000 / 2).max(1)
    }

    fn require_connected(&self) -> Result<(), SessionError> {
        if self.is_connected() { Ok(()) } else { Err(SessionError::NotConnected) }
    }

    fn queue(&mut self, packet: &Packet<'_>, size: usize, what: &'static str) -> Result<(), SessionError> {
        let bytes = encode(packet, size).ok_or(SessionError::Unsendable(what, "encoding failed"))?;
        self.tx.extend_from_slice(&bytes);
        self.queued = true;
        Ok(())
    }

    fn queue_puback(&mut self, pid: u16) -> bool {
        match Pid::try_from(pid) {
            Ok(pid) => self.queue(&Packet::Puback(pid), 4, "PUBACK").is_ok(),
            Err(_) => false,
        }
    }

    /// The next packet id not in use by an outbound message or request.
    fn next_pid(&mut self) -> Result<Pid, SessionError> {
        for _ in 0..=u16::MAX {
            self.last_pid = self.last_pid.checked_add(1).unwrap_or(1);
            let pid = self.last_pid;
            if !self.requests.contains(&pid) && !self.inflight.iter().any(|(p, _)| *p == pid) {
                return Pid::try_from(pid).map_err(|_| SessionError::Unsendable("packet", "no packet id"));
            }
        }
        Err(SessionError::Unsendable("packet", "every packet id is in use"))
    }

    fn timers(&mut self, now_ms: u64) -> Result<(), SessionError> {
        match self.state {
            State::Connecting { since_ms } if now_ms.saturating_sub(since_ms) >= self.config.connect_timeout_ms => {
                Err(SessionError::ConnectTimeout(self.config.connect_timeout_ms))
            }
            State::Connected if self.config.keep_alive_secs > 0 => {
                let half = self.half_keep_alive_ms();
                match self.ping_sent_ms {
                    Some(sent) if now_ms.saturating_sub(sent) >= half => Err(SessionError::PingTimeout(half)),
                    Some(_) => Ok(()),
                    None if now_ms.saturating_sub(self.last_tx_ms) >= half => {
                        self.queue(&Packet::Pingreq, 2, "PINGREQ")?;
                        self.ping_sent_ms = Some(now_ms);
                        Ok(())
                    }
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn handle(&mut self, frame: Frame, now_ms: u64) -> Result<Option<Event>, SessionError> {
        let packet = match frame {
            Frame::Skipped { topic, pid, body_len } => {
                self.require_accepted()?;
                if let Some(pid) = pid {
                    self.queue_puback(pid);
                }
                let topic = String::from_utf8_lossy(&topic).into_owned();
                return Ok(Some(Event::Skipped { topic, len: body_len }));
            }
            Frame::Whole(packet) => packet,
        };
        let bytes = Frame::checked(&packet).map_err(|_| SessionError::Protocol("a malformed packet"))?;
        let decoded = match mqttrs::decode_slice(bytes) {
            Ok(Some(decoded)) => decoded,
            _ => return Err(SessionError::Protocol("a packet that does not decode")),
        };
        if let Packet::Connack(connack) = decoded {
            if !matches!(self.state, State::Connecting { .. }) {
                return Err(SessionError::Protocol("a second CONNACK"));
            }
            return match connack.code {
                ConnectReturnCode::Accepted => {
                    self.state = State::Connected;
                    self.ping_sent_ms = None;
                    self.last_tx_ms = now_ms;
                    // MQTT-4.4.0-1: resend unacknowledged PUBLISHes, with DUP set.
                    for (_, packet) in &mut self.inflight {
                        if let Some(first) = packet.first_mut() {
                            *first |= 0x08;
                        }
                        self.tx.extend_from_slice(packet);
                        self.queued = true;
                    }
                    Ok(Some(Event::Connected { session_present: connack.session_present }))
                }
                code => Err(SessionError::Refused(match code {
                    ConnectReturnCode::RefusedProtocolVersion => Refusal::ProtocolVersion,
                    ConnectReturnCode::RefusedIdentifierRejected => Refusal::IdentifierRejected,
                    ConnectReturnCode::ServerUnavailable => Refusal::ServerUnavailable,
                    ConnectReturnCode::BadUsernamePassword => Refusal::BadCredentials,
                    _ => Refusal::NotAuthorized,
                })),
            };
        }
        self.require_accepted()?;
        Ok(match decoded {
            Packet::Publish(publish) => {
                let token = match publish.qospid {
                    QosPid::AtMostOnce => None,
                    QosPid::AtLeastOnce(pid) => {
                        if !self.unacked.contains(&pid.get()) {
                            self.unacked.push(pid.get());
                        }
                        Some(Token((self.generation << 16) | u64::from(pid.get())))
                    }
                    QosPid::ExactlyOnce(_) => return Err(SessionError::Protocol("a QoS 2 PUBLISH")),
                };
                Some(Event::Message {
                    topic: publish.topic_name.into(),
                    payload: publish.payload.to_vec(),
                    token,
                    retain: publish.retain,
                })
            }
            Packet::Puback(pid) => {
                let before = self.inflight.len();
                self.inflight.retain(|(p, _)| *p != pid.get());
                (self.inflight.len() < before).then_some(Event::Published { pid: pid.get() })
            }
            Packet::Suback(suback) => {
                let granted = suback.return_codes.iter().all(|c| matches!(c, SubscribeReturnCodes::Success(_)));
                take(&mut self.requests, suback.pid.get())
                    .then_some(Event::Subscribed { pid: suback.pid.get(), granted })
            }
            Packet::Unsuback(pid) => {
                take(&mut self.requests, pid.get()).then_some(Event::Unsubscribed { pid: pid.get() })
            }
            Packet::Pingresp => {
                self.ping_sent_ms = None;
                None
            }
            _ => return Err(SessionError::Protocol("a packet a server may not send a client")),
        })
    }

    /// Packets other than CONNACK need an accepted connection.
    fn require_accepted(&self) -> Result<(), SessionError> {
        if self.is_connected() { Ok(()) } else { Err(SessionError::Protocol("a packet before CONNACK")) }
    }
}

/// Removes `pid` from `ids`; whether it was there.
fn take(ids: &mut Vec<u16>, pid: u16) -> bool {
    let before = ids.len();
    ids.retain(|id| *id != pid);
    ids.len() < before
}

/// A topic filter as mqttrs carries it without std.
fn filter_string(filter: &str) -> Result<heapless::String<MAX_FILTER_BYTES>, SessionError> {
    let mut s = heapless::String::new();
    s.push_str(filter).map_err(|_| SessionError::Unsendable("filter", "over 256 bytes"))?;
    Ok(s)
}

/// Encodes a packet into a buffer of `size` bytes (at least its length).
fn encode(packet: &Packet<'_>, size: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let n = mqttrs::encode_slice(packet, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}
