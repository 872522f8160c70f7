//! The fault proxy: one TCP proxy per device, between it and the broker, that breaks
//! the link on command.
//!
//! Why a proxy and not `iptables` or `tc`: it needs no privileges, it acts on one
//! device's link and nothing else, it works the same for a `fleet-agent` and for QEMU's
//! UART bridge (or a real board's serial-to-TCP bridge), and the faults are exact and
//! repeatable. Every device is provisioned with the proxy's address as its broker
//! (`fleetctl device provision --broker 127.0.0.1:PROXY`), so the device cannot go
//! around it.
//!
//! | control | what the device and the broker see | models |
//! |---|---|---|
//! | [`FaultProxy::cut`] | both sides of every connection closed (FIN); new connections refused (the listener is closed) | cable pulled, gateway down, cell coverage lost |
//! | [`FaultProxy::black_hole`] | connections accepted, nothing forwarded either way; bytes are held, not lost, and flow again on restore (TCP would retransmit them) | packets silently dropped: a dead route, a stalled NAT |
//! | [`FaultProxy::delay`] | every chunk forwarded after a pause | a slow, high-latency link (satellite, congested cell) |
//! | [`FaultProxy::throttle`] | forwarded at most N bytes/s per direction | a narrow link (LoRa-class, 2G) |
//! | [`FaultProxy::reset`] | every current connection reset (RST) on both sides; new ones pass | a middlebox or peer that lost the connection's state |
//! | [`FaultProxy::half_open`] | bytes in one direction (FIN included) dropped for good; the other flows | asymmetric loss: one side believes the link is up |
//! | [`FaultProxy::restore`] | forwarding as normal; listening again after a cut | the link comes back |
//!
//! Faults apply to current and new connections alike, except `reset`, which is an event
//! (connections opened after it pass). The proxy counts what it did ([`ProxyStats`]) so
//! a scenario can report the faults it injected and check that bytes did, or did not,
//! flow.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Result, io};

/// Which way bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the device to the broker (CONNECT, PUBLISH of events, PINGREQ).
    DeviceToBroker,
    /// From the broker to the device (CONNACK, envelopes, acks, PINGRESP).
    BrokerToDevice,
}

/// The proxy's standing condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Close every connection; refuse new ones.
    Cut,
    /// Accept, forward nothing (held until restore).
    BlackHole,
    /// Pause this long before forwarding each chunk.
    Delay(Duration),
    /// Forward at most this many bytes per second, per direction.
    Throttle(u64),
    /// Drop every byte travelling this way.
    HalfOpen(Direction),
}

/// One thing done to the link, as [`FaultProxy::history`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// A standing fault was set.
    Fault(Fault),
    /// Every connection was reset.
    Reset,
}

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Injected::Reset => f.write_str("reset"),
            Injected::Fault(Fault::None) => f.write_str("restore"),
            Injected::Fault(Fault::Cut) => f.write_str("cut"),
            Injected::Fault(Fault::BlackHole) => f.write_str("black-hole"),
            Injected::Fault(Fault::Delay(d)) => write!(f, "delay {}ms", d.as_millis()),
            Injected::Fault(Fault::Throttle(rate)) => write!(f, "throttle {rate}B/s"),
            Injected::Fault(Fault::HalfOpen(Direction::DeviceToBroker)) => {
                f.write_str("half-open (device->broker dropped)")
            }
            Injected::Fault(Fault::HalfOpen(Direction::BrokerToDevice)) => {
                f.write_str("half-open (broker->device dropped)")
            }
        }
    }
}

/// How connections are ended when the proxy ends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Close,
    Reset,
}

#[derive(Debug, Clone, Copy)]
struct State {
    fault: Fault,
    /// Bumped to end every connection opened before.
    epoch: u64,
    ending: Ending,
}

/// What the proxy has done since it started.
#[derive(Debug, Default)]
pub struct ProxyStats {
    accepted: AtomicU64,
    to_broker: AtomicU64,
    to_device: AtomicU64,
    dropped: AtomicU64,
    ended: AtomicU64,
}

/// A snapshot of [`ProxyStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Connections accepted.
    pub accepted: u64,
    /// Bytes forwarded from the device to the broker.
    pub to_broker: u64,
    /// Bytes forwarded from the broker to the device.
    pub to_device: u64,
    /// Bytes dropped by a half-open fault.
    pub dropped: u64,
    /// Connections the proxy closed or reset (cut, reset).
    pub ended: u64,
}

impl ProxyStats {
    fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            to_broker: self.to_broker.load(Ordering::Relaxed),
            to_device: self.to_device.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            ended: self.ended.load(Ordering::Relaxed),
        }
    }
}

