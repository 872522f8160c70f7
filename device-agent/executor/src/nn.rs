//! wasi-nn on gateways: machine-learning inference for jobs, on ONNX Runtime, on the
//! CPU or on a GPU, behind the standard interface.
//!
//! **The interface** is wasi-nn's `witx` ABI (import module `wasi_ephemeral_nn`, the
//! one `wasmtime --wasi-nn` and WasmEdge serve): `load` a model from bytes the job
//! carries, `init_execution_context`, `set_input`, `compute`, `get_output`. A job
//! written against it does not know which accelerator it runs on, and the same signed
//! module runs on every gateway that offers it.
//!
//! **The backend** is ONNX Runtime, loaded at run time from its shared library (the
//! `onnxruntime` or `onnxruntime-gpu` wheel from PyPI, or a distribution's package):
//! nothing is downloaded at build time and the agent builds without it. The agent
//! loads it once with [`OnnxRuntime::load`]; without it the gateway simply does not
//! offer wasi-nn, and a job that imports it fails as `Unsupported`.
//!
//! **Where inference runs** is the device's decision, from the job spec's GPU
//! requirement (`Job::accelerator`, set by the agent): [`Accelerator::Gpu`] registers
//! ONNX Runtime's CUDA execution provider and *fails* if it cannot be had, rather than
//! letting ONNX Runtime fall back to the CPU unseen; [`Accelerator::Cpu`] uses the CPU
//! provider. The target the job passes to `load` is ignored. Each load adds a note to
//! the execution's logs saying where the model ran, so the result reports it.
//!
//! Why not `wasmtime-wasi-nn`'s own glue (the first choice on paper): its `witx` glue
//! panics (`unimplemented!`) when a job passes a bad pointer, which a hostile job
//! could use to take a worker down, and its ONNX backend quietly runs a GPU request on
//! the CPU (a `warn!`, nothing the job or the operator sees). The ABI is small: it is
//! implemented here on the job's memory as a plain byte slice, with the fleet ABI's
//! rules (every range checked, a bad one traps the job; see [`crate::abi`]), on the
//! `ort` crate that `wasmtime-wasi-nn` uses underneath.
//!
//! **Bounds.** Models, tensors and handles are capped ([`NnCaps`]). The wall-clock
//! bound and the stop signal reach into a running inference: the executor's epoch
//! ticker terminates ONNX Runtime's run when either fires ([`Watchlist`]). Memory ONNX Runtime allocates for a model is
//! outside the job's memory cap; models travel in signed envelopes, and the model
//! bytes are bounded by the job's own memory.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use ort::environment::GlobalThreadPoolOptions;
use ort::execution_providers::{
    CPUExecutionProvider, CUDAExecutionProvider, ExecutionProvider, ExecutionProviderDispatch,
};
use ort::session::{RunOptions, Session, SessionInputValue};
use ort::tensor::TensorElementType;
use ort::value::{DynValue, Tensor, ValueType};

use crate::abi::{AbiTrap, Host};
use crate::control::StopSignal;
use crate::job::Accelerator;

/// wasi-nn's error codes (`nn_errno`); 0 is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum NnErrno {
    /// A handle, an index, a shape or a type is wrong.
    InvalidArgument = 1,
    /// No backend for this model encoding (only ONNX is offered).
    InvalidEncoding = 2,
    /// Not used by this host.
    MissingMemory = 3,
    /// Not used by this host.
    Busy = 4,
    /// ONNX Runtime refused the model or the run.
    RuntimeError = 5,
    /// Something this host does not do (f16 tensors, named models).
    UnsupportedOperation = 6,
    /// A cap was hit, or the output does not fit the job's buffer.
    TooLarge = 7,
    /// No model by that name.
    NotFound = 8,
}

/// What one execution may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NnCaps {
    /// Models loaded at once.
    pub max_graphs: usize,
    /// Execution contexts at once.
    pub max_contexts: usize,
    /// Dimensions of one tensor.
    pub max_dims: usize,
}

impl Default for NnCaps {
    fn default() -> Self {
        Self { max_graphs: 4, max_contexts: 16, max_dims: 8 }
    }
}

