//! The front door: the public listener and one relay task per client connection.
//!
//! Why a relay: the engine (rumqttd) cannot enforce a topic ACL, so clients never reach
//! it directly. Each client connection is terminated here; its CONNECT is authenticated
//! and checked, then a second connection to the engine carries its traffic:
//!
//! ```text
//! client --TCP--> front door --loopback TCP--> rumqttd
//!        decode every packet, ask session.rs, re-encode what may pass
//!        <------ relay engine bytes as they are, except a SUBACK to patch
//! ```
//!
//! This file only moves bytes and keeps counters; every decision is made by
//! [`crate::session`] (and [`crate::acl`]). One connection's failure (oversized,
//! malformed, refused, a slow reader) ends that connection's task and nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fleet_schemas::Topics;
use rumqttd::protocol::v4::PacketType;
use rumqttd::protocol::{Packet, SubAck};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::auth::Authenticator;
use crate::engine::ENGINE_SLACK_BYTES;
use crate::framing::{self, CONNECT_BYTE, FrameError};
use crate::gate::{Gate, Refused, Ticket};
use crate::logs::{Bounded, LogGate};
use crate::native::{Hub, Outgoing};
use crate::router::{In, Message, Out, qos_num};
use crate::session::{
    self, Admitted, ClientOutcome, ClientVerdict, CloseReason, ConnectRequest, EngineLogin, PendingSubacks, Refusal,
    Session,
};
use crate::stats::{Counters, OpenGuard};
use crate::wire;

/// How long a closing connection may take to deliver its last bytes (a refusal CONNACK,
/// the engine's reaction to DISCONNECT) before it is cut.
const LINGER: Duration = Duration::from_secs(2);
/// Buffers above this size are released once empty, so one large packet does not pin
/// memory for the rest of a long-lived connection.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;
/// Read granularity.
const READ_CHUNK: usize = 4096;
/// Connections per engine shard between "connecting to the engine" and "the engine
/// answered". Keeps the engine's accept backlog (1024) from overflowing in a reconnect
/// storm: an overflowing backlog drops SYNs, and the kernel's SYN retries take minutes.
pub(crate) const ENGINE_HANDSHAKES: usize = 128;
/// Longest wait for an engine shard to take and answer a connection.
const ENGINE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// One engine server, and the gate that paces connections to it.
pub(crate) struct EngineShard {
    pub addr: SocketAddr,
    pub gate: Arc<Semaphore>,
}

/// Everything a connection task needs, shared by all of them.
pub(crate) struct Shared {
    pub topics: Arc<Topics>,
    pub auth: Arc<dyn Authenticator>,
    pub counters: Arc<Counters>,
    pub engine_shards: Vec<EngineShard>,
    pub engine_login: EngineLogin,
    /// The native engine, when the broker runs it instead of rumqttd.
    pub hub: Option<Arc<Hub>>,
    pub max_packet_bytes: usize,
    pub connect_timeout: Duration,
    /// Who gets a socket (see [`crate::gate`]).
    pub gate: Arc<Gate>,
    /// Rate limits for the lines a client can cause.
    pub logs: LogGates,
    /// The admitted connections by client id, to close on request.
    pub clients: Arc<Clients>,
}

/// The admitted connections by client id, so the broker's owner can close them (a
/// device whose credentials were revoked is cut off at once, not at its next login).
#[derive(Debug, Default)]
pub(crate) struct Clients {
    map: std::sync::Mutex<std::collections::HashMap<String, Vec<(u64, CancellationToken)>>>,
    next: std::sync::atomic::AtomicU64,
}

/// An admitted connection's place in [`Clients`], removed when dropped.
pub(crate) struct ClientEntry<'a> {
    clients: &'a Clients,
    client_id: String,
    id: u64,
    pub kick: CancellationToken,
}

