//! `fleetctl job`: push a module to devices, follow it, read its results, cancel it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use fleet_controller::model::{AbortPolicy, Target, parse_labels};
use fleet_controller::operate::{DeviceFilter, ExecutionView, JobView, PushRequest};
use fleet_controller::unix_ms;
use fleet_schemas::{DeviceId, GpuRequirement, JobCounts, Presence};

use crate::backend::Backend;
use crate::fmt::{Table, age, parse_duration, parse_pct, parse_rate, printable, size};
use crate::{Outcome, UsageError};

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Push a WebAssembly module to devices; prints the job id.
    Push(Box<PushArgs>),
    /// List jobs, newest first.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A job's progress, device by device.
    Status {
        /// The job id (or a unique prefix of it); the newest job if left out.
        id: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Wait until the job finishes (exit code 1 if any device did not succeed).
        #[arg(long)]
        wait: bool,
    },
    /// What each device's execution produced: output, logs, fuel, duration.
    Results {
        /// The job id (or a unique prefix of it); the newest job if left out.
        id: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: queued executions are dropped, running ones are told to stop.
    Cancel {
        /// The job id (or a unique prefix of it); the newest job if left out.
        id: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("targets").required(true).args(["target", "selector", "all"])))]
pub struct PushArgs {
    /// The WebAssembly module (.wasm). One that imports wasi-nn (inference) or WASI
    /// preview 1, or a WASI 0.2 component, is sent only to devices whose status says
    /// they offer it.
    module: PathBuf,
    /// A device to run it on (repeat for more).
    #[arg(long, value_name = "ID")]
    target: Vec<String>,
    /// Run it on every device with these labels: k=v,k2=v2.
    #[arg(long, value_name = "LABELS")]
    selector: Option<String>,
    /// Run it on every device.
    #[arg(long)]
    all: bool,
    /// The exported function to call.
    #[arg(long, default_value = "run")]
    entry: String,
    /// An argument for the job (repeat for more).
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// A named data input the job may read on the device (repeat for more).
    #[arg(long = "input", value_name = "NAME")]
    inputs: Vec<String>,
    /// Wall-clock bound of one execution on the device (e.g. 30s; default: the device's).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// How long the controller waits for a result after sending before it marks the
    /// execution timed out [default: timeout + 60s, or 10m].
    #[arg(long, value_parser = parse_duration)]
    deadline: Option<Duration>,
    /// Fuel (instruction) budget of one execution (default: the device's).
    #[arg(long, default_value_t = 0)]
    fuel: u64,
    /// Memory cap in 64 KiB pages (default: the device's).
    #[arg(long, default_value_t = 0)]
    memory_pages: u32,
    /// At most this many devices started per minute: N/min.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<u32>,
    /// Start devices in batches of N; a batch starts when the previous one has finished.
    #[arg(long, value_name = "N")]
    batch: Option<u32>,
    /// Abort once failures pass this percentage of finished devices.
    #[arg(long, value_name = "PCT", value_parser = parse_pct, requires = "abort_min")]
    abort_failures: Option<u8>,
    /// ... counting only once at least N devices have finished.
    #[arg(long, value_name = "N", requires = "abort_failures")]
    abort_min: Option<u32>,
    /// Try a failed or timed-out execution again up to N times.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Also run on devices provisioned later that match the target.
    #[arg(long)]
    continuous: bool,
    /// Accelerator use: `required` sends the job only to devices whose status
    /// advertises a GPU (a device without one would refuse it), `preferred` runs on a
    /// GPU where there is one and on the CPU elsewhere. For jobs using wasi-nn this is
    /// where their inference runs; the report's logs say which it used.
    #[arg(long, default_value = "none", value_parser = ["none", "preferred", "required"])]
    gpu: String,
    /// Wait until the job finishes, with a progress bar (exit code 1 on failures).
    #[arg(long)]
    wait: bool,
}

pub fn run(backend: &Backend, command: JobCommand) -> Outcome {
    match command {
        JobCommand::Push(args) => push(backend, *args),
        JobCommand::List { json } => list(backend, json),
        JobCommand::Status { id, json, wait } => status(backend, id.as_deref(), json, wait),
        JobCommand::Results { id, json } => results(backend, id.as_deref(), json),
        JobCommand::Cancel { id } => cancel(backend, id.as_deref()),
    }
}

