//! The MQTT 3.1.1 session, sans-IO: bytes in, events and bytes out, time passed by hand.
//!
//! The broker side of each exchange is written with `mqttrs` (the same codec, used the
//! other way round), and what the session sends is decoded with it, so each test reads
//! like the packet trace it checks. The rules that matter most to the agent get one
//! test each: PUBACK only on `ack`, a stale token acknowledges nothing, unacknowledged
//! QoS 1 publications are resent (DUP) after a reconnect, a dead link is noticed by the
//! keep-alive, and no input (oversized, malformed, split anywhere) makes it panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleet_firmware_sdk::mqtt::{Event, QoS, Refusal, Session, SessionConfig, SessionError, State, Token, Will};
use mqttrs::{Connack, ConnectReturnCode, Packet, Pid, QosPid, Suback, SubscribeReturnCodes};

const KEEP_ALIVE_SECS: u16 = 10;
const MAX_PACKET: usize = 1024;

fn config() -> SessionConfig {
    SessionConfig {
        client_id: "gw-001".into(),
        username: "gw-001".into(),
        password: "secret".into(),
        keep_alive_secs: KEEP_ALIVE_SECS,
        will: Some(Will {
            topic: "fleet/devices/gw-001/status".into(),
            payload: b"offline".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
        max_packet_bytes: MAX_PACKET,
        connect_timeout_ms: 3_000,
        max_inflight: 4,
    }
}

/// Encodes a packet as a broker would send it.
fn wire(packet: &Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = mqttrs::encode_slice(packet, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn connack(code: ConnectReturnCode, session_present: bool) -> Vec<u8> {
    wire(&Packet::Connack(Connack { session_present, code }))
}

fn publish(topic: &str, payload: &[u8], qospid: QosPid) -> Vec<u8> {
    wire(&Packet::Publish(mqttrs::Publish { dup: false, qospid, retain: false, topic_name: topic, payload }))
}

fn pid(n: u16) -> Pid {
    Pid::try_from(n).unwrap()
}

/// Feeds bytes and polls until they are used up; returns the events.
fn feed(session: &mut Session, mut bytes: &[u8], now: u64) -> Result<Vec<Event>, SessionError> {
    let mut events = Vec::new();
    loop {
        let taken = session.received(bytes)?;
        bytes = &bytes[taken..];
        if let Some(event) = session.poll(now)? {
            events.push(event);
        }
        if bytes.is_empty() {
            // One more poll for a packet completed by the last byte.
            while let Some(event) = session.poll(now)? {
                events.push(event);
            }
            return Ok(events);
        }
    }
}

/// Takes and decodes everything the session queued.
fn sent(session: &mut Session) -> Vec<Packet<'static>> {
    let bytes = session.outgoing().to_vec();
    session.consume_outgoing(bytes.len());
    // Leak: the decoded packets borrow the bytes, and tests are short-lived.
    let mut rest: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let mut packets = Vec::new();
    while !rest.is_empty() {
        let packet = mqttrs::decode_slice(rest).unwrap().expect("whole packets only");
        let len = packet_len(rest);
        packets.push(packet);
        rest = &rest[len..];
    }
    packets
}

/// The length of the first packet in `bytes` (fixed header included).
fn packet_len(bytes: &[u8]) -> usize {
    let mut len = 0usize;
    for (i, b) in bytes[1..].iter().enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return 2 + i + len;
        }
    }
    unreachable!()
}

/// A session that is connected at time 0.
fn connected() -> Session {
    let mut session = Session::new(config());
    session.connect(0).unwrap();
    sent(&mut session);
    let events = feed(&mut session, &connack(ConnectReturnCode::Accepted, false), 0).unwrap();
    assert_eq!(events, [Event::Connected { session_present: false }]);
    session
}

#[test]
fn connect_is_mqtt_311_with_credentials_last_will_and_a_persistent_session() {
    let mut session = Session::new(config());
    session.connect(0).unwrap();
    assert_eq!(session.state(), State::Connecting { since_ms: 0 });
    let packets = sent(&mut session);
    let [Packet::Connect(connect)] = packets.as_slice() else { panic!("{packets:?}") };
    assert_eq!(connect.protocol, mqttrs::Protocol::MQTT311);
    assert_eq!(
        (connect.client_id, connect.username, connect.password),
        ("gw-001", Some("gw-001"), Some(&b"secret"[..]))
    );
    assert!(!connect.clean_session, "the broker must keep the session (and queue jobs) across reconnects");
    assert_eq!(connect.keep_alive, KEEP_ALIVE_SECS);
    let will = connect.last_will.as_ref().unwrap();
    assert_eq!(
        (will.topic, will.message, will.qos, will.retain),
        ("fleet/devices/gw-001/status", &b"offline"[..], mqttrs::QoS::AtLeastOnce, true)
    );

    let events = feed(&mut session, &connack(ConnectReturnCode::Accepted, true), 5).unwrap();
    assert_eq!(events, [Event::Connected { session_present: true }]);
    assert!(session.is_connected());
}

#[test]
fn a_refused_connect_says_why() {
    let mut session = Session::new(config());
    session.connect(0).unwrap();
    let result = feed(&mut session, &connack(ConnectReturnCode::BadUsernamePassword, false), 0);
    assert_eq!(result, Err(SessionError::Refused(Refusal::BadCredentials)));
    assert_eq!(session.state(), State::Disconnected);
}

#[test]
fn no_connack_in_time_fails_the_attempt() {
    let mut session = Session::new(config());
    session.connect(1_000).unwrap();
    assert_eq!(session.next_deadline(), Some(4_000));
    assert_eq!(session.poll(3_999), Ok(None));
    assert_eq!(session.poll(4_000), Err(SessionError::ConnectTimeout(3_000)));
    assert_eq!(session.state(), State::Disconnected);
}

#[test]
fn a_qos1_message_is_acknowledged_only_when_acked() {
    let mut session = connected();
    let events =
        feed(&mut session, &publish("fleet/devices/gw-001/jobs", b"envelope", QosPid::AtLeastOnce(pid(7))), 10)
            .unwrap();
    let [Event::Message { topic, payload, token: Some(token), retain: false }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!((topic.as_str(), payload.as_slice()), ("fleet/devices/gw-001/jobs", &b"envelope"[..]));
    assert!(sent(&mut session).is_empty(), "no PUBACK before the agent says the envelope is stored");

    assert!(session.ack(*token));
    assert_eq!(sent(&mut session), [Packet::Puback(pid(7))]);
    assert!(!session.ack(*token), "a token acknowledges once");
    assert!(sent(&mut session).is_empty());
}

#[test]
fn a_qos0_message_has_no_token() {
    let mut session = connected();
    let events = feed(&mut session, &publish("fleet/keys", b"k", QosPid::AtMostOnce), 10).unwrap();
    assert!(matches!(events.as_slice(), [Event::Message { token: None, .. }]));
    assert!(!session.ack(Token(0)));
}

#[test]
fn a_token_of_an_earlier_connection_acknowledges_nothing() {
    let mut session = connected();
    let events = feed(&mut session, &publish("t", b"x", QosPid::AtLeastOnce(pid(3))), 10).unwrap();
    let Some(Event::Message { token: Some(old), .. }) = events.first().cloned() else { panic!() };

    // The link drops before the envelope is stored; the broker will redeliver it.
    session.link_lost();
    session.connect(20).unwrap();
    feed(&mut session, &connack(ConnectReturnCode::Accepted, true), 20).unwrap();
    sent(&mut session);
    assert!(!session.ack(old), "a PUBACK for pid 3 on the new connection would ack a message it never delivered");

    let events = feed(&mut session, &publish("t", b"x", QosPid::AtLeastOnce(pid(3))), 30).unwrap();
    let Some(Event::Message { token: Some(new), .. }) = events.first().cloned() else { panic!() };
    assert_ne!(old, new);
    assert!(session.ack(new));
    assert_eq!(sent(&mut session), [Packet::Puback(pid(3))]);
}

#[test]
fn unacknowledged_publications_are_resent_with_dup_after_a_reconnect() {
    let mut session = connected();
    let first = session.publish("fleet/devices/gw-001/events", b"e1", QoS::AtLeastOnce, false).unwrap().unwrap();
    let second = session.publish("fleet/devices/gw-001/events", b"e2", QoS::AtLeastOnce, false).unwrap().unwrap();
    assert_eq!(session.publish("fleet/devices/gw-001/status", b"s", QoS::AtMostOnce, true).unwrap(), None);
    assert_eq!(sent(&mut session).len(), 3);
    let events = feed(&mut session, &wire(&Packet::Puback(pid(first))), 10).unwrap();
    assert_eq!(events, [Event::Published { pid: first }]);
    assert_eq!(session.inflight(), 1);

    session.link_lost();
    assert_eq!(session.publish("t", b"x", QoS::AtLeastOnce, false), Err(SessionError::NotConnected));
    session.connect(20).unwrap();
    sent(&mut session);
    feed(&mut session, &connack(ConnectReturnCode::Accepted, true), 20).unwrap();
    let resent = sent(&mut session);
    let [Packet::Publish(p)] = resent.as_slice() else { panic!("{resent:?}") };
    assert!(p.dup, "a resend is flagged DUP");
    assert_eq!((p.qospid, p.payload), (QosPid::AtLeastOnce(pid(second)), &b"e2"[..]));
}

#[test]
fn inflight_is_bounded_by_forgetting_the_oldest() {
    let mut session = connected();
    for n in 0..10u8 {
        session.publish("t", &[n], QoS::AtLeastOnce, false).unwrap();
    }
    assert_eq!(session.inflight(), 4);
}

#[test]
fn keep_alive_pings_and_a_silent_broker_means_the_link_is_gone() {
    let mut session = connected();
    let half = u64::from(KEEP_ALIVE_SECS) * 500;
    assert_eq!(session.next_deadline(), Some(half));
    assert_eq!(session.poll(half - 1), Ok(None));
    assert!(sent(&mut session).is_empty());
    assert_eq!(session.poll(half), Ok(None));
    assert_eq!(sent(&mut session), [Packet::Pingreq]);

    // Answered: no timeout, and the next ping is due half a keep-alive later.
    feed(&mut session, &wire(&Packet::Pingresp), half + 100).unwrap();
    assert_eq!(session.poll(2 * half + 50), Ok(None));
    assert_eq!(session.poll(2 * half + 100), Ok(None));
    assert_eq!(sent(&mut session), [Packet::Pingreq]);

    // Unanswered: the link is declared lost.
    assert_eq!(session.poll(3 * half + 100), Err(SessionError::PingTimeout(half)));
    assert_eq!(session.state(), State::Disconnected);
}

#[test]
fn subscribe_and_unsubscribe_are_answered_by_packet_id() {
    let mut session = connected();
    let sub = session.subscribe("fleet/devices/gw-001/jobs", QoS::AtLeastOnce).unwrap();
    let packets = sent(&mut session);
    let [Packet::Subscribe(s)] = packets.as_slice() else { panic!("{packets:?}") };
    assert_eq!(s.topics[0].topic_path.as_str(), "fleet/devices/gw-001/jobs");
    let mut codes = heapless::Vec::new();
    codes.push(SubscribeReturnCodes::Success(mqttrs::QoS::AtLeastOnce)).unwrap();
    let events = feed(&mut session, &wire(&Packet::Suback(Suback { pid: pid(sub), return_codes: codes })), 1).unwrap();
    assert_eq!(events, [Event::Subscribed { pid: sub, granted: true }]);

    let unsub = session.unsubscribe("fleet/devices/gw-001/jobs").unwrap();
    let events = feed(&mut session, &wire(&Packet::Unsuback(pid(unsub))), 2).unwrap();
    assert_eq!(events, [Event::Unsubscribed { pid: unsub }]);

    let long = "x".repeat(300);
    assert!(matches!(session.subscribe(&long, QoS::AtLeastOnce), Err(SessionError::Unsendable(..))));
}

#[test]
fn an_oversized_publication_is_skipped_acknowledged_and_the_stream_goes_on() {
    let big = vec![0xab; 4 * MAX_PACKET];
    let mut stream = publish("fleet/devices/gw-001/jobs", &big, QosPid::AtLeastOnce(pid(9)));
    stream.extend(publish("fleet/devices/gw-001/jobs", b"small", QosPid::AtLeastOnce(pid(10))));
    // Any split of the stream gives the same events.
    for chunk in [1, 2, 3, 7, 100, 1000, stream.len()] {
        let mut session = connected();
        let mut events = Vec::new();
        for piece in stream.chunks(chunk) {
            events.extend(feed(&mut session, piece, 10).unwrap());
        }
        assert_eq!(events.len(), 2, "chunk {chunk}: {events:?}");
        assert_eq!(events[0], Event::Skipped { topic: "fleet/devices/gw-001/jobs".into(), len: big.len() + 29 });
        assert!(matches!(&events[1], Event::Message { payload, .. } if payload == b"small"));
        assert_eq!(sent(&mut session), [Packet::Puback(pid(9))], "chunk {chunk}");
    }
}

#[test]
fn broker_protocol_violations_close_the_connection_without_panicking() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a CONNACK without a body", vec![0x20, 0x00]),
        ("a PUBACK without a packet id", vec![0x40, 0x00]),
        ("a PUBLISH whose topic runs past its end", vec![0x30, 0x03, 0x00, 0x10, b'a']),
        ("a QoS 1 PUBLISH without room for its packet id", vec![0x32, 0x03, 0x00, 0x01, b'a']),
        ("a QoS 2 PUBLISH", vec![0x34, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]),
        ("a SUBSCRIBE from the server", vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01]),
        ("a second CONNACK", connack(ConnectReturnCode::Accepted, false)),
        ("a five-byte remaining length", vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ("a packet id of zero", vec![0x40, 0x02, 0x00, 0x00]),
        ("a SUBACK with no return code", vec![0x90, 0x02, 0x00, 0x01]),
        ("an oversized PUBLISH with a topic over the limit", {
            let mut p = vec![0x30, 0xff, 0xff, 0x03, 0xff, 0xff];
            p.extend(vec![b'a'; 100]);
            p
        }),
    ];
    for (what, bytes) in cases {
        let mut session = connected();
        let result = feed(&mut session, &bytes, 10);
        assert!(matches!(result, Err(SessionError::Protocol(_))), "{what}: {result:?}");
        assert_eq!(session.state(), State::Disconnected, "{what}");
    }
}

#[test]
fn garbage_never_panics() {
    // A deterministic xorshift stream of hostile bytes, in pieces of every size.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..2_000 {
        let mut session = connected();
        let len = (round % 64) + 1;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Bias towards the packet types a client receives, to get past the type check.
                let b = (x >> 24) as u8;
                if x.is_multiple_of(3) { [0x20, 0x30, 0x32, 0x40, 0x90, 0xb0, 0xd0][(x % 7) as usize] } else { b }
            })
            .collect();
        for piece in bytes.chunks((round % 5) + 1) {
            if feed(&mut session, piece, 10).is_err() {
                break;
            }
        }
    }
}
