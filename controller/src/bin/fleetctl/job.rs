//! `fleetctl job`: push a module to devices, follow it, read its results, cancel it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Subcommand};
use fleet_controller::datadir::DataDir;
use fleet_controller::model::{AbortPolicy, ExecState, RolloutParams, Target, job_state_str, parse_labels};
use fleet_controller::rollout;
use fleet_controller::signer::prepare_module;
use fleet_controller::store::{ExecutionRow, JobRow, NewJob, Store};
use fleet_controller::{random_32, unix_ms};
use fleet_schemas::digest::sha256;
use fleet_schemas::{
    DeviceId, GpuRequirement, JobCounts, JobId, JobSpec, JobState, Limits, ModuleSource, Requirements,
};
use serde::Serialize;

use crate::fmt::{Table, age, parse_duration, parse_pct, parse_rate, printable, size};
use crate::{Outcome, UsageError, actor};

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
    /// The WebAssembly module (.wasm). One that imports wasi-nn (inference) is sent
    /// only to devices whose status says they offer it.
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

pub fn run(data_dir: &Path, command: JobCommand) -> Outcome {
    match command {
        JobCommand::Push(args) => push(data_dir, *args),
        JobCommand::List { json } => list(data_dir, json),
        JobCommand::Status { id, json, wait } => status(data_dir, id.as_deref(), json, wait),
        JobCommand::Results { id, json } => results(data_dir, id.as_deref(), json),
        JobCommand::Cancel { id } => cancel(data_dir, id.as_deref()),
    }
}

