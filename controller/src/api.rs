//! The operator API: JSON over HTTPS, beside the broker, served by `fleetctl serve`.
//!
//! A thin shell: every route authenticates the caller's token, checks its role, and
//! calls the same [`operate`](crate::operate) function `fleetctl` calls on a data
//! directory of its own; what that returns is the body. A push is handed to the
//! controller's rollout loop ([`PushOrder`]), which records the job and signs its first
//! envelopes in one commit and publishes them before the API answers; a cancel, a
//! relabel or a decommission wakes that loop at once ([`Wake`]). Nothing waits for the
//! database poll.
//!
//! | route | role | what |
//! |---|---|---|
//! | `GET /v1/status` | viewer | the controller's state and counters |
//! | `GET /v1/devices?selector=&state=&after=&limit=` | viewer | a page of devices |
//! | `POST /v1/devices` | admin | provision a device: its config (secrets in it, shown once) |
//! | `GET /v1/devices/{id}` | viewer | one device |
//! | `PATCH /v1/devices/{id}` `{"labels": {...}}` | admin | change its labels |
//! | `DELETE /v1/devices/{id}` | admin | decommission: credentials and key revoked, cut off now, history kept |
//! | `GET /v1/jobs?state=&after=&limit=` | viewer | a page of jobs, newest first |
//! | `POST /v1/jobs` ([`PushBody`]) | operator | push a job |
//! | `GET /v1/jobs/{id}` | viewer | a job and its executions (`latest`: the newest job; a unique prefix will do) |
//! | `GET /v1/jobs/{id}/results` | viewer | its executions |
//! | `POST /v1/jobs/{id}/cancel` | operator | cancel it |
//! | `GET /v1/audit?limit=` | viewer | the audit log, newest first |
//! | `GET /v1/tokens`, `POST /v1/tokens`, `DELETE /v1/tokens/{name}` | admin | API tokens |
//! | `GET /v1/events` | viewer | a live stream (server-sent events): `device` and `job` documents as they change, `sync` after each batch |
//! | `GET /metrics` | viewer | Prometheus metrics ([`crate::metrics`]) |
//! | `GET /v1/openapi.json` | none | the API's description, made from [`routes`] |
//!
//! A missing, unknown or revoked token gets 401 and a role too low 403, each with a JSON
//! error that says what to do (`{"error": {"status", "message", "help"}}`). Failed
//! authentications are counted per address, and from the fifth within a minute each
//! answer is held back, doubling up to 2 s, so guessing is slow; a good token from
//! the same address is answered at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::datadir::DataDir;
use crate::operate::{self, DeviceFilter, JobFilter, OpError, PushBody};
use crate::store::{NewToken, Store, StoreError};
use crate::tokens::{self, Role};

/// Wakes the controller's loop: something was written that it should act on now.
pub type Wake = Arc<Notify>;

/// A push handed to serve's rollout loop, which records the job, plans and signs its
/// first envelopes and commits them in one transaction (one fsync), publishes them, and
/// then answers.
#[derive(Debug)]
pub struct PushOrder {
    /// What to push.
    pub request: operate::PushRequest,
    /// The module's bytes.
    pub module: Vec<u8>,
    /// Who pushes (the audit log's actor).
    pub actor: String,
    /// The answer: the job, or why not.
    pub reply: tokio::sync::oneshot::Sender<Result<operate::Pushed, OpError>>,
}

/// Where the API hands pushes to serve's rollout loop.
pub type PushQueue = tokio::sync::mpsc::Sender<PushOrder>;

/// How many pushes may wait for the rollout loop at once; more get 503.
pub const PUSH_QUEUE: usize = 64;

/// The most a request body may hold: a module of the largest size, base64, and its push.
pub const MAX_BODY_BYTES: usize = 24 * 1024 * 1024;

/// How long a client may take to send a request's headers (and its TLS handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many API connections at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;

/// The name of the admin token `serve` makes for `fleetctl` on its own machine.
pub const LOCAL_TOKEN_NAME: &str = "local";

/// Where that token's text lives in the data directory (mode 0600).
pub const LOCAL_TOKEN_FILE: &str = "api/local.token";

