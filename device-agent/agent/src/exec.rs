//! Executions: each `Action::Run` on a thread of its own, its outcome back to the core.
//!
//! Why threads and not tasks: a job is CPU-bound Wasm that runs for as long as its limits
//! allow; on the async runtime it would stall the MQTT link. The core never asks for more
//! runs at once than `Tuning::max_concurrent` (a stopped run keeps its slot until it has
//! ended), so one thread per run is already the bounded pool.
//!
//! Stop (a job canceled while it runs) raises the run's [`StopSignal`]; wasmtime notices
//! within an epoch tick, and the outcome is reported as usual (the core has already
//! written the `Canceled` event and ignores it).

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use fleet_agent_core::Outcome;
use fleet_executor::{Accelerator, ExecutorConfig, FileInputs, Job, SetupError, StopSignal, WasmtimeExecutor};
use fleet_schemas::{ExecutionKey, FailReason, GpuRequirement, JobSpec, RunReport};
use tracing::{debug, error, info, warn};

use crate::shell::Wake;

/// Where a job's inference runs: on the GPU when the spec requires one, or prefers one
/// and `gpu_usable` (the device has a GPU that its ONNX Runtime can drive); else on the
/// CPU. A required GPU that cannot be had fails the inference with a note, never runs it
/// on the CPU instead.
pub fn placement(requirement: GpuRequirement, gpu_usable: bool) -> Accelerator {
    match requirement {
        GpuRequirement::Required => Accelerator::Gpu,
        GpuRequirement::Preferred if gpu_usable => Accelerator::Gpu,
        GpuRequirement::Preferred | GpuRequirement::None => Accelerator::Cpu,
    }
}

/// The runs in progress and what they run on.
pub struct Executions {
    executor: Arc<WasmtimeExecutor>,
    gpu_usable: bool,
    inputs: FileInputs,
    running: HashMap<ExecutionKey, StopSignal>,
    wake: Sender<Wake>,
}

impl Executions {
    /// An executor for this device with these data inputs (name → file), offering
    /// `inference` (see [`crate::inference`]).
    pub fn new(
        config: ExecutorConfig,
        data: &BTreeMap<String, PathBuf>,
        inference: &crate::inference::Inference,
        wake: Sender<Wake>,
    ) -> Result<Self, SetupError> {
        Ok(Self {
            executor: Arc::new(inference.offer(WasmtimeExecutor::new(config)?)),
            gpu_usable: inference.gpu_usable(),
            inputs: FileInputs::new(data.clone()),
            running: HashMap::new(),
            wake,
        })
    }

    /// Starts `spec` with `module` (the inline bytes, or the stored and checked chunked
    /// module) on a new thread. The outcome comes back as [`Wake::Finished`].
    pub fn start(&mut self, key: ExecutionKey, spec: Box<JobSpec>, module: Arc<[u8]>) {
        let stop = StopSignal::new();
        let executor = self.executor.clone();
        let inputs = self.inputs.clone();
        let wake = self.wake.clone();
        let thread_key = key.clone();
        let thread_stop = stop.clone();
        let on = placement(spec.requirements.gpu, self.gpu_usable);
        let spawned = std::thread::Builder::new().name("fleet-job".into()).spawn(move || {
            let started = std::time::Instant::now();
            let job = Job::from_spec(&spec, &module).with_stop(thread_stop).on(on);
            // A panic in the executor must still end the execution, or its slot would be
            // held forever.
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| executor.run(&job, inputs)));
            let outcome = match result {
                Ok(Ok(report)) => Outcome::Succeeded(report),
                Ok(Err(failure)) => {
                    Outcome::Failed { reason: failure.reason, message: failure.message, report: failure.report }
                }
                Err(_) => failed(FailReason::Trap, "the executor panicked while running the job"),
            };
            let run_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            debug!(job = %thread_key.job_id, attempt = thread_key.attempt, run_us, "execution ended");
            // The core thread may have ended (shutdown): nothing left to tell.
            let _ = wake.send(Wake::Finished { key: thread_key, outcome });
        });
        match spawned {
            Ok(_) => {
                info!(job = %key.job_id, attempt = key.attempt, "execution started");
                self.running.insert(key, stop);
            }
            Err(e) => {
                error!(error = %e, "cannot start a thread for a job");
                let outcome = failed(FailReason::Unsupported, &format!("the agent could not start a thread: {e}"));
                let _ = self.wake.send(Wake::Finished { key, outcome });
            }
        }
    }

    /// Asks a run to stop; its outcome still comes back as [`Wake::Finished`].
    pub fn stop(&mut self, key: &ExecutionKey) {
        match self.running.get(key) {
            Some(stop) => {
                info!(job = %key.job_id, attempt = key.attempt, "stopping execution");
                stop.stop();
            }
            None => warn!(job = %key.job_id, "asked to stop an execution that is not running"),
        }
    }

    /// A run has ended (its outcome is being handed to the core).
    pub fn ended(&mut self, key: &ExecutionKey) {
        self.running.remove(key);
    }

    /// Runs in progress.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

/// A failed outcome with an empty report.
pub fn failed(reason: FailReason, message: &str) -> Outcome {
    Outcome::Failed { reason, message: message.to_string(), report: RunReport::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_goes_to_the_gpu_only_when_the_spec_allows_it_and_the_device_can() {
        use GpuRequirement::{None as NoGpu, Preferred, Required};
        assert_eq!(placement(NoGpu, true), Accelerator::Cpu);
        assert_eq!(placement(Preferred, true), Accelerator::Gpu);
        assert_eq!(placement(Preferred, false), Accelerator::Cpu);
        // Never a silent CPU run for a job that requires the GPU.
        assert_eq!(placement(Required, false), Accelerator::Gpu);
        assert_eq!(placement(Required, true), Accelerator::Gpu);
    }
}
