//! Microcontroller boards as devices under test: QEMU's `mps2-an386` now, a real board
//! on a bench through the same trait.
//!
//! Why a trait at the hardware boundary ([`Board`]) and not at the device: everything
//! above it is the same for every board (the device is provisioned with `fleetctl device
//! provision --kind mcu`, its config block is the `config-block.bin` that writes,
//! its link goes through its own fault proxy, a power cycle is off then on on
//! the same flash). What differs is four verbs: put the config where the firmware reads
//! it, power on with the serial link bridged to a TCP address, cut the power, say
//! whether it runs. So a real board plugs in by implementing those four, or with no
//! code at all through [`CommandBoard`] (shell commands for probe-rs and a serial
//! bridge); README.md shows both.
//!
//! The firmware speaks MQTT over its UART. QEMU bridges UART0 to TCP itself
//! (`-serial tcp:HOST:PORT,reconnect=1`); a real board needs a serial-to-TCP bridge
//! (`socat`, `ser2net`) on the bench host. Either way the TCP end is the device's fault
//! proxy, so every link fault applies to boards exactly as to Linux agents.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::find_program;
use crate::device::{Device, DeviceKind};
use crate::error::{HarnessError, Result, io};
use crate::process::{ChildProcess, Logs, run_to_end};

/// The hardware side of a board.
pub trait Board: Send {
    /// Writes the provisioned config block (`config-block.bin`) where the firmware reads
    /// it: the start of the config partition of its flash.
    fn install_config(&mut self, block: &[u8]) -> Result<()>;

    /// Powers the board on, its serial link bridged to `broker` (the device's fault
    /// proxy). Its flash keeps what the last run wrote.
    fn power_on(&mut self, broker: SocketAddr) -> Result<()>;

    /// Cuts the power at once.
    fn power_off(&mut self) -> Result<()>;

    /// Whether it is powered and running.
    fn is_powered(&mut self) -> bool;

    /// Its console (semihosting output, RTT, or the bridge's messages).
    fn logs(&self) -> &Logs;

    /// Erases the store partition of its flash (the config partition stays), as a
    /// flash wiped in the field would leave it. The board must be off.
    fn erase_store(&mut self) -> Result<()>;
}

/// Where the firmware workspace's builds go: `$FLEET_FIRMWARE_TARGET_DIR`, else
/// `$CARGO_TARGET_DIR-fw` when a target dir is set (as CI sets it), else
/// `firmware-sdk/target`.
pub fn firmware_target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLEET_FIRMWARE_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(target) => {
            let mut fw = target;
            fw.push("-fw");
            PathBuf::from(fw)
        }
        None => crate::bins::workspace_dir().join("firmware-sdk/target"),
    }
}

/// The command that builds the firmware images (run in `firmware-sdk/`).
pub const FIRMWARE_BUILD: &str =
    "cargo build --release --target thumbv7em-none-eabihf -p fleet-board-mps2-an386 --bins";

/// The firmware agent image for QEMU `mps2-an386`: `$FLEET_FIRMWARE_AGENT`, else the
/// `agent` image in [`firmware_target_dir`].
pub fn firmware_image() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FLEET_FIRMWARE_AGENT") {
        return Ok(PathBuf::from(path));
    }
    let path = firmware_target_dir().join("thumbv7em-none-eabihf/release/agent");
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Unavailable {
            what: format!("the firmware agent image ({})", path.display()),
            how: format!("build it: `cd firmware-sdk && {FIRMWARE_BUILD}`, or set FLEET_FIRMWARE_AGENT"),
        })
    }
}