/// The header a local `fleetctl` names its operating-system user in, for the audit log
/// (honoured for the local token only).
pub const ACTOR_HEADER: &str = "x-fleet-actor";

/// Where and how the API listens.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The address.
    pub listen: SocketAddr,
    /// More names for its certificate (the host names clients use).
    pub names: Vec<String>,
    /// The operator's certificate chain and key (PEM), instead of the controller's CA.
    pub cert: Option<(PathBuf, PathBuf)>,
}

impl ApiConfig {
    /// The API on `listen`, with the controller's own CA.
    pub fn new(listen: SocketAddr) -> Self {
        Self { listen, names: Vec::new(), cert: None }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Its address is taken or not allowed.
    #[error("cannot listen on {addr} for the API: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Its TLS could not be set up.
    #[error("the API's TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Its store could not be opened.
    #[error("the API's store: {0}")]
    Store(String),
}

/// The API, serving.
pub struct RunningApi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its URL (`https://HOST:PORT`).
    pub url: String,
    /// The CA (or chain) clients trust.
    pub ca_file: PathBuf,
    /// Whether `fleetctl` on this machine has its token (`DATA/api/local.token`).
    pub local_token: bool,
    task: tokio::task::JoinHandle<()>,
}

impl RunningApi {
    /// Stops serving (connections in flight are dropped).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// What the API counts (added to the store's counters every few seconds as `api.*`).
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    unauthorized: AtomicU64,
    forbidden: AtomicU64,
    slowed: AtomicU64,
}

impl Counters {
    fn take(&self) -> std::collections::BTreeMap<String, u64> {
        [
            ("api.requests", &self.requests),
            ("api.unauthorized", &self.unauthorized),
            ("api.forbidden", &self.forbidden),
            ("api.slowed_auth", &self.slowed),
        ]
        .into_iter()
        .map(|(name, counter)| (name.to_string(), counter.swap(0, Ordering::Relaxed)))
        .filter(|(_, value)| *value > 0)
        .collect()
    }
}

/// Failed authentications from one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: u64,
}

/// From this many failures within [`FAILURE_WINDOW_MS`] answers are held back.
const FREE_FAILURES: u32 = 4;
const FAILURE_WINDOW_MS: u64 = 60_000;
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(2);
/// Addresses remembered at most (the oldest are forgotten first).
const MAX_FAILING_ADDRESSES: usize = 10_000;

struct Shared {
    store: Mutex<Store>,
    data: DataDir,
    wake: Wake,
    pushes: PushQueue,
    counters: Counters,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// When each token was last noted as used.
    touched: Mutex<HashMap<String, u64>>,
    /// Tokens found lately, by hash, and when: a request within [`TOKEN_CACHE_MS`] of
    /// the lookup skips the database. A revoke through the API drops its entry at once.
    known: Mutex<HashMap<[u8; 32], (crate::store::TokenRow, u64)>>,
    /// Live streams open at once, at most [`MAX_STREAMS`].
    streams: Arc<tokio::sync::Semaphore>,
}

/// Live streams served at once.
const MAX_STREAMS: usize = 16;
/// How often a live stream looks for changes.
const STREAM_EVERY: Duration = Duration::from_millis(250);
/// Jobs a live stream follows: the newest.
const STREAM_JOBS: usize = 100;

/// How long a token found in the store is trusted without looking again (a revoke made
/// by another process than this API takes at most this long).
const TOKEN_CACHE_MS: u64 = 1_000;
/// Tokens remembered at most.
const MAX_KNOWN_TOKENS: usize = 10_000;

type AppState = Arc<Shared>;

/// Who is calling.
#[derive(Debug, Clone)]
struct Caller {
    name: String,
    actor: String,
}

/// An error as the API returns it.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    message: String,
    help: Option<String>,
}

/// The body of every error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong and what to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong.
    pub message: String,
    /// What to do next.
    #[serde(default)]
    pub help: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>, help: impl Into<String>) -> Self {
        Self { status, message: message.into(), help: Some(help.into()) }
    }
}