/// Why ONNX Runtime could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceSetupError {
    /// No file at the path.
    #[error(
        "no ONNX Runtime library at {0} (install the `onnxruntime` wheel and point at its capi/libonnxruntime.so*)"
    )]
    NotFound(PathBuf),
    /// The file is not a usable ONNX Runtime (not a library, or older than 1.22).
    #[error("cannot use {path} as ONNX Runtime: {message}")]
    Unusable {
        /// The library.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A process loads one ONNX Runtime; another path was asked for later.
    #[error("ONNX Runtime is already loaded from {loaded}; cannot also load {asked}")]
    AlreadyLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The one asked for.
        asked: PathBuf,
    },
}

/// ONNX Runtime, loaded into this process: the backend of wasi-nn.
#[derive(Debug)]
pub struct OnnxRuntime {
    library: PathBuf,
    version: String,
    gpu: bool,
}

/// The one ONNX Runtime of this process (`ort` keeps the library in a global).
static RUNTIME: OnceLock<Result<Arc<OnnxRuntime>, InferenceSetupError>> = OnceLock::new();

impl OnnxRuntime {
    /// Loads ONNX Runtime from the shared library at `library` (once per process; a
    /// later call with the same path returns the same runtime). A missing file is
    /// refused before anything is loaded; any other failure is final for the process,
    /// because `ort` keeps the first library it was pointed at.
    pub fn load(library: &Path) -> Result<Arc<OnnxRuntime>, InferenceSetupError> {
        if !library.is_file() {
            return Err(InferenceSetupError::NotFound(library.to_path_buf()));
        }
        let library = library.canonicalize().unwrap_or_else(|_| library.to_path_buf());
        let loaded = RUNTIME.get_or_init(|| Self::load_once(&library));
        match loaded {
            Ok(runtime) if runtime.library == library => Ok(runtime.clone()),
            Ok(runtime) => {
                Err(InferenceSetupError::AlreadyLoaded { loaded: runtime.library.clone(), asked: library.clone() })
            }
            Err(e) => Err(e.clone()),
        }
    }

    fn load_once(library: &Path) -> Result<Arc<OnnxRuntime>, InferenceSetupError> {
        let unusable = |message: String| InferenceSetupError::Unusable { path: library.to_path_buf(), message };
        let path = library.to_string_lossy().into_owned();
        // `ort` panics (rather than returning an error) when the library does not load
        // or is too old; keep that inside this probe, and its panic message off stderr
        // (the error below carries it).
        let hook = std::panic::take_hook();
        std::panic::set_hook(alloc::boxed::Box::new(|_| {}));
        let probe = std::panic::catch_unwind(move || -> Result<bool, String> {
            // `init_from` first: it records which library to open, and building the
            // thread options below already opens it (before, `ort` would fall back to
            // ORT_DYLIB_PATH or `libonnxruntime.so` on the library path).
            let environment = ort::init_from(path);
            // One thread pool for every session of the process, not one per session: a
            // job loads its model each run, and a pool per load was most of its cost.
            // No spinning: a gateway's idle cores stay idle between inferences.
            let threads = GlobalThreadPoolOptions::default().with_spin_control(false).map_err(|e| e.to_string())?;
            environment
                .with_name("fleet-agent")
                .with_global_thread_pool(threads)
                .commit()
                .map_err(|e| e.to_string())?;
            let gpu = CUDAExecutionProvider::default().is_available().unwrap_or(false);
            Ok(gpu)
        });
        std::panic::set_hook(hook);
        match probe {
            Ok(Ok(gpu)) => {
                Ok(Arc::new(OnnxRuntime { library: library.to_path_buf(), version: version_of(library), gpu }))
            }
            Ok(Err(message)) => Err(unusable(message)),
            Err(panic) => Err(unusable(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "it panicked while loading".to_string()),
            )),
        }
    }

    /// The library in use.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// ONNX Runtime's version, as its library's file name gives it
    /// (`libonnxruntime.so.1.22.1`; links are resolved), or `unknown version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether this ONNX Runtime build has the CUDA execution provider (the
    /// `onnxruntime-gpu` wheel does). Whether a CUDA device is there is another matter.
    pub fn has_gpu_provider(&self) -> bool {
        self.gpu
    }

    /// A session for `model` on `on`. The GPU provider is registered with
    /// `error_on_failure`: no silent fall-back to the CPU.
    fn session(&self, model: &[u8], on: Accelerator) -> Result<Session, String> {
        Session::builder()
            .and_then(|b| b.with_execution_providers([execution_provider(on)]))
            .and_then(|b| b.commit_from_memory(model))
            .map_err(|e| e.to_string())
    }

    /// How a note names where a model runs.
    fn describe(&self, on: Accelerator) -> String {
        let provider = match on {
            Accelerator::Cpu => "CPU",
            Accelerator::Gpu => "CUDA",
        };
        format!("ONNX Runtime {}, {provider} execution provider", self.version)
    }
}

