//! Invariant 6: nothing is published while the link is down; on link up the agent
//! subscribes, publishes its retained online status and republishes every
//! unacknowledged event in seq order, within a bounded in-flight window; unacknowledged
//! events are resent after a timeout; the status follows the queue depth.

use fleet_agent_core::{Action, QoS, Tuning};
use fleet_schemas::status::from_json;
use fleet_schemas::{DeviceStatus, Presence};

use crate::support::*;

fn statuses(actions: &[Action]) -> Vec<DeviceStatus> {
    let topic = fleet().status_topic();
    publishes(actions)
        .filter(|p| p.topic == topic)
        .map(|p| {
            assert!(p.retain && p.qos == QoS::AtLeastOnce);
            from_json(&p.payload).unwrap()
        })
        .collect()
}

#[test]
fn while_down_nothing_is_published_and_link_up_republishes_the_outbox_in_order() {
    let mut h = Harness::new();
    let mut down = Vec::new();
    for n in 1..=2 {
        let envelope = h.fleet.run(&Fleet::job(n), 1);
        down.extend(h.deliver_job(&envelope));
    }
    down.extend(h.succeed(&h.fleet.key(Fleet::job(1).job_id, 1)));
    down.extend(h.tick(60_000));
    assert_eq!(publishes(&down).count(), 0);
    assert_eq!(h.store.outbox.len(), 5);

    let actions = h.link_up();
    let subscribed: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Subscribe { topic, .. } => Some(topic.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(subscribed, vec![h.fleet.jobs_topic().as_str(), h.fleet.acks_topic().as_str(), "fleet/keys"]);
    let status = statuses(&actions);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].state, Presence::Online);
    assert_eq!((status[0].queue_depth, status[0].outbox_depth), (1, 5));
    let first_status = position(&actions, |a| matches!(a, Action::Publish(p) if p.topic == h.fleet.status_topic()));
    let first_event = position(&actions, |a| matches!(a, Action::Publish(p) if p.topic == h.fleet.events_topic()));
    assert!(first_status < first_event);
    let seqs: Vec<u64> = published_events(&actions).iter().map(|e| e.event_seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);

    // Down again: the same events go out again on the next link up.
    h.input(fleet_agent_core::Input::LinkDown);
    assert_eq!(publishes(&h.tick(60_000)).count(), 0);
    let again = h.link_up();
    assert_eq!(published_events(&again).len(), 5);
}

#[test]
fn the_in_flight_window_is_bounded_and_acks_open_it() {
    let mut h = Harness::with_tuning(Tuning { inflight_window: 2, ..Tuning::default() });
    for n in 1..=2 {
        let envelope = h.fleet.run(&Fleet::job(n), 1);
        h.deliver_job(&envelope);
    }
    let actions = h.link_up();
    assert_eq!(published_events(&actions).iter().map(|e| e.event_seq).collect::<Vec<_>>(), vec![1, 2]);
    let topic = h.fleet.acks_topic();
    let (_, actions) = h.deliver(&topic, &h.fleet.ack(1));
    assert_eq!(published_events(&actions).iter().map(|e| e.event_seq).collect::<Vec<_>>(), vec![3]);
}

#[test]
fn unacknowledged_events_are_resent_after_the_timeout() {
    let tuning = Tuning { resend_after_ms: 10_000, ..Tuning::default() };
    let mut h = Harness::with_tuning(tuning);
    h.link_up();
    let envelope = h.fleet.run(&Fleet::job(1), 1);
    assert_eq!(published_events(&h.deliver_job(&envelope)).len(), 2);
    assert!(published_events(&h.tick(5_000)).is_empty());
    let resent = h.tick(5_000);
    assert_eq!(published_events(&resent).iter().map(|e| e.event_seq).collect::<Vec<_>>(), vec![1, 2]);
    let topic = h.fleet.acks_topic();
    h.deliver(&topic, &h.fleet.ack(2));
    assert!(published_events(&h.tick(20_000)).is_empty());
}

#[test]
fn the_status_follows_the_queue_depth_debounced() {
    let tuning = Tuning { status_min_interval_ms: 1_000, status_refresh_ms: 60_000, ..Tuning::default() };
    let mut h = Harness::with_tuning(tuning);
    h.link_up();
    h.tick(2_000);
    let envelope = h.fleet.run(&Fleet::job(1), 1);
    let actions = h.deliver_job(&envelope);
    assert_eq!(statuses(&actions).iter().map(|s| s.queue_depth).collect::<Vec<_>>(), vec![1]);
    // A second change within the interval waits for a tick after it.
    let envelope = h.fleet.run(&Fleet::job(2), 1);
    assert!(statuses(&h.deliver_job(&envelope)).is_empty());
    assert!(statuses(&h.tick(500)).is_empty());
    assert_eq!(statuses(&h.tick(500)).iter().map(|s| s.queue_depth).collect::<Vec<_>>(), vec![2]);
    // No change: quiet until the refresh.
    assert!(statuses(&h.tick(30_000)).is_empty());
    assert_eq!(statuses(&h.tick(30_000)).len(), 1);
}

#[test]
fn the_last_will_is_the_offline_status() {
    let h = Harness::new();
    let will = h.core.last_will();
    assert_eq!(will.topic, h.fleet.status_topic());
    assert!(will.retain);
    let status: DeviceStatus = from_json(&will.payload).unwrap();
    assert_eq!(status.state, Presence::Offline);
    assert_eq!(status.device_id, h.fleet.me);
}
