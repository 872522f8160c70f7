//! The fault scenarios: the whole fleet (real `fleetctl serve`, real `fleet-agent`s,
//! QEMU boards running the firmware agent) under the faults fleets meet in the field.
//!
//! Each scenario builds its own fleet of at least 8 devices in a temp dir, injects its
//! faults, then checks the outcome twice: in the controller's records (`fleetctl job
//! status --json`, `device list --json`, `status --json`) and on the retained MQTT
//! topics that devices and dashboards read. Nothing is timed: every wait is "until the
//! fleet has done X", with a generous hang guard.
//!
//! Why a harness of our own (`harness = false`): a scenario is 8 to 10 processes, which
//! is what two CI cores carry, so they run one after another, not in libtest's parallel
//! threads; and the summary table (scenario, devices, faults, results expected and
//! recorded) is printed once, after the last one. The runner speaks enough of libtest's
//! command line (`NAME` filters, `--exact`, `--list`, `--ignored`, `--include-ignored`)
//! and prints its closing `test result:` line, so `cargo test` and CI read it as usual.
//!
//! Environment: `FLEET_HIL_BOARDS=0` runs Linux agents only; `FLEET_HIL_REQUIRE_BOARDS=1`
//! fails when the firmware image cannot be built instead of falling back to Linux
//! agents; `FLEET_HIL_KEEP=1` keeps every fleet's directory (a failed scenario's is
//! always kept, and the tail of every log printed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s01_mixed_fleet;
mod s02_links_cut;
mod s03_broker_restart;
mod s04_controller_restart;
mod s05_power_cycle;
mod s06_offline_device;
mod s07_forged_envelopes;
mod s08_hostile_wasm;
mod s09_cancel_abort;
mod s10_topic_acl;
mod s11_inference;
mod s12_store_wiped;
mod s13_tls_everywhere;
mod s14_c_job;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fleet_hil::bins::{FLEET_AGENT, FLEETCTL, binary};
use fleet_hil::board::{QemuBoard, build_firmware_image};
use fleet_hil::report::{Row, render};
use fleet_hil::{DeviceKind, Fleet, FleetOptions, Result};
use fleet_schemas::status::from_json;
use fleet_schemas::{DeviceStatus, JobStatus, Presence};

/// One scenario.
struct Scenario {
    name: &'static str,
    run: fn(&Bench) -> Result<Row>,
    /// Why it does not run by default, if it does not.
    ignore: Option<&'static str>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario { name: "s01_mixed_fleet_one_job_all_succeed", run: s01_mixed_fleet::run, ignore: None },
    Scenario { name: "s02_links_cut_mid_execution", run: s02_links_cut::run, ignore: None },
    Scenario { name: "s03_broker_restart_during_rollout", run: s03_broker_restart::run, ignore: None },
    Scenario { name: "s04_controller_restart_during_rollout", run: s04_controller_restart::run, ignore: None },
    Scenario {
        name: "s04b_controller_restart_between_batches",
        run: s04_controller_restart::run_between_batches,
        ignore: None,
    },
    Scenario { name: "s05_power_cycle_during_job", run: s05_power_cycle::run, ignore: None },
    Scenario { name: "s06_offline_device_gets_job_or_times_out", run: s06_offline_device::run, ignore: None },
    Scenario { name: "s07_forged_replayed_expired_misdirected", run: s07_forged_envelopes::run, ignore: None },
    Scenario { name: "s08_hostile_wasm", run: s08_hostile_wasm::run, ignore: None },
    Scenario { name: "s09_cancel_and_abort_threshold", run: s09_cancel_abort::run, ignore: None },
    Scenario { name: "s09b_cancel_running_job_on_boards", run: s09_cancel_abort::run_on_boards, ignore: None },
    Scenario { name: "s10_device_refused_other_devices_topics", run: s10_topic_acl::run, ignore: None },
    Scenario { name: "s11_inference_runs_where_the_data_is", run: s11_inference::run, ignore: None },
    Scenario { name: "s12_store_wiped_mid_rollout", run: s12_store_wiped::run, ignore: None },
    Scenario { name: "s13_tls_on_every_link", run: s13_tls_everywhere::run, ignore: None },
    Scenario { name: "s14_a_c_job_to_the_whole_fleet", run: s14_c_job::run, ignore: None },
];

/// What every scenario shares: the boards, if they can run here.
pub struct Bench {
    board_image: Option<PathBuf>,
    board_note: String,
}

/// How many of a fleet's devices are boards, when boards are available.
const BOARDS: usize = 2;

impl Bench {
    fn without_boards(why: &str) -> Self {
        Self { board_image: None, board_note: format!("Linux agents only: {why}") }
    }