impl Clients {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<(u64, CancellationToken)>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn register(&self, client_id: &str) -> ClientEntry<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kick = CancellationToken::new();
        self.map().entry(client_id.to_string()).or_default().push((id, kick.clone()));
        ClientEntry { clients: self, client_id: client_id.to_string(), id, kick }
    }

    /// Closes every connection of `client_id`; how many there were.
    pub fn disconnect(&self, client_id: &str) -> usize {
        let map = self.map();
        let tokens = map.get(client_id).map(Vec::as_slice).unwrap_or_default();
        for (_, token) in tokens {
            token.cancel();
        }
        tokens.len()
    }
}

impl Drop for ClientEntry<'_> {
    fn drop(&mut self) {
        let mut map = self.clients.map();
        if let Some(entries) = map.get_mut(&self.client_id) {
            entries.retain(|(id, _)| *id != self.id);
            if entries.is_empty() {
                map.remove(&self.client_id);
            }
        }
    }
}

/// One [`LogGate`] per kind of line a client can cause, so a flood of one kind does not
/// silence the others.
#[derive(Debug, Default)]
pub(crate) struct LogGates {
    /// Refused CONNECTs and connections refused or evicted at the gate.
    pub refusals: LogGate,
    /// Protocol violations, ACL denials, oversized and malformed packets.
    pub violations: LogGate,
    /// `accept` failing (out of file descriptors, most likely).
    pub accept_errors: LogGate,
}

/// Accepts clients until `cancel`; each connection runs in its own task on `tracker`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: back off rather than spin.
                if let Some(held_back) = shared.logs.accept_errors.pass(std::time::Instant::now()) {
                    warn!(error = %e, held_back, "accept failed; is `ulimit -n` high enough for the fleet?");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        Counters::bump(&shared.counters.accepted_connections);
        Counters::bump(&shared.counters.open_connections);
        let ticket = match shared.gate.enter(peer.ip(), std::time::Instant::now()) {
            Ok((ticket, entered)) => {
                if entered.evicted {
                    Counters::bump(&shared.counters.evicted_unauthenticated);
                }
                Ok(ticket)
            }
            Err(refused) => {
                Counters::bump(&shared.counters.refused_connections);
                match refused {
                    Refused::PerAddress => Counters::bump(&shared.counters.refused_per_address),
                    Refused::Capacity => Counters::bump(&shared.counters.refused_at_capacity),
                }
                Err(refused)
            }
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        let tls = tls.clone();
        let span = info_span!("mqtt", %peer, tls = tls.is_some(), client_id = tracing::field::Empty);
        let _ = stream.set_nodelay(true);
        tracker.spawn(
            async move {
                let counters = shared.counters.clone();
                let _open = OpenGuard(&counters);
                tokio::select! {
                    _ = cancel.cancelled() => debug!("closed by broker shutdown"),
                    _ = serve_any(stream, tls, peer, ticket, &shared) => {}
                }
            }
            .instrument(span),
        );
    }
    debug!("front door stopped accepting");
}

/// How a connection ended, for the counters and the log.
enum End {
    /// The client left (DISCONNECT, end of stream, or a network error), or the engine
    /// closed the session (keep-alive expired, taken over by a newer connection).
    Normal(&'static str),
    /// The CONNECT was refused with a CONNACK code (counted and logged by [`refuse`]).
    Refused,
    /// Closed by the front door for this reason.
    Cut(CloseReason),
    /// The client's bytes were not acceptable MQTT.
    Bad(FrameError),
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// The engine could not be reached (a broker fault, not the client's).
    EngineDown(std::io::Error),
    /// Turned away at the gate, before reading anything (see [`crate::gate`]).
    Gated(Refused),
    /// Closed while unauthenticated to make room for a newer connection.
    Evicted,
    /// Closed by the broker's owner ([`crate::RunningBroker::disconnect`]).
    Disconnected,
}

/// What a client connection is: plain TCP or TLS over it.
pub(crate) trait ClientStream: AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ClientStream for S {}

/// Serves a plain connection, or first completes its TLS handshake (within the connect
/// timeout: a client that never finishes it holds its gate slot no longer than one that
/// never sends CONNECT). A connection turned away at the gate on the TLS port is closed
/// without a handshake: a flood costs no cryptography.
async fn serve_any(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    peer: SocketAddr,
    ticket: Result<Ticket, Refused>,
    shared: &Shared,
) {
    let Some(acceptor) = tls else { return serve(stream, peer, ticket, None, shared).await };
    if let Err(refused) = ticket {
        if let Some(held_back) = shared.logs.refusals.pass(std::time::Instant::now()) {
            info!(?refused, held_back, "TLS connection turned away before its handshake");
        }
        return;
    }
    match timeout(shared.connect_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            // A client certificate got here only if the listener's verifier accepted it.
            let certificate = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|c| c.to_vec());
            serve(tls, peer, ticket, certificate, shared).await
        }
        Ok(Err(error)) => {
            Counters::bump(&shared.counters.tls_handshake_failures);
            if let Some(held_back) = shared.logs.violations.pass(std::time::Instant::now()) {
                info!(%error, held_back, "TLS handshake failed; connection closed");
            }
        }
        Err(_) => {
            Counters::bump(&shared.counters.tls_handshake_failures);
            if let Some(held_back) = shared.logs.violations.pass(std::time::Instant::now()) {
                info!(held_back, "no TLS handshake in time; connection closed");
            }
        }
    }
}

