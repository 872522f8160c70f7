//! `fleet-demo`: a whole fleet on this machine, one job, its results, in under a minute.
//!
//! This is the first thing a newcomer runs (`cargo run -p fleet-hil-tests --bin
//! fleet-demo`), so it does what an operator would do and says so at each step, with the
//! command it runs: build the binaries, start the controller with its embedded broker,
//! provision and start three Linux agents (and an emulated microcontroller board when
//! the firmware image and QEMU are there), push the `hello` job to all of them, print
//! the results, and stop everything cleanly. It exits non-zero if any step fails.
//!
//! Flags: `--no-board` (Linux agents only), `--keep` (keep the fleet's directory),
//! `--no-build` (use the binaries as they are: the demo's own test runs it so, inside a
//! `cargo test` that has built them).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use fleet_hil::board::{QemuBoard, qemu_boards_available};
use fleet_hil::{Fleet, FleetOptions, JobRequest, bins};

const AGENTS: [(&str, &str); 3] = [
    ("gw-01", "site=plant-3,role=gateway"),
    ("gw-02", "site=plant-3,role=gateway"),
    ("gw-03", "site=depot,role=gateway"),
];
const BOARD: (&str, &str) = ("mcu-01", "site=plant-3,role=sensor");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: fleet-demo [--no-board] [--keep]\n\nStarts a fleet on this machine, runs the hello job on it, prints the results."
        );
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let flag = |name: &str| args.iter().any(|a| a == name);
    match demo(!flag("--no-board"), flag("--keep"), !flag("--no-build")) {
        Ok(()) => {
            println!(
                "\nfleet-demo: done in {:.0?}. Next: hil-tests/README.md (the fault scenarios), controller/README.md (fleetctl).",
                started.elapsed()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("\nfleet-demo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(n: u32, text: &str) {
    println!("\n[{n}/6] {text}");
}

fn demo(with_board: bool, keep: bool, build: bool) -> anyhow::Result<()> {
    println!("fleet-demo: a controller, its MQTT broker and a few devices on this machine, running one job.");

    step(1, &format!("building the fleet's binaries: {}", bins::BUILD_COMMAND));
    if build {
        bins::build_fleet_binaries()?;
    } else {
        bins::binary(bins::FLEETCTL)?;
        bins::binary(bins::FLEET_AGENT)?;
    }
    println!("      using {}", bins::bin_dir().display());

    let mut fleet = Fleet::new(FleetOptions::named("demo"))?;
    if keep {
        fleet.keep_dir();
    }
    let board_image = if with_board {
        match qemu_boards_available() {
            Ok(image) => Some(image),
            Err(why) => {
                println!("      (no emulated board: {why})");
                None
            }
        }
    } else {
        None
    };

    step(2, "provisioning devices, as an operator would (each gets its agent.json):");
    for (id, labels) in AGENTS {
        fleet.add_linux(id, labels).with_context(|| format!("provisioning {id}"))?;
        println!("      $ fleetctl device provision {id} --labels {labels} --out devices/{id}");
    }
    if let Some(image) = &board_image {
        let (id, labels) = BOARD;
        let board = QemuBoard::provisioned(image, &fleet.device_dir(id))?;
        fleet.add_board(id, labels, Box::new(board)).with_context(|| format!("provisioning {id}"))?;
        println!("      $ fleetctl device provision {id} --kind mcu --labels {labels} --out devices/{id}");
        println!("      $ devices/{id}/flash.sh qemu <firmware agent image>   (QEMU mps2-an386, booted at step 3)");
    }

    step(3, "starting the controller (fleetctl serve, embedded MQTT broker) and the devices");
    fleet.start().context("starting the fleet")?;
    println!("      controller: MQTT on {}, data in {}", fleet.broker_addr(), fleet.fleetctl().data_dir().display());
    for record in fleet.device_records()? {
        println!("      {:<8} {:<6} {}", record.id, record.kind, record.state);
    }

    step(4, "pushing the hello job to every device: fleetctl job push hello.wasm --all --wait");
    let job =
        fleet.push(&JobRequest::new("hello", fleet_example_jobs::HELLO).flag("--timeout", "30s").switch("--wait"))?;
    println!("      job {job}");

    step(5, &format!("results: fleetctl job results {job}"));
    let record = fleet.wait_job(&job)?;
    let results = fleet.results_text(&job)?;
    for line in results.lines() {
        println!("      {line}");
    }
    println!();
    println!("      DEVICE   STATE      OUTPUT");
    for (device, execution) in record.latest() {
        println!("      {:<8} {:<10} {}", device, execution.state, execution.output.as_deref().unwrap_or("-"));
    }
    let total = record.latest().len();
    let succeeded = record.count_latest("succeeded");
    anyhow::ensure!(
        record.job.state == "completed" && succeeded == total,
        "the job ended {} with {}",
        record.job.state,
        record.outcome_line()
    );
    println!("      job {}: {succeeded} of {total} devices succeeded", record.job.state);

    step(6, "shutting down: devices, then the controller (Ctrl-C, as an operator would)");
    let clean = fleet.shutdown()?;
    anyhow::ensure!(clean, "the controller did not stop cleanly; see {}", fleet.controller_logs().path().display());
    println!("      stopped cleanly");
    if keep {
        println!("      the fleet's files (data dir, agent.json files, logs) stay in {}", fleet.dir().display());
    }
    Ok(())
}