    /// A fleet of `size` devices, not started: `size - 2` Linux agents `gw-NN` and 2 QEMU
    /// boards `mcu-NN` (all Linux agents when boards are unavailable). Labels:
    /// `kind=gw|mcu`.
    pub fn fleet(&self, name: &str, size: usize) -> Result<Fleet> {
        self.fleet_with(FleetOptions::named(name), size)
    }

    /// Like [`Bench::fleet`], with options.
    pub fn fleet_with(&self, options: FleetOptions, size: usize) -> Result<Fleet> {
        let mut fleet = Fleet::new(options)?;
        let boards = if self.board_image.is_some() { BOARDS.min(size) } else { 0 };
        for i in 1..=size - boards {
            fleet.add_linux(&format!("gw-{i:02}"), "kind=gw")?;
        }
        if let Some(image) = &self.board_image {
            for i in 1..=boards {
                let id = format!("mcu-{i:02}");
                let board = QemuBoard::provisioned(image, &fleet.device_dir(&id))?;
                fleet.add_board(&id, "kind=mcu", Box::new(board))?;
            }
        }
        Ok(fleet)
    }

    /// `8 (6 linux, 2 qemu)`.
    pub fn describe(&self, fleet: &Fleet) -> String {
        let linux = fleet.ids_of(DeviceKind::Linux).len();
        let mcu = fleet.ids_of(DeviceKind::Mcu).len();
        if mcu > 0 {
            format!("{} ({linux} linux, {mcu} qemu)", linux + mcu)
        } else {
            format!("{linux} ({linux} linux)")
        }
    }

    /// Whether the fleets have boards.
    pub fn has_boards(&self) -> bool {
        self.board_image.is_some()
    }
}

/// Waits until a freshly connected observer gets the *retained* job status of `job`
/// and it passes `check` (a new subscriber sees only what the broker retained).
pub fn retained_job_status(fleet: &mut Fleet, job: &str, check: impl Fn(&JobStatus) -> bool) -> Result<JobStatus> {
    let topic = format!("fleet/jobs/{job}/status");
    let guard = fleet.guard();
    fleet_hil::wait::until(&format!("a retained {topic} that passes the check"), guard, || {
        let observer = fleet.observer()?;
        observer.subscribe(&topic)?;
        let seen = observer.wait_for(&format!("retained {topic}"), Duration::from_secs(5), |messages| {
            messages.iter().find(|m| m.topic == topic && m.retain).cloned().ok_or_else(|| "none".to_string())
        });
        observer.disconnect();
        let Ok(message) = seen else { return Ok(Err("no retained message yet".to_string())) };
        match from_json::<JobStatus>(&message.payload) {
            Ok(status) if check(&status) => Ok(Ok(status)),
            Ok(status) => Ok(Err(format!("{:?} {:?}", status.state, status.counts))),
            Err(e) => Ok(Err(format!("not a job status: {e}"))),
        }
    })
}

/// Waits until a fresh observer gets a retained `online` status for every device.
pub fn retained_devices_online(fleet: &mut Fleet) -> Result<BTreeMap<String, DeviceStatus>> {
    let ids = fleet.ids();
    let guard = fleet.guard();
    fleet_hil::wait::until("a retained online status for every device", guard, || {
        let observer = fleet.observer()?;
        observer.subscribe("fleet/devices/+/status")?;
        let result = observer.wait_for("retained device statuses", Duration::from_secs(5), |messages| {
            let mut online = BTreeMap::new();
            for m in messages.iter().filter(|m| m.retain) {
                if let Ok(status) = from_json::<DeviceStatus>(&m.payload)
                    && status.state == Presence::Online
                    && m.topic == format!("fleet/devices/{}/status", status.device_id)
                {
                    online.insert(status.device_id.to_string(), status);
                }
            }
            let missing: Vec<&String> = ids.iter().filter(|id| !online.contains_key(*id)).collect();
            if missing.is_empty() { Ok(online) } else { Err(format!("not online: {missing:?}")) }
        });
        observer.disconnect();
        Ok(result.map_err(|e| e.to_string()))
    })
}

/// Iterations of sum-compute for a few seconds of work: on wasmtime (Linux agents) and
/// on wasmi in QEMU (boards), which is about 300 times slower.
pub const LINUX_ITERATIONS: &str = "1000000000";
/// See [`LINUX_ITERATIONS`]. Long enough that a harness polling through a loaded CI
/// machine still sees a board's job running before it ends (the fault scenarios cut it
/// then).
pub const BOARD_ITERATIONS: &str = "6000000";

