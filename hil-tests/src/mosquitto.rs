//! mosquitto as the fleet's broker, so the broker can restart on its own.
//!
//! Why: with the embedded broker, a broker restart *is* a controller restart, and the
//! scenario for that exists already. What only an external broker shows is the broker
//! going away while the controller and every device stay up: all of them must notice,
//! reconnect, find their persistent sessions, and the retained status must come back
//! (mosquitto's persistence file), with the rollout carrying on. This is also the
//! deployment `fleetctl serve --broker` is for (docs: "Scaling past one machine").
//!
//! The broker's credentials and ACL come from the registry through `fleetctl broker acl
//! --out DIR`, as an operator would configure it; it is regenerated whenever a device
//! is provisioned (mosquitto reads the files at start, so provision first, then start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::find_program;
use crate::controller::Fleetctl;
use crate::error::{HarnessError, Result, io};
use crate::process::{ChildProcess, Logs};

/// Where mosquitto keeps sessions and retained messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// In a persistence file, saved every second: survives a restart (the scenarios).
    OnDisk,
    /// In memory only, with room for a long queue per client (the fan-out benchmark).
    InMemory,
}

/// A mosquitto process on a loopback port.
#[derive(Debug)]
pub struct Mosquitto {
    dir: PathBuf,
    addr: SocketAddr,
    logs: Logs,
    child: Option<ChildProcess>,
    starts: u32,
}

impl Mosquitto {
    /// Whether mosquitto is installed.
    pub fn available() -> Result<PathBuf> {
        find_program("mosquitto").ok_or_else(|| HarnessError::Unavailable {
            what: "mosquitto".into(),
            how: "apt-get install -y mosquitto mosquitto-clients".into(),
        })
    }

    /// A broker keeping its config, credentials and persistence file in `dir`,
    /// listening on `addr`. Not started.
    pub fn new(dir: &Path, addr: SocketAddr) -> Result<Self> {
        Self::configured(dir, addr, Persistence::OnDisk)
    }

    /// A broker as [`Mosquitto::new`], keeping its state as `persistence` says.
    pub fn configured(dir: &Path, addr: SocketAddr, persistence: Persistence) -> Result<Self> {
        Self::available()?;
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let logs = Logs::new(&dir.join("mosquitto.log"))?;
        let state = match persistence {
            Persistence::OnDisk => format!(
                "persistence true\n\
                 persistence_location {dir}/\n\
                 autosave_interval 1\n\
                 max_queued_messages 10000\n",
                dir = dir.display()
            ),
            // A controller subscribed to every device's events can be tens of thousands of
            // messages behind in a fan-out; mosquitto's default (1,000) would drop them.
            Persistence::InMemory => "persistence false\nmax_queued_messages 1000000\nset_tcp_nodelay true\n".into(),
        };
        let conf = format!(
            "# Written by the fleet-hil harness.\n\
             listener {port} {host}\n\
             allow_anonymous false\n\
             password_file {dir}/passwd\n\
             acl_file {dir}/acl\n\
             message_size_limit 262144\n\
             {state}\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             connection_messages true\n\
             {user}",
            // Started as root, mosquitto drops to user `mosquitto`, which cannot read the
            // 0600 files `fleetctl broker acl` writes: stay who we are.
            user = if rustix::process::getuid().is_root() { "user root\n" } else { "" },
            port = addr.port(),
            host = addr.ip(),
            dir = dir.display(),
        );
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf).map_err(io(format!("cannot write {}", path.display())))?;
        Ok(Self { dir: dir.to_path_buf(), addr, logs, child: None, starts: 0 })
    }

    /// The directory holding its config, `passwd` and `acl`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Writes `passwd` and `acl` from the registry (`fleetctl broker acl`).
    pub fn write_acl(&self, fleetctl: &Fleetctl) -> Result<()> {
        let out = self.dir.display().to_string();
        fleetctl.run(&["broker", "acl", "--out", &out]).map(|_| ())
    }

    /// Starts it and waits until it accepts connections.
    pub fn start(&mut self) -> Result<()> {
        if self.child.as_mut().is_some_and(ChildProcess::is_running) {
            return Ok(());
        }
        let mut command = Command::new(Self::available()?);
        command.arg("-c").arg(self.dir.join("mosquitto.conf"));
        self.child = Some(ChildProcess::spawn("mosquitto", command, &self.logs)?);
        self.starts += 1;
        let addr = self.addr;
        let child = self.child.as_mut().ok_or_else(|| HarnessError::Usage("no child".into()))?;
        let log = self.logs.path().to_path_buf();
        crate::wait::until("mosquitto to listen", Duration::from_secs(30), || {
            if let Some(status) = child.exit_status() {
                return Err(HarnessError::Process { what: format!("mosquitto exited ({status})"), log: log.clone() });
            }
            Ok(std::net::TcpStream::connect(addr).map(|_| ()).map_err(|e| e.kind()))
        })
    }

    /// Stops it cleanly (SIGINT: it saves its persistence file), waiting for it.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            child.interrupt(Duration::from_secs(15))?;
        }
        Ok(())
    }

    /// `SIGKILL`.
    pub fn kill(&mut self) -> Result<()> {
        match self.child.as_mut() {
            Some(child) => child.kill(),
            None => Ok(()),
        }
    }
}
