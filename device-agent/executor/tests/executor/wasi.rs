//! WASI preview 1 jobs: plain C programs (wasi-libc), on both backends, seeing the same
//! files, caps and errors.

use fleet_executor::{Job, MemoryInputs, NoInputs};
use fleet_schemas::{FailReason, Limits};

use crate::support::{BACKENDS, Executors, expect_failure, strings};

const READINGS: &[u8] = b"timestamp,value\n1,20.5\n2,21.25\n# a comment\n\n3,19.75\n4,not-a-number\n5,22\n";

fn readings() -> MemoryInputs {
    MemoryInputs::new().with("readings", READINGS)
}

#[test]
fn a_c_hello_prints_its_arguments_to_the_output_and_logs_stderr() {
    let args = strings(&["a", "b c"]);
    let job = Job::new(fleet_wasi_jobs::HELLO).with_args(&args);
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let report = ex.run(backend, &job, NoInputs).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(String::from_utf8_lossy(&report.output), "hello from C a b c\n", "{backend:?}");
        assert_eq!(report.logs, ["hello job in C running with 2 argument(s)"], "{backend:?}");
        assert!(report.fuel_used > 0);
    }
}

#[test]
fn csv_summary_in_c_and_in_std_rust_gives_the_fleet_abi_jobs_output_on_both_runtimes() {
    let inputs = strings(&["readings"]);
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let c = Job::new(fleet_wasi_jobs::CSV_SUMMARY).with_inputs(&inputs);
        let rust = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&inputs);
        let rust_wasi = Job::new(fleet_wasi_jobs::CSV_SUMMARY_RUST).with_inputs(&inputs);
        let from_rust_wasi = ex.run(backend, &rust_wasi, readings()).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        let from_c = ex.run(backend, &c, readings()).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        let from_rust = ex.run(backend, &rust, readings()).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(String::from_utf8_lossy(&from_c.output), String::from_utf8_lossy(&from_rust.output), "{backend:?}");
        assert_eq!(String::from_utf8_lossy(&from_c.output), "count=4 min=19.75 max=22 mean=20.875 skipped=2");
        assert_eq!(from_c.logs, from_rust.logs, "{backend:?}");
        assert_eq!(from_rust_wasi.output, from_rust.output, "{backend:?}: std Rust on WASI");
        assert_eq!(from_rust_wasi.logs, from_rust.logs, "{backend:?}: std Rust on WASI");
        let assemblyscript = Job::new(fleet_wasi_jobs::CSV_SUMMARY_AS).with_inputs(&inputs);
        let from_as = ex.run(backend, &assemblyscript, readings()).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(from_as.output, from_rust.output, "{backend:?}: AssemblyScript");
        assert_eq!(from_as.logs, from_rust.logs, "{backend:?}: AssemblyScript");
    }
}

#[test]
fn an_input_the_spec_does_not_list_is_not_there() {
    // The device has `readings`, the spec lists nothing: fopen fails, exit code 2.
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let job = Job::new(fleet_wasi_jobs::CSV_SUMMARY);
        let (message, report) = expect_failure(backend, ex.run(backend, &job, readings()), FailReason::Trap);
        assert_eq!(message, "exited with code 2", "{backend:?}");
        assert_eq!(report.logs, ["data input `readings` is not available"], "{backend:?}");
    }
}

#[test]
fn files_outside_the_inputs_are_errors_from_wasi_not_files() {
    let args = strings(&["escape"]);
    let inputs = strings(&["readings"]);
    let job = Job::new(fleet_wasi_jobs::PROBE).with_args(&args).with_inputs(&inputs);
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let report = ex.run(backend, &job, readings()).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        let output = String::from_utf8_lossy(&report.output).into_owned();
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 6, "{backend:?}: {output}");
        for line in &lines[..5] {
            assert!(!line.ends_with("OPENED"), "{backend:?}: {line}");
        }
        assert!(lines[0].starts_with("r /etc/passwd: "), "{output}");
        assert!(lines[3].ends_with("Read-only file system"), "{backend:?}: {output}");
        assert!(lines[4].ends_with("Read-only file system"), "{backend:?}: {output}");
        assert_eq!(lines[5], "r /inputs/readings: OPENED", "{backend:?}");
    }
}

