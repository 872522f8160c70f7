//! Provisioning for the emulated board: the flash file with a config block, as
//! `fleetctl device provision` plus a flasher would leave a real board's flash.

use std::collections::BTreeMap;
use std::path::Path;

use fleet_firmware_sdk::config::encode_block;
use fleet_schemas::golden::{CONTROLLER_SEED, DEVICE_ID, DEVICE_SEED, ROOT_SEED};
use fleet_schemas::provision::{BrokerEndpoint, CONFIG_VERSION, DeviceConfig, SecretSeed};
use fleet_schemas::rotation::TrustedKey;
use fleet_schemas::signed::public_key_of;
use fleet_schemas::{DeviceId, Digest, RuntimeClass, SigningKey};

/// The board's flash size (`boards/mps2-an386`: one config page and 63 store pages).
pub const FLASH_BYTES: usize = 64 * 4096;

/// The golden device's config (id `gw-001`, trusting the golden controller key), with
/// this broker password.
pub fn golden_device(password: &str, port: u16) -> DeviceConfig {
    let id = DeviceId::new(DEVICE_ID).unwrap_or_else(|e| panic!("golden device id: {e}"));
    DeviceConfig {
        version: CONFIG_VERSION,
        device_id: id.clone(),
        device_key: SecretSeed(Digest(DEVICE_SEED)),
        root_key: public_key_of(&SigningKey::from_bytes(&ROOT_SEED)).1,
        job_keys: vec![TrustedKey::new(public_key_of(&SigningKey::from_bytes(&CONTROLLER_SEED)).1)],
        broker: BrokerEndpoint { host: "127.0.0.1".into(), port, tls: false },
        username: id.as_str().into(),
        password: password.into(),
        topic_prefix: "fleet".into(),
        runtime: RuntimeClass::Microcontroller,
        labels: BTreeMap::from([("site".into(), "qemu".into())]),
    }
}

/// Writes an erased flash file holding `config`'s block in `dir`.
pub fn write_flash(dir: &Path, config: &DeviceConfig) {
    let block = encode_block(config).unwrap_or_else(|e| panic!("config block: {e}"));
    let mut flash = vec![0xffu8; FLASH_BYTES];
    flash[..block.len()].copy_from_slice(&block);
    let path = dir.join("fleet-flash.bin");
    std::fs::write(&path, flash).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
