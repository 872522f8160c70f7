//! The operator's operations: push, cancel, relabel, decommission, and the views every
//! read returns, as functions over the [`Store`].
//!
//! One implementation serves both shells: the API behind `fleetctl serve` calls these,
//! and so does `fleetctl` on a data directory no `serve` holds. Input is checked here,
//! once, and a refusal says what to do next ([`OpError`]): the command line prints it
//! with exit code 2, the API returns it as a JSON error with a 4xx status. The views are
//! the JSON both print and return (`--json` and the API's bodies are the same
//! documents), so a client can read them back with serde.

use serde::{Deserialize, Serialize};

use fleet_schemas::digest::sha256;
use fleet_schemas::{
    DeviceId, DeviceStatus, GpuRequirement, JobCounts, JobId, JobSpec, JobState, Limits, ModuleSource, Presence,
    Requirements,
};

use crate::model::{AbortPolicy, DeviceKind, ExecState, Labels, RolloutParams, Target, job_state_str};
use crate::rollout;
use crate::signer::prepare_module;
use crate::store::{Depths, DeviceRow, DeviceStore, ExecutionRow, JobRow, NewJob, Store, StoreError};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request is wrong: fix it (400, exit 2).
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// What to do instead.
        help: Option<String>,
    },
    /// What it names does not exist (404, exit 2).
    #[error("{message}")]
    NotFound {
        /// What is missing.
        message: String,
        /// Where to look.
        help: Option<String>,
    },
    /// It contradicts what exists (409, exit 2).
    #[error("{message}")]
    Conflict {
        /// The contradiction.
        message: String,
        /// What to do instead.
        help: Option<String>,
    },
    /// The store failed (500, exit 3).
    #[error(transparent)]
    Store(StoreError),
    /// The controller cannot do it now (503, exit 3): its store refuses writes, or it
    /// is stopping.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// When to try again.
        help: Option<String>,
    },
}

impl OpError {
    /// A refusal of bad input, with what to do instead.
    pub fn invalid(message: impl Into<String>, help: impl Into<String>) -> Self {
        OpError::Invalid { message: message.into(), help: Some(help.into()) }
    }

    /// A refusal of bad input that needs no hint.
    pub fn invalid_plain(message: impl Into<String>) -> Self {
        OpError::Invalid { message: message.into(), help: None }
    }

    /// The hint, if any.
    pub fn help(&self) -> Option<&str> {
        match self {
            OpError::Invalid { help, .. }
            | OpError::NotFound { help, .. }
            | OpError::Conflict { help, .. }
            | OpError::Unavailable { help, .. } => help.as_deref(),
            OpError::Store(_) => None,
        }
    }
}

impl From<StoreError> for OpError {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        let help = |text: &str| Some(text.to_string());
        match error {
            StoreError::NoJob(_) | StoreError::AmbiguousJob(_) => {
                OpError::NotFound { message, help: help("run `fleetctl job list` to see job ids") }
            }
            StoreError::NoDevice(_) => {
                OpError::NotFound { message, help: help("run `fleetctl device list` to see device ids") }
            }
            StoreError::NoToken(_) => {
                OpError::NotFound { message, help: help("run `fleetctl token list` to see token names") }
            }
            StoreError::DeviceExists(_) => OpError::Conflict {
                message,
                help: help(
                    "pick another id, or re-provision it with `fleetctl device provision ID --replace --out DIR`",
                ),
            },
            StoreError::TokenExists(_) => {
                OpError::Conflict { message, help: help("pick another name, or revoke that one first") }
            }
            other => OpError::Store(other),
        }
    }
}

/// What an operation returns.
pub type OpResult<T> = Result<T, OpError>;

/// A push: which devices, what to call, the limits and the rollout. The module travels
/// beside it (in the API, base64 in [`PushBody`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Which devices.
    pub target: Target,
    /// The exported function to call.
    #[serde(default = "default_entry")]
    pub entry: String,
    /// The job's arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Named data inputs the job may read on the device.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Wall-clock bound of one execution on the device (0: the device's).
    #[serde(default)]
    pub timeout_ms: u32,
    /// How long the controller waits for a result after sending [default: timeout +
    /// 60 s, or 10 min].
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Fuel budget of one execution (0: the device's).
    #[serde(default)]
    pub fuel: u64,
    /// Memory cap in 64 KiB pages (0: the device's).
    #[serde(default)]
    pub memory_pages: u32,
    /// At most this many devices started per minute.
    #[serde(default)]
    pub rate_per_min: Option<u32>,
    /// Start devices in batches of this many.
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// Abort once failures pass a threshold.
    #[serde(default)]
    pub abort: Option<AbortPolicy>,
    /// Tries again per failed or timed-out execution.
    #[serde(default)]
    pub retries: u32,
    /// Also run on matching devices provisioned later.
    #[serde(default)]
    pub continuous: bool,
    /// Accelerator use.
    #[serde(default = "no_gpu")]
    pub gpu: GpuRequirement,
}