/// ONNX Runtime's execution provider for `on`, registered with `error_on_failure`: a
/// GPU that cannot be had is an error, never a silent run on the CPU.
pub fn execution_provider(on: Accelerator) -> ExecutionProviderDispatch {
    match on {
        Accelerator::Cpu => CPUExecutionProvider::default().build(),
        Accelerator::Gpu => CUDAExecutionProvider::default().build(),
    }
    .error_on_failure()
}

/// The version in a library's file name (`libonnxruntime.so.1.22.1` → `1.22.1`). ONNX
/// Runtime's own `GetVersionString` is not reachable through `ort` without unsafe code.
fn version_of(library: &Path) -> String {
    let name = library.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.split_once(".so.")
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.split('.').all(|p| p.parse::<u32>().is_ok()))
        .unwrap_or_else(|| "unknown version".to_string())
}

/// One execution context: a model's inputs as set, and its outputs after `compute`.
struct Context {
    graph: usize,
    inputs: Vec<Option<DynValue>>,
    outputs: Vec<Option<Vec<u8>>>,
}

/// How a watched run ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The wall-clock bound passed.
    Deadline,
    /// The stop signal was raised.
    Stopped,
}

/// The wasi-nn host state of one execution.
pub struct NnHost {
    runtime: Arc<OnnxRuntime>,
    on: Accelerator,
    caps: NnCaps,
    deadline: Option<Instant>,
    stop: Option<StopSignal>,
    watchlist: Arc<Watchlist>,
    graphs: Vec<Session>,
    contexts: Vec<Context>,
}

/// The inferences running now, each with its bound: the executor's epoch ticker (which
/// runs while any job does) sweeps it every tick and terminates a run whose deadline
/// has passed or whose stop signal is raised. One shared list, not a watchdog thread per
/// inference: a thread per `compute` cost more than the inference of a small model.
#[derive(Default)]
pub struct Watchlist {
    runs: Mutex<Vec<Watched>>,
}

impl core::fmt::Debug for Watchlist {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let watched = self.runs.lock().map(|r| r.len()).unwrap_or(0);
        f.debug_struct("Watchlist").field("watched", &watched).finish()
    }
}

struct Watched {
    id: u64,
    options: Arc<RunOptions>,
    deadline: Option<Instant>,
    stop: Option<StopSignal>,
    cut: Option<Cut>,
}

impl Watchlist {
    /// Terminates every watched run that is due. Called by the executor's ticker.
    pub fn sweep(&self) {
        let Ok(mut runs) = self.runs.lock() else { return };
        let now = Instant::now();
        for run in runs.iter_mut().filter(|r| r.cut.is_none()) {
            run.cut = if run.stop.as_ref().is_some_and(StopSignal::is_stopped) {
                Some(Cut::Stopped)
            } else if run.deadline.is_some_and(|at| now >= at) {
                Some(Cut::Deadline)
            } else {
                None
            };
            if run.cut.is_some() {
                let _ = run.options.terminate();
            }
        }
    }

    fn watch(&self, id: u64, options: Arc<RunOptions>, deadline: Option<Instant>, stop: Option<StopSignal>) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.push(Watched { id, options, deadline, stop, cut: None });
        }
    }

    /// Stops watching run `id`; how the watch cut it, if it did.
    fn unwatch(&self, id: u64) -> Option<Cut> {
        let mut runs = self.runs.lock().ok()?;
        let at = runs.iter().position(|r| r.id == id)?;
        runs.swap_remove(at).cut
    }
}