/// A TCP proxy with fault controls. Stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    listen: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    state: watch::Sender<State>,
    stats: Arc<ProxyStats>,
    history: Mutex<Vec<Injected>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral loopback port, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let handle = crate::runtime::handle()?;
        let listener = handle
            .block_on(TcpListener::bind(("127.0.0.1", 0)))
            .map_err(io("the fault proxy cannot listen on loopback"))?;
        let listen = listener.local_addr().map_err(io("the fault proxy's address"))?;
        let upstream = Arc::new(Mutex::new(upstream));
        let (state, state_rx) = watch::channel(State { fault: Fault::None, epoch: 0, ending: Ending::Close });
        let stats = Arc::new(ProxyStats::default());
        let task = handle.spawn(accept_loop(listener, listen, upstream.clone(), state_rx, stats.clone()));
        Ok(Self { listen, upstream, state, stats, history: Mutex::new(Vec::new()), task })
    }

    /// Where devices connect.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forwards new connections to `upstream` (a broker that came back on another port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = upstream;
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        self.state.borrow().fault
    }

    /// Counters since start.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Every fault injected so far (restores excluded), oldest first.
    pub fn history(&self) -> Vec<Injected> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn record(&self, injected: Injected) {
        if injected != Injected::Fault(Fault::None) {
            self.history.lock().unwrap_or_else(PoisonError::into_inner).push(injected);
        }
    }

    /// Sets a standing fault (see the module table); `Fault::Cut` also ends every
    /// connection.
    pub fn set(&self, fault: Fault) {
        self.record(Injected::Fault(fault));
        self.state.send_modify(|state| {
            state.fault = fault;
            if fault == Fault::Cut {
                state.epoch += 1;
                state.ending = Ending::Close;
            }
        });
    }

    /// Closes both sides of every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.set(Fault::Cut);
    }

    /// Accepts but forwards nothing until [`restore`](Self::restore).
    pub fn black_hole(&self) {
        self.set(Fault::BlackHole);
    }

    /// Pauses `per_chunk` before forwarding each chunk.
    pub fn delay(&self, per_chunk: Duration) {
        self.set(Fault::Delay(per_chunk));
    }

    /// Forwards at most `bytes_per_sec` per direction.
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.set(Fault::Throttle(bytes_per_sec.max(1)));
    }

    /// Drops every byte travelling `direction`.
    pub fn half_open(&self, direction: Direction) {
        self.set(Fault::HalfOpen(direction));
    }

    /// Resets (RST) every current connection on both sides; later connections pass
    /// under the standing fault.
    pub fn reset(&self) {
        self.record(Injected::Reset);
        self.state.send_modify(|state| {
            state.epoch += 1;
            state.ending = Ending::Reset;
        });
    }

    /// Back to forwarding everything (and listening, after a cut).
    pub fn restore(&self) {
        self.set(Fault::None);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Ends every connection: their receivers see the sender go.
        self.state.send_modify(|state| {
            state.epoch += 1;
            state.ending = Ending::Close;
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    listen: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    mut state: watch::Receiver<State>,
    stats: Arc<ProxyStats>,
) {
    let mut listener = Some(listener);
    loop {
        if state.borrow_and_update().fault == Fault::Cut {
            // Closing the listener makes new connections fail with "connection refused".
            listener = None;
            if state.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(bound) = listener.as_ref() else {
            // Back after a cut: listen on the same port again (SO_REUSEADDR lets us).
            match TcpListener::bind(listen).await {
                Ok(l) => listener = Some(l),
                Err(error) => {
                    tracing_like_warn(&format!("fault proxy cannot listen on {listen} again: {error}; retrying"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        };
        tokio::select! {
            accepted = bound.accept() => {
                if let Ok((client, _)) = accepted {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let target = *upstream.lock().unwrap_or_else(PoisonError::into_inner);
                    tokio::spawn(connection(client, target, state.clone(), stats.clone()));
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// The harness has no logger of its own; a proxy problem goes to stderr, where the test
/// output shows it.
fn tracing_like_warn(message: &str) {
    eprintln!("fleet-hil: {message}");
}

async fn connection(client: TcpStream, upstream: SocketAddr, state: watch::Receiver<State>, stats: Arc<ProxyStats>) {
    let epoch = state.borrow().epoch;
    let Ok(server) = TcpStream::connect(upstream).await else {
        // Nothing listens upstream (the broker is restarting): the device sees its
        // connection reset, as it would from a host with no listener.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client, mut server) = (client, server);
    let ending = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, Direction::DeviceToBroker, state.clone(), &stats);
        let down = pump(server_read, client_write, Direction::BrokerToDevice, state.clone(), &stats);
        let work = both_directions(up, down);
        let mut kill_rx = state.clone();
        let kill = async move {
            loop {
                if kill_rx.changed().await.is_err() {
                    return Ending::Close;
                }
                let now = *kill_rx.borrow();
                if now.epoch != epoch {
                    return now.ending;
                }
            }
        };
        tokio::select! {
            ending = kill => Some(ending),
            () = work => None,
        }
    };
    if let Some(ending) = ending {
        stats.ended.fetch_add(1, Ordering::Relaxed);
        if ending == Ending::Reset {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
    // Dropping both streams closes them (FIN, or RST with zero linger).
}

/// Runs both directions until both have ended cleanly, or either fails (then the
/// connection is over: the peer that is still there must learn it).
async fn both_directions(
    up: impl std::future::Future<Output = std::io::Result<()>>,
    down: impl std::future::Future<Output = std::io::Result<()>>,
) {
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            result = &mut up, if !up_done => {
                if result.is_err() { return; }
                up_done = true;
            }
            result = &mut down, if !down_done => {
                if result.is_err() { return; }
                down_done = true;
            }
        }
    }
}

fn stalled(fault: Fault) -> bool {
    fault == Fault::BlackHole
}

/// Waits while the link is black-holed. `Err` when the proxy is gone.
async fn wait_while_stalled(state: &mut watch::Receiver<State>) -> std::io::Result<()> {
    while stalled(state.borrow_and_update().fault) {
        if state.changed().await.is_err() {
            return Err(std::io::Error::other("proxy stopped"));
        }
    }
    Ok(())
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    direction: Direction,
    mut state: watch::Receiver<State>,
    stats: &ProxyStats,
) -> std::io::Result<()> {
    let counter = match direction {
        Direction::DeviceToBroker => &stats.to_broker,
        Direction::BrokerToDevice => &stats.to_device,
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_while_stalled(&mut state).await?;
        // A fault set while we wait for bytes takes effect at once (a TCP read is
        // cancel-safe: nothing read is lost).
        let n = tokio::select! {
            read = from.read(&mut buf) => read?,
            changed = state.changed() => {
                changed.map_err(|_| std::io::Error::other("proxy stopped"))?;
                continue;
            }
        };
        let fault = state.borrow().fault;
        if n == 0 {
            if fault != Fault::HalfOpen(direction) {
                let _ = to.shutdown().await;
            }
            return Ok(());
        }
        let chunk = &buf[..n];
        if fault == Fault::HalfOpen(direction) {
            stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        // Counted before it is written, so a peer that has the bytes sees them counted.
        counter.fetch_add(n as u64, Ordering::Relaxed);
        match fault {
            Fault::Delay(pause) => {
                tokio::time::sleep(pause).await;
                to.write_all(chunk).await?;
            }
            Fault::Throttle(rate) => {
                // Slices of a twentieth of a second's worth, each sent after its time.
                let slice = usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1);
                for piece in chunk.chunks(slice) {
                    tokio::time::sleep(Duration::from_secs_f64(piece.len() as f64 / rate.max(1) as f64)).await;
                    to.write_all(piece).await?;
                }
            }
            Fault::BlackHole => {
                // Read just as the hole opened: hold the bytes until it closes.
                wait_while_stalled(&mut state).await?;
                to.write_all(chunk).await?;
            }
            Fault::None | Fault::Cut | Fault::HalfOpen(_) => to.write_all(chunk).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant;

    use super::*;

    /// An upstream that greets each connection with `hi\n`, then echoes.
    fn echo_server() -> SocketAddr {
        let handle = crate::runtime::handle().unwrap();
        let listener = handle.block_on(TcpListener::bind(("127.0.0.1", 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        handle.spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = stream.write_all(b"hi\n").await;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(proxy: &FaultProxy) -> StdStream {
        let stream = StdStream::connect(proxy.addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream
    }

    fn read_exact(stream: &mut StdStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        stream.read_exact(&mut buf).unwrap();
        buf
    }

    /// Whether nothing arrives within `quiet` (a negative check: it can only fail if
    /// bytes leak through, never because the machine is slow).
    fn nothing_arrives(stream: &mut StdStream, quiet: Duration) -> bool {
        stream.set_read_timeout(Some(quiet)).unwrap();
        let mut buf = [0u8; 64];
        let result = stream.read(&mut buf);
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        matches!(result, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
    }

    #[test]
    fn forwards_both_ways_and_counts() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut stream = connect(&proxy);
        assert_eq!(read_exact(&mut stream, 3), b"hi\n");
        stream.write_all(b"ping").unwrap();
        assert_eq!(read_exact(&mut stream, 4), b"ping");
        let stats = proxy.stats();
        assert_eq!((stats.accepted, stats.to_broker, stats.to_device), (1, 4, 7));
    }

    #[test]
    fn cut_closes_connections_and_refuses_new_ones_until_restored() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut stream = connect(&proxy);
        assert_eq!(read_exact(&mut stream, 3), b"hi\n");
        proxy.cut();
        let mut buf = [0u8; 8];
        let closed = matches!(stream.read(&mut buf), Ok(0) | Err(_));
        assert!(closed, "the connection survived a cut");
        crate::wait::until_true("connections refused", Duration::from_secs(10), || {
            StdStream::connect(proxy.addr()).is_err()
        })
        .unwrap();
        proxy.restore();
        let mut again = crate::wait::until("the proxy listening again", Duration::from_secs(10), || {
            Ok(StdStream::connect(proxy.addr()).map_err(|e| e.kind()))
        })
        .unwrap();
        again.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(read_exact(&mut again, 3), b"hi\n");
        assert_eq!(proxy.history(), vec![Injected::Fault(Fault::Cut)]);
    }

    #[test]
    fn black_hole_holds_bytes_until_restored() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut stream = connect(&proxy);
        assert_eq!(read_exact(&mut stream, 3), b"hi\n");
        proxy.black_hole();
        stream.write_all(b"ping").unwrap();
        assert!(nothing_arrives(&mut stream, Duration::from_millis(300)), "bytes crossed a black hole");
        // New connections are accepted, but get nothing either.
        let mut late = connect(&proxy);
        assert!(nothing_arrives(&mut late, Duration::from_millis(200)));
        proxy.restore();
        assert_eq!(read_exact(&mut stream, 4), b"ping");
        assert_eq!(read_exact(&mut late, 3), b"hi\n");
    }

    #[test]
    fn delay_pauses_each_chunk() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut stream = connect(&proxy);
        assert_eq!(read_exact(&mut stream, 3), b"hi\n");
        proxy.delay(Duration::from_millis(150));
        let start = Instant::now();
        stream.write_all(b"ping").unwrap();
        assert_eq!(read_exact(&mut stream, 4), b"ping");
        // A lower bound only: the request and the echo each waited.
        assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    }

    #[test]
    fn throttle_limits_the_rate() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut stream = connect(&proxy);
        assert_eq!(read_exact(&mut stream, 3), b"hi\n");
        proxy.throttle(4_000);
        let start = Instant::now();
        stream.write_all(&[7u8; 2_000]).unwrap();
        assert_eq!(read_exact(&mut stream, 2_000), vec![7u8; 2_000]);
        // 2 000 bytes at 4 000 B/s take at least half a second (the echo overlaps).
        assert!(start.elapsed() >= Duration::from_millis(500), "{:?}", start.elapsed());
    }

    #[test]
    fn reset_sends_rst_and_lets_new_connections_pass() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut stream = connect(&proxy);
        assert_eq!(read_exact(&mut stream, 3), b"hi\n");
        proxy.reset();
        let mut buf = [0u8; 8];
        let error = stream.read(&mut buf).err().map(|e| e.kind());
        assert_eq!(error, Some(ErrorKind::ConnectionReset));
        let mut again = connect(&proxy);
        assert_eq!(read_exact(&mut again, 3), b"hi\n");
        assert_eq!(proxy.stats().ended, 1);
    }

    #[test]
    fn half_open_drops_one_direction_only() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        proxy.half_open(Direction::DeviceToBroker);
        let mut stream = connect(&proxy);
        // The broker's side still reaches the device ...
        assert_eq!(read_exact(&mut stream, 3), b"hi\n");
        // ... but nothing the device sends arrives, so nothing comes back.
        stream.write_all(b"lost").unwrap();
        assert!(nothing_arrives(&mut stream, Duration::from_millis(300)));
        proxy.restore();
        stream.write_all(b"kept").unwrap();
        assert_eq!(read_exact(&mut stream, 4), b"kept");
        assert_eq!(proxy.stats().dropped, 4);

        proxy.half_open(Direction::BrokerToDevice);
        let mut muted = connect(&proxy);
        assert!(nothing_arrives(&mut muted, Duration::from_millis(300)), "the greeting crossed");
    }

    #[test]
    fn new_connections_follow_the_upstream() {
        let first = echo_server();
        let proxy = FaultProxy::start(first).unwrap();
        let second = echo_server();
        proxy.set_upstream(second);
        assert_eq!(proxy.upstream(), second);
        let mut stream = connect(&proxy);
        assert_eq!(read_exact(&mut stream, 3), b"hi\n");
    }
}
