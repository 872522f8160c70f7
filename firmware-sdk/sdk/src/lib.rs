//! # fleet-firmware-sdk: the fleet agent's firmware, minus the board
//!
//! The firmware is the same program on every microcontroller; only how bytes move, how
//! time passes and where flash lives differ. So, as in embedded-hal and embassy, this
//! crate names those differences as traits and builds everything else on them, and a
//! board crate (`boards/<board>/`) only implements the traits:
//!
//! | boundary | trait | a board gives |
//! |---|---|---|
//! | the link to the broker | [`transport::Transport`] (`embedded-io-async` `Read + Write`) | a UART, a TCP socket of a modem or Wi-Fi stack |
//! | time | [`clock::Clock`] | a monotonic millisecond counter (SysTick, RTC) |
//! | persistence | `embedded-storage-async` `NorFlash` | internal flash, a SPI NOR chip, a file in QEMU |
//!
//! On those the crate builds the parts every board shares:
//!
//! | module | what |
//! |---|---|
//! | [`layout`] | where the config block and the store live in flash |
//! | [`config`] | the provisioned [`DeviceConfig`](fleet_schemas::provision::DeviceConfig), read from its config block |
//! | [`store`] | a power-fail-safe key-value store (sequential-storage map) for small values and counters |
//! | [`heap`] | the global allocator, with a high-water mark for the size budget |
//! | [`journal`] | the agent core's durable state: a power-fail-safe log of its `Persist` batches |
//! | [`mqtt`] | an MQTT 3.1.1 client session (sans-IO, on the `mqttrs` codec) and its driver: PUBACK only when the agent says so |
//! | [`agent`] | the shell around `fleet-agent-core`: performs its actions, runs jobs on wasmi (`fleet-executor`) |
//! | [`exec`] | a minimal executor: the firmware is one task, polled in a loop |
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod agent;
pub mod clock;
pub mod config;
pub mod exec;
pub mod heap;
pub mod inputs;
pub mod journal;
pub mod layout;
pub mod mqtt;
pub mod store;
pub mod transport;
