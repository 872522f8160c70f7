//! The per-connection policy, without I/O: what the front door does with each packet.
//!
//! Why apart from the sockets: every decision the front door makes (admit a CONNECT,
//! forward or refuse a PUBLISH, split a SUBSCRIBE, patch the engine's SUBACK) is a plain
//! function of packets in and packets out, so it is unit-tested here without a network,
//! and [`crate::frontdoor`] only moves bytes. The topic rules themselves are in
//! [`crate::acl`]; this module applies them to MQTT packets.
//!
//! Packets are decoded and re-encoded with rumqttd's own v4 codec, so what the ACL
//! checked is byte for byte what the engine receives: there is no second parser that
//! could read a packet differently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use fleet_schemas::Topics;
use rumqttd::protocol::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Login, Packet, SubAck, Subscribe, SubscribeReasonCode,
};

use crate::acl::{self, Action, Decision, Denial};
use crate::auth::Identity;

/// Most SUBSCRIBEs with refused filters that may await the engine's SUBACK at once on
/// one connection. A well-behaved client has a handful; more is a client flooding us.
const MAX_PENDING_PARTIAL_SUBSCRIBES: usize = 1024;

/// The credentials the engine accepts, known only to this process (see [`crate::engine`]).
#[derive(Clone)]
pub(crate) struct EngineLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for EngineLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineLogin").field("username", &self.username).finish_non_exhaustive()
    }
}

/// A CONNECT, well-formed but not yet authenticated.
#[derive(Debug)]
pub(crate) struct ConnectRequest {
    pub connect: Connect,
    pub will: Option<LastWill>,
    pub login: Option<Login>,
}

impl ConnectRequest {
    /// The first packet of a connection; anything but a CONNECT is a protocol violation.
    pub fn from_packet(packet: Packet) -> Option<Self> {
        match packet {
            Packet::Connect(connect, _, will, _, login) => Some(Self { connect, will, login }),
            _ => None,
        }
    }
}

/// Why a CONNECT was refused; each maps to one MQTT 3.1.1 CONNACK return code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// MQTT 3.1 or 5: the front door speaks 3.1.1 only (code 1).
    #[error("unsupported MQTT protocol version")]
    ProtocolVersion,
    /// The client id is not allowed (code 2).
    #[error("client id refused: {0}")]
    ClientId(Denial),
    /// The broker holds its maximum of connections (code 3).
    #[error("the broker is at its connection limit")]
    Capacity,
    /// No credentials, or the authenticator refused them (code 4).
    #[error("bad username or password")]
    BadCredentials,
    /// The last-will topic is not the client's to publish (code 5).
    #[error("last-will refused: {0}")]
    Will(Denial),
    /// An empty client id asking for a persistent session, which MQTT 3.1.1 requires
    /// the server to refuse [MQTT-3.1.3-8] (code 2).
    #[error("an empty client id cannot have a persistent session")]
    EmptyClientIdWithSession,
}

impl Refusal {
    /// The CONNACK that tells the client.
    pub fn connack(&self) -> Packet {
        let code = match self {
            Refusal::ProtocolVersion => ConnectReturnCode::RefusedProtocolVersion,
            Refusal::ClientId(_) | Refusal::EmptyClientIdWithSession => ConnectReturnCode::ClientIdentifierNotValid,
            Refusal::Capacity => ConnectReturnCode::ServiceUnavailable,
            Refusal::BadCredentials => ConnectReturnCode::BadUserNamePassword,
            Refusal::Will(_) => ConnectReturnCode::NotAuthorized,
        };
        Packet::ConnAck(ConnAck { session_present: false, code }, None)
    }
}

/// An admitted connection: its session state and the CONNECT to send the engine.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub session: Session,
    pub engine_connect: Packet,
}

/// What is refused before the credentials are looked at: a CONNECT the protocol itself
/// forbids.
pub(crate) fn check_before_login(request: &ConnectRequest) -> Result<(), Refusal> {
    if request.connect.client_id.is_empty() && !request.connect.clean_session {
        return Err(Refusal::EmptyClientIdWithSession);
    }
    Ok(())
}

