//! Modules that break the ABI's rules, and the small print of the ABI, checked on both
//! runtimes with hand-written modules.

use fleet_executor::{ExecutorConfig, Job, NoInputs, OutputCaps};
use fleet_schemas::{FailReason, Limits};

use crate::support::{BACKENDS, Executors, config, expect_failure, strings};

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

fn unsupported(module: &[u8], entry: &str, expected: &str) {
    let mut ex = Executors::new();
    let job = Job { entry, ..Job::new(module) };
    for backend in BACKENDS {
        let (message, report) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::Unsupported);
        assert!(message.contains(expected), "{backend:?}: {message:?} lacks {expected:?}");
        assert!(report.fuel_used < 1000, "{backend:?}: {} fuel used by a job that never ran", report.fuel_used);
        ex.assert_still_usable(backend);
    }
}

const OK_BODY: &str = r#"(memory (export "memory") 1) (func (export "run") (result i32) i32.const 0)"#;

#[test]
fn bytes_that_are_not_a_module_are_unsupported() {
    unsupported(b"\0asm\x01\0\0\0garbage", "", "invalid module");
    unsupported(b"hello", "", "invalid module");
}

#[test]
fn a_foreign_import_is_unsupported() {
    let m = wat(&format!(r#"(module (import "env" "abort" (func)) {OK_BODY})"#));
    unsupported(&m, "", "env.abort");
    // WASI functions beyond what the fleet offers (src/wasi.rs), or mistyped.
    let m = wat(&format!(
        r#"(module (import "wasi_snapshot_preview1" "sock_recv" (func (param i32 i32 i32 i32 i32 i32) (result i32))) {OK_BODY})"#
    ));
    unsupported(&m, "", "wasi_snapshot_preview1.sock_recv");
    let m = wat(&format!(r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i64))) {OK_BODY})"#));
    unsupported(&m, "", "wasi_snapshot_preview1.fd_write");
    let m = wat(&format!(r#"(module (import "fleet" "open_socket" (func)) {OK_BODY})"#));
    unsupported(&m, "", "fleet.open_socket");
}

#[test]
fn a_mistyped_fleet_import_is_unsupported() {
    let m = wat(&format!(r#"(module (import "fleet" "log" (func (param i64 i32))) {OK_BODY})"#));
    unsupported(&m, "", "fleet.log");
    let m = wat(&format!(r#"(module (import "fleet" "arg_count" (global i32)) {OK_BODY})"#));
    unsupported(&m, "", "fleet.arg_count");
}

#[test]
fn a_missing_or_mistyped_entry_is_unsupported() {
    unsupported(&wat(&format!("(module {OK_BODY})")), "main", "no function `main`");
    let m = wat(r#"(module (memory (export "memory") 1) (func (export "run") (param i32)))"#);
    unsupported(&m, "", "() -> i32");
}

#[test]
fn a_module_without_memory_is_unsupported() {
    unsupported(&wat(r#"(module (func (export "run") (result i32) i32.const 0))"#), "", "no memory named `memory`");
}

#[test]
fn simd_is_refused_on_both_runtimes_alike() {
    let m = wat(r#"(module (memory (export "memory") 1)
        (func (export "run") (result i32) v128.const i64x2 0 0 i64x2.extract_lane 0 i32.wrap_i64))"#);
    unsupported(&m, "", "invalid module");
}

#[test]
fn a_nonzero_return_is_a_failure_with_the_code() {
    let m = wat(r#"(module (memory (export "memory") 1) (func (export "go") (result i32) i32.const 7))"#);
    let job = Job { entry: "go", ..Job::new(&m) };
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let (message, _) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::Trap);
        assert_eq!(message, "job returned 7");
    }
}

#[test]
fn a_plain_trap_keeps_its_message_and_the_output_so_far() {
    let m = wat(r#"(module (import "fleet" "output" (func $out (param i32 i32) (result i32)))
        (memory (export "memory") 1) (data (i32.const 0) "partial")
        (func (export "run") (result i32) (drop (call $out (i32.const 0) (i32.const 7))) unreachable))"#);
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let (message, report) = expect_failure(backend, ex.run(backend, &Job::new(&m), NoInputs), FailReason::Trap);
        assert!(message.contains("unreachable"), "{backend:?}: {message}");
        assert_eq!(report.output, b"partial");
    }
}

#[test]
fn args_and_copy_out_follow_the_documented_conventions() {
    // Writes arg_count, arg_len(0), arg_len(5), arg_read(0, 0, 2) (the full length) and
    // the first two bytes it copied, as one output record.
    let m = wat(r#"(module
        (import "fleet" "arg_count" (func $count (result i32)))
        (import "fleet" "arg_len" (func $len (param i32) (result i32)))
        (import "fleet" "arg_read" (func $read (param i32 i32 i32) (result i32)))
        (import "fleet" "output" (func $out (param i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "run") (result i32)
            (i32.store (i32.const 100) (call $count))
            (i32.store (i32.const 104) (call $len (i32.const 0)))
            (i32.store (i32.const 108) (call $len (i32.const 5)))
            (i32.store (i32.const 112) (call $read (i32.const 0) (i32.const 116) (i32.const 2)))
            (drop (call $out (i32.const 100) (i32.const 18)))
            i32.const 0))"#);
    let args = strings(&["alpha", "b"]);
    let job = Job::new(&m).with_args(&args);
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let out = ex.run(backend, &job, NoInputs).unwrap().output;
        let word = |i: usize| i32::from_le_bytes(out[i..i + 4].try_into().unwrap());
        assert_eq!((word(0), word(4), word(8), word(12)), (2, 5, -1, 5), "{backend:?}");
        assert_eq!(&out[16..18], b"al", "{backend:?}");
    }
}

#[test]
fn output_and_logs_are_capped_by_host_settings() {
    let mut config: ExecutorConfig = config();
    config.caps = OutputCaps { max_output_bytes: 5, max_log_lines: 0, max_log_line_bytes: 10 };
    let mut ex = Executors::with(config);
    for backend in BACKENDS {
        let report = ex.run(backend, &Job::new(fleet_example_jobs::HELLO), NoInputs);
        // hello checks that all of its output was accepted, and fails when it was not.
        let (message, report) = expect_failure(backend, report, FailReason::Trap);
        assert_eq!(message, "job returned 2");
        assert_eq!(report.output, b"hello");
        assert!(report.logs.iter().any(|l| l.contains("1 more log line(s) dropped")), "{:?}", report.logs);
        assert!(report.logs.iter().any(|l| l.contains("output cut at the cap of 5 bytes")), "{:?}", report.logs);
    }
}

#[test]
fn spec_limits_default_and_are_lowered_to_the_ceilings() {
    let config = config();
    let resolved = config.resolve(Limits { fuel: 0, memory_pages: 1_000_000, timeout_ms: 0 });
    assert_eq!(resolved.fuel, config.default_limits.fuel);
    assert_eq!(resolved.memory_pages, config.max_limits.memory_pages);
    assert_eq!(resolved.timeout_ms, Some(config.default_limits.timeout_ms));
    assert!(config.caps_fit_event());
    let mcu = ExecutorConfig::microcontroller(config.device_id.clone());
    assert_eq!(mcu.resolve(Limits { fuel: 5, memory_pages: 0, timeout_ms: 0 }).timeout_ms, None);
    assert!(mcu.caps_fit_event());
}