async fn serve<S: ClientStream>(
    mut client: S,
    peer: SocketAddr,
    ticket: Result<Ticket, Refused>,
    certificate: Option<Vec<u8>>,
    shared: &Shared,
) {
    let end = match ticket {
        Ok(mut ticket) => {
            // Only an unauthenticated connection is evicted: once admitted, nothing
            // cancels the token and the relay runs to its own end.
            let eviction = ticket.eviction();
            tokio::select! {
                end = handshake_and_relay(&mut client, peer, &mut ticket, certificate, shared) => end,
                () = eviction.cancelled() => End::Evicted,
            }
        }
        Err(refused) => {
            // Full, or this address holds its share: answer without reading, and close
            // at once, so a flood costs one short-lived descriptor per attempt.
            let mut out = BytesMut::new();
            if framing::encode(Refusal::Capacity.connack(), &mut out).is_ok() {
                let _ = timeout(Duration::from_millis(100), client.write_all(&out)).await;
            }
            End::Gated(refused)
        }
    };
    let counters = &shared.counters;
    let now = std::time::Instant::now();
    match end {
        End::Normal(why) => debug!(why, "connection closed"),
        End::Refused => {}
        End::Gated(refused) => {
            if let Some(held_back) = shared.logs.refusals.pass(now) {
                info!(?refused, held_back, "connection turned away before CONNECT");
            }
        }
        End::Evicted => {
            if let Some(held_back) = shared.logs.refusals.pass(now) {
                info!(held_back, "unauthenticated connection closed to make room for a newer one");
            }
        }
        End::Cut(CloseReason::DeniedPublish { topic, denial }) => {
            Counters::bump(&counters.denied_publishes);
            if let Some(held_back) = shared.logs.violations.pass(now) {
                warn!(topic = %Bounded(&topic), %denial, held_back, "PUBLISH denied by the ACL; connection closed");
            }
        }
        End::Cut(reason) => {
            Counters::bump(&counters.malformed_packets);
            if let Some(held_back) = shared.logs.violations.pass(now) {
                warn!(?reason, held_back, "protocol violation; connection closed");
            }
        }
        End::Bad(FrameError::Oversized(size)) => {
            Counters::bump(&counters.oversized_packets);
            if let Some(held_back) = shared.logs.violations.pass(now) {
                warn!(size, limit = shared.max_packet_bytes, held_back, "oversized packet; connection closed");
            }
        }
        End::Bad(error) => {
            Counters::bump(&counters.malformed_packets);
            if let Some(held_back) = shared.logs.violations.pass(now) {
                warn!(%error, held_back, "malformed packet; connection closed");
            }
        }
        End::ConnectTimeout => {
            Counters::bump(&counters.malformed_packets);
            if let Some(held_back) = shared.logs.violations.pass(now) {
                info!(held_back, "no CONNECT in time; connection closed");
            }
        }
        End::EngineDown(error) => warn!(%error, "cannot reach the MQTT engine; connection refused"),
        End::Disconnected => info!("connection closed: its client was disconnected by the broker's owner"),
    }
}