/// Decides a CONNECT once the authenticator has answered (`identity`).
///
/// The engine gets the client's CONNECT with two changes: the engine's own credentials
/// replace the client's (the client's password never leaves the front door), and a
/// keep-alive of 0 ("never time out", legal in MQTT but refused by rumqttd) becomes the
/// longest keep-alive MQTT can express.
pub(crate) fn admit(
    request: ConnectRequest,
    identity: Option<Identity>,
    topics: Arc<Topics>,
    engine_login: &EngineLogin,
) -> Result<Admitted, Refusal> {
    let identity = identity.ok_or(Refusal::BadCredentials)?;
    let ConnectRequest { mut connect, will, .. } = request;
    if let Decision::Deny(denial) = acl::check(&topics, &identity, Action::Connect { client_id: &connect.client_id }) {
        return Err(Refusal::ClientId(denial));
    }
    if let Some(will) = &will {
        let topic = std::str::from_utf8(&will.topic).map_err(|_| Refusal::Will(Denial::InvalidTopic))?;
        if let Decision::Deny(denial) = acl::check(&topics, &identity, Action::Will(topic)) {
            return Err(Refusal::Will(denial));
        }
    }
    if connect.keep_alive == 0 {
        connect.keep_alive = u16::MAX;
    }
    let client_id = connect.client_id.clone();
    let login = Login { username: engine_login.username.clone(), password: engine_login.password.clone() };
    let engine_connect = Packet::Connect(connect, None, will, None, Some(login));
    Ok(Admitted {
        session: Session { identity, client_id, topics, pending: PendingSubacks::default() },
        engine_connect,
    })
}

/// Why the front door closes a connection after it was admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// A PUBLISH the ACL refused: the client is misbehaving.
    DeniedPublish { topic: String, denial: Denial },
    /// A packet a client may not send here (a second CONNECT, a server-only packet, a
    /// non-UTF-8 topic).
    ProtocolViolation(&'static str),
    /// Too many SUBSCRIBEs awaiting their SUBACK.
    TooManyPendingSubscribes,
}

/// What to do with one packet from the client.
#[derive(Debug, PartialEq)]
pub(crate) enum ClientVerdict {
    /// Send it to the engine.
    Forward(Packet),
    /// Answer the client with this packet; nothing reaches the engine.
    Answer(Packet),
    /// Send it to the engine and stop reading: the client said DISCONNECT.
    Finish(Packet),
    /// Drop it and close the connection.
    Close(CloseReason),
}

/// The verdict, plus the filters refused on the way (for the counters and the log).
#[derive(Debug, PartialEq)]
pub(crate) struct ClientOutcome {
    pub verdict: ClientVerdict,
    pub denied_filters: Vec<(String, Denial)>,
}

impl From<ClientVerdict> for ClientOutcome {
    fn from(verdict: ClientVerdict) -> Self {
        Self { verdict, denied_filters: Vec::new() }
    }
}

/// One admitted connection's policy state.
#[derive(Debug)]
pub(crate) struct Session {
    identity: Identity,
    client_id: String,
    topics: Arc<Topics>,
    pending: PendingSubacks,
}

impl Session {
    /// Who this connection is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The connection's MQTT client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The SUBACK patcher, shared with the engine-to-client direction.
    pub fn pending_subacks(&self) -> PendingSubacks {
        self.pending.clone()
    }

    /// Decides one packet from the client.
    pub fn on_client_packet(&mut self, packet: Packet) -> ClientOutcome {
        match packet {
            Packet::Publish(publish, properties) => {
                let Ok(topic) = std::str::from_utf8(&publish.topic) else {
                    return ClientVerdict::Close(CloseReason::ProtocolViolation("PUBLISH topic is not UTF-8")).into();
                };
                match acl::check(&self.topics, &self.identity, Action::Publish(topic)) {
                    Decision::Allow => ClientVerdict::Forward(Packet::Publish(publish, properties)).into(),
                    Decision::Deny(denial) => {
                        ClientVerdict::Close(CloseReason::DeniedPublish { topic: topic.to_owned(), denial }).into()
                    }
                }
            }
            Packet::Subscribe(subscribe, _) => self.on_subscribe(subscribe),
            Packet::Disconnect(..) => ClientVerdict::Finish(packet).into(),
            Packet::PubAck(..)
            | Packet::PubRec(..)
            | Packet::PubRel(..)
            | Packet::PubComp(..)
            | Packet::Unsubscribe(..)
            | Packet::PingReq(..) => ClientVerdict::Forward(packet).into(),
            Packet::Connect(..) => ClientVerdict::Close(CloseReason::ProtocolViolation("a second CONNECT")).into(),
            _ => ClientVerdict::Close(CloseReason::ProtocolViolation("a packet only a server sends")).into(),
        }
    }

