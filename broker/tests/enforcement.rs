//! The front door's rules, each against a running broker over loopback TCP: who may
//! connect, what a device may publish and subscribe, and that a hostile connection is
//! closed without hurting anyone else.
//!
//! "Never arrives" is shown without timing: after the refused action, a legitimate
//! sentinel message takes the same path, and the first thing the subscriber receives
//! must be that sentinel.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::BytesMut;
use common::{Client, HANG_GUARD, broker, broker_with, device_topic, options};
use rumqttc::{ConnectReturnCode, MqttOptions, QoS, SubscribeFilter, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[tokio::test]
async fn bad_credentials_are_refused() {
    let broker = broker().await;
    let mut wrong = options(&broker, "d1", "d1");
    wrong.set_credentials("d1", "pw-d2");
    assert_eq!(Client::start(wrong).refusal().await, ConnectReturnCode::BadUserNamePassword);

    let addr = broker.local_addr();
    let anonymous = MqttOptions::new("d1", addr.ip().to_string(), addr.port());
    assert_eq!(Client::start(anonymous).refusal().await, ConnectReturnCode::BadUserNamePassword);

    let mut unknown = options(&broker, "not a device", "not a device");
    unknown.set_credentials("not a device", "pw-not a device");
    assert_eq!(Client::start(unknown).refusal().await, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(broker.stats().refused_connections, 3);
    broker.shutdown().await;
}

/// A device authenticated as d1 cannot use d2's client id (which would take over d2's
/// session and kick d2 off).
#[tokio::test]
async fn client_id_must_be_the_device_id() {
    let broker = broker().await;
    let mut d2 = Client::connect(options(&broker, "d2", "d2")).await;
    assert_eq!(Client::start(options(&broker, "d2", "d1")).refusal().await, ConnectReturnCode::BadClientId);
    assert_eq!(Client::start(options(&broker, "", "d1")).refusal().await, ConnectReturnCode::BadClientId);
    assert_eq!(
        Client::start(options(&broker, "ctl/1", "controller")).refusal().await,
        ConnectReturnCode::BadClientId,
        "the engine cannot route a client id with '/'"
    );
    // d2 was not kicked off: it still round-trips a message.
    d2.subscribe(&device_topic("d2", "jobs")).await;
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.publish_acked(&device_topic("d2", "jobs"), false, b"still here").await;
    assert_eq!(&d2.publish().await.payload[..], b"still here");
    broker.shutdown().await;
}

#[tokio::test]
async fn last_will_must_be_the_devices_own_status() {
    let broker = broker().await;
    for topic in [device_topic("d2", "status"), device_topic("d1", "events"), "fleet/keys".to_string()] {
        let mut o = options(&broker, "d1", "d1");
        o.set_last_will(rumqttc::LastWill::new(topic, "offline", QoS::AtLeastOnce, true));
        assert_eq!(Client::start(o).refusal().await, ConnectReturnCode::NotAuthorized);
    }
    assert_eq!(broker.stats().refused_connections, 3);
    broker.shutdown().await;
}

/// Every topic a device may not publish to cuts the device off, and the message never
/// reaches a controller subscribed to everything.
#[tokio::test]
async fn device_publishing_outside_its_own_topics_is_cut_off() {
    let broker = broker().await;
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.subscribe("fleet/#").await;

    let forbidden = [
        device_topic("d2", "events"),
        device_topic("d2", "status"),
        device_topic("d1", "jobs"),
        device_topic("d2", "jobs"),
        device_topic("d1", "acks"),
        "fleet/keys".to_string(),
        "fleet/controller/status".to_string(),
        format!("fleet/modules/{HASH}/chunks/0"),
        "elsewhere/x".to_string(),
    ];
    for topic in &forbidden {
        let mut device = Client::connect(options(&broker, "d1", "d1")).await;
        device.client.publish(topic, QoS::AtLeastOnce, false, format!("forged {topic}")).await.unwrap();
        let delivered = device.closed_by_broker().await;
        assert!(delivered.is_empty());
    }
    assert_eq!(broker.stats().denied_publishes, forbidden.len() as u64);

    let mut device = Client::connect(options(&broker, "d1", "d1")).await;
    device.publish_acked(&device_topic("d1", "events"), false, b"sentinel").await;
    let first = controller.publish().await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        (device_topic("d1", "events").as_str(), &b"sentinel"[..]),
        "the first message the controller sees is the legitimate one"
    );
    broker.shutdown().await;
}

/// Denied filters get 0x80 in the SUBACK, allowed ones in the same SUBSCRIBE still work,
/// and nothing published on a denied filter reaches the device.
#[tokio::test]
async fn device_subscribing_outside_its_own_topics_gets_failure_and_nothing() {
    let broker = broker().await;
    let mut device = Client::connect(options(&broker, "d1", "d1")).await;
    let filters = [
        device_topic("d1", "jobs"),
        device_topic("d2", "jobs"),
        device_topic("d2", "acks"),
        "fleet/#".to_string(),
        "fleet/devices/+/jobs".to_string(),
        device_topic("d2", "events"),
    ];
    device
        .client
        .subscribe_many(filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)))
        .await
        .unwrap();
    let ack = device.suback().await;
    let mut expected = vec![SubscribeReasonCode::Failure; filters.len()];
    expected[0] = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    assert_eq!(ack.return_codes, expected);

    // A SUBSCRIBE with nothing allowed is answered by the front door alone.
    assert_eq!(device.subscribe("fleet/#").await.return_codes, vec![SubscribeReasonCode::Failure]);
    assert_eq!(broker.stats().denied_subscribes, filters.len() as u64);

    // What a device may read.
    for allowed in
        ["fleet/keys".to_string(), "fleet/controller/status".to_string(), format!("fleet/modules/{HASH}/chunks/+")]
    {
        assert_eq!(device.subscribe(&allowed).await.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    }

    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    let mut d2 = Client::connect(options(&broker, "d2", "d2")).await;
    controller.publish_acked(&device_topic("d2", "jobs"), false, b"for d2").await;
    controller.publish_acked(&device_topic("d2", "acks"), false, b"for d2").await;
    d2.publish_acked(&device_topic("d2", "events"), false, b"from d2").await;
    controller.publish_acked(&device_topic("d1", "jobs"), false, b"sentinel").await;
    let first = device.publish().await;
    assert_eq!((first.topic.as_str(), &first.payload[..]), (device_topic("d1", "jobs").as_str(), &b"sentinel"[..]));
    broker.shutdown().await;
}