fn default_entry() -> String {
    "run".to_string()
}

fn no_gpu() -> GpuRequirement {
    GpuRequirement::None
}

impl PushRequest {
    /// A push of `run` to `target` with the devices' limits and no rollout policy.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            entry: default_entry(),
            args: Vec::new(),
            inputs: Vec::new(),
            timeout_ms: 0,
            deadline_ms: None,
            fuel: 0,
            memory_pages: 0,
            rate_per_min: None,
            batch_size: None,
            abort: None,
            retries: 0,
            continuous: false,
            gpu: GpuRequirement::None,
        }
    }
}

/// `POST /v1/jobs`: a push and its module (base64, standard alphabet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushBody {
    /// The push.
    #[serde(flatten)]
    pub request: PushRequest,
    /// The WebAssembly module, base64.
    pub module: String,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    /// The new job.
    pub job: String,
    /// How many devices it went to now.
    pub devices: usize,
    /// Its module's size.
    pub module_size: u64,
    /// Whether the module travels in chunks.
    pub chunked: bool,
    /// Devices of a selector (or `--all`) left out, and why: "2 device(s) that advertise
    /// no GPU: gw-2, gw-3".
    pub skipped: Vec<String>,
}

/// Checks and stores a push; `serve` plans and sends it (the API wakes it at once).
pub fn push(store: &mut Store, request: &PushRequest, module: &[u8], actor: &str, now_ms: u64) -> OpResult<Pushed> {
    if !module.starts_with(b"\0asm") {
        return Err(OpError::invalid(
            "the module is not WebAssembly (no \\0asm header)",
            "build it for wasm32 (for example `cargo build --target wasm32-unknown-unknown --release`)",
        ));
    }
    let target = &request.target;
    match target {
        Target::Selector(labels) if labels.is_empty() => {
            return Err(OpError::invalid("the selector is empty", "use --all to target every device"));
        }
        Target::Devices(ids) if ids.is_empty() => {
            return Err(OpError::invalid("no device named", "give at least one --target ID"));
        }
        _ => {}
    }
    if request.continuous && matches!(target, Target::Devices(_)) {
        return Err(OpError::invalid(
            "--continuous needs --selector or --all",
            "a list of device ids cannot match devices provisioned later",
        ));
    }
    if request.batch_size == Some(0) {
        return Err(OpError::invalid("--batch 0 would never start anything", "leave --batch out for no batches"));
    }
    if let Some(abort) = request.abort
        && abort.failure_pct > 100
    {
        return Err(OpError::invalid_plain("--abort-failures is a percentage: 0 to 100"));
    }
    if request.gpu == GpuRequirement::Required && request.continuous {
        return Err(OpError::invalid(
            "--gpu required cannot be --continuous yet",
            "devices provisioned later have not reported whether they have a GPU; push again once they are online",
        ));
    }
    let exec_timeout_ms = request.deadline_ms.unwrap_or(match request.timeout_ms {
        0 => 600_000,
        timeout => u64::from(timeout) + 60_000,
    });
    let params = RolloutParams {
        rate_per_min: request.rate_per_min,
        batch_size: request.batch_size,
        abort: request.abort,
        exec_timeout_ms,
        retries: request.retries,
        continuous: request.continuous,
    };
    let mut targets = match target {
        Target::Devices(ids) => {
            let unknown: Vec<String> = ids
                .iter()
                .filter(|id| !matches!(store.device(id.as_str()), Ok(Some(d)) if d.removed_at_ms.is_none()))
                .map(ToString::to_string)
                .collect();
            if !unknown.is_empty() {
                return Err(OpError::NotFound {
                    message: format!("unknown or removed device(s): {}", unknown.join(", ")),
                    help: Some("run `fleetctl device list` to see device ids".into()),
                });
            }
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            ids
        }
        other => store.matching_devices(other)?,
    };
    // A job goes only where the device's last status advertised what it needs: a GPU
    // when it requires one, an inference backend when its module imports wasi-nn, WASI
    // preview 1 when it imports that (agents and firmware older than WASI list none).
    // Elsewhere it would only be refused. Named devices without it are an error; a
    // selector or --all keeps the devices that have it.
    let mut skipped = Vec::new();
    if request.gpu == GpuRequirement::Required {
        targets = advertising(store, targets, target, Needs::Gpu, &mut skipped)?;
    }
    if imports_wasi_nn(module) {
        if request.continuous {
            return Err(OpError::invalid(
                "a module that uses wasi-nn cannot be --continuous yet",
                "devices provisioned later have not reported whether they offer inference; push again once they are online",
            ));
        }
        targets = advertising(store, targets, target, Needs::Inference, &mut skipped)?;
    }
    if is_component(module) {
        if request.continuous {
            return Err(OpError::invalid(
                "a WASI 0.2 component cannot be --continuous yet",
                "devices provisioned later have not reported whether they run components; push again once they are online",
            ));
        }
        targets = advertising(store, targets, target, Needs::Component, &mut skipped)?;
    } else if imports_wasi(module) {
        if request.continuous {
            return Err(OpError::invalid(
                "a module that imports WASI cannot be --continuous yet",
                "devices provisioned later have not reported whether they run WASI; push again once they are online",
            ));
        }
        targets = advertising(store, targets, target, Needs::Wasi, &mut skipped)?;
    }
    if targets.is_empty() && !request.continuous {
        return Err(OpError::NotFound {
            message: format!("no device matches {target}"),
            help: Some(
                "provision one first, or pass --continuous to run on matching devices as they are provisioned".into(),
            ),
        });
    }
    let random = crate::random_32().map_err(|e| OpError::Store(StoreError::Sign(e.to_string())))?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&random[..16]);
    let job_id = JobId(id);
    let spec = JobSpec {
        job_id,
        module: ModuleSource::Inline(Vec::new()),
        entry: request.entry.clone(),
        args: request.args.clone(),
        limits: Limits { fuel: request.fuel, memory_pages: request.memory_pages, timeout_ms: request.timeout_ms },
        requirements: Requirements { gpu: request.gpu, ..Requirements::default() },
        inputs: request.inputs.clone(),
    };
    let prepared = prepare_module(spec, module).map_err(|e| OpError::invalid_plain(e.to_string()))?;
    let chunked = prepared.chunks.is_some();
    let spec = postcard::to_allocvec(&prepared.spec).map_err(|e| OpError::invalid_plain(e.to_string()))?;
    let job = NewJob {
        id: job_id,
        spec,
        module_hash: sha256(module),
        chunked_module: chunked.then(|| module.to_vec()),
        module_size: module.len() as u64,
        entry: request.entry.clone(),
        target: target.clone(),
        params,
    };
    store.insert_job(&job, &targets, actor, now_ms)?;
    Ok(Pushed { job: job_id.to_hex(), devices: targets.len(), module_size: module.len() as u64, chunked, skipped })
}

