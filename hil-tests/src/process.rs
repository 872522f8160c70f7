//! Child processes the harness owns: started with their output captured, stopped by
//! signal, never leaked.
//!
//! Why this much care for a test bench:
//! - **Logs are the diagnosis.** Every line a child prints goes to its own log file in
//!   the fleet's directory *and* into memory, so a scenario can wait for a line ("the
//!   agent finished the job while its link was cut") and a failed run can print the tail
//!   of every log. Colours are turned off (`NO_COLOR`) and stripped, so lines match.
//! - **Faults are signals.** A power cut is `SIGKILL` (no chance to flush or say
//!   goodbye); an operator's stop is `SIGINT` (the clean path). Both are sent to the pid
//!   we spawned, never by name.
//! - **Nothing outlives the test.** Dropping a [`ChildProcess`] kills it, which covers a
//!   panicking scenario; and each child gets `SIGKILL` as its parent-death signal, which
//!   covers a harness that is itself killed (a CI timeout), so no agent keeps
//!   reconnecting on a shared machine. The death signal fires when the *thread* that
//!   spawned the child ends, so spawn from the thread that runs the scenario.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::error::{HarnessError, Result, io};

/// The captured output of one process (across its restarts): a log file and the lines
/// in memory.
#[derive(Debug, Clone)]
pub struct Logs {
    path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    file: Arc<Mutex<Option<File>>>,
}

impl Logs {
    /// Logs appended to `path` (created if missing).
    pub fn new(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io(format!("cannot open the log {}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            lines: Arc::new(Mutex::new(Vec::new())),
            file: Arc::new(Mutex::new(Some(file))),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (also used by the harness to mark restarts and faults).
    pub fn push(&self, line: &str) {
        let line = strip_ansi(line);
        if let Some(file) = self.file.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            let _ = writeln!(file, "{line}");
        }
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many lines contain every one of `needles`.
    pub fn count(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }

    /// The first line containing every one of `needles`, if any.
    pub fn find(&self, needles: &[&str]) -> Option<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|line| needles.iter().all(|n| line.contains(n)))
            .cloned()
    }

    /// The index of the first line containing every one of `needles` (to check the
    /// order in which things happened).
    pub fn position(&self, needles: &[&str]) -> Option<usize> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .position(|line| needles.iter().all(|n| line.contains(n)))
    }

    /// The last `n` lines, for a failure report.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    /// Waits until a line contains every one of `needles`; returns it.
    pub fn wait_for(&self, needles: &[&str], guard: Duration) -> Result<String> {
        crate::wait::until(&format!("a line with {needles:?} in {}", self.path.display()), guard, || {
            Ok(self.find(needles).ok_or_else(|| self.tail(1)))
        })
    }

    /// Waits until at least `n` lines contain every one of `needles`.
    pub fn wait_count(&self, needles: &[&str], n: usize, guard: Duration) -> Result<()> {
        crate::wait::until(&format!("{n} lines with {needles:?} in {}", self.path.display()), guard, || {
            let count = self.count(needles);
            Ok(if count >= n { Ok(()) } else { Err(count) })
        })
    }

    fn capture(&self, stream: impl std::io::Read + Send + 'static) {
        let logs = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                match line {
                    Ok(line) => logs.push(&line),
                    Err(_) => break,
                }
            }
        });
    }
}

/// Removes ANSI colour sequences (`ESC [ ... letter`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running child process with captured output; killed when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    logs: Logs,
    exited: Option<ExitStatus>,
}

impl ChildProcess {
    /// Starts `command` (stdin closed, stdout and stderr into `logs`), with `SIGKILL` as
    /// its parent-death signal.
    pub fn spawn(name: &str, mut command: Command, logs: &Logs) -> Result<Self> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("NO_COLOR", "1");
        die_with_parent(&mut command);
        logs.push(&format!("--- harness: starting {name}: {command:?}"));
        let mut child = command.spawn().map_err(|e| HarnessError::Process {
            what: format!("cannot start {name} ({command:?}): {e}"),
            log: logs.path().to_path_buf(),
        })?;
        if let Some(stdout) = child.stdout.take() {
            logs.capture(stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            logs.capture(stderr);
        }
        Ok(Self { name: name.to_string(), child, logs: logs.clone(), exited: None })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its logs.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Whether it is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// How it exited, if it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    fn signal(&self, signal: Signal) {
        if self.exited.is_none()
            && let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// `SIGKILL`, then reaps it: a power cut.
    pub fn kill(&mut self) -> Result<()> {
        if self.exit_status().is_some() {
            return Ok(());
        }
        self.logs.push(&format!("--- harness: SIGKILL {}", self.name));
        self.signal(Signal::KILL);
        let status = self.child.wait().map_err(io(format!("cannot reap {}", self.name)))?;
        self.exited = Some(status);
        Ok(())
    }

    /// `SIGINT` (an operator's Ctrl-C), then waits up to `grace` for it to exit before
    /// killing it. Returns whether it exited on its own, with success.
    pub fn interrupt(&mut self, grace: Duration) -> Result<bool> {
        if let Some(status) = self.exit_status() {
            return Ok(status.success());
        }
        self.logs.push(&format!("--- harness: SIGINT {}", self.name));
        self.signal(Signal::INT);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Some(status) = self.exit_status() {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill()?;
        Ok(false)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Asks the kernel to `SIGKILL` the child when the thread that spawned it ends.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before `exec`. It makes one `prctl`
    // system call, which is async-signal-safe, and neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(std::io::Error::from)
        });
    }
}

/// Runs `command` to its end, with a hang guard: (exit status, stdout, stderr).
pub fn run_to_end(mut command: Command, guard: Duration) -> Result<(ExitStatus, String, String)> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("NO_COLOR", "1");
    die_with_parent(&mut command);
    let shown = format!("{command:?}");
    let mut child = command.spawn().map_err(io(format!("cannot run {shown}")))?;
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io(format!("cannot wait for {shown}")))? {
            break status;
        }
        if start.elapsed() >= guard {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HarnessError::Timeout { what: shown, after: guard, last: "still running; killed".into() });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let join = |handle: Option<std::thread::JoinHandle<String>>| handle.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok((status, join(stdout), join(stderr)))
}

fn read_all(mut stream: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"), "2026  INFO x");
    }

    #[test]
    fn a_child_is_logged_signalled_and_reaped() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else { panic!("no temp dir") };
        let Ok(logs) = Logs::new(&dir.path().join("sleep.log")) else { panic!("no log") };
        let mut command = Command::new("sh");
        command.args(["-c", "echo ready; exec sleep 30"]);
        let Ok(mut child) = ChildProcess::spawn("sleeper", command, &logs) else { panic!("no child") };
        assert!(logs.wait_for(&["ready"], Duration::from_secs(10)).is_ok());
        assert!(child.is_running());
        assert!(child.kill().is_ok());
        assert!(!child.is_running());
        let text = std::fs::read_to_string(logs.path()).unwrap_or_default();
        assert!(text.contains("ready") && text.contains("SIGKILL sleeper"), "{text}");
    }
}
