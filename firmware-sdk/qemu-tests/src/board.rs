//! A running emulated board whose console can be watched while it runs.
//!
//! The agent image never exits on its own (it runs until the power goes), so a test
//! cannot wait for its end and read its output: it starts the board, watches its
//! semihosting console line by line (`wait_for`), acts, and cuts the power (`kill`)
//! when it wants, which is exactly the power cut the agent must survive.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::qemu;

/// A QEMU process, killed on drop.
pub struct Board {
    child: Child,
    console: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// A QEMU command for the agent image: UART0 on a socket chardev that connects to
/// `127.0.0.1:port` and reconnects every second when the connection drops, as a modem
/// or a serial-to-TCP bridge would (plain `-serial tcp:` gives up after the first drop).
pub fn agent_command(elf: &Path, dir: &Path, port: u16) -> Command {
    let mut command = Command::new(qemu());
    command
        .current_dir(dir)
        .args(["-M", "mps2-an386", "-display", "none", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-chardev")
        .arg(format!("socket,id=link,host=127.0.0.1,port={port},reconnect=1"))
        .args(["-serial", "chardev:link", "-kernel"])
        .arg(elf);
    command
}

impl Board {
    /// Starts `command` (a QEMU command line), collecting stdout and stderr.
    pub fn start(mut command: Command) -> Board {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start qemu-system-arm: {e}"));
        let console = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let console = console.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut text = console.lock().unwrap_or_else(PoisonError::into_inner);
                    text.push_str(&line);
                    text.push('\n');
                }
            }));
        }
        Board { child, console, readers }
    }

    /// Everything the board printed so far.
    pub fn console(&self) -> String {
        self.console.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many console lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.console().lines().filter(|line| line.contains(needle)).count()
    }

    /// Waits until the console has `times` lines containing `needle`; false on timeout
    /// or if QEMU exits first.
    pub fn wait_for_count(&mut self, needle: &str, times: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.count(needle) >= times {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Let the readers drain what it printed last.
                std::thread::sleep(Duration::from_millis(100));
                return self.count(needle) >= times;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits until a console line contains `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_count(needle, 1, timeout)
    }

    /// The last value printed after `prefix` at the start of a line.
    pub fn last_field(&self, prefix: &str) -> Option<String> {
        self.console().lines().rev().find_map(|line| line.strip_prefix(prefix)).map(|v| v.trim().to_string())
    }

    /// Waits for QEMU to exit on its own; its exit code, or `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_readers();
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Cuts the power: kills QEMU wherever the firmware is (mid flash write included).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_readers();
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Display for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- board console\n{}---", self.console())
    }
}
