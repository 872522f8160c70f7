//! `fleetctl`: the operator's command line, and `fleetctl serve`, the controller.
//!
//! Commands act through the controller's HTTPS API: a remote one (`--server`,
//! `FLEET_SERVER`, or the profile `fleetctl login` stored) or the `serve` running on
//! the data directory, found through its lock file. With no `serve` running they work
//! on the data directory's database itself, and a `serve` started later acts on what
//! they wrote (see `backend` and the crate README, "How fleetctl and serve
//! cooperate").
//!
//! Exit codes: 0 success; 1 a job finished with failures (or was aborted or canceled);
//! 2 a usage or input error (what to do next is printed); 3 anything else (I/O,
//! database, broker).

mod backend;
mod device;
mod examples;
mod fmt;
mod job;
mod misc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fleet_controller::datadir::DataDirError;
use fleet_controller::store::StoreError;

/// Manage a fleet of devices running WebAssembly jobs over MQTT.
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, propagate_version = true)]
struct Cli {
    /// The data directory: database, keys, credentials.
    #[arg(long, global = true, default_value = "./fleet-data", env = "FLEET_DATA_DIR")]
    data_dir: PathBuf,

    #[command(flatten)]
    server: backend::ServerArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (and the embedded MQTT broker, unless --broker is given).
    Serve(misc::ServeArgs),
    /// Provision and inspect devices.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Push, inspect and cancel jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// A live view of devices and jobs.
    Watch(misc::WatchArgs),
    /// The controller's state and counters.
    Status(JsonFlag),
    /// The audit log of operator actions, newest first.
    Audit(misc::AuditArgs),
    /// Manage signing keys (on the controller's machine: works on the data directory's
    /// key files, with or without a running serve).
    #[command(subcommand)]
    Key(misc::KeyCommand),
    /// Configuration for an external broker, and the read-only observer login (on the
    /// controller's machine: works on the data directory).
    #[command(subcommand)]
    Broker(misc::BrokerCommand),
    /// The operator API's tokens: create (shown once), list, revoke.
    #[command(subcommand)]
    Token(misc::TokenCommand),
    /// Check a token against a controller's API and store it as this user's profile
    /// (then every command uses that controller).
    Login(misc::LoginArgs),
    /// Write the example jobs (hello.wasm, csv-summary.wasm, ...) and a sample sensor
    /// file into a directory, to push to a fleet. Needs no server.
    Examples {
        /// Where to write them.
        #[arg(default_value = "./examples")]
        dir: PathBuf,
    },
}

/// `--json` for read commands.
#[derive(Debug, Clone, Copy, Args)]
struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// An error the user can fix: exit code 2, with a hint.
#[derive(Debug)]
pub struct UsageError {
    message: String,
    help: Option<String>,
}

impl UsageError {
    /// An input error with a hint about what to do next.
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        Self { message: message.into(), help: Some(help.into()) }
    }

    /// An input error without a hint.
    pub fn plain(message: impl Into<String>) -> Self {
        Self { message: message.into(), help: None }
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// What a command returns: its exit code, or an error.
pub type Outcome = anyhow::Result<ExitCode>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let backend = || backend::Backend::resolve(&cli.data_dir, &cli.server);
    let result = match cli.command {
        Command::Serve(args) => misc::serve(&cli.data_dir, args),
        Command::Device(command) => device::run(backend, command),
        Command::Job(command) => backend().and_then(|b| job::run(&b, command)),
        Command::Watch(args) => backend().and_then(|b| misc::watch(&b, args)),
        Command::Status(flag) => backend().and_then(|b| misc::status(&b, flag.json)),
        Command::Audit(args) => backend().and_then(|b| misc::audit(&b, args)),
        Command::Key(command) => misc::key(&cli.data_dir, command),
        Command::Broker(command) => misc::broker(&cli.data_dir, command),
        Command::Token(command) => backend().and_then(|b| misc::token(&b, command)),
        Command::Login(args) => misc::login(args, cli.server.ca.clone()),
        Command::Examples { dir } => examples::write(&dir),
    };
    match result {
        Ok(code) => code,
        Err(error) => report(&error),
    }
}

/// Prints an error cargo-style and picks the exit code.
fn report(error: &anyhow::Error) -> ExitCode {
    if let Some(usage) = error.downcast_ref::<UsageError>() {
        eprintln!("error: {}", usage.message);
        if let Some(help) = &usage.help {
            eprintln!("  help: {help}");
        }
        return ExitCode::from(2);
    }
    if let Some(usage) = environment_error(error) {
        return report(&anyhow::Error::new(usage));
    }
    eprintln!("error: {error:#}");
    let help = error.chain().find_map(|cause| {
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            return match store {
                StoreError::NoJob(_) | StoreError::AmbiguousJob(_) => Some("run `fleetctl job list` to see job ids"),
                StoreError::NoDevice(_) => Some("run `fleetctl device list` to see device ids"),
                StoreError::DeviceExists(_) => {
                    Some("pick another id, or re-provision it with `fleetctl device provision ID --replace --out DIR`")
                }
                StoreError::TooNew { .. } => Some("this data directory was written by a newer fleetctl"),
                _ => None,
            };
        }
        if let Some(DataDirError::NotInitialised(_)) = cause.downcast_ref::<DataDirError>() {
            return Some("check --data-dir (or FLEET_DATA_DIR)");
        }
        None
    });
    if let Some(help) = help {
        eprintln!("  help: {help}");
    }
    let usage = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<StoreError>(),
            Some(
                StoreError::NoJob(_)
                    | StoreError::AmbiguousJob(_)
                    | StoreError::NoDevice(_)
                    | StoreError::DeviceExists(_)
            )
        ) || matches!(cause.downcast_ref::<DataDirError>(), Some(DataDirError::NotInitialised(_)))
    });
    ExitCode::from(if usage { 2 } else { 3 })
}

/// Errors of the environment the operator can fix (an address in use, a data directory
/// another `serve` holds), as usage errors with what to do.
fn environment_error(error: &anyhow::Error) -> Option<UsageError> {
    use fleet_controller::server::ServeError;
    for cause in error.chain() {
        let data_dir = match cause.downcast_ref::<ServeError>() {
            Some(ServeError::DataDir(data_dir)) => Some(data_dir),
            _ => cause.downcast_ref::<DataDirError>(),
        };
        if let Some(already @ DataDirError::AlreadyServed { .. }) = data_dir {
            return Some(UsageError::new(
                already.to_string(),
                "one controller per data directory: stop that one first, or give this one another --data-dir",
            ));
        }
        if let Some(ServeError::Api(fleet_controller::api::ApiError::Bind { addr, source })) =
            cause.downcast_ref::<ServeError>()
        {
            let help = match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "something else (another fleetctl serve?) listens there: stop it, or pick another address with --api-listen"
                }
                _ => "pick another address with --api-listen",
            };
            return Some(UsageError::new(format!("cannot listen on {addr} for the operator API: {source}"), help));
        }
        if let Some(ServeError::Broker(fleet_broker::BrokerError::Bind { addr, source })) =
            cause.downcast_ref::<ServeError>()
        {
            let help = match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "another MQTT broker (or another fleetctl serve) listens there: stop it, or pick another address with --listen"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges: pick a port above 1023 with --listen"
                }
                _ => "pick another address with --listen",
            };
            return Some(UsageError::new(format!("cannot listen on {addr}: {source}"), help));
        }
    }
    None
}

/// Who is acting, for the audit log.
pub fn actor() -> String {
    std::env::var("USER").ok().filter(|user| !user.is_empty()).unwrap_or_else(|| "fleetctl".to_string())
}