async fn handshake_and_relay<S: ClientStream>(
    client: &mut S,
    peer: SocketAddr,
    ticket: &mut Ticket,
    certificate: Option<Vec<u8>>,
    shared: &Shared,
) -> End {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = Instant::now() + shared.connect_timeout;
    let first = loop {
        if buf.first().is_some_and(|&b| b != CONNECT_BYTE) {
            return End::Bad(FrameError::Malformed(rumqttd::protocol::Error::IncorrectPacketFormat));
        }
        match framing::next_packet(&mut buf, shared.max_packet_bytes) {
            Ok(Some(packet)) => break packet,
            Ok(None) => {}
            Err(FrameError::UnsupportedProtocol(_)) => {
                refuse(client, Refusal::ProtocolVersion, shared).await;
                return End::Refused;
            }
            Err(e) => return End::Bad(e),
        }
        match timeout_at(deadline, read_more(client, &mut buf)).await {
            Err(_) => return End::ConnectTimeout,
            Ok(Ok(0)) => return End::Normal("closed before CONNECT"),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return End::Normal("network error before CONNECT"),
        }
    };
    let Some(request) = ConnectRequest::from_packet(first) else {
        return End::Bad(FrameError::Malformed(rumqttd::protocol::Error::IncorrectPacketFormat));
    };
    tracing::Span::current().record("client_id", tracing::field::display(Bounded(&request.connect.client_id)));
    if let Err(refusal) = session::check_before_login(&request) {
        refuse(client, refusal, shared).await;
        return End::Refused;
    }
    let delay = shared.gate.login_delay(peer.ip(), std::time::Instant::now());
    if !delay.is_zero() {
        // This address failed to log in too often lately: its attempts wait, so it
        // cannot guess passwords at the speed of the network.
        Counters::bump(&shared.counters.slowed_logins);
        tokio::time::sleep(delay).await;
    }

    let auth = shared.auth.clone();
    let client_id = request.connect.client_id.clone();
    let decided = match (certificate, &request.login) {
        // A verified client certificate is the credential (mTLS), whatever the CONNECT
        // says as username and password.
        (Some(certificate), _) => {
            tokio::task::spawn_blocking(move || auth.authenticate_certificate(&client_id, &certificate)).await
        }
        (None, None) => Ok(None),
        (None, Some(login)) => {
            let (username, password) = (login.username.clone(), login.password.clone());
            tokio::task::spawn_blocking(move || auth.authenticate(&client_id, &username, password.as_bytes())).await
        }
    };
    let identity = decided.unwrap_or_else(|e| {
        warn!(error = %e, "the authenticator failed; refusing the connection");
        None
    });
    let admitted = match session::admit(request, identity, shared.topics.clone(), &shared.engine_login) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            Counters::bump(&shared.counters.failed_logins);
            shared.gate.login_failed(peer.ip(), std::time::Instant::now());
            refuse(client, refusal, shared).await;
            return End::Refused;
        }
    };
    if !ticket.admit() {
        return End::Evicted;
    }
    let entry = shared.clients.register(admitted.session.client_id());

    if let Some(hub) = &shared.hub {
        debug!(identity = ?admitted.session.identity(), client_id = admitted.session.client_id(), "admitted");
        return relay_native(client, admitted, buf, hub, shared, &entry.kick).await;
    }
    // The same client id always goes to the same shard, so rumqttd sees a session
    // takeover (and cancels the old connection's last-will) within one server.
    let Some(shard) = shared.engine_shards.get(shard_of(admitted.session.client_id(), shared.engine_shards.len()))
    else {
        refuse(client, Refusal::Capacity, shared).await;
        return End::EngineDown(std::io::Error::other("no engine shard"));
    };
    let handshake = async {
        let permit = shard.gate.clone().acquire_owned().await.map_err(std::io::Error::other)?;
        let engine = TcpStream::connect(shard.addr).await?;
        Ok::<_, std::io::Error>((permit, engine))
    };
    let (permit, mut engine) = match timeout(ENGINE_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => {
            refuse(client, Refusal::Capacity, shared).await;
            return End::EngineDown(e);
        }
        Err(_) => {
            refuse(client, Refusal::Capacity, shared).await;
            return End::EngineDown(std::io::ErrorKind::TimedOut.into());
        }
    };
    let _ = engine.set_nodelay(true);
    let mut out = BytesMut::new();
    if let Err(e) = framing::encode(admitted.engine_connect, &mut out) {
        return End::Bad(e);
    }
    if let Err(e) = engine.write_all(&out).await {
        refuse(client, Refusal::Capacity, shared).await;
        return End::EngineDown(e);
    }
    debug!(identity = ?admitted.session.identity(), client_id = admitted.session.client_id(), "admitted");
    tokio::select! {
        end = relay(client, engine, admitted.session, buf, permit, shared) => end,
        // Dropping the relay closes both sockets: rumqttd sees an unclean end (the will).
        () = entry.kick.cancelled() => End::Disconnected,
    }
}