    /// Splits a SUBSCRIBE: allowed filters go to the engine, refused ones get 0x80 in
    /// the SUBACK (patched in by [`PendingSubacks::patch`], or answered here when
    /// nothing is left to forward).
    fn on_subscribe(&mut self, subscribe: Subscribe) -> ClientOutcome {
        let Subscribe { pkid, filters } = subscribe;
        let mut mask = Vec::with_capacity(filters.len());
        let mut allowed = Vec::with_capacity(filters.len());
        let mut denied_filters = Vec::new();
        for filter in filters {
            match acl::check(&self.topics, &self.identity, Action::Subscribe(&filter.path)) {
                Decision::Allow => {
                    mask.push(true);
                    allowed.push(filter);
                }
                Decision::Deny(denial) => {
                    mask.push(false);
                    denied_filters.push((filter.path, denial));
                }
            }
        }
        let verdict = if denied_filters.is_empty() {
            ClientVerdict::Forward(Packet::Subscribe(Subscribe { pkid, filters: allowed }, None))
        } else if allowed.is_empty() {
            let return_codes = vec![SubscribeReasonCode::Failure; mask.len()];
            ClientVerdict::Answer(Packet::SubAck(SubAck { pkid, return_codes }, None))
        } else if self.pending.insert(pkid, mask) {
            ClientVerdict::Forward(Packet::Subscribe(Subscribe { pkid, filters: allowed }, None))
        } else {
            ClientVerdict::Close(CloseReason::TooManyPendingSubscribes)
        };
        ClientOutcome { verdict, denied_filters }
    }
}

/// SUBSCRIBEs forwarded without their refused filters, by packet id: which positions of
/// the client's SUBACK the engine answers (`true`) and which get 0x80 (`false`).
///
/// Shared by the two directions of one connection: the client-to-engine side inserts
/// before it forwards the SUBSCRIBE, so the entry is there when the SUBACK comes back.
#[derive(Debug, Clone, Default)]
pub(crate) struct PendingSubacks(Arc<Mutex<HashMap<u16, Vec<bool>>>>);

impl PendingSubacks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Vec<bool>>> {
        // The map is valid after any panic mid-update (insert and remove are atomic).
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a split SUBSCRIBE; `false` when too many are pending.
    fn insert(&self, pkid: u16, mask: Vec<bool>) -> bool {
        let mut map = self.lock();
        if map.len() >= MAX_PENDING_PARTIAL_SUBSCRIBES && !map.contains_key(&pkid) {
            return false;
        }
        map.insert(pkid, mask);
        true
    }

