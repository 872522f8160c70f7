//! `fleet-agent`: the Linux gateway agent. See the library docs and README.md.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fleet_agent::settings::{Overrides, Settings};
use tracing_subscriber::EnvFilter;

/// Runs signed WebAssembly jobs from the fleet controller on this machine.
///
/// Reads the device config written by `fleetctl device provision` (agent.json) and,
/// if present, local settings from agent.toml beside it. Logs go to stderr; set
/// RUST_LOG (e.g. RUST_LOG=fleet_agent=debug) for more.
#[derive(Debug, Parser)]
#[command(name = "fleet-agent", version)]
struct Cli {
    /// The device config (agent.json) written by `fleetctl device provision`.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where the agent keeps its store [default: a `state` folder beside the config].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// A data input jobs may read: NAME=PATH (repeatable; overrides agent.toml).
    #[arg(long, value_name = "NAME=PATH")]
    data: Vec<String>,
    /// Executions that may run at once [default: 1, or agent.toml's `concurrency`].
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Local settings file to read instead of agent.toml beside the config.
    #[arg(long, value_name = "FILE")]
    local: Option<PathBuf>,
    /// ONNX Runtime's shared library (libonnxruntime.so from the onnxruntime or
    /// onnxruntime-gpu wheel): offer wasi-nn inference to jobs on it. Without it (or
    /// agent.toml's `onnxruntime`), ORT_DYLIB_PATH is tried.
    #[arg(long, value_name = "FILE")]
    onnxruntime: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let overrides = Overrides {
        state_dir: cli.state_dir,
        data: cli.data,
        concurrency: cli.concurrency,
        local_file: cli.local,
        onnxruntime: cli.onnxruntime,
    };
    let settings = Settings::load(&cli.config, &overrides)
        .with_context(|| format!("cannot load the settings from {}", cli.config.display()))?;
    fleet_agent::run(settings).context("fleet-agent stopped")
}