/// A stable shard for `client_id` (FNV-1a).
fn shard_of(client_id: &str, shards: usize) -> usize {
    let hash =
        client_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % shards.max(1) as u64) as usize
}

/// Counts and logs a refusal, sends its CONNACK and closes gracefully, so the client
/// reads the code rather than a reset. Counted first, so the counter is up to date by
/// the time the client learns of the refusal.
async fn refuse<S: ClientStream>(client: &mut S, refusal: Refusal, shared: &Shared) {
    Counters::bump(&shared.counters.refused_connections);
    if let Some(held_back) = shared.logs.refusals.pass(std::time::Instant::now()) {
        info!(%refusal, held_back, "connection refused");
    }
    let mut out = BytesMut::new();
    if framing::encode(refusal.connack(), &mut out).is_ok() {
        let _ = timeout(LINGER, client.write_all(&out)).await;
    }
    let _ = timeout(LINGER, client.shutdown()).await;
    // Drain what the client still sends until it closes, so our close is not a reset.
    let mut sink = [0u8; 1024];
    let drain = async {
        let mut left = 64 * 1024usize;
        while left > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = timeout(LINGER, drain).await;
}

/// Runs the two directions of an admitted connection until either ends.
async fn relay<S: ClientStream>(
    client: &mut S,
    engine: TcpStream,
    session: Session,
    buf: BytesMut,
    handshake: OwnedSemaphorePermit,
    shared: &Shared,
) -> End {
    let (client_r, client_w) = tokio::io::split(client);
    let (engine_r, engine_w) = engine.into_split();
    let (answers_tx, answers_rx) = mpsc::channel::<Packet>(8);
    let pending = session.pending_subacks();
    let upstream = client_to_engine(client_r, buf, engine_w, session, answers_tx, shared);
    let downstream = engine_to_client(engine_r, client_w, pending, answers_rx, handshake, shared.max_packet_bytes);
    tokio::pin!(upstream, downstream);
    tokio::select! {
        end = &mut upstream => {
            if matches!(end, End::Normal(_)) {
                // The client is done and the engine's write side is shut: let the engine
                // finish (it closes after DISCONNECT or end of stream) and relay its last bytes.
                let _ = timeout(LINGER, &mut downstream).await;
            }
            end
        }
        end = &mut downstream => end,
    }
}

/// Client to engine: decode, decide, re-encode. Returns when the client leaves or is cut.
async fn client_to_engine<R: AsyncRead + Unpin>(
    mut client_r: R,
    mut buf: BytesMut,
    mut engine_w: OwnedWriteHalf,
    mut session: Session,
    answers: mpsc::Sender<Packet>,
    shared: &Shared,
) -> End {
    let mut out = BytesMut::new();
    loop {
        let mut stop = None;
        while stop.is_none() {
            if buf.first().is_some_and(|&b| !framing::plausible_client_packet(b)) {
                stop = Some(End::Bad(FrameError::Malformed(rumqttd::protocol::Error::IncorrectPacketFormat)));
                break;
            }
            let packet = match framing::next_packet(&mut buf, shared.max_packet_bytes) {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(e) => {
                    stop = Some(End::Bad(e));
                    break;
                }
            };
            let outcome = session.on_client_packet(packet);
            count_denied_filters(&outcome, shared);
            match outcome.verdict {
                ClientVerdict::Forward(packet) => {
                    if let Err(e) = framing::encode(packet, &mut out) {
                        stop = Some(End::Bad(e));
                    }
                }
                ClientVerdict::Answer(packet) => {
                    if answers.send(packet).await.is_err() {
                        stop = Some(End::Normal("client writer gone"));
                    }
                }
                ClientVerdict::Finish(packet) => {
                    stop = Some(match framing::encode(packet, &mut out) {
                        Ok(()) => End::Normal("DISCONNECT"),
                        Err(e) => End::Bad(e),
                    });
                }
                ClientVerdict::Close(reason) => stop = Some(End::Cut(reason)),
            }
        }
        // Whatever was allowed before a stop still goes through, in order.
        if !out.is_empty() {
            if engine_w.write_all(&out).await.is_err() {
                return End::Normal("engine closed");
            }
            out.clear();
            shrink_if_idle(&mut out);
        }
        if let Some(end) = stop {
            return end;
        }
        shrink_if_idle(&mut buf);
        match read_more(&mut client_r, &mut buf).await {
            Ok(0) => return End::Normal("client closed the connection"),
            Ok(_) => {}
            Err(_) => return End::Normal("client network error"),
        }
    }
}

/// Counts and logs the SUBSCRIBE filters the ACL refused on the way.
fn count_denied_filters(outcome: &ClientOutcome, shared: &Shared) {
    if !outcome.denied_filters.is_empty() {
        Counters::add(&shared.counters.denied_subscribes, outcome.denied_filters.len() as u64);
        for (filter, denial) in &outcome.denied_filters {
            if let Some(held_back) = shared.logs.violations.pass(std::time::Instant::now()) {
                warn!(filter = %Bounded(filter), %denial, held_back, "SUBSCRIBE filter denied by the ACL");
            }
        }
    }
}

/// Engine to client: relay whole packets as they are, patch split SUBACKs, and slip in
/// the front door's own answers between packets.
async fn engine_to_client<W: tokio::io::AsyncWrite + Unpin>(
    mut engine_r: OwnedReadHalf,
    mut client_w: W,
    pending: PendingSubacks,
    mut answers: mpsc::Receiver<Packet>,
    handshake: OwnedSemaphorePermit,
    max_packet_bytes: usize,
) -> End {
    let max_body = max_packet_bytes.saturating_add(ENGINE_SLACK_BYTES);
    // Held until the engine's first bytes (its CONNACK): then the shard has taken the
    // connection off its accept backlog.
    let mut handshake = Some((handshake, Instant::now() + ENGINE_HANDSHAKE_TIMEOUT));
    let mut buf = BytesMut::with_capacity(1024);
    let mut out = BytesMut::new();
    let mut answers_open = true;
    loop {
        tokio::select! {
            read = read_engine(&mut engine_r, &mut buf, handshake.as_ref().map(|(_, deadline)| *deadline)) => {
                match read {
                    Ok(0) | Err(_) => {
                        let _ = client_w.flush().await;
                        return End::Normal("engine closed the session");
                    }
                    Ok(_) => handshake = None,
                }
                quick_ack(&engine_r);
                // `ready` bytes at the front of `buf` are whole packets to pass as they are.
                let mut ready = 0;
                loop {
                    let (len, kind) = match framing::peek_frame(&buf[ready..], max_body) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => {
                            warn!(error = %e, "the engine sent an unreadable packet");
                            return End::Normal("engine stream unreadable");
                        }
                    };
                    if kind == PacketType::SubAck && !pending.is_empty() {
                        if client_w.write_all(&buf[..ready]).await.is_err() {
                            return End::Normal("client network error");
                        }
                        buf.advance(ready);
                        ready = 0;
                        let mut frame = buf.split_to(len);
                        if let Ok(Some(Packet::SubAck(suback, _))) = framing::next_packet(&mut frame, max_body) {
                            let patched: SubAck = pending.patch(suback);
                            if framing::encode(Packet::SubAck(patched, None), &mut out).is_ok()
                                && client_w.write_all(&out).await.is_err()
                            {
                                return End::Normal("client network error");
                            }
                            out.clear();
                        }
                    } else {
                        ready += len;
                    }
                }
                if ready > 0 {
                    if client_w.write_all(&buf[..ready]).await.is_err() {
                        return End::Normal("client network error");
                    }
                    buf.advance(ready);
                }
                shrink_if_idle(&mut buf);
            }
            answer = answers.recv(), if answers_open => {
                match answer {
                    Some(packet) => {
                        if framing::encode(packet, &mut out).is_ok() && client_w.write_all(&out).await.is_err() {
                            return End::Normal("client network error");
                        }
                        out.clear();
                    }
                    None => answers_open = false,
                }
            }
        }
    }
}

