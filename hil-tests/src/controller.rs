//! The controller (`fleetctl serve`) as a child process, and `fleetctl` as an operator
//! runs it.
//!
//! Why a process and not the library in-process: a controller restart must be a real
//! one. `SIGKILL` loses whatever was only in memory; `serve` started again on the same
//! data directory must find everything it needs in SQLite (signed envelopes, sequence
//! numbers, the rollout's progress). The embedded broker lives in the same process, so
//! restarting the controller also restarts the broker, with its retained messages and
//! sessions gone: devices must reconnect and republish, and the controller must resend.
//!
//! The broker listens on a port below the kernel's ephemeral range (32768 and up), so
//! that while it is down no outgoing connection (a proxy retrying it) can be given its
//! port number and connect to itself, which would both confuse the device and keep the
//! restarted controller from binding the port.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::bins::{FLEETCTL, binary};
use crate::error::{HarnessError, Result};
use crate::process::{ChildProcess, Logs, run_to_end};

/// The line `serve` prints once its broker listens and it is connected.
const READY: &str = "fleetctl serve: MQTT on ";
/// How long a `fleetctl` command may take before it counts as hung.
const COMMAND_GUARD: Duration = Duration::from_secs(60);
/// How long `serve` may take to come up.
const START_GUARD: Duration = Duration::from_secs(60);

/// `fleetctl` on one data directory.
#[derive(Debug, Clone)]
pub struct Fleetctl {
    data_dir: PathBuf,
}

impl Fleetctl {
    /// `fleetctl --data-dir data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self { data_dir: data_dir.to_path_buf() }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs `fleetctl ARGS`: (exit code, stdout, stderr). `-1` if killed by a signal.
    ///
    /// A command that fails with SQLite's "database is locked" is run again (a few
    /// times): every `fleetctl` command, reads included, takes the database's write lock
    /// when it opens it, and under load `serve` can hold it past the 5 s busy timeout.
    /// Nothing was written by the failed try. The retries are counted
    /// ([`lock_retries`]) and reported, since an operator's script would hit the same.
    pub fn run_raw(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let mut tries = 0;
        loop {
            let mut command = Command::new(binary(FLEETCTL)?);
            command.arg("--data-dir").arg(&self.data_dir).args(args).env("USER", "fleet-hil");
            let (status, stdout, stderr) = run_to_end(command, COMMAND_GUARD)?;
            let code = status.code().unwrap_or(-1);
            if code != 0 && stderr.contains("database is locked") && tries < 5 {
                tries += 1;
                LOCK_RETRIES.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            return Ok((code, stdout, stderr));
        }
    }

    /// Runs `fleetctl ARGS` and returns its stdout; any exit code but 0 is an error.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let (code, stdout, stderr) = self.run_raw(args)?;
        if code == 0 {
            Ok(stdout)
        } else {
            Err(HarnessError::Fleetctl { args: args.join(" "), status: code.to_string(), stderr })
        }
    }
}

static LOCK_RETRIES: AtomicU64 = AtomicU64::new(0);

/// How many `fleetctl` commands this process had to run again because the database
/// was locked (see [`Fleetctl::run_raw`]).
pub fn lock_retries() -> u64 {
    LOCK_RETRIES.load(Ordering::Relaxed)
}

/// Where `serve` gets its broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeBroker {
    /// Its embedded broker, listening here.
    Embedded(SocketAddr),
    /// An external broker (`serve --broker mqtt://ADDR`).
    External(SocketAddr),
}

/// A `fleetctl serve` process on a data directory, restartable.
#[derive(Debug)]
pub struct Controller {
    fleetctl: Fleetctl,
    broker: ServeBroker,
    /// With the embedded broker: where its MQTT-over-TLS listener is kept across
    /// restarts (`None`: a free port at each start, unused by the fleet).
    tls: Option<SocketAddr>,
    log_filter: String,
    logs: Logs,
    child: Option<ChildProcess>,
    starts: u32,
}

impl Controller {
    /// A controller on `data_dir` (not started), logging to `log`.
    pub fn new(data_dir: &Path, broker: ServeBroker, log: &Path) -> Result<Self> {
        Ok(Self {
            fleetctl: Fleetctl::new(data_dir),
            broker,
            tls: None,
            log_filter: "info,rumqttd=warn".into(),
            logs: Logs::new(log)?,
            child: None,
            starts: 0,
        })
    }

