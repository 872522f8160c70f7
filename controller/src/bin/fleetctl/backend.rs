//! Where a command acts: the controller's API (a remote one, or the local `serve` found
//! through the data directory), or, with no `serve` running, the data directory's
//! database itself.
//!
//! Every read and write goes through [`Backend`], whose two sides call the same
//! [`operate`] functions (the API calls them behind HTTPS), so a command prints the same
//! thing whichever way it went. How a command finds its controller, first match wins:
//!
//! 1. `--server URL` (or `FLEET_SERVER`), with `FLEET_TOKEN` (or the stored profile's
//!    token for that server) and `--ca FILE` (or `FLEET_CA`, or the profile's CA);
//! 2. a `serve` running on `--data-dir`: its API, as its lock file advertises, with the
//!    local admin token it keeps in the data directory (the audit log names the OS
//!    user);
//! 3. the profile `fleetctl login` stored;
//! 4. the data directory's database, when no `serve` holds it.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use fleet_controller::api::{self, Canceled, CreatedToken, ErrorBody, NewTokenRequest, Relabel, Revoked};
use fleet_controller::datadir::DataDir;
use fleet_controller::model::Labels;
use fleet_controller::operate::{
    self, DeviceFilter, DeviceView, JobDetail, JobView, OpError, Page, PushBody, PushRequest, Pushed, StatusView,
};
use fleet_controller::store::{AuditEntry, Store, TokenRow};
use fleet_controller::tokens::Role;
use serde::{Deserialize, Serialize};

use crate::{UsageError, actor};

/// How to reach a controller, from the command line and the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// The controller's API: https://HOST:PORT. Without it, fleetctl uses the `serve`
    /// running on --data-dir, then the profile `fleetctl login` stored, then the data
    /// directory itself.
    #[arg(long, global = true, env = "FLEET_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The CA certificate (PEM) the API's certificate chains to (the controller's is
    /// DATA/tls/ca.pem).
    #[arg(long, global = true, env = "FLEET_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// What `fleetctl login` stores (`~/.config/fleet/profile.json`, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    /// The API's URL.
    pub server: String,
    /// The token.
    pub token: String,
    /// The CA file, if the server's certificate needs one.
    pub ca: Option<PathBuf>,
}

/// Where the profile lives: `$FLEET_CONFIG_DIR/profile.json`, else
/// `$XDG_CONFIG_HOME/fleet/`, else `~/.config/fleet/`.
pub fn profile_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FLEET_CONFIG_DIR") {
        return Some(PathBuf::from(dir).join("profile.json"));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("fleet").join("profile.json"))
}

fn read_profile() -> Option<Profile> {
    let text = std::fs::read_to_string(profile_path()?).ok()?;
    serde_json::from_str(&text).ok()
}

/// Stores a profile (mode 0600).
pub fn write_profile(profile: &Profile) -> anyhow::Result<PathBuf> {
    let path = profile_path().context("no HOME (or FLEET_CONFIG_DIR) to keep the profile in")?;
    if let Some(dir) = path.parent() {
        fleet_controller::datadir::create_private_dir(dir)?;
    }
    fleet_controller::datadir::write_secret(&path, &serde_json::to_string_pretty(profile)?)?;
    Ok(path)
}

/// A controller's API, as a client.
pub struct Remote {
    base: String,
    token: String,
    /// Sent for the local token: who is acting, for the audit log.
    actor: Option<String>,
    http: reqwest::blocking::Client,
    /// The same, without the request timeout: for the live stream, which never ends.
    streaming: reqwest::blocking::Client,
}

/// One server-sent event: its name and its data.
pub struct LiveEvent {
    /// `device` or `job`.
    pub event: String,
    /// The document, JSON.
    pub data: String,
}