/// Pushes sum-compute to every device: one job for the Linux agents (`kind=gw`), one
/// for the boards (`kind=mcu`) if there are any, each sized for a few seconds. Returns
/// the job ids, Linux first.
pub fn push_compute(fleet: &Fleet) -> Result<Vec<String>> {
    let mut jobs = Vec::new();
    for (kind, iterations) in [("gw", LINUX_ITERATIONS), ("mcu", BOARD_ITERATIONS)] {
        let devices = if kind == "gw" { DeviceKind::Linux } else { DeviceKind::Mcu };
        if fleet.ids_of(devices).is_empty() {
            continue;
        }
        let request = fleet_hil::JobRequest::new(&format!("sum-compute-{kind}"), fleet_example_jobs::SUM_COMPUTE)
            .selector(&format!("kind={kind}"))
            .flag("--arg", iterations)
            .flag("--fuel", "100000000000")
            .flag("--timeout", "120s");
        jobs.push(fleet.push(&request)?);
    }
    Ok(jobs)
}

/// Each device's latest execution state across `jobs` (a device is in one of them).
pub fn states(fleet: &Fleet, jobs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut states = BTreeMap::new();
    for job in jobs {
        for (id, execution) in fleet.job(job)?.latest() {
            states.insert(id.to_string(), execution.state.clone());
        }
    }
    Ok(states)
}

/// The job among `jobs` that device `id` runs.
pub fn job_of(fleet: &Fleet, jobs: &[String], id: &str) -> Result<String> {
    for job in jobs {
        if fleet.job(job)?.latest().contains_key(id) {
            return Ok(job.clone());
        }
    }
    Err(fleet_hil::HarnessError::Usage(format!("{id} runs none of {jobs:?}")))
}

/// Waits until every device's events are recorded and there are exactly `n` of them
/// per device (what the controller acknowledges contiguously): nothing lost, nothing
/// doubled.
pub fn assert_events_recorded(fleet: &Fleet, n: u64) -> Result<()> {
    fleet_hil::wait::until(&format!("{n} events recorded per device"), fleet.guard(), || {
        let off: Vec<(String, u64)> = fleet
            .device_records()?
            .into_iter()
            .filter(|d| d.acked_event_seq != n)
            .map(|d| (d.id, d.acked_event_seq))
            .collect();
        Ok(if off.is_empty() { Ok(()) } else { Err(off) })
    })
}

/// Waits for `job` to end and checks that it completed with one execution per device,
/// each succeeded: nothing lost, nothing run twice. Returns the record.
pub fn assert_succeeded_once(fleet: &Fleet, job: &str) -> Result<fleet_hil::JobRecord> {
    let record = fleet.wait_job(job)?;
    assert_eq!(record.job.state, "completed", "{}", record.outcome_line());
    for (id, execution) in record.latest() {
        assert_eq!(execution.state, "succeeded", "{id}: {execution:?}");
        assert_eq!(record.executions_of(id).len(), 1, "{id} has more than one execution");
    }
    Ok(record)
}