/// Ids of watched runs.
static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

fn range(call: &'static str, size: usize, ptr: u32, len: u32) -> Result<Range<usize>, AbiTrap> {
    crate::abi::span(size, ptr, len).ok_or(AbiTrap::NnOutOfBounds { call, ptr, len, size })
}

fn read_u32(call: &'static str, memory: &[u8], at: u32) -> Result<u32, AbiTrap> {
    let r = range(call, memory.len(), at, 4)?;
    let mut word = [0u8; 4];
    word.copy_from_slice(&memory[r]);
    Ok(u32::from_le_bytes(word))
}

fn write_u32(call: &'static str, memory: &mut [u8], at: u32, value: u32) -> Result<(), AbiTrap> {
    let r = range(call, memory.len(), at, 4)?;
    memory[r].copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// A handle as the job passed it, as an index.
fn index(handle: i32) -> usize {
    handle as u32 as usize
}

/// wasi-nn's `tensor_type` codes and their element sizes.
fn element(ty: u8) -> Option<(TensorElementType, usize)> {
    match ty {
        1 => Some((TensorElementType::Float32, 4)),
        2 => Some((TensorElementType::Float64, 8)),
        3 => Some((TensorElementType::Uint8, 1)),
        4 => Some((TensorElementType::Int32, 4)),
        5 => Some((TensorElementType::Int64, 8)),
        _ => None,
    }
}

/// An ONNX Runtime tensor of `shape` from little-endian `bytes`.
fn tensor(ty: TensorElementType, shape: Vec<i64>, bytes: &[u8]) -> Result<DynValue, String> {
    macro_rules! from_le {
        ($t:ty) => {{
            let values: Vec<$t> = bytes
                .chunks_exact(core::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            Tensor::from_array((shape, values)).map(|t| t.into_dyn()).map_err(|e| e.to_string())
        }};
    }
    match ty {
        TensorElementType::Float32 => from_le!(f32),
        TensorElementType::Float64 => from_le!(f64),
        TensorElementType::Uint8 => {
            Tensor::from_array((shape, bytes.to_vec())).map(|t| t.into_dyn()).map_err(|e| e.to_string())
        }
        TensorElementType::Int32 => from_le!(i32),
        TensorElementType::Int64 => from_le!(i64),
        other => Err(format!("element type {other:?} is not supported")),
    }
}

/// An output tensor's elements as little-endian bytes.
fn bytes_of(value: &DynValue) -> Result<Vec<u8>, String> {
    macro_rules! to_le {
        ($t:ty) => {
            value
                .try_extract_tensor::<$t>()
                .map(|(_, data)| data.iter().flat_map(|v| v.to_le_bytes()).collect())
                .map_err(|e| e.to_string())
        };
    }
    match value.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, .. } => to_le!(f32),
        ValueType::Tensor { ty: TensorElementType::Float64, .. } => to_le!(f64),
        ValueType::Tensor { ty: TensorElementType::Uint8, .. } => to_le!(u8),
        ValueType::Tensor { ty: TensorElementType::Int32, .. } => to_le!(i32),
        ValueType::Tensor { ty: TensorElementType::Int64, .. } => to_le!(i64),
        other => Err(format!("output of type {other} is not supported")),
    }
}

impl NnHost {
    /// The wasi-nn state of one execution, running models on `on`, cut short at
    /// `deadline` or when `stop` is raised by whoever sweeps `watchlist`.
    pub fn new(
        runtime: Arc<OnnxRuntime>,
        on: Accelerator,
        caps: NnCaps,
        (deadline, stop): (Option<Instant>, Option<StopSignal>),
        watchlist: Arc<Watchlist>,
    ) -> Self {
        Self { runtime, on, caps, deadline, stop, watchlist, graphs: Vec::new(), contexts: Vec::new() }
    }

