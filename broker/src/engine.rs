//! The engine: rumqttd, on a loopback port that only the front door can use.
//!
//! Why rumqttd behind a relay rather than rumqttd alone: rumqttd has an authentication
//! hook but no topic authorization, and its in-process "local links" cannot carry a
//! last-will. So rumqttd keeps every MQTT semantic it is good at (retained messages,
//! QoS 1 with redelivery on persistent sessions, last-will, session takeover) and sees
//! only traffic the front door has already authenticated and checked.
//!
//! Why a secret: the engine listens on 127.0.0.1, where any local process could reach
//! it and skip the ACL. It therefore accepts one username and a random password drawn
//! at start and known only to this process; the front door puts them in every CONNECT
//! it relays (and the client's own password never reaches the engine).
//!
//! The engine runs on its own thread with a single-threaded tokio runtime, as rumqttd's
//! own `Broker::start` does: rumqttd makes blocking calls to its router while a client
//! connects, which must not stall the caller's runtime. Stopping the engine drops that
//! runtime, which closes every engine-side connection and the loopback listener.
//! rumqttd's router thread has no way to stop: it stays parked (one idle thread and the
//! retained messages it holds) until the process exits.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::task::Poll;
use std::thread::JoinHandle;

use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::session::EngineLogin;

/// Extra bytes the engine accepts beyond the front door's packet limit: the front door
/// rewrites CONNECT credentials, which can make a CONNECT a little longer.
pub(crate) const ENGINE_SLACK_BYTES: usize = 64 * 1024;

/// How many loopback ports to try if another process takes the one we picked.
const BIND_ATTEMPTS: usize = 8;

/// The running engine: one rumqttd router and `shards` v4 servers in front of it.
pub(crate) struct Engine {
    addrs: Vec<SocketAddr>,
    login: EngineLogin,
    shards: Vec<Shard>,
}

/// One rumqttd server: a loopback listener, on its own thread and runtime.
struct Shard {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Where the front door connects, one address per shard.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The credentials the engine accepts.
    pub fn login(&self) -> &EngineLogin {
        &self.login
    }

    /// Stops the engine and waits for its threads.
    pub async fn stop(mut self) {
        let threads: Vec<JoinHandle<()>> = self.shards.iter_mut().filter_map(Shard::signal_stop).collect();
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    }
}

impl Shard {
    fn signal_stop(&mut self) -> Option<JoinHandle<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take()
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        // Without waiting: `Engine::stop` is the graceful path.
        self.signal_stop();
    }
}

/// Starts rumqttd's router and `config.engine_shards` v4 servers on free loopback ports.
///
/// Why several servers: rumqttd's accept loop pauses about a millisecond after every
/// accept and then registers the connection with its router by a blocking round trip,
/// so one server admits a few hundred connections a second. A fleet reconnecting at
/// once (after a controller restart) needs more; servers share the one router, so
/// sessions, retained messages and subscriptions are common to all of them.
pub(crate) async fn start(config: &BrokerConfig) -> Result<Engine, BrokerError> {
    let login = EngineLogin { username: "fleet-broker-front-door".into(), password: random_secret()? };
    let router_tx = Router::new(0, router_config(config)).spawn();
    let settings = connection_settings(config, &login);
    let mut addrs = Vec::with_capacity(config.engine_shards);
    let mut shards = Vec::with_capacity(config.engine_shards);
    for index in 0..config.engine_shards {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let router_tx = router_tx.clone();
        // rumqttd's router handle has a type this crate cannot name; a closure can hold it.
        let make_server = move |settings: ServerSettings| Server::new(settings, router_tx.clone(), V4);
        let settings = settings.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fleet-broker-engine-{index}"))
            .spawn(move || run_shard(make_server, settings, ready_tx, stop_rx))
            .map_err(|e| BrokerError::Engine(format!("cannot spawn an engine thread: {e}")))?;
        shards.push(Shard { stop: Some(stop_tx), thread: Some(thread) });
        match ready_rx.await {
            Ok(Ok(addr)) => addrs.push(addr),
            Ok(Err(reason)) => return Err(BrokerError::Engine(reason)),
            Err(_) => return Err(BrokerError::Engine("an engine thread ended while starting".into())),
        }
    }
    Ok(Engine { addrs, login, shards })
}