    /// With this `RUST_LOG` filter (default `info,rumqttd=warn`). Keep `info` for the
    /// line that says it is up.
    pub fn with_log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.to_string();
        self
    }

    /// With the embedded broker's MQTT over TLS kept on one port (what devices
    /// provisioned with `--tls` reach), across restarts.
    pub fn with_tls(mut self) -> Result<Self> {
        self.tls = Some(free_port()?);
        Ok(self)
    }

    /// Where the embedded broker's MQTT over TLS is, if the fleet uses it.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// Its logs.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// The broker address devices (through their proxies) and clients reach.
    pub fn broker_addr(&self) -> SocketAddr {
        match self.broker {
            ServeBroker::Embedded(addr) | ServeBroker::External(addr) => addr,
        }
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildProcess::pid)
    }

    /// Whether it is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildProcess::is_running)
    }

    /// Starts `serve` and waits until it says it is up. With the embedded broker, if its
    /// port cannot be bound again, it moves to a fresh port (its TLS port too); the
    /// returned address is the one in force (the fleet points its proxies there).
    pub fn start(&mut self) -> Result<SocketAddr> {
        if self.is_running() {
            return Ok(self.broker_addr());
        }
        for _ in 0..5 {
            match self.try_start()? {
                Some(addr) => return Ok(addr),
                None => {
                    // The port was taken while we were down: take another.
                    if let ServeBroker::Embedded(_) = self.broker {
                        self.broker = ServeBroker::Embedded(free_port()?);
                        if self.tls.is_some() {
                            self.tls = Some(free_port()?);
                        }
                    }
                }
            }
        }
        Err(HarnessError::Process {
            what: "fleetctl serve did not come up after 5 tries".into(),
            log: self.logs.path().to_path_buf(),
        })
    }

    /// One try: `Some(addr)` when up, `None` when the embedded broker could not bind.
    fn try_start(&mut self) -> Result<Option<SocketAddr>> {
        let mut command = Command::new(binary(FLEETCTL)?);
        command.arg("--data-dir").arg(self.fleetctl.data_dir()).arg("serve");
        // The operator API on a free port: fleetctl finds it through the data directory.
        command.arg("--api-listen").arg("127.0.0.1:0");
        if matches!(self.broker, ServeBroker::Embedded(_)) {
            let tls = self.tls.map_or_else(|| "127.0.0.1:0".to_string(), |addr| addr.to_string());
            command.arg("--tls-listen").arg(tls);
        }
        match self.broker {
            ServeBroker::Embedded(addr) => command.arg("--listen").arg(addr.to_string()),
            ServeBroker::External(addr) => command.arg("--broker").arg(format!("mqtt://{addr}")),
        };
        command.env("RUST_LOG", &self.log_filter).env("USER", "fleet-hil");
        let ready_before = self.logs.count(&[READY]);
        self.child = Some(ChildProcess::spawn("fleetctl serve", command, &self.logs)?);
        self.starts += 1;
        let child = self.child.as_mut().ok_or_else(|| HarnessError::Usage("no child".into()))?;
        let logs = self.logs.clone();
        let up = crate::wait::until("fleetctl serve to come up", START_GUARD, || {
            if logs.count(&[READY]) > ready_before {
                return Ok(Ok(true));
            }
            if let Some(status) = child.exit_status() {
                let bind_failed = logs.tail(20).iter().any(|l| l.contains("Address already in use"));
                if bind_failed {
                    return Ok(Ok(false));
                }
                return Err(HarnessError::Process {
                    what: format!("fleetctl serve exited ({status}) before it was up"),
                    log: logs.path().to_path_buf(),
                });
            }
            Ok(Err(logs.tail(1)))
        })?;
        Ok(up.then(|| self.broker_addr()))
    }

    /// `SIGKILL`: the controller (and its embedded broker) dies mid-whatever.
    pub fn kill(&mut self) -> Result<()> {
        match self.child.as_mut() {
            Some(child) => child.kill(),
            None => Ok(()),
        }
    }

    /// Ctrl-C: the clean stop (offline status, counters flushed). Whether it exited 0.
    pub fn stop(&mut self) -> Result<bool> {
        match self.child.as_mut() {
            Some(child) => child.interrupt(Duration::from_secs(15)),
            None => Ok(true),
        }
    }

    /// Kill, then `serve` again on the same data directory.
    pub fn restart(&mut self) -> Result<SocketAddr> {
        self.kill()?;
        self.start()
    }
}

/// A loopback port that was free a moment ago, below the ephemeral range (see the
/// module doc for why).
pub fn free_port() -> Result<SocketAddr> {
    for _ in 0..200 {
        let port = fastrand::u16(20_000..32_000);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().map_err(crate::error::io("a free port's address"));
        }
    }
    Err(HarnessError::Unavailable {
        what: "a free loopback port in 20000..32000".into(),
        how: "free some ports".into(),
    })
}
