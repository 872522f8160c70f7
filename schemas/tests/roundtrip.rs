//! Every wire type survives encode → decode unchanged: postcard for messages, JSON for
//! status documents, and a signature over arbitrary values verifies.
#![allow(clippy::unwrap_used)]

use fleet_schemas::status::{from_json, to_json};
use fleet_schemas::*;
use proptest::prelude::*;

fn postcard_roundtrip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = postcard::to_allocvec(value).unwrap();
    let back: T = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(&back, value);
}

fn json_roundtrip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let back: T = serde_json::from_slice(&serde_json::to_vec(value).unwrap()).unwrap();
    assert_eq!(&back, value);
}

proptest! {
    #[test]
    fn job_spec(v in any::<JobSpec>()) { postcard_roundtrip(&v); json_roundtrip(&v); }

    #[test]
    fn envelope(v in any::<Envelope>()) { postcard_roundtrip(&v); json_roundtrip(&v); }

    #[test]
    fn execution_event(v in any::<ExecutionEvent>()) { postcard_roundtrip(&v); json_roundtrip(&v); }

    #[test]
    fn rejection(v in any::<Rejection>()) { postcard_roundtrip(&v); json_roundtrip(&v); }

    #[test]
    fn module_chunk(v in any::<ModuleChunk>()) {
        postcard_roundtrip(&v);
        prop_assert_eq!(ModuleChunk::decode(&v.encode()).unwrap(), v);
    }

    #[test]
    fn key_rotation(v in any::<KeyRotation>()) { postcard_roundtrip(&v); json_roundtrip(&v); }

    #[test]
    fn event_ack(v in any::<EventAck>()) { postcard_roundtrip(&v); json_roundtrip(&v); }

    #[test]
    fn device_status(v in any::<DeviceStatus>()) {
        json_roundtrip(&v);
        postcard_roundtrip(&v);
        let bytes = to_json(&v);
        if bytes.len() <= fleet_schemas::limits::MAX_STATUS_BYTES {
            prop_assert_eq!(from_json::<DeviceStatus>(&bytes).unwrap(), v);
        }
    }

    #[test]
    fn job_status(v in any::<JobStatus>()) { json_roundtrip(&v); prop_assert_eq!(from_json::<JobStatus>(&to_json(&v)).unwrap(), v); }

    #[test]
    fn controller_status(v in any::<ControllerStatus>()) { json_roundtrip(&v); }

    #[test]
    fn ids(job in any::<JobId>(), device in any::<DeviceId>(), digest in any::<Digest>()) {
        prop_assert_eq!(job.to_hex().parse::<JobId>().unwrap(), job);
        prop_assert_eq!(device.as_str().parse::<DeviceId>().unwrap(), device);
        prop_assert_eq!(digest.to_string().parse::<Digest>().unwrap(), digest);
    }

    #[test]
    fn signed_message_verifies(v in any::<ExecutionEvent>(), seed in any::<[u8; 32]>()) {
        let key = SigningKey::from_bytes(&seed);
        let bytes = SignedMessage::sign(&v, &key).unwrap().to_bytes().unwrap();
        let decoded = SignedMessage::from_bytes(&bytes).unwrap();
        prop_assert_eq!(decoded.decode_body::<ExecutionEvent>().unwrap(), v);
        let sig = ed25519_dalek::Signature::from_bytes(&decoded.signature.0);
        prop_assert!(key.verifying_key().verify_strict(&decoded.body, &sig).is_ok());
    }
}

#[test]
fn status_readers_ignore_unknown_fields() {
    let doc = br#"{"device_id":"gw-1","state":"offline","runtime":"microcontroller","agent_version":"9.9","ts":5,"battery":"low"}"#;
    let status: DeviceStatus = from_json(doc).unwrap();
    assert_eq!(status.state, Presence::Offline);
    assert_eq!(status.gpu, None);
    assert!(status.labels.is_empty());
}

#[test]
fn device_id_rules() {
    assert!(DeviceId::new("gw-001_site-3").is_ok());
    assert_eq!(DeviceId::new(""), Err(fleet_schemas::ids::DeviceIdError::Empty));
    // One rule everywhere: the help's `A-Z a-z 0-9 _ -`, so never a `.` (a level
    // separator on NATS), and never the name of one of the fleet's own clients.
    assert_eq!(DeviceId::new("gw.1"), Err(fleet_schemas::ids::DeviceIdError::BadChar('.')));
    for reserved in fleet_schemas::ids::RESERVED_IDS {
        assert_eq!(DeviceId::new(reserved), Err(fleet_schemas::ids::DeviceIdError::Reserved), "{reserved}");
    }
    assert_eq!(DeviceId::new("a/b"), Err(fleet_schemas::ids::DeviceIdError::BadChar('/')));
    assert_eq!(DeviceId::new("+"), Err(fleet_schemas::ids::DeviceIdError::BadChar('+')));
    assert_eq!(DeviceId::new("x".repeat(65)), Err(fleet_schemas::ids::DeviceIdError::TooLong(65)));
    for not_a_file_name in [".", ".."] {
        assert_eq!(
            DeviceId::new(not_a_file_name),
            Err(fleet_schemas::ids::DeviceIdError::BadChar('.')),
            "{not_a_file_name}"
        );
    }
    for not_a_word in ["-rf", "_x"] {
        assert_eq!(DeviceId::new(not_a_word), Err(fleet_schemas::ids::DeviceIdError::BadStart), "{not_a_word}");
    }
    // The rule holds on decode too: a device id can never smuggle a topic level in.
    let bytes = postcard::to_allocvec("dev/../other").unwrap();
    assert!(postcard::from_bytes::<DeviceId>(&bytes).is_err());
    assert!(serde_json::from_str::<DeviceId>("\"#\"").is_err());
}

#[test]
fn device_config_roundtrips_and_hides_its_secrets() {
    use fleet_schemas::provision::*;
    let config = DeviceConfig {
        version: CONFIG_VERSION,
        device_id: DeviceId::new("gw-1").unwrap(),
        device_key: SecretSeed(Digest([0x5e; 32])),
        root_key: PublicKey([1; 32]),
        job_keys: vec![TrustedKey::new(PublicKey([2; 32]))],
        broker: BrokerEndpoint { host: "127.0.0.1".into(), port: 1883, tls: false },
        username: "gw-1".into(),
        password: "hunter2-but-longer".into(),
        topic_prefix: "fleet".into(),
        runtime: RuntimeClass::Gateway,
        labels: Default::default(),
    };
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<DeviceConfig>(&json).unwrap(), config);
    let bytes = postcard::to_allocvec(&config).unwrap();
    assert_eq!(postcard::from_bytes::<DeviceConfig>(&bytes).unwrap(), config);
    let shown = format!("{config:?}");
    assert!(!shown.contains("5e5e") && !shown.contains("hunter2"), "{shown}");
}
