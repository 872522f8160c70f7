//! Firmware check 3: the device joins the fleet over MQTT through its UART.
//!
//! Reads the provisioned config block from flash, connects to the broker through
//! UART0 (QEMU: `-serial tcp:127.0.0.1:PORT`) with the config's username and password
//! and a last-will, subscribes to its jobs topic and publishes its retained online
//! status. It then waits for one message on the jobs topic, verifies it as a signed
//! envelope with the provisioned job keys, records the replay state in the store, and
//! exits 0 if it verified. Exiting drops the link without a DISCONNECT, so the broker
//! publishes the last-will: the retained status turns offline.
//!
//! This is a bring-up image: the agent proper (queue, execution, events) is
//! `fleet-agent-core`, to be driven by the same link.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use fleet_board_mps2_an386::flash::{DEFAULT_FILE, HostFileFlash};
use fleet_board_mps2_an386::{self as board, Board, LAYOUT, entry, semihost};
use fleet_firmware_sdk::clock::{Clock, sleep_until};
use fleet_firmware_sdk::config::read_config;
use fleet_firmware_sdk::exec::{Either, block_on, select};
use fleet_firmware_sdk::mqtt::{Incoming, KEEP_ALIVE_SECS, Link, SessionPlan};
use fleet_firmware_sdk::store::{Key, Store};
use fleet_schemas::{KeyRing, ReplayState, Trusted, verify_envelope};
use rust_mqtt::buffer::AllocBuffer;

#[entry]
fn main() -> ! {
    let Some(board) = board::init() else {
        semihost::exit(false);
    };
    let result = block_on(run(board));
    let heap = board::heap_stats();
    semihost::println(format_args!("heap: peak {} of {} bytes", heap.peak, heap.size));
    match result {
        Ok(seq) => {
            semihost::println(format_args!("job: verified seq {seq}"));
            semihost::exit(true)
        }
        Err(error) => {
            semihost::eprintln(format_args!("mqtt: {error}"));
            semihost::exit(false)
        }
    }
}

async fn run(board: Board) -> Result<u64, String> {
    let Board { uart, clock } = board;
    let mut flash = HostFileFlash::open(DEFAULT_FILE, LAYOUT.len() as usize).map_err(|e| format!("flash: {e:?}"))?;
    let config = read_config(&mut flash, LAYOUT.config.clone()).await.map_err(|e| format!("config: {e}"))?;
    semihost::println(format_args!("config: device {} user {}", config.device_id, config.username));
    let trusted: Vec<Trusted> = config.job_keys.iter().filter_map(|k| Trusted::new(&k.public_key)).collect();
    let ring = KeyRing::new(trusted).ok_or("config: too many job keys")?;
    let mut store = Store::new(flash, LAYOUT.store.clone()).map_err(|e| format!("store: {e}"))?;
    let mut replay: ReplayState =
        store.get_value(Key::Replay).await.map_err(|e| format!("store: {e}"))?.unwrap_or_default();

    let plan = SessionPlan::new(&config, env!("CARGO_PKG_VERSION"), clock.unix_time().unwrap_or(0))
        .map_err(|e| format!("{e}"))?;
    let mut buffer = AllocBuffer;
    let mut link = Link::new(&mut buffer);
    link.open(uart, &plan).await.map_err(|e| format!("connect: {e}"))?;
    semihost::println(format_args!("mqtt: online as {}, subscribed to {}", plan.client_id, plan.jobs_topic));

    let ping_every = u64::from(KEEP_ALIVE_SECS) * 1000 / 2;
    let mut next_ping = clock.now_ms() + ping_every;
    loop {
        match select(link.poll(&plan), sleep_until(&clock, next_ping)).await {
            Either::First(Ok(Incoming::Job(bytes))) => {
                match verify_envelope(&bytes, &ring, &config.device_id, clock.unix_time(), &replay) {
                    Ok(verified) => {
                        replay.accept(&verified.envelope);
                        store.put_value(Key::Replay, &replay).await.map_err(|e| format!("store: {e}"))?;
                        return Ok(verified.envelope.seq);
                    }
                    Err(rejection) => semihost::println(format_args!("job: rejected: {rejection}")),
                }
            }
            Either::First(Ok(Incoming::Other)) => {}
            Either::First(Err(error)) => return Err(format!("link: {error}")),
            Either::Second(()) => {
                link.ping().await.map_err(|e| format!("ping: {e}"))?;
                next_ping = clock.now_ms() + ping_every;
            }
        }
    }
}