/// The controller may publish and subscribe anywhere under the prefix, including shared
/// subscriptions for its workers, and nowhere else.
#[tokio::test]
async fn controller_rules() {
    let broker = broker().await;
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    let ack = controller.subscribe("fleet/devices/+/events").await;
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    assert_eq!(controller.subscribe("$share/ingest/fleet/devices/+/status").await.return_codes, ack.return_codes);
    assert_eq!(controller.subscribe("#").await.return_codes, vec![SubscribeReasonCode::Failure]);

    let mut device = Client::connect(options(&broker, "d1", "d1")).await;
    device.publish_acked(&device_topic("d1", "events"), false, b"e").await;
    assert_eq!(&controller.publish().await.payload[..], b"e");

    controller.client.publish("elsewhere/x", QoS::AtLeastOnce, false, "x").await.unwrap();
    controller.closed_by_broker().await;
    assert_eq!(broker.stats().denied_publishes, 1);
    broker.shutdown().await;
}

/// An oversized packet closes that connection only; a bystander keeps working and never
/// sees the oversized message.
#[tokio::test]
async fn oversized_packet_closes_only_that_connection() {
    let broker = broker_with(|c| c.max_packet_bytes = 4096).await;
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.subscribe("fleet/devices/+/events").await;

    let mut big = Client::connect(options(&broker, "d1", "d1")).await;
    big.client.publish(device_topic("d1", "events"), QoS::AtLeastOnce, false, vec![7u8; 8192]).await.unwrap();
    big.closed_by_broker().await;
    assert_eq!(broker.stats().oversized_packets, 1);

    let mut d2 = Client::connect(options(&broker, "d2", "d2")).await;
    d2.publish_acked(&device_topic("d2", "events"), false, b"after").await;
    let first = controller.publish().await;
    assert_eq!(&first.payload[..], b"after");
    broker.shutdown().await;
}

/// Garbage instead of CONNECT, garbage after CONNECT, and a CONNECT for MQTT 5 each end
/// their own connection; a bystander's connection survives all of them.
#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let broker = broker().await;
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.subscribe("fleet/devices/+/events").await;
    let addr = broker.local_addr();

    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n").await.unwrap();
    read_until_closed(&mut raw).await;
    assert_eq!(broker.stats().malformed_packets, 1);

    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&connect_bytes("d1", 4)).await.unwrap();
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "accepted");
    raw.write_all(&[0x00, 0x00, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    read_until_closed(&mut raw).await;
    assert_eq!(broker.stats().malformed_packets, 2);

    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&connect_bytes("d1", 5)).await.unwrap();
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x01], "refused: unacceptable protocol version");

    let mut d2 = Client::connect(options(&broker, "d2", "d2")).await;
    d2.publish_acked(&device_topic("d2", "events"), false, b"after").await;
    assert_eq!(&controller.publish().await.payload[..], b"after");
    broker.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_limit_are_refused() {
    let broker = broker_with(|c| c.max_connections = 1).await;
    let _first = Client::connect(options(&broker, "d1", "d1")).await;
    assert_eq!(Client::start(options(&broker, "d2", "d2")).refusal().await, ConnectReturnCode::ServiceUnavailable);
    assert_eq!(broker.stats().refused_connections, 1);
    broker.shutdown().await;
}

/// A CONNECT for `client_id` with the right password, at protocol `level` (4 = 3.1.1).
fn connect_bytes(client_id: &str, level: u8) -> BytesMut {
    let mut connect = rumqttc::Connect::new(client_id);
    connect.set_login(client_id, format!("pw-{client_id}"));
    let mut out = BytesMut::new();
    connect.write(&mut out).unwrap();
    // The protocol level follows the 2-byte length and "MQTT" after the fixed header.
    let level_at = out.iter().position(|&b| b == b'T').unwrap() + 2;
    assert_eq!(out[level_at], 4);
    out[level_at] = level;
    out
}

