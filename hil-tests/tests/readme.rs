//! README runs as written: every command block of the top-level README, and the
//! quick-start (the first `sh` block) of each crate's README, against the real binaries.
//! A README that drifts from the command line fails here.
//!
//! How a block is taken:
//!
//! - Commands that build or test the workspace itself (`cargo ...`, `bash .ci/run`) or
//!   set the machine up (`rustup target add`, `apt-get install`) cannot run inside this
//!   `cargo test` (CI runs them: `.ci/run` is CI, the demo has `tests/demo.rs`). They are
//!   checked instead: every package, binary, test, bench and target they name exists,
//!   every target and package they install is one `.ci/run` installs. A block fenced
//!   `sh setup` holds only such commands.
//! - Everything else runs, as written, in order: each README in a bash session of its own
//!   (`set -euo pipefail`; a background `&` job lives until the file's last block), in a
//!   scratch directory, with the workspace's `fleetctl` and `fleet-agent` first on the
//!   PATH. Every command must succeed; the session's background jobs are stopped at its
//!   end. The README's commands use the default ports (MQTT 1883, the API 8443), so
//!   they must be free.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one README's commands may take (a job pushed with `--wait` included).
const GUARD: Duration = Duration::from_secs(300);

fn workspace() -> PathBuf {
    fleet_hil::bins::workspace_dir()
}

/// The `sh` blocks of a Markdown file: (info string, body).
fn sh_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let mut body = String::new();
        for inner in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        let info = info.trim().to_string();
        if info == "sh" || info.starts_with("sh ") {
            blocks.push((info, body));
        }
    }
    blocks
}

/// A block's commands: comments dropped, continuation lines joined.
fn commands(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(line.to_string());
    }
    out
}

/// The words of a command, up to a trailing `# comment`, split on `&&`.
fn steps(command: &str) -> Vec<Vec<String>> {
    let without_comment = match command.find(" #") {
        Some(at) => &command[..at],
        None => command,
    };
    without_comment
        .split("&&")
        .map(|step| step.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|words| !words.is_empty())
        .collect()
}

/// Whether a command builds, tests or sets up the machine (checked, not run).
fn is_toolchain(command: &str) -> bool {
    steps(command).iter().any(|words| {
        matches!(words[0].as_str(), "cargo" | "rustup" | "apt-get" | "sudo")
            || (words[0] == "bash" && words.get(1).is_some_and(|w| w == ".ci/run"))
    })
}

/// What a cargo workspace holds: per package, its bins, tests, benches and examples.
#[derive(Default, Debug)]
struct Workspace {
    packages: BTreeMap<String, Targets>,
}

#[derive(Default, Debug)]
struct Targets {
    bins: BTreeSet<String>,
    tests: BTreeSet<String>,
    benches: BTreeSet<String>,
}

/// Reads the packages under `root` (its Cargo.toml files, outside target dirs), with
/// their explicit `[[bin]]`/`[[test]]`/`[[bench]]` names and the ones cargo discovers.
fn read_workspace(root: &Path, skip: &[&str]) -> Workspace {
    let mut workspace = Workspace::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if !name.starts_with('.') && !name.starts_with("target") && !skip.contains(&name.as_str()) {
                    stack.push(path);
                }
            } else if name == "Cargo.toml" {
                read_package(&path, &mut workspace);
            }
        }
    }
    workspace
}

