//! `fleet-demo`: a whole fleet on this machine, one job, its results, in under a minute.
//!
//! This is the first thing a newcomer runs (`cargo run -p fleet-hil-tests --bin
//! fleet-demo`), so it does what an operator would do and says so at each step, with the
//! command it runs: build the binaries, start the controller with its embedded broker,
//! provision and start three Linux agents (and an emulated microcontroller board when
//! the firmware image and QEMU are there), push the `hello` job to all of them, print
//! the results, and stop everything cleanly. It exits non-zero if any step fails.
//!
//! The emulated board is the point of the demo as much as the gateways: the same signed
//! job runs on both. So the demo builds the firmware itself (a nested cargo build in
//! `firmware-sdk/`, its own target dir) when the `thumbv7em-none-eabihf` target is
//! installed and runs a board when `qemu-system-arm` is there, and says what to install
//! when either is missing. A first run builds a lot (wasmtime, the firmware): the demo
//! says up front how long that takes on a 2-core machine and keeps saying that it is
//! still building.
//!
//! Flags: `--no-board` (Linux agents only), `--keep` (keep the fleet's directory),
//! `--no-build` (use the fleet's binaries as they are: the demo's own test runs it so,
//! inside a `cargo test` that has built them; the firmware is still built if missing).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use fleet_hil::board::{FIRMWARE_BUILD, QemuBoard, qemu_boards_available};
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

/// Prints a line every 30 s while `work` runs, so a long first build never looks stuck.
fn while_saying<T>(what: &str, work: impl FnOnce() -> T) -> T {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (done, what) = (done.clone(), what.to_string());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut next = 30;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let secs = started.elapsed().as_secs();
                if secs >= next {
                    println!("      ... still {what} ({}m{:02}s so far)", secs / 60, secs % 60);
                    next += 30;
                }
            }
        })
    };
    let result = work();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ticker.join();
    result
}

/// Whether the Rust standard library for the boards' target is installed.
fn firmware_target_installed() -> bool {
    let sysroot = std::process::Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
    sysroot.is_some_and(|root| std::path::Path::new(&root).join("lib/rustlib/thumbv7em-none-eabihf/lib").is_dir())
}

/// Builds the firmware and finds QEMU, or says why there is no board and how to get one.
fn emulated_board() -> Option<std::path::PathBuf> {
    if !firmware_target_installed() {
        println!("      (no emulated board: the firmware needs `rustup target add thumbv7em-none-eabihf`)");
        return None;
    }
    if fleet_hil::bins::find_program("qemu-system-arm").is_none() {
        println!(
            "      (no emulated board: install QEMU, `sudo apt-get install qemu-system-arm`, and run the demo again)"
        );
        return None;
    }
    println!("      building the firmware for the emulated Cortex-M4 board: cd firmware-sdk && {FIRMWARE_BUILD}");
    match while_saying("building the firmware", fleet_hil::board::build_firmware_image) {
        Ok(_) => match qemu_boards_available() {
            Ok(image) => Some(image),
            Err(why) => {
                println!("      (no emulated board: {why})");
                None
            }
        },
        Err(why) => {
            println!("      (no emulated board: {why})");
            None
        }
    }
}

fn demo(with_board: bool, keep: bool, build: bool) -> anyhow::Result<()> {
    println!("fleet-demo: a controller, its MQTT broker, Linux gateways and an emulated microcontroller on this");
    println!("machine, running one signed job. The first run builds everything: on a 2-core machine about 8");
    println!(
        "minutes for fleetctl and fleet-agent (wasmtime) and 3 for the firmware; afterwards it starts in seconds."
    );

    step(1, &format!("building the fleet's binaries: {}", bins::BUILD_COMMAND));
    if build {
        while_saying("building fleetctl and fleet-agent", bins::build_fleet_binaries)?;
    } else {
        bins::binary(bins::FLEETCTL)?;
        bins::binary(bins::FLEET_AGENT)?;
    }
    println!("      using {}", bins::bin_dir().display());
    let board_image = if with_board { emulated_board() } else { None };

    let mut fleet = Fleet::new(FleetOptions::named("demo"))?;
    if keep {
        fleet.keep_dir();
    }

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

    step(
        4,
        "pushing the hello job to every device, gateways and board alike: fleetctl job push hello.wasm --all --wait",
    );
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
    println!("      DEVICE   KIND   STATE      OUTPUT");
    let kinds: std::collections::BTreeMap<String, String> =
        fleet.device_records()?.into_iter().map(|d| (d.id, d.kind)).collect();
    for (device, execution) in record.latest() {
        let kind = kinds.get(device).map_or("-", String::as_str);
        println!(
            "      {:<8} {:<6} {:<10} {}",
            device,
            kind,
            execution.state,
            execution.output.as_deref().unwrap_or("-")
        );
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
