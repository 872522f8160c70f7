//! Where the fleet's binaries are, and how the demo builds them.
//!
//! Why next to the running executable: `cargo test` and `cargo run` put every binary of
//! the workspace in one profile directory (`target/debug/`), and a test binary lives one
//! level down (`target/debug/deps/`). Looking there finds the `fleetctl` and
//! `fleet-agent` built by the same cargo, with the same profile and target dir, without
//! any configuration. `FLEET_BIN_DIR` overrides it (to test installed binaries).
//!
//! A test cannot make cargo build another package's binaries for it, so the suite relies
//! on [`BUILD_COMMAND`] having run (CI's `cargo test --workspace` builds both, since both
//! packages have integration tests) and fails with that command when a binary is missing.
//! The demo, which a newcomer runs first, builds them itself ([`build_fleet_binaries`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{HarnessError, Result};

/// The command that builds the binaries the harness runs.
pub const BUILD_COMMAND: &str = "cargo build -p fleet-controller -p fleet-agent --bins";

/// The controller's binary.
pub const FLEETCTL: &str = "fleetctl";
/// The Linux agent's binary.
pub const FLEET_AGENT: &str = "fleet-agent";

/// The directory holding the workspace's binaries for the running profile.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLEET_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|name| name == "deps") {
        return dir.parent().map(Path::to_path_buf).unwrap_or(dir);
    }
    dir
}

/// The path of binary `name`, or [`HarnessError::MissingBinary`] naming [`BUILD_COMMAND`].
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingBinary { name: name.to_string(), path, command: build_command_for_profile() })
    }
}

/// The cargo profile the binaries were built with, from the directory's name.
fn profile_args() -> Vec<String> {
    match bin_dir().file_name().and_then(|n| n.to_str()) {
        Some("release") => vec!["--release".into()],
        Some(name) if name != "debug" && !name.is_empty() => vec!["--profile".into(), name.into()],
        _ => Vec::new(),
    }
}

fn build_command_for_profile() -> String {
    let extra = profile_args();
    if extra.is_empty() { BUILD_COMMAND.to_string() } else { format!("{BUILD_COMMAND} {}", extra.join(" ")) }
}

/// The workspace's root (where `Cargo.toml` lists the members).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Builds `fleetctl` and `fleet-agent` with the cargo that runs us (`$CARGO`, else
/// `cargo` on the PATH), in the same profile; cargo makes this a no-op when they are up
/// to date.
pub fn build_fleet_binaries() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace_dir())
        .args(["build", "-p", "fleet-controller", "-p", "fleet-agent", "--bins"])
        .args(profile_args());
    let shown = build_command_for_profile();
    let status = command
        .status()
        .map_err(|e| HarnessError::Build { command: shown.clone(), status: format!("cannot run cargo: {e}") })?;
    if status.success() { Ok(()) } else { Err(HarnessError::Build { command: shown, status: status.to_string() }) }
}

/// Finds a program on `PATH` or in the system directories Debian packages use
/// (`mosquitto` lives in `/usr/sbin`, which is not on every user's PATH).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_build_command() {
        let error = binary("no-such-fleet-binary").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("cargo build -p fleet-controller -p fleet-agent --bins"), "{error}");
    }
}
