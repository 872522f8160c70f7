//! One place that knows how to run a job on each backend, so each test body is written
//! once and run on both.

use fleet_executor::{DataInputs, ExecutorConfig, Job, RunResult, WasmiExecutor, WasmtimeExecutor};
use fleet_schemas::{DeviceId, FailReason, Limits, RunReport};

pub const DEVICE: &str = "plant-3-gw-07";

/// Small defaults so hostile jobs end quickly even in unoptimised test builds.
pub const TEST_FUEL: u64 = 5_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Wasmtime,
    Wasmi,
}

pub const BACKENDS: [Backend; 2] = [Backend::Wasmtime, Backend::Wasmi];

pub fn config() -> ExecutorConfig {
    let mut config = ExecutorConfig::gateway(DeviceId::new(DEVICE).unwrap());
    config.default_limits = Limits { fuel: TEST_FUEL, memory_pages: 32, timeout_ms: 20_000 };
    config
}

/// An executor of each kind.
pub struct Executors {
    pub wasmtime: WasmtimeExecutor,
    pub wasmi: WasmiExecutor,
}

impl Executors {
    pub fn new() -> Self {
        Self::with(config())
    }

    pub fn with(config: ExecutorConfig) -> Self {
        Self { wasmtime: WasmtimeExecutor::new(config.clone()).unwrap(), wasmi: WasmiExecutor::new(config).unwrap() }
    }

    pub fn run(&mut self, backend: Backend, job: &Job<'_>, inputs: impl DataInputs + 'static) -> RunResult {
        match backend {
            Backend::Wasmtime => self.wasmtime.run(job, inputs),
            Backend::Wasmi => self.wasmi.run(job, inputs),
        }
    }

    /// Runs `hello` and checks it succeeds: the executor is still usable.
    pub fn assert_still_usable(&mut self, backend: Backend) {
        let report = self
            .run(backend, &Job::new(fleet_example_jobs::HELLO), fleet_executor::NoInputs)
            .unwrap_or_else(|f| panic!("{backend:?}: hello after a failure: {f}"));
        assert_eq!(String::from_utf8_lossy(&report.output), format!("hello from {DEVICE}"));
    }
}

/// Expects a failure with `reason`; returns its message and report.
pub fn expect_failure(backend: Backend, result: RunResult, reason: FailReason) -> (String, RunReport) {
    match result {
        Ok(report) => panic!("{backend:?}: expected {reason:?}, the job succeeded: {report:?}"),
        Err(failure) => {
            assert_eq!(failure.reason, reason, "{backend:?}: wrong reason, message: {}", failure.message);
            (failure.message, failure.report)
        }
    }
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The guest's algorithm, on the host.
pub fn sum_compute(n: u64) -> String {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut sum: u64 = 0;
    for _ in 0..n {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        sum = sum.wrapping_add(state.wrapping_mul(0x2545_F491_4F6C_DD1D));
    }
    format!("n={n} sum={sum:016x}")
}