#[test]
fn an_exit_code_is_the_outcome() {
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let seven = strings(&["exit", "7"]);
        let (message, _) = expect_failure(
            backend,
            ex.run(backend, &Job::new(fleet_wasi_jobs::PROBE).with_args(&seven), NoInputs),
            FailReason::Trap,
        );
        assert_eq!(message, "exited with code 7", "{backend:?}");
        let zero = strings(&["exit", "0"]);
        ex.run(backend, &Job::new(fleet_wasi_jobs::PROBE).with_args(&zero), NoInputs)
            .unwrap_or_else(|f| panic!("{backend:?}: exit 0 is success: {f}"));
    }
}

#[test]
fn a_c_loop_and_a_c_memory_bomb_meet_the_usual_bounds() {
    let mut ex = Executors::new();
    let spin = strings(&["loop"]);
    let bomb = strings(&["bomb"]);
    for backend in BACKENDS {
        let fuel = Job::new(fleet_wasi_jobs::PROBE).with_args(&spin);
        expect_failure(backend, ex.run(backend, &fuel, NoInputs), FailReason::OutOfFuel);
        let clock = Job::new(fleet_wasi_jobs::PROBE).with_args(&spin).with_limits(Limits {
            fuel: 1_000_000_000_000,
            memory_pages: 0,
            timeout_ms: 300,
        });
        expect_failure(backend, ex.run(backend, &clock, NoInputs), FailReason::Timeout);
        let memory = Job::new(fleet_wasi_jobs::PROBE).with_args(&bomb).with_limits(Limits {
            fuel: 500_000_000,
            memory_pages: 8,
            timeout_ms: 0,
        });
        let (message, report) = expect_failure(backend, ex.run(backend, &memory, NoInputs), FailReason::OutOfMemory);
        assert!(message.contains("memory cap of 8 pages"), "{backend:?}: {message}");
        assert!(report.logs.iter().any(|l| l.starts_with("malloc refused after")), "{backend:?}: {:?}", report.logs);
        ex.assert_still_usable(backend);
    }
}

#[test]
fn a_wasi_call_the_fleet_does_not_offer_is_refused_before_anything_runs() {
    let module = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")))"#,
    )
    .unwrap();
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let (message, report) =
            expect_failure(backend, ex.run(backend, &Job::new(&module), NoInputs), FailReason::Unsupported);
        assert!(message.contains("wasi_snapshot_preview1.sock_accept"), "{backend:?}: {message}");
        assert_eq!(report.fuel_used, 0, "{backend:?}: something ran");
        // The same from C: wasi-libc's sleep() is poll_oneoff.
        let (message, report) = expect_failure(
            backend,
            ex.run(backend, &Job::new(fleet_wasi_jobs::SLEEPY), NoInputs),
            FailReason::Unsupported,
        );
        assert!(message.contains("wasi_snapshot_preview1.poll_oneoff"), "{backend:?}: {message}");
        assert!(report.output.is_empty() && report.fuel_used == 0, "{backend:?}: something ran");
    }
}

/// What a microcontroller gives a job: one 64 KiB page of memory. The C examples are
/// built with an 8 KiB stack, so they run in it, malloc and stdio included.
#[test]
fn the_c_examples_run_in_the_one_page_of_memory_a_microcontroller_gives() {
    let one_page = Limits { fuel: 0, memory_pages: 1, timeout_ms: 0 };
    let inputs = strings(&["readings"]);
    let args = strings(&["on", "a", "board"]);
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let hello = Job::new(fleet_wasi_jobs::HELLO).with_args(&args).with_limits(one_page);
        let report = ex.run(backend, &hello, NoInputs).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(String::from_utf8_lossy(&report.output), "hello from C on a board\n", "{backend:?}");
        let csv = Job::new(fleet_wasi_jobs::CSV_SUMMARY).with_inputs(&inputs).with_limits(one_page);
        let report = ex.run(backend, &csv, readings()).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(String::from_utf8_lossy(&report.output), "count=4 min=19.75 max=22 mean=20.875 skipped=2");
        let csv = Job::new(fleet_wasi_jobs::CSV_SUMMARY_AS).with_inputs(&inputs).with_limits(one_page);
        let report = ex.run(backend, &csv, readings()).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(String::from_utf8_lossy(&report.output), "count=4 min=19.75 max=22 mean=20.875 skipped=2");
    }
    // A board takes modules up to 16 KiB (fleet-firmware-sdk's Settings::microcontroller).
    assert!(fleet_wasi_jobs::HELLO.len() <= 16 * 1024, "hello in C is {} bytes", fleet_wasi_jobs::HELLO.len());
    assert!(fleet_wasi_jobs::SLEEPY.len() <= 16 * 1024);
    assert!(fleet_wasi_jobs::CLOCKS.len() <= 16 * 1024);
    let assemblyscript = fleet_wasi_jobs::CSV_SUMMARY_AS.len();
    assert!(assemblyscript <= 16 * 1024, "csv-summary in AssemblyScript is {assemblyscript} bytes");
}

