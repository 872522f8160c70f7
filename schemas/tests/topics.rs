//! Topic names: building and parsing agree, and nothing parsed can be a wildcard.
#![allow(clippy::unwrap_used)]

use fleet_schemas::topics::PrefixError;
use fleet_schemas::*;
use proptest::prelude::*;

#[test]
fn default_names() {
    let t = Topics::default();
    let d = DeviceId::new("gw-1").unwrap();
    assert_eq!(t.device_jobs(&d), "fleet/devices/gw-1/jobs");
    assert_eq!(t.device_events(&d), "fleet/devices/gw-1/events");
    assert_eq!(t.device_acks(&d), "fleet/devices/gw-1/acks");
    assert_eq!(t.device_status(&d), "fleet/devices/gw-1/status");
    assert_eq!(t.job_status(&JobId([0xab; 16])), "fleet/jobs/abababababababababababababababab/status");
    assert_eq!(t.controller_status(), "fleet/controller/status");
    assert_eq!(t.keys(), "fleet/keys");
    assert_eq!(t.module_chunk(&Digest([1; 32]), 7), format!("fleet/modules/{}/chunks/7", "01".repeat(32)));
    assert_eq!(t.all_device_events(), "fleet/devices/+/events");
}

#[test]
fn custom_prefix() {
    let t = Topics::new("site3/fleet").unwrap();
    assert_eq!(t.keys(), "site3/fleet/keys");
    assert_eq!(t.parse("site3/fleet/keys"), Some(Topic::Keys));
    assert_eq!(t.parse("fleet/keys"), None);
    for bad in ["", "a//b", "a/+", "#", "a/", "/a", "sp ace", "../x", "site.3/fleet"] {
        assert_eq!(Topics::new(bad), Err(PrefixError(bad.into())), "{bad:?}");
    }
}

#[test]
fn parse_refuses_strangers() {
    let t = Topics::default();
    for topic in [
        "fleet/devices/+/jobs",
        "fleet/devices/#",
        "fleet/devices/gw-1/jobs/extra",
        "fleet/devices/gw-1/other",
        "fleet/jobs/nothex/status",
        "fleet/modules/abc/chunks/1",
        "fleetx/keys",
        "fleet",
        "other/devices/gw-1/jobs",
        &format!("fleet/modules/{}/chunks/1/2", "01".repeat(32)),
        &format!("fleet/modules/{}/chunks/-1", "01".repeat(32)),
        // Only the canonical spelling of a name parses: one topic, one meaning.
        &format!("fleet/modules/{}/chunks/01", "01".repeat(32)),
        &format!("fleet/modules/{}/chunks/1", "AB".repeat(32)),
        "fleet/jobs/ABABABABABABABABABABABABABABABAB/status",
        "fleet/devices/../jobs",
    ] {
        assert_eq!(t.parse(topic), None, "{topic}");
    }
}

proptest! {
    #[test]
    fn build_then_parse(device in any::<DeviceId>(), job in any::<JobId>(), hash in any::<Digest>(), index in any::<u32>()) {
        let t = Topics::default();
        let (jobs, events, acks, status) =
            (t.device_jobs(&device), t.device_events(&device), t.device_acks(&device), t.device_status(&device));
        prop_assert_eq!(t.parse(&jobs), Some(Topic::DeviceJobs(device.as_str())));
        prop_assert_eq!(t.parse(&events), Some(Topic::DeviceEvents(device.as_str())));
        prop_assert_eq!(t.parse(&acks), Some(Topic::DeviceAcks(device.as_str())));
        prop_assert_eq!(t.parse(&status), Some(Topic::DeviceStatus(device.as_str())));
        let job_topic = t.job_status(&job);
        let job_hex = job.to_hex();
        prop_assert_eq!(t.parse(&job_topic), Some(Topic::JobStatus(job_hex.as_str())));
        let chunk = t.module_chunk(&hash, index);
        let parsed = t.parse(&chunk);
        let hash_hex = hash.to_hex();
        let index_text = index.to_string();
        prop_assert_eq!(parsed, Some(Topic::ModuleChunk { module: hash_hex.as_str(), index: index_text.as_str() }));
    }

    #[test]
    fn parse_never_panics_and_never_yields_wildcards(topic in ".{0,80}") {
        if let Some(Topic::DeviceJobs(id) | Topic::DeviceEvents(id) | Topic::DeviceStatus(id) | Topic::DeviceAcks(id)) = Topics::default().parse(&topic) {
            prop_assert!(DeviceId::new(id).is_ok());
        }
    }
}
