//! The SDK's flash formats on a RAM flash: the config block reads back and rejects
//! damage with a typed reason; the store keeps the latest value across reopen and
//! keeps the previous one when a write is torn.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

mod common;

use common::RamFlash;
use embassy_futures::block_on;
use fleet_firmware_sdk::config::{ConfigError, encode_block, read_config};
use fleet_firmware_sdk::layout::Layout;
use fleet_firmware_sdk::store::{Key, Store};
use fleet_schemas::provision::{BrokerEndpoint, CONFIG_VERSION, DeviceConfig, SecretSeed};
use fleet_schemas::{DeviceId, Digest, PublicKey, ReplayState, RuntimeClass};

const LAYOUT: Layout = Layout::new(4096, 4);

fn config() -> DeviceConfig {
    DeviceConfig {
        version: CONFIG_VERSION,
        device_id: DeviceId::new("mcu-7").unwrap(),
        device_key: SecretSeed(Digest([7; 32])),
        root_key: PublicKey([1; 32]),
        job_keys: vec![],
        broker: BrokerEndpoint { host: "broker".into(), port: 1883, tls: false },
        username: "mcu-7".into(),
        password: "secret".into(),
        topic_prefix: "fleet".into(),
        runtime: RuntimeClass::Microcontroller,
        labels: BTreeMap::new(),
    }
}

fn provisioned() -> RamFlash {
    let mut flash = RamFlash::new(LAYOUT.len() as usize);
    let block = encode_block(&config()).unwrap();
    flash.cells[..block.len()].copy_from_slice(&block);
    flash
}

#[test]
fn config_block_reads_back() {
    let mut flash = provisioned();
    assert_eq!(block_on(read_config(&mut flash, LAYOUT.config.clone())).unwrap(), config());
}

#[test]
fn config_block_damage_is_typed() {
    let mut erased = RamFlash::new(LAYOUT.len() as usize);
    assert_eq!(block_on(read_config(&mut erased, LAYOUT.config.clone())), Err(ConfigError::NotProvisioned));

    let mut flipped = provisioned();
    flipped.cells[20] ^= 0x10;
    assert_eq!(block_on(read_config(&mut flipped, LAYOUT.config.clone())), Err(ConfigError::Checksum));

    let mut huge = provisioned();
    huge.cells[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(block_on(read_config(&mut huge, LAYOUT.config.clone())), Err(ConfigError::TooLarge { .. })));

    let mut other = provisioned();
    other.cells[0] = b'X';
    assert_eq!(block_on(read_config(&mut other, LAYOUT.config.clone())), Err(ConfigError::BadMagic));
}

#[test]
fn store_keeps_latest_value_across_reopen() {
    let flash = RamFlash::new(LAYOUT.len() as usize);
    let mut store = Store::new(flash, LAYOUT.store.clone()).unwrap();
    for seq in 1..=200u64 {
        let replay = ReplayState { last_seq: seq, time_floor: 1_790_000_000 + seq };
        block_on(store.put_value(Key::Replay, &replay)).unwrap();
    }
    let mut reopened = Store::new(store.into_flash(), LAYOUT.store.clone()).unwrap();
    let replay: ReplayState = block_on(reopened.get_value(Key::Replay)).unwrap().unwrap();
    assert_eq!(replay.last_seq, 200);
}

#[test]
fn a_torn_write_keeps_the_previous_value() {
    let mut store = Store::new(RamFlash::new(LAYOUT.len() as usize), LAYOUT.store.clone()).unwrap();
    block_on(store.put(Key::Scratch, &[1; 300])).unwrap();
    let good = store.into_flash();
    for cut in [0, 1, 5, 17, 64, 150, 299] {
        let mut flash = good.clone();
        flash.budget = cut;
        let mut store = Store::new(flash, LAYOUT.store.clone()).unwrap();
        assert!(block_on(store.put(Key::Scratch, &[2; 300])).is_err(), "cut at {cut}");
        let mut flash = store.into_flash();
        flash.budget = usize::MAX;
        let mut store = Store::new(flash, LAYOUT.store.clone()).unwrap();
        assert_eq!(block_on(store.get(Key::Scratch)).unwrap(), Some(vec![1; 300]), "cut at {cut}");
    }
}
