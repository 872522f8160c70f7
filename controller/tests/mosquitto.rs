//! The fleet on a real mosquitto: a `mosquitto` child process configured with the
//! `passwd` and `acl` files `fleetctl broker acl` writes, the controller in external-broker
//! mode, and the simulated devices of `common::sim` connecting with their provisioned
//! credentials. And, on both brokers (embedded and mosquitto), that a device cannot
//! speak for another one nor read what is sent to it.
//!
//! Every wait is "until this is true" with a hang guard; nothing asserts on time. What
//! must *not* happen is checked after a later legitimate message that travels the same
//! path (same connections, same broker) has arrived.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sim::{GUARD, Mode, Sim, signed_event, wait_until};
use common::*;

use fleet_controller::datadir::DataDir;
use fleet_controller::model::{ExecState, RolloutParams, Target};
use fleet_controller::server::{self, BrokerChoice, RunningController, ServeConfig};
use fleet_schemas::{EventKind, JobState, RunReport};
use rumqttc::{QoS, SubscribeReasonCode};

/// A `mosquitto` child process on a loopback port, killed when dropped.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Mosquitto {
    /// Writes `passwd` and `acl` with `fleetctl broker acl` (the code path operators use)
    /// and starts mosquitto with them on an ephemeral port.
    fn start(dir: &Path, data: &DataDir) -> Mosquitto {
        let binary = mosquitto_binary();
        let files = dir.join("mosquitto");
        let out = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
            .arg("--data-dir")
            .arg(data.path())
            .args(["broker", "acl", "--out"])
            .arg(&files)
            .output()
            .unwrap();
        assert!(out.status.success(), "fleetctl broker acl: {}", String::from_utf8_lossy(&out.stderr));

        // The port is free when we ask; if another process takes it before mosquitto binds
        // it, mosquitto exits and we try another one.
        for attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let config = dir.join(format!("mosquitto-{attempt}.conf"));
            let log = dir.join(format!("mosquitto-{attempt}.log"));
            std::fs::write(
                &config,
                format!(
                    "listener {port} 127.0.0.1\n\
                     allow_anonymous false\n\
                     password_file {passwd}\n\
                     acl_file {acl}\n\
                     persistence false\n\
                     message_size_limit 262144\n\
                     # mosquitto started as root switches to this user: stay who we are, to read the files.\n\
                     user {user}\n\
                     log_dest stderr\n\
                     log_type all\n",
                    passwd = files.join("passwd").display(),
                    acl = files.join("acl").display(),
                    user = current_user(),
                ),
            )
            .unwrap();
            let child = Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));
            let mut mosquitto = Mosquitto { child, addr, log };
            if mosquitto.wait_listening() {
                return mosquitto;
            }
            eprintln!("mosquitto did not start on port {port}:\n{}", mosquitto.log_text());
        }
        panic!("mosquitto did not start (5 attempts); see the logs above");
    }

    /// Until the port accepts connections (true) or mosquitto exits (false).
    fn wait_listening(&mut self) -> bool {
        let deadline = std::time::Instant::now() + GUARD;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if TcpStream::connect(self.addr).is_ok() {
                return true;
            }
            assert!(std::time::Instant::now() < deadline, "hang guard: mosquitto never listened:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn external(&self) -> BrokerChoice {
        BrokerChoice::External { host: self.addr.ip().to_string(), port: self.addr.port() }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("mosquitto log:\n{}", self.log_text());
        }
    }
}

/// `mosquitto` on the PATH or in the usual sbin directories; a clear failure if absent.
fn mosquitto_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("install mosquitto: apt-get install mosquitto"))
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_fleet_runs_on_mosquitto_with_the_acl_files_fleetctl_writes() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["gw-1", "gw-2", "gw-3", "gw-4", "gw-5"];
    let (data, keys) = fleet(dir.path(), &names);
    let mosquitto = Mosquitto::start(dir.path(), &data);
    let controller = server::start(ServeConfig::new(data.path(), mosquitto.external())).await.unwrap();
    let mut sims = Vec::new();
    for name in names {
        sims.push(Sim::start(name, mosquitto.addr, keys.clone(), Mode::Auto).await);
    }

    let mut cli = data.open().unwrap();
    // Online first: an envelope sent before the controller has seen a device's online
    // status is sent once more when it does (harmless, and dropped by sequence number on
    // the device, but this test counts the copies).
    wait_all_online(&cli).await;
    let job = add_job(&mut cli, 1, Target::All, &names, RolloutParams::default());
    assert_every_device_succeeded(&cli, &job, &mut sims).await;

    controller.shutdown().await.unwrap();
    let counters = cli.counters().unwrap();
    assert!(counters.values().all(|n| *n == 0), "nothing was malformed: {counters:?}");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broker {
    Embedded,
    Mosquitto,
}

