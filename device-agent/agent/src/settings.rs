//! What the agent is told at start: the provisioned identity and the local settings.
//!
//! Why two files: `agent.json` (a [`DeviceConfig`]) is written by `fleetctl device
//! provision` and holds the device's identity and secrets; it belongs to the controller
//! and is replaced wholesale when a device is reprovisioned. Everything that is about
//! *this machine* (where the state lives, which local files back which data inputs, how
//! many jobs run at once, timers) is the operator's, so it lives apart, in an optional
//! `agent.toml` beside `agent.json`, and on the command line (flags win over the file).
//!
//! ```toml
//! # agent.toml (every key optional)
//! state_dir = "state"          # relative to this file's folder; default "state"
//! concurrency = 2              # executions at once; default 1
//! queue_capacity = 32          # executions waiting or running before QueueFull
//! resend_after_ms = 30000      # republish an unacknowledged event after this long
//! status_refresh_ms = 300000   # republish the retained status at least this often
//! tick_ms = 500                # the core's periodic wake-up
//! reconnect_min_ms = 100       # reconnect backoff: first delay ...
//! reconnect_max_ms = 5000      # ... and its cap (jittered, exponential)
//! keep_alive_secs = 30         # MQTT keep-alive
//! max_module_bytes = 16777216  # the largest module this device accepts
//! onnxruntime = "/opt/onnxruntime/lib/libonnxruntime.so"  # offer wasi-nn to jobs on it
//!
//! [data]                       # data inputs: name = file (relative to this file's folder)
//! readings = "/var/lib/sensors/readings.csv"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_agent_core::{AgentConfig, Capabilities, Tuning};
use fleet_schemas::limits::MAX_MODULE_BYTES;
use fleet_schemas::provision::{CONFIG_VERSION, DeviceConfig};
use fleet_schemas::{KeyRing, RuntimeClass, Topics, Trusted};
use serde::Deserialize;

use crate::backoff::BackoffConfig;

/// The name of the optional local settings file, looked for beside `agent.json`.
pub const LOCAL_FILE: &str = "agent.toml";

/// Why the agent cannot start with the settings it was given. Each says which file to fix.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config asks for TLS and there is no CA to check the broker against.
    #[error(
        "the device config has broker.tls = true and {0} is missing: without the fleet's CA the broker cannot be \
         checked (copy ca.pem from `fleetctl device provision --tls` beside agent.json)"
    )]
    NoBrokerCa(PathBuf),
    /// A client certificate without its key, or the other way round.
    #[error(
        "{present} is there and {missing} is not: a client certificate needs its key (copy both from \
         `fleetctl device provision --cert` beside agent.json)"
    )]
    HalfAnIdentity {
        /// The file found.
        present: PathBuf,
        /// The file missing.
        missing: PathBuf,
    },
    /// A client certificate with a config that does not ask for TLS.
    #[error("{0} is there but the device config has broker.tls = false: a client certificate needs MQTT over TLS")]
    IdentityWithoutTls(PathBuf),
    /// A board relay on a gateway that does not itself reach the broker over TLS.
    #[error(
        "{0}: board_relay carries boards to the broker over TLS, and this device's config has broker.tls = false \
         (provision it with --tls)"
    )]
    RelayWithoutTls(PathBuf),
    /// `board_relay` is not an address.
    #[error("{path}: board_relay = {value:?} is not an ADDRESS:PORT to listen on (e.g. \"0.0.0.0:1884\")")]
    RelayAddress {
        /// The local file.
        path: PathBuf,
        /// What it says.
        value: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `agent.json` is not a device config.
    #[error("{path} is not a device config written by `fleetctl device provision`: {source}")]
    DeviceConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// `agent.json` has a format this agent does not know.
    #[error("{path} has config version {found}; this agent reads version {CONFIG_VERSION}: reprovision the device")]
    ConfigVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u16,
    },
    /// `agent.toml` is not valid.
    #[error("{path} is not valid: {source}")]
    LocalFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A `--data NAME=PATH` flag without `=`.
    #[error("--data {0:?} is not NAME=PATH")]
    DataFlag(String),
    /// The provisioned keys or prefix are unusable.
    #[error("the device config is unusable: {0}; reprovision the device")]
    Identity(String),
}