/// What a job needs a device to have advertised in its status.
#[derive(Debug, Clone, Copy)]
enum Needs {
    Gpu,
    Inference,
    Wasi,
    Component,
}

impl Needs {
    fn has(self, status: &DeviceStatus) -> bool {
        match self {
            Needs::Gpu => status.gpu.is_some(),
            Needs::Inference => !status.inference.is_empty(),
            Needs::Wasi => status.wasi.iter().any(|v| v == WASI_VERSION),
            Needs::Component => status.wasi.iter().any(|v| v == COMPONENT_VERSION),
        }
    }

    fn missing(self) -> &'static str {
        match self {
            Needs::Gpu => "no GPU advertised by",
            Needs::Inference => "no inference (wasi-nn) advertised by",
            Needs::Wasi => "no WASI preview 1 (the module imports wasi_snapshot_preview1) advertised by",
            Needs::Component => "no WASI 0.2 components (the module is a component) advertised by",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Needs::Gpu => "`fleetctl device list` shows each device's GPU; drop --gpu required to run on the CPU",
            Needs::Inference => {
                "the module imports wasi-nn: run its gateways' fleet-agent with --onnxruntime (`fleetctl device show ID` lists what a device offers)"
            }
            Needs::Wasi => {
                "update the device's fleet-agent or firmware to one that runs WASI, or build the job against the fleet job ABI (docs/job-abi.md)"
            }
            Needs::Component => {
                "components run on gateways whose fleet-agent runs WASI 0.2; for microcontrollers build the job as a WASI preview 1 module (e.g. wasm32-wasip1; docs/job-abi.md, section 7)"
            }
        }
    }

    fn skipping(self) -> &'static str {
        match self {
            Needs::Gpu => "that advertise no GPU",
            Needs::Inference => "that offer no inference (wasi-nn)",
            Needs::Wasi => "that run no WASI (the module imports wasi_snapshot_preview1)",
            Needs::Component => "that run no WASI 0.2 components (microcontrollers, older agents)",
        }
    }
}

