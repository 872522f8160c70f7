//! The fleet agent: `fleet-agent-core` on the board, end to end.
//!
//! Reads the provisioned config block from flash, replays the journal (the agent's
//! durable state) from the store partition, rebuilds the agent core, and runs it: MQTT
//! 3.1.1 over UART0 (QEMU bridges it to the broker with a reconnecting socket chardev),
//! jobs on wasmi, every `Persist` appended to the journal before anything after it.
//!
//! It runs until the power goes (QEMU is killed) and reports on the semihosting console:
//! `config:`, `agent:`, `mqtt:`, `job:` and `heap:` lines, which the QEMU tests read.
//! It exits (status 1) only when it cannot keep the durability contract: no config, a
//! journal it cannot read or write, or a config that makes no agent.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::convert::Infallible;

use fleet_board_mps2_an386::clock::ExecutorClock;
use fleet_board_mps2_an386::flash::{DEFAULT_FILE, HostFileFlash};
use fleet_board_mps2_an386::host_input::{HostFileInputs, READINGS_FILE};
use fleet_board_mps2_an386::{self as board, Board, LAYOUT, entry, semihost};
use fleet_executor::{ExecutorConfig, WasmiExecutor};
use fleet_firmware_sdk::agent::{Agent, Console, Parts, Settings};
use fleet_firmware_sdk::config::read_config;
use fleet_firmware_sdk::exec::block_on;
use fleet_firmware_sdk::heap::HeapStats;
use fleet_firmware_sdk::journal::Journal;

/// Wasm memory a job may have, in 64 KiB pages: what the heap can give it next to the
/// agent's own state (every example job needs one).
const JOB_MEMORY_PAGES: u32 = 1;

#[entry]
fn main() -> ! {
    let Some(board) = board::init() else {
        semihost::exit(false);
    };
    let Err(error) = block_on(run(board));
    semihost::eprintln(format_args!("agent: {error}"));
    semihost::exit(false)
}

/// The semihosting console, with the heap's statistics.
struct Semihosting;

impl Console for Semihosting {
    fn line(&self, args: core::fmt::Arguments<'_>) {
        semihost::println(args);
    }

    fn heap(&self) -> Option<HeapStats> {
        Some(board::heap_stats())
    }
}

async fn run(board: Board) -> Result<Infallible, String> {
    let Board { uart, clock } = board;
    let mut flash = HostFileFlash::open(DEFAULT_FILE, LAYOUT.len() as usize).map_err(|e| format!("flash: {e:?}"))?;
    let config = read_config(&mut flash, LAYOUT.config.clone()).await.map_err(|e| format!("config: {e}"))?;
    semihost::println(format_args!("config: device {} user {}", config.device_id, config.username));

    // The SysTick count since boot (host-timed under QEMU) and the device id add to the
    // host's clocks, so two boards booted in the same second draw different incarnations.
    let mut more = board::clock::SysTickClock::now_raw().to_le_bytes().to_vec();
    more.extend_from_slice(config.device_id.as_str().as_bytes());
    let fresh = fleet_schemas::Incarnation(semihost::boot_entropy(&more));
    let settings = Settings::microcontroller(env!("CARGO_PKG_VERSION"), fresh);
    let journal = Journal::open(flash, LAYOUT.store.clone(), settings.max_module_bytes as usize)
        .await
        .map_err(|e| format!("journal: {e}"))?;

    let mut limits = ExecutorConfig::microcontroller(config.device_id.clone());
    limits.default_limits.memory_pages = JOB_MEMORY_PAGES;
    limits.max_limits.memory_pages = JOB_MEMORY_PAGES;
    let executor = WasmiExecutor::new(limits).map_err(|e| format!("executor: {e}"))?.with_clock(ExecutorClock);

    let console = Semihosting;
    // QEMU's mps2-an386 has no sensor on its I2C buses: a host file stands in for one
    // (`host_input`), when it is there at boot. A board with a sensor registers it:
    // BoardInputs::none().add("readings", I2cRegisters::new(bus, 0x48, 0, 2, to_csv)).
    let inputs = HostFileInputs::find(READINGS_FILE);
    let parts = Parts {
        config: &config,
        settings,
        transport: uart,
        journal,
        executor,
        inputs,
        clock: &clock,
        console: &console,
    };
    let agent = Agent::new(parts).map_err(|e| format!("{e}"))?;
    agent.run().await.map_err(|e| format!("{e}"))
}
