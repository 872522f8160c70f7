//! Hostile jobs fail with the right reason on both runtimes, cost bounded time, and
//! leave the executor usable.

use std::time::{Duration, Instant};

use fleet_executor::{Job, NoInputs, StopSignal, WasmiExecutor};
use fleet_schemas::{FailReason, Limits};

use crate::support::{BACKENDS, Backend, Executors, TEST_FUEL, config, expect_failure};

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let mut ex = Executors::new();
    let job = Job::new(fleet_example_jobs::INFINITE_LOOP);
    for backend in BACKENDS {
        let (message, report) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::OutOfFuel);
        assert!(message.contains("fuel"), "{message}");
        assert!(report.fuel_used >= TEST_FUEL * 9 / 10, "{backend:?}: used {}", report.fuel_used);
        assert_eq!(report.logs, vec!["about to spin forever".to_string()], "{backend:?}: logs before the failure");
        ex.assert_still_usable(backend);
    }
}

#[test]
fn an_infinite_loop_with_plenty_of_fuel_times_out() {
    let mut ex = Executors::new();
    let limits = Limits { fuel: u64::MAX / 2, memory_pages: 0, timeout_ms: 200 };
    let job = Job::new(fleet_example_jobs::INFINITE_LOOP).with_limits(limits);
    for backend in BACKENDS {
        let started = Instant::now();
        let (message, report) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::Timeout);
        let took = started.elapsed();
        assert!(message.contains("200 ms"), "{message}");
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5), "{backend:?}: {took:?}");
        assert!(report.duration_ms >= 200, "{backend:?}: {}", report.duration_ms);
        ex.assert_still_usable(backend);
    }
}

#[test]
fn a_stop_signal_ends_a_running_job() {
    let mut ex = Executors::new();
    for backend in BACKENDS {
        let stop = StopSignal::new();
        let limits = Limits { fuel: u64::MAX / 2, memory_pages: 0, timeout_ms: 60_000 };
        let job = Job::new(fleet_example_jobs::INFINITE_LOOP).with_limits(limits).with_stop(stop.clone());
        let raiser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stop.stop();
        });
        let started = Instant::now();
        let (message, _) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::Timeout);
        assert_eq!(message, "stopped by the agent");
        assert!(started.elapsed() < Duration::from_secs(10), "{backend:?}: {:?}", started.elapsed());
        raiser.join().unwrap();
        ex.assert_still_usable(backend);
    }
}

#[test]
fn without_a_clock_wasmi_bounds_time_by_fuel_alone() {
    let mut wasmi = WasmiExecutor::new(config()).unwrap().without_clock();
    let limits = Limits { fuel: 1_000_000, memory_pages: 0, timeout_ms: 1 };
    let result = wasmi.run(&Job::new(fleet_example_jobs::INFINITE_LOOP).with_limits(limits), NoInputs);
    let (_, report) = expect_failure(Backend::Wasmi, result, FailReason::OutOfFuel);
    assert_eq!(report.duration_ms, 0, "no clock, no duration");
}

#[test]
fn a_memory_bomb_is_out_of_memory() {
    let mut ex = Executors::new();
    let job =
        Job::new(fleet_example_jobs::MEMORY_GRAB).with_limits(Limits { fuel: 0, memory_pages: 64, timeout_ms: 0 });
    for backend in BACKENDS {
        let (message, report) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::OutOfMemory);
        assert!(message.contains("64 pages"), "{backend:?}: {message}");
        // The guest's panic handler logged why it gave up.
        assert!(report.logs.iter().any(|l| l.contains("out of memory at")), "{backend:?}: {:?}", report.logs);
        ex.assert_still_usable(backend);
    }
}

#[test]
fn a_module_needing_more_memory_than_the_cap_is_out_of_memory() {
    let wasm =
        wat::parse_str(r#"(module (memory (export "memory") 8) (func (export "run") (result i32) i32.const 0))"#)
            .unwrap();
    let job = Job::new(&wasm).with_limits(Limits { fuel: 0, memory_pages: 4, timeout_ms: 0 });
    let mut ex = Executors::new();
    for backend in BACKENDS {
        expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::OutOfMemory);
        ex.assert_still_usable(backend);
    }
}

#[test]
fn unbounded_recursion_is_a_stack_overflow_trap() {
    let mut ex = Executors::new();
    let job = Job::new(fleet_example_jobs::DEEP_RECURSION).with_limits(Limits {
        fuel: 1_000_000_000,
        memory_pages: 0,
        timeout_ms: 0,
    });
    for backend in BACKENDS {
        let (message, _) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::Trap);
        assert!(message.contains("stack overflow"), "{backend:?}: {message}");
        ex.assert_still_usable(backend);
    }
}

#[test]
fn a_bad_pointer_traps_without_hurting_the_host() {
    let mut ex = Executors::new();
    let job = Job::new(fleet_example_jobs::BAD_POINTER);
    for backend in BACKENDS {
        let (message, report) = expect_failure(backend, ex.run(backend, &job, NoInputs), FailReason::Trap);
        assert!(message.contains("fleet.log") && message.contains("outside the job's memory"), "{message}");
        assert!(report.output.is_empty(), "{backend:?}: the job went on after the bad call");
        ex.assert_still_usable(backend);
    }
}

#[test]
fn the_wasmtime_executor_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<fleet_executor::WasmtimeExecutor>();
    let ex = std::sync::Arc::new(fleet_executor::WasmtimeExecutor::new(config()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let ex = ex.clone();
            std::thread::spawn(move || {
                let module = if i % 2 == 0 { fleet_example_jobs::HELLO } else { fleet_example_jobs::INFINITE_LOOP };
                ex.run(&Job::new(module), NoInputs).map(|_| ()).map_err(|f| f.reason)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results, vec![Ok(()), Err(FailReason::OutOfFuel), Ok(()), Err(FailReason::OutOfFuel)]);
}
