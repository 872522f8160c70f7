//! A job run in fuel slices by its caller (the firmware's way of staying online while a
//! job runs) ends exactly as the same job run at once: same output, same fuel, same
//! ending, wherever the slices fall.

use fleet_executor::{ExecutorConfig, Job, NoInputs, RunResult, Slice, StopSignal, WasmiExecutor};
use fleet_schemas::{FailReason, Limits};

use crate::support::{config, strings, sum_compute};

fn executor(fuel_slice: u64) -> WasmiExecutor {
    WasmiExecutor::new(ExecutorConfig { fuel_slice, ..config() }).unwrap().without_clock()
}

/// Runs `job` with `start`/`resume`, counting the pauses the caller saw.
fn run_sliced(executor: &mut WasmiExecutor, job: &Job<'_>) -> (RunResult, u32) {
    let mut run = executor.start(job, NoInputs);
    let mut pauses = 0;
    loop {
        match executor.resume(run) {
            Slice::Finished(result) => return (result, pauses),
            Slice::Paused(paused) => {
                pauses += 1;
                assert_eq!(paused.slices(), pauses);
                run = paused;
            }
        }
    }
}

#[test]
fn a_sliced_job_ends_as_the_unsliced_one_wherever_the_slices_fall() {
    let args = strings(&["20000"]);
    let job = Job::new(fleet_example_jobs::SUM_COMPUTE).with_args(&args);
    // No stop signal, no clock: the whole budget at once.
    let whole = executor(1_000).run(&job, NoInputs).unwrap();
    assert_eq!(String::from_utf8_lossy(&whole.output), sum_compute(20_000));

    let stoppable = job.clone().with_stop(StopSignal::new());
    let mut previous_pauses = u32::MAX;
    for slice in [1, 7, 1_000, 33_333, 1_000_000] {
        let (result, pauses) = run_sliced(&mut executor(slice), &stoppable);
        let report = result.unwrap();
        assert_eq!(report.output, whole.output, "slice {slice}");
        assert_eq!(report.fuel_used, whole.fuel_used, "slice {slice}");
        assert!(pauses <= previous_pauses, "slice {slice}: {pauses} pauses");
        previous_pauses = pauses;
        if slice < 1_000 {
            assert!(pauses > 1_000, "slice {slice}: only {pauses} pauses");
        }
    }
}

#[test]
fn a_sliced_job_runs_out_of_fuel_where_the_unsliced_one_does() {
    let args = strings(&["1000000"]);
    let limits = Limits { fuel: 250_000, memory_pages: 0, timeout_ms: 0 };
    let job = Job::new(fleet_example_jobs::SUM_COMPUTE).with_args(&args).with_limits(limits);
    let whole = executor(1_000).run(&job, NoInputs).unwrap_err();
    assert_eq!(whole.reason, FailReason::OutOfFuel);
    for slice in [1, 999, 10_000, 249_999, 250_000, 1_000_000] {
        let (result, _) = run_sliced(&mut executor(slice), &job.clone().with_stop(StopSignal::new()));
        let failure = result.unwrap_err();
        assert_eq!(failure.reason, FailReason::OutOfFuel, "slice {slice}: {}", failure.message);
        assert_eq!(failure.report.fuel_used, whole.report.fuel_used, "slice {slice}");
        assert_eq!(failure.message, whole.message, "slice {slice}");
    }
}

#[test]
fn a_stop_raised_between_slices_ends_the_job_before_the_next_one() {
    let stop = StopSignal::new();
    let limits = Limits { fuel: 1_000_000_000, memory_pages: 0, timeout_ms: 0 };
    let job = Job::new(fleet_example_jobs::INFINITE_LOOP).with_limits(limits).with_stop(stop.clone());
    let mut executor = executor(10_000);
    let mut run = executor.start(&job, NoInputs);
    for _ in 0..3 {
        run = match executor.resume(run) {
            Slice::Paused(paused) => paused,
            Slice::Finished(result) => panic!("the loop ended: {result:?}"),
        };
    }
    stop.stop();
    let Slice::Finished(result) = executor.resume(run) else { panic!("ran another slice after the stop") };
    let failure = result.unwrap_err();
    assert_eq!(failure.reason, FailReason::Timeout);
    assert_eq!(failure.message, "stopped by the agent");
    // A slice pauses where its next block would need more than is left.
    let used = failure.report.fuel_used;
    assert!((29_000..=30_000).contains(&used), "three slices, not a fourth: {used}");
    // The executor is usable afterwards, and for an abandoned run too.
    drop(executor.start(&job, NoInputs));
    let report = executor.run(&Job::new(fleet_example_jobs::HELLO), NoInputs).unwrap();
    assert!(!report.output.is_empty());
}

#[test]
fn a_job_that_cannot_start_finishes_on_its_first_resume() {
    let mut executor = executor(1_000);
    let job = Job::new(b"\0asm\x01\0\0\0").with_stop(StopSignal::new());
    let run = executor.start(&job, NoInputs);
    let Slice::Finished(result) = executor.resume(run) else { panic!("paused a module without an entry") };
    assert_eq!(result.unwrap_err().reason, FailReason::Unsupported);
}