/// Acknowledges the engine's segments at once instead of up to 40 ms later.
///
/// Why: rumqttd leaves Nagle's algorithm on for the connections it accepts, so a small
/// packet that follows another unacknowledged one (an event right after a PUBACK, say)
/// waits until this side acknowledges; with delayed ACK that wait is 40 ms on every such
/// hop. Linux clears quick-ack mode as it sees fit, so it is set again after each read.
fn quick_ack(engine: &OwnedReadHalf) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(engine.as_ref()).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = engine;
}

/// [`read_more`], before `deadline` if there is one.
async fn read_engine(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    deadline: Option<Instant>,
) -> std::io::Result<usize> {
    match deadline {
        Some(deadline) => {
            timeout_at(deadline, read_more(reader, buf)).await.unwrap_or(Err(std::io::ErrorKind::TimedOut.into()))
        }
        None => read_more(reader, buf).await,
    }
}

/// Reads at least one byte more into `buf` (0 at end of stream).
async fn read_more<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    reader.read_buf(buf).await
}

fn shrink_if_idle(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > KEEP_BUFFER_BYTES {
        *buf = BytesMut::new();
    }
}

/// Runs an admitted connection on the native engine until it ends, then tells the
/// router how (a DISCONNECT is a clean end; anything else publishes the will).
async fn relay_native<S: ClientStream>(
    client: &mut S,
    admitted: Admitted,
    buf: BytesMut,
    hub: &Hub,
    shared: &Shared,
    kick: &CancellationToken,
) -> End {
    let Packet::Connect(connect, _, will, _, _) = admitted.engine_connect else {
        return End::Bad(FrameError::Malformed(rumqttd::protocol::Error::IncorrectPacketFormat));
    };
    let client_id = connect.client_id;
    let session = admitted.session;
    let pending = session.pending_subacks();
    let (conn, rx, answers) = hub.open();
    hub.run(|router| router.connect(conn, &client_id, connect.clean_session, will));
    // MQTT: a client silent for one and a half keep-alives is gone.
    let silence = Duration::from_millis(u64::from(connect.keep_alive) * 1500);
    let (client_r, client_w) = tokio::io::split(client);
    let reader = native_reader(client_r, buf, session, silence, (conn, &client_id), hub, answers, shared);
    let writer = native_writer(client_w, rx, pending);
    let (end, clean) = tokio::select! {
        read = reader => read,
        end = writer => (end, false),
        () = kick.cancelled() => (End::Disconnected, false),
    };
    hub.run(|router| router.disconnected(conn, &client_id, clean));
    hub.close(conn);
    end
}

