//! `fleet-bench`: the fleet's figures side by side with its peers, in one run.
//!
//! ```text
//! cargo run --release -p fleet-bench            # the full table (several minutes)
//! cargo run --release -p fleet-bench -- --quick # a routine check (under 2 minutes)
//! ```
//!
//! Every figure is a row `figure | ours | peer | ratio | conditions`, printed as a
//! Markdown table so README can carry it as printed. The peer is measured in the same
//! run on the same machine where it runs here (mosquitto, wasmi); where the peer is a
//! published figure (AWS IoT Jobs' rollout ceiling) the conditions say so; where no peer
//! applies the column says `-`.
//!
//! | module | figures |
//! |---|---|
//! | [`fanout`] | one job to N devices; push-to-result latency; jobs per second to 1,000 devices |
//! | [`micro`] | event ingest into SQLite, envelope verification, wasmtime against wasmi |
//! | [`tls`] | what MQTT over TLS costs a connection: connect time, controller memory |
//! | [`footprint`] | `fleet-agent` binary size and memory, firmware flash and RAM |
//!
//! The devices of the fleet figures are simulated in this process ([`swarm`] says what
//! that keeps real); the controller and the brokers are the real ones ([`fleet`]).

mod fanout;
mod fleet;
mod footprint;
mod inference;
mod micro;
mod swarm;
mod table;
mod tls;

use std::time::Instant;

use clap::Parser;

use crate::table::Table;

/// The fleet's benchmark suite.
#[derive(Debug, Parser)]
#[command(name = "fleet-bench", version)]
struct Cli {
    /// A routine run: fewer devices and samples, under 2 minutes.
    #[arg(long)]
    quick: bool,
    /// Devices in the fan-out (default: 10,000; 1,000 with --quick).
    #[arg(long)]
    devices: Option<usize>,
    /// Only these figure groups (fanout, latency, throughput, tls, ingest, crypto,
    /// runtimes, inference, footprint); all when left out.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Leave out the mosquitto columns (for a machine without mosquitto).
    #[arg(long)]
    no_mosquitto: bool,
}

impl Cli {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let started = Instant::now();
    let mut table = Table::new();
    let machine = table::machine();
    println!(
        "fleet-bench {} ({} mode) on {machine}",
        env!("CARGO_PKG_VERSION"),
        if cli.quick { "quick" } else { "full" }
    );
    if cfg!(debug_assertions) {
        println!("note: a debug build; run with --release for figures worth comparing");
    }

    // The fleets run the real `fleetctl serve` (and the footprint the real fleet-agent):
    // built once, in this build's profile.
    if ["fanout", "latency", "throughput", "tls", "footprint"].iter().any(|g| cli.wants(g)) {
        fleet_hil::bins::build_fleet_binaries()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let fleet_settings = fanout::Settings::new(cli.quick, cli.devices, !cli.no_mosquitto);
    if cli.wants("fanout") {
        runtime.block_on(fanout::fan_out(&fleet_settings, &mut table))?;
    }
    if cli.wants("latency") {
        runtime.block_on(fanout::latency(&fleet_settings, &mut table))?;
    }
    if cli.wants("throughput") {
        runtime.block_on(fanout::throughput(&fleet_settings, &mut table))?;
    }
    if cli.wants("tls") {
        runtime.block_on(tls::connection_cost(cli.quick, &mut table))?;
    }
    if cli.wants("ingest") {
        micro::ingest(cli.quick, &mut table)?;
    }
    if cli.wants("crypto") {
        micro::crypto(cli.quick, &mut table)?;
    }
    if cli.wants("runtimes") {
        micro::runtimes(cli.quick, &mut table)?;
    }
    if cli.wants("inference") {
        inference::inference(cli.quick, &mut table)?;
    }
    if cli.wants("footprint") {
        runtime.block_on(footprint::footprint(cli.quick, &mut table))?;
    }
    drop(runtime);

    println!();
    println!("{}", table.markdown());
    println!("{} rows in {:.0} s on {machine}", table.len(), started.elapsed().as_secs_f64());
    Ok(())
}