/// Builds the firmware images (the same command as the firmware's own QEMU tests, into
/// the same target dir, so neither builds twice) and returns the agent image.
///
/// The firmware is its own cargo workspace with its own target dir, so this nested
/// build never waits on, or invalidates, the host workspace's build.
pub fn build_firmware_image() -> Result<PathBuf> {
    if std::env::var_os("FLEET_FIRMWARE_AGENT").is_some() {
        return firmware_image();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(crate::bins::workspace_dir().join("firmware-sdk"))
        .env("CARGO_TARGET_DIR", firmware_target_dir())
        .args(["build", "--release", "--target", "thumbv7em-none-eabihf", "-p", "fleet-board-mps2-an386", "--bins"]);
    let status = command.status().map_err(|e| HarnessError::Build {
        command: format!("cd firmware-sdk && {FIRMWARE_BUILD}"),
        status: format!("cannot run cargo: {e}"),
    })?;
    if !status.success() {
        return Err(HarnessError::Build {
            command: format!("cd firmware-sdk && {FIRMWARE_BUILD}"),
            status: status.to_string(),
        });
    }
    firmware_image()
}

/// Whether emulated boards can run here: the image is built and QEMU is installed.
pub fn qemu_boards_available() -> Result<PathBuf> {
    let image = firmware_image()?;
    find_program("qemu-system-arm").ok_or_else(|| HarnessError::Unavailable {
        what: "qemu-system-arm".into(),
        how: "apt-get install -y qemu-system-arm".into(),
    })?;
    Ok(image)
}

/// QEMU `mps2-an386` running the firmware agent, its flash a file in its own directory.
#[derive(Debug)]
pub struct QemuBoard {
    image: PathBuf,
    dir: PathBuf,
    logs: Logs,
    child: Option<ChildProcess>,
}

impl QemuBoard {
    /// The flash file's name: the board's `flash::DEFAULT_FILE`, opened by semihosting in
    /// QEMU's working directory, and what `fleetctl device provision --kind mcu` writes.
    pub const FLASH_FILE: &'static str = "fleet-flash.bin";
    /// The flash file's size: the board's `LAYOUT.len()` (one config page and 63 store
    /// pages of 4 KiB).
    pub const FLASH_BYTES: usize = 64 * 4096;
    /// The script provisioning writes beside the flash file; it boots QEMU on it.
    pub const FLASH_SCRIPT: &'static str = "flash.sh";
    /// The config partition at the start of the flash: one 4 KiB page.
    pub const CONFIG_PAGE_BYTES: usize = 4096;

    /// A board flashed and booted the way an operator does it: from the directory
    /// `fleetctl device provision --kind mcu --out DIR` writes, with its
    /// `flash.sh qemu IMAGE` on its `fleet-flash.bin` (both checked by
    /// [`Board::install_config`], so create the board before provisioning).
    pub fn provisioned(image: &Path, provision_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(provision_dir).map_err(io(format!("cannot create {}", provision_dir.display())))?;
        let logs = Logs::new(&provision_dir.join("console.log"))?;
        Ok(Self { image: image.to_path_buf(), dir: provision_dir.to_path_buf(), logs, child: None })
    }

    /// The flash file.
    pub fn flash_path(&self) -> PathBuf {
        self.dir.join(Self::FLASH_FILE)
    }

    fn script(&self) -> PathBuf {
        self.dir.join(Self::FLASH_SCRIPT)
    }
}

impl Board for QemuBoard {
    /// fleetctl wrote the flash image beside its script: checks it holds this block and
    /// boots from it as it is.
    fn install_config(&mut self, block: &[u8]) -> Result<()> {
        let path = self.flash_path();
        let flash = std::fs::read(&path).map_err(io(format!("cannot read {}", path.display())))?;
        let erased = flash.get(block.len()..).is_some_and(|rest| rest.iter().all(|&b| b == 0xff));
        let script = self.script();
        if flash.len() != Self::FLASH_BYTES || !flash.starts_with(block) || !erased || !script.is_file() {
            return Err(HarnessError::Usage(format!(
                "{} is not an erased {} byte flash image starting with the config block, or {} is missing",
                path.display(),
                Self::FLASH_BYTES,
                script.display()
            )));
        }
        Ok(())
    }

    fn power_on(&mut self, broker: SocketAddr) -> Result<()> {
        if self.is_powered() {
            return Ok(());
        }
        // The script would fail the same way; this says how to fix it.
        find_program("qemu-system-arm").ok_or_else(|| HarnessError::Unavailable {
            what: "qemu-system-arm".into(),
            how: "apt-get install -y qemu-system-arm".into(),
        })?;
        // The script `exec`s QEMU, so the child is QEMU itself and a kill is a power cut.
        let mut command = Command::new("sh");
        command
            .current_dir(&self.dir)
            .arg(self.script())
            .arg("qemu")
            .arg(&self.image)
            .env("FLEET_BROKER", broker.to_string());
        self.child = Some(ChildProcess::spawn("qemu mps2-an386", command, &self.logs)?);
        Ok(())
    }

    fn power_off(&mut self) -> Result<()> {
        match self.child.as_mut() {
            Some(child) => child.kill(),
            None => Ok(()),
        }
    }

    fn is_powered(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildProcess::is_running)
    }

    fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Everything after the config page back to erased (0xff).
    fn erase_store(&mut self) -> Result<()> {
        let path = self.flash_path();
        let mut flash = std::fs::read(&path).map_err(io(format!("cannot read {}", path.display())))?;
        if let Some(store) = flash.get_mut(Self::CONFIG_PAGE_BYTES..) {
            store.fill(0xff);
        }
        std::fs::write(&path, &flash).map_err(io(format!("cannot write {}", path.display())))
    }
}

