//! Compiles `c/*.c` to WASI preview 1 modules in `OUT_DIR` with clang and wasi-libc.
//!
//! Why a build script and not committed `.wasm` files: the modules the tests run are the
//! ones the sources in this repository produce, with the toolchain a user has. It fails
//! with what to install when clang cannot target WASI.

use std::env;
use std::path::PathBuf;
use std::process::{Command, exit};

const JOBS: &[&str] = &["hello", "csv_summary", "probe"];

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
            .args(["-O2", "-Wall", "-Werror", "-Wl,--strip-all", "-o"])
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
    Ok(())
}
