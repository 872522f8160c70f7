//! A quick load run on one machine: N devices connect through the front door, the
//! controller sends each a QoS 1 job, each device answers with a QoS 1 event.
//!
//! `cargo run --release -p fleet-broker --example fleet_load -- 2000`
//!
//! Every device costs four sockets in this one process (device, front door, front door
//! to engine, engine), so `ulimit -n` bounds N (about ulimit / 4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_broker::{Authenticator, BrokerConfig, Identity};
use fleet_schemas::DeviceId;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

struct OpenDoor;

impl Authenticator for OpenDoor {
    fn authenticate(&self, _client_id: &str, username: &str, _password: &[u8]) -> Option<Identity> {
        if username == "controller" { Some(Identity::Controller) } else { username.parse().ok().map(Identity::Device) }
    }
}

fn options(addr: std::net::SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_credentials(id, "pw");
    o.set_keep_alive(Duration::from_secs(60));
    o.set_clean_session(false);
    o
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let devices: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(1000);
    let broker = fleet_broker::start(BrokerConfig::new(([127, 0, 0, 1], 0).into()), Arc::new(OpenDoor)).await?;
    let addr = broker.local_addr();

    let (controller, mut controller_loop) = AsyncClient::new(options(addr, "controller"), 1024);
    controller.subscribe("fleet/devices/+/events", QoS::AtLeastOnce).await?;
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok(event) = controller_loop.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = event {
                let _ = events_tx.send(());
            }
        }
    });

    let started = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for n in 0..devices {
        let id = DeviceId::new(format!("dev-{n}"))?;
        let (client, mut eventloop) = AsyncClient::new(options(addr, id.as_str()), 16);
        // Measure throughput, not the client's patience: a burst of connects queues.
        eventloop.network_options.set_connection_timeout(60);
        let jobs = format!("fleet/devices/{id}/jobs");
        let events = format!("fleet/devices/{id}/events");
        client.subscribe(&jobs, QoS::AtLeastOnce).await?;
        let ready_tx = ready_tx.clone();
        tokio::spawn(async move {
            loop {
                let event = match eventloop.poll().await {
                    Ok(event) => event,
                    Err(e) => {
                        eprintln!("{events}: connection ended: {e}");
                        return;
                    }
                };
                match event {
                    Event::Incoming(Packet::SubAck(_)) => {
                        let _ = ready_tx.send(());
                    }
                    Event::Incoming(Packet::Publish(job)) => {
                        let _ = client.try_publish(&events, QoS::AtLeastOnce, false, job.payload.to_vec());
                    }
                    _ => {}
                }
            }
        });
    }
    for n in 0..devices {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => return Err("a device failed to connect".into()),
            Err(_) => return Err(format!("stalled after {n} devices subscribed; {:?}", broker.stats()).into()),
        }
    }
    let connected = started.elapsed();
    println!("{devices} devices connected and subscribed in {connected:?}");

    let started = Instant::now();
    for n in 0..devices {
        controller.publish(format!("fleet/devices/dev-{n}/jobs"), QoS::AtLeastOnce, false, vec![0u8; 256]).await?;
    }
    for _ in 0..devices {
        events_rx.recv().await.ok_or("the controller's connection ended")?;
    }
    println!("{devices} jobs out and {devices} events back in {:?}", started.elapsed());
    println!("{:?}", broker.stats());
    broker.shutdown().await;
    Ok(())
}
