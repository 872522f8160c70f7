//! The faults an operator or a hostile client meets from outside, against the real
//! `fleetctl serve` process: a busy port, a second `serve` on a running one's data
//! directory, ids the fleet cannot use, idle sockets at a low file limit, and huge
//! client ids sent to fill the log.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fleet_schemas::provision::DeviceConfig;

const FLEETCTL: &str = env!("CARGO_BIN_EXE_fleetctl");

fn fleetctl(data: &Path, args: &[&str]) -> Output {
    Command::new(FLEETCTL).arg("--data-dir").arg(data).args(args).env("USER", "tester").output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// A `fleetctl serve` whose stderr goes to a file.
struct Serve {
    child: Child,
    mqtt: SocketAddr,
    log: PathBuf,
}

impl Serve {
    /// Starts `serve` on a free port, under `sh -c 'ulimit -n FILES'` if `files` is given.
    fn start(data: &Path, files: Option<u32>) -> Serve {
        let log = data.with_extension("log");
        let err = std::fs::File::create(&log).unwrap();
        let mut command = match files {
            Some(files) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {files} && exec \"$0\" \"$@\""), FLEETCTL]);
                sh
            }
            None => Command::new(FLEETCTL),
        };
        let child = command
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mqtt = wait_for(&log, "MQTT on ")
            .split("MQTT on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Serve { child, mqtt, log }
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (hang guard only) until `log` has a line containing `needle`; returns it.
fn wait_for(log: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(needle)) {
            return line.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "hang guard: no {needle:?} in {}:\n{text}", log.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn provision(data: &Path, id: &str, out: &Path, broker: SocketAddr) -> DeviceConfig {
    let done =
        fleetctl(data, &["device", "provision", id, "--out", out.to_str().unwrap(), "--broker", &broker.to_string()]);
    assert!(done.status.success(), "{}", stderr(&done));
    serde_json::from_str(&std::fs::read_to_string(out.join("agent.json")).unwrap()).unwrap()
}

/// The broker counters `serve` reports in `fleetctl status --json`.
fn broker_counters(data: &Path) -> serde_json::Value {
    let out = fleetctl(data, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["controller"]["broker_counters"].clone()
}

/// Connects as the device `config` describes, from loopback; returns the CONNACK code.
fn connect_device(broker: SocketAddr, config: &DeviceConfig) -> u8 {
    let mut connect = rumqtt_connect(config.device_id.as_str(), config.device_id.as_str(), &config.password);
    let mut stream = std::net::TcpStream::connect(broker).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    std::io::Write::write_all(&mut stream, &std::mem::take(&mut connect)).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack[0], 0x20, "not a CONNACK");
    connack[3]
}

/// The bytes of an MQTT 3.1.1 CONNECT (clean session, keep-alive 30 s).
fn rumqtt_connect(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut body = Vec::new();
    let string = |body: &mut Vec<u8>, s: &[u8]| {
        body.extend_from_slice(&u16::try_from(s.len()).unwrap().to_be_bytes());
        body.extend_from_slice(s);
    };
    string(&mut body, b"MQTT");
    body.push(4); // 3.1.1
    body.push(0b1100_0010); // username, password, clean session
    body.extend_from_slice(&30u16.to_be_bytes());
    string(&mut body, client_id.as_bytes());
    string(&mut body, username.as_bytes());
    string(&mut body, password.as_bytes());
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = u8::try_from(len % 128).unwrap();
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Raises this test process's own open-file limit to its hard limit (the floods below
/// hold more sockets than a default soft limit of 1,024).
fn raise_own_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
}

#[test]
fn a_busy_port_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = fleetctl(
        &dir.path().join("data"),
        &["serve", "--listen", &addr, "--api-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains(&format!("cannot listen on {addr}")), "{text}");
    assert!(text.contains("help: another MQTT broker"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn a_second_serve_on_a_running_ones_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Serve::start(&data, None);
    let out = fleetctl(
        &data,
        &["serve", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    let pid = first.child.id();
    assert!(
        text.contains("another fleetctl serve is running on")
            && text.contains(&format!("pid {pid}, MQTT on {}", first.mqtt)),
        "{text}"
    );
    assert!(text.contains("help: one controller per data directory"), "{text}");
    // The first one still serves: a device provisioned now connects to it.
    let config = provision(&data, "gw-1", &dir.path().join("gw-1"), first.mqtt);
    assert_eq!(connect_device(first.mqtt, &config), 0);
}

#[test]
fn ids_the_fleet_cannot_use_are_refused_at_provisioning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for id in ["gw.1", "fleet-controller", "fleet-observer", "_x"] {
        let out = fleetctl(&data, &["device", "provision", id, "--out", dir.path().join("d").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{id}: {}", stderr(&out));
        assert!(stderr(&out).contains("is not a valid device id"), "{id}: {}", stderr(&out));
    }
}

#[test]
fn idle_sockets_at_a_low_file_limit_do_not_keep_a_device_out() {
    raise_own_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = Serve::start(&data, Some(1024));
    // serve sized its connection table to what 1,024 open files hold.
    let line = wait_for(&serve.log, "device connections");
    assert!(line.contains("holds up to 896 device connections"), "{line}");
    let config = provision(&data, "gw-1", &dir.path().join("gw-1"), serve.mqtt);

    // 1,100 idle sockets from one address, never a CONNECT.
    let source = SocketAddr::from(([127, 0, 0, 2], 0));
    let mut idle = Vec::new();
    for _ in 0..1100 {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&source.into()).unwrap();
        socket.connect(&serve.mqtt.into()).unwrap();
        idle.push(socket);
    }
    // A real device still gets in, from its own address.
    assert_eq!(connect_device(serve.mqtt, &config), 0, "the device was refused");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let counters = loop {
        let counters = broker_counters(&data);
        // Every socket accepted: the flood's, the device's, the controller's.
        if counters["accepted_connections"].as_u64().unwrap_or(0) >= 1102 {
            break counters;
        }
        assert!(std::time::Instant::now() < deadline, "hang guard: not every socket accepted yet: {counters}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The address held at most its share at any time: the rest were turned away at once
    // or gave way to its newer sockets, each counted; accept never ran out of files.
    let gone =
        counters["refused_per_address"].as_u64().unwrap() + counters["evicted_unauthenticated"].as_u64().unwrap();
    assert!(gone >= 1100 - 128, "{counters}");
    assert!(counters["open_connections"].as_u64().unwrap() <= 128 + 2, "{counters}");
    let log = std::fs::read_to_string(&serve.log).unwrap();
    assert!(!log.contains("Too many open files"), "{log}");
    drop(idle);
}

#[test]
fn huge_client_ids_cannot_fill_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = Serve::start(&data, None);
    provision(&data, "gw-1", &dir.path().join("gw-1"), serve.mqtt);
    let before = serve.log_len();
    // 300 CONNECTs with a 65,535-byte client id and a wrong password, from 30 addresses
    // (each address's failures slow its own next attempts down).
    let huge = "x".repeat(65_535);
    let threads: Vec<_> = (0..30u8)
        .map(|n| {
            let (huge, broker) = (huge.clone(), serve.mqtt);
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                    socket.bind(&SocketAddr::from(([127, 0, 1, 10 + n], 0)).into()).unwrap();
                    socket.connect(&broker.into()).unwrap();
                    let mut stream: std::net::TcpStream = socket.into();
                    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    std::io::Write::write_all(&mut stream, &rumqtt_connect(&huge, "gw-1", "wrong")).unwrap();
                    let mut connack = [0u8; 4];
                    stream.read_exact(&mut connack).unwrap();
                    assert_eq!(connack, [0x20, 2, 0, 4], "expected bad username or password");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counters = broker_counters(&data);
        if counters["failed_logins"].as_u64() == Some(300) {
            assert!(counters["slowed_logins"].as_u64().unwrap() > 0, "{counters}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "hang guard: {counters}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // 300 refusals of 65 KB ids cost a few lines of bounded fields (about 20 MB before).
    let grown = serve.log_len() - before;
    assert!(grown < 16 * 1024, "the log grew by {grown} bytes");
    let log = std::fs::read_to_string(&serve.log).unwrap();
    assert!(log.contains("bytes in all"), "{log}");
    assert!(!log.contains(&"x".repeat(100)), "a client id reached the log in full");
}
