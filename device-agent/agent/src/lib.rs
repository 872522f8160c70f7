//! # fleet-agent: the Linux gateway agent
//!
//! A thin shell around the agent core (`fleet-agent-core`, the sans-IO state machine
//! that holds every protocol decision), in the way `quinn` is a tokio shell around
//! `quinn-proto`. This crate only moves bytes: MQTT in and out (rumqttc), the core's
//! durable state in and out (SQLite), Wasm runs in and out (the wasmtime executor).
//!
//! ```text
//!        agent.json + agent.toml + flags ──▶ settings
//!                                              │
//!  broker ◀──MQTT──▶ link (tokio task) ──Wake──▶ shell thread ◀──Wake── job threads (wasmtime)
//!                                              │  AgentCore::handle(input, now) → actions
//!                                              ▼
//!                                     store (SQLite, WAL, synchronous=FULL)
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`settings`] | `agent.json` (provisioned identity), `agent.toml` and flags (local settings) |
//! | [`store`] | the core's `StoreOp` batches as SQLite transactions; `Recovered` at start |
//! | [`link`] | rumqttc: persistent session, manual acks, last-will, reconnect |
//! | [`backoff`] | jittered exponential reconnect delays |
//! | [`exec`] | one thread per run on the `fleet-executor` wasmtime backend, stop signals |
//! | [`shell`] | the thread that owns the core and the store and performs actions in order |
//! | [`gpu`] | GPU detection (DRM sysfs, NVIDIA's proc files and nvidia-smi), run once at start |
//! | [`inference`] | wasi-nn for jobs: ONNX Runtime loaded at start, CPU or GPU placement |
//!
//! [`run`] starts it all and returns when the process is told to stop (SIGINT, SIGTERM)
//! or the store fails.

pub mod backoff;
pub mod exec;
pub mod gpu;
pub mod inference;
pub mod link;
pub mod relay;
pub mod settings;
pub mod shell;
pub mod store;

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use fleet_agent_core::{AgentCore, RecoverError};
use fleet_executor::{ExecutorConfig, SetupError};
use tracing::{info, warn};

use crate::exec::Executions;
use crate::inference::Inference;
use crate::link::LinkConfig;
use crate::settings::{Settings, SettingsError};
use crate::shell::{Shell, Wake};
use crate::store::{Store, StoreError};

/// The lock file in the state directory: one agent per store.
pub const LOCK_FILE: &str = "agent.lock";