/// The router's view of a packet the session let through; `None` for one it has no
/// use for (a PUBREC or PUBCOMP: the engine never sends QoS 2).
fn to_router(packet: Packet, publish_header: Option<(u8, u16)>) -> Option<In> {
    Some(match packet {
        Packet::Publish(publish, _) => {
            let (qos, pkid) = publish_header?;
            In::Publish {
                pkid,
                message: Message { topic: publish.topic, payload: publish.payload, qos, retain: publish.retain },
            }
        }
        Packet::PubAck(ack, _) => In::PubAck(ack.pkid),
        Packet::PubRel(rel, _) => In::PubRel(rel.pkid),
        Packet::Subscribe(subscribe, _) => In::Subscribe {
            pkid: subscribe.pkid,
            filters: subscribe.filters.into_iter().map(|f| (f.path, qos_num(f.qos))).collect(),
        },
        Packet::Unsubscribe(unsubscribe, _) => In::Unsubscribe { pkid: unsubscribe.pkid, filters: unsubscribe.filters },
        Packet::PingReq(_) => In::PingReq,
        _ => return None,
    })
}

/// Client to router: decode, decide (session.rs), hand to the router. Returns how the
/// connection ended and whether cleanly (DISCONNECT).
#[allow(clippy::too_many_arguments)]
async fn native_reader<R: AsyncRead + Unpin>(
    mut client_r: R,
    mut buf: BytesMut,
    mut session: Session,
    silence: Duration,
    (conn, client_id): (u64, &str),
    hub: &Hub,
    answers: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    shared: &Shared,
) -> (End, bool) {
    loop {
        loop {
            if buf.first().is_some_and(|&b| !framing::plausible_client_packet(b)) {
                return (End::Bad(FrameError::Malformed(rumqttd::protocol::Error::IncorrectPacketFormat)), false);
            }
            let header = wire::publish_qos_pkid(&buf);
            let packet = match framing::next_packet(&mut buf, shared.max_packet_bytes) {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(e) => return (End::Bad(e), false),
            };
            let outcome = session.on_client_packet(packet);
            count_denied_filters(&outcome, shared);
            match outcome.verdict {
                ClientVerdict::Forward(packet) => {
                    if let Some(input) = to_router(packet, header) {
                        hub.run(|router| router.packet(conn, client_id, input));
                    }
                }
                ClientVerdict::Answer(packet) => {
                    let _ = answers.send(Outgoing::Front(Box::new(packet)));
                }
                ClientVerdict::Finish(_) => return (End::Normal("DISCONNECT"), true),
                ClientVerdict::Close(reason) => return (End::Cut(reason), false),
            }
        }
        shrink_if_idle(&mut buf);
        match timeout(silence, read_more(&mut client_r, &mut buf)).await {
            Err(_) => return (End::Normal("keep-alive expired"), false),
            Ok(Ok(0)) => return (End::Normal("client closed the connection"), false),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return (End::Normal("client network error"), false),
        }
    }
}