/// Checks the controller's record of a job that every device ran once and succeeded:
/// one execution per device, attempt 1, succeeded, with the hello output.
pub fn assert_all_hello(fleet: &Fleet, job: &str) -> Result<fleet_hil::JobRecord> {
    let record = fleet.wait_job(job)?;
    let ids = fleet.ids();
    assert_eq!(record.job.state, "completed", "{}", record.outcome_line());
    assert_eq!(record.job.total as usize, ids.len());
    assert_eq!(record.job.counts.succeeded as usize, ids.len(), "{:?}", record.job.counts);
    for id in &ids {
        let rows = record.executions_of(id);
        assert_eq!(rows.len(), 1, "{id} has {} executions", rows.len());
        assert_eq!(rows[0].state, "succeeded", "{id}: {:?}", rows[0]);
        assert_eq!(rows[0].output.as_deref(), Some(format!("hello from {id}").as_str()), "{id}");
    }
    Ok(record)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let exact = flag("--exact");
    let (mut filters, mut skips): (Vec<&String>, Vec<&String>) = (Vec::new(), Vec::new());
    let mut value_of: Option<&str> = None;
    for arg in &args {
        match value_of.take() {
            Some("--skip") => skips.push(arg),
            Some(_) => {}
            None if matches!(arg.as_str(), "--test-threads" | "--format" | "--color" | "--logfile" | "--skip") => {
                value_of = Some(arg.as_str());
            }
            None if !arg.starts_with('-') => filters.push(arg),
            None => {}
        }
    }
    let matches = |name: &str, pattern: &str| if exact { name == pattern } else { name.contains(pattern) };
    let selected = |name: &str| {
        (filters.is_empty() || filters.iter().any(|f| matches(name, f))) && !skips.iter().any(|s| matches(name, s))
    };

    if flag("--list") {
        let mut n = 0;
        for scenario in SCENARIOS.iter().filter(|s| selected(s.name)) {
            println!("{}: test", scenario.name);
            n += 1;
        }
        if !flag("--format") {
            println!("\n{n} tests, 0 benchmarks");
        }
        return ExitCode::SUCCESS;
    }

    let (only_ignored, include_ignored) = (flag("--ignored"), flag("--include-ignored"));
    let chosen: Vec<&Scenario> = SCENARIOS.iter().filter(|s| selected(s.name)).collect();
    let filtered_out = SCENARIOS.len() - chosen.len();
    println!("\nrunning {} tests", chosen.len());
    let started = Instant::now();

    let will_run =
        chosen.iter().any(|s| if s.ignore.is_some() { only_ignored || include_ignored } else { !only_ignored });
    let bench = match if will_run { setup() } else { Ok(Bench::without_boards("nothing to run")) } {
        Ok(bench) => bench,
        Err(error) => {
            eprintln!("fleet-hil: cannot run the scenarios: {error}");
            println!(
                "\ntest result: FAILED. 0 passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
                chosen.len(),
                started.elapsed().as_secs_f64()
            );
            return ExitCode::from(101);
        }
    };

    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut ignored_reasons = Vec::new();
    for scenario in chosen {
        let runs = match scenario.ignore {
            Some(_) => only_ignored || include_ignored,
            None => !only_ignored,
        };
        if !runs {
            ignored += 1;
            let why = scenario.ignore.unwrap_or("not selected with --ignored");
            println!("test {} ... ignored, {why}", scenario.name);
            ignored_reasons.push(format!("{}: {why}", scenario.name));
            rows.push(Row { scenario: scenario.name.into(), outcome: "ignored".into(), ..Row::default() });
            continue;
        }
        println!("test {} ... started", scenario.name);
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (scenario.run)(&bench)));
        let seconds = start.elapsed().as_secs();
        match outcome {
            Ok(Ok(mut row)) => {
                passed += 1;
                println!("test {} ... ok ({seconds}s)", scenario.name);
                row.scenario = scenario.name.into();
                row.outcome = "ok".into();
                row.seconds = seconds;
                rows.push(row);
            }
            Ok(Err(error)) => {
                failed += 1;
                println!("test {} ... FAILED ({seconds}s)", scenario.name);
                eprintln!("---- {}: {error}", scenario.name);
                failures.push(format!("{}: {error}", scenario.name));
                rows.push(Row { scenario: scenario.name.into(), outcome: "FAILED".into(), seconds, ..Row::default() });
            }
            Err(panic) => {
                failed += 1;
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("test {} ... FAILED ({seconds}s)", scenario.name);
                failures.push(format!("{}: {message}", scenario.name));
                rows.push(Row { scenario: scenario.name.into(), outcome: "FAILED".into(), seconds, ..Row::default() });
            }
        }
    }

    println!("\nfleet scenarios ({}):\n", bench.board_note);
    print!("{}", render(&rows));
    let retries = fleet_hil::controller::lock_retries();
    if retries > 0 {
        println!(
            "\nnote: {retries} fleetctl command(s) were run again after \"database is locked\" (see hil-tests/README.md)"
        );
    }
    if !ignored_reasons.is_empty() {
        println!("\nignored:");
        for reason in &ignored_reasons {
            println!("    {reason}");
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:");
        for failure in &failures {
            println!("    {failure}");
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        started.elapsed().as_secs_f64()
    );
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(101) }
}

/// Checks the binaries, and builds the firmware image when a chosen scenario runs.
fn setup() -> Result<Bench> {
    binary(FLEETCTL)?;
    binary(FLEET_AGENT)?;
    let wants_boards = std::env::var("FLEET_HIL_BOARDS").map_or(true, |v| v != "0");
    let require = std::env::var("FLEET_HIL_REQUIRE_BOARDS").is_ok_and(|v| v == "1");
    if !wants_boards {
        return Ok(Bench::without_boards("FLEET_HIL_BOARDS=0"));
    }
    match build_firmware_image().and_then(|image| {
        fleet_hil::board::qemu_boards_available()?;
        Ok(image)
    }) {
        Ok(image) => Ok(Bench {
            board_image: Some(image),
            board_note: "2 devices of each fleet are QEMU mps2-an386 boards".into(),
        }),
        Err(error) if !require => {
            eprintln!("fleet-hil: no emulated boards ({error}); the fleets are Linux agents only");
            Ok(Bench::without_boards(&error.to_string()))
        }
        Err(error) => Err(error),
    }
}