impl From<OpError> for Refusal {
    fn from(error: OpError) -> Self {
        let status = match &error {
            OpError::Invalid { .. } => StatusCode::BAD_REQUEST,
            OpError::NotFound { .. } => StatusCode::NOT_FOUND,
            OpError::Conflict { .. } => StatusCode::CONFLICT,
            OpError::Store(store) if store.is_unwritable() => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            OpError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let help = error.help().map(str::to_string).or_else(|| match &error {
            OpError::Store(store) if store.is_unwritable() => {
                Some("the controller's disk refuses writes: free space in its data directory, then try again".into())
            }
            _ => None,
        });
        Refusal { status, message: error.to_string(), help }
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        OpError::from(error).into()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { error: ErrorDetail { status: self.status.as_u16(), message: self.message, help: self.help } };
        (self.status, Json(body)).into_response()
    }
}

type Reply<T> = Result<Json<T>, Refusal>;

/// A body that is not the JSON a route takes: 400 (413 when too large), saying why.
fn bad_body(rejection: JsonRejection) -> Refusal {
    let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    Refusal::new(status, rejection.body_text(), "GET /v1/openapi.json describes each route; bodies are JSON")
}

/// A query string a route cannot read: 400, saying why.
fn bad_query(rejection: QueryRejection) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, rejection.body_text(), "GET /v1/openapi.json describes each route")
}

/// Runs `work` on the API's store connection, off the async threads.
async fn with_store<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&mut Store) -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = state.store.lock().map_err(|_| {
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "the API's store is unusable", "restart fleetctl serve")
        })?;
        work(&mut store)
    })
    .await
    .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), "see the controller's log"))?
}

/// Authenticates the caller and checks that its role allows `needed`.
async fn authorize(state: &AppState, headers: &HeaderMap, peer: SocketAddr, needed: Role) -> Result<Caller, Refusal> {
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let text = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let now = crate::unix_ms();
    let found = match text.and_then(tokens::token_hash) {
        Some(hash) => {
            let cached = state.known.lock().ok().and_then(|known| {
                known.get(&hash).filter(|(_, at)| now.saturating_sub(*at) < TOKEN_CACHE_MS).map(|(row, _)| row.clone())
            });
            match cached {
                Some(row) => Some(row),
                None => {
                    let row = with_store(state, move |store| Ok(store.token_by_hash(&hash)?)).await?;
                    if let (Some(row), Ok(mut known)) = (&row, state.known.lock()) {
                        if known.len() >= MAX_KNOWN_TOKENS {
                            known.clear();
                        }
                        known.insert(hash, (row.clone(), now));
                    }
                    row
                }
            }
        }
        None => None,
    };
    let Some(token) = found else {
        state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        let delay = note_failure(state, peer.ip());
        if !delay.is_zero() {
            state.counters.slowed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
        let message = if text.is_some() {
            "the token is not valid (unknown, revoked, or mistyped)"
        } else {
            "no token: send `Authorization: Bearer TOKEN`"
        };
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            message,
            "ask an admin for a token (`fleetctl token create NAME --role viewer|operator|admin`) and pass it as FLEET_TOKEN or with `fleetctl login`",
        ));
    };
    if !token.role.allows(needed) {
        state.counters.forbidden.fetch_add(1, Ordering::Relaxed);
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("token {:?} has the role {}, and this needs {needed}", token.name, token.role),
            format!("use a token with the role {needed} or above, or ask an admin for one"),
        ));
    }
    note_use(state, &token.name);
    let actor = match headers.get(ACTOR_HEADER).and_then(|v| v.to_str().ok()) {
        Some(user) if token.name == LOCAL_TOKEN_NAME && is_plain_name(user) => {
            format!("{user} ({})", tokens::actor(&token.name))
        }
        _ => tokens::actor(&token.name),
    };
    Ok(Caller { name: token.name, actor })
}

fn is_plain_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b))
}

