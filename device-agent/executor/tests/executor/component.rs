//! WASI 0.2 components on wasmtime: the same std Rust csv-summary as the preview 1
//! module, built for `wasm32-wasip2`; the sandbox (files, exit codes) and the bounds a
//! component meets; and a microcontroller's refusal.

use fleet_executor::{ExecutorConfig, Job, MemoryInputs, NoInputs, WasmiExecutor, WasmtimeExecutor};
use fleet_schemas::{DeviceId, FailReason, Limits};

use crate::support::{Backend, config, expect_failure, strings};

const READINGS: &[u8] = b"timestamp,value\n1,20.5\n2,21.25\n# a comment\n\n3,19.75\n4,not-a-number\n5,22\n";

fn readings() -> MemoryInputs {
    MemoryInputs::new().with("readings", READINGS)
}

fn gateway() -> WasmtimeExecutor {
    WasmtimeExecutor::new(config()).unwrap()
}

#[test]
fn a_rust_component_prints_what_the_preview_1_module_and_the_fleet_abi_job_print() {
    assert!(fleet_executor::is_component(fleet_wasi_jobs::CSV_SUMMARY_COMPONENT));
    assert!(!fleet_executor::is_component(fleet_wasi_jobs::CSV_SUMMARY_RUST));
    assert!(fleet_executor::WASI_VERSIONS.contains(&"0.2"));
    let inputs = strings(&["readings"]);
    let executor = gateway();
    let limits = Limits { fuel: 1_000_000_000, memory_pages: 0, timeout_ms: 0 };
    let component = Job::new(fleet_wasi_jobs::CSV_SUMMARY_COMPONENT).with_inputs(&inputs).with_limits(limits);
    let from_component = executor.run(&component, readings()).unwrap_or_else(|f| panic!("{f}"));
    let abi = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&inputs);
    let from_abi = executor.run(&abi, readings()).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(String::from_utf8_lossy(&from_component.output), "count=4 min=19.75 max=22 mean=20.875 skipped=2");
    assert_eq!(from_component.output, from_abi.output);
    assert_eq!(from_component.logs, from_abi.logs);
    assert!(from_component.fuel_used > 0);
    // Run again: the linked component comes from the cache, and the result is the same.
    let again = executor.run(&component, readings()).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(again.output, from_component.output);
}

#[test]
fn a_javascript_component_prints_what_the_rust_one_prints_under_the_default_time_bound() {
    assert!(fleet_executor::is_component(fleet_wasi_jobs::CSV_SUMMARY_JS));
    let inputs = strings(&["readings"]);
    let executor = gateway();
    // The SpiderMonkey engine's snapshot is 145 pages of memory; the time bound is the
    // device's default, and compiling 12 MB of engine (seconds, more in a debug build)
    // is not counted against it.
    let limits = Limits { fuel: 1_000_000_000, memory_pages: 256, timeout_ms: 0 };
    let job = Job::new(fleet_wasi_jobs::CSV_SUMMARY_JS).with_inputs(&inputs).with_limits(limits);
    let from_js = executor.run(&job, readings()).unwrap_or_else(|f| panic!("{f}"));
    let rust = Job::new(fleet_wasi_jobs::CSV_SUMMARY_COMPONENT).with_inputs(&inputs).with_limits(limits);
    let from_rust = executor.run(&rust, readings()).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(String::from_utf8_lossy(&from_js.output), "count=4 min=19.75 max=22 mean=20.875 skipped=2");
    assert_eq!(from_js.output, from_rust.output);
    assert_eq!(from_js.logs, from_rust.logs);

    // Without its input it fails as the Rust one does, with its message.
    let bare = Job::new(fleet_wasi_jobs::CSV_SUMMARY_JS).with_limits(limits);
    let (message, report) = expect_failure(Backend::Wasmtime, executor.run(&bare, readings()), FailReason::Trap);
    assert_eq!(message, "exited with code 1");
    assert_eq!(report.logs.first().map(String::as_str), Some("data input `readings` is not available"));

    // In the default memory it cannot start, and says why.
    let small = Limits { memory_pages: 16, ..limits };
    let job = Job::new(fleet_wasi_jobs::CSV_SUMMARY_JS).with_inputs(&inputs).with_limits(small);
    let (message, _) = expect_failure(Backend::Wasmtime, executor.run(&job, readings()), FailReason::OutOfMemory);
    assert!(message.contains("145 pages"), "{message}");
}

