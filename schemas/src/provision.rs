//! A device's identity and settings, as `fleetctl device provision` writes them.
//!
//! The controller writes one per device; the Linux agent reads it as JSON
//! (`agent.json`), the firmware reads the postcard form from its config block in flash.
//! It is the only secret a device holds (its signing key seed and broker password), so
//! it is written with owner-only permissions and never logged: [`SecretSeed`] and the
//! password print as `<redacted>`.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, PublicKey};
use crate::job::RuntimeClass;
use crate::rotation::TrustedKey;

/// The provisioning format this crate writes and reads.
pub const CONFIG_VERSION: u16 = 1;

/// An ed25519 secret key seed. Prints as `<redacted>`; hex in JSON, raw in postcard.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretSeed(pub crate::ids::Digest);

impl fmt::Debug for SecretSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSeed(<redacted>)")
    }
}

impl SecretSeed {
    /// The signing key of this seed.
    pub fn signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.0.0)
    }
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to use TLS.
    #[serde(default)]
    pub tls: bool,
}

/// Everything a device needs to join the fleet.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// Format version, [`CONFIG_VERSION`].
    pub version: u16,
    /// The device's id.
    pub device_id: DeviceId,
    /// The device's own signing key (signs its events).
    pub device_key: SecretSeed,
    /// The root key: signs key rotations, nothing else.
    pub root_key: PublicKey,
    /// The job-signing keys trusted at first boot (rotations replace them).
    pub job_keys: Vec<TrustedKey>,
    /// The broker.
    pub broker: BrokerEndpoint,
    /// MQTT username (the device id).
    pub username: String,
    /// MQTT password.
    pub password: String,
    /// Topic prefix, default `fleet`.
    pub topic_prefix: String,
    /// Runtime class.
    pub runtime: RuntimeClass,
    /// Labels, matched by job selectors and requirements.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("version", &self.version)
            .field("device_id", &self.device_id)
            .field("device_key", &self.device_key)
            .field("root_key", &self.root_key)
            .field("job_keys", &self.job_keys)
            .field("broker", &self.broker)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("topic_prefix", &self.topic_prefix)
            .field("runtime", &self.runtime)
            .field("labels", &self.labels)
            .finish()
    }
}
