//! # fleet-hil: the whole fleet, for real, under injected faults
//!
//! Unit tests prove each crate's rules with plain function calls; this crate proves the
//! fleet keeps them when it runs the way fleets fail: links that drop mid-job, a broker
//! or controller that restarts during a rollout, a device that loses power, bytes that
//! someone forged. So nothing here is simulated: the harness starts the **real
//! binaries** (`fleetctl serve`, `fleet-agent`, QEMU with the firmware) as child
//! processes, provisions every device through `fleetctl device provision` as an
//! operator would, and reads the outcome where an operator reads it (`fleetctl job
//! status --json`) and where the devices and dashboards read it (the retained MQTT
//! topics).
//!
//! ```text
//!                       ┌──────────── Fleet (temp dir) ─────────────┐
//!  fleetctl job push ─▶ │ fleetctl serve ◀─ embedded broker :port ◀─┼── FaultProxy ◀── fleet-agent  (dev-01)
//!  fleetctl job status  │   data/ (SQLite, keys)                    ├── FaultProxy ◀── fleet-agent  (dev-02)
//!                       │                                           └── FaultProxy ◀── QEMU board   (mcu-01)
//!  MqttClient (controller identity): retained status, events, injected envelopes
//! ```
//!
//! Every device reaches the broker through its own [`FaultProxy`], which is how a test
//! cuts, stalls, slows, resets or half-closes one device's link without touching the
//! others or the device itself.
//!
//! | module | what |
//! |---|---|
//! | [`fleet`] | [`Fleet`]: a temp dir, the controller, devices and their proxies, `fleetctl` |
//! | [`controller`] | `fleetctl serve` as a child process (start, SIGKILL, restart on the same data dir) |
//! | [`agent`] | [`LinuxAgent`]: `fleet-agent` on its own state dir (start, SIGKILL, restart) |
//! | [`board`] | the [`Board`] trait, [`QemuBoard`] (mps2-an386), [`CommandBoard`] for real hardware |
//! | [`device`] | [`Device`]: what a scenario may do to any device, agent or board |
//! | [`proxy`] | [`FaultProxy`]: cut, black-hole, delay, throttle, reset, half-open, restore |
//! | [`mqtt`] | [`MqttClient`]: observe retained topics, inject messages, act as a device |
//! | [`forge`] | envelopes for the attacks: forged, replayed, expired, misdirected |
//! | [`mosquitto`] | an external broker, for restarting the broker apart from the controller |
//! | [`records`] | the controller's JSON records (`job status --json`, `device list --json`) |
//! | [`process`] | child processes with captured logs and death signals |
//! | [`bins`] | finding (and, for the demo, building) the fleet's binaries |
//! | [`report`] | the scenario summary table |
//! | [`wait`] | polling with hang guards (never a timed assertion) |

pub mod agent;
pub mod bins;
pub mod board;
pub mod controller;
pub mod device;
pub mod error;
pub mod fleet;
pub mod forge;
pub mod mosquitto;
pub mod mqtt;
pub mod process;
pub mod proxy;
pub mod records;
pub mod report;
pub mod runtime;
pub mod wait;

pub use agent::LinuxAgent;
pub use board::{Board, CommandBoard, QemuBoard};
pub use device::{Device, DeviceKind};
pub use error::{HarnessError, Result};
pub use fleet::{BrokerMode, Fleet, FleetOptions, JobRequest};
pub use mqtt::MqttClient;
pub use proxy::{Direction, Fault, FaultProxy};
pub use records::{DeviceRecord, ExecutionRecord, JobRecord};
