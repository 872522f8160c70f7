//! TLS on every link with the real binaries: a `fleetctl` with only its own profile (no
//! access to the data directory) provisions a gateway over the HTTPS API; the
//! `fleet-agent` reaches `fleetctl serve`'s MQTT-over-TLS port through a relay that
//! records every byte; a job pushed over HTTPS runs and its result comes back, and the
//! device's password never crosses the wire in clear. An agent holding another CA never
//! connects and never falls back to plain MQTT; a job for it is canceled over HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_hil::bins::{FLEET_AGENT, FLEETCTL, binary};

fn fleetctl(data: &Path, args: &[&str]) -> Output {
    Command::new(binary(FLEETCTL).unwrap()).arg("--data-dir").arg(data).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `fleetctl serve` on `data` with `args`, stopped when the guard drops.
fn start_serve(data: &Path, args: &[&str]) -> Killed {
    let serve = Command::new(binary(FLEETCTL).unwrap())
        .arg("--data-dir")
        .arg(data)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(serve)
}

/// `fleetctl serve` on `data` with its embedded broker's plain, TLS and API ports on
/// free loopback ports (`serve.lock` says which).
fn start_serve_with_tls(data: &Path) -> Killed {
    start_serve(data, &["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
}

/// A real `fleet-agent` on the config in `dir`, stopped when the guard drops.
fn start_agent(dir: &Path, stderr: impl Into<Stdio>) -> Killed {
    let agent = Command::new(binary(FLEET_AGENT).unwrap())
        .arg("--config")
        .arg(dir.join("agent.json"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    Killed(agent)
}

/// A TCP relay to `upstream` that keeps a copy of every byte the client sends.
fn recording_relay(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(upstream) else { continue };
            let (mut client_r, mut server_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut server_r, mut client_w) = (server, client);
            let record = record.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = client_r.read(&mut buf) {
                    if n == 0 || server_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let _ = server_w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_r, &mut client_w);
                let _ = client_w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, seen)
}

#[test]
fn an_agent_on_mqtt_over_tls_runs_a_job_and_its_password_never_crosses_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _serve = start_serve_with_tls(&data);
    let started = Instant::now();
    let tls_addr: SocketAddr = loop {
        // What the running serve says about itself in its lock file.
        let info: Option<serde_json::Value> =
            std::fs::read_to_string(data.join("serve.lock")).ok().and_then(|t| serde_json::from_str(&t).ok());
        if let Some(info) = info.filter(|i| i["api"].is_string())
            && let Some(addr) = info["mqtt_tls"].as_str()
        {
            break addr.parse().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "serve did not come up with MQTT over TLS");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (relay, seen) = recording_relay(tls_addr);

    // The operator's laptop: a token from the server's admin, the server's CA, a profile.
    let out = fleetctl(&data, &["token", "create", "laptop", "--role", "admin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout);
    let laptop = dir.path().join("laptop");
    std::fs::create_dir_all(&laptop).unwrap();
    std::fs::copy(data.join("tls/ca.pem"), laptop.join("server-ca.pem")).unwrap();
    let lock = std::fs::read_to_string(data.join("serve.lock")).unwrap();
    let url = serde_json::from_str::<serde_json::Value>(&lock).unwrap()["api"].as_str().unwrap().to_string();
    let remote = |args: &[&str]| -> Output {
        Command::new(binary(FLEETCTL).unwrap())
            .current_dir(&laptop)
            .env("FLEET_CONFIG_DIR", laptop.join("config"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = remote(&["login", &url, "--token", &token, "--ca", "server-ca.pem"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let gw = dir.path().join("gw-tls");
    let broker = relay.to_string();
    let out = remote(&["device", "provision", "gw-tls", "--tls", "--broker", &broker, "--out", gw.to_str().unwrap()]);
    assert!(!laptop.join("fleet-data").exists(), "the laptop's fleetctl made a data directory");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(gw.join("ca.pem").is_file());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gw.join("agent.json")).unwrap()).unwrap();
    assert_eq!(config["broker"]["tls"], true);
    let password = config["password"].as_str().unwrap().to_string();

    let _agent = start_agent(&gw, Stdio::null());
    let out = fleetctl(&data, &["device", "wait", "gw-tls", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let module = dir.path().join("hello.wasm");
    std::fs::write(&module, fleet_example_jobs::HELLO).unwrap();
    let out = remote(&["job", "push", module.to_str().unwrap(), "--target", "gw-tls", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = remote(&["job", "results", "--json"]);
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[0]["output"], "hello from gw-tls");

    let wire = seen.lock().unwrap().clone();
    assert!(wire.len() > 1_000, "the relay saw only {} bytes", wire.len());
    assert_eq!(wire[0], 0x16, "the first byte is not a TLS handshake record");
    let find = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(!find(password.as_bytes()), "the device's password crossed the wire in clear");
    assert!(!find(b"MQTT"), "an MQTT CONNECT crossed the wire in clear");
    assert!(!find(b"hello from gw-tls"), "the job's output crossed the wire in clear");

    // An agent that trusts another CA (its ca.pem from another controller) never
    // connects: no fallback to plain MQTT, and serve counts the failed handshakes.
    let other = dir.path().join("other");
    let out = fleetctl(&other, &["device", "provision", "x", "--tls", "--out", dir.path().join("x").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gw2 = dir.path().join("gw-wrong-ca");
    let out = fleetctl(
        &data,
        &["device", "provision", "gw-wrong-ca", "--tls", "--broker", &broker, "--out", gw2.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::copy(other.join("tls/ca.pem"), gw2.join("ca.pem")).unwrap();
    let log = std::fs::File::create(dir.path().join("wrong-ca.log")).unwrap();
    let _agent2 = start_agent(&gw2, log);
    let out = fleetctl(&data, &["device", "wait", "gw-wrong-ca", "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(1), "an agent with the wrong CA came online: {}", text(&out.stderr));
    // A job for it waits; the laptop cancels it over HTTPS.
    let out = remote(&["job", "push", module.to_str().unwrap(), "--target", "gw-wrong-ca"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job = text(&out.stdout);
    let out = remote(&["job", "cancel", &job]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = remote(&["job", "status", &job, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "a canceled job is not a success: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("canceled"), "{}", text(&out.stderr));
    let started = Instant::now();
    loop {
        let log = std::fs::read_to_string(dir.path().join("wrong-ca.log")).unwrap();
        if log.contains("certificate") || log.contains("UnknownIssuer") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the agent never said why it cannot connect:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The broker's counters reach the controller's status with its next heartbeat.
    let started = Instant::now();
    loop {
        let out = fleetctl(&data, &["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if status["controller"]["broker_counters"]["tls_handshake_failures"].as_u64().is_some_and(|n| n >= 1) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no failed TLS handshake counted: {status}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits for `serve.lock` to say where serve's MQTT-over-TLS port is.
fn serve_tls_addr(data: &Path) -> SocketAddr {
    let started = Instant::now();
    loop {
        let info: Option<serde_json::Value> =
            std::fs::read_to_string(data.join("serve.lock")).ok().and_then(|t| serde_json::from_str(&t).ok());
        if let Some(info) = info.filter(|i| i["api"].is_string())
            && let Some(addr) = info["mqtt_tls"].as_str()
        {
            return addr.parse().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "serve did not come up with MQTT over TLS");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the agent's log (`log`) holds `needle`.
fn wait_log(log: &Path, needle: &str) {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{} never said {needle:?}:\n{text}", log.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A device provisioned with `--cert` logs in with its client certificate (mTLS) and
/// holds no password; a certificate from another CA fails the handshake; once the
/// device is given a new certificate, or removed, the old certificate is refused at
/// once, although it still chains to the controller's CA.
#[test]
fn a_device_logs_in_with_its_client_certificate_and_is_locked_out_when_it_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _serve = start_serve_with_tls(&data);
    let broker = serve_tls_addr(&data).to_string();

    let gw = dir.path().join("gw-cert");
    let out = fleetctl(
        &data,
        &["device", "provision", "gw-cert", "--cert", "--broker", &broker, "--out", gw.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["agent.json", "ca.pem", "device.crt", "device.key"] {
        assert!(gw.join(file).is_file(), "provision --cert wrote no {file}");
    }
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(gw.join("device.key")).unwrap().permissions());
    assert_eq!(key_mode & 0o077, 0, "device.key is readable by others");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gw.join("agent.json")).unwrap()).unwrap();
    assert_eq!(config["broker"]["tls"], true, "--cert implies --tls");
    assert_eq!(config["password"], "", "a device with a certificate holds no password");

    let log = dir.path().join("gw-cert.log");
    let agent = start_agent(&gw, std::fs::File::create(&log).unwrap());
    let out = fleetctl(&data, &["device", "wait", "gw-cert", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let module = dir.path().join("hello.wasm");
    std::fs::write(&module, fleet_example_jobs::HELLO).unwrap();
    let out = fleetctl(&data, &["job", "push", module.to_str().unwrap(), "--target", "gw-cert", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A certificate from another controller's CA never gets past the handshake.
    let other = dir.path().join("other");
    let stranger = dir.path().join("stranger");
    let out = fleetctl(&other, &["device", "provision", "gw-x", "--cert", "--out", stranger.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let forged = dir.path().join("gw-forged");
    let out = fleetctl(
        &data,
        &["device", "provision", "gw-forged", "--cert", "--broker", &broker, "--out", forged.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["device.crt", "device.key"] {
        std::fs::copy(stranger.join(file), forged.join(file)).unwrap();
    }
    let forged_log = dir.path().join("gw-forged.log");
    let _forged = start_agent(&forged, std::fs::File::create(&forged_log).unwrap());
    let out = fleetctl(&data, &["device", "wait", "gw-forged", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(1), "a certificate from another CA logged in: {}", text(&out.stderr));

    // Provisioned again (a replaced unit): the running agent with the old certificate is
    // cut off and cannot log in again; the new certificate can.
    let replaced = dir.path().join("gw-cert-new");
    let out = fleetctl(
        &data,
        &[
            "device",
            "provision",
            "gw-cert",
            "--cert",
            "--replace",
            "--broker",
            &broker,
            "--out",
            replaced.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_log(&log, "MQTT link down");
    wait_for_a_refused_login(&data, "the revoked certificate was never refused");
    drop(agent);
    let _new = start_agent(&replaced, Stdio::null());
    let out = fleetctl(&data, &["device", "wait", "gw-cert", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Removed: cut off, and its certificate opens nothing.
    let out = fleetctl(&data, &["device", "remove", "gw-cert"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = fleetctl(&data, &["device", "show", "gw-cert", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["state"], "removed", "{shown}");
    wait_for_a_refused_login(&data, "the removed device's certificate was never refused");
}

/// A board (a plain MQTT client with a microcontroller's credentials, as the firmware
/// logs in) reaches the broker through a gateway's board relay: it logs in with its own
/// password, publishes its status, and nothing of it crosses the gateway's uplink in
/// clear. A relay on a gateway without TLS is refused at start with the reason.
#[test]
fn a_gateway_relays_a_board_to_the_broker_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _serve = start_serve_with_tls(&data);
    let (uplink, seen) = recording_relay(serve_tls_addr(&data));
    let uplink = uplink.to_string();

    let gw = dir.path().join("gw-site");
    let out = fleetctl(
        &data,
        &["device", "provision", "gw-site", "--tls", "--broker", &uplink, "--out", gw.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let board_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(gw.join("agent.toml"), format!("board_relay = \"127.0.0.1:{board_port}\"\n")).unwrap();
    let board = dir.path().join("mcu-site");
    let relay = format!("127.0.0.1:{board_port}");
    let out = fleetctl(
        &data,
        &["device", "provision", "mcu-site", "--kind", "mcu", "--broker", &relay, "--out", board.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(board.join("agent.json")).unwrap()).unwrap();
    let password = config["password"].as_str().unwrap().to_string();

    let _gateway = start_agent(&gw, Stdio::null());
    let out = fleetctl(&data, &["device", "wait", "gw-site", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let relay: SocketAddr = relay.parse().unwrap();
    let client = fleet_hil::MqttClient::connect(relay, "mcu-site", "mcu-site", &password, false).unwrap();
    let status = r#"{"version":1,"device_id":"mcu-site","state":"online","note":"carried by gw-site"}"#;
    assert!(
        client.publish_acked("fleet/devices/mcu-site/status", status.as_bytes()).unwrap(),
        "the broker refused the board's status"
    );
    // A wrong password through the relay is the broker's refusal, not the relay's.
    let wrong = fleet_hil::MqttClient::connect(relay, "mcu-site", "mcu-site", "not-its-password", false);
    assert!(wrong.is_err(), "a wrong password logged in through the relay");

    let wire = seen.lock().unwrap().clone();
    let find = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(find(&[0x16, 0x03]), "no TLS handshake on the uplink");
    assert!(!find(password.as_bytes()), "the board's password crossed the uplink in clear");
    assert!(!find(b"mcu-site"), "the board's id crossed the uplink in clear");
    assert!(!find(b"carried by gw-site"), "the board's status crossed the uplink in clear");

    // Without TLS on the gateway's own link there is nothing to relay over.
    let plain = dir.path().join("gw-plain");
    let out = fleetctl(&data, &["device", "provision", "gw-plain", "--out", plain.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(plain.join("agent.toml"), "board_relay = \"127.0.0.1:0\"\n").unwrap();
    let out =
        Command::new(binary(FLEET_AGENT).unwrap()).arg("--config").arg(plain.join("agent.json")).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("board_relay carries boards to the broker over TLS"), "{}", text(&out.stderr));
}

/// Waits until the broker refuses one more login than it had when called.
fn wait_for_a_refused_login(data: &Path, never: &str) {
    let refused_before = broker_counter(data, "failed_logins");
    let started = Instant::now();
    while broker_counter(data, "failed_logins") <= refused_before {
        assert!(started.elapsed() < Duration::from_secs(30), "{never}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// One of the embedded broker's counters, as serve last reported them.
fn broker_counter(data: &Path, name: &str) -> u64 {
    let out = fleetctl(data, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["controller"]["broker_counters"][name].as_u64().unwrap_or(0)
}

/// mosquitto as the broker, over TLS, configured from what `fleetctl broker acl` writes
/// (its certificate from the controller's CA): `serve --broker mqtts://` and an agent
/// provisioned with `--tls` both reach it, and a job runs. A second listener takes
/// client certificates only (`require_certificate`, `use_identity_as_username`): an
/// agent provisioned with `--cert` logs in there as its certificate names it, and the
/// same ACL holds it to its own topics.
#[test]
fn the_controller_and_an_agent_reach_mosquitto_over_tls() {
    let mosquitto = fleet_hil::mosquitto::Mosquitto::available().expect("mosquitto (CI installs it)");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let broker = format!("127.0.0.1:{port}");
    let gw = dir.path().join("gw-mq");
    let out =
        fleetctl(&data, &["device", "provision", "gw-mq", "--tls", "--broker", &broker, "--out", gw.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cert_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw_cert = dir.path().join("gw-mq-cert");
    let cert_broker = format!("127.0.0.1:{cert_port}");
    let out = fleetctl(
        &data,
        &["device", "provision", "gw-mq-cert", "--cert", "--broker", &cert_broker, "--out", gw_cert.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mq = dir.path().join("mosquitto");
    let out = fleetctl(&data, &["broker", "acl", "--out", mq.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["passwd", "acl", "mosquitto.crt", "mosquitto.key", "ca.pem"] {
        assert!(mq.join(file).is_file(), "broker acl wrote no {file}");
    }
    let conf = format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous false\n\
         password_file {dir}/passwd\n\
         acl_file {dir}/acl\n\
         message_size_limit 262144\n\
         cafile {dir}/ca.pem\n\
         certfile {dir}/mosquitto.crt\n\
         keyfile {dir}/mosquitto.key\n\
         listener {cert_port} 127.0.0.1\n\
         cafile {dir}/ca.pem\n\
         certfile {dir}/mosquitto.crt\n\
         keyfile {dir}/mosquitto.key\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         persistence false\n\
         log_dest stderr\n\
         {user}",
        dir = mq.display(),
        user = if rustix::process::getuid().is_root() { "user root\n" } else { "" },
    );
    std::fs::write(mq.join("mosquitto.conf"), conf).unwrap();
    let log = std::fs::File::create(mq.join("mosquitto.log")).unwrap();
    let broker_process = Command::new(mosquitto)
        .arg("-c")
        .arg(mq.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _mosquitto = Killed(broker_process);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    let url = format!("mqtts://{broker}");
    let _serve = start_serve(&data, &["--broker", &url, "--api-listen", "127.0.0.1:0"]);
    let _agent = start_agent(&gw, Stdio::null());
    let _agent_cert = start_agent(&gw_cert, Stdio::null());
    let out = fleetctl(&data, &["device", "wait", "gw-mq", "gw-mq-cert", "--timeout", "60s"]);
    let mosquitto_log = std::fs::read_to_string(mq.join("mosquitto.log")).unwrap_or_default();
    assert!(out.status.success(), "{}\nmosquitto:\n{mosquitto_log}", text(&out.stderr));
    let module = dir.path().join("hello.wasm");
    std::fs::write(&module, fleet_example_jobs::HELLO).unwrap();
    let out = fleetctl(&data, &["job", "push", module.to_str().unwrap(), "--all", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = fleetctl(&data, &["job", "results", "--json"]);
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut outputs: Vec<&str> = results.as_array().unwrap().iter().filter_map(|r| r["output"].as_str()).collect();
    outputs.sort();
    assert_eq!(outputs, ["hello from gw-mq", "hello from gw-mq-cert"]);
}
