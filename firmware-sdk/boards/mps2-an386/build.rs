//! Puts `memory.x` where cortex-m-rt's `link.x` finds it and links the firmware
//! binaries with `link.x`, so the board folder builds from anywhere without a
//! `.cargo/config.toml`.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    if let Err(error) = fs::write(out.join("memory.x"), include_bytes!("memory.x")) {
        panic!("cannot write memory.x to OUT_DIR: {error}");
    }
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("TARGET").is_ok_and(|t| t.starts_with("thumb")) {
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
        // Fold identical functions (monomorphizations that compiled to the same code):
        // about 5 KiB of the agent image.
        println!("cargo:rustc-link-arg-bins=--icf=all");
    }
}