/// The push the arguments describe (checked here where the command line can say which
/// flag is wrong; the rest is checked where the push is stored).
fn push_request(args: &PushArgs) -> anyhow::Result<PushRequest> {
    let target = if !args.target.is_empty() {
        let ids = args
            .target
            .iter()
            .map(|id| {
                DeviceId::new(id.as_str()).map_err(|e| UsageError::plain(format!("`{id}` is not a device id: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Target::Devices(ids)
    } else if let Some(selector) = &args.selector {
        let labels =
            parse_labels(selector).map_err(|e| UsageError::new(e.0, "a selector looks like site=plant-3,role=gw"))?;
        Target::Selector(labels)
    } else {
        Target::All
    };
    let timeout_ms = args.timeout.map_or(0, |t| t.as_millis());
    let timeout_ms =
        u32::try_from(timeout_ms).map_err(|_| UsageError::plain("--timeout is too long (at most about 49 days)"))?;
    let mut request = PushRequest::new(target);
    request.entry = args.entry.clone();
    request.args = args.args.clone();
    request.inputs = args.inputs.clone();
    request.timeout_ms = timeout_ms;
    request.deadline_ms = args.deadline.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    request.fuel = args.fuel;
    request.memory_pages = args.memory_pages;
    request.rate_per_min = args.rate;
    request.batch_size = args.batch;
    request.abort = match (args.abort_failures, args.abort_min) {
        (Some(failure_pct), Some(min_finished)) => Some(AbortPolicy { failure_pct, min_finished }),
        _ => None,
    };
    request.retries = args.retries;
    request.continuous = args.continuous;
    request.gpu = match args.gpu.as_str() {
        "required" => GpuRequirement::Required,
        "preferred" => GpuRequirement::Preferred,
        _ => GpuRequirement::None,
    };
    Ok(request)
}

fn push(backend: &Backend, args: PushArgs) -> Outcome {
    let module = std::fs::read(&args.module).map_err(|e| {
        UsageError::new(format!("cannot read {}: {e}", args.module.display()), "give the path of a .wasm file")
    })?;
    if !module.starts_with(b"\0asm") {
        return Err(UsageError::new(
            format!("{} is not a WebAssembly module (no \\0asm header)", args.module.display()),
            "build it for wasm32 (for example `cargo build --target wasm32-unknown-unknown --release`)",
        )
        .into());
    }
    let request = push_request(&args)?;
    let pushed = backend.push(&request, &module)?;
    for skipped in &pushed.skipped {
        eprintln!("skipping {skipped}");
    }
    eprintln!(
        "pushed job {}: {} ({}{}) to {} device(s) ({}{})",
        pushed.job,
        args.module.display(),
        size(pushed.module_size),
        if pushed.chunked { ", sent in chunks" } else { "" },
        pushed.devices,
        request.target,
        if args.continuous { ", continuous" } else { "" }
    );
    if let Some(note) = backend.pending_note() {
        eprintln!("note: {note}; the job starts when one does");
    }
    println!("{}", pushed.job);
    if args.wait {
        if args.continuous {
            eprintln!("note: a continuous job runs until canceled; --wait waits for that");
        }
        return wait(backend, &pushed.job);
    }
    Ok(ExitCode::SUCCESS)
}

/// "3 succeeded, 1 running, 1 sent (not accepted yet), 2 queued": every state that has
/// executions, with `sent` apart from `queued`.
fn counts_line(counts: &JobCounts, sent: u32) -> String {
    let mut parts = Vec::new();
    for (n, label) in [
        (counts.succeeded, "succeeded"),
        (counts.failed, "failed"),
        (counts.timed_out, "timed out"),
        (counts.rejected, "rejected"),
        (counts.canceled, "canceled"),
        (counts.running, "running"),
        (sent, "sent (not accepted yet)"),
        (counts.queued.saturating_sub(sent), "queued"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {label}"));
        }
    }
    if parts.is_empty() { "no devices yet".to_string() } else { parts.join(", ") }
}

/// How often `--wait` says where the job stands when its output is not a terminal (and
/// nothing changed meanwhile).
const WAIT_REPORT_EVERY: Duration = Duration::from_secs(15);

/// How often `--wait` looks up which of the devices it waits for are not online.
const ABSENT_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Follows a job until it reaches a final state, on stderr: a progress bar with the
/// counts per state on a terminal, a plain line whenever they change (and every 15 s)
/// otherwise. Either way it names the devices it waits for that are not online ("never
/// seen online", "offline for 3m"), so it never sits silent on a device that is not
/// there.
fn wait(backend: &Backend, job_id: &str) -> Outcome {
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut reported: Option<(String, std::time::Instant)> = None;
    let mut absent: (Vec<String>, Option<std::time::Instant>) = (Vec::new(), None);
    loop {
        let detail = backend.job(Some(job_id))?;
        let job = &detail.job;
        let line = counts_line(&job.counts, job.sent);
        if !job.in_progress() {
            bar.finish_and_clear();
            eprintln!("job {job_id} {}: {line}", job.state);
            return Ok(exit_for(job));
        }
        if absent.1.is_none_or(|at| at.elapsed() >= ABSENT_CHECK_EVERY) {
            absent = (absent_devices(backend, &detail.executions, unix_ms())?, Some(std::time::Instant::now()));
        }
        let line = if absent.0.is_empty() { line } else { format!("{line}; waiting for {}", absent.0.join(", ")) };
        if terminal {
            bar.set_length(u64::from(job.total));
            bar.set_position(u64::from(job.finished()));
            bar.set_message(line);
            bar.tick();
        } else {
            let due = reported.as_ref().is_none_or(|(last, at)| *last != line || at.elapsed() >= WAIT_REPORT_EVERY);
            if due {
                eprintln!(
                    "[{:>4}s] job {job_id}: {} of {} finished; {line}",
                    started.elapsed().as_secs(),
                    job.finished(),
                    job.total
                );
                reported = Some((line, std::time::Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(if backend.is_remote() { 50 } else { 200 }));
    }
}

/// Devices looked up one by one at most; with more unfinished, the list is read once.
const ABSENT_LOOKUPS: usize = 32;

/// The devices with an unfinished execution that are not online now, each with how
/// long: "gw-3 (never seen online)", "gw-4 (offline for 3m)".
fn absent_devices(backend: &Backend, executions: &[ExecutionView], now: u64) -> anyhow::Result<Vec<String>> {
    let waiting: std::collections::BTreeSet<&str> =
        executions.iter().filter(|v| !v.state.is_terminal()).map(|v| v.device.as_str()).collect();
    let devices = if waiting.len() <= ABSENT_LOOKUPS {
        waiting.iter().map(|id| backend.device(id)).collect::<anyhow::Result<Vec<_>>>()?
    } else {
        backend.devices(&DeviceFilter::default())?.into_iter().filter(|d| waiting.contains(d.id.as_str())).collect()
    };
    let mut absent = Vec::new();
    for device in devices {
        match device.status.as_ref().map(|s| s.state) {
            Some(Presence::Online) => {}
            Some(Presence::Offline) => absent.push(format!(
                "{} (offline for {})",
                device.id,
                age(device.status_at_ms, now).trim_end_matches(" ago")
            )),
            None => absent.push(format!("{} (never seen online since it was provisioned)", device.id)),
        }
    }
    Ok(absent)
}

/// 0 when the job completed and every device succeeded, 1 otherwise.
fn exit_for(job: &JobView) -> ExitCode {
    if job.all_succeeded() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn state_label(job: &JobView) -> String {
    if job.cancel_requested && job.in_progress() { "canceling".to_string() } else { job.state.clone() }
}

/// The jobs table (also used by `watch`).
pub fn jobs_table(jobs: &[JobView], now: u64) -> Table {
    let mut table = Table::new(&["JOB", "STATE", "DEVICES", "PROGRESS", "TARGET", "PUSHED"]);
    for job in jobs {
        table.row(vec![
            job.id.clone(),
            state_label(job),
            job.total.to_string(),
            counts_line(&job.counts, job.sent),
            format!("{}{}", job.target, if job.params.continuous { " (continuous)" } else { "" }),
            age(Some(job.created_at_ms), now),
        ]);
    }
    table
}

fn list(backend: &Backend, json: bool) -> Outcome {
    let jobs = backend.jobs()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
    } else if jobs.is_empty() {
        eprintln!("no jobs yet; push one with `fleetctl job push MODULE.wasm --all`");
    } else {
        print!("{}", jobs_table(&jobs, unix_ms()).render());
    }
    Ok(ExitCode::SUCCESS)
}

/// The job `id` names, saying so when it is the newest.
fn load(backend: &Backend, id: Option<&str>) -> anyhow::Result<fleet_controller::operate::JobDetail> {
    let detail = backend.job(id)?;
    if id.is_none() {
        eprintln!("job {} (the newest)", detail.job.id);
    }
    Ok(detail)
}

fn status(backend: &Backend, id: Option<&str>, json: bool, wait_for_it: bool) -> Outcome {
    let mut detail = load(backend, id)?;
    if wait_for_it {
        wait(backend, &detail.job.id)?;
        detail = backend.job(Some(&detail.job.id))?;
    }
    let view = &detail.job;
    let code = if wait_for_it { exit_for(view) } else { ExitCode::SUCCESS };
    if json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
        return Ok(code);
    }
    let now = unix_ms();
    println!("job       {}", view.id);
    println!(
        "state     {}{}",
        view.state,
        if view.cancel_requested && view.in_progress() { " (canceling)" } else { "" }
    );
    println!("target    {}{}", view.target, if view.params.continuous { " (continuous)" } else { "" });
    println!(
        "module    {} {} entry `{}`{}",
        view.module_hash,
        size(view.module_size),
        view.entry,
        if view.chunked { " (chunked)" } else { "" }
    );
    println!("progress  {} of {}: {}", view.finished(), view.total, counts_line(&view.counts, view.sent));
    println!("pushed    {}", age(Some(view.created_at_ms), now));
    println!();
    let mut table = Table::new(&["DEVICE", "ATTEMPT", "STATE", "SEQ", "UPDATED", "REASON"]);
    for row in &detail.executions {
        table.row(vec![
            row.device.clone(),
            row.attempt.to_string(),
            row.state.to_string(),
            row.envelope_seq.map_or("-".into(), |s| s.to_string()),
            age(Some(row.updated_at_ms), now),
            row.reason.clone().unwrap_or_default(),
        ]);
    }
    if table.is_empty() {
        println!("no executions yet");
    } else {
        print!("{}", table.render());
    }
    Ok(code)
}

fn results(backend: &Backend, id: Option<&str>, json: bool) -> Outcome {
    let detail = load(backend, id)?;
    let executions = &detail.executions;
    if json {
        println!("{}", serde_json::to_string_pretty(executions)?);
        return Ok(ExitCode::SUCCESS);
    }
    for row in executions {
        let mut facts = vec![format!("attempt {}", row.attempt), row.state.to_string()];
        if let Some(ms) = row.duration_ms {
            facts.push(format!("{ms} ms"));
        }
        if let Some(fuel) = row.fuel_used {
            facts.push(format!("fuel {fuel}"));
        }
        println!("== {} ({})", row.device, facts.join(", "));
        if let Some(reason) = &row.reason {
            println!("reason: {reason}");
        }
        if let Some(output) = row.output_bytes() {
            println!("output: {}", printable(&output));
        }
        for line in &row.logs {
            println!("log: {line}");
        }
    }
    if executions.is_empty() {
        eprintln!("no executions yet");
    }
    Ok(ExitCode::SUCCESS)
}

fn cancel(backend: &Backend, id: Option<&str>) -> Outcome {
    if id.is_none() {
        load(backend, None)?;
    }
    let canceled = backend.cancel(id)?;
    if canceled.requested {
        eprintln!(
            "cancel requested for job {}; `fleetctl serve` drops queued executions and tells devices to stop",
            canceled.job
        );
        if let Some(note) = backend.pending_note() {
            eprintln!("note: {note}; the cancel happens when one does");
        }
    }
    Ok(ExitCode::SUCCESS)
}
