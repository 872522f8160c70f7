//! A whole fleet in a temp directory: the controller, its broker, devices, and one
//! fault proxy per device.
//!
//! Why everything goes through `fleetctl`: the harness is an operator with a script.
//! Devices are provisioned with `fleetctl device provision` (their `agent.json` is the
//! file an operator would copy to the device), jobs are pushed with `fleetctl job push`,
//! and results are read with `fleetctl job status --json`. If the operator's path breaks,
//! the scenarios break, which is what they are for. The only side doors are the ones an
//! attacker would use: the MQTT wire (see [`crate::mqtt`]) and the keys on disk (see
//! [`crate::forge`]).
//!
//! ```text
//! fleet-hil-NAME-XXXX/
//!   data/                    the controller's data dir (fleet.db, keys/, controller.password)
//!   controller.log           fleetctl serve's output, across restarts
//!   jobs/NAME.wasm           modules as pushed
//!   devices/ID/agent.json    as provisioned; agent.toml (test timers), state/, agent.log
//!   devices/ID/board/        a board's flash file and console.log
//!   mosquitto/               with BrokerMode::Mosquitto: conf, passwd, acl, persistence
//! ```
//!
//! The order of life: [`Fleet::new`], provision devices, [`Fleet::start`] (broker,
//! controller, every device; waits until the controller sees them all online), then the
//! scenario, then [`Fleet::done`]. Dropping the fleet kills every process; unless it was
//! marked done (a scenario that failed or panicked), the directory is kept and the tail
//! of every log is printed, since that is where the diagnosis is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_schemas::DeviceId;
use fleet_schemas::provision::DeviceConfig;

use crate::agent::{AgentTuning, LinuxAgent};
use crate::board::{Board, BoardDevice};
use crate::controller::{Controller, Fleetctl, ServeBroker, free_port};
use crate::device::{Device, DeviceKind};
use crate::error::{HarnessError, Result, io};
use crate::forge::Forge;
use crate::mosquitto::Mosquitto;
use crate::mqtt::MqttClient;
use crate::process::Logs;
use crate::proxy::{Fault, FaultProxy, Injected};
use crate::records::{ControllerRecord, DeviceRecord, JobRecord};

/// The controller's MQTT username (and its client id, which the harness never uses).
pub const CONTROLLER_USER: &str = "fleet-controller";

/// Which broker the fleet runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerMode {
    /// The broker inside `fleetctl serve`: restarting the broker restarts the controller.
    Embedded,
    /// mosquitto, with `fleetctl serve --broker`: the broker restarts on its own.
    Mosquitto,
}

/// How to build a fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// A short name, used in the temp dir's name.
    pub name: String,
    /// The broker.
    pub broker: BrokerMode,
    /// Every Linux agent's local settings.
    pub tuning: AgentTuning,
    /// How long to wait for the fleet to do something before calling it a hang.
    pub guard: Duration,
    /// MQTT over TLS for every gateway (embedded broker only): half of them log in with
    /// a password (`provision --tls`), half with a client certificate (`--cert`). Boards
    /// have no TLS client in their image: the first gateway relays them to the broker
    /// over TLS (`board_relay` in its agent.toml), as on a site where boards hang off a
    /// gateway.
    pub tls: bool,
}

impl FleetOptions {
    /// Embedded broker, test timers, a 120 s hang guard.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            broker: BrokerMode::Embedded,
            tuning: AgentTuning::default(),
            guard: Duration::from_secs(120),
            tls: false,
        }
    }

    /// With MQTT over TLS for every gateway (see [`FleetOptions::tls`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// With this broker.
    pub fn broker(mut self, broker: BrokerMode) -> Self {
        self.broker = broker;
        self
    }
}

/// Which devices a job goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `--all`.
    All,
    /// `--target ID` for each.
    Devices(Vec<String>),
    /// `--selector k=v,...`.
    Selector(String),
}

/// A `fleetctl job push`.
#[derive(Debug, Clone)]
pub struct JobRequest {
    name: String,
    module: Vec<u8>,
    target: Target,
    flags: Vec<String>,
}

impl JobRequest {
    /// Pushes `module` (written to `jobs/NAME.wasm`) to every device.
    pub fn new(name: &str, module: &[u8]) -> Self {
        Self { name: name.to_string(), module: module.to_vec(), target: Target::All, flags: Vec::new() }
    }

    /// To these devices only.
    pub fn to(mut self, ids: &[&str]) -> Self {
        self.target = Target::Devices(ids.iter().map(|s| s.to_string()).collect());
        self
    }