/// The devices of `targets` whose last status advertises what the job `needs`; named
/// devices without it are refused, others are skipped (and said so in `skipped`).
fn advertising(
    store: &Store,
    targets: Vec<DeviceId>,
    target: &Target,
    needs: Needs,
    skipped: &mut Vec<String>,
) -> OpResult<Vec<DeviceId>> {
    let (with, without): (Vec<DeviceId>, Vec<DeviceId>) = targets.into_iter().partition(|id| {
        matches!(store.device(id.as_str()), Ok(Some(device)) if device.status.as_ref().is_some_and(|s| needs.has(s)))
    });
    if !without.is_empty() {
        let names: Vec<String> = without.iter().map(ToString::to_string).collect();
        if matches!(target, Target::Devices(_)) {
            return Err(OpError::invalid(format!("{}: {}", needs.missing(), names.join(", ")), needs.hint()));
        }
        skipped.push(format!("{} device(s) {}: {}", names.len(), needs.skipping(), names.join(", ")));
    }
    Ok(with)
}

/// The import module of wasi-nn in the job ABI (docs/job-abi.md, section 3a).
const WASI_NN_MODULE: &str = "wasi_ephemeral_nn";

/// Whether the module imports wasi-nn. A module that does not parse says no here; the
/// devices report the real error.
pub fn imports_wasi_nn(module: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(module).any(|payload| match payload {
        Ok(wasmparser::Payload::ImportSection(imports)) => {
            imports.into_imports().any(|i| i.is_ok_and(|i| i.module == WASI_NN_MODULE))
        }
        _ => false,
    })
}

/// The import module of WASI preview 1 (docs/job-abi.md, section 7).
const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// How a device lists WASI preview 1 in its status (`DeviceStatus::wasi`).
const WASI_VERSION: &str = "preview1";

/// Whether the module imports WASI preview 1.
pub fn imports_wasi(module: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(module).any(|payload| match payload {
        Ok(wasmparser::Payload::ImportSection(imports)) => {
            imports.into_imports().any(|i| i.is_ok_and(|i| i.module == WASI_MODULE))
        }
        _ => false,
    })
}

/// How a device lists WASI 0.2 components in its status (`DeviceStatus::wasi`).
const COMPONENT_VERSION: &str = "0.2";

/// Whether the module is a WebAssembly component (WASI 0.2) rather than a core module.
pub fn is_component(module: &[u8]) -> bool {
    wasmparser::Parser::is_component(module)
}

/// The job `text` names (a unique prefix of its id will do), or the newest job.
pub fn resolve_job(store: &Store, text: Option<&str>) -> OpResult<JobId> {
    match text {
        Some(text) => Ok(store.resolve_job(text)?),
        None => store.jobs()?.into_iter().next().map(|job| job.id).ok_or_else(|| OpError::NotFound {
            message: "there is no job yet".into(),
            help: Some("push one with `fleetctl job push MODULE.wasm --all`".into()),
        }),
    }
}

/// Asks `serve` to cancel a job. Refused if it has finished; false if a cancel was asked
/// for already.
pub fn cancel(store: &mut Store, job_id: &JobId, actor: &str, now_ms: u64) -> OpResult<bool> {
    let job = store.job(job_id)?.ok_or_else(|| StoreError::NoJob(job_id.to_hex()))?;
    if job.state != JobState::InProgress {
        return Err(OpError::Conflict {
            message: format!("job {job_id} already finished ({})", job_state_str(job.state)),
            help: Some(format!("see `fleetctl job status {job_id}`")),
        });
    }
    Ok(store.request_cancel(job_id, actor, now_ms)?)
}

/// A job, as `--json` prints it and the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// Its id, hex.
    pub id: String,
    /// `in_progress`, `completed`, `aborted`, `canceled`.
    pub state: String,
    /// Whether a cancel was asked for.
    pub cancel_requested: bool,
    /// Which devices.
    pub target: Target,
    /// The function called.
    pub entry: String,
    /// SHA-256 of the module, hex.
    pub module_hash: String,
    /// The module's size.
    pub module_size: u64,
    /// Whether the module travels in chunks.
    pub chunked: bool,
    /// How it rolls out.
    pub params: RolloutParams,
    /// Devices it runs on.
    pub total: u32,
    /// Executions per state (latest attempt per device).
    pub counts: JobCounts,
    /// Of `counts.queued`: those whose envelope went out, not accepted yet.
    pub sent: u32,
    /// When it was pushed.
    pub created_at_ms: u64,
    /// When it finished.
    pub finished_at_ms: Option<u64>,
}