/// The AssemblyScript csv-summary frees each line's strings after the line (its runtime
/// is a bump allocator it resets), so a long input runs in the same one page.
#[test]
fn the_assemblyscript_job_reads_a_long_input_in_one_page_of_memory() {
    let mut long = b"timestamp,value\n".to_vec();
    for i in 0..20_000 {
        long.extend_from_slice(
            format!("{i},{}\n", if i % 4 == 3 { "x".to_string() } else { (i % 7).to_string() }).as_bytes(),
        );
    }
    long.extend_from_slice(format!("0,{}\n", "1".repeat(200)).as_bytes());
    let inputs = strings(&["readings"]);
    let one_page = Limits { fuel: 1_000_000_000, memory_pages: 1, timeout_ms: 0 };
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let c = Job::new(fleet_wasi_jobs::CSV_SUMMARY)
            .with_inputs(&inputs)
            .with_limits(Limits { memory_pages: 0, ..one_page });
        let from_c = ex
            .run(backend, &c, MemoryInputs::new().with("readings", long.as_slice()))
            .unwrap_or_else(|f| panic!("{f}"));
        let job = Job::new(fleet_wasi_jobs::CSV_SUMMARY_AS).with_inputs(&inputs).with_limits(one_page);
        let report = ex
            .run(backend, &job, MemoryInputs::new().with("readings", long.as_slice()))
            .unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(String::from_utf8_lossy(&report.output), String::from_utf8_lossy(&from_c.output), "{backend:?}");
        assert!(String::from_utf8_lossy(&report.output).contains("skipped=5002"), "{backend:?}");
    }
}

#[test]
fn a_gateway_gives_a_wasi_job_a_monotonic_clock_a_wall_clock_and_random_bytes() {
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let job = Job::new(fleet_wasi_jobs::CLOCKS);
        let report = ex.run(backend, &job, NoInputs).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(String::from_utf8_lossy(&report.output), "monotonic: ok\nrealtime: ok\nrandom: ok\n", "{backend:?}");
    }
}

/// What the wasmi executor gives a WASI job where it has no std (the firmware): its
/// timer as the monotonic and CPU clocks, counted from the run's start, at millisecond
/// resolution; no wall clock and no randomness. The board itself runs `clocks` in
/// firmware-sdk's QEMU test.
#[test]
fn a_microcontroller_gives_a_wasi_job_its_timer_since_the_run_began_and_nothing_else() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use fleet_executor::Clock;
    use fleet_executor::wasi::{RunClock, WasiClock};

    struct Timer(AtomicU64);
    impl Clock for Timer {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }
    let timer = Arc::new(Timer(AtomicU64::new(5_000)));
    let clock = RunClock::new(timer.clone(), 5_000);
    assert_eq!(clock.time_ns(1), Some(0));
    timer.0.store(5_042, Ordering::Relaxed);
    for id in 1..=3 {
        assert_eq!(clock.time_ns(id), Some(42_000_000), "clock {id}");
    }
    assert_eq!(clock.time_ns(0), None, "no wall clock");
    assert_eq!(clock.time_ns(4), None, "no such clock");
    assert_eq!(clock.resolution_ns(), 1_000_000);
    assert!(!clock.random(&mut [0; 8]));
}

#[test]
fn output_past_the_cap_is_cut_and_said_so() {
    let many: Vec<String> = (0..4000).map(|i| format!("argument-{i}")).collect();
    let limits = Limits { fuel: 500_000_000, memory_pages: 0, timeout_ms: 0 };
    let job = Job::new(fleet_wasi_jobs::HELLO).with_args(&many).with_limits(limits);
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let report = ex.run(backend, &job, NoInputs).unwrap_or_else(|f| panic!("{backend:?}: {f}"));
        assert_eq!(report.output.len(), 16 * 1024, "{backend:?}");
        assert!(report.logs.iter().any(|l| l.contains("output cut")), "{backend:?}: {:?}", report.logs);
    }
}
