//! MQTT 3.1.1 for a fleet device: a sans-IO session and the driver that moves its bytes.
//!
//! Two requirements decide this module's shape:
//!
//! * **MQTT 3.1.1**, because the fleet's embedded broker (`broker/`, rumqttd behind an
//!   ACL front door) speaks exactly that, as do mosquitto, EMQX, HiveMQ and VerneMQ.
//! * **Acknowledge when the agent says so.** The agent core stores an envelope before
//!   it lets the delivery be acknowledged (`Action::AckDelivery`); a client that sends
//!   PUBACK on receipt breaks that: a power cut between the PUBACK and the flash write
//!   loses the job. So inbound QoS 1 messages come with a token and are acknowledged
//!   only through [`Session::ack`].
//!
//! The layering follows rumqtt's (codec apart from the event loop) and quinn's (protocol
//! decisions apart from I/O):
//!
//! | module | answers |
//! |---|---|
//! | `mqttrs` (crate) | how one packet is encoded and decoded: no I/O, no state |
//! | `frame` | where an inbound packet ends, whether a client may receive it, how much of it to keep |
//! | [`session`] | what the protocol does next: connect, keep-alive, packet ids, in-flight QoS 1, acks (sans-IO, host-tested) |
//! | [`link`] | moving the session's bytes over a [`Transport`](crate::transport::Transport) with a [`Clock`](crate::clock::Clock) |
//!
//! Reconnecting (when, how often) is the caller's policy, not the session's: the agent
//! shell ([`crate::agent`]) backs off and tells the agent core `LinkDown`/`LinkUp`.

mod frame;
pub mod link;
pub mod session;

pub use link::{Link, LinkError};
pub use session::{Event, QoS, Refusal, Session, SessionConfig, SessionError, State, Token, Will};
