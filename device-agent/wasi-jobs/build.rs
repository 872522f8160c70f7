//! Builds the example jobs into `OUT_DIR`: `c/*.c` to WASI preview 1 modules with clang
//! and wasi-libc, `rust/` for wasm32-wasip1 and wasm32-wasip2 with a nested cargo,
//! `assemblyscript/` with asc and `javascript/` with ComponentizeJS (both from npm).
//!
//! Why a build script and not committed `.wasm` files: the modules the tests run are the
//! ones the sources in this repository produce, with the toolchain a user has. It fails
//! with what to install when clang cannot target WASI.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const JOBS: &[&str] = &["hello", "csv_summary", "probe", "sleepy", "clocks"];

/// The C stack, in bytes. wasm-ld's default (64 KiB) makes every program at least two
/// 64 KiB pages of memory; a microcontroller gives a job one. 8 KiB is plenty for
/// these programs, and wasi-libc's malloc then works in the rest of the first page.
const STACK_BYTES: u32 = 8 * 1024;

fn main() {
    if let Err(message) = build() {
        eprintln!("error: {message}");
        exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let clang = env::var_os("FLEET_WASI_CC").unwrap_or_else(|| "clang".into());
    let sysroot = env::var_os("FLEET_WASI_SYSROOT").unwrap_or_else(|| "/usr".into());
    println!("cargo:rerun-if-env-changed=FLEET_WASI_CC");
    println!("cargo:rerun-if-env-changed=FLEET_WASI_SYSROOT");
    for job in JOBS {
        let source = manifest_dir.join("c").join(format!("{job}.c"));
        println!("cargo:rerun-if-changed={}", source.display());
        let output = out_dir.join(format!("{job}.wasm"));
        let result = Command::new(&clang)
            .arg("--target=wasm32-wasi")
            .arg("--sysroot")
            .arg(&sysroot)
            .args(["-O2", "-Wall", "-Werror", "-Wl,--strip-all"])
            .arg(format!("-Wl,-z,stack-size={STACK_BYTES}"))
            .arg("-o")
            .arg(&output)
            .arg(&source)
            .output()
            .map_err(|e| {
                format!(
                    "cannot run {} to build the C example jobs: {e} (install clang, lld, wasi-libc and \
                     libclang-rt-dev-wasm32, or set FLEET_WASI_CC)",
                    clang.to_string_lossy()
                )
            })?;
        if !result.status.success() {
            return Err(format!(
                "building {} for WASI failed ({}); clang needs lld, wasi-libc and libclang-rt-dev-wasm32 \
                 (Debian), or FLEET_WASI_SYSROOT pointing at a wasi-sysroot:\n{}",
                source.display(),
                result.status,
                String::from_utf8_lossy(&result.stderr)
            ));
        }
    }
    rust(&manifest_dir, &out_dir)?;
    assemblyscript(&manifest_dir, &out_dir)?;
    javascript(&manifest_dir, &out_dir)
}

/// Builds `assemblyscript/` (csv-summary in AssemblyScript) with the compiler and WASI
/// shim its package-lock.json pins. The stub runtime (a bump allocator the program resets
/// after each line) keeps the module under a board's 16 KiB.
fn assemblyscript(manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let output = out_dir.join("csv_summary_as.wasm");
    let mut args: Vec<OsString> = ["node_modules/assemblyscript/bin/asc.js", "assembly/csv_summary.ts", "--config"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.extend(
        ["node_modules/@assemblyscript/wasi-shim/asconfig.json", "-Oz", "--runtime", "stub", "--noAssert", "-o"]
            .map(OsString::from),
    );
    args.push(output.into_os_string());
    node_project(
        &manifest_dir.join("assemblyscript"),
        &[
            "assembly/csv_summary.ts",
            "node_modules/assemblyscript/bin/asc.js",
            "node_modules/@assemblyscript/wasi-shim/asconfig.json",
        ],
        &args,
    )
}

/// Builds `javascript/` (csv-summary in JavaScript) into a WASI 0.2 component with
/// ComponentizeJS, which its package-lock.json pins: the program inside the SpiderMonkey
/// engine, about 12 MB, so it is for gateways.
fn javascript(manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let output = out_dir.join("csv_summary_js.wasm");
    node_project(
        &manifest_dir.join("javascript"),
        &["csv_summary.js", "build.mjs", "wit", "node_modules/@bytecodealliance/componentize-js/package.json"],
        &[OsString::from("build.mjs"), output.into_os_string()],
    )
}

/// Runs `node ARGS` in the npm project `project`, whose tools `npm ci --prefix PROJECT`
/// installs (`.ci/run` does it). `needs` are the project's files the build reads, its
/// tools among them; paths are relative to the project, as the tools resolve them.
fn node_project(project: &Path, needs: &[&str], args: &[OsString]) -> Result<(), String> {
    println!("cargo:rerun-if-changed={}", project.join("package-lock.json").display());
    for need in needs {
        println!("cargo:rerun-if-changed={}", project.join(need).display());
    }
    if needs.iter().any(|need| !project.join(need).exists()) {
        return Err(format!(
            "the example in {} needs its tools: run `npm ci --prefix {}` (Node.js 18 or later and npm: \
             apt-get install nodejs npm)",
            project.display(),
            project.display()
        ));
    }
    let node = env::var_os("FLEET_NODE").unwrap_or_else(|| "node".into());
    println!("cargo:rerun-if-env-changed=FLEET_NODE");
    let result =
        Command::new(&node).current_dir(project).args(args).output().map_err(|e| {
            format!("cannot run {} for the example in {}: {e}", node.to_string_lossy(), project.display())
        })?;
    if !result.status.success() {
        return Err(format!(
            "building the example in {} failed ({}):\n{}{}",
            project.display(),
            result.status,
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    Ok(())
}

/// Variables that must not reach the nested cargo (flags meant for the host crates).
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

/// Builds `rust/` (csv-summary and probe as std programs) twice with a nested cargo: for
/// `wasm32-wasip1` (core modules, WASI preview 1) and for `wasm32-wasip2` (WASI 0.2
/// components, from the same sources), in its own target directory (the outer cargo
/// holds the lock on its own).
fn rust(manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let crate_dir = manifest_dir.join("rust");
    for watched in ["Cargo.toml", "src"] {
        println!("cargo:rerun-if-changed={}", crate_dir.join(watched).display());
    }
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("wasi-jobs"),
        _ => out_dir.join("wasi-jobs"),
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for (target, suffix) in [("wasm32-wasip1", "rust"), ("wasm32-wasip2", "component")] {
        let mut command = Command::new(&cargo);
        command
            .current_dir(&crate_dir)
            .args(["build", "--release", "--target", target, "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        for name in SCRUBBED_ENV {
            command.env_remove(name);
        }
        let result = command.output().map_err(|e| format!("could not start cargo for the Rust WASI jobs: {e}"))?;
        if !result.status.success() {
            return Err(format!(
                "building {} for {target} failed ({}); is the target installed (rustup target add {target})?\n{}",
                crate_dir.display(),
                result.status,
                String::from_utf8_lossy(&result.stderr)
            ));
        }
        for (built, name) in [("csv-summary-wasi", "csv_summary"), ("probe", "probe")] {
            let built = target_dir.join(target).join("release").join(format!("{built}.wasm"));
            std::fs::copy(&built, out_dir.join(format!("{name}_{suffix}.wasm")))
                .map_err(|e| format!("cannot copy {}: {e}", built.display()))?;
        }
    }
    Ok(())
}