mod a_device_cannot_speak_for_another_and_records_are_unchanged {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_the_embedded_broker() {
        cross_talk_is_impossible(Broker::Embedded).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_mosquitto() {
        cross_talk_is_impossible(Broker::Mosquitto).await;
    }
}

/// gw-a, with its own credentials, publishes events on gw-b's events topic (one signed
/// with gw-b's own key, which would be accepted were it delivered, one with gw-a's) and
/// subscribes to gw-b's jobs and acks. The broker must drop the publishes (mosquitto:
/// silently; the embedded broker: by cutting gw-a off) and must not deliver gw-b's
/// messages to gw-a (SUBACK 0x80, or granted and nothing delivered).
async fn cross_talk_is_impossible(broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = fleet(dir.path(), &["gw-a", "gw-b"]);
    let (controller, addr, _mosquitto): (RunningController, SocketAddr, Option<Mosquitto>) = match broker {
        Broker::Embedded => {
            let config = ServeConfig::new(data.path(), BrokerChoice::Embedded { listen: ([127, 0, 0, 1], 0).into() });
            let controller = server::start(config).await.unwrap();
            let addr = controller.broker_addr();
            (controller, addr, None)
        }
        Broker::Mosquitto => {
            let mosquitto = Mosquitto::start(dir.path(), &data);
            let controller = server::start(ServeConfig::new(data.path(), mosquitto.external())).await.unwrap();
            (controller, mosquitto.addr, Some(mosquitto))
        }
    };
    let mut a = Sim::start("gw-a", addr, keys.clone(), Mode::Auto).await;
    let mut b = Sim::start("gw-b", addr, keys.clone(), Mode::Manual).await;
    let mut cli = data.open().unwrap();

    // gw-a runs a job of its own: later events on it are gw-a's legitimate messages.
    let own = add_job(&mut cli, 1, Target::Devices(vec![device_id("gw-a")]), &["gw-a"], RolloutParams::default());
    a.wait_acked(3).await;

    // (b) gw-a subscribes to gw-b's jobs and acks (after its own two SUBACKs).
    wait_until("gw-a's own SUBACKs", || a.subacks.lock().unwrap().len() >= 2).await;
    let before = a.subacks.lock().unwrap().len();
    for topic in [b.topics.device_jobs(&b.id), b.topics.device_acks(&b.id)] {
        a.client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    }
    wait_until("gw-a's SUBACKs for gw-b's topics", || a.subacks.lock().unwrap().len() >= before + 2).await;
    let codes: Vec<SubscribeReasonCode> = a.subacks.lock().unwrap()[before..].concat();
    assert_eq!(codes.len(), 2);
    if broker == Broker::Embedded {
        assert_eq!(codes, [SubscribeReasonCode::Failure; 2], "the embedded broker refuses the filters");
    }
    // mosquitto may refuse (0x80) or grant and then deliver nothing: what matters is below.

    // The controller sends gw-b a job; gw-b accepts it.
    let job = add_job(&mut cli, 2, Target::Devices(vec![device_id("gw-b")]), &["gw-b"], RolloutParams::default());
    wait_until("gw-b's envelope", || !b.envelopes().is_empty()).await;
    b.send(job, 1, EventKind::Accepted).await;
    b.wait_acked(1).await; // acked only after the event's transaction committed
    let b_before = cli.executions(&job).unwrap();
    assert_eq!(b_before[0].state, ExecState::Accepted);
    let events_before = cli.event_count(&b.id).unwrap();

    // (a) gw-a speaks for gw-b: a terminal event signed with gw-b's key (authentic, were it
    // delivered), and one signed with its own key (refused and counted, were it delivered).
    // QoS 0: a QoS 1 publish the embedded broker cuts off would be sent again on every
    // reconnect of gw-a's persistent session.
    let forged = signed_event(
        &device_key("gw-b"),
        &b.id,
        job,
        1,
        2,
        EventKind::Succeeded(RunReport { output: b"forged by gw-a".to_vec(), ..RunReport::default() }),
    );
    let impostor = signed_event(
        &a.key,
        &b.id,
        job,
        1,
        3,
        EventKind::Succeeded(RunReport { output: b"signed by gw-a".to_vec(), ..RunReport::default() }),
    );
    for bytes in [forged, impostor] {
        a.client.publish(b.topics.device_events(&b.id), QoS::AtMostOnce, false, bytes).await.unwrap();
    }

    // Barriers. gw-a's next legitimate event follows its publishes on the same connection
    // (or, on the embedded broker, the next one) through the same broker to the same
    // controller subscription; its ack is published by the controller after gw-b's
    // envelope and reaches gw-a after anything the broker had queued for gw-a before it.
    a.send(own, 1, EventKind::Started).await;
    a.wait_acked(a.last_event()).await;
    // gw-b's own next event on its events topic (seq 2, a kind already seen: changes nothing).
    b.send(job, 1, EventKind::Accepted).await;
    b.wait_acked(2).await;

    assert!(a.foreign.lock().unwrap().is_empty(), "gw-a received gw-b's messages: {:?}", a.foreign.lock().unwrap());
    assert_eq!(cli.executions(&job).unwrap(), b_before, "gw-b's execution is unchanged");
    assert_eq!(cli.event_count(&b.id).unwrap(), events_before + 1, "only gw-b's own event was recorded");
    assert_eq!(cli.acked_through(&b.id).unwrap(), 2);

    // gw-b finishes; its result, not the forged one, is what the store keeps.
    let report = RunReport { output: b"ok from gw-b".to_vec(), ..RunReport::default() };
    b.send(job, 1, EventKind::Succeeded(report)).await;
    b.wait_acked(3).await;
    wait_until("gw-b's job to complete", || cli.job(&job).unwrap().unwrap().state == JobState::Completed).await;
    let row = &cli.executions(&job).unwrap()[0];
    assert_eq!((row.state, row.output.as_deref()), (ExecState::Succeeded, Some(&b"ok from gw-b"[..])));
    assert_eq!(b.envelopes().len(), 1);
    assert!(a.foreign.lock().unwrap().is_empty());

    // Stopping flushes the counters: had the impostor event been delivered it would be
    // counted as malformed.
    controller.shutdown().await.unwrap();
    let counters = cli.counters().unwrap();
    assert!(counters.values().all(|n| *n == 0), "nothing malformed reached the controller: {counters:?}");
}