/// Counts a failure from `ip` and says how long to hold the answer back.
fn note_failure(state: &AppState, ip: IpAddr) -> Duration {
    let now = crate::unix_ms();
    let Ok(mut failures) = state.failures.lock() else { return MAX_FAILURE_DELAY };
    if failures.len() >= MAX_FAILING_ADDRESSES && !failures.contains_key(&ip) {
        failures.retain(|_, f| now.saturating_sub(f.last_ms) < FAILURE_WINDOW_MS);
        if failures.len() >= MAX_FAILING_ADDRESSES {
            return MAX_FAILURE_DELAY;
        }
    }
    let entry = failures.entry(ip).or_insert(Failures { count: 0, last_ms: now });
    if now.saturating_sub(entry.last_ms) >= FAILURE_WINDOW_MS {
        entry.count = 0;
    }
    entry.count = entry.count.saturating_add(1);
    entry.last_ms = now;
    failure_delay(entry.count)
}

/// The hold-back after the `n`th failure in a window: none for the first few, then
/// 100 ms doubling up to 2 s.
fn failure_delay(n: u32) -> Duration {
    if n <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (n - FREE_FAILURES - 1).min(5);
    (Duration::from_millis(100) * 2u32.pow(doublings)).min(MAX_FAILURE_DELAY)
}

/// Notes a token's use in the store, at most once a minute per token.
fn note_use(state: &AppState, name: &str) {
    let now = crate::unix_ms();
    let due = state.touched.lock().is_ok_and(|mut touched| {
        let last = touched.entry(name.to_string()).or_insert(0);
        if now.saturating_sub(*last) >= 60_000 {
            *last = now;
            true
        } else {
            false
        }
    });
    if due {
        let (state, name) = (state.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            if let Ok(mut store) = state.store.lock() {
                let _ = store.touch_token(&name, now);
            }
        });
    }
}

/// Every route, with the role it needs: what [`router`] serves and what the OpenAPI
/// document lists (a test checks the two agree).
pub fn routes() -> Vec<(&'static str, &'static str, Option<Role>, &'static str)> {
    vec![
        ("GET", "/v1/status", Some(Role::Viewer), "The controller's state and counters"),
        ("GET", "/v1/devices", Some(Role::Viewer), "A page of devices (selector, state, after, limit)"),
        ("POST", "/v1/devices", Some(Role::Admin), "Provision a device: its config, with its secrets (shown once)"),
        ("GET", "/v1/devices/{id}", Some(Role::Viewer), "One device"),
        ("PATCH", "/v1/devices/{id}", Some(Role::Admin), "Change a device's labels"),
        (
            "DELETE",
            "/v1/devices/{id}",
            Some(Role::Admin),
            "Decommission a device: credentials and key revoked, history kept",
        ),
        ("GET", "/v1/jobs", Some(Role::Viewer), "A page of jobs, newest first (state, after, limit)"),
        ("POST", "/v1/jobs", Some(Role::Operator), "Push a job"),
        ("GET", "/v1/jobs/{id}", Some(Role::Viewer), "A job and its executions"),
        ("GET", "/v1/jobs/{id}/results", Some(Role::Viewer), "A job's executions with their outputs"),
        ("POST", "/v1/jobs/{id}/cancel", Some(Role::Operator), "Cancel a job"),
        ("GET", "/v1/audit", Some(Role::Viewer), "The audit log, newest first"),
        ("GET", "/v1/tokens", Some(Role::Admin), "API tokens"),
        ("POST", "/v1/tokens", Some(Role::Admin), "Make an API token (its text is shown once)"),
        ("DELETE", "/v1/tokens/{name}", Some(Role::Admin), "Revoke an API token"),
        ("GET", "/v1/events", Some(Role::Viewer), "Live changes as server-sent events: `device` and `job` documents"),
        ("GET", "/metrics", Some(Role::Viewer), "Prometheus metrics (text exposition format)"),
        ("GET", "/v1/openapi.json", None, "This document"),
    ]
}

