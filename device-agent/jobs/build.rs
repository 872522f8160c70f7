//! Builds the guest workspace (`guest/`) for `wasm32-unknown-unknown` and copies the
//! job modules into `OUT_DIR`, where `src/lib.rs` embeds them.
//!
//! Why a nested cargo and not committed `.wasm` files: the modules the tests and
//! benchmarks run are always the ones the sources in this repository produce.
//!
//! Why it looks the way it does:
//! * its own `--target-dir` (under `$CARGO_TARGET_DIR/wasm-jobs`, else `OUT_DIR`): the
//!   outer cargo holds the lock on its own build directory while this script runs, so
//!   sharing it would deadlock;
//! * `$CARGO` and `$RUSTC`: the same toolchain as the outer build;
//! * RUSTFLAGS and friends removed: flags meant for the host crates (or clippy's
//!   wrapper) must not leak into the guests, whose flags live in
//!   `guest/.cargo/config.toml` (read because the nested cargo runs from `guest/`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const TARGET: &str = "wasm32-unknown-unknown";

/// The jobs: the name `src/lib.rs` knows them by, and the file cargo writes.
const JOBS: &[(&str, &str)] = &[
    ("hello", "hello.wasm"),
    ("csv-summary", "csv_summary.wasm"),
    ("sum-compute", "sum_compute.wasm"),
    ("infinite-loop", "infinite_loop.wasm"),
    ("memory-grab", "memory_grab.wasm"),
    ("deep-recursion", "deep_recursion.wasm"),
    ("bad-pointer", "bad_pointer.wasm"),
    ("window-classify", "window_classify.wasm"),
];

/// Variables that must not reach the nested build.
const SCRUBBED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
];

fn main() {
    if let Err(message) = build() {
        eprintln!("error: {message}");
        exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let guest = manifest_dir.join("guest");
    watch(&guest)?;
    check_target()?;

    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("wasm-jobs"),
        _ => out_dir.join("wasm-jobs"),
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&guest)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(guest.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    let result = command.output().map_err(|e| format!("could not start cargo for the guest jobs: {e}"))?;
    if !result.status.success() {
        return Err(format!(
            "building the guest jobs in {} failed ({}):\n{}{}",
            guest.display(),
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        ));
    }

    let built = target_dir.join(TARGET).join("release");
    for (name, file) in JOBS {
        let from = built.join(file);
        fs::copy(&from, out_dir.join(file))
            .map_err(|e| format!("job `{name}`: cannot copy {}: {e}", from.display()))?;
    }
    Ok(())
}

/// Fails early, with the fix, when the wasm32 standard library is not installed (the
/// nested build would otherwise fail with "can't find crate for `core`").
fn check_target() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let installed = libdir.and_then(|dir| fs::read_dir(dir).ok()).is_some_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
    });
    if installed {
        Ok(())
    } else {
        Err(format!(
            "the {TARGET} target is not installed, and the example jobs are built for it.\n\
             run: rustup target add {TARGET}"
        ))
    }
}

/// Rebuilds when anything in the guest workspace changes, except its build output: each
/// top-level entry is watched (cargo scans a watched folder recursively), `target/` is
/// not. A new job crate is noticed through `guest/Cargo.toml`, which must list it.
fn watch(guest: &Path) -> Result<(), String> {
    let entries = fs::read_dir(guest).map_err(|e| format!("cannot read {}: {e}", guest.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", guest.display()))?;
        if entry.file_name() != "target" {
            println!("cargo:rerun-if-changed={}", entry.path().display());
        }
    }
    Ok(())
}

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}
