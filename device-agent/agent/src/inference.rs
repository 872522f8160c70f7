//! wasi-nn for jobs: finding ONNX Runtime at start, whether inference may use the GPU,
//! and what the device advertises.
//!
//! Why at start and not per job: ONNX Runtime is loaded once per process, and the
//! device's status must say what it offers before jobs are sent to it. A library the
//! operator *configured* (`--onnxruntime`, agent.toml) that does not load stops the
//! agent with the reason: they asked for inference and would not get it. One found only
//! through `ORT_DYLIB_PATH` is used if it loads and otherwise logged and left out.
//!
//! The GPU is used when the machine has an NVIDIA GPU (see [`crate::gpu`]) and the
//! loaded ONNX Runtime has its CUDA provider (the `onnxruntime-gpu` wheel), in an agent
//! built with the `gpu` feature.

#[cfg(feature = "nn")]
use std::sync::Arc;

use fleet_executor::WasmtimeExecutor;
use fleet_schemas::status::GpuInfo;
use tracing::{info, warn};

use crate::settings::OnnxRuntimeSource;

/// What the agent offers jobs for inference.
#[derive(Debug, Default)]
pub struct Inference {
    #[cfg(feature = "nn")]
    runtime: Option<Arc<fleet_executor::nn::OnnxRuntime>>,
    gpu_usable: bool,
}

impl Inference {
    /// Loads ONNX Runtime from `source`, if any, on a machine with `gpu`. `Err` is the
    /// reason a configured library cannot be used.
    pub fn start(source: Option<&OnnxRuntimeSource>, gpu: Option<&GpuInfo>) -> Result<Self, String> {
        let Some(source) = source else {
            info!("no ONNX Runtime configured: jobs get no wasi-nn (see --onnxruntime)");
            return Ok(Self::default());
        };
        let (path, configured) = match source {
            OnnxRuntimeSource::Configured(path) => (path, true),
            OnnxRuntimeSource::Environment(path) => (path, false),
        };
        match Self::load(path, gpu) {
            Ok(inference) => Ok(inference),
            Err(reason) if configured => Err(reason),
            Err(reason) => {
                warn!(%reason, "ORT_DYLIB_PATH is set but unusable: jobs get no wasi-nn");
                Ok(Self::default())
            }
        }
    }

    #[cfg(feature = "nn")]
    fn load(path: &std::path::Path, gpu: Option<&GpuInfo>) -> Result<Self, String> {
        let runtime = fleet_executor::nn::OnnxRuntime::load(path).map_err(|e| e.to_string())?;
        let nvidia = gpu.is_some_and(|g| g.vendor == "nvidia");
        let gpu_usable = cfg!(feature = "gpu") && nvidia && runtime.has_gpu_provider();
        info!(
            library = %runtime.library().display(),
            version = runtime.version(),
            cuda_provider = runtime.has_gpu_provider(),
            gpu_usable,
            "wasi-nn offered to jobs on ONNX Runtime"
        );
        if nvidia && !gpu_usable {
            warn!(
                "this machine has an NVIDIA GPU that inference will not use: needs the `gpu` feature and the onnxruntime-gpu build of ONNX Runtime"
            );
        }
        Ok(Self { runtime: Some(runtime), gpu_usable })
    }

    #[cfg(not(feature = "nn"))]
    fn load(path: &std::path::Path, _gpu: Option<&GpuInfo>) -> Result<Self, String> {
        Err(format!("ONNX Runtime at {} cannot be used: this agent was built without the `nn` feature", path.display()))
    }

    /// `executor`, offering wasi-nn if ONNX Runtime was loaded.
    pub fn offer(&self, executor: WasmtimeExecutor) -> WasmtimeExecutor {
        #[cfg(feature = "nn")]
        if let Some(runtime) = &self.runtime {
            return executor.with_inference(runtime.clone());
        }
        executor
    }

    /// Whether inference may run on the GPU.
    pub fn gpu_usable(&self) -> bool {
        self.gpu_usable
    }

    /// The backends the device advertises in its status: `onnx:cpu`, plus `onnx:cuda`
    /// where the GPU is usable.
    pub fn advertised(&self) -> Vec<String> {
        #[cfg(feature = "nn")]
        if self.runtime.is_some() {
            let mut backends = vec!["onnx:cpu".to_string()];
            if self.gpu_usable {
                backends.push("onnx:cuda".to_string());
            }
            return backends;
        }
        Vec::new()
    }
}
