//! What a scenario may do to a device, whatever the device is.
//!
//! Why one trait: a scenario says "power-cycle a third of the fleet" or "keep this
//! device off for the whole rollout", and should not care whether the device is a
//! `fleet-agent` process, a QEMU board or a real board on a bench. Each of those
//! implements [`Device`]; the link to the broker is not part of it, because every device
//! reaches the broker through its own [`crate::FaultProxy`], which the [`crate::Fleet`]
//! owns.

use std::fmt;

use crate::error::Result;
use crate::process::Logs;

/// The kind of device, as `fleetctl device provision --kind` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A Linux gateway running `fleet-agent` (wasmtime).
    Linux,
    /// A microcontroller running the firmware agent (wasmi).
    Mcu,
}

impl DeviceKind {
    /// `linux` or `mcu`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Linux => "linux",
            DeviceKind::Mcu => "mcu",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device under test.
pub trait Device: Send {
    /// Its id (as provisioned).
    fn id(&self) -> &str;

    /// Its kind.
    fn kind(&self) -> DeviceKind;

    /// Powers it on (starts the agent or boots the board) on its existing state: its
    /// store, or its flash, survives from the last run.
    fn start(&mut self) -> Result<()>;

    /// Cuts its power: no flush, no goodbye (`SIGKILL`, QEMU killed, a relay opened).
    fn power_cut(&mut self) -> Result<()>;

    /// Stops it the way an operator would (Ctrl-C): it may say goodbye.
    fn stop(&mut self) -> Result<()>;

    /// Whether it is running.
    fn is_running(&mut self) -> bool;

    /// What it printed (the agent's log, the board's console).
    fn logs(&self) -> &Logs;

    /// Cuts its power and wipes its durable store (a gateway's state directory, a
    /// board's store partition), as a reinstall, a new SD card or an erased flash would;
    /// its provisioned identity stays. Start it again to boot it on the empty store.
    fn wipe_store(&mut self) -> Result<()>;

    /// A power cycle: cut, then on again on the same state.
    fn power_cycle(&mut self) -> Result<()> {
        self.power_cut()?;
        self.start()
    }
}