    /// `load(builders, count, encoding, target, graph_out) -> errno`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        &mut self,
        memory: &mut [u8],
        host: &mut Host,
        builders: i32,
        count: i32,
        encoding: i32,
        target: i32,
        graph_out: i32,
    ) -> Result<i32, AbiTrap> {
        const CALL: &str = "load";
        let (builders, count) = (builders as u32, count as u32);
        let array = range(CALL, memory.len(), builders, count.saturating_mul(8))?;
        write_u32(CALL, memory, graph_out as u32, u32::MAX)?;
        if encoding != 1 {
            return Ok(NnErrno::InvalidEncoding as i32);
        }
        if count != 1 || !(0..=2).contains(&target) {
            return Ok(NnErrno::InvalidArgument as i32);
        }
        if self.graphs.len() >= self.caps.max_graphs {
            host.note(format!("wasi-nn: no more than {} models per execution", self.caps.max_graphs));
            return Ok(NnErrno::TooLarge as i32);
        }
        let at = array.start as u32;
        let model = range(CALL, memory.len(), read_u32(CALL, memory, at)?, read_u32(CALL, memory, at + 4)?)?;
        match self.runtime.session(&memory[model], self.on) {
            Ok(session) => {
                host.note(format!(
                    "wasi-nn: model {} runs on {} ({})",
                    self.graphs.len(),
                    self.on.name(),
                    self.runtime.describe(self.on)
                ));
                self.graphs.push(session);
                write_u32(CALL, memory, graph_out as u32, (self.graphs.len() - 1) as u32)?;
                Ok(0)
            }
            Err(e) => {
                host.note(format!("wasi-nn: the model does not load on {}: {e}", self.on.name()));
                Ok(NnErrno::RuntimeError as i32)
            }
        }
    }

    /// `load_by_name(name, len, graph_out) -> errno`: this host keeps no named models.
    pub fn load_by_name(&mut self, memory: &mut [u8], name: i32, len: i32, graph_out: i32) -> Result<i32, AbiTrap> {
        const CALL: &str = "load_by_name";
        range(CALL, memory.len(), name as u32, len as u32)?;
        write_u32(CALL, memory, graph_out as u32, u32::MAX)?;
        Ok(NnErrno::NotFound as i32)
    }

    /// `init_execution_context(graph, ctx_out) -> errno`.
    pub fn init_execution_context(&mut self, memory: &mut [u8], graph: i32, ctx_out: i32) -> Result<i32, AbiTrap> {
        const CALL: &str = "init_execution_context";
        write_u32(CALL, memory, ctx_out as u32, u32::MAX)?;
        let Some(session) = self.graphs.get(index(graph)) else {
            return Ok(NnErrno::InvalidArgument as i32);
        };
        if self.contexts.len() >= self.caps.max_contexts {
            return Ok(NnErrno::TooLarge as i32);
        }
        let context = Context {
            graph: index(graph),
            inputs: (0..session.inputs.len()).map(|_| None).collect(),
            outputs: (0..session.outputs.len()).map(|_| None).collect(),
        };
        self.contexts.push(context);
        write_u32(CALL, memory, ctx_out as u32, (self.contexts.len() - 1) as u32)?;
        Ok(0)
    }

    /// `set_input(ctx, index, tensor) -> errno`. The tensor is wasi-nn's 20-byte record:
    /// dimensions (pointer, count of `u32`), element type (a byte at offset 8), data
    /// (pointer, length at offset 12).
    pub fn set_input(
        &mut self,
        memory: &mut [u8],
        host: &mut Host,
        ctx: i32,
        input: i32,
        at: i32,
    ) -> Result<i32, AbiTrap> {
        const CALL: &str = "set_input";
        let record = range(CALL, memory.len(), at as u32, 20)?;
        let word = |offset: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&memory[record.start + offset..record.start + offset + 4]);
            u32::from_le_bytes(w)
        };
        let (dims_ptr, dims_len, ty, data_ptr, data_len) =
            (word(0), word(4), memory[record.start + 8], word(12), word(16));
        let dims = range(CALL, memory.len(), dims_ptr, dims_len.saturating_mul(4))?;
        let data = range(CALL, memory.len(), data_ptr, data_len)?;
        let Some(context) = self.contexts.get_mut(index(ctx)) else {
            return Ok(NnErrno::InvalidArgument as i32);
        };
        let Some(slot) = context.inputs.get_mut(index(input)) else {
            return Ok(NnErrno::InvalidArgument as i32);
        };
        let Some((element, size)) = element(ty) else {
            return Ok(if ty == 0 { NnErrno::UnsupportedOperation } else { NnErrno::InvalidArgument } as i32);
        };
        if dims_len as usize > self.caps.max_dims {
            return Ok(NnErrno::TooLarge as i32);
        }
        let shape: Vec<i64> =
            memory[dims].chunks_exact(4).map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
        let elements = shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d as u64));
        if elements.and_then(|n| n.checked_mul(size as u64)) != Some(u64::from(data_len)) {
            return Ok(NnErrno::InvalidArgument as i32);
        }
        match tensor(element, shape, &memory[data]) {
            Ok(value) => {
                *slot = Some(value);
                Ok(0)
            }
            Err(e) => {
                host.note(format!("wasi-nn: input {input} refused: {e}"));
                Ok(NnErrno::InvalidArgument as i32)
            }
        }
    }

    /// `compute(ctx) -> errno`: runs the model on the inputs set, on the watchlist.
    /// `Err` when the deadline or the stop signal cut the run.
    pub fn compute(&mut self, host: &mut Host, ctx: i32) -> Result<i32, Cut> {
        let Some(context) = self.contexts.get_mut(index(ctx)) else {
            return Ok(NnErrno::InvalidArgument as i32);
        };
        let Some(session) = self.graphs.get_mut(context.graph) else {
            return Ok(NnErrno::InvalidArgument as i32);
        };
        if context.inputs.iter().any(Option::is_none) {
            host.note("wasi-nn: compute before every input was set".to_string());
            return Ok(NnErrno::InvalidArgument as i32);
        }
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = session
            .inputs
            .iter()
            .map(|i| Cow::Owned(i.name.clone()))
            .zip(context.inputs.iter().flatten().map(SessionInputValue::from))
            .collect();
        let options = match RunOptions::new() {
            Ok(options) => Arc::new(options),
            Err(e) => {
                host.note(format!("wasi-nn: {e}"));
                return Ok(NnErrno::RuntimeError as i32);
            }
        };
        let id = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        self.watchlist.watch(id, options.clone(), self.deadline, self.stop.clone());
        let result = session
            .run_with_options(inputs, &options)
            .map_err(|e| e.to_string())
            .and_then(|outputs| outputs.values().map(|v| bytes_of(&v)).collect::<Result<Vec<_>, _>>());
        let cut = self.watchlist.unwatch(id);
        if let Some(cut) = cut {
            return Err(cut);
        }
        match result {
            Ok(outputs) => {
                context.outputs = outputs.into_iter().map(Some).collect();
                Ok(0)
            }
            Err(e) => {
                host.note(format!("wasi-nn: the run failed: {e}"));
                Ok(NnErrno::RuntimeError as i32)
            }
        }
    }

    /// `get_output(ctx, index, out, max, written_out) -> errno`.
    pub fn get_output(
        &mut self,
        memory: &mut [u8],
        ctx: i32,
        output: i32,
        out: i32,
        max: i32,
        written_out: i32,
    ) -> Result<i32, AbiTrap> {
        const CALL: &str = "get_output";
        let out = range(CALL, memory.len(), out as u32, max as u32)?;
        write_u32(CALL, memory, written_out as u32, 0)?;
        let Some(context) = self.contexts.get(index(ctx)) else {
            return Ok(NnErrno::InvalidArgument as i32);
        };
        let Some(Some(bytes)) = context.outputs.get(index(output)) else {
            return Ok(NnErrno::InvalidArgument as i32);
        };
        if bytes.len() > out.len() {
            return Ok(NnErrno::TooLarge as i32);
        }
        memory[out.start..out.start + bytes.len()].copy_from_slice(bytes);
        write_u32(CALL, memory, written_out as u32, bytes.len() as u32)?;
        Ok(0)
    }
}