/// A real board on a bench, driven by shell commands (run with `sh -c`). Placeholders:
/// `{config_block}` (a file holding the block), `{broker_host}`, `{broker_port}`.
///
/// ```text
/// flash_config: probe-rs download --chip STM32F407VGTx --binary-format bin --base-address 0x080E0000 {config_block}
/// power_on:     probe-rs reset --chip STM32F407VGTx
/// bridge:       socat /dev/ttyUSB0,raw,echo=0,b115200 TCP:{broker_host}:{broker_port},forever,interval=1
/// power_off:    probe-rs reset --chip STM32F407VGTx --halt   (or a USB relay's off command)
/// ```
#[derive(Debug)]
pub struct CommandBoard {
    /// Writes `{config_block}` to the board's config partition.
    pub flash_config: String,
    /// Runs to its end to power the board on (a reset, a relay).
    pub power_on: String,
    /// Runs as long as the board is on: bridges its serial port to the broker.
    pub bridge: String,
    /// Runs to its end to cut the power (a halt, a relay); empty for none.
    pub power_off: String,
    /// Runs to its end to erase the board's store partition (e.g. `probe-rs erase`
    /// over its range); empty if the bench cannot.
    pub erase_store: String,
    dir: PathBuf,
    logs: Logs,
    bridge_child: Option<ChildProcess>,
}

impl CommandBoard {
    /// A board driven by these commands, keeping its files and log in `dir`.
    pub fn new(dir: &Path, flash_config: &str, power_on: &str, bridge: &str, power_off: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let logs = Logs::new(&dir.join("bridge.log"))?;
        Ok(Self {
            flash_config: flash_config.into(),
            power_on: power_on.into(),
            bridge: bridge.into(),
            power_off: power_off.into(),
            erase_store: String::new(),
            dir: dir.to_path_buf(),
            logs,
            bridge_child: None,
        })
    }

    /// Fills in a command's placeholders.
    pub fn expand(template: &str, config_block: &Path, broker: Option<SocketAddr>) -> String {
        let mut text = template.replace("{config_block}", &config_block.display().to_string());
        if let Some(broker) = broker {
            text = text.replace("{broker_host}", &broker.ip().to_string());
            text = text.replace("{broker_port}", &broker.port().to_string());
        }
        text
    }

    fn block_path(&self) -> PathBuf {
        self.dir.join("config-block.bin")
    }