fn read_package(manifest: &Path, workspace: &mut Workspace) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let dir = manifest.parent().unwrap();
    let mut section = String::new();
    let mut package = None;
    let mut targets = Targets::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let Some(value) = line.strip_prefix("name").map(str::trim).and_then(|v| v.strip_prefix('=')) else { continue };
        let value = value.trim().trim_matches('"').to_string();
        match section.as_str() {
            "package" => package = Some(value),
            "bin" => {
                targets.bins.insert(value);
            }
            "test" => {
                targets.tests.insert(value);
            }
            "bench" => {
                targets.benches.insert(value);
            }
            _ => {}
        }
    }
    let Some(package) = package else { return };
    let stems = |sub: &str| -> Vec<String> {
        std::fs::read_dir(dir.join(sub))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let path = e.path();
                        if path.extension().is_some_and(|x| x == "rs") {
                            path.file_stem().map(|s| s.to_string_lossy().to_string())
                        } else if path.join("main.rs").is_file() {
                            Some(e.file_name().to_string_lossy().to_string())
                        } else {
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    targets.bins.extend(stems("src/bin"));
    if dir.join("src/main.rs").is_file() {
        targets.bins.insert(package.clone());
    }
    targets.tests.extend(stems("tests"));
    targets.benches.extend(stems("benches"));
    workspace.packages.insert(package, targets);
}

/// Checks a command that is not run: what it names exists; what it installs, CI installs.
fn check_toolchain(command: &str, readme: &Path, host: &Workspace, firmware: &Workspace, ci: &str) {
    let mut in_firmware = readme.starts_with(workspace().join("firmware-sdk"));
    for words in steps(command) {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["cd", dir] => in_firmware = dir.trim_end_matches('/') == "firmware-sdk",
            ["bash", ".ci/run"] => assert!(workspace().join(".ci/run").is_file(), "{}: no .ci/run", readme.display()),
            ["rustup", "target", "add", targets @ ..] => {
                for target in targets {
                    assert!(
                        ci.contains(target),
                        "{}: `{command}` adds {target}, which .ci/run does not",
                        readme.display()
                    );
                }
            }
            ["apt-get" | "sudo", ..] => {
                let packages = words.iter().skip_while(|w| **w != "install").skip(1).filter(|w| !w.starts_with('-'));
                for package in packages {
                    assert!(
                        ci.contains(package),
                        "{}: `{command}` installs {package}, which .ci/run does not",
                        readme.display()
                    );
                }
            }
            ["cargo", sub, rest @ ..] => {
                let ws = if in_firmware { firmware } else { host };
                check_cargo(sub, rest, ws, command, readme);
            }
            other => {
                panic!("{}: `{command}`: {other:?} is neither a command to run nor a toolchain one", readme.display())
            }
        }
    }
}

fn check_cargo(sub: &str, args: &[&str], ws: &Workspace, command: &str, readme: &Path) {
    let known = ["build", "test", "run", "bench", "check", "clippy", "fmt", "doc", "fw"];
    assert!(known.contains(&sub), "{}: `{command}`: unknown cargo subcommand {sub}", readme.display());
    let args: Vec<&str> = args.iter().copied().take_while(|a| *a != "--").collect();
    let value = |flag: &str| -> Vec<&str> { args.windows(2).filter(|w| w[0] == flag).map(|w| w[1]).collect() };
    let mut packages: Vec<&str> = value("-p");
    packages.extend(value("--package"));
    for package in &packages {
        assert!(ws.packages.contains_key(*package), "{}: `{command}`: no package {package}", readme.display());
    }
    let among: Vec<&Targets> = if packages.is_empty() {
        ws.packages.values().collect()
    } else {
        packages.iter().filter_map(|p| ws.packages.get(*p)).collect()
    };
    for (flag, pick) in [
        ("--bin", (|t: &Targets| &t.bins) as fn(&Targets) -> &BTreeSet<String>),
        ("--test", |t: &Targets| &t.tests),
        ("--bench", |t: &Targets| &t.benches),
    ] {
        for name in value(flag) {
            assert!(
                among.iter().any(|t| pick(t).contains(name)),
                "{}: `{command}`: no {flag} {name} in {packages:?}",
                readme.display()
            );
        }
    }
    for target in value("--target") {
        assert!(
            ["thumbv7em-none-eabihf", "wasm32-unknown-unknown", "wasm32-wasip1"].contains(&target),
            "{}: `{command}`: target {target} is not one the fleet builds for",
            readme.display()
        );
    }
}

