//! mosquitto on loopback, with password authentication, and `mosquitto_sub`/
//! `mosquitto_pub` as the test's client: the interoperability test's broker.
//!
//! mosquitto is the reference MQTT broker (3.1.1 and 5) and is one `apt-get install`
//! away; the agent tests run against the fleet's own broker ([`crate::fleet`]), and this
//! one checks the firmware's session against an implementation that is not ours in any
//! part.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::find_program;

const INSTALL_HINT: &str = "install it with `apt-get install -y mosquitto mosquitto-clients` (Debian/Ubuntu)";

fn program(name: &str) -> PathBuf {
    find_program(name)
        .unwrap_or_else(|| panic!("{name} is not installed: the MQTT firmware test runs a real broker; {INSTALL_HINT}"))
}

/// A mosquitto process, killed on drop.
pub struct Broker {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Broker {
    /// Starts mosquitto on `port` with these users (name, password) and no anonymous
    /// access; waits until it accepts connections.
    pub fn start(dir: &Path, port: u16, users: &[(&str, &str)]) -> Broker {
        let passwd = dir.join("passwd");
        for (i, (user, password)) in users.iter().enumerate() {
            let mut command = Command::new(program("mosquitto_passwd"));
            if i == 0 {
                command.arg("-c");
            }
            let status = command.arg("-b").arg(&passwd).args([user, password]).stdout(Stdio::null()).status();
            assert!(status.is_ok_and(|s| s.success()), "mosquitto_passwd failed for {user}");
        }
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\n",
            passwd.display()
        );
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        let log = std::fs::File::create(dir.join("mosquitto.log")).ok();
        let child = Command::new(program("mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.as_ref().and_then(|f| f.try_clone().ok()).map_or(Stdio::null(), Stdio::from))
            .stderr(log.map_or(Stdio::null(), Stdio::from))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mosquitto: {e}"));
        let broker = Broker { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "mosquitto did not listen on {port} within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    /// The retained message on `topic`, if one arrives within `wait`.
    pub fn retained(&self, user: (&str, &str), topic: &str, wait: Duration) -> Option<Vec<u8>> {
        let secs = wait.as_secs().max(1).to_string();
        let output = Command::new(program("mosquitto_sub"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-u", user.0, "-P", user.1])
            .args(["-t", topic, "-C", "1", "-W", &secs, "--retained-only"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let mut message = output.stdout;
        // mosquitto_sub ends each message with a newline.
        if message.last() == Some(&b'\n') {
            message.pop();
        }
        (output.status.success() && !message.is_empty()).then_some(message)
    }

    /// Waits up to `timeout` for the retained message on `topic` to satisfy `ok`;
    /// returns the last one seen.
    pub fn wait_retained(
        &self,
        user: (&str, &str),
        topic: &str,
        timeout: Duration,
        ok: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout {
            if let Some(message) = self.retained(user, topic, Duration::from_secs(1)) {
                if ok(&message) {
                    return Some(message);
                }
                last = Some(message);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last
    }

    /// Publishes `payload` on `topic` at QoS 1.
    pub fn publish(&self, user: (&str, &str), topic: &str, payload: &[u8]) {
        let child = Command::new(program("mosquitto_pub"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-u", user.0, "-P", user.1])
            .args(["-t", topic, "-q", "1", "-s"])
            .stdin(Stdio::piped())
            .spawn();
        let mut child = child.unwrap_or_else(|e| panic!("cannot start mosquitto_pub: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(payload);
        }
        let status = child.wait();
        assert!(status.is_ok_and(|s| s.success()), "mosquitto_pub to {topic} failed");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