/// One shard's thread: a single-threaded runtime running one rumqttd v4 server.
fn run_shard(
    make_server: impl Fn(ServerSettings) -> Server<V4>,
    settings: ConnectionSettings,
    ready_tx: oneshot::Sender<Result<SocketAddr, String>>,
    stop_rx: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready_tx.send(Err(format!("cannot build an engine runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let mut last_error = String::from("no attempt made");
        for _ in 0..BIND_ATTEMPTS {
            let addr = match free_loopback_port() {
                Ok(addr) => addr,
                Err(e) => {
                    last_error = format!("cannot find a free loopback port: {e}");
                    continue;
                }
            };
            let server_settings = ServerSettings {
                name: "fleet-engine".into(),
                listen: addr,
                tls: None,
                next_connection_delay_ms: 0,
                connections: settings.clone(),
            };
            let mut server = make_server(server_settings);
            let mut serve = pin!(async move { server.start(LinkType::Remote).await });
            // The first poll binds the listener (and fails at once if the port was taken
            // since we picked it); after that the server only awaits accepts.
            match poll_once(serve.as_mut()).await {
                Poll::Pending => {
                    debug!(%addr, "engine shard listening");
                    let _ = ready_tx.send(Ok(addr));
                    tokio::select! {
                        result = serve => warn!(?result, "an MQTT engine server stopped"),
                        _ = stop_rx => debug!("engine shard stopping"),
                    }
                    return;
                }
                Poll::Ready(result) => last_error = format!("an engine server did not start: {result:?}"),
            }
        }
        let _ = ready_tx.send(Err(last_error));
    });
}

/// Limits sized for a fleet: tens of thousands of connections, generous queues.
fn router_config(config: &BrokerConfig) -> RouterConfig {
    RouterConfig {
        // Headroom over the front door's limit: a closed client's engine-side connection
        // may still be registered for a moment while its replacement arrives.
        max_connections: config.max_connections.saturating_add(config.max_connections / 4).saturating_add(64),
        // How many messages the router hands a connection per read of its log.
        max_outgoing_packet_count: 1024,
        // Each subscription filter keeps its recent messages in memory, up to
        // segment size x count; a subscriber further behind loses the oldest.
        max_segment_size: (4 * config.max_packet_bytes).max(1024 * 1024),
        max_segment_count: 32,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

fn connection_settings(config: &BrokerConfig, login: &EngineLogin) -> ConnectionSettings {
    let mut settings = ConnectionSettings {
        // The front door sends CONNECT as soon as it has connected.
        connection_timeout_ms: 10_000,
        max_payload_size: config.max_packet_bytes.saturating_add(ENGINE_SLACK_BYTES),
        // Packets read from one connection per batch.
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        // Any topic may be published to without being declared first.
        dynamic_filters: true,
    };
    let expected_user = login.username.clone();
    let expected_password = login.password.clone();
    settings.set_auth_handler(move |_client_id: String, username: String, password: String| {
        use subtle::ConstantTimeEq;
        let password_ok: bool = password.as_bytes().ct_eq(expected_password.as_bytes()).into();
        std::future::ready(password_ok && username == expected_user)
    });
    settings
}

/// 32 random bytes, hex.
fn random_secret() -> Result<String, BrokerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| BrokerError::Engine(format!("no randomness for the engine secret: {e}")))?;
    Ok(hex::encode(bytes))
}

fn free_loopback_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Polls `future` once.
async fn poll_once<F: Future + Unpin>(mut future: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut future).poll(cx))).await
}
