//! What can go wrong in the harness itself, as opposed to what a scenario asserts.
//!
//! Why a typed error: when a scenario fails, the first question is "is the fleet wrong,
//! or the test bench?". A [`HarnessError`] says which part of the bench failed and what
//! to do about it (build the binaries, install QEMU, read this log), so a red run is
//! never a bare `Os { code: 2 }`.

use std::path::PathBuf;
use std::time::Duration;

/// The harness's result type.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Why the harness could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A fleet binary is not where the harness looks for it.
    #[error("{name} not found at {path}; build the fleet binaries first: `{command}`")]
    MissingBinary {
        /// The binary's name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
        /// The command that builds it.
        command: String,
    },
    /// Building the fleet binaries failed.
    #[error("`{command}` failed ({status}); fix the build and try again")]
    Build {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
    },
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A process could not be started, or exited when it should not have.
    #[error("{what}; see its log: {log}")]
    Process {
        /// What happened.
        what: String,
        /// Its log file.
        log: PathBuf,
    },
    /// A `fleetctl` command failed.
    #[error("`fleetctl {args}` exited with {status}: {stderr}")]
    Fleetctl {
        /// Its arguments.
        args: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A hang guard fired: something the fleet should have done did not happen.
    #[error("gave up after {after:?} waiting for {what}; last seen: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        after: Duration,
        /// The last state observed, for the diagnosis.
        last: String,
    },
    /// Output that should be JSON (or a status document) was not.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What was parsed.
        what: String,
        /// Why it did not parse.
        detail: String,
    },
    /// An MQTT operation failed.
    #[error("MQTT: {0}")]
    Mqtt(String),
    /// Something the harness needs is not installed or not built.
    #[error("{what} is not available: {how}")]
    Unavailable {
        /// What is missing.
        what: String,
        /// How to get it.
        how: String,
    },
    /// The harness was asked for something that does not exist (an unknown device id).
    #[error("{0}")]
    Usage(String),
}

/// Wraps an I/O error with what was being done.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}