/// The command-line flags that override the local file (see `main.rs` for the parser).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--data NAME=PATH`, repeated.
    pub data: Vec<String>,
    /// `--concurrency`.
    pub concurrency: Option<u32>,
    /// `--local FILE`: a local settings file elsewhere than beside the config.
    pub local_file: Option<PathBuf>,
    /// `--onnxruntime FILE`: ONNX Runtime's shared library, for wasi-nn.
    pub onnxruntime: Option<PathBuf>,
}

/// `agent.toml`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalFile {
    state_dir: Option<PathBuf>,
    concurrency: Option<u32>,
    queue_capacity: Option<u32>,
    resend_after_ms: Option<u64>,
    status_refresh_ms: Option<u64>,
    tick_ms: Option<u64>,
    reconnect_min_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    keep_alive_secs: Option<u64>,
    max_module_bytes: Option<u32>,
    onnxruntime: Option<PathBuf>,
    board_relay: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, PathBuf>,
}

/// Where the agent was told to find ONNX Runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnnxRuntimeSource {
    /// `--onnxruntime` or agent.toml's `onnxruntime`: the agent does not start without it.
    Configured(PathBuf),
    /// `ORT_DYLIB_PATH` (ONNX Runtime's own variable): used if it loads, else a warning.
    Environment(PathBuf),
}

/// Everything the agent runs with, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The provisioned identity.
    pub device: DeviceConfig,
    /// Where the SQLite store and its lock file live.
    pub state_dir: PathBuf,
    /// Data inputs: name → file.
    pub data: BTreeMap<String, PathBuf>,
    /// The core's limits and timers.
    pub tuning: Tuning,
    /// How often the core gets a `Tick`.
    pub tick: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// The largest module this device accepts.
    pub max_module_bytes: u32,
    /// ONNX Runtime's shared library, if the agent is to offer wasi-nn.
    pub onnxruntime: Option<OnnxRuntimeSource>,
    /// With `broker.tls`: the CA the broker's certificate must chain to (`ca.pem`
    /// beside the config, as `fleetctl device provision --tls` writes it).
    pub broker_ca: Option<PathBuf>,
    /// With `broker.tls`, optionally: the client certificate and key the agent logs in
    /// with instead of its password (mTLS; `device.crt` and `device.key` beside the
    /// config, as `fleetctl device provision --cert` writes them).
    pub client_identity: Option<ClientIdentity>,
    /// Where the gateway listens for its site's boards and carries each to the broker
    /// over TLS (`board_relay` in agent.toml; see [`crate::relay`]).
    pub board_relay: Option<std::net::SocketAddr>,
}

/// A client certificate and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// The broker CA's file name beside `agent.json`.
pub const BROKER_CA_FILE: &str = "ca.pem";
/// The client certificate's file name beside `agent.json`.
pub const CLIENT_CERT_FILE: &str = "device.crt";
/// Its key's file name beside `agent.json`.
pub const CLIENT_KEY_FILE: &str = "device.key";

