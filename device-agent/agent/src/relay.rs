//! The board relay: a gateway carries its site's microcontrollers to the broker over TLS.
//!
//! The firmware has no TLS client in its image (one costs 91 KiB of flash, measured by
//! `firmware-sdk/qemu-tests/tests/tls_probe.rs`, and the agent image has 8.5 KiB
//! to spare), so a board speaks plain MQTT on its local link: a UART to the gateway (through
//! a serial-to-TCP bridge such as ser2net), or the site's own network segment. With
//! `board_relay = "ADDR:PORT"` in `agent.toml`, `fleet-agent` listens there and opens, for
//! each board that connects, a TLS connection to its own broker (the same host, port and
//! CA as its own link, its certificate and host name checked), and carries the bytes both
//! ways. The board's MQTT session, its login and its ACL are its own, end to end with
//! the broker: the gateway reads nothing of it and adds no credential, and nothing of the
//! board's crosses a network beyond the gateway in clear.
//!
//! A relay connection ends when either side closes; the board reconnects as it would to
//! the broker. At most [`MAX_BOARDS`] are carried at once, so a misbehaving local client
//! cannot take the gateway's sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

/// Boards carried at once.
pub const MAX_BOARDS: usize = 64;

/// Where the relay carries boards to.
#[derive(Clone)]
pub struct Upstream {
    /// The broker's host, as the gateway's own config names it (and its certificate).
    pub host: String,
    /// The broker's MQTT over TLS port.
    pub port: u16,
    /// Trusts the fleet's CA only; presents no client certificate (each board logs in
    /// with its own credentials).
    pub tls: Arc<rustls::ClientConfig>,
}

/// Accepts boards on `listener` and carries each to `upstream`, until the task is dropped.
pub async fn serve(listener: TcpListener, upstream: Upstream) {
    let carried = Arc::new(AtomicUsize::new(0));
    loop {
        let (board, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "board relay: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if carried.fetch_add(1, Ordering::AcqRel) >= MAX_BOARDS {
            carried.fetch_sub(1, Ordering::AcqRel);
            warn!(%peer, max = MAX_BOARDS, "board relay: full; connection closed");
            continue;
        }
        let upstream = upstream.clone();
        let carried = carried.clone();
        tokio::spawn(async move {
            match carry(board, &upstream).await {
                Ok((up, down)) => info!(%peer, up, down, "board relay: connection ended"),
                Err(error) => warn!(%peer, %error, "board relay: connection ended"),
            }
            carried.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// One board's connection: TCP and TLS to the broker, then the bytes both ways.
async fn carry(mut board: TcpStream, upstream: &Upstream) -> std::io::Result<(u64, u64)> {
    let _ = board.set_nodelay(true);
    let name = ServerName::try_from(upstream.host.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("broker host name: {e}")))?;
    let tcp = TcpStream::connect((upstream.host.as_str(), upstream.port)).await?;
    let _ = tcp.set_nodelay(true);
    let mut broker = tokio_rustls::TlsConnector::from(upstream.tls.clone()).connect(name, tcp).await?;
    info!(peer = ?board.peer_addr().ok(), "board relay: carrying a board to the broker over TLS");
    tokio::io::copy_bidirectional(&mut board, &mut broker).await
}