impl JobView {
    /// Whether it is still running.
    pub fn in_progress(&self) -> bool {
        self.state == job_state_str(JobState::InProgress)
    }

    /// Executions that reached a final state.
    pub fn finished(&self) -> u32 {
        let c = &self.counts;
        c.succeeded + c.failed + c.rejected + c.timed_out + c.canceled
    }

    /// Whether it completed with every device succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.state == job_state_str(JobState::Completed) && self.counts.succeeded == self.total
    }
}

/// The view of one job.
pub fn job_view(job: &JobRow, executions: &[ExecutionRow]) -> JobView {
    let views: Vec<_> = executions.iter().map(ExecutionRow::view).collect();
    let (total, counts) = rollout::counts(&views);
    JobView {
        id: job.id.to_hex(),
        state: job_state_str(job.state).to_string(),
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

/// An execution, as `--json` prints it and the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionView {
    /// The device.
    pub device: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Where it stands.
    pub state: ExecState,
    /// Its envelope's sequence number, once sent.
    pub envelope_seq: Option<u64>,
    /// When it was sent.
    pub sent_at_ms: Option<u64>,
    /// When it times out.
    pub deadline_ms: Option<u64>,
    /// When it last changed.
    pub updated_at_ms: u64,
    /// Why it failed, was rejected, timed out or was canceled.
    pub reason: Option<String>,
    /// Its output, when it is UTF-8.
    pub output: Option<String>,
    /// Its output, hex.
    pub output_hex: Option<String>,
    /// Its log lines.
    pub logs: Vec<String>,
    /// Fuel used.
    pub fuel_used: Option<u64>,
    /// Wall time on the device.
    pub duration_ms: Option<u64>,
}

impl ExecutionView {
    /// Its output bytes (from `output_hex`).
    pub fn output_bytes(&self) -> Option<Vec<u8>> {
        self.output_hex.as_deref().and_then(|h| hex::decode(h).ok())
    }
}

/// The view of one execution.
pub fn execution_view(row: &ExecutionRow) -> ExecutionView {
    ExecutionView {
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

/// A job with its executions (`job status --json`, `GET /v1/jobs/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDetail {
    /// The job.
    pub job: JobView,
    /// Every execution, every attempt.
    pub executions: Vec<ExecutionView>,
}

/// One job and its executions.
pub fn job_detail(store: &Store, job_id: &JobId) -> OpResult<JobDetail> {
    let job = store.job(job_id)?.ok_or_else(|| StoreError::NoJob(job_id.to_hex()))?;
    let executions = store.executions(job_id)?;
    Ok(JobDetail { job: job_view(&job, &executions), executions: executions.iter().map(execution_view).collect() })
}

/// Every job, newest first.
pub fn jobs(store: &Store) -> OpResult<Vec<JobView>> {
    let mut views = Vec::new();
    for job in store.jobs()? {
        views.push(job_view(&job, &store.executions(&job.id)?));
    }
    Ok(views)
}

/// A device to provision (`POST /v1/devices`, `fleetctl device provision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    /// Its id.
    pub id: DeviceId,
    /// Its labels.
    #[serde(default)]
    pub labels: Labels,
    /// Gateway or microcontroller.
    pub kind: DeviceKind,
    /// The broker's host, as the device reaches it.
    pub broker_host: String,
    /// The broker's port.
    pub broker_port: u16,
    /// MQTT over TLS (gateways only).
    #[serde(default)]
    pub tls: bool,
    /// Log in with a client certificate from the controller's CA (mTLS) instead of a
    /// password; implies `tls`.
    #[serde(default)]
    pub certificate: bool,
    /// The device exists (reinstalled, replaced, removed): new credentials and key, the
    /// old ones revoked, its history kept.
    #[serde(default)]
    pub replace: bool,
}

/// What provisioning hands back: the device's config (`agent.json`, its secrets in it:
/// shown once, never stored by the controller) and, with TLS, the CA it must trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provisioned {
    /// The config.
    pub config: fleet_schemas::provision::DeviceConfig,
    /// The controller's CA (PEM), for `ca.pem` beside `agent.json`.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// With `certificate`: the device's client certificate (PEM, `device.crt`).
    #[serde(default)]
    pub cert_pem: Option<String>,
    /// With `certificate`: its private key (PEM, `device.key`): shown once, never stored.
    #[serde(default)]
    pub key_pem: Option<String>,
}

