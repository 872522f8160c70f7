//! The well-behaved example jobs produce the right results on both runtimes.

use std::path::PathBuf;

use fleet_executor::{FileInputs, Job, MemoryInputs, NoInputs};
use fleet_schemas::{FailReason, JobId, JobSpec, Limits, ModuleSource, Requirements};

use crate::support::{BACKENDS, DEVICE, Executors, TEST_FUEL, expect_failure, strings, sum_compute};

#[test]
fn hello_outputs_the_device_id_and_logs() {
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let report = ex.run(backend, &Job::new(fleet_example_jobs::HELLO), NoInputs).unwrap();
        assert_eq!(String::from_utf8_lossy(&report.output), format!("hello from {DEVICE}"), "{backend:?}");
        assert_eq!(report.logs.len(), 1, "{backend:?}: {:?}", report.logs);
        assert!(report.logs[0].contains(DEVICE), "{backend:?}: {:?}", report.logs);
        assert!(report.fuel_used > 0 && report.fuel_used < TEST_FUEL, "{backend:?}: fuel {}", report.fuel_used);
    }
}

const READINGS: &str = "timestamp,value\n\
    1700000000,21.5\n\
    1700000060,22.25\n\
    # a comment\n\
    \n\
    1700000120,19.75\n\
    1700000180,not-a-number\n\
    1700000240,-3\n";

/// What csv-summary must print for `values` (same formatting rules as the guest).
fn expected_summary(values: &[f64], skipped: u64) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    format!("count={} min={min} max={max} mean={mean:.3} skipped={skipped}", values.len())
}

fn readings_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readings.csv");
    std::fs::write(&path, READINGS).unwrap();
    (dir, path)
}

#[test]
fn csv_summary_summarises_a_file_input() {
    let (_dir, path) = readings_file();
    let files = FileInputs::new([("readings".to_string(), path)]);
    let listed = strings(&["readings"]);
    let job = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&listed);
    let mut ex = Executors::new();
    // The header and `not-a-number` are skipped; comments and blank lines ignored.
    let expected = expected_summary(&[21.5, 22.25, 19.75, -3.0], 2);
    for backend in BACKENDS {
        let report = ex.run(backend, &job, files.clone()).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(String::from_utf8_lossy(&report.output), expected, "{backend:?}");
    }
}

#[test]
fn csv_summary_streams_a_large_input_from_memory() {
    // Far larger than the job's buffers and its single page of memory.
    let mut csv = String::new();
    let values: Vec<f64> = (0..2_000).map(|i| f64::from(i % 97) * 0.5 - 10.0).collect();
    for (i, v) in values.iter().enumerate() {
        csv.push_str(&format!("{},{v}\n", 1_700_000_000 + i));
    }
    let inputs = MemoryInputs::new().with("readings", csv.into_bytes());
    let listed = strings(&["readings"]);
    let job = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&listed).with_limits(Limits {
        fuel: 500_000_000,
        memory_pages: 0,
        timeout_ms: 0,
    });
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let report = ex.run(backend, &job, inputs.clone()).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(String::from_utf8_lossy(&report.output), expected_summary(&values, 0), "{backend:?}");
    }
}

#[test]
fn an_input_the_spec_does_not_list_cannot_be_opened() {
    let (_dir, path) = readings_file();
    let files = FileInputs::new([("readings".to_string(), path)]);
    let other = strings(&["temperature"]);
    let mut ex = Executors::new();
    for listed in [&[][..], &other[..]] {
        let job = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(listed);
        for backend in BACKENDS {
            let (message, report) = expect_failure(backend, ex.run(backend, &job, files.clone()), FailReason::Trap);
            assert_eq!(message, "job returned 2", "{backend:?}");
            assert!(report.logs.iter().any(|l| l.contains("`readings` is not available")), "{:?}", report.logs);
        }
    }
}

#[test]
fn a_listed_input_the_device_lacks_cannot_be_opened() {
    let listed = strings(&["readings"]);
    let job = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&listed);
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let (message, _) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::Trap);
        assert_eq!(message, "job returned 2", "{backend:?}");
    }
}

#[test]
fn sum_compute_gives_identical_output_on_both_runtimes() {
    let args = strings(&["20000"]);
    let job = Job::new(fleet_example_jobs::SUM_COMPUTE).with_args(&args);
    let mut ex = Executors::new();
    let outputs: Vec<Vec<u8>> = BACKENDS.iter().map(|&b| ex.run(b, &job, NoInputs).unwrap().output).collect();
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(String::from_utf8_lossy(&outputs[0]), sum_compute(20_000));
}

#[test]
fn sum_compute_rejects_a_bad_argument() {
    let args = strings(&["many"]);
    let job = Job::new(fleet_example_jobs::SUM_COMPUTE).with_args(&args);
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let (message, report) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::Trap);
        assert_eq!(message, "job returned 2");
        assert!(report.logs[0].contains("\"many\""), "{:?}", report.logs);
    }
}

#[test]
fn a_job_spec_with_an_inline_module_runs_as_is() {
    let spec = JobSpec {
        job_id: JobId([7; 16]),
        module: ModuleSource::Inline(fleet_example_jobs::SUM_COMPUTE.to_vec()),
        entry: String::new(),
        args: strings(&["1000"]),
        limits: Limits { fuel: 0, memory_pages: 0, timeout_ms: 0 },
        requirements: Requirements::default(),
        inputs: Vec::new(),
    };
    let job = Job::inline(&spec).unwrap();
    assert_eq!(job.entry_name(), "run");
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let report = ex.run(backend, &job, NoInputs).unwrap();
        assert_eq!(String::from_utf8_lossy(&report.output), sum_compute(1000));
    }
}

#[test]
fn the_module_cache_hits_on_the_second_run() {
    let mut ex = Executors::new();
    let job = Job::new(fleet_example_jobs::HELLO);
    ex.run(crate::support::Backend::Wasmtime, &job, NoInputs).unwrap();
    let first = ex.wasmtime.cache_stats();
    assert_eq!((first.hits, first.misses, first.entries), (0, 1, 1));
    ex.run(crate::support::Backend::Wasmtime, &job, NoInputs).unwrap();
    let second = ex.wasmtime.cache_stats();
    assert_eq!((second.hits, second.misses, second.entries), (1, 1, 1));

    ex.run(crate::support::Backend::Wasmi, &job, NoInputs).unwrap();
    ex.run(crate::support::Backend::Wasmi, &job, NoInputs).unwrap();
    let wasmi = ex.wasmi.cache_stats();
    assert_eq!((wasmi.hits, wasmi.misses, wasmi.entries), (1, 1, 1));

    // Different bytes, different key.
    let args = strings(&["10"]);
    ex.run(crate::support::Backend::Wasmtime, &Job::new(fleet_example_jobs::SUM_COMPUTE).with_args(&args), NoInputs)
        .unwrap();
    assert_eq!(ex.wasmtime.cache_stats().misses, 2);
    ex.wasmtime.clear_cache();
    assert_eq!(ex.wasmtime.cache_stats().entries, 0);
}

#[test]
fn every_example_job_is_a_small_real_module() {
    for (name, bytes) in fleet_example_jobs::all() {
        assert_eq!(&bytes[..4], b"\0asm", "{name}");
        assert!(bytes.len() < 64 * 1024, "{name} is {} bytes: too big for an inline envelope", bytes.len());
    }
    assert_eq!(fleet_example_jobs::get("hello"), Some(fleet_example_jobs::HELLO));
}