/// Reads until the broker closes the connection (end of stream or reset).
async fn read_until_closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 256];
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("hang guard: the broker did not close the connection");
}

#[tokio::test]
async fn an_empty_client_id_cannot_ask_for_a_persistent_session() {
    // [MQTT-3.1.3-8]: a zero-byte client id with CleanSession 0 is refused with code 2,
    // whoever logs in.
    let broker = broker().await;
    let mut connect = rumqttc::Connect::new("");
    connect.clean_session = false;
    connect.set_login("controller", "pw-controller");
    let mut out = BytesMut::new();
    connect.write(&mut out).unwrap();
    let mut stream = TcpStream::connect(broker.local_addr()).await.unwrap();
    stream.write_all(&out).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut connack)).await.unwrap().unwrap();
    assert_eq!(connack, [0x20, 2, 0, 2]);
    read_until_closed(&mut stream).await;
    assert_eq!(broker.stats().refused_connections, 1);
    broker.shutdown().await;
}

/// A TCP connection to the broker from the loopback address `source`.
async fn connect_from(broker: &fleet_broker::RunningBroker, source: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((source, 0))).unwrap();
    socket.connect(broker.local_addr()).await.unwrap()
}

/// Sends a CONNECT for `client_id` with `password` and returns the CONNACK's return code.
async fn login(stream: &mut TcpStream, client_id: &str, password: &str) -> u8 {
    let mut connect = rumqttc::Connect::new(client_id);
    connect.set_login(client_id, password);
    let mut out = BytesMut::new();
    connect.write(&mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut connack)).await.unwrap().unwrap();
    assert_eq!(connack[0], 0x20, "not a CONNACK: {connack:?}");
    connack[3]
}

#[tokio::test]
async fn idle_sockets_from_one_address_cannot_keep_a_device_out() {
    let broker = broker_with(|c| c.max_pending_per_address = 4).await;
    // An address opens ten sockets and never sends a CONNECT.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(connect_from(&broker, [127, 0, 0, 2]).await);
    }
    // Beyond its four, each was answered "server unavailable" and closed at once.
    let mut refused = 0;
    for stream in &mut idle {
        let mut byte = [0u8; 4];
        if let Ok(Ok(4)) = tokio::time::timeout(std::time::Duration::from_millis(300), stream.read(&mut byte)).await {
            assert_eq!(byte, [0x20, 2, 0, 3]);
            refused += 1;
        }
    }
    assert_eq!(refused, 6);
    assert_eq!(broker.stats().refused_per_address, 6);
    // A device on another address is not affected.
    let mut device = Client::connect(options(&broker, "d1", "d1")).await;
    device.publish_acked(&device_topic("d1", "status"), true, b"{}").await;
    // Once its oldest socket has idled past the eviction age, the flooding address's next
    // socket takes that one's place: idle sockets cannot hold a slot for long.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut newcomer = connect_from(&broker, [127, 0, 0, 2]).await;
    assert_eq!(login(&mut newcomer, "d2", "pw-d2").await, 0);
    assert_eq!(broker.stats().evicted_unauthenticated, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn failed_logins_slow_their_address_down() {
    let broker = broker().await;
    for _ in 0..7 {
        let mut stream = connect_from(&broker, [127, 0, 0, 4]).await;
        assert_eq!(login(&mut stream, "d1", "guess").await, 4);
    }
    let stats = broker.stats();
    assert_eq!(stats.failed_logins, 7);
    // Past five free failures, each attempt from that address waited before its check.
    assert_eq!(stats.slowed_logins, 2);
    // The right password from elsewhere is not slowed; from the guessing address it
    // still works, after the wait.
    let mut elsewhere = connect_from(&broker, [127, 0, 0, 5]).await;
    assert_eq!(login(&mut elsewhere, "d1", "pw-d1").await, 0);
    assert_eq!(broker.stats().slowed_logins, 2);
    let mut guesser = connect_from(&broker, [127, 0, 0, 4]).await;
    assert_eq!(login(&mut guesser, "d2", "pw-d2").await, 0);
    assert_eq!(broker.stats().slowed_logins, 3);
    broker.shutdown().await;
}

#[tokio::test]
async fn the_owner_can_cut_a_client_off_and_its_will_goes_out() {
    let broker = broker().await;
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.subscribe(&device_topic("d1", "status")).await;
    let mut opts = options(&broker, "d1", "d1");
    opts.set_last_will(rumqttc::LastWill::new(
        device_topic("d1", "status"),
        b"offline".to_vec(),
        QoS::AtLeastOnce,
        false,
    ));
    let mut d1 = Client::connect(opts).await;
    assert_eq!(broker.disconnect("d1"), 1);
    d1.closed_by_broker().await;
    assert_eq!(&controller.publish().await.payload[..], b"offline");
    broker.shutdown().await;
}
