//! The MQTT behaviour the fleet relies on passes through the front door unchanged:
//! retained messages, QoS 1 with queueing and redelivery on persistent sessions, and
//! last-will. Each test runs real rumqttc clients over loopback TCP.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, broker, device_topic, options};
use rumqttc::{LastWill, QoS};

/// A retained message published by the controller reaches a device that subscribes
/// later, flagged as retained; a live subscriber gets later publishes as they happen.
#[tokio::test]
async fn retained_messages_reach_later_subscribers() {
    let broker = broker().await;
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.publish_acked("fleet/keys", true, b"rotation-1").await;

    let mut device = Client::connect(options(&broker, "d1", "d1")).await;
    device.subscribe("fleet/keys").await;
    let retained = device.publish().await;
    assert_eq!((retained.topic.as_str(), &retained.payload[..]), ("fleet/keys", &b"rotation-1"[..]));
    assert!(retained.retain, "a retained message is flagged as such to a new subscriber");

    controller.publish_acked("fleet/keys", true, b"rotation-2").await;
    let live = device.publish().await;
    assert_eq!(&live.payload[..], b"rotation-2");
    assert_eq!(live.qos, QoS::AtLeastOnce);
    broker.shutdown().await;
}

/// A device on a persistent session gets, at QoS 1, the jobs published while it was
/// offline, and the broker says its session was kept.
#[tokio::test]
async fn qos1_is_queued_for_an_offline_persistent_session() {
    let broker = broker().await;
    let jobs = device_topic("d1", "jobs");
    let persistent = || {
        let mut o = options(&broker, "d1", "d1");
        o.set_clean_session(false);
        o
    };

    let mut device = Client::connect(persistent()).await;
    device.subscribe(&jobs).await;
    device.disconnect().await;

    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.publish_acked(&jobs, false, b"job-while-offline").await;

    let mut device = Client::start(persistent());
    assert!(device.connack().await.session_present, "the persistent session survived the disconnect");
    let job = device.publish().await;
    assert_eq!(
        (job.topic.as_str(), &job.payload[..], job.qos),
        (jobs.as_str(), &b"job-while-offline"[..], QoS::AtLeastOnce)
    );
    broker.shutdown().await;
}

/// A QoS 1 message the device received but never acknowledged is delivered again when
/// the device comes back on its persistent session.
#[tokio::test]
async fn unacknowledged_qos1_is_redelivered_after_reconnect() {
    let broker = broker().await;
    let jobs = device_topic("d1", "jobs");
    let persistent = || {
        let mut o = options(&broker, "d1", "d1");
        o.set_clean_session(false);
        o.set_manual_acks(true);
        o
    };
    let mut device = Client::connect(persistent()).await;
    device.subscribe(&jobs).await;

    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.publish_acked(&jobs, false, b"job-1").await;
    let first = device.publish().await;
    assert_eq!(&first.payload[..], b"job-1");
    // Power loss before the PUBACK.
    device.kill();

    let mut device = Client::start(persistent());
    assert!(device.connack().await.session_present);
    let again = device.publish().await;
    assert_eq!((&again.payload[..], again.qos), (&b"job-1"[..], QoS::AtLeastOnce));
    device.client.ack(&again).await.unwrap();
    broker.shutdown().await;
}

/// A device that vanishes without DISCONNECT has its last-will published: live
/// subscribers get it, and it stays retained for later ones.
#[tokio::test]
async fn last_will_is_published_and_retained_when_a_device_vanishes() {
    let broker = broker().await;
    let status = device_topic("d1", "status");
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.subscribe("fleet/devices/+/status").await;

    let mut o = options(&broker, "d1", "d1");
    o.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
    let mut device = Client::connect(o).await;
    device.publish_acked(&status, true, b"online").await;
    let online = controller.publish().await;
    assert_eq!((online.topic.as_str(), &online.payload[..]), (status.as_str(), &b"online"[..]));

    device.kill();
    let will = controller.publish().await;
    assert_eq!((will.topic.as_str(), &will.payload[..]), (status.as_str(), &b"offline"[..]));

    let mut later = Client::connect(options(&broker, "controller-2", "controller")).await;
    later.subscribe(&status).await;
    let retained = later.publish().await;
    assert_eq!(&retained.payload[..], b"offline");
    assert!(retained.retain);
    broker.shutdown().await;
}

/// A device cut off by the ACL also gets its last-will published (it did not say
/// goodbye), so the fleet sees it offline.
#[tokio::test]
async fn last_will_fires_when_the_acl_cuts_a_device_off() {
    let broker = broker().await;
    let status = device_topic("d1", "status");
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.subscribe(&status).await;

    let mut o = options(&broker, "d1", "d1");
    o.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
    let mut device = Client::connect(o).await;
    device.client.publish(device_topic("d2", "events"), QoS::AtLeastOnce, false, "forged").await.unwrap();
    device.closed_by_broker().await;

    let will = controller.publish().await;
    assert_eq!(&will.payload[..], b"offline");
    broker.shutdown().await;
}

/// A device that reconnects while its old connection is still open (a half-open link
/// after a network change) takes its session over: the old connection is closed, the
/// new one keeps the session, and the takeover is not mistaken for the device vanishing.
#[tokio::test]
async fn reconnecting_device_takes_its_session_over() {
    let broker = broker().await;
    let status = device_topic("d1", "status");
    let mut controller = Client::connect(options(&broker, "controller", "controller")).await;
    controller.subscribe(&status).await;
    let persistent = || {
        let mut o = options(&broker, "d1", "d1");
        o.set_clean_session(false);
        o.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
        o
    };
    let mut old = Client::connect(persistent()).await;
    old.subscribe(&device_topic("d1", "jobs")).await;

    let mut new = Client::start(persistent());
    assert!(new.connack().await.session_present);
    old.closed_by_broker().await;

    new.publish_acked(&status, true, b"online-again").await;
    let first = controller.publish().await;
    assert_eq!(&first.payload[..], b"online-again", "no offline will on a takeover");
    controller.publish_acked(&device_topic("d1", "jobs"), false, b"job").await;
    assert_eq!(&new.publish().await.payload[..], b"job", "the subscription moved to the new connection");
    broker.shutdown().await;
}

/// Shutdown closes client connections and returns.
#[tokio::test]
async fn shutdown_closes_clients() {
    let broker = broker().await;
    let mut device = Client::connect(options(&broker, "d1", "d1")).await;
    broker.shutdown().await;
    device.closed_by_broker().await;
}