/// The OpenAPI 3.1 document of [`routes`].
pub fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, role, summary) in routes() {
        let entry = paths.entry(path.to_string()).or_insert_with(|| serde_json::json!({}));
        let mut operation = serde_json::json!({
            "summary": summary,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Bad input", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "401": {"description": "No valid token"},
                "403": {"description": "The token's role is too low"},
                "404": {"description": "Not found"},
            },
        });
        if let Some(role) = role {
            operation["security"] = serde_json::json!([{"bearer": []}]);
            operation["x-fleet-role"] = serde_json::json!(role.as_str());
        }
        let parameters: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|level| level.strip_prefix('{').and_then(|l| l.strip_suffix('}')))
            .map(|name| serde_json::json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !parameters.is_empty() {
            operation["parameters"] = serde_json::Value::Array(parameters);
        }
        entry[method.to_ascii_lowercase()] = operation;
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "fleet controller API", "version": crate::VERSION},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "status": {"type": "integer"}, "message": {"type": "string"}, "help": {"type": "string"}
            }}}}}
        }
    })
}

/// Refuses a request whose token is missing, bad, revoked or of a role below `role`,
/// before anything of it is read; hands the handler who is calling.
async fn guard(
    State((state, role)): State<(AppState, Role)>,
    ConnectInfo(peer): Peer,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorize(&state, request.headers(), peer, role).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// The API's routes over its shared state.
fn router(state: AppState) -> Router {
    let needs = |role: Role| axum::middleware::from_fn_with_state((state.clone(), role), guard);
    Router::new()
        .route("/v1/status", get(status).route_layer(needs(Role::Viewer)))
        .route(
            "/v1/devices",
            get(list_devices)
                .route_layer(needs(Role::Viewer))
                .merge(post(provision_device).route_layer(needs(Role::Admin))),
        )
        .route(
            "/v1/devices/:id",
            get(show_device)
                .route_layer(needs(Role::Viewer))
                .merge(patch(relabel_device).delete(decommission_device).route_layer(needs(Role::Admin))),
        )
        .route(
            "/v1/jobs",
            get(list_jobs).route_layer(needs(Role::Viewer)).merge(post(push_job).route_layer(needs(Role::Operator))),
        )
        .route("/v1/jobs/:id", get(show_job).route_layer(needs(Role::Viewer)))
        .route("/v1/jobs/:id/results", get(job_results).route_layer(needs(Role::Viewer)))
        .route("/v1/jobs/:id/cancel", post(cancel_job).route_layer(needs(Role::Operator)))
        .route("/v1/audit", get(audit).route_layer(needs(Role::Viewer)))
        .route("/v1/tokens", get(list_tokens).post(create_token).route_layer(needs(Role::Admin)))
        .route("/v1/tokens/:name", delete(revoke_token).route_layer(needs(Role::Admin)))
        .route("/v1/events", get(live).route_layer(needs(Role::Viewer)))
        .route("/metrics", get(metrics).route_layer(needs(Role::Viewer)))
        .route("/v1/openapi.json", get(|| async { Json(openapi()) }))
        .fallback(|| async {
            Refusal::new(StatusCode::NOT_FOUND, "no such route", "GET /v1/openapi.json lists every route")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

type Peer = ConnectInfo<SocketAddr>;

/// `GET /v1/events`: every device and the newest jobs first, then each one again
/// whenever it changes (a `device` event with the device's document, a `job` event with
/// the job's; a `sync` event closes each batch of changes), until the client leaves. Looked for every 250 ms, only when the store
/// changed; a comment every 15 s keeps proxies from closing a quiet stream.
async fn live(
    State(state): State<AppState>,
) -> Result<
    axum::response::sse::Sse<
        impl tokio_stream::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    Refusal,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live streams open",
            "close one, or poll the lists instead",
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(256);
    let shared = state.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut devices: HashMap<String, String> = HashMap::new();
        let mut jobs: HashMap<String, String> = HashMap::new();
        let mut version = None;
        loop {
            let seen = version;
            let snapshot = with_store(&shared, move |store| {
                let now = store.data_version()?;
                if seen == Some(now) {
                    return Ok(None);
                }
                let devices = operate::devices(store, &DeviceFilter::default())?;
                let jobs = operate::jobs_page(store, &JobFilter { limit: Some(STREAM_JOBS), ..JobFilter::default() })?;
                Ok(Some((now, devices.items, jobs.items)))
            })
            .await;
            match snapshot {
                Ok(Some((now, device_views, job_views))) => {
                    version = Some(now);
                    let mut changed = Vec::new();
                    for device in device_views {
                        let json = serde_json::to_string(&device).unwrap_or_default();
                        if devices.get(&device.id) != Some(&json) {
                            changed.push(Event::default().event("device").data(&json));
                            devices.insert(device.id, json);
                        }
                    }
                    for job in job_views {
                        let json = serde_json::to_string(&job).unwrap_or_default();
                        if jobs.get(&job.id) != Some(&json) {
                            changed.push(Event::default().event("job").data(&json));
                            jobs.insert(job.id, json);
                        }
                    }
                    if !changed.is_empty() {
                        // The end of one consistent batch: a client redraws here.
                        changed.push(Event::default().event("sync").data(crate::unix_ms().to_string()));
                    }
                    for event in changed {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => {}
                Err(_) => return,
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(STREAM_EVERY).await;
        }
    });
    Ok(Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn metrics(State(state): State<AppState>) -> Result<Response, Refusal> {
    let text = with_store(&state, |store| Ok(crate::metrics::render(store)?)).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn status(State(state): State<AppState>) -> Reply<operate::StatusView> {
    let serving = state.data.serving();
    Ok(Json(with_store(&state, move |store| Ok(operate::status(store, serving)?)).await?))
}

async fn list_devices(
    State(state): State<AppState>,
    filter: Result<Query<DeviceFilter>, QueryRejection>,
) -> Reply<operate::Page<operate::DeviceView>> {
    let Query(filter) = filter.map_err(bad_query)?;
    Ok(Json(with_store(&state, move |store| Ok(operate::devices(store, &filter)?)).await?))
}

async fn provision_device(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<operate::ProvisionRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<operate::Provisioned>), Refusal> {
    let Json(body) = body.map_err(bad_body)?;
    let tls_dir = state.data.path().join("tls");
    let provisioned = with_store(&state, move |store| {
        Ok(operate::provision(store, &body, &tls_dir, &caller.actor, crate::unix_ms())?)
    })
    .await?;
    state.wake.notify_one();
    Ok((StatusCode::CREATED, Json(provisioned)))
}

async fn show_device(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Reply<operate::DeviceView> {
    Ok(Json(with_store(&state, move |store| Ok(operate::device(store, &id)?)).await?))
}

/// `PATCH /v1/devices/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relabel {
    /// The device's labels from now on.
    pub labels: crate::model::Labels,
}

async fn relabel_device(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<Relabel>, JsonRejection>,
) -> Reply<operate::DeviceView> {
    let Json(body) = body.map_err(bad_body)?;
    let view = with_store(&state, move |store| {
        Ok(operate::relabel(store, &id, &body.labels, &caller.actor, crate::unix_ms())?)
    })
    .await?;
    state.wake.notify_one();
    Ok(Json(view))
}

async fn decommission_device(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Reply<operate::Decommissioned> {
    let done = with_store(&state, move |store| Ok(operate::decommission(store, &id, &caller.actor, crate::unix_ms())?))
        .await?;
    state.wake.notify_one();
    Ok(Json(done))
}

async fn list_jobs(
    State(state): State<AppState>,
    filter: Result<Query<JobFilter>, QueryRejection>,
) -> Reply<operate::Page<operate::JobView>> {
    let Query(filter) = filter.map_err(bad_query)?;
    Ok(Json(with_store(&state, move |store| Ok(operate::jobs_page(store, &filter)?)).await?))
}

async fn push_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<PushBody>, JsonRejection>,
) -> Result<(StatusCode, Json<operate::Pushed>), Refusal> {
    let Json(body) = body.map_err(bad_body)?;
    let module = base64::engine::general_purpose::STANDARD.decode(body.module.as_bytes()).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("`module` is not base64: {e}"),
            "send the .wasm file's bytes, base64 (standard alphabet)",
        )
    })?;
    let busy = || {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller is not taking pushes now (it is stopping, or busy)",
            "try again in a moment",
        )
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let order = PushOrder { request: body.request, module, actor: caller.actor, reply };
    state.pushes.try_send(order).map_err(|_| busy())?;
    let pushed = answer.await.map_err(|_| busy())??;
    debug!(job = %pushed.job, devices = pushed.devices, "job pushed through the API");
    Ok((StatusCode::CREATED, Json(pushed)))
}

fn job_ref(text: &str) -> Option<&str> {
    (text != "latest").then_some(text)
}

async fn show_job(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> Reply<operate::JobDetail> {
    Ok(Json(
        with_store(&state, move |store| {
            let id = operate::resolve_job(store, job_ref(&id))?;
            Ok(operate::job_detail(store, &id)?)
        })
        .await?,
    ))
}

async fn job_results(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Reply<Vec<operate::ExecutionView>> {
    Ok(Json(
        with_store(&state, move |store| {
            let id = operate::resolve_job(store, job_ref(&id))?;
            Ok(operate::job_detail(store, &id)?.executions)
        })
        .await?,
    ))
}

/// What a cancel did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Canceled {
    /// The job.
    pub job: String,
    /// False if a cancel had been asked for already.
    pub requested: bool,
}

async fn cancel_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Reply<Canceled> {
    let done = with_store(&state, move |store| {
        let id = operate::resolve_job(store, job_ref(&id))?;
        let requested = operate::cancel(store, &id, &caller.actor, crate::unix_ms())?;
        Ok(Canceled { job: id.to_hex(), requested })
    })
    .await?;
    state.wake.notify_one();
    Ok(Json(done))
}

/// `GET /v1/audit?limit=N`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditQuery {
    /// How many entries (default 50, at most 10,000).
    #[serde(default)]
    pub limit: Option<u32>,
}

async fn audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Reply<Vec<crate::store::AuditEntry>> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(50).min(10_000);
    Ok(Json(with_store(&state, move |store| Ok(store.audit_log(limit)?)).await?))
}

async fn list_tokens(State(state): State<AppState>) -> Reply<Vec<crate::store::TokenRow>> {
    Ok(Json(with_store(&state, |store| Ok(store.tokens()?)).await?))
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTokenRequest {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// A token just made: the only time its text is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Its text (`fleet_...`): keep it; it is not stored.
    pub token: String,
}

/// Makes a token (the store keeps its hash), for the API and for `fleetctl token create`.
pub fn create_token_in(store: &mut Store, name: &str, role: Role, actor: &str) -> Result<CreatedToken, OpError> {
    tokens::validate_name(name).map_err(OpError::invalid_plain)?;
    let random = crate::random_32().map_err(|e| OpError::Store(StoreError::Sign(e.to_string())))?;
    let text = tokens::token_text(&random);
    let hash = tokens::token_hash(&text).ok_or_else(|| OpError::invalid_plain("could not make a token"))?;
    store.insert_token(&NewToken { name: name.to_string(), role, hash }, actor, crate::unix_ms())?;
    Ok(CreatedToken { name: name.to_string(), role, token: text })
}

async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewTokenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), Refusal> {
    let Json(body) = body.map_err(bad_body)?;
    let created =
        with_store(&state, move |store| Ok(create_token_in(store, &body.name, body.role, &caller.actor)?)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// What a revoke did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoked {
    /// The token.
    pub name: String,
    /// False if it was revoked already.
    pub revoked: bool,
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Reply<Revoked> {
    if caller.name == name {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            "a token cannot revoke itself",
            "revoke it with another admin token",
        ));
    }
    let done = with_store(&state, move |store| {
        let revoked = store.revoke_token(&name, &caller.actor, crate::unix_ms())?;
        Ok(Revoked { name, revoked })
    })
    .await?;
    if let Ok(mut known) = state.known.lock() {
        known.retain(|_, (row, _)| row.name != done.name);
    }
    Ok(Json(done))
}

/// Makes (or keeps) the local admin token and writes its text to
/// `DATA/api/local.token` (0600): how `fleetctl` on the controller's own machine, which
/// can read the data directory anyway, talks to the API with no flags.
pub fn ensure_local_token(data: &DataDir, store: &mut Store) -> Result<PathBuf, ApiError> {
    let path = data.path().join(LOCAL_TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some(hash) = tokens::token_hash(text.trim())
        && matches!(store.token_by_hash(&hash), Ok(Some(token)) if token.name == LOCAL_TOKEN_NAME)
    {
        return Ok(path);
    }
    let random = crate::random_32().map_err(|e| ApiError::Store(e.to_string()))?;
    let text = tokens::token_text(&random);
    let hash = tokens::token_hash(&text).ok_or_else(|| ApiError::Store("could not make a token".into()))?;
    if let Some(dir) = path.parent() {
        crate::datadir::create_private_dir(dir).map_err(|e| ApiError::Store(e.to_string()))?;
    }
    crate::datadir::write_secret(&path, &text).map_err(|e| ApiError::Store(e.to_string()))?;
    store
        .set_token(&NewToken { name: LOCAL_TOKEN_NAME.into(), role: Role::Admin, hash }, "serve", crate::unix_ms())
        .map_err(|e| ApiError::Store(e.to_string()))?;
    Ok(path)
}

/// Binds the API's address now (so a busy port is an error at start), sets up its TLS
/// and its store, and serves it on the current tokio runtime.
pub fn start(config: &ApiConfig, data: &DataDir, wake: Wake, pushes: PushQueue) -> Result<RunningApi, ApiError> {
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| ApiError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ApiError::Bind { addr: config.listen, source })?;
    listener.set_nonblocking(true).map_err(|source| ApiError::Bind { addr, source })?;
    let tls = match &config.cert {
        Some((cert, key)) => crate::tls::from_files(cert, key)?,
        None => crate::tls::from_own_ca(&data.path().join("tls"), &crate::tls::api_names(addr, &config.names))?,
    };
    let mut store = data.open().map_err(|e| ApiError::Store(e.to_string()))?;
    // Without its local token (a full disk at first start), fleetctl on this machine
    // works on the database as before; remote clients are served either way.
    let local_token = match ensure_local_token(data, &mut store) {
        Ok(_) => true,
        Err(error) => {
            warn!(%error, "no local API token: fleetctl on this machine works on the database until serve restarts");
            false
        }
    };
    let host = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        match addr.ip() {
            IpAddr::V6(_) => "[::1]".to_string(),
            IpAddr::V4(_) => "127.0.0.1".to_string(),
        }
    } else {
        match addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        }
    };
    let url = format!("https://{host}:{}", addr.port());
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        data: data.clone(),
        wake,
        pushes,
        counters: Counters::default(),
        failures: Mutex::new(HashMap::new()),
        touched: Mutex::new(HashMap::new()),
        known: Mutex::new(HashMap::new()),
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
    });
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| ApiError::Bind { addr, source })?;
    let task = tokio::spawn(serve(listener, tls.config, shared));
    info!(%url, ca = %tls.ca_file.display(), "operator API listening");
    Ok(RunningApi { addr, url, ca_file: tls.ca_file, local_token, task })
}