    /// To devices with these labels.
    pub fn selector(mut self, labels: &str) -> Self {
        self.target = Target::Selector(labels.to_string());
        self
    }

    /// Adds a `job push` flag with its value (`--timeout 2s`, `--batch 2`, ...).
    pub fn flag(mut self, flag: &str, value: &str) -> Self {
        self.flags.push(flag.to_string());
        self.flags.push(value.to_string());
        self
    }

    /// Adds a `job push` flag without value (`--continuous`).
    pub fn switch(mut self, flag: &str) -> Self {
        self.flags.push(flag.to_string());
        self
    }

    /// The module's file name.
    pub fn file_name(&self) -> String {
        format!("{}.wasm", self.name)
    }
}

struct Slot {
    device: Box<dyn Device>,
    proxy: FaultProxy,
    config: DeviceConfig,
    /// Where its proxy forwards to.
    route: Route,
}

/// What a device's fault proxy forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The broker's plain MQTT port (or mosquitto's).
    Plain,
    /// The embedded broker's MQTT over TLS port.
    Tls,
    /// A gateway's board relay, which carries it to the broker over TLS.
    Relay(SocketAddr),
}

/// The fleet under test.
pub struct Fleet {
    options: FleetOptions,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    fleetctl: Fleetctl,
    controller: Controller,
    mosquitto: Option<Mosquitto>,
    devices: BTreeMap<String, Slot>,
    /// With [`FleetOptions::tls`]: the board relay of the first gateway.
    relay: Option<(String, SocketAddr)>,
    observers: u32,
    started: bool,
    keep: bool,
    done: bool,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("name", &self.options.name)
            .field("dir", &self.path)
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A fleet in a new temp dir (under `$FLEET_HIL_DIR` if set): nothing runs yet.
    pub fn new(options: FleetOptions) -> Result<Self> {
        let base = std::env::var_os("FLEET_HIL_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        std::fs::create_dir_all(&base).map_err(io(format!("cannot create {}", base.display())))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("fleet-hil-{}-", options.name))
            .tempdir_in(&base)
            .map_err(io("cannot create the fleet's temp dir"))?;
        let path = dir.path().to_path_buf();
        let data = path.join("data");
        let fleetctl = Fleetctl::new(&data);
        let (serve_broker, mosquitto) = match options.broker {
            BrokerMode::Embedded => (ServeBroker::Embedded(free_port()?), None),
            BrokerMode::Mosquitto => {
                let mosquitto = Mosquitto::new(&path.join("mosquitto"), free_port()?)?;
                (ServeBroker::External(mosquitto.addr()), Some(mosquitto))
            }
        };
        let mut controller = Controller::new(&data, serve_broker, &path.join("controller.log"))?;
        if options.tls {
            if options.broker != BrokerMode::Embedded {
                return Err(HarnessError::Usage("a TLS fleet runs on the embedded broker".into()));
            }
            controller = controller.with_tls()?;
        }
        for sub in ["jobs", "devices"] {
            let sub = path.join(sub);
            std::fs::create_dir_all(&sub).map_err(io(format!("cannot create {}", sub.display())))?;
        }
        Ok(Self {
            options,
            dir: Some(dir),
            path,
            fleetctl,
            controller,
            mosquitto,
            devices: BTreeMap::new(),
            relay: None,
            observers: 0,
            started: false,
            keep: false,
            done: false,
        })
    }

    /// The fleet's directory.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Marks the fleet's work as finished well: dropping it then removes its directory
    /// quietly. A fleet dropped without this (an error, a panic) keeps its directory and
    /// prints the tail of every log, because that is where the diagnosis is.
    pub fn done(&mut self) {
        self.done = true;
    }

    /// Keeps the fleet's directory when the fleet is dropped (also: `FLEET_HIL_KEEP=1`).
    pub fn keep_dir(&mut self) {
        self.keep = true;
    }

    /// `fleetctl` on this fleet's data dir.
    pub fn fleetctl(&self) -> &Fleetctl {
        &self.fleetctl
    }

    /// The hang guard.
    pub fn guard(&self) -> Duration {
        self.options.guard
    }

    /// Where the broker is (not through any proxy).
    pub fn broker_addr(&self) -> SocketAddr {
        self.controller.broker_addr()
    }

    /// The controller process.
    pub fn controller(&mut self) -> &mut Controller {
        &mut self.controller
    }

    /// The controller's log.
    pub fn controller_logs(&self) -> &Logs {
        self.controller.logs()
    }

    /// Provisions device `id` through its own fault proxy (`fleetctl device provision
    /// --broker PROXY`), returning its proxy address and config.
    fn provision(
        &mut self,
        id: &str,
        labels: &str,
        kind: DeviceKind,
    ) -> Result<(FaultProxy, DeviceConfig, PathBuf, Route)> {
        if self.devices.contains_key(id) {
            return Err(HarnessError::Usage(format!("device {id} is already in the fleet")));
        }
        let tls = match self.controller.tls_addr() {
            Some(addr) if kind == DeviceKind::Linux => Some(addr),
            _ => None,
        };
        let route = match (tls, &self.relay) {
            (Some(_), _) => Route::Tls,
            (None, Some((_, relay))) if kind == DeviceKind::Mcu => Route::Relay(*relay),
            _ => Route::Plain,
        };
        let upstream = match route {
            Route::Plain => self.broker_addr(),
            Route::Tls => tls.unwrap_or(self.broker_addr()),
            Route::Relay(relay) => relay,
        };
        let proxy = FaultProxy::start(upstream)?;
        let dir = self.path.join("devices").join(id);
        let out = dir.display().to_string();
        let broker = proxy.addr().to_string();
        let mut args = vec!["device", "provision", id, "--kind", kind.as_str(), "--out", &out, "--broker", &broker];
        if tls.is_some() {
            // Every other gateway with a client certificate, the rest with a password.
            let certificates = self.devices.values().filter(|s| s.route == Route::Tls).count();
            args.push(if certificates % 2 == 0 { "--tls" } else { "--cert" });
        }
        if !labels.is_empty() {
            args.extend(["--labels", labels]);
        }
        self.fleetctl.run(&args)?;
        let config_path = dir.join("agent.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(io(format!("cannot read {}", config_path.display())))?;
        let config: DeviceConfig = serde_json::from_str(&text)
            .map_err(|e| HarnessError::Parse { what: config_path.display().to_string(), detail: e.to_string() })?;
        Ok((proxy, config, dir, route))
    }

    /// Provisions a Linux agent (started by [`Fleet::start`], or now if the fleet runs).
    pub fn add_linux(&mut self, id: &str, labels: &str) -> Result<()> {
        let (proxy, config, dir, route) = self.provision(id, labels, DeviceKind::Linux)?;
        let agent = LinuxAgent::new(id, &dir, &self.options.tuning)?;
        if self.options.tls && self.relay.is_none() {
            // The first gateway of a TLS fleet carries the boards (added after it).
            let relay = free_port()?;
            let toml = dir.join("agent.toml");
            let mut text = std::fs::read_to_string(&toml).map_err(io(format!("cannot read {}", toml.display())))?;
            text.push_str(&format!("board_relay = \"{relay}\"\n"));
            std::fs::write(&toml, text).map_err(io(format!("cannot write {}", toml.display())))?;
            self.relay = Some((id.to_string(), relay));
        }
        self.insert(id, Box::new(agent), proxy, config, route)
    }

    /// The gateway whose board relay carries the boards of a TLS fleet, if any.
    pub fn relay_gateway(&self) -> Option<&str> {
        self.relay.as_ref().map(|(id, _)| id.as_str())
    }

    /// Whether a device reaches the broker through a gateway's board relay.
    pub fn relayed(&self, id: &str) -> bool {
        self.devices.get(id).is_some_and(|s| matches!(s.route, Route::Relay(_)))
    }

    /// Provisions a board (`--kind mcu`) and installs the config block `fleetctl` wrote
    /// for it (`config-block.bin`), as an operator flashes it.
    pub fn add_board(&mut self, id: &str, labels: &str, mut board: Box<dyn Board>) -> Result<()> {
        let (proxy, config, dir, route) = self.provision(id, labels, DeviceKind::Mcu)?;
        let block_path = dir.join("config-block.bin");
        let block = std::fs::read(&block_path).map_err(io(format!("cannot read {}", block_path.display())))?;
        board.install_config(&block)?;
        let device = BoardDevice::new(id, board, proxy.addr());
        self.insert(id, Box::new(device), proxy, config, route)
    }

    /// Where a device keeps its files.
    pub fn device_dir(&self, id: &str) -> PathBuf {
        self.path.join("devices").join(id)
    }

    fn insert(
        &mut self,
        id: &str,
        device: Box<dyn Device>,
        proxy: FaultProxy,
        config: DeviceConfig,
        route: Route,
    ) -> Result<()> {
        self.devices.insert(id.to_string(), Slot { device, proxy, config, route });
        if self.started {
            self.regenerate_acl()?;
            self.device(id)?.start()?;
        }
        Ok(())
    }

    fn regenerate_acl(&mut self) -> Result<()> {
        if let Some(mosquitto) = self.mosquitto.as_mut() {
            mosquitto.write_acl(&self.fleetctl)?;
            if self.started {
                // mosquitto reads its password and ACL files at start.
                mosquitto.stop()?;
                mosquitto.start()?;
            }
        }
        Ok(())
    }

    /// Starts the broker (mosquitto), the controller and every device, and waits until
    /// the controller has seen every device online.
    pub fn start(&mut self) -> Result<()> {
        if self.mosquitto.is_some() {
            // `broker acl` reads the registry, which the first provision created.
            self.regenerate_acl()?;
            if let Some(mosquitto) = self.mosquitto.as_mut() {
                mosquitto.start()?;
            }
        }
        self.start_controller()?;
        for slot in self.devices.values_mut() {
            slot.device.start()?;
        }
        self.started = true;
        let ids = self.ids();
        self.wait_online(&ids.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn start_controller(&mut self) -> Result<()> {
        let addr = self.controller.start()?;
        if self.mosquitto.is_none() {
            let tls = self.controller.tls_addr();
            for slot in self.devices.values() {
                match slot.route {
                    Route::Plain => slot.proxy.set_upstream(addr),
                    Route::Tls => slot.proxy.set_upstream(tls.unwrap_or(addr)),
                    // The gateway's relay stays where it is; it reaches the broker itself.
                    Route::Relay(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Every device id, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    /// Device ids of one kind.
    pub fn ids_of(&self, kind: DeviceKind) -> Vec<String> {
        self.devices.iter().filter(|(_, s)| s.device.kind() == kind).map(|(id, _)| id.clone()).collect()
    }

    fn slot(&self, id: &str) -> Result<&Slot> {
        self.devices.get(id).ok_or_else(|| HarnessError::Usage(format!("no device {id} in this fleet")))
    }

    /// A device, to power-cycle or stop.
    pub fn device(&mut self, id: &str) -> Result<&mut dyn Device> {
        match self.devices.get_mut(id) {
            Some(slot) => Ok(slot.device.as_mut()),
            None => Err(HarnessError::Usage(format!("no device {id} in this fleet"))),
        }
    }

    /// A device's fault proxy.
    pub fn proxy(&self, id: &str) -> Result<&FaultProxy> {
        Ok(&self.slot(id)?.proxy)
    }

    /// Sets a fault on a device's link, and marks it in the device's log (so the log
    /// shows what the device did before and after).
    pub fn inject(&self, id: &str, fault: Fault) -> Result<()> {
        let slot = self.slot(id)?;
        slot.device.logs().push(&format!("--- harness: link fault: {}", Injected::Fault(fault)));
        slot.proxy.set(fault);
        Ok(())
    }

    /// Resets every connection on a device's link (RST), marking the log.
    pub fn reset_link(&self, id: &str) -> Result<()> {
        let slot = self.slot(id)?;
        slot.device.logs().push("--- harness: link fault: reset");
        slot.proxy.reset();
        Ok(())
    }

    /// Restores a device's link, marking the log.
    pub fn restore(&self, id: &str) -> Result<()> {
        let slot = self.slot(id)?;
        slot.device.logs().push("--- harness: link restored");
        slot.proxy.restore();
        Ok(())
    }

    /// A device's logs (without borrowing it mutably).
    pub fn logs(&self, id: &str) -> Result<&Logs> {
        Ok(self.slot(id)?.device.logs())
    }

    /// A device's provisioned config (its id, credentials, keys).
    pub fn config(&self, id: &str) -> Result<&DeviceConfig> {
        Ok(&self.slot(id)?.config)
    }

    /// A device's id as the protocol types want it.
    pub fn device_id(&self, id: &str) -> Result<DeviceId> {
        Ok(self.slot(id)?.config.device_id.clone())
    }

    /// The controller's MQTT password (`controller.password` in the data dir).
    pub fn controller_password(&self) -> Result<String> {
        let path = self.fleetctl.data_dir().join("controller.password");
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(io(format!("cannot read {}", path.display())))
    }

    /// A new MQTT client with the controller's identity (its own client id), connected
    /// straight to the broker; it reconnects across broker restarts.
    pub fn observer(&mut self) -> Result<MqttClient> {
        self.observers += 1;
        let client_id = format!("hil-observer-{}", self.observers);
        MqttClient::connect(self.broker_addr(), &client_id, CONTROLLER_USER, &self.controller_password()?, true)
    }

    /// A client with device `id`'s credentials and client id (a compromised device), as
    /// a probe: it does not reconnect.
    pub fn connect_as_device(&self, id: &str, client_id: &str) -> Result<MqttClient> {
        let config = self.config(id)?;
        MqttClient::connect(self.broker_addr(), client_id, &config.username, &config.password, false)
    }

    /// The forger, with the controller's active job key.
    pub fn forge(&self) -> Result<Forge> {
        let status: serde_json::Value = serde_json::from_str(&self.fleetctl.run(&["status", "--json"])?)
            .map_err(|e| HarnessError::Parse { what: "`fleetctl status --json`".into(), detail: e.to_string() })?;
        let key = status.get("active_job_key").and_then(|k| k.as_str()).ok_or_else(|| HarnessError::Parse {
            what: "`fleetctl status --json`".into(),
            detail: "no active_job_key".into(),
        })?;
        Forge::from_data_dir(self.fleetctl.data_dir(), key)
    }

    // ----- records ---------------------------------------------------------------------

    /// `fleetctl device list --json`.
    pub fn device_records(&self) -> Result<Vec<DeviceRecord>> {
        DeviceRecord::parse_list(&self.fleetctl.run(&["device", "list", "--json"])?)
    }

    /// One device's record.
    pub fn device_record(&self, id: &str) -> Result<DeviceRecord> {
        self.device_records()?
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| HarnessError::Usage(format!("the controller has no device {id}")))
    }

    /// `fleetctl status --json`.
    pub fn controller_record(&self) -> Result<ControllerRecord> {
        ControllerRecord::parse(&self.fleetctl.run(&["status", "--json"])?)
    }

    /// Waits until the controller records every one of `ids` as online, with its store
    /// synced (a device's first start, or a store that came back empty, asks the
    /// controller where it stands before it takes a job: what is pushed before is
    /// signed again for it, so a test that counts signed envelopes waits for this).
    pub fn wait_online(&self, ids: &[&str]) -> Result<()> {
        self.wait_presence(ids, "online")?;
        crate::wait::until(&format!("{ids:?} to have synced their stores"), self.options.guard, || {
            let records = self.device_records()?;
            let not_yet: Vec<String> = ids
                .iter()
                .filter(|id| !records.iter().any(|r| r.id == **id && r.store.incarnation.is_some()))
                .map(|id| id.to_string())
                .collect();
            Ok(if not_yet.is_empty() { Ok(()) } else { Err(not_yet) })
        })
    }

    /// Waits until the controller records every one of `ids` as offline.
    pub fn wait_offline(&self, ids: &[&str]) -> Result<()> {
        self.wait_presence(ids, "offline")
    }

    fn wait_presence(&self, ids: &[&str], state: &str) -> Result<()> {
        crate::wait::until(&format!("{ids:?} to be {state} at the controller"), self.options.guard, || {
            let records = self.device_records()?;
            let not_yet: Vec<String> = ids
                .iter()
                .filter(|id| !records.iter().any(|r| r.id == **id && r.state == state))
                .map(|id| id.to_string())
                .collect();
            Ok(if not_yet.is_empty() { Ok(()) } else { Err(not_yet) })
        })
    }

    /// Pushes a job (`fleetctl job push`); returns its id.
    pub fn push(&self, request: &JobRequest) -> Result<String> {
        let module = self.path.join("jobs").join(request.file_name());
        std::fs::write(&module, &request.module).map_err(io(format!("cannot write {}", module.display())))?;
        let module = module.display().to_string();
        let mut args: Vec<String> = vec!["job".into(), "push".into(), module];
        match &request.target {
            Target::All => args.push("--all".into()),
            Target::Devices(ids) => {
                for id in ids {
                    args.push("--target".into());
                    args.push(id.clone());
                }
            }
            Target::Selector(labels) => {
                args.push("--selector".into());
                args.push(labels.clone());
            }
        }
        args.extend(request.flags.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stdout = self.fleetctl.run(&args)?;
        stdout.lines().rev().map(str::trim).find(|l| l.len() == 32).map(str::to_string).ok_or_else(|| {
            HarnessError::Parse {
                what: "`fleetctl job push` output".into(),
                detail: format!("no job id in {stdout:?}"),
            }
        })
    }

    /// `fleetctl job status ID --json`.
    pub fn job(&self, id: &str) -> Result<JobRecord> {
        JobRecord::parse(&self.fleetctl.run(&["job", "status", id, "--json"])?)
    }

    /// `fleetctl job results ID` (the operator's text).
    pub fn results_text(&self, id: &str) -> Result<String> {
        self.fleetctl.run(&["job", "results", id])
    }

    /// Waits until the job is finished (completed, aborted or canceled).
    pub fn wait_job(&self, id: &str) -> Result<JobRecord> {
        self.wait_job_where(id, "finished", JobRecord::is_finished)
    }

    /// Waits until the job's record satisfies `check`.
    pub fn wait_job_where(&self, id: &str, what: &str, check: impl Fn(&JobRecord) -> bool) -> Result<JobRecord> {
        crate::wait::until(&format!("job {id} {what}"), self.options.guard, || {
            let record = self.job(id)?;
            Ok(if check(&record) { Ok(record) } else { Err(record.outcome_line()) })
        })
    }

    /// Waits until each of `ids` has an execution of the job in one of `states`.
    pub fn wait_executions(&self, job: &str, ids: &[&str], states: &[&str]) -> Result<JobRecord> {
        self.wait_job_where(job, &format!("with {ids:?} in {states:?}"), |record| {
            let latest = record.latest();
            ids.iter().all(|id| latest.get(id).is_some_and(|e| states.contains(&e.state.as_str())))
        })
    }

    // ----- restarts ----------------------------------------------------------------------

    /// Kills the controller (`SIGKILL`) and starts it again on the same data dir. With
    /// the embedded broker this restarts the broker too; proxies follow it if it had to
    /// move port.
    pub fn restart_controller(&mut self) -> Result<()> {
        self.controller.kill()?;
        self.start_controller()
    }

    /// Kills the controller (to restart it later with [`Fleet::start_controller_again`]).
    pub fn kill_controller(&mut self) -> Result<()> {
        self.controller.kill()
    }

    /// Starts a killed controller again.
    pub fn start_controller_again(&mut self) -> Result<()> {
        self.start_controller()
    }

    /// Restarts the broker: mosquitto stopped and started again on its persistence file
    /// (`BrokerMode::Mosquitto`), or the controller and its embedded broker.
    pub fn restart_broker(&mut self) -> Result<()> {
        match self.mosquitto.as_mut() {
            Some(mosquitto) => {
                mosquitto.stop()?;
                mosquitto.start()
            }
            None => self.restart_controller(),
        }
    }

    /// The external broker, if the fleet has one.
    pub fn mosquitto(&mut self) -> Option<&mut Mosquitto> {
        self.mosquitto.as_mut()
    }

    /// Stops everything the way an operator would: devices (Ctrl-C), then the
    /// controller, then the broker. Returns whether every process exited cleanly.
    pub fn shutdown(&mut self) -> Result<bool> {
        let mut clean = true;
        for slot in self.devices.values_mut() {
            slot.device.stop()?;
        }
        clean &= self.controller.stop()?;
        if let Some(mosquitto) = self.mosquitto.as_mut() {
            mosquitto.stop()?;
        }
        self.started = false;
        self.done = clean;
        Ok(clean)
    }

    /// Prints the last `n` lines of every log (controller, devices, broker).
    pub fn print_log_tails(&self, n: usize) {
        let mut logs: Vec<(&str, &Logs)> = vec![("controller", self.controller.logs())];
        for (id, slot) in &self.devices {
            logs.push((id.as_str(), slot.device.logs()));
        }
        if let Some(mosquitto) = &self.mosquitto {
            logs.push(("mosquitto", mosquitto.logs()));
        }
        for (name, log) in logs {
            eprintln!("----- {name}: last {n} lines of {}", log.path().display());
            for line in log.tail(n) {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Devices first, so the broker does not see a storm of reconnects.
        for slot in self.devices.values_mut() {
            let _ = slot.device.power_cut();
        }
        let _ = self.controller.kill();
        if let Some(mosquitto) = self.mosquitto.as_mut() {
            let _ = mosquitto.kill();
        }
        let failed = std::thread::panicking() || !self.done;
        let keep = failed || self.keep || std::env::var_os("FLEET_HIL_KEEP").is_some();
        if keep {
            if failed {
                self.print_log_tails(25);
            }
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!("fleet-hil: kept the fleet's directory for inspection: {}", path.display());
            }
        }
    }
}