fn push(data_dir: &Path, args: PushArgs) -> Outcome {
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
        if labels.is_empty() {
            return Err(UsageError::new("the selector is empty", "use --all to target every device").into());
        }
        Target::Selector(labels)
    } else {
        Target::All
    };
    if args.continuous && matches!(target, Target::Devices(_)) {
        return Err(UsageError::new(
            "--continuous needs --selector or --all",
            "a list of device ids cannot match devices provisioned later",
        )
        .into());
    }
    let timeout_ms = args.timeout.map_or(0, |t| t.as_millis());
    let timeout_ms =
        u32::try_from(timeout_ms).map_err(|_| UsageError::plain("--timeout is too long (at most about 49 days)"))?;
    let exec_timeout = args.deadline.unwrap_or_else(|| match args.timeout {
        Some(timeout) => timeout + Duration::from_secs(60),
        None => Duration::from_secs(600),
    });
    if args.batch == Some(0) {
        return Err(UsageError::new("--batch 0 would never start anything", "leave --batch out for no batches").into());
    }
    let params = RolloutParams {
        rate_per_min: args.rate,
        batch_size: args.batch,
        abort: match (args.abort_failures, args.abort_min) {
            (Some(failure_pct), Some(min_finished)) => Some(AbortPolicy { failure_pct, min_finished }),
            _ => None,
        },
        exec_timeout_ms: u64::try_from(exec_timeout.as_millis()).unwrap_or(u64::MAX),
        retries: args.retries,
        continuous: args.continuous,
    };

    let data = DataDir::new(data_dir);
    let mut store = data.open_or_init()?;
    let gpu = match args.gpu.as_str() {
        "required" => GpuRequirement::Required,
        "preferred" => GpuRequirement::Preferred,
        _ => GpuRequirement::None,
    };
    if gpu == GpuRequirement::Required && args.continuous {
        return Err(UsageError::new(
            "--gpu required cannot be --continuous yet",
            "devices provisioned later have not reported whether they have a GPU; push again once they are online",
        )
        .into());
    }
    let targets = match &target {
        Target::Devices(ids) => {
            let unknown: Vec<String> = ids
                .iter()
                .filter(|id| !matches!(store.device(id.as_str()), Ok(Some(d)) if d.removed_at_ms.is_none()))
                .map(|id| id.to_string())
                .collect();
            if !unknown.is_empty() {
                return Err(UsageError::new(
                    format!("unknown or removed device(s): {}", unknown.join(", ")),
                    "run `fleetctl device list` to see device ids",
                )
                .into());
            }
            let mut ids = ids.clone();
            ids.dedup();
            ids
        }
        other => store.matching_devices(other)?,
    };
    // A job goes only where the device's last status advertised what it needs: a GPU
    // when it requires one, an inference backend when its module imports wasi-nn.
    // Elsewhere it would only be refused. Named devices without it are an error; a
    // selector or --all keeps the devices that have it.
    let mut targets = targets;
    if gpu == GpuRequirement::Required {
        targets = advertising(&store, targets, &target, Needs::Gpu)?;
    }
    if imports_wasi_nn(&module) {
        if args.continuous {
            return Err(UsageError::new(
                "a module that uses wasi-nn cannot be --continuous yet",
                "devices provisioned later have not reported whether they offer inference; push again once they are online",
            )
            .into());
        }
        targets = advertising(&store, targets, &target, Needs::Inference)?;
    }
    if targets.is_empty() && !args.continuous {
        return Err(UsageError::new(
            format!("no device matches {target}"),
            "provision one first, or pass --continuous to run on matching devices as they are provisioned",
        )
        .into());
    }

    let job_id = JobId(random_32()?[..16].try_into().context("job id")?);
    let spec = JobSpec {
        job_id,
        module: ModuleSource::Inline(Vec::new()),
        entry: args.entry.clone(),
        args: args.args.clone(),
        limits: Limits { fuel: args.fuel, memory_pages: args.memory_pages, timeout_ms },
        requirements: Requirements { gpu, ..Requirements::default() },
        inputs: args.inputs.clone(),
    };
    let prepared = prepare_module(spec, &module).map_err(|e| UsageError::plain(e.to_string()))?;
    let chunked = prepared.chunks.is_some();
    let job = NewJob {
        id: job_id,
        spec: postcard::to_allocvec(&prepared.spec)?,
        module_hash: sha256(&module),
        chunked_module: chunked.then(|| module.clone()),
        module_size: module.len() as u64,
        entry: args.entry.clone(),
        target: target.clone(),
        params,
    };
    store.insert_job(&job, &targets, &actor(), unix_ms())?;
    eprintln!(
        "pushed job {job_id}: {} ({}{}) to {} device(s) ({target}{})",
        args.module.display(),
        size(module.len() as u64),
        if chunked { ", sent in chunks" } else { "" },
        targets.len(),
        if args.continuous { ", continuous" } else { "" }
    );
    if !serve_is_running(data_dir) {
        eprintln!("note: no `fleetctl serve` is running on {}; the job starts when one does", data_dir.display());
    }
    println!("{job_id}");
    if args.wait {
        if args.continuous {
            eprintln!("note: a continuous job runs until canceled; --wait waits for that");
        }
        return wait(&store, &job_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a `serve` runs on the data directory (it holds the directory's lock).
pub fn serve_is_running(data_dir: &Path) -> bool {
    DataDir::new(data_dir).serving().is_some()
}

fn finished_count(counts: &JobCounts) -> u32 {
    counts.succeeded + counts.failed + counts.rejected + counts.timed_out + counts.canceled
}

/// Executions whose envelope went out and that the device has not accepted yet (the
/// job status's `queued` counts them with those not sent), by each device's latest
/// attempt.
fn sent_count(views: &[rollout::ExecView]) -> u32 {
    let mut latest: std::collections::HashMap<&DeviceId, &rollout::ExecView> = std::collections::HashMap::new();
    for view in views {
        let slot = latest.entry(&view.device).or_insert(view);
        if view.attempt >= slot.attempt {
            *slot = view;
        }
    }
    u32::try_from(latest.values().filter(|v| v.state == ExecState::Sent).count()).unwrap_or(u32::MAX)
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

/// Follows a job until it reaches a final state, on stderr: a progress bar with the
/// counts per state on a terminal, a plain line whenever they change (and every 15 s)
/// otherwise. Either way it names the devices it waits for that are not online ("never
/// seen online", "offline for 3m"), so it never sits silent on a device that is not
/// there.
fn wait(store: &Store, job_id: &JobId) -> Outcome {
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut reported: Option<(String, std::time::Instant)> = None;
    loop {
        let job = store.job(job_id)?.ok_or_else(|| anyhow::anyhow!("job {job_id} disappeared from the database"))?;
        let executions = store.exec_views(job_id)?;
        let (total, counts) = rollout::counts(&executions);
        let line = counts_line(&counts, sent_count(&executions));
        if job.state != JobState::InProgress {
            bar.finish_and_clear();
            eprintln!("job {job_id} {}: {line}", job_state_str(job.state));
            return Ok(exit_for(job.state, total, &counts));
        }
        let absent = absent_devices(store, &executions, unix_ms())?;
        let line = if absent.is_empty() { line } else { format!("{line}; waiting for {}", absent.join(", ")) };
        if terminal {
            bar.set_length(u64::from(total));
            bar.set_position(u64::from(finished_count(&counts)));
            bar.set_message(line);
            bar.tick();
        } else {
            let due = reported.as_ref().is_none_or(|(last, at)| *last != line || at.elapsed() >= WAIT_REPORT_EVERY);
            if due {
                eprintln!(
                    "[{:>4}s] job {job_id}: {} of {total} finished; {line}",
                    started.elapsed().as_secs(),
                    finished_count(&counts)
                );
                reported = Some((line, std::time::Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The devices with an unfinished execution that are not online now, each with how
/// long: "gw-3 (never seen online)", "gw-4 (offline for 3m)".
fn absent_devices(store: &Store, executions: &[rollout::ExecView], now: u64) -> anyhow::Result<Vec<String>> {
    let mut absent = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for view in executions.iter().filter(|v| !v.state.is_terminal()) {
        if !seen.insert(view.device.clone()) {
            continue;
        }
        let Some(device) = store.device(view.device.as_str())? else { continue };
        match device.status.as_ref().map(|s| s.state) {
            Some(fleet_schemas::Presence::Online) => {}
            Some(fleet_schemas::Presence::Offline) => absent.push(format!(
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
fn exit_for(state: JobState, total: u32, counts: &JobCounts) -> ExitCode {
    if state == JobState::Completed && counts.succeeded == total { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// A job as `--json` prints it.
#[derive(Serialize)]
struct JobView {
    id: String,
    state: &'static str,
    cancel_requested: bool,
    target: Target,
    entry: String,
    module_hash: String,
    module_size: u64,
    chunked: bool,
    params: RolloutParams,
    total: u32,
    counts: JobCounts,
    /// Of `counts.queued`: those whose envelope went out, not accepted yet.
    sent: u32,
    created_at_ms: u64,
    finished_at_ms: Option<u64>,
}

fn job_view(job: &JobRow, executions: &[ExecutionRow]) -> JobView {
    let views: Vec<_> = executions.iter().map(ExecutionRow::view).collect();
    let (total, counts) = rollout::counts(&views);
    JobView {
        id: job.id.to_hex(),
        state: job_state_str(job.state),
        cancel_requested: job.cancel_requested,
        target: job.target.clone(),
        entry: job.entry.clone(),
        module_hash: job.module_hash.to_hex(),
        module_size: job.module_size,
        chunked: job.chunked,
        params: job.params,
        total,
        counts,
        sent: sent_count(&views),
        created_at_ms: job.created_at_ms,
        finished_at_ms: job.finished_at_ms,
    }
}

/// The jobs table (also used by `watch`).
pub fn jobs_table(store: &Store, jobs: &[JobRow], now: u64) -> anyhow::Result<Table> {
    let mut table = Table::new(&["JOB", "STATE", "DEVICES", "PROGRESS", "TARGET", "PUSHED"]);
    for job in jobs {
        let view = job_view(job, &store.executions(&job.id)?);
        let state = if job.cancel_requested && job.state == JobState::InProgress { "canceling" } else { view.state };
        table.row(vec![
            view.id,
            state.to_string(),
            view.total.to_string(),
            counts_line(&view.counts, view.sent),
            format!("{}{}", job.target, if job.params.continuous { " (continuous)" } else { "" }),
            age(Some(job.created_at_ms), now),
        ]);
    }
    Ok(table)
}

fn list(data_dir: &Path, json: bool) -> Outcome {
    let store = DataDir::new(data_dir).open()?;
    let jobs = store.jobs()?;
    if json {
        let views = jobs
            .iter()
            .map(|job| Ok(job_view(job, &store.executions(&job.id)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else if jobs.is_empty() {
        eprintln!("no jobs yet; push one with `fleetctl job push MODULE.wasm --all`");
    } else {
        print!("{}", jobs_table(&store, &jobs, unix_ms())?.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// An execution as `--json` prints it.
#[derive(Serialize)]
struct ExecView {
    device: String,
    attempt: u32,
    state: ExecState,
    envelope_seq: Option<u64>,
    sent_at_ms: Option<u64>,
    deadline_ms: Option<u64>,
    updated_at_ms: u64,
    reason: Option<String>,
    output: Option<String>,
    output_hex: Option<String>,
    logs: Vec<String>,
    fuel_used: Option<u64>,
    duration_ms: Option<u64>,
}

fn exec_view(row: &ExecutionRow) -> ExecView {
    ExecView {
        device: row.device_id.to_string(),
        attempt: row.attempt,
        state: row.state,
        envelope_seq: row.envelope_seq,
        sent_at_ms: row.sent_at_ms,
        deadline_ms: row.deadline_ms,
        updated_at_ms: row.updated_at_ms,
        reason: row.reason.clone(),
        output: row.output.as_deref().and_then(|b| std::str::from_utf8(b).ok()).map(str::to_string),
        output_hex: row.output.as_deref().map(hex::encode),
        logs: row.logs.clone(),
        fuel_used: row.fuel_used,
        duration_ms: row.duration_ms,
    }
}

fn load(data_dir: &Path, id: Option<&str>) -> anyhow::Result<(Store, JobRow)> {
    let store = DataDir::new(data_dir).open()?;
    let job_id = resolve(&store, id)?;
    let job = store.job(&job_id)?.ok_or_else(|| anyhow::anyhow!("job {job_id} disappeared from the database"))?;
    Ok((store, job))
}

/// The job `id` names (a unique prefix will do), or the newest job when none is named.
fn resolve(store: &Store, id: Option<&str>) -> anyhow::Result<JobId> {
    match id {
        Some(id) => Ok(store.resolve_job(id)?),
        None => {
            let newest = store.jobs()?.into_iter().next().ok_or_else(|| {
                UsageError::new("there is no job yet", "push one with `fleetctl job push MODULE.wasm --all`")
            })?;
            eprintln!("job {} (the newest)", newest.id);
            Ok(newest.id)
        }
    }
}

fn status(data_dir: &Path, id: Option<&str>, json: bool, wait_for_it: bool) -> Outcome {
    let (store, job) = load(data_dir, id)?;
    if wait_for_it {
        wait(&store, &job.id)?;
    }
    let job = store.job(&job.id)?.unwrap_or(job);
    let executions = store.executions(&job.id)?;
    let view = job_view(&job, &executions);
    let code = if wait_for_it { exit_for(job.state, view.total, &view.counts) } else { ExitCode::SUCCESS };
    if json {
        let executions: Vec<ExecView> = executions.iter().map(exec_view).collect();
        let doc = serde_json::json!({ "job": view, "executions": executions });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(code);
    }
    let now = unix_ms();
    println!("job       {}", view.id);
    println!(
        "state     {}{}",
        view.state,
        if job.cancel_requested && job.state == JobState::InProgress { " (canceling)" } else { "" }
    );
    println!("target    {}{}", job.target, if job.params.continuous { " (continuous)" } else { "" });
    println!(
        "module    {} {} entry `{}`{}",
        view.module_hash,
        size(view.module_size),
        view.entry,
        if view.chunked { " (chunked)" } else { "" }
    );
    println!("progress  {} of {}: {}", finished_count(&view.counts), view.total, counts_line(&view.counts, view.sent));
    println!("pushed    {}", age(Some(job.created_at_ms), now));
    println!();
    let mut table = Table::new(&["DEVICE", "ATTEMPT", "STATE", "SEQ", "UPDATED", "REASON"]);
    for row in &executions {
        table.row(vec![
            row.device_id.to_string(),
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

fn results(data_dir: &Path, id: Option<&str>, json: bool) -> Outcome {
    let (store, job) = load(data_dir, id)?;
    let executions = store.executions(&job.id)?;
    if json {
        let views: Vec<ExecView> = executions.iter().map(exec_view).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    for row in &executions {
        let mut facts = vec![format!("attempt {}", row.attempt), row.state.to_string()];
        if let Some(ms) = row.duration_ms {
            facts.push(format!("{ms} ms"));
        }
        if let Some(fuel) = row.fuel_used {
            facts.push(format!("fuel {fuel}"));
        }
        println!("== {} ({})", row.device_id, facts.join(", "));
        if let Some(reason) = &row.reason {
            println!("reason: {reason}");
        }
        if let Some(output) = &row.output {
            println!("output: {}", printable(output));
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

fn cancel(data_dir: &Path, id: Option<&str>) -> Outcome {
    let data = DataDir::new(data_dir);
    let mut store = data.open()?;
    let job_id = resolve(&store, id)?;
    let job = store.job(&job_id)?.ok_or_else(|| anyhow::anyhow!("job {job_id} disappeared from the database"))?;
    if job.state != JobState::InProgress {
        return Err(UsageError::new(
            format!("job {job_id} already finished ({})", job_state_str(job.state)),
            format!("see `fleetctl job status {job_id}`"),
        )
        .into());
    }
    if store.request_cancel(&job_id, &actor(), unix_ms())? {
        eprintln!(
            "cancel requested for job {job_id}; `fleetctl serve` drops queued executions and tells devices to stop"
        );
        if !serve_is_running(data_dir) {
            eprintln!(
                "note: no `fleetctl serve` is running on {}; the cancel happens when one does",
                data_dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a job needs a device to have advertised in its status.
#[derive(Debug, Clone, Copy)]
enum Needs {
    /// A GPU (`--gpu required`).
    Gpu,
    /// An inference backend (the module imports wasi-nn).
    Inference,
}

impl Needs {
    fn has(self, status: &fleet_schemas::DeviceStatus) -> bool {
        match self {
            Needs::Gpu => status.gpu.is_some(),
            Needs::Inference => !status.inference.is_empty(),
        }
    }

    fn missing(self) -> &'static str {
        match self {
            Needs::Gpu => "no GPU advertised by",
            Needs::Inference => "no inference (wasi-nn) advertised by",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Needs::Gpu => "`fleetctl device list` shows each device's GPU; drop --gpu required to run on the CPU",
            Needs::Inference => {
                "the module imports wasi-nn: run its gateways' fleet-agent with --onnxruntime (`fleetctl device show ID` lists what a device offers)"
            }
        }
    }

    fn skipping(self) -> &'static str {
        match self {
            Needs::Gpu => "that advertise no GPU",
            Needs::Inference => "that offer no inference (wasi-nn)",
        }
    }
}

/// The devices of `targets` whose last status advertises what the job `needs`; named
/// devices without it are a usage error, others are skipped and named on stderr.
fn advertising(store: &Store, targets: Vec<DeviceId>, target: &Target, needs: Needs) -> anyhow::Result<Vec<DeviceId>> {
    let (with, without): (Vec<DeviceId>, Vec<DeviceId>) = targets.into_iter().partition(|id| {
        matches!(store.device(id.as_str()), Ok(Some(device)) if device.status.as_ref().is_some_and(|s| needs.has(s)))
    });
    if !without.is_empty() {
        let names: Vec<String> = without.iter().map(ToString::to_string).collect();
        if matches!(target, Target::Devices(_)) {
            return Err(UsageError::new(format!("{}: {}", needs.missing(), names.join(", ")), needs.hint()).into());
        }
        eprintln!("skipping {} device(s) {}: {}", names.len(), needs.skipping(), names.join(", "));
    }
    Ok(with)
}

/// The import module of wasi-nn in the job ABI (docs/job-abi.md, section 3a).
const WASI_NN_MODULE: &str = "wasi_ephemeral_nn";

/// Whether the module imports wasi-nn. A module that does not parse says no here;
/// the devices report the real error.
fn imports_wasi_nn(module: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(module).any(|payload| match payload {
        Ok(wasmparser::Payload::ImportSection(imports)) => {
            imports.into_imports().any(|i| i.is_ok_and(|i| i.module == WASI_NN_MODULE))
        }
        _ => false,
    })
}
