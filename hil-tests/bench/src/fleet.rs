//! One benchmark fleet: a controller on a fresh data directory, its broker (embedded,
//! or mosquitto configured from the registry), and the devices it knows.
//!
//! The controller is the real one: a `fleetctl serve` process on the fleet's data
//! directory, with its embedded broker or pointed at mosquitto. A process of its own, as
//! it is deployed, and so the open files of 10,000 connections are split between it
//! (the broker's ends) and this process (the devices' ends). Devices are registered straight into its store (what
//! `fleetctl device provision` writes, minus the per-device files, which would cost
//! 10,000 process starts), and a job is pushed the way `fleetctl job push` pushes it:
//! stored in one transaction, which the running controller notices and rolls out.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fleet_controller::acl::{acl_file, mosquitto_hash, passwd_file};
use fleet_controller::auth::password_hash;
use fleet_controller::datadir::DataDir;
use fleet_controller::model::{DeviceKind, RolloutParams, Target};
use fleet_controller::signer::prepare_module;
use fleet_controller::store::{NewDevice, NewJob, Store};
use fleet_controller::{random_32, rollout, unix_ms};
use fleet_hil::controller::{Controller, ServeBroker};
use fleet_hil::mosquitto::{Mosquitto, Persistence};
use fleet_schemas::digest::sha256;
use fleet_schemas::provision::{BrokerEndpoint, CONFIG_VERSION, DeviceConfig, SecretSeed};
use fleet_schemas::signed::public_key_of;
use fleet_schemas::topics::DEFAULT_PREFIX;
use fleet_schemas::{
    DeviceId, Digest, JobCounts, JobId, JobSpec, KeyRing, Limits, ModuleSource, Presence, PublicKey, Requirements,
    RuntimeClass, SigningKey, Topics, Trusted, TrustedKey,
};

use crate::swarm::{Identity, Trust};

/// Which broker the fleet runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// The controller's embedded broker (the default deployment).
    Embedded,
    /// mosquitto, with `passwd` and `acl` generated from the registry.
    Mosquitto,
}

impl BrokerKind {
    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Embedded => "embedded",
            BrokerKind::Mosquitto => "mosquitto",
        }
    }
}

/// A running benchmark fleet.
pub struct BenchFleet {
    _dir: tempfile::TempDir,
    data: DataDir,
    /// The controller's API, once used: its URL and a client holding one connection.
    api: Option<(String, String, reqwest::Client)>,
    store: Store,
    devices: Vec<Identity>,
    trust: Trust,
    root_key: PublicKey,
    job_keys: Vec<TrustedKey>,
    controller: Option<Controller>,
    mosquitto: Option<Mosquitto>,
    broker: SocketAddr,
    /// With MQTT over TLS: the embedded broker's TLS port and a client configuration
    /// trusting the controller's CA.
    tls: Option<(SocketAddr, std::sync::Arc<rumqttc::tokio_rustls::rustls::ClientConfig>)>,
}

/// How the swarm's devices reach the broker.
#[derive(Clone)]
pub struct Link {
    /// The broker's address.
    pub addr: SocketAddr,
    /// MQTT over TLS with this client configuration; plain TCP without.
    pub tls: Option<std::sync::Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
}

impl BenchFleet {
    /// A controller on `broker` with `devices` registered (ids `{tag}-00000`...).
    pub async fn start(broker: BrokerKind, devices: usize, tag: &str) -> anyhow::Result<Self> {
        Self::start_with(broker, devices, tag, false).await
    }