async fn serve(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, shared: AppState) {
    use tower::ServiceExt as _;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(shared.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let flusher = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                let deltas = shared.counters.take();
                if deltas.is_empty() {
                    continue;
                }
                let shared = shared.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Ok(mut store) = shared.store.lock() {
                        let _ = store.add_counters(&deltas);
                    }
                })
                .await;
            }
        })
    };
    let _flusher = AbortOnDrop(flusher);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(stream)) = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(socket)).await else {
                return;
            };
            let service = app.map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
            let service = hyper_util::service::TowerToHyperService::new(service);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_free_then_slowed_doubling_to_a_cap() {
        assert!((1..=FREE_FAILURES).all(|n| failure_delay(n).is_zero()));
        assert_eq!(failure_delay(FREE_FAILURES + 1), Duration::from_millis(100));
        assert_eq!(failure_delay(FREE_FAILURES + 2), Duration::from_millis(200));
        assert_eq!(failure_delay(1_000), MAX_FAILURE_DELAY);
    }

    #[test]
    fn the_openapi_document_lists_every_route_with_its_role() {
        let doc = openapi();
        for (method, path, role, _) in routes() {
            let operation = &doc["paths"][path][method.to_ascii_lowercase()];
            assert!(operation.is_object(), "{method} {path} missing");
            assert_eq!(operation["x-fleet-role"].as_str(), role.map(Role::as_str), "{method} {path}");
        }
    }
}