impl Settings {
    /// Reads `config` (agent.json), the local file beside it if there is one, and applies
    /// the flags.
    pub fn load(config: &Path, overrides: &Overrides) -> Result<Self, SettingsError> {
        let text = read(config)?;
        warn_if_readable_by_others(config);
        let device: DeviceConfig = serde_json::from_str(&text)
            .map_err(|source| SettingsError::DeviceConfig { path: config.to_path_buf(), source })?;
        if device.version != CONFIG_VERSION {
            return Err(SettingsError::ConfigVersion { path: config.to_path_buf(), found: device.version });
        }
        let config_dir = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));

        let (local, local_dir) = match &overrides.local_file {
            Some(path) => (read_local(path)?, path.parent().unwrap_or(Path::new(".")).to_path_buf()),
            None => {
                let path = config_dir.join(LOCAL_FILE);
                let local = if path.exists() { read_local(&path)? } else { LocalFile::default() };
                (local, config_dir.to_path_buf())
            }
        };

        let state_dir = match (&overrides.state_dir, &local.state_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dir)) => local_dir.join(dir),
            (None, None) => config_dir.join("state"),
        };
        let mut data: BTreeMap<String, PathBuf> =
            local.data.iter().map(|(name, path)| (name.clone(), local_dir.join(path))).collect();
        for flag in &overrides.data {
            let (name, path) = flag.split_once('=').ok_or_else(|| SettingsError::DataFlag(flag.clone()))?;
            if name.is_empty() || path.is_empty() {
                return Err(SettingsError::DataFlag(flag.clone()));
            }
            data.insert(name.to_string(), PathBuf::from(path));
        }

        let defaults = Tuning::default();
        let tuning = Tuning {
            max_concurrent: overrides.concurrency.or(local.concurrency).unwrap_or(1).max(1),
            queue_capacity: local.queue_capacity.unwrap_or(defaults.queue_capacity),
            resend_after_ms: local.resend_after_ms.unwrap_or(defaults.resend_after_ms),
            status_refresh_ms: local.status_refresh_ms.unwrap_or(defaults.status_refresh_ms),
            ..defaults
        };
        let backoff = BackoffConfig {
            min: Duration::from_millis(local.reconnect_min_ms.unwrap_or(100).max(1)),
            max: Duration::from_millis(local.reconnect_max_ms.unwrap_or(5_000).max(1)),
        };
        let broker_ca = if device.broker.tls {
            let path = config_dir.join(BROKER_CA_FILE);
            if !path.is_file() {
                return Err(SettingsError::NoBrokerCa(path));
            }
            Some(path)
        } else {
            None
        };
        let (cert, key) = (config_dir.join(CLIENT_CERT_FILE), config_dir.join(CLIENT_KEY_FILE));
        let client_identity = match (cert.is_file(), key.is_file()) {
            (false, false) => None,
            (true, false) => return Err(SettingsError::HalfAnIdentity { present: cert, missing: key }),
            (false, true) => return Err(SettingsError::HalfAnIdentity { present: key, missing: cert }),
            (true, true) if !device.broker.tls => return Err(SettingsError::IdentityWithoutTls(cert)),
            (true, true) => Some(ClientIdentity { cert, key }),
        };
        let local_path = match &overrides.local_file {
            Some(path) => path.clone(),
            None => config_dir.join(LOCAL_FILE),
        };
        let board_relay = match &local.board_relay {
            None => None,
            Some(_) if !device.broker.tls => return Err(SettingsError::RelayWithoutTls(local_path)),
            Some(value) => Some(
                value
                    .parse()
                    .map_err(|_| SettingsError::RelayAddress { path: local_path.clone(), value: value.clone() })?,
            ),
        };
        Ok(Self {
            broker_ca,
            client_identity,
            board_relay,
            device,
            state_dir,
            data,
            tuning,
            tick: Duration::from_millis(local.tick_ms.unwrap_or(500).max(10)),
            backoff,
            keep_alive: Duration::from_secs(local.keep_alive_secs.unwrap_or(30).max(5)),
            max_module_bytes: local.max_module_bytes.unwrap_or(MAX_MODULE_BYTES).min(MAX_MODULE_BYTES),
            onnxruntime: match (&overrides.onnxruntime, &local.onnxruntime) {
                (Some(path), _) => Some(OnnxRuntimeSource::Configured(path.clone())),
                (None, Some(path)) => Some(OnnxRuntimeSource::Configured(local_dir.join(path))),
                (None, None) => std::env::var_os("ORT_DYLIB_PATH")
                    .filter(|v| !v.is_empty())
                    .map(|v| OnnxRuntimeSource::Environment(PathBuf::from(v))),
            },
        })
    }

    /// What jobs may ask of this device.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            // This binary is the gateway agent, whatever the provisioning says.
            runtime: RuntimeClass::Gateway,
            gpu: crate::gpu::detect(),
            labels: self.device.labels.clone(),
            data_inputs: self.data.keys().cloned().collect::<BTreeSet<_>>(),
            max_module_bytes: self.max_module_bytes,
            inference: Vec::new(),
            wasi: fleet_executor::WASI_VERSIONS.iter().map(|v| String::from(*v)).collect(),
        }
    }

    /// The fleet's topic names.
    pub fn topics(&self) -> Result<Topics, SettingsError> {
        Topics::new(&self.device.topic_prefix).map_err(|e| SettingsError::Identity(e.to_string()))
    }

    /// The core's configuration: identity, trust anchors, capabilities, tuning.
    pub fn agent_config(&self) -> Result<AgentConfig, SettingsError> {
        let root_key = Trusted::new(&self.device.root_key)
            .ok_or_else(|| SettingsError::Identity("the root key is not an ed25519 public key".into()))?;
        let trusted = self
            .device
            .job_keys
            .iter()
            .map(|k| Trusted::new(&k.public_key).filter(|t| t.key_id == k.key_id))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| SettingsError::Identity("a job key is invalid or its key id does not match".into()))?;
        let provisioned_keys =
            KeyRing::new(trusted).ok_or_else(|| SettingsError::Identity("too many job keys".into()))?;
        Ok(AgentConfig {
            device_id: self.device.device_id.clone(),
            topics: self.topics()?,
            device_key: self.device.device_key.signing_key(),
            root_key,
            provisioned_keys,
            capabilities: self.capabilities(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            tuning: self.tuning,
            fresh_incarnation: fresh_incarnation()?,
        })
    }
}

