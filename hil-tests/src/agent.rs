//! `fleet-agent`, the Linux gateway agent, as a device under test.
//!
//! Why the real binary: what breaks in the field breaks between the parts a unit test
//! replaces (the SQLite store that must survive `SIGKILL`, the reconnect loop, the
//! persistent MQTT session). So this starts `fleet-agent --config DIR/agent.json` exactly
//! as an operator would, on a state directory that outlives the process: a restart after
//! [`Device::power_cut`] finds the same queue and outbox, which is the point.
//!
//! The harness also writes an `agent.toml` beside `agent.json` with a test bench's
//! timers ([`AgentTuning`]): a 5 s keep-alive and fast reconnects, so a dead link is
//! noticed in seconds instead of a minute. These are the agent's documented local
//! settings, not a test mode.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::{FLEET_AGENT, binary};
use crate::device::{Device, DeviceKind};
use crate::error::{Result, io};
use crate::process::{ChildProcess, Logs};

/// The local settings the harness gives every agent (`agent.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTuning {
    /// MQTT keep-alive, seconds (the agent's floor is 5).
    pub keep_alive_secs: u64,
    /// First reconnect delay.
    pub reconnect_min_ms: u64,
    /// Reconnect delay cap.
    pub reconnect_max_ms: u64,
    /// The core's periodic wake-up.
    pub tick_ms: u64,
    /// Republish an unacknowledged event after this long.
    pub resend_after_ms: u64,
}

impl Default for AgentTuning {
    fn default() -> Self {
        Self { keep_alive_secs: 5, reconnect_min_ms: 50, reconnect_max_ms: 1_000, tick_ms: 100, resend_after_ms: 3_000 }
    }
}

impl AgentTuning {
    /// The `agent.toml` text.
    pub fn to_toml(&self) -> String {
        format!(
            "# Written by the fleet-hil harness: a test bench's timers.\n\
             keep_alive_secs = {}\nreconnect_min_ms = {}\nreconnect_max_ms = {}\ntick_ms = {}\nresend_after_ms = {}\n",
            self.keep_alive_secs, self.reconnect_min_ms, self.reconnect_max_ms, self.tick_ms, self.resend_after_ms
        )
    }
}

/// A `fleet-agent` process on its own config and state directory.
#[derive(Debug)]
pub struct LinuxAgent {
    id: String,
    config: PathBuf,
    logs: Logs,
    child: Option<ChildProcess>,
    starts: u32,
}

impl LinuxAgent {
    /// An agent for the device provisioned into `dir` (which holds `agent.json`); writes
    /// `agent.toml` with `tuning`. Not started.
    pub fn new(id: &str, dir: &Path, tuning: &AgentTuning) -> Result<Self> {
        let toml = dir.join("agent.toml");
        std::fs::write(&toml, tuning.to_toml()).map_err(io(format!("cannot write {}", toml.display())))?;
        let logs = Logs::new(&dir.join("agent.log"))?;
        Ok(Self { id: id.to_string(), config: dir.join("agent.json"), logs, child: None, starts: 0 })
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Its state directory (the SQLite store).
    pub fn state_dir(&self) -> PathBuf {
        self.config.parent().map(|dir| dir.join("state")).unwrap_or_default()
    }
}

impl Device for LinuxAgent {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Linux
    }

    fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let mut command = Command::new(binary(FLEET_AGENT)?);
        // ONNX Runtime only where agent.toml names it (scenario s11), not from the
        // environment of whoever runs the harness.
        command.arg("--config").arg(&self.config).env("RUST_LOG", "info").env_remove("ORT_DYLIB_PATH");
        self.child = Some(ChildProcess::spawn(&format!("fleet-agent {}", self.id), command, &self.logs)?);
        self.starts += 1;
        Ok(())
    }

    fn power_cut(&mut self) -> Result<()> {
        match self.child.as_mut() {
            Some(child) => child.kill(),
            None => Ok(()),
        }
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            child.interrupt(Duration::from_secs(10))?;
        }
        Ok(())
    }

    fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildProcess::is_running)
    }

    fn wipe_store(&mut self) -> Result<()> {
        self.power_cut()?;
        let dir = self.state_dir();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("cannot remove {}", dir.display()))(e)),
        }
    }

    fn logs(&self) -> &Logs {
        &self.logs
    }
}