/// The config page of the QEMU `mps2-an386` board (`firmware-sdk`'s `LAYOUT`): the
/// first 4 KiB erase page of its flash holds a microcontroller's config block.
pub const CONFIG_PAGE_BYTES: usize = 4096;

/// Registers a device (or gives an existing one new credentials) and returns what it
/// needs: its config, and with TLS the CA it trusts (and its client certificate).
pub fn provision(
    store: &mut Store,
    request: &ProvisionRequest,
    tls_dir: &std::path::Path,
    actor: &str,
    now_ms: u64,
) -> OpResult<Provisioned> {
    use fleet_schemas::provision::{BrokerEndpoint, CONFIG_VERSION, DeviceConfig, SecretSeed, config_block};
    let id = &request.id;
    let tls = request.tls || request.certificate;
    if tls && request.kind == DeviceKind::Mcu {
        return Err(OpError::invalid(
            "--tls is for gateways: the microcontroller firmware speaks plain MQTT",
            "keep a board on a private link to the broker (its serial line, or a gateway's network), see the firmware README",
        ));
    }
    if request.broker_host.is_empty() {
        return Err(OpError::invalid("no broker host", "for example --broker 10.0.0.5:1883"));
    }
    match (store.device(id.as_str())?.is_some(), request.replace) {
        (true, false) => {
            return Err(OpError::Conflict {
                message: format!("device {id} is already provisioned"),
                help: Some(format!(
                    "pick another id; or, for that device reinstalled or replaced, `fleetctl device provision {id} --replace --out DIR` \
                     (its old credentials are revoked); or `fleetctl device remove {id}`"
                )),
            });
        }
        (false, true) => {
            return Err(OpError::NotFound {
                message: format!("there is no device {id} to replace"),
                help: Some("leave out --replace to provision a new device".into()),
            });
        }
        _ => {}
    }
    let random = |_: ()| crate::random_32().map_err(|e| OpError::Store(StoreError::Sign(e.to_string())));
    let device_seed = random(())?;
    let device_key = fleet_schemas::SigningKey::from_bytes(&device_seed);
    let tls_error = |e: crate::tls::TlsError| OpError::Store(StoreError::Sign(format!("the controller's CA: {e}")));
    let ca_pem = if tls {
        let ca = crate::tls::ensure_ca(tls_dir).map_err(tls_error)?;
        let pem = std::fs::read_to_string(&ca)
            .map_err(|e| OpError::Store(StoreError::Sign(format!("{}: {e}", ca.display()))))?;
        Some(pem)
    } else {
        None
    };
    let certificate = if request.certificate {
        Some(crate::tls::issue_device_certificate(tls_dir, id.as_str()).map_err(tls_error)?)
    } else {
        None
    };
    // A device with a certificate holds no password: the registry keeps the hash of
    // one nobody was given, so no password can log in as it.
    let secret = hex::encode(random(())?);
    let password = if certificate.is_some() { String::new() } else { secret.clone() };
    let salt = random(())?;
    let root = store.root_key()?.ok_or_else(|| OpError::Store(StoreError::Corrupt("no root key".into())))?;
    let job_keys: Vec<fleet_schemas::TrustedKey> = store
        .trusted_job_keys()?
        .iter()
        .map(|k| fleet_schemas::TrustedKey { key_id: k.key_id, public_key: k.public_key })
        .collect();
    let config = DeviceConfig {
        version: CONFIG_VERSION,
        device_id: id.clone(),
        device_key: SecretSeed(fleet_schemas::Digest(device_seed)),
        root_key: root.public_key,
        job_keys,
        broker: BrokerEndpoint { host: request.broker_host.clone(), port: request.broker_port, tls },
        username: id.to_string(),
        password,
        topic_prefix: fleet_schemas::topics::DEFAULT_PREFIX.to_string(),
        runtime: request.kind.runtime(),
        labels: request.labels.clone(),
    };
    if request.kind == DeviceKind::Mcu {
        let block = config_block(&config).map_err(|e| OpError::invalid_plain(format!("the config block: {e:?}")))?;
        if block.len() > CONFIG_PAGE_BYTES {
            return Err(OpError::invalid(
                format!("the config block is {} bytes; the board's config page holds {CONFIG_PAGE_BYTES}", block.len()),
                "use fewer or shorter labels",
            ));
        }
    }
    let device = crate::store::NewDevice {
        id: id.clone(),
        kind: request.kind,
        labels: request.labels.clone(),
        public_key: fleet_schemas::signed::public_key_of(&device_key).1,
        password_hash: crate::auth::password_hash(secret.as_bytes()),
        mosquitto_hash: crate::acl::mosquitto_hash(&secret, &salt[..12]),
        cert_sha256: certificate.as_ref().map(|c| c.sha256),
    };
    if request.replace {
        store.replace_device(&device, actor, now_ms)?;
    } else {
        store.insert_device(&device, actor, now_ms)?;
    }
    let (cert_pem, key_pem) = certificate.map(|c| (c.cert_pem, c.key_pem)).unzip();
    Ok(Provisioned { config, ca_pem, cert_pem, key_pem })
}