    fn run(&self, what: &str, script: &str) -> Result<()> {
        if script.trim().is_empty() {
            return Ok(());
        }
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        let (status, stdout, stderr) = run_to_end(command, Duration::from_secs(120))?;
        for line in stdout.lines().chain(stderr.lines()) {
            self.logs.push(line);
        }
        if status.success() {
            Ok(())
        } else {
            Err(HarnessError::Process {
                what: format!("the board's {what} command `{script}` failed: {status}"),
                log: self.logs.path().to_path_buf(),
            })
        }
    }
}

impl Board for CommandBoard {
    fn install_config(&mut self, block: &[u8]) -> Result<()> {
        let path = self.block_path();
        std::fs::write(&path, block).map_err(io(format!("cannot write {}", path.display())))?;
        self.run("flash_config", &Self::expand(&self.flash_config, &path, None))
    }

    fn power_on(&mut self, broker: SocketAddr) -> Result<()> {
        let block = self.block_path();
        let mut command = Command::new("sh");
        command.args(["-c", &Self::expand(&self.bridge, &block, Some(broker))]);
        self.bridge_child = Some(ChildProcess::spawn("serial bridge", command, &self.logs)?);
        self.run("power_on", &Self::expand(&self.power_on, &block, Some(broker)))
    }

    fn power_off(&mut self) -> Result<()> {
        let block = self.block_path();
        self.run("power_off", &Self::expand(&self.power_off, &block, None))?;
        match self.bridge_child.as_mut() {
            Some(child) => child.kill(),
            None => Ok(()),
        }
    }

    fn is_powered(&mut self) -> bool {
        self.bridge_child.as_mut().is_some_and(ChildProcess::is_running)
    }

    fn logs(&self) -> &Logs {
        &self.logs
    }

    fn erase_store(&mut self) -> Result<()> {
        if self.erase_store.trim().is_empty() {
            return Err(HarnessError::Unavailable {
                what: "erasing this board's store".into(),
                how: "set CommandBoard::erase_store to a command that erases its store partition".into(),
            });
        }
        let block = self.block_path();
        self.run("erase_store", &Self::expand(&self.erase_store, &block, None))
    }
}

/// A board as a [`Device`]: powered on with its link bridged to its fault proxy.
pub struct BoardDevice {
    id: String,
    board: Box<dyn Board>,
    broker: SocketAddr,
}

impl std::fmt::Debug for BoardDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoardDevice").field("id", &self.id).field("broker", &self.broker).finish_non_exhaustive()
    }
}

impl BoardDevice {
    /// Device `id` on `board`, connecting through `broker` (its proxy). The config block
    /// must already be installed.
    pub fn new(id: &str, board: Box<dyn Board>, broker: SocketAddr) -> Self {
        Self { id: id.to_string(), board, broker }
    }
}

impl Device for BoardDevice {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Mcu
    }

    fn start(&mut self) -> Result<()> {
        self.board.power_on(self.broker)
    }

    fn power_cut(&mut self) -> Result<()> {
        self.board.power_off()
    }

    fn stop(&mut self) -> Result<()> {
        // A board has no clean shutdown: its last-will says it went.
        self.board.power_off()
    }

    fn is_running(&mut self) -> bool {
        self.board.is_powered()
    }

    fn logs(&self) -> &Logs {
        self.board.logs()
    }

    fn wipe_store(&mut self) -> Result<()> {
        self.board.power_off()?;
        self.board.erase_store()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn command_placeholders_are_filled_in() {
        let broker: SocketAddr = "127.0.0.1:4711".parse().unwrap();
        let text = CommandBoard::expand(
            "socat /dev/ttyUSB0,raw TCP:{broker_host}:{broker_port}; flash {config_block}",
            Path::new("/tmp/b.bin"),
            Some(broker),
        );
        assert_eq!(text, "socat /dev/ttyUSB0,raw TCP:127.0.0.1:4711; flash /tmp/b.bin");
    }
}