impl Remote {
    /// A client for `base` trusting `ca` (or the system's roots when `None`... which
    /// this build does not carry: a CA is required for https).
    pub fn new(base: &str, token: String, ca: Option<&Path>, actor: Option<String>) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            return Err(UsageError::new(
                format!("`{base}` is not an https:// URL"),
                "the controller's API is served over TLS only: --server https://HOST:PORT",
            )
            .into());
        }
        let certs = match ca {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| {
                    UsageError::new(
                        format!("cannot read the CA file {}: {e}", ca.display()),
                        "give --ca FILE (or FLEET_CA)",
                    )
                })?;
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    UsageError::new(format!("{} holds no PEM certificate: {e}", ca.display()), "give the CA's PEM file")
                })?
            }
            None => {
                return Err(UsageError::new(
                    format!("no CA to check {base}'s certificate against"),
                    "pass --ca FILE (or FLEET_CA): the controller's CA is DATA/tls/ca.pem on its machine",
                )
                .into());
            }
        };
        // Only the roots given: the controller's certificate must chain to its CA.
        let client = |timeout: Option<Duration>| {
            let mut builder = reqwest::blocking::Client::builder()
                .tls_built_in_root_certs(false)
                .connect_timeout(Duration::from_secs(10))
                .timeout(timeout)
                .tcp_nodelay(true);
            for cert in &certs {
                builder = builder.add_root_certificate(cert.clone());
            }
            builder.build().context("cannot set up the HTTPS client")
        };
        let http = client(Some(Duration::from_secs(120)))?;
        let streaming = client(None)?;
        Ok(Self { base, token, actor, http, streaming })
    }

    fn send<T: serde::de::DeserializeOwned>(&self, request: reqwest::blocking::RequestBuilder) -> anyhow::Result<T> {
        let mut request = request.bearer_auth(&self.token);
        if let Some(actor) = &self.actor {
            request = request.header(api::ACTOR_HEADER, actor);
        }
        let response = request.send().map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            anyhow::anyhow!("cannot reach the controller at {}: {text}", self.base)
        })?;
        let status = response.status();
        let bytes = response.bytes().context("reading the controller's answer")?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("the controller answered something this fleetctl cannot read ({status})"));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error }) if status.is_client_error() => Err(match error.help {
                Some(help) => UsageError::new(error.message, help),
                None => UsageError::plain(error.message),
            }
            .into()),
            Ok(ErrorBody { error }) => Err(anyhow::anyhow!(
                "the controller failed ({status}): {}{}",
                error.message,
                error.help.map(|h| format!("; {h}")).unwrap_or_default()
            )),
            Err(_) => Err(anyhow::anyhow!("the controller answered {status}: {}", String::from_utf8_lossy(&bytes))),
        }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    fn get_query<T: serde::de::DeserializeOwned>(&self, path: &str, query: &impl Serialize) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
    }

    fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    /// The URL it talks to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Follows the live stream (`GET /v1/events`), calling `each` for every event until
    /// it returns false or the stream ends.
    pub fn follow(&self, mut each: impl FnMut(LiveEvent) -> anyhow::Result<bool>) -> anyhow::Result<()> {
        use std::io::BufRead as _;
        let response = self
            .streaming
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| anyhow::anyhow!("cannot reach the controller at {}: {e}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().unwrap_or_default();
            return Err(match serde_json::from_str::<ErrorBody>(&body) {
                Ok(ErrorBody { error }) => match error.help {
                    Some(help) => UsageError::new(error.message, help).into(),
                    None => UsageError::plain(error.message).into(),
                },
                Err(_) => anyhow::anyhow!("the controller answered {status}: {body}"),
            });
        }
        let mut event = String::new();
        let mut data = String::new();
        for line in std::io::BufReader::new(response).lines() {
            let line = line.context("reading the live stream")?;
            if line.is_empty() {
                if !data.is_empty()
                    && !each(LiveEvent { event: std::mem::take(&mut event), data: std::mem::take(&mut data) })?
                {
                    return Ok(());
                }
                event.clear();
                continue;
            }
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(text) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(text.strip_prefix(' ').unwrap_or(text));
            }
        }
        Ok(())
    }
}

/// Where the commands act.
pub enum Backend {
    /// A controller's API.
    Remote(Remote),
    /// The data directory's database (no `serve` holds it).
    Local {
        /// The data directory.
        dir: PathBuf,
        /// Its store, once opened.
        store: RefCell<Option<Store>>,
    },
}

