//! What to run: the module bytes and the parts of a job spec the executor uses.
//!
//! The executor does not take a `JobSpec` directly because a spec does not always carry
//! its module: a chunked module is assembled and checked by the shell first
//! (`fleet_schemas::chunk::module_matches`). [`Job::from_spec`] joins the two.

use alloc::string::String;

use fleet_schemas::{JobSpec, Limits, ModuleSource};

use crate::abi::DEFAULT_ENTRY;
use crate::control::StopSignal;

/// Where a job's machine-learning inference (wasi-nn) runs. The agent decides, from
/// the spec's GPU requirement and what the device has; the module does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Accelerator {
    /// The CPU.
    #[default]
    Cpu,
    /// The GPU, through ONNX Runtime's CUDA execution provider; an inference that
    /// cannot have it fails rather than running on the CPU.
    Gpu,
}

impl Accelerator {
    /// `cpu` or `gpu`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }
}

/// One execution's input.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// The WebAssembly module (binary format).
    pub module: &'a [u8],
    /// The exported function to call; empty means [`DEFAULT_ENTRY`] (`run`).
    pub entry: &'a str,
    /// The job's arguments (`fleet::arg_*`).
    pub args: &'a [String],
    /// Requested bounds; zeros mean the device's defaults.
    pub limits: Limits,
    /// The data inputs the spec lists: the only names `fleet::input_open` accepts.
    pub inputs: &'a [String],
    /// Raised to stop the job early (cancellation).
    pub stop: Option<StopSignal>,
    /// Where inference (wasi-nn) runs.
    pub accelerator: Accelerator,
}

impl<'a> Job<'a> {
    /// A job with the default entry, no arguments, no inputs and the device's default
    /// limits.
    pub fn new(module: &'a [u8]) -> Self {
        Self {
            module,
            entry: DEFAULT_ENTRY,
            args: &[],
            limits: Limits { fuel: 0, memory_pages: 0, timeout_ms: 0 },
            inputs: &[],
            stop: None,
            accelerator: Accelerator::Cpu,
        }
    }

    /// The job `spec` describes, with `module` as its bytes (for a chunked module, the
    /// assembled and verified bytes).
    pub fn from_spec(spec: &'a JobSpec, module: &'a [u8]) -> Self {
        Self {
            module,
            entry: &spec.entry,
            args: &spec.args,
            limits: spec.limits,
            inputs: &spec.inputs,
            stop: None,
            accelerator: Accelerator::Cpu,
        }
    }

    /// The job `spec` describes, if its module travels inline.
    pub fn inline(spec: &'a JobSpec) -> Option<Self> {
        match &spec.module {
            ModuleSource::Inline(bytes) => Some(Self::from_spec(spec, bytes)),
            ModuleSource::Chunked(_) => None,
        }
    }

    /// With these arguments.
    pub fn with_args(mut self, args: &'a [String]) -> Self {
        self.args = args;
        self
    }

    /// With these requested limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Allowed to open these data inputs.
    pub fn with_inputs(mut self, inputs: &'a [String]) -> Self {
        self.inputs = inputs;
        self
    }

    /// Stoppable with `stop`.
    pub fn with_stop(mut self, stop: StopSignal) -> Self {
        self.stop = Some(stop);
        self
    }

    /// With inference on `accelerator`.
    pub fn on(mut self, accelerator: Accelerator) -> Self {
        self.accelerator = accelerator;
        self
    }

    /// The entry function's name.
    pub fn entry_name(&self) -> &str {
        if self.entry.is_empty() { DEFAULT_ENTRY } else { self.entry }
    }
}
