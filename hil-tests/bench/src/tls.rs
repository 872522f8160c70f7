//! What MQTT over TLS costs per device on the embedded broker, beside plain MQTT in the
//! same run: the time one device takes to connect (TCP, the TLS 1.3 handshake with the
//! controller's ECDSA P-256 certificate, CONNECT and CONNACK), and the controller
//! process's resident memory per connection it holds. The 10,000-device fan-out over
//! TLS is a row of [`crate::fanout`].
//!
//! Memory is the growth of `fleetctl serve`'s RSS from before the swarm connects to
//! when every device is online: a connection's buffers, its TLS state and its session,
//! divided by the connections held. The plain figure has the same session in it, so
//! the difference is what TLS adds.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};

use crate::fanout::{CONNECTS_PER_SECOND, percentile};
use crate::fleet::{BenchFleet, BrokerKind, Link};
use crate::swarm::{Identity, Swarm};
use crate::table::{self, Row, Table};

/// One connection's cost: connect p50 and p99 (seconds), KiB of the controller's
/// memory per held connection.
struct Cost {
    connect_p50: f64,
    connect_p99: f64,
    kib_per_connection: f64,
}

/// The connection-cost rows.
pub async fn connection_cost(quick: bool, table: &mut Table) -> anyhow::Result<()> {
    let held = if quick { 500 } else { 2_000 };
    let connects = if quick { 50 } else { 200 };
    let plain = measure(held, connects, false).await?;
    let tls = measure(held, connects, true).await?;
    println!(
        "connect: plain p50 {:.2} ms, TLS p50 {:.2} ms; memory per connection: plain {:.1} KiB, TLS {:.1} KiB",
        plain.connect_p50 * 1e3,
        tls.connect_p50 * 1e3,
        plain.kib_per_connection,
        tls.kib_per_connection
    );
    let ms = |s: f64| format!("{:.2} ms", s * 1e3);
    table.add(Row {
        figure: "connect one device, p50 / p99".into(),
        ours: format!("{} / {} (TLS 1.3)", ms(tls.connect_p50), ms(tls.connect_p99)),
        peer: format!("{} / {} (plain MQTT)", ms(plain.connect_p50), ms(plain.connect_p99)),
        ratio: table::time_ratio(tls.connect_p50, plain.connect_p50),
        conditions: format!(
            "{connects} connections one after another on loopback to the embedded broker: TCP, the TLS handshake \
             (ECDSA P-256 certificate from the controller's CA, checked by the client), CONNECT with a password, \
             CONNACK; before the {held} devices of the memory figure connect"
        ),
    });
    table.add(Row {
        figure: "controller memory per connection".into(),
        ours: format!("{:.1} KiB (TLS 1.3)", tls.kib_per_connection),
        peer: format!("{:.1} KiB (plain MQTT)", plain.kib_per_connection),
        ratio: table::size_ratio(tls.kib_per_connection, plain.kib_per_connection),
        conditions: format!(
            "growth of `fleetctl serve`'s RSS while {} devices connect, subscribe and come online, divided by \
             them (buffers, TLS state, session)",
            table::thousands(held as u64)
        ),
    });
    Ok(())
}

async fn measure(held: usize, connects: usize, tls: bool) -> anyhow::Result<Cost> {
    // One more device than the swarm holds: it connects and leaves, over and over.
    let fleet = BenchFleet::start_with(BrokerKind::Embedded, held + 1, "conn", tls).await?;
    let link = fleet.link();
    let mut devices = fleet.devices().to_vec();
    let probe = devices.pop().context("the fleet has no device")?;
    let mut samples = Vec::with_capacity(connects + 1);
    for _ in 0..=connects {
        samples.push(connect_once(&link, &probe).await?);
    }
    samples.remove(0); // the first one warms the broker's authenticator and caches
    samples.sort_by(f64::total_cmp);

    let pid = fleet.controller_pid().context("the controller is not running")?;
    let before = crate::footprint::memory(pid)?.rss_kib;
    let mut swarm = Swarm::start(&link, fleet.trust(), devices, CONNECTS_PER_SECOND);
    let guard = Duration::from_secs(60) + Duration::from_millis(2 * held as u64);
    swarm.wait_ready(guard).await?;
    fleet.wait_online_count(held, guard).await?;
    let after = crate::footprint::memory(pid)?.rss_kib;
    swarm.stop().await;
    fleet.stop().await?;
    Ok(Cost {
        connect_p50: percentile(&samples, 50),
        connect_p99: percentile(&samples, 99),
        kib_per_connection: after.saturating_sub(before) as f64 / held as f64,
    })
}

/// Seconds from opening a connection to its CONNACK; then a clean disconnect.
async fn connect_once(link: &Link, device: &Identity) -> anyhow::Result<f64> {
    let mut options = MqttOptions::new(device.id.as_str(), link.addr.ip().to_string(), link.addr.port());
    options.set_credentials(device.id.as_str(), device.password.as_str()).set_clean_session(true);
    if let Some(tls) = &link.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
    }
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let started = Instant::now();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .context("no CONNACK within 10 s")?
            .context("connecting")?;
        if let Event::Incoming(Packet::ConnAck(_)) = event {
            break;
        }
    }
    let took = started.elapsed().as_secs_f64();
    client.disconnect().await.context("queueing DISCONNECT")?;
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while eventloop.poll().await.is_ok() {} }).await;
    Ok(took)
}
