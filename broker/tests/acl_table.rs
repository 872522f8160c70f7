//! The ACL as a pure function: a table of every rule (allowed and refused, for a device
//! and the controller, under the default and a two-level prefix), then properties over
//! arbitrary names that pin down what a device can ever be allowed.

#![allow(clippy::unwrap_used)]

use fleet_broker::Identity;
use fleet_broker::acl::{Action, Decision, Denial, check};
use fleet_schemas::{DeviceId, Topics};
use proptest::prelude::*;

const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn device(id: &str) -> Identity {
    Identity::Device(DeviceId::new(id).unwrap())
}

fn deny(d: Denial) -> Decision {
    Decision::Deny(d)
}

const ALLOW: Decision = Decision::Allow;

/// (action, expected) for device `d1` under prefix `p`.
fn device_table(p: &str) -> Vec<(Action<'static>, Decision)> {
    let s = |t: String| -> &'static str { Box::leak(t.into_boxed_str()) };
    use Action::*;
    use Denial::*;
    vec![
        // Connect: the client id is the device id, exactly.
        (Connect { client_id: "d1" }, ALLOW),
        (Connect { client_id: "d2" }, deny(ClientIdNotDeviceId)),
        (Connect { client_id: "" }, deny(ClientIdNotDeviceId)),
        (Connect { client_id: "D1" }, deny(ClientIdNotDeviceId)),
        (Connect { client_id: "d1 " }, deny(ClientIdNotDeviceId)),
        // Publish: own events and status only.
        (Publish(s(format!("{p}/devices/d1/events"))), ALLOW),
        (Publish(s(format!("{p}/devices/d1/status"))), ALLOW),
        (Publish(s(format!("{p}/devices/d2/events"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/devices/d2/status"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/devices/d1/jobs"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/devices/d2/jobs"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/devices/d1/acks"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/devices/d1/events/x"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/devices/d1/eventsx"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/devices/d1"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}//devices/d1/events"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/keys"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/controller/status"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/jobs/00112233445566778899aabbccddeeff/status"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/modules/{HASH}/chunks/0"))), deny(NotOwnPublishTopic)),
        (Publish(s(format!("x{p}/devices/d1/events"))), deny(NotOwnPublishTopic)),
        (Publish("devices/d1/events"), deny(NotOwnPublishTopic)),
        (Publish(s(format!("{p}/devices/+/events"))), deny(InvalidTopic)),
        (Publish(s(format!("{p}/devices/d1/#"))), deny(InvalidTopic)),
        (Publish(s(format!("{p}/devices/d1/events\0"))), deny(InvalidTopic)),
        (Publish(""), deny(InvalidTopic)),
        // Last-will: own status only.
        (Will(s(format!("{p}/devices/d1/status"))), ALLOW),
        (Will(s(format!("{p}/devices/d1/events"))), deny(WillNotOwnStatus)),
        (Will(s(format!("{p}/devices/d2/status"))), deny(WillNotOwnStatus)),
        (Will(s(format!("{p}/devices/+/status"))), deny(InvalidTopic)),
        // Subscribe: own jobs and acks, keys, controller status, module chunks.
        (Subscribe(s(format!("{p}/devices/d1/jobs"))), ALLOW),
        (Subscribe(s(format!("{p}/devices/d1/acks"))), ALLOW),
        (Subscribe(s(format!("{p}/keys"))), ALLOW),
        (Subscribe(s(format!("{p}/controller/status"))), ALLOW),
        (Subscribe(s(format!("{p}/modules/{HASH}/chunks/0"))), ALLOW),
        (Subscribe(s(format!("{p}/modules/{HASH}/chunks/4294967295"))), ALLOW),
        (Subscribe(s(format!("{p}/modules/{HASH}/chunks/+"))), ALLOW),
        (Subscribe(s(format!("{p}/modules/{HASH}/chunks/#"))), ALLOW),
        (Subscribe(s(format!("{p}/devices/d2/jobs"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/devices/d2/acks"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/devices/d1/events"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/devices/d1/status"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/devices/d2/events"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/devices/+/jobs"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/devices/d1/+"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/devices/d1/#"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/devices/#"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/#"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/+"))), deny(NotReadableByDevice)),
        (Subscribe("#"), deny(NotReadableByDevice)),
        (Subscribe("+/devices/d1/jobs"), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/jobs/00112233445566778899aabbccddeeff/status"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/modules/+/chunks/+"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/modules/+/chunks/0"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/modules/#"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/modules/{HASH}/#"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/modules/{HASH}/+/0"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/modules/{HASH}/chunks/+/x"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/modules/abc/chunks/+"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/modules/{HASH}/chunks/x"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("$share/g/{p}/devices/d1/jobs"))), deny(NotReadableByDevice)),
        (Subscribe(s(format!("{p}/modules/{HASH}/chunks/+1"))), deny(InvalidFilter)),
        (Subscribe(s(format!("{p}/devices/d1/jobs#"))), deny(InvalidFilter)),
        (Subscribe(s(format!("{p}/#/jobs"))), deny(InvalidFilter)),
        (Subscribe(""), deny(InvalidFilter)),
    ]
}

/// (action, expected) for the controller under prefix `p`.
fn controller_table(p: &str) -> Vec<(Action<'static>, Decision)> {
    let s = |t: String| -> &'static str { Box::leak(t.into_boxed_str()) };
    use Action::*;
    use Denial::*;
    vec![
        (Connect { client_id: "controller" }, ALLOW),
        (Connect { client_id: "d1" }, ALLOW),
        (Connect { client_id: "" }, ALLOW),
        (Connect { client_id: "ctl/1" }, deny(ClientIdInvalid)),
        (Connect { client_id: "ctl+" }, deny(ClientIdInvalid)),
        (Connect { client_id: "$ctl" }, deny(ClientIdInvalid)),
        (Publish(s(format!("{p}/devices/d1/jobs"))), ALLOW),
        (Publish(s(format!("{p}/devices/d1/acks"))), ALLOW),
        (Publish(s(format!("{p}/keys"))), ALLOW),
        (Publish(s(format!("{p}/controller/status"))), ALLOW),
        (Publish(s(format!("{p}/modules/{HASH}/chunks/3"))), ALLOW),
        (Publish(s(format!("{p}/anything/else"))), ALLOW),
        (Publish(p_static(p)), deny(OutsidePrefix)),
        (Publish("elsewhere/keys"), deny(OutsidePrefix)),
        (Publish(s(format!("{p}x/keys"))), deny(OutsidePrefix)),
        (Publish(s(format!("{p}/devices/+/jobs"))), deny(InvalidTopic)),
        (Will(s(format!("{p}/controller/status"))), ALLOW),
        (Will("elsewhere"), deny(OutsidePrefix)),
        (Subscribe(s(format!("{p}/devices/+/events"))), ALLOW),
        (Subscribe(s(format!("{p}/devices/+/status"))), ALLOW),
        (Subscribe(s(format!("{p}/#"))), ALLOW),
        (Subscribe(s(format!("$share/ingest/{p}/devices/+/events"))), ALLOW),
        (Subscribe("#"), deny(OutsidePrefix)),
        (Subscribe("+/devices/+/events"), deny(OutsidePrefix)),
        (Subscribe("$share/ingest/#"), deny(OutsidePrefix)),
        (Subscribe(s(format!("$share//{p}/#"))), deny(InvalidFilter)),
        (Subscribe(s(format!("{p}/devices/#/events"))), deny(InvalidFilter)),
    ]
}

/// (action, expected) for an observer under prefix `p`.
fn observer_table(p: &str) -> Vec<(Action<'static>, Decision)> {
    let s = |t: String| -> &'static str { Box::leak(t.into_boxed_str()) };
    use Action::*;
    use Denial::*;
    vec![
        (Connect { client_id: "mosq-1234" }, ALLOW),
        (Connect { client_id: "watch/1" }, deny(ClientIdInvalid)),
        // Every status document, alone or all at once; nothing else.
        (Subscribe(s(format!("{p}/+/+/status"))), ALLOW),
        (Subscribe(s(format!("{p}/devices/+/status"))), ALLOW),
        (Subscribe(s(format!("{p}/devices/d1/status"))), ALLOW),
        (Subscribe(s(format!("{p}/jobs/+/status"))), ALLOW),
        (Subscribe(s(format!("{p}/controller/status"))), ALLOW),
        (Subscribe(s(format!("{p}/#"))), deny(NotAStatusFilter)),
        (Subscribe(s(format!("{p}/devices/#"))), deny(NotAStatusFilter)),
        (Subscribe(s(format!("{p}/devices/+/+"))), deny(NotAStatusFilter)),
        (Subscribe(s(format!("{p}/devices/+/events"))), deny(NotAStatusFilter)),
        (Subscribe(s(format!("{p}/devices/d1/jobs"))), deny(NotAStatusFilter)),
        (Subscribe(s(format!("{p}/+/+/+"))), deny(NotAStatusFilter)),
        (Subscribe(s(format!("{p}/keys"))), deny(NotAStatusFilter)),
        (Subscribe(s(format!("{p}/modules/{HASH}/chunks/+"))), deny(NotAStatusFilter)),
        (Subscribe(s(format!("$share/g/{p}/+/+/status"))), deny(NotAStatusFilter)),
        (Subscribe("#"), deny(NotAStatusFilter)),
        // It publishes nothing, not even a last-will.
        (Publish(s(format!("{p}/devices/d1/status"))), deny(ObserverPublishes)),
        (Publish(s(format!("{p}/controller/status"))), deny(ObserverPublishes)),
        (Will(s(format!("{p}/devices/d1/status"))), deny(ObserverPublishes)),
    ]
}

#[test]
fn observer_rules_table() {
    for prefix in ["fleet", "site3/fleet"] {
        let topics = Topics::new(prefix).unwrap();
        for (action, expected) in observer_table(prefix) {
            assert_eq!(check(&topics, &Identity::Observer, action), expected, "prefix {prefix}, observer, {action:?}");
        }
    }
}

fn p_static(p: &str) -> &'static str {
    Box::leak(p.to_string().into_boxed_str())
}

#[test]
fn device_rules_table() {
    for prefix in ["fleet", "site3/fleet"] {
        let topics = Topics::new(prefix).unwrap();
        for (action, expected) in device_table(prefix) {
            assert_eq!(check(&topics, &device("d1"), action), expected, "prefix {prefix}, device d1, {action:?}");
        }
    }
}

#[test]
fn controller_rules_table() {
    for prefix in ["fleet", "site3/fleet"] {
        let topics = Topics::new(prefix).unwrap();
        for (action, expected) in controller_table(prefix) {
            assert_eq!(
                check(&topics, &Identity::Controller, action),
                expected,
                "prefix {prefix}, controller, {action:?}"
            );
        }
    }
}

/// Names built from the pieces that matter (prefixes, device ids, leaves, wildcards,
/// a module hash, separators), so random strings hit the interesting cases often.
fn name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("fleet".to_string()),
        Just("site3".to_string()),
        Just("devices".to_string()),
        Just("d1".to_string()),
        Just("d2".to_string()),
        Just("events".to_string()),
        Just("status".to_string()),
        Just("jobs".to_string()),
        Just("acks".to_string()),
        Just("keys".to_string()),
        Just("controller".to_string()),
        Just("modules".to_string()),
        Just("chunks".to_string()),
        Just(HASH.to_string()),
        Just("+".to_string()),
        Just("#".to_string()),
        Just("$share".to_string()),
        Just("".to_string()),
        "[0-9]{1,3}",
        "[a-z+#/]{1,4}",
    ];
    proptest::collection::vec(piece, 1..8).prop_map(|pieces| pieces.join("/"))
}

fn device_id() -> impl Strategy<Value = DeviceId> {
    prop_oneof![Just("d1".to_string()), Just("d2".to_string()), "[A-Za-z0-9][A-Za-z0-9_-]{0,11}"]
        .prop_map(|s| DeviceId::new(s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the name, a device may publish exactly two topics: its own events and status.
    #[test]
    fn device_publishes_only_its_own_two_topics(id in device_id(), topic in name()) {
        let topics = Topics::default();
        let allowed = check(&topics, &Identity::Device(id.clone()), Action::Publish(&topic)).is_allowed();
        let own = topic == topics.device_events(&id) || topic == topics.device_status(&id);
        prop_assert_eq!(allowed, own);
        let will_allowed = check(&topics, &Identity::Device(id.clone()), Action::Will(&topic)).is_allowed();
        prop_assert_eq!(will_allowed, topic == topics.device_status(&id));
    }

    /// A device's own topics are never another device's: a device's allowed publishes
    /// and subscriptions never name a different device.
    #[test]
    fn devices_never_reach_each_other(a in device_id(), b in device_id()) {
        prop_assume!(a != b);
        let topics = Topics::default();
        let dev = Identity::Device(a.clone());
        for t in [topics.device_events(&b), topics.device_status(&b), topics.device_jobs(&b), topics.device_acks(&b)] {
            prop_assert!(!check(&topics, &dev, Action::Publish(&t)).is_allowed(), "publish {}", t);
            prop_assert!(!check(&topics, &dev, Action::Subscribe(&t)).is_allowed(), "subscribe {}", t);
        }
        let connect_as = |client_id: &str| check(&topics, &dev, Action::Connect { client_id }).is_allowed();
        prop_assert!(!connect_as(b.as_str()), "client id {}", b);
        prop_assert!(connect_as(a.as_str()), "client id {}", a);
        for t in [topics.device_jobs(&a), topics.device_acks(&a)] {
            prop_assert!(check(&topics, &dev, Action::Subscribe(&t)).is_allowed(), "subscribe {}", t);
        }
    }

    /// A filter a device may subscribe to holds a wildcard only as the last level of one
    /// module's chunks, and every filter it may use is under the prefix.
    #[test]
    fn device_wildcards_only_over_one_modules_chunks(id in device_id(), filter in name()) {
        let topics = Topics::default();
        if check(&topics, &Identity::Device(id.clone()), Action::Subscribe(&filter)).is_allowed() {
            prop_assert!(filter.starts_with("fleet/"));
            if filter.contains(['+', '#']) {
                let levels: Vec<&str> = filter.split('/').collect();
                prop_assert_eq!(levels.len(), 5, "{}", filter);
                prop_assert_eq!(&levels[..4], &["fleet", "modules", HASH, "chunks"][..]);
                prop_assert!(levels[4] == "+" || levels[4] == "#");
            } else {
                let own = [topics.device_jobs(&id), topics.device_acks(&id), topics.keys(), topics.controller_status()];
                let chunk = filter.starts_with(&format!("fleet/modules/{HASH}/chunks/"));
                prop_assert!(own.contains(&filter) || chunk, "{}", filter);
            }
        }
    }

    /// Whatever the name, an observer publishes nothing, and every filter it may
    /// subscribe to matches only status documents.
    #[test]
    fn an_observer_reads_only_status_documents(filter in name()) {
        let topics = Topics::default();
        prop_assert!(!check(&topics, &Identity::Observer, Action::Publish(&filter)).is_allowed());
        if check(&topics, &Identity::Observer, Action::Subscribe(&filter)).is_allowed() {
            let levels: Vec<&str> = filter.split('/').collect();
            prop_assert!(
                levels == ["fleet", "controller", "status"]
                    || (levels.len() == 4 && levels[3] == "status" && matches!(levels[1], "devices" | "jobs" | "+")),
                "{}",
                filter
            );
        }
    }

    /// The controller may publish a name iff it is a valid topic name under the prefix.
    #[test]
    fn controller_publishes_exactly_under_the_prefix(topic in name()) {
        let topics = Topics::default();
        let allowed = check(&topics, &Identity::Controller, Action::Publish(&topic)).is_allowed();
        prop_assert_eq!(allowed, topic.starts_with("fleet/") && !topic.contains(['+', '#']));
    }

    /// Any string at all: the ACL answers (no panic), and never allows a device a name
    /// outside the prefix.
    #[test]
    fn arbitrary_strings(id in device_id(), any in ".{0,80}") {
        let topics = Topics::default();
        for action in [Action::Publish(&any), Action::Will(&any), Action::Subscribe(&any)] {
            if check(&topics, &Identity::Device(id.clone()), action).is_allowed() {
                prop_assert!(any.starts_with("fleet/"));
            }
        }
        let _ = check(&topics, &Identity::Controller, Action::Connect { client_id: &any });
    }
}