    /// Like [`BenchFleet::start`]; with `tls`, the embedded broker also serves MQTT over
    /// TLS and [`BenchFleet::link`] points there.
    pub async fn start_with(broker: BrokerKind, devices: usize, tag: &str, tls: bool) -> anyhow::Result<Self> {
        if tls && broker != BrokerKind::Embedded {
            bail!("the TLS figures run on the embedded broker");
        }
        let mut dir = tempfile::Builder::new().prefix("fleet-bench-").tempdir()?;
        if std::env::var_os("FLEET_BENCH_KEEP").is_some() {
            // For looking into a run afterwards (the controller's log is in it).
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let data = DataDir::new(dir.path().join("data"));
        let mut store = data.open_or_init()?;
        let identities: Vec<Identity> = (0..devices).map(|n| identity(tag, n)).collect::<anyhow::Result<_>>()?;
        let now = unix_ms();
        for device in &identities {
            store.insert_device(&registration(device), "bench", now)?;
        }
        // What every device is provisioned to trust, read once.
        let root_key = store.root_key()?.context("the data directory has no root key")?.public_key;
        let job_keys: Vec<TrustedKey> = store
            .trusted_job_keys()?
            .iter()
            .map(|k| TrustedKey { key_id: k.key_id, public_key: k.public_key })
            .collect();
        let root = Trusted::new(&root_key).context("the root key is not a valid ed25519 key")?;
        let keys = job_keys
            .iter()
            .map(|k| Trusted::new(&k.public_key))
            .collect::<Option<Vec<_>>>()
            .and_then(KeyRing::new)
            .context("the trusted job keys do not make a key ring")?;

        let (choice, mosquitto) = match broker {
            BrokerKind::Embedded => (ServeBroker::Embedded(fleet_hil::controller::free_port()?), None),
            BrokerKind::Mosquitto => {
                let addr = free_port()?;
                let mut mosquitto = Mosquitto::configured(&dir.path().join("mosquitto"), addr, Persistence::InMemory)?;
                let entries = store.mosquitto_entries()?;
                let controller = mosquitto_hash(&data.controller_password()?, b"bench-salt12");
                let observer = mosquitto_hash(&data.observer_password_or_make()?, b"bench-salt12");
                std::fs::write(mosquitto.dir().join("passwd"), passwd_file(&controller, &observer, &entries))?;
                let ids: Vec<DeviceId> = entries.into_iter().map(|(id, _)| id).collect();
                std::fs::write(mosquitto.dir().join("acl"), acl_file(&Topics::default(), &ids))?;
                mosquitto.start()?;
                (ServeBroker::External(addr), Some(mosquitto))
            }
        };
        let log = dir.path().join("controller.log");
        let mut controller = Controller::new(data.path(), choice, &log)?
            .with_log_filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,rumqttd=off".into()));
        if tls {
            controller = controller.with_tls()?;
        }
        let broker = controller.start()?;
        let tls = match controller.tls_addr() {
            Some(addr) => {
                let config = fleet_controller::tls::client_config(&data.path().join("tls/ca.pem"))?;
                Some((addr, config))
            }
            None => None,
        };
        Ok(Self {
            tls,
            _dir: dir,
            data,
            api: None,
            store,
            devices: identities,
            trust: Trust { root, keys },
            root_key,
            job_keys,
            controller: Some(controller),
            mosquitto,
            broker,
        })
    }

    /// How devices connect: MQTT over TLS when the fleet was started with it.
    pub fn link(&self) -> Link {
        match &self.tls {
            Some((addr, config)) => Link { addr: *addr, tls: Some(config.clone()) },
            None => Link { addr: self.broker, tls: None },
        }
    }

    /// The controller's process id.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().and_then(Controller::pid)
    }

    /// The registered devices.
    pub fn devices(&self) -> &[Identity] {
        &self.devices
    }

    /// What every device trusts.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// What `fleetctl device provision` writes for `device` (`agent.json`), pointing at
    /// this fleet's broker: for running a real `fleet-agent` as one of the devices.
    pub fn device_config(&self, device: &Identity) -> DeviceConfig {
        DeviceConfig {
            version: CONFIG_VERSION,
            device_id: device.id.clone(),
            device_key: SecretSeed(Digest(device.key.to_bytes())),
            root_key: self.root_key,
            job_keys: self.job_keys.clone(),
            broker: BrokerEndpoint { host: self.broker.ip().to_string(), port: self.broker.port(), tls: false },
            username: device.id.to_string(),
            password: device.password.clone(),
            topic_prefix: DEFAULT_PREFIX.to_string(),
            runtime: RuntimeClass::Gateway,
            labels: Default::default(),
        }
    }

    /// Waits until the controller has recorded every device online.
    pub async fn wait_online(&self, guard: Duration) -> anyhow::Result<()> {
        self.wait_online_count(self.devices.len(), guard).await
    }

    /// Waits until the controller has recorded `n` devices online.
    pub async fn wait_online_count(&self, n: usize, guard: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let online = self
                .store
                .devices()?
                .iter()
                .filter(|d| d.status.as_ref().is_some_and(|s| s.state == Presence::Online))
                .count();
            if online >= n {
                return Ok(());
            }
            if started.elapsed() > guard {
                bail!("only {online} of {n} devices recorded online within {guard:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Pushes `module` (entry `run`) to `targets`, as `fleetctl job push` does.
    pub fn push(&mut self, module: &[u8], targets: &[DeviceId]) -> anyhow::Result<JobId> {
        let job = new_job(module, targets)?;
        self.store.insert_job(&job, targets, "bench", unix_ms())?;
        Ok(job.id)
    }

    /// Pushes `module` (entry `run`) to `targets` through the controller's operator
    /// API, as `fleetctl job push` does with a `serve` running: HTTPS with the
    /// controller's CA and the local token, one connection kept alive across pushes.
    pub async fn push_api(&mut self, module: &[u8], targets: &[DeviceId]) -> anyhow::Result<JobId> {
        use base64::Engine as _;
        if self.api.is_none() {
            let url = self.data.serving().and_then(|s| s.api).context("the controller advertises no API")?;
            let token = std::fs::read_to_string(self.data.path().join(fleet_controller::api::LOCAL_TOKEN_FILE))?;
            let ca = reqwest::Certificate::from_pem(&std::fs::read(self.data.path().join("tls/ca.pem"))?)?;
            let client = reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca)
                .tcp_nodelay(true)
                .build()?;
            self.api = Some((url, token.trim().to_string(), client));
        }
        let (url, token, client) = self.api.as_ref().context("no API client")?;
        let body = fleet_controller::operate::PushBody {
            request: fleet_controller::operate::PushRequest::new(Target::Devices(targets.to_vec())),
            module: base64::engine::general_purpose::STANDARD.encode(module),
        };
        let response = client.post(format!("{url}/v1/jobs")).bearer_auth(token).json(&body).send().await?;
        let status = response.status();
        if !status.is_success() {
            bail!("the API refused the push ({status}): {}", response.text().await.unwrap_or_default());
        }
        let pushed: fleet_controller::operate::Pushed = response.json().await?;
        Ok(pushed.job.parse()?)
    }

    /// The controller's store commit latencies from its `/metrics` (the push API must
    /// have been used): `(upper bound in seconds, commits at or under it)`, cumulative.
    pub async fn commit_histogram(&self) -> anyhow::Result<Vec<(f64, u64)>> {
        let (url, token, client) = self.api.as_ref().context("the API was not used")?;
        let text = client.get(format!("{url}/metrics")).bearer_auth(token).send().await?.text().await?;
        let mut buckets = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("fleet_store_commit_duration_seconds_bucket{le=\"") else { continue };
            let Some((le, count)) = rest.split_once("\"} ") else { continue };
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse()? };
            buckets.push((le, count.parse()?));
        }
        Ok(buckets)
    }