    /// Whether any SUBACK awaits patching (lets the hot path skip decoding).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The SUBACK the client must see for the engine's `suback`.
    pub fn patch(&self, suback: SubAck) -> SubAck {
        let Some(mask) = self.lock().remove(&suback.pkid) else {
            return suback;
        };
        let mut engine_codes = suback.return_codes.into_iter();
        let return_codes = mask
            .into_iter()
            .map(|forwarded| {
                if forwarded {
                    engine_codes.next().unwrap_or(SubscribeReasonCode::Failure)
                } else {
                    SubscribeReasonCode::Failure
                }
            })
            .collect();
        SubAck { pkid: suback.pkid, return_codes }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use fleet_schemas::DeviceId;
    use rumqttd::protocol::{Filter, PubAck, PubAckReason, Publish, QoS, RetainForwardRule};

    use super::*;

    fn login() -> EngineLogin {
        EngineLogin { username: "engine".into(), password: "secret".into() }
    }

    fn request(client_id: &str, will_topic: Option<&str>, keep_alive: u16) -> ConnectRequest {
        ConnectRequest {
            connect: Connect { keep_alive, client_id: client_id.into(), clean_session: false },
            will: will_topic.map(|t| LastWill {
                topic: Bytes::copy_from_slice(t.as_bytes()),
                message: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
            login: Some(Login { username: "d1".into(), password: "pw".into() }),
        }
    }

    fn device(id: &str) -> Identity {
        Identity::Device(DeviceId::new(id).unwrap())
    }

    fn session(identity: Identity) -> Session {
        let client_id = match &identity {
            Identity::Device(id) => id.to_string(),
            Identity::Controller => "controller".into(),
            Identity::Observer => "watcher".into(),
        };
        admit(request(&client_id, None, 30), Some(identity), Arc::new(Topics::default()), &login()).unwrap().session
    }

    fn filter(path: &str) -> Filter {
        Filter {
            path: path.into(),
            qos: QoS::AtLeastOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        }
    }

    fn subscribe(pkid: u16, paths: &[&str]) -> Packet {
        Packet::Subscribe(Subscribe { pkid, filters: paths.iter().map(|p| filter(p)).collect() }, None)
    }

    fn publish(topic: &str) -> Packet {
        Packet::Publish(Publish::new(Bytes::copy_from_slice(topic.as_bytes()), Bytes::from_static(b"x"), false), None)
    }

    #[test]
    fn admit_replaces_credentials_and_keeps_the_rest() {
        let topics = Arc::new(Topics::default());
        let admitted =
            admit(request("d1", Some("fleet/devices/d1/status"), 0), Some(device("d1")), topics, &login()).unwrap();
        let Packet::Connect(connect, None, Some(will), None, Some(l)) = admitted.engine_connect else {
            panic!("not a v4 CONNECT");
        };
        assert_eq!(connect.client_id, "d1");
        assert!(!connect.clean_session);
        assert_eq!(connect.keep_alive, u16::MAX, "keep-alive 0 becomes the longest one");
        assert_eq!(&will.topic[..], b"fleet/devices/d1/status");
        assert!(will.retain);
        assert_eq!((l.username.as_str(), l.password.as_str()), ("engine", "secret"));
        assert_eq!(admitted.session.client_id(), "d1");
        assert_eq!(admitted.session.identity(), &device("d1"));
    }

    #[test]
    fn admit_refusals_map_to_connack_codes() {
        let topics = Arc::new(Topics::default());
        let refuse = |req, id| admit(req, id, topics.clone(), &login()).unwrap_err();
        assert_eq!(refuse(request("d1", None, 30), None), Refusal::BadCredentials);
        assert_eq!(refuse(request("d2", None, 30), Some(device("d1"))), Refusal::ClientId(Denial::ClientIdNotDeviceId));
        assert_eq!(
            refuse(request("d1", Some("fleet/devices/d2/status"), 30), Some(device("d1"))),
            Refusal::Will(Denial::WillNotOwnStatus)
        );
        assert_eq!(
            refuse(request("d1", Some("fleet/devices/d1/events"), 30), Some(device("d1"))),
            Refusal::Will(Denial::WillNotOwnStatus)
        );
        let code = |r: Refusal| match r.connack() {
            Packet::ConnAck(ack, None) => ack.code,
            _ => panic!("not a CONNACK"),
        };
        assert_eq!(code(Refusal::ProtocolVersion), ConnectReturnCode::RefusedProtocolVersion);
        assert_eq!(code(Refusal::ClientId(Denial::ClientIdInvalid)), ConnectReturnCode::ClientIdentifierNotValid);
        assert_eq!(code(Refusal::Capacity), ConnectReturnCode::ServiceUnavailable);
        assert_eq!(code(Refusal::BadCredentials), ConnectReturnCode::BadUserNamePassword);
        assert_eq!(code(Refusal::Will(Denial::InvalidTopic)), ConnectReturnCode::NotAuthorized);
    }

    #[test]
    fn publishes_are_forwarded_or_close_the_connection() {
        let mut s = session(device("d1"));
        assert!(matches!(s.on_client_packet(publish("fleet/devices/d1/events")).verdict, ClientVerdict::Forward(_)));
        let outcome = s.on_client_packet(publish("fleet/devices/d2/events"));
        assert_eq!(
            outcome.verdict,
            ClientVerdict::Close(CloseReason::DeniedPublish {
                topic: "fleet/devices/d2/events".into(),
                denial: Denial::NotOwnPublishTopic
            })
        );
        let bad_utf8 = Packet::Publish(Publish::new(Bytes::from_static(b"\xff"), Bytes::new(), false), None);
        assert!(matches!(
            s.on_client_packet(bad_utf8).verdict,
            ClientVerdict::Close(CloseReason::ProtocolViolation(_))
        ));
    }

    #[test]
    fn other_client_packets() {
        let mut s = session(device("d1"));
        let ack = Packet::PubAck(PubAck { pkid: 3, reason: PubAckReason::Success }, None);
        assert_eq!(s.on_client_packet(ack.clone()).verdict, ClientVerdict::Forward(ack));
        let connect = Packet::Connect(
            Connect { keep_alive: 1, client_id: "d1".into(), clean_session: true },
            None,
            None,
            None,
            None,
        );
        assert!(matches!(s.on_client_packet(connect).verdict, ClientVerdict::Close(CloseReason::ProtocolViolation(_))));
        let suback = Packet::SubAck(SubAck { pkid: 1, return_codes: vec![] }, None);
        assert!(matches!(s.on_client_packet(suback).verdict, ClientVerdict::Close(CloseReason::ProtocolViolation(_))));
    }

    #[test]
    fn fully_allowed_subscribe_is_forwarded_whole() {
        let mut s = session(device("d1"));
        let sub = subscribe(1, &["fleet/devices/d1/jobs", "fleet/keys"]);
        let outcome = s.on_client_packet(sub.clone());
        assert_eq!(outcome.verdict, ClientVerdict::Forward(sub));
        assert!(outcome.denied_filters.is_empty());
        assert!(s.pending_subacks().is_empty());
    }

    #[test]
    fn fully_denied_subscribe_is_answered_here() {
        let mut s = session(device("d1"));
        let outcome = s.on_client_packet(subscribe(9, &["fleet/#", "fleet/devices/d2/jobs"]));
        assert_eq!(
            outcome.verdict,
            ClientVerdict::Answer(Packet::SubAck(
                SubAck { pkid: 9, return_codes: vec![SubscribeReasonCode::Failure; 2] },
                None
            ))
        );
        assert_eq!(outcome.denied_filters.len(), 2);
        assert!(s.pending_subacks().is_empty());
    }

    #[test]
    fn partly_denied_subscribe_is_split_and_its_suback_patched() {
        let mut s = session(device("d1"));
        let outcome = s.on_client_packet(subscribe(
            5,
            &["fleet/devices/d1/jobs", "fleet/devices/d2/acks", "fleet/keys", "fleet/devices/+/jobs"],
        ));
        assert_eq!(outcome.verdict, ClientVerdict::Forward(subscribe(5, &["fleet/devices/d1/jobs", "fleet/keys"])));
        assert_eq!(
            outcome.denied_filters,
            vec![
                ("fleet/devices/d2/acks".to_string(), Denial::NotReadableByDevice),
                ("fleet/devices/+/jobs".to_string(), Denial::NotReadableByDevice)
            ]
        );
        let pending = s.pending_subacks();
        let ok = SubscribeReasonCode::Success(QoS::AtLeastOnce);
        let patched =
            pending.patch(SubAck { pkid: 5, return_codes: vec![ok, SubscribeReasonCode::Success(QoS::AtMostOnce)] });
        assert_eq!(
            patched.return_codes,
            vec![
                ok,
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtMostOnce),
                SubscribeReasonCode::Failure
            ]
        );
        assert!(pending.is_empty());
        // A SUBACK nobody waits for passes as it is.
        let other = SubAck { pkid: 6, return_codes: vec![ok] };
        assert_eq!(pending.patch(other.clone()), other);
    }

    #[test]
    fn pending_subscribes_are_bounded() {
        let mut s = session(device("d1"));
        for pkid in 0..MAX_PENDING_PARTIAL_SUBSCRIBES as u16 {
            let outcome = s.on_client_packet(subscribe(pkid, &["fleet/keys", "fleet/#"]));
            assert!(matches!(outcome.verdict, ClientVerdict::Forward(_)));
        }
        let outcome = s.on_client_packet(subscribe(u16::MAX, &["fleet/keys", "fleet/#"]));
        assert_eq!(outcome.verdict, ClientVerdict::Close(CloseReason::TooManyPendingSubscribes));
    }

    #[test]
    fn controller_may_subscribe_widely() {
        let mut s = session(Identity::Controller);
        let sub = subscribe(1, &["fleet/devices/+/events", "$share/ingest/fleet/devices/+/events", "fleet/#"]);
        assert_eq!(s.on_client_packet(sub.clone()).verdict, ClientVerdict::Forward(sub));
        let outcome = s.on_client_packet(subscribe(2, &["#"]));
        assert!(matches!(outcome.verdict, ClientVerdict::Answer(_)));
    }
}
