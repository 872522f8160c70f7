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

/// The magic that opens a config block.
pub const CONFIG_BLOCK_MAGIC: [u8; 4] = *b"FLTC";
/// The config block's format.
pub const CONFIG_BLOCK_FORMAT: u16 = 1;
/// The config block header's size in bytes.
pub const CONFIG_BLOCK_HEADER_LEN: usize = 16;

/// CRC-32/ISO-HDLC (the zlib and Ethernet CRC), the config block's checksum.
pub const CONFIG_BLOCK_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// What is written at the start of a microcontroller's config partition so the
/// firmware knows who it is: `FLTC`, the block format (u16 LE), reserved (u16), the
/// payload's length (u32 LE) and CRC-32/ISO-HDLC (u32 LE), then the payload, the
/// postcard encoding of `config`.
///
/// One encoder for everyone who writes a block: `fleetctl device provision --kind mcu`
/// (which flashes it), the firmware's tests, and the hil harness.
pub fn config_block(config: &DeviceConfig) -> Result<Vec<u8>, postcard::Error> {
    let payload = postcard::to_allocvec(config)?;
    let len = u32::try_from(payload.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    let mut block = Vec::with_capacity(CONFIG_BLOCK_HEADER_LEN + payload.len());
    block.extend_from_slice(&CONFIG_BLOCK_MAGIC);
    block.extend_from_slice(&CONFIG_BLOCK_FORMAT.to_le_bytes());
    block.extend_from_slice(&0u16.to_le_bytes());
    block.extend_from_slice(&len.to_le_bytes());
    block.extend_from_slice(&CONFIG_BLOCK_CRC.checksum(&payload).to_le_bytes());
    block.extend_from_slice(&payload);
    Ok(block)
}

#[cfg(test)]
mod block_tests {
    use super::*;

    #[test]
    fn a_block_carries_the_config_its_header_describes() {
        let config = DeviceConfig {
            version: CONFIG_VERSION,
            device_id: DeviceId::new("mcu-1").unwrap_or_else(|e| panic!("{e}")),
            device_key: SecretSeed(crate::ids::Digest([1; 32])),
            root_key: PublicKey([2; 32]),
            job_keys: Vec::new(),
            broker: BrokerEndpoint { host: "10.0.0.5".into(), port: 1883, tls: false },
            username: "mcu-1".into(),
            password: "secret".into(),
            topic_prefix: "fleet".into(),
            runtime: RuntimeClass::Microcontroller,
            labels: BTreeMap::new(),
        };
        let block = config_block(&config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(block[..4], CONFIG_BLOCK_MAGIC);
        assert_eq!(u16::from_le_bytes([block[4], block[5]]), CONFIG_BLOCK_FORMAT);
        let len = u32::from_le_bytes([block[8], block[9], block[10], block[11]]) as usize;
        let crc = u32::from_le_bytes([block[12], block[13], block[14], block[15]]);
        let payload = &block[CONFIG_BLOCK_HEADER_LEN..];
        assert_eq!(payload.len(), len);
        assert_eq!(CONFIG_BLOCK_CRC.checksum(payload), crc);
        let decoded: DeviceConfig = postcard::from_bytes(payload).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.device_id, config.device_id);
        assert_eq!(decoded.password, config.password);
        assert_eq!(decoded.broker, config.broker);
    }

    #[test]
    fn the_checksum_is_crc32_iso_hdlc() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(CONFIG_BLOCK_CRC.checksum(b"123456789"), 0xCBF4_3926);
    }
}
