//! Host-side harness for the firmware: build the images, run them in QEMU, measure them.
//!
//! The firmware's checks run on the emulated board and report through semihosting (an
//! exit code and lines on stdout); this crate is what lets `cargo test` drive them: it
//! builds the board's binaries for `thumbv7em-none-eabihf` with the same cargo, starts
//! `qemu-system-arm -M mps2-an386` with a timeout, and hands back the exit code and
//! output. A missing QEMU or broker is a failure with the command that installs it, not
//! a silent skip: CI installs both, and a test that skips proves nothing.

pub mod board;
pub mod broker;
pub mod fleet;
pub mod provision;
pub mod proxy;
pub mod size;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The firmware's target triple.
pub const TARGET: &str = "thumbv7em-none-eabihf";
/// The board package.
pub const BOARD_PACKAGE: &str = "fleet-board-mps2-an386";

/// The `firmware-sdk/` workspace root.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Where cargo puts the firmware: `$CARGO_TARGET_DIR` or `firmware-sdk/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_dir().join("target"))
}

/// Builds every firmware image of the board (release profile) once per test process
/// and returns the path of the image `bin`.
pub fn firmware(bin: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_dir())
            .args(["build", "--release", "--target", TARGET, "-p", BOARD_PACKAGE, "--bins"])
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("building the firmware failed: {status}")) }
    });
    if let Err(error) = built {
        panic!(
            "{error} (build it by hand: cd firmware-sdk && cargo build --release --target {TARGET} -p {BOARD_PACKAGE})"
        );
    }
    target_dir().join(TARGET).join("release").join(bin)
}

/// Finds a program on `PATH` or in the system directories a Debian package puts it.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `qemu-system-arm`, or a failure saying how to install it.
pub fn qemu() -> PathBuf {
    find_program("qemu-system-arm").unwrap_or_else(|| {
        panic!(
            "qemu-system-arm is not installed: the firmware tests run the images on an emulated \
             mps2-an386 board. Install it with `apt-get install -y qemu-system-arm` (Debian/Ubuntu) \
             and run the tests again."
        )
    })
}

/// What a QEMU run ended with.
#[derive(Debug)]
pub struct Run {
    /// QEMU's exit code (the firmware's semihosting exit: 0 pass, 1 fail), `None` if it
    /// was killed.
    pub code: Option<i32>,
    /// Whether it ran past its timeout and was killed.
    pub timed_out: bool,
    /// Semihosting stdout.
    pub stdout: String,
    /// Semihosting stderr and QEMU's own messages.
    pub stderr: String,
}

impl Run {
    /// Whether the firmware exited with 0.
    pub fn passed(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}{}\n--- stdout\n{}--- stderr\n{}",
            self.code,
            if self.timed_out { " (timed out, killed)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

/// A QEMU command for `elf` on mps2-an386 with semihosting, its UART on `serial`
/// (`null`, `stdio`, `tcp:127.0.0.1:PORT`), run in `dir` (where the flash file lives).
pub fn qemu_command(elf: &Path, dir: &Path, serial: &str) -> Command {
    let mut command = Command::new(qemu());
    command
        .current_dir(dir)
        .args(["-M", "mps2-an386", "-display", "none", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native", "-serial", serial, "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a QEMU command to its end or `timeout`, whichever is first.
pub fn run_to_end(mut command: Command, timeout: Duration) -> Run {
    let child = command.spawn().unwrap_or_else(|e| panic!("cannot start qemu-system-arm: {e}"));
    wait_with_timeout(child, timeout)
}

/// Waits for `child` for at most `timeout`, killing it after.
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Run {
    let start = Instant::now();
    let mut timed_out = false;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    match child.wait_with_output() {
        Ok(output) => Run {
            code: output.status.code(),
            timed_out,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        Err(e) => Run { code: None, timed_out, stdout: String::new(), stderr: format!("cannot collect output: {e}") },
    }
}

/// A fresh empty directory under the system temp dir, for one test's flash file.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleet-fw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on loopback: {e}"))
}

/// The value after `key` on a `key value` line of the firmware's output.
pub fn field<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output.lines().find_map(|line| line.strip_prefix(prefix)).map(str::trim)
}