    /// The job's counts, as `fleetctl job status` shows them.
    pub fn counts(&self, job: &JobId) -> anyhow::Result<JobCounts> {
        Ok(rollout::counts(&self.store.exec_views(job)?).1)
    }

    /// Waits until `expected` executions of `job` are recorded succeeded, polling every
    /// `poll`; fails on any failed, rejected or timed-out execution, or after `guard`.
    pub async fn wait_succeeded(
        &self,
        job: &JobId,
        expected: u32,
        poll: Duration,
        guard: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let counts = self.counts(job)?;
            if counts.failed + counts.rejected + counts.timed_out > 0 {
                bail!("job {job} did not succeed everywhere: {counts:?}");
            }
            if counts.succeeded >= expected {
                return Ok(started.elapsed());
            }
            if started.elapsed() > guard {
                bail!("job {job}: {} of {expected} succeeded within {guard:?}: {counts:?}", counts.succeeded);
            }
            if poll < Duration::from_millis(1) {
                // Finer than tokio's timer (1 ms ticks): a thread sleep, off the async
                // workers, so a latency figure is not rounded up by its own polling.
                tokio::task::block_in_place(|| std::thread::sleep(poll));
            } else {
                tokio::time::sleep(poll).await;
            }
        }
    }

    /// Stops the controller and the broker.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut controller) = self.controller.take() {
            controller.stop()?;
        }
        if let Some(mut mosquitto) = self.mosquitto.take() {
            mosquitto.stop()?;
        }
        Ok(())
    }
}

/// A job running `module` (entry `run`, default limits and rollout) on `targets`, as
/// `fleetctl job push` builds it.
pub fn new_job(module: &[u8], targets: &[DeviceId]) -> anyhow::Result<NewJob> {
    let job_id = JobId(random_32()?[..16].try_into()?);
    let spec = JobSpec {
        job_id,
        module: ModuleSource::Inline(Vec::new()),
        entry: "run".into(),
        args: Vec::new(),
        limits: Limits { fuel: 0, memory_pages: 0, timeout_ms: 0 },
        requirements: Requirements::default(),
        inputs: Vec::new(),
    };
    let prepared = prepare_module(spec, module)?;
    Ok(NewJob {
        id: job_id,
        spec: postcard::to_allocvec(&prepared.spec)?,
        module_hash: sha256(module),
        chunked_module: prepared.chunks.is_some().then(|| module.to_vec()),
        module_size: module.len() as u64,
        entry: "run".into(),
        target: Target::Devices(targets.to_vec()),
        params: RolloutParams::default(),
    })
}

/// A device's identity, derived from its index (a benchmark needs no secrets).
pub fn identity(tag: &str, n: usize) -> anyhow::Result<Identity> {
    let id = DeviceId::new(format!("{tag}-{n:05}"))?;
    let key = SigningKey::from_bytes(&sha256(id.as_str().as_bytes()).0);
    let password = format!("pw-{id}");
    Ok(Identity { id, key, password })
}

pub fn registration(device: &Identity) -> NewDevice {
    NewDevice {
        id: device.id.clone(),
        kind: DeviceKind::Mcu,
        labels: Default::default(),
        public_key: public_key_of(&device.key).1,
        password_hash: password_hash(device.password.as_bytes()),
        // mosquitto reads only 12-byte salts.
        mosquitto_hash: mosquitto_hash(&device.password, b"bench-salt12"),
        cert_sha256: None,
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