/// Which jobs a list returns, and which page of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only jobs in this state (`in_progress`, `completed`, `aborted`, `canceled`).
    #[serde(default)]
    pub state: Option<String>,
    /// Jobs older than this one (the previous page's `next`).
    #[serde(default)]
    pub after: Option<String>,
    /// At most this many (default and maximum 1,000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A page of jobs, newest first.
pub fn jobs_page(store: &Store, filter: &JobFilter) -> OpResult<Page<JobView>> {
    let limit = filter.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let mut rows = store.jobs()?.into_iter();
    if let Some(after) = &filter.after {
        rows.by_ref().find(|job| job.id.to_hex() == *after);
    }
    let mut items = Vec::new();
    let mut next = None;
    for job in rows {
        if filter.state.as_deref().is_some_and(|s| job_state_str(job.state) != s) {
            continue;
        }
        if items.len() == limit {
            next = items.last().map(|j: &JobView| j.id.clone());
            break;
        }
        items.push(job_view(&job, &store.executions(&job.id)?));
    }
    Ok(Page { items, next })
}

/// A device, as `--json` prints it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Its id.
    pub id: String,
    /// Linux gateway or microcontroller.
    pub kind: DeviceKind,
    /// Its labels.
    pub labels: Labels,
    /// `online`, `offline`, `never seen`, `removed`.
    pub state: String,
    /// Its public key, hex.
    pub public_key: String,
    /// Its last status document.
    pub status: Option<DeviceStatus>,
    /// When that status came.
    pub status_at_ms: Option<u64>,
    /// The queue and outbox it last reported while online, and when.
    pub depths: Option<Depths>,
    /// Its store: incarnation, last sync, resets.
    pub store: DeviceStore,
    /// The next envelope sequence number it will get.
    pub next_envelope_seq: u64,
    /// Its events recorded through this sequence number.
    pub acked_event_seq: u64,
    /// When it was provisioned.
    pub created_at_ms: u64,
}

impl DeviceView {
    /// Whether it is online with a synced store: ready for jobs.
    pub fn ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.state == Presence::Online) && self.store.incarnation.is_some()
    }
}

/// Where a device stands: online, offline, never seen, removed.
pub fn presence(device: &DeviceRow) -> &'static str {
    if device.removed_at_ms.is_some() {
        return "removed";
    }
    match device.status.as_ref().map(|s| s.state) {
        Some(Presence::Online) => "online",
        Some(Presence::Offline) => "offline",
        None => "never seen",
    }
}

/// The view of one device.
pub fn device_view(device: DeviceRow) -> DeviceView {
    DeviceView {
        state: presence(&device).to_string(),
        id: device.id.to_string(),
        kind: device.kind,
        labels: device.labels,
        public_key: device.public_key.to_hex(),
        status: device.status,
        status_at_ms: device.status_at_ms,
        depths: device.depths,
        store: device.store,
        next_envelope_seq: device.next_seq,
        acked_event_seq: device.acked_event_seq,
        created_at_ms: device.created_at_ms,
    }
}

/// Which devices a list returns, and which page of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFilter {
    /// Only devices carrying these labels (`k=v,k2=v2`).
    #[serde(default)]
    pub selector: Option<String>,
    /// Only devices in this state (`online`, `offline`, `never seen`, `removed`).
    #[serde(default)]
    pub state: Option<String>,
    /// Devices after this id (the previous page's `next`).
    #[serde(default)]
    pub after: Option<String>,
    /// At most this many (default and maximum 1,000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A page of a list: its items and where the next page starts (`None`: the last page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

/// The largest page a list returns.
pub const MAX_PAGE: usize = 1_000;

