//! `fleetctl examples DIR`: the example jobs, written where a newcomer can push them.
//!
//! The modules are compiled from the Rust sources in `device-agent/jobs/guest/` when
//! fleetctl is built (crate `fleet-example-jobs`), so the ones written here are always
//! the ones this fleetctl was built with; nothing binary is committed. A small sensor
//! file comes with them, for the jobs that read the data input `readings`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::Outcome;

/// What is written: file name, bytes, what it does and how to push it.
fn files() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        (
            "hello.wasm",
            fleet_example_jobs::HELLO.to_vec(),
            "outputs `hello from DEVICE`: fleetctl job push DIR/hello.wasm --all --wait",
        ),
        (
            "csv-summary.wasm",
            fleet_example_jobs::CSV_SUMMARY.to_vec(),
            "summarises the device's data input `readings`: ... --input readings (fleet-agent --data readings=FILE)",
        ),
        (
            "sum-compute.wasm",
            fleet_example_jobs::SUM_COMPUTE.to_vec(),
            "a deterministic compute loop, the same output everywhere: ... --arg 1000000",
        ),
        (
            "window-classify.wasm",
            fleet_example_jobs::WINDOW_CLASSIFY.to_vec(),
            "classifies `readings` with an ONNX model through wasi-nn (gateways with --onnxruntime): ... --input readings",
        ),
        (
            "readings.csv",
            readings(),
            "24 sensor readings (timestamp,value), rising: fleet-agent --data readings=DIR/readings.csv",
        ),
    ]
}

/// A rising series of `timestamp,value` lines.
fn readings() -> Vec<u8> {
    (0..24)
        .map(|i| format!("{},{:.1}\n", 1_790_000_000 + 60 * i, 40.0 + 0.8 * f64::from(i)))
        .collect::<String>()
        .into_bytes()
}

pub fn write(dir: &Path) -> Outcome {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes, what) in files() {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {:<40} {}", path.display(), what.replace("DIR", &dir.display().to_string()));
    }
    Ok(ExitCode::SUCCESS)
}