/// Runs `script` in a bash session in `dir`; its output on failure.
fn run_session(script: &str, dir: &Path, readme: &Path) {
    use std::os::unix::process::CommandExt as _;
    let bins = fleet_hil::bins::bin_dir();
    let path = format!("{}:{}", bins.display(), std::env::var("PATH").unwrap_or_default());
    let full = format!(
        "set -euo pipefail\n\
         stop() {{ kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }}\n\
         trap stop EXIT\n\
         {script}"
    );
    let log = dir.join("session.log");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&full)
        .current_dir(dir)
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        // `fleetctl login` stores its profile here, not in the user's home.
        .env("FLEET_CONFIG_DIR", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("session.err")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = rustix::process::kill_process_group(
                rustix::process::Pid::from_child(&child),
                rustix::process::Signal::KILL,
            );
            let _ = child.wait();
            panic!("{}: the commands did not finish within {GUARD:?}\n{}", readme.display(), output(dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Nothing it started outlives it.
    let _ =
        rustix::process::kill_process_group(rustix::process::Pid::from_child(&child), rustix::process::Signal::KILL);
    assert!(status.success(), "{}: a command failed ({status}):\n{script}\n---\n{}", readme.display(), output(dir));
}

fn output(dir: &Path) -> String {
    let out = std::fs::read_to_string(dir.join("session.log")).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join("session.err")).unwrap_or_default();
    let tail = |s: &str| s.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    format!("stdout:\n{}\nstderr:\n{}", tail(&out), tail(&err))
}

/// The READMEs and which of their blocks count: all of the top-level one's, the first of
/// each crate's (its quick-start).
fn readmes() -> Vec<(PathBuf, bool)> {
    let root = workspace();
    let mut files = vec![(root.join("README.md"), true)];
    for crate_readme in [
        "controller/README.md",
        "broker/README.md",
        "schemas/README.md",
        "device-agent/agent/README.md",
        "device-agent/core/README.md",
        "device-agent/executor/README.md",
        "device-agent/jobs/README.md",
        "firmware-sdk/README.md",
        "hil-tests/README.md",
        "hil-tests/bench/README.md",
    ] {
        files.push((root.join(crate_readme), false));
    }
    files
}

#[test]
fn every_readme_command_runs_as_written() {
    for (port, what) in [
        (1883, "MQTT's default port"),
        (8883, "MQTT over TLS's default port"),
        (8443, "the operator API's default port"),
    ] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "README's commands use {what} {port}, and something listens on it"
        );
    }
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "README's inference commands use $ORT_DYLIB_PATH (`bash .ci/run` installs the onnxruntime wheel and sets it)"
    );
    let root = workspace();
    let host = read_workspace(&root, &["firmware-sdk", "guest", "fuzz"]);
    let firmware = read_workspace(&root.join("firmware-sdk"), &[]);
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let mut ran = Vec::new();
    for (readme, all_blocks) in readmes() {
        let text = std::fs::read_to_string(&readme).unwrap();
        let blocks = sh_blocks(&text);
        let blocks: Vec<(String, String)> = if all_blocks { blocks } else { blocks.into_iter().take(1).collect() };
        let mut script = String::new();
        for (info, body) in &blocks {
            let commands = commands(body);
            let toolchain: Vec<&String> = commands.iter().filter(|c| is_toolchain(c)).collect();
            assert!(
                toolchain.is_empty() || toolchain.len() == commands.len(),
                "{}: a block mixes commands to run with build or setup commands; split it:\n{body}",
                readme.display()
            );
            if info == "sh setup" || !toolchain.is_empty() {
                for command in &commands {
                    check_toolchain(command, &readme, &host, &firmware, &ci);
                }
            } else {
                assert!(info == "sh", "{}: unknown block kind {info:?}", readme.display());
                script.push_str(body);
            }
        }
        if !script.trim().is_empty() {
            let dir = tempfile::tempdir().unwrap();
            run_session(&script, dir.path(), &readme);
            ran.push(readme.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    // The top-level README's "Using it" and the controller's quick-start are sessions.
    assert!(ran.contains(&"README.md".to_string()) && ran.contains(&"controller/README.md".to_string()), "{ran:?}");
}

#[test]
fn a_toolchain_command_naming_what_does_not_exist_is_caught() {
    let root = workspace();
    let host = read_workspace(&root, &["firmware-sdk", "guest", "fuzz"]);
    let firmware = read_workspace(&root.join("firmware-sdk"), &[]);
    let readme = root.join("README.md");
    check_toolchain("cargo run -p fleet-hil-tests --bin fleet-demo", &readme, &host, &firmware, "");
    for wrong in ["cargo run -p fleet-hil-tests --bin no-such-demo", "cargo test -p no-such-crate", "cargo frobnicate"]
    {
        let caught = std::panic::catch_unwind(|| check_toolchain(wrong, &readme, &host, &firmware, ""));
        assert!(caught.is_err(), "`{wrong}` passed the check");
    }
}