/// A page of devices, by id.
pub fn devices(store: &Store, filter: &DeviceFilter) -> OpResult<Page<DeviceView>> {
    let selector = match filter.selector.as_deref() {
        Some(text) => Some(
            crate::model::parse_labels(text)
                .map_err(|e| OpError::invalid(e.0, "a selector looks like site=plant-3"))?,
        ),
        None => None,
    };
    if let Some(state) = filter.state.as_deref()
        && !["online", "offline", "never seen", "removed"].contains(&state)
    {
        return Err(OpError::invalid_plain(format!(
            "`{state}` is not a device state: online, offline, never seen, removed"
        )));
    }
    let limit = filter.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let mut items = Vec::new();
    let mut next = None;
    for device in store.devices()? {
        if filter.after.as_deref().is_some_and(|after| device.id.as_str() <= after) {
            continue;
        }
        if selector.as_ref().is_some_and(|s| !s.iter().all(|(k, v)| device.labels.get(k) == Some(v))) {
            continue;
        }
        if filter.state.as_deref().is_some_and(|state| presence(&device) != state) {
            continue;
        }
        if items.len() == limit {
            next = items.last().map(|d: &DeviceView| d.id.clone());
            break;
        }
        items.push(device_view(device));
    }
    Ok(Page { items, next })
}

/// One device.
pub fn device(store: &Store, id: &str) -> OpResult<DeviceView> {
    store.device(id)?.map(device_view).ok_or_else(|| StoreError::NoDevice(id.to_string()).into())
}

/// Changes a device's labels; refuses labels the selector syntax could not match.
pub fn relabel(store: &mut Store, id: &str, labels: &Labels, actor: &str, now_ms: u64) -> OpResult<DeviceView> {
    let id = device_id(id)?;
    let parsed = crate::model::parse_labels(&crate::model::format_labels(labels))
        .map_err(|e| OpError::invalid(e.0, "labels are key=value pairs without , or ="))?;
    if parsed != *labels {
        return Err(OpError::invalid_plain("labels must be non-empty keys and values without , or ="));
    }
    store.set_device_labels(&id, labels, actor, now_ms)?;
    device(store, id.as_str())
}

/// What a decommission did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decommissioned {
    /// The device.
    pub device: String,
    /// False if it was decommissioned already.
    pub removed: bool,
    /// Jobs whose executions on it were canceled.
    pub canceled_jobs: Vec<String>,
}

/// Decommissions a device: credentials and key revoked, unfinished executions canceled,
/// history kept (a running serve cuts its connection off).
pub fn decommission(store: &mut Store, id: &str, actor: &str, now_ms: u64) -> OpResult<Decommissioned> {
    let id = device_id(id)?;
    let jobs = store.remove_device(&id, actor, now_ms)?;
    Ok(Decommissioned {
        device: id.to_string(),
        removed: jobs.is_some(),
        canceled_jobs: jobs.unwrap_or_default().iter().map(JobId::to_hex).collect(),
    })
}

/// A device id from text, or a refusal that says the rule.
pub fn device_id(text: &str) -> OpResult<DeviceId> {
    DeviceId::new(text).map_err(|e| OpError::invalid_plain(format!("`{text}` is not a device id: {e}")))
}

/// The controller's state and counters (`fleetctl status`, `GET /v1/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// Whether a `serve` holds the data directory.
    pub running: bool,
    /// What the running (or last) `serve` says about itself.
    pub controller: Option<serde_json::Value>,
    /// Its last heartbeat.
    pub heartbeat_ms: Option<u64>,
    /// Every counter.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Devices provisioned (removed ones included).
    pub devices: usize,
    /// Jobs pushed.
    pub jobs: usize,
    /// Jobs still running.
    pub jobs_in_progress: usize,
    /// The key that signs envelopes now.
    pub active_job_key: Option<String>,
    /// The database's schema version.
    pub schema_version: usize,
    /// The running serve's own account (pid, addresses, whether its store is writable).
    pub serve: Option<crate::datadir::ServeInfo>,
}

/// The controller's status.
pub fn status(store: &Store, serve: Option<crate::datadir::ServeInfo>) -> OpResult<StatusView> {
    let info = store.controller_info()?;
    let jobs = store.jobs()?;
    Ok(StatusView {
        running: serve.is_some(),
        controller: info.as_ref().and_then(|(i, _)| serde_json::from_str(i).ok()),
        heartbeat_ms: info.as_ref().map(|(_, at)| *at),
        counters: store.counters()?,
        devices: store.devices()?.len(),
        jobs: jobs.len(),
        jobs_in_progress: jobs.iter().filter(|j| j.state == JobState::InProgress).count(),
        active_job_key: store.keys()?.iter().find(|k| k.active).map(|k| k.key_id.to_hex()),
        schema_version: store.schema_version()?,
        serve,
    })
}