/// Router to client: encodes what is queued, as many packets per write as are waiting.
async fn native_writer<W: tokio::io::AsyncWrite + Unpin>(
    mut client_w: W,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    pending: PendingSubacks,
) -> End {
    let mut out = BytesMut::new();
    loop {
        let Some(first) = queue.recv().await else { return End::Normal("broker stopping") };
        let mut next = Some(first);
        let mut close = false;
        while let Some(item) = next.take() {
            match item {
                Outgoing::Engine(Out::Close) => {
                    close = true;
                    break;
                }
                Outgoing::Engine(Out::SubAck { pkid, codes }) => {
                    let patched = pending.patch(SubAck { pkid, return_codes: codes });
                    wire::encode(&Out::SubAck { pkid, codes: patched.return_codes }, &mut out);
                }
                Outgoing::Engine(packet) => wire::encode(&packet, &mut out),
                Outgoing::Front(packet) => {
                    let _ = framing::encode(*packet, &mut out);
                }
            }
            if out.len() < KEEP_BUFFER_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if !out.is_empty() && client_w.write_all(&out).await.is_err() {
            return End::Normal("client network error");
        }
        out.clear();
        shrink_if_idle(&mut out);
        if close {
            let _ = client_w.shutdown().await;
            return End::Normal("session taken over by a newer connection");
        }
    }
}