/// Turns an operation's refusal into what the command line prints.
fn op(error: OpError) -> anyhow::Error {
    match error {
        OpError::Invalid { message, help }
        | OpError::NotFound { message, help }
        | OpError::Conflict { message, help } => match help {
            Some(help) => UsageError::new(message, help).into(),
            None => UsageError::plain(message).into(),
        },
        OpError::Store(store) => anyhow::Error::new(store),
        OpError::Unavailable { message, help } => match help {
            Some(help) => anyhow::anyhow!("{message} ({help})"),
            None => anyhow::anyhow!("{message}"),
        },
    }
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Backend {
    /// Finds where to act (see the module docs).
    pub fn resolve(data_dir: &Path, server: &ServerArgs) -> anyhow::Result<Backend> {
        if let Some(url) = &server.server {
            let profile = read_profile().filter(|p| p.server.trim_end_matches('/') == url.trim_end_matches('/'));
            let token = std::env::var("FLEET_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .or_else(|| profile.as_ref().map(|p| p.token.clone()));
            let token = token.ok_or_else(|| {
                UsageError::new(
                    format!("no token for {url}"),
                    "set FLEET_TOKEN, or store one with `fleetctl login URL --token TOKEN --ca FILE`",
                )
            })?;
            let ca = server.ca.clone().or_else(|| profile.and_then(|p| p.ca));
            return Ok(Backend::Remote(Remote::new(url, token, ca.as_deref(), None)?));
        }
        let data = DataDir::new(data_dir);
        if let Some(serving) = data.serving()
            && let Some(url) = serving.api
        {
            let token_file = data_dir.join(api::LOCAL_TOKEN_FILE);
            let token = std::fs::read_to_string(&token_file)
                .map_err(|e| {
                    UsageError::new(
                        format!("the running serve's API token {} cannot be read: {e}", token_file.display()),
                        "run fleetctl as the user that runs serve, or use --server with a token",
                    )
                })?
                .trim()
                .to_string();
            let ca = server.ca.clone().unwrap_or_else(|| data_dir.join("tls/ca.pem"));
            return Ok(Backend::Remote(Remote::new(&url, token, Some(&ca), Some(actor()))?));
        }
        if data.serving().is_none()
            && !data.is_initialised()
            && let Some(profile) = read_profile()
        {
            let token = std::env::var("FLEET_TOKEN").ok().filter(|t| !t.is_empty()).unwrap_or(profile.token);
            return Ok(Backend::Remote(Remote::new(&profile.server, token, profile.ca.as_deref(), None)?));
        }
        Ok(Backend::Local { dir: data_dir.to_path_buf(), store: RefCell::new(None) })
    }

    fn local<T>(&self, init: bool, work: impl FnOnce(&mut Store) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let Backend::Local { dir, store } = self else { anyhow::bail!("not a local data directory") };
        let mut slot = store.borrow_mut();
        if slot.is_none() {
            let data = DataDir::new(dir);
            *slot = Some(if init { data.open_or_init()? } else { data.open()? });
        }
        let store = slot.as_mut().context("store")?;
        work(store)
    }

    /// Whether the commands reach a running controller (through its API).
    pub fn is_remote(&self) -> bool {
        matches!(self, Backend::Remote(_))
    }

    /// A note for writes a local data directory holds until a `serve` starts.
    pub fn pending_note(&self) -> Option<String> {
        match self {
            Backend::Remote(_) => None,
            Backend::Local { dir, .. } => Some(format!("no `fleetctl serve` is running on {}", dir.display())),
        }
    }

    /// Pushes a job.
    pub fn push(&self, request: &PushRequest, module: &[u8]) -> anyhow::Result<Pushed> {
        match self {
            Backend::Remote(remote) => remote.post(
                "/v1/jobs",
                &PushBody {
                    request: request.clone(),
                    module: base64::engine::general_purpose::STANDARD.encode(module),
                },
            ),
            Backend::Local { .. } => self.local(true, |store| {
                operate::push(store, request, module, &actor(), fleet_controller::unix_ms()).map_err(op)
            }),
        }
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> anyhow::Result<Vec<JobView>> {
        match self {
            Backend::Remote(remote) => {
                let mut all = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page: Page<JobView> = remote
                        .get_query("/v1/jobs", &operate::JobFilter { after: after.clone(), ..Default::default() })?;
                    all.extend(page.items);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => return Ok(all),
                    }
                }
            }
            Backend::Local { .. } => self.local(false, |store| operate::jobs(store).map_err(op)),
        }
    }

    /// A job (a unique prefix of its id will do; the newest when `None`) and its
    /// executions.
    pub fn job(&self, id: Option<&str>) -> anyhow::Result<JobDetail> {
        match self {
            Backend::Remote(remote) => remote.get(&format!("/v1/jobs/{}", encode(id.unwrap_or("latest")))),
            Backend::Local { .. } => self.local(false, |store| {
                let id = operate::resolve_job(store, id).map_err(op)?;
                operate::job_detail(store, &id).map_err(op)
            }),
        }
    }

    /// Asks for a job to be canceled.
    pub fn cancel(&self, id: Option<&str>) -> anyhow::Result<Canceled> {
        match self {
            Backend::Remote(remote) => {
                remote.post(&format!("/v1/jobs/{}/cancel", encode(id.unwrap_or("latest"))), &serde_json::json!({}))
            }
            Backend::Local { .. } => self.local(false, |store| {
                let id = operate::resolve_job(store, id).map_err(op)?;
                let requested = operate::cancel(store, &id, &actor(), fleet_controller::unix_ms()).map_err(op)?;
                Ok(Canceled { job: id.to_hex(), requested })
            }),
        }
    }

    /// Devices, by id, filtered.
    pub fn devices(&self, filter: &DeviceFilter) -> anyhow::Result<Vec<DeviceView>> {
        match self {
            Backend::Remote(remote) => {
                let mut all = Vec::new();
                let mut filter = filter.clone();
                loop {
                    let page: Page<DeviceView> = remote.get_query("/v1/devices", &filter)?;
                    all.extend(page.items);
                    match page.next {
                        Some(next) => filter.after = Some(next),
                        None => return Ok(all),
                    }
                }
            }
            Backend::Local { .. } => self.local(false, |store| {
                let mut all = Vec::new();
                let mut filter = filter.clone();
                loop {
                    let page = operate::devices(store, &filter).map_err(op)?;
                    all.extend(page.items);
                    match page.next {
                        Some(next) => filter.after = Some(next),
                        None => return Ok(all),
                    }
                }
            }),
        }
    }

    /// One device.
    pub fn device(&self, id: &str) -> anyhow::Result<DeviceView> {
        match self {
            Backend::Remote(remote) => remote.get(&format!("/v1/devices/{}", encode(id))),
            Backend::Local { .. } => self.local(false, |store| operate::device(store, id).map_err(op)),
        }
    }

    /// Decommissions a device.
    pub fn remove_device(&self, id: &str) -> anyhow::Result<operate::Decommissioned> {
        match self {
            Backend::Remote(remote) => {
                remote.send(remote.http.delete(format!("{}/v1/devices/{}", remote.base, encode(id))))
            }
            Backend::Local { .. } => self.local(false, |store| {
                operate::decommission(store, id, &actor(), fleet_controller::unix_ms()).map_err(op)
            }),
        }
    }

    /// Provisions a device: its config (and, with TLS, the CA it trusts).
    pub fn provision(&self, request: &operate::ProvisionRequest) -> anyhow::Result<operate::Provisioned> {
        match self {
            Backend::Remote(remote) => remote.post("/v1/devices", request),
            Backend::Local { dir, .. } => {
                let dir = dir.clone();
                self.local(true, |store| {
                    operate::provision(store, request, &dir.join("tls"), &actor(), fleet_controller::unix_ms())
                        .map_err(op)
                })
            }
        }
    }

    /// Changes a device's labels.
    pub fn relabel(&self, id: &str, labels: &Labels) -> anyhow::Result<DeviceView> {
        match self {
            Backend::Remote(remote) => remote.send(
                remote
                    .http
                    .patch(format!("{}/v1/devices/{}", remote.base, encode(id)))
                    .json(&Relabel { labels: labels.clone() }),
            ),
            Backend::Local { .. } => self.local(false, |store| {
                operate::relabel(store, id, labels, &actor(), fleet_controller::unix_ms()).map_err(op)
            }),
        }
    }

    /// The controller's status.
    pub fn status(&self) -> anyhow::Result<StatusView> {
        match self {
            Backend::Remote(remote) => remote.get("/v1/status"),
            Backend::Local { dir, .. } => {
                let serving = DataDir::new(dir).serving();
                self.local(false, |store| operate::status(store, serving).map_err(op))
            }
        }
    }

    /// The audit log, newest first.
    pub fn audit(&self, limit: u32) -> anyhow::Result<Vec<AuditEntry>> {
        match self {
            Backend::Remote(remote) => remote.get_query("/v1/audit", &api::AuditQuery { limit: Some(limit) }),
            Backend::Local { .. } => self.local(false, |store| Ok(store.audit_log(limit)?)),
        }
    }

    /// Every token.
    pub fn tokens(&self) -> anyhow::Result<Vec<TokenRow>> {
        match self {
            Backend::Remote(remote) => remote.get("/v1/tokens"),
            Backend::Local { .. } => self.local(false, |store| Ok(store.tokens()?)),
        }
    }

    /// Makes a token.
    pub fn create_token(&self, name: &str, role: Role) -> anyhow::Result<CreatedToken> {
        match self {
            Backend::Remote(remote) => remote.post("/v1/tokens", &NewTokenRequest { name: name.to_string(), role }),
            Backend::Local { .. } => {
                self.local(true, |store| api::create_token_in(store, name, role, &actor()).map_err(op))
            }
        }
    }

    /// Revokes a token.
    pub fn revoke_token(&self, name: &str) -> anyhow::Result<Revoked> {
        match self {
            Backend::Remote(remote) => {
                remote.send(remote.http.delete(format!("{}/v1/tokens/{}", remote.base, encode(name))))
            }
            Backend::Local { .. } => self.local(false, |store| {
                let revoked = store.revoke_token(name, &actor(), fleet_controller::unix_ms())?;
                Ok(Revoked { name: name.to_string(), revoked })
            }),
        }
    }

    /// Where it acts, for messages: "the controller at https://..." or the directory.
    pub fn describe(&self) -> String {
        match self {
            Backend::Remote(remote) => format!("the controller at {}", remote.base()),
            Backend::Local { dir, .. } => dir.display().to_string(),
        }
    }
}