/// How long a stopping agent waits for its offline status and DISCONNECT to go out.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// Why the agent stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The settings are unusable.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store holds keys the core cannot use.
    #[error(transparent)]
    Recover(#[from] RecoverError),
    /// The executor could not be built.
    #[error(transparent)]
    Executor(#[from] SetupError),
    /// The configured ONNX Runtime cannot be used.
    #[error("inference: {0}")]
    Inference(String),
    /// The device config asks for something this agent cannot honour safely.
    #[error("{0}")]
    Unsupported(String),
    /// Another agent holds the state directory.
    #[error("another fleet-agent is running on {0} (it holds {LOCK_FILE}); stop it first")]
    AlreadyRunning(PathBuf),
    /// A system resource (the state directory, a thread, the async runtime).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A TLS client configuration trusting only the CA certificates in `ca` (PEM), and
/// presenting `identity` (mTLS) when there is one.
fn tls_config(
    ca: &std::path::Path,
    identity: Option<&settings::ClientIdentity>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, AgentError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let bad = |why: String| AgentError::Unsupported(format!("the broker CA {}: {why}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots);
    let config = match identity {
        None => config.with_no_client_auth(),
        Some(identity) => {
            let bad = |path: &std::path::Path, why: String| {
                AgentError::Unsupported(format!("the client certificate {}: {why}", path.display()))
            };
            let chain = CertificateDer::pem_file_iter(&identity.cert)
                .map_err(|e| bad(&identity.cert, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(&identity.cert, e.to_string()))?;
            if chain.is_empty() {
                return Err(bad(&identity.cert, "no certificate in it".into()));
            }
            let key = PrivateKeyDer::from_pem_file(&identity.key).map_err(|e| bad(&identity.key, e.to_string()))?;
            config.with_client_auth_cert(chain, key).map_err(|e| bad(&identity.cert, e.to_string()))?
        }
    };
    Ok(std::sync::Arc::new(config))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// Runs the agent until SIGINT or SIGTERM (or a store failure).
pub fn run(settings: Settings) -> Result<(), AgentError> {
    // With broker.tls, the broker's certificate must chain to the fleet's CA and name the
    // broker's host; there is no plain fallback (it would send the password in clear).
    let tls = match (&settings.device.broker.tls, &settings.broker_ca) {
        (false, _) => None,
        (true, Some(ca)) => Some(tls_config(ca, settings.client_identity.as_ref())?),
        (true, None) => {
            return Err(AgentError::Unsupported(
                "the device config has broker.tls = true and no CA to check the broker against".to_string(),
            ));
        }
    };
    let state_dir = &settings.state_dir;
    std::fs::create_dir_all(state_dir)
        .map_err(io(format!("cannot create the state directory {}", state_dir.display())))?;
    let _lock = lock(&settings)?;

    let store = open_store(state_dir)?;
    let recovered = store.recover()?;
    if recovered.incarnation.is_none() && !recovered.has_state() {
        warn!(
            device = %settings.device.device_id,
            state_dir = %state_dir.display(),
            "the store is new (a first start, or a store that was reset): it syncs with the controller before it runs anything"
        );
    } else {
        info!(
            device = %settings.device.device_id,
            state_dir = %state_dir.display(),
            queued = recovered.executions.len(),
            outbox = recovered.outbox.len(),
            last_seq = recovered.replay.last_seq,
            "store recovered"
        );
    }
    let mut agent_config = settings.agent_config()?;
    let inference = Inference::start(settings.onnxruntime.as_ref(), agent_config.capabilities.gpu.as_ref())
        .map_err(AgentError::Inference)?;
    agent_config.capabilities.inference = inference.advertised();
    let core = AgentCore::new(agent_config, recovered)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fleet-agent-io")
        .enable_all()
        .build()
        .map_err(io("cannot start the async runtime"))?;

    let (wake_tx, wake_rx) = mpsc::channel::<Wake>();
    let link_config = LinkConfig {
        host: settings.device.broker.host.clone(),
        port: settings.device.broker.port,
        client_id: settings.device.device_id.to_string(),
        username: settings.device.username.clone(),
        password: settings.device.password.clone(),
        keep_alive: settings.keep_alive,
        backoff: settings.backoff,
        last_will: core.last_will(),
        tls,
    };
    let (link, link_task) = link::start(link_config, runtime.handle(), wake_tx.clone());
    let relay_task = match (settings.board_relay, &settings.broker_ca) {
        (Some(listen), Some(ca)) => {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(listen))
                .map_err(io(format!("cannot listen for boards on {listen} (board_relay in agent.toml)")))?;
            let upstream = relay::Upstream {
                host: settings.device.broker.host.clone(),
                port: settings.device.broker.port,
                tls: tls_config(ca, None)?,
            };
            info!(%listen, "board relay: boards reach the broker over TLS through this gateway");
            Some(runtime.spawn(relay::serve(listener, upstream)))
        }
        _ => None,
    };
    let executions = Executions::new(
        ExecutorConfig::gateway(settings.device.device_id.clone()),
        &settings.data,
        &inference,
        wake_tx.clone(),
    )?;
    info!(
        broker = %format!("{}:{}", settings.device.broker.host, settings.device.broker.port),
        concurrency = settings.tuning.max_concurrent,
        data_inputs = settings.data.len(),
        "fleet-agent starting"
    );
    for (name, path) in &settings.data {
        // Advertised anyway (a sensor file may appear later), but say so now rather
        // than in every job's failure.
        if !path.exists() {
            warn!(
                input = %name,
                path = %path.display(),
                "data input {name}: {} does not exist; jobs that read it fail until it does",
                path.display()
            );
        }
    }

    let shell = Shell::new(core, store, link, executions, (wake_tx.clone(), wake_rx), settings.tick);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let shell_thread = std::thread::Builder::new()
        .name("fleet-agent-core".into())
        .spawn(move || {
            let result = shell.run();
            let _ = done_tx.send(());
            result
        })
        .map_err(io("cannot start the core thread"))?;

    runtime.block_on(async {
        tokio::select! {
            signal = stop_signal() => {
                info!(signal, "stopping");
                let _ = wake_tx.send(Wake::Shutdown);
            }
            _ = done_rx => {}
        }
    });
    let result = shell_thread.join().unwrap_or_else(|_| {
        warn!("the core thread panicked");
        Ok(())
    });
    if let Some(relay) = relay_task {
        relay.abort();
    }
    runtime.block_on(async {
        let _ = tokio::time::timeout(DISCONNECT_GRACE, link_task).await;
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    result.map_err(AgentError::from)
}

/// Opens the store; on a full disk (opening needs a little new space: SQLite's
/// shared-memory index) it waits for space, saying so, instead of exiting and being
/// started again in a loop by its supervisor.
fn open_store(state_dir: &std::path::Path) -> Result<Store, AgentError> {
    let mut waited = false;
    loop {
        match Store::open(state_dir) {
            Ok(store) => {
                if waited {
                    info!("the store opened: starting");
                }
                return Ok(store);
            }
            Err(error) if error.is_unwritable() => {
                if !waited {
                    warn!(%error, "cannot open the store (is the disk full?); waiting for space, trying every 5 s");
                }
                waited = true;
                std::thread::sleep(Duration::from_secs(5));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Holds the state directory's lock file for the agent's lifetime (the kernel drops it
/// when the process dies, SIGKILL included).
fn lock(settings: &Settings) -> Result<File, AgentError> {
    let path = settings.state_dir.join(LOCK_FILE);
    let file = File::create(&path).map_err(io(format!("cannot create {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AgentError::AlreadyRunning(settings.state_dir.clone())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(format!("cannot lock {}", path.display()))(e)),
    }
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