/// 16 random bytes: the incarnation of the store, should it turn out to be new.
fn fresh_incarnation() -> Result<fleet_schemas::Incarnation, SettingsError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| SettingsError::Identity(format!("no randomness from the operating system: {e}")))?;
    Ok(fleet_schemas::Incarnation(bytes))
}

/// `agent.json` holds the device's signing key seed and broker password; `fleetctl`
/// writes it owner-only. Say so if it has been copied with looser permissions.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the device config holds the device's secret key and is readable by others: chmod 600 it"
            );
        }
    }
}

fn read(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: path.to_path_buf(), source })
}

fn read_local(path: &Path) -> Result<LocalFile, SettingsError> {
    toml::from_str(&read(path)?)
        .map_err(|source| SettingsError::LocalFile { path: path.to_path_buf(), source: Box::new(source) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fleet_schemas::provision::BrokerEndpoint;
    use fleet_schemas::signed::public_key_of;
    use fleet_schemas::{DeviceId, Digest, SigningKey, TrustedKey};

    use super::*;

    fn provision(dir: &Path) -> PathBuf {
        let job_key = SigningKey::from_bytes(&[1; 32]);
        let config = DeviceConfig {
            version: CONFIG_VERSION,
            device_id: DeviceId::new("gw-1").unwrap(),
            device_key: fleet_schemas::provision::SecretSeed(Digest([2; 32])),
            root_key: public_key_of(&SigningKey::from_bytes(&[3; 32])).1,
            job_keys: vec![TrustedKey::new(public_key_of(&job_key).1)],
            broker: BrokerEndpoint { host: "127.0.0.1".into(), port: 1883, tls: false },
            username: "gw-1".into(),
            password: "secret".into(),
            topic_prefix: "fleet".into(),
            runtime: RuntimeClass::Gateway,
            labels: BTreeMap::from([("site".into(), "plant-3".into())]),
        };
        let path = dir.join("agent.json");
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        path
    }

    #[test]
    fn a_board_relay_needs_tls_and_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let config = provision(dir.path());
        std::fs::write(dir.path().join(LOCAL_FILE), "board_relay = \"127.0.0.1:1884\"\n").unwrap();
        let error = Settings::load(&config, &Overrides::default()).unwrap_err();
        assert!(matches!(error, SettingsError::RelayWithoutTls(_)), "{error}");

        // The same gateway on TLS, with the fleet's CA beside its config.
        let text = std::fs::read_to_string(&config).unwrap().replace("\"tls\":false", "\"tls\":true");
        std::fs::write(&config, text).unwrap();
        std::fs::write(dir.path().join(BROKER_CA_FILE), "not read until the agent runs").unwrap();
        let settings = Settings::load(&config, &Overrides::default()).unwrap();
        assert_eq!(settings.board_relay, Some("127.0.0.1:1884".parse().unwrap()));

        std::fs::write(dir.path().join(LOCAL_FILE), "board_relay = \"the gateway\"\n").unwrap();
        let error = Settings::load(&config, &Overrides::default()).unwrap_err();
        assert!(matches!(error, SettingsError::RelayAddress { .. }), "{error}");
        assert!(error.to_string().contains("\"the gateway\""), "{error}");
    }

    #[test]
    fn defaults_without_a_local_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = provision(dir.path());
        let settings = Settings::load(&config, &Overrides::default()).unwrap();
        assert_eq!(settings.state_dir, dir.path().join("state"));
        assert!(settings.data.is_empty());
        assert_eq!(settings.tuning, Tuning::default());
        assert_eq!(settings.backoff.max, Duration::from_secs(5));
        let core = settings.agent_config().unwrap();
        assert_eq!(core.capabilities.labels.get("site").map(String::as_str), Some("plant-3"));
        assert_eq!(core.capabilities.runtime, RuntimeClass::Gateway);
        // What this machine has: none on CI, the card on a GPU gateway.
        assert_eq!(core.capabilities.gpu, crate::gpu::detect());
    }

    #[test]
    fn the_local_file_is_read_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let config = provision(dir.path());
        std::fs::write(
            dir.path().join(LOCAL_FILE),
            "state_dir = \"var\"\nconcurrency = 3\nresend_after_ms = 1000\n[data]\nreadings = \"r.csv\"\ncamera = \"/dev/cam\"\n",
        )
        .unwrap();
        let settings = Settings::load(&config, &Overrides::default()).unwrap();
        assert_eq!(settings.state_dir, dir.path().join("var"));
        assert_eq!(settings.tuning.max_concurrent, 3);
        assert_eq!(settings.tuning.resend_after_ms, 1000);
        assert_eq!(settings.data.get("readings"), Some(&dir.path().join("r.csv")));
        assert_eq!(settings.data.get("camera"), Some(&PathBuf::from("/dev/cam")));

        let overrides = Overrides {
            state_dir: Some(PathBuf::from("/srv/fleet")),
            data: vec!["readings=/tmp/other.csv".into()],
            concurrency: Some(1),
            local_file: None,
            onnxruntime: Some(PathBuf::from("/opt/ort/libonnxruntime.so")),
        };
        let settings = Settings::load(&config, &overrides).unwrap();
        assert_eq!(settings.state_dir, PathBuf::from("/srv/fleet"));
        assert_eq!(settings.tuning.max_concurrent, 1);
        assert_eq!(settings.data.get("readings"), Some(&PathBuf::from("/tmp/other.csv")));
        assert_eq!(
            settings.onnxruntime,
            Some(OnnxRuntimeSource::Configured(PathBuf::from("/opt/ort/libonnxruntime.so")))
        );
        let inputs = settings.agent_config().unwrap().capabilities.data_inputs;
        assert_eq!(inputs, BTreeSet::from(["camera".to_string(), "readings".to_string()]));
    }

    #[test]
    fn mistakes_are_refused_with_the_file_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let config = provision(dir.path());
        let bad_flag = Overrides { data: vec!["readings".into()], ..Overrides::default() };
        assert!(matches!(Settings::load(&config, &bad_flag), Err(SettingsError::DataFlag(_))));

        std::fs::write(dir.path().join(LOCAL_FILE), "concurency = 2\n").unwrap();
        let error = Settings::load(&config, &Overrides::default()).unwrap_err();
        assert!(matches!(error, SettingsError::LocalFile { .. }), "{error}");

        std::fs::write(&config, "{}").unwrap();
        let error = Settings::load(&config, &Overrides::default()).unwrap_err();
        assert!(matches!(error, SettingsError::DeviceConfig { .. }), "{error}");
        assert!(error.to_string().contains("fleetctl device provision"));
    }
}