#[test]
fn a_component_without_its_input_fails_with_its_exit_status_and_its_stderr() {
    let executor = gateway();
    let limits = Limits { fuel: 1_000_000_000, memory_pages: 0, timeout_ms: 0 };
    // The device has `readings`, but the spec does not list it: there is no such file.
    let job = Job::new(fleet_wasi_jobs::CSV_SUMMARY_COMPONENT).with_limits(limits);
    let (message, report) = expect_failure(Backend::Wasmtime, executor.run(&job, readings()), FailReason::Trap);
    // WASI 0.2's `exit` carries success or failure, not a number: a failure is code 1.
    assert_eq!(message, "exited with code 1");
    assert_eq!(report.logs, ["data input `readings` is not available"]);
}

#[test]
fn a_component_sees_no_file_outside_its_inputs_and_cannot_write_among_them() {
    let executor = gateway();
    let args = strings(&["escape"]);
    let inputs = strings(&["readings"]);
    let limits = Limits { fuel: 1_000_000_000, memory_pages: 0, timeout_ms: 0 };
    let job = Job::new(fleet_wasi_jobs::PROBE_COMPONENT).with_args(&args).with_inputs(&inputs).with_limits(limits);
    let report = executor.run(&job, readings()).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(
        String::from_utf8_lossy(&report.output),
        "/etc/passwd: error\n/inputs/../etc/passwd: error\n../etc/passwd: error\n/proc/self/environ: error\ncreate: error\n"
    );
}

#[test]
fn a_component_meets_the_same_bounds_as_a_module() {
    let executor = gateway();
    let run = |args: &[&str], limits: Limits| {
        let args = strings(args);
        executor.run(&Job::new(fleet_wasi_jobs::PROBE_COMPONENT).with_args(&args).with_limits(limits), NoInputs)
    };
    let (message, _) = expect_failure(
        Backend::Wasmtime,
        run(&["loop"], Limits { fuel: 20_000_000, memory_pages: 0, timeout_ms: 0 }),
        FailReason::OutOfFuel,
    );
    assert!(message.contains("fuel"), "{message}");
    let (message, _) = expect_failure(
        Backend::Wasmtime,
        run(&["loop"], Limits { fuel: 1_000_000_000_000, memory_pages: 0, timeout_ms: 300 }),
        FailReason::Timeout,
    );
    assert!(message.contains("300 ms"), "{message}");
    let (message, report) = expect_failure(
        Backend::Wasmtime,
        run(&["bomb"], Limits { fuel: 1_000_000_000, memory_pages: 64, timeout_ms: 0 }),
        FailReason::OutOfMemory,
    );
    assert!(report.logs.iter().any(|l| l.contains("holding")), "{message}: {report:?}");

    // Output past the cap is cut, and the job still succeeds (it is not trapped).
    let cap = config().caps.max_output_bytes;
    let many = (cap * 2).to_string();
    let report = run(&["print", &many], Limits { fuel: 10_000_000_000, memory_pages: 0, timeout_ms: 0 })
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(report.output.len(), cap);
    assert!(report.output.iter().all(|&b| b == b'x'));
    assert!(report.logs.iter().any(|l| l.contains("output")), "{:?}", report.logs);
}

#[test]
fn a_microcontroller_refuses_a_component_before_it_runs() {
    let mut board = WasmiExecutor::new(ExecutorConfig::microcontroller(DeviceId::new("mcu-1").unwrap())).unwrap();
    let job = Job::new(fleet_wasi_jobs::CSV_SUMMARY_COMPONENT);
    let (message, report) = expect_failure(Backend::Wasmi, board.run(&job, NoInputs), FailReason::Unsupported);
    assert!(message.contains("WASI 0.2 component"), "{message}");
    assert!(message.contains("wasm32-wasip1"), "{message}");
    assert_eq!(report.fuel_used, 0);
}
