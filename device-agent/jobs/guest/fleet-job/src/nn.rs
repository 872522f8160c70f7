//! Machine-learning inference through **wasi-nn**, the WebAssembly ecosystem's standard
//! inference interface (the `wasi_ephemeral_nn` witx ABI, the one `wasmtime
//! --wasi-nn` and WasmEdge serve), for `no_std` jobs.
//!
//! Why here and not the `wasi-nn` crate: that crate needs `std` (it also loads models
//! from files); fleet jobs are `no_std` and carry their model in the module. The
//! imports are the standard ones, so a job written against this runs on any wasi-nn
//! host with an ONNX backend.
//!
//! Where the inference runs (CPU or GPU) is the device's choice, made from the job
//! spec's GPU requirement (`fleetctl job push --gpu`), not the module's: the same
//! signed module runs on a gateway with a GPU and on one without. The target a job
//! passes to [`Graph::load`] is a hint the fleet agent does not need.
//!
//! ```ignore
//! let graph = Graph::load(MODEL, Encoding::Onnx, Target::Cpu)?;
//! let mut ctx = graph.context()?;
//! ctx.set_input_f32(0, &[1, 16], &window)?;
//! ctx.compute()?;
//! let mut scores = [0f32; 3];
//! ctx.output_f32(0, &mut scores)?;
//! ```

/// The raw wasi-nn imports (module `wasi_ephemeral_nn`). Prefer [`Graph`].
pub mod raw {
    /// One graph builder: a byte range of the model.
    #[repr(C)]
    pub struct Builder {
        /// The bytes' address.
        pub ptr: *const u8,
        /// Their length.
        pub len: usize,
    }

    /// A tensor as wasi-nn lays it out in memory (20 bytes, align 4).
    #[repr(C)]
    pub struct Tensor {
        /// The dimensions' address (`u32` each).
        pub dims_ptr: *const u32,
        /// How many dimensions.
        pub dims_len: usize,
        /// The element type (see [`super::ElementType`]).
        pub ty: u8,
        /// The little-endian element bytes' address.
        pub data_ptr: *const u8,
        /// Their length.
        pub data_len: usize,
    }

    #[link(wasm_import_module = "wasi_ephemeral_nn")]
    unsafe extern "C" {
        /// Loads a model from `builders` (an array of byte ranges); writes the graph handle.
        pub fn load(builders: *const Builder, count: usize, encoding: i32, target: i32, graph: *mut u32) -> i32;
        /// Loads a model the host holds under `name`; writes the graph handle.
        pub fn load_by_name(name: *const u8, len: usize, graph: *mut u32) -> i32;
        /// Starts an execution context on `graph`; writes its handle.
        pub fn init_execution_context(graph: u32, ctx: *mut u32) -> i32;
        /// Sets input `index` of `ctx`.
        pub fn set_input(ctx: u32, index: u32, tensor: *const Tensor) -> i32;
        /// Runs the model.
        pub fn compute(ctx: u32) -> i32;
        /// Copies output `index` into the buffer; writes the bytes copied.
        pub fn get_output(ctx: u32, index: u32, out: *mut u8, max: usize, written: *mut u32) -> i32;
    }
}

/// A wasi-nn error code (`nn_errno`), as the host returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NnError {
    /// 1: an argument is wrong (a bad handle, a tensor of the wrong shape).
    InvalidArgument,
    /// 2: the host has no backend for this encoding.
    InvalidEncoding,
    /// 3: the model lacks something it needs.
    MissingMemory,
    /// 4: the host is busy.
    Busy,
    /// 5: the backend failed (the model does not load, the run failed).
    RuntimeError,
    /// 6: the host does not do this (an element type, a target).
    UnsupportedOperation,
    /// 7: the output does not fit the buffer.
    TooLarge,
    /// 8: no model of that name.
    NotFound,
    /// Any other code.
    Other(i32),
}

impl NnError {
    fn check(code: i32) -> Result<(), NnError> {
        Err(match code {
            0 => return Ok(()),
            1 => Self::InvalidArgument,
            2 => Self::InvalidEncoding,
            3 => Self::MissingMemory,
            4 => Self::Busy,
            5 => Self::RuntimeError,
            6 => Self::UnsupportedOperation,
            7 => Self::TooLarge,
            8 => Self::NotFound,
            other => Self::Other(other),
        })
    }
}

/// How the model is encoded (`graph_encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    /// OpenVINO IR.
    Openvino = 0,
    /// ONNX: what fleet agents run.
    Onnx = 1,
    /// TensorFlow.
    Tensorflow = 2,
    /// PyTorch.
    Pytorch = 3,
    /// TensorFlow Lite.
    Tensorflowlite = 4,
}

/// The execution target a job asks for (`execution_target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Target {
    /// The CPU.
    Cpu = 0,
    /// A GPU.
    Gpu = 1,
    /// A TPU.
    Tpu = 2,
}

/// Tensor element types (`tensor_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ElementType {
    /// 16-bit float.
    F16 = 0,
    /// 32-bit float.
    F32 = 1,
    /// 64-bit float.
    F64 = 2,
    /// Byte.
    U8 = 3,
    /// 32-bit integer.
    I32 = 4,
    /// 64-bit integer.
    I64 = 5,
}

/// A loaded model.
#[derive(Debug, Clone, Copy)]
pub struct Graph(u32);

impl Graph {
    /// Loads a model from its bytes.
    pub fn load(model: &[u8], encoding: Encoding, target: Target) -> Result<Graph, NnError> {
        let builder = raw::Builder { ptr: model.as_ptr(), len: model.len() };
        let mut graph = 0u32;
        // SAFETY: `builder` and `graph` are live for the call; the builder's range is a live slice.
        NnError::check(unsafe { raw::load(&builder, 1, encoding as i32, target as i32, &mut graph) })?;
        Ok(Graph(graph))
    }

    /// A model the host holds under `name`.
    pub fn load_by_name(name: &str) -> Result<Graph, NnError> {
        let mut graph = 0u32;
        // SAFETY: `name` and `graph` are live for the call.
        NnError::check(unsafe { raw::load_by_name(name.as_ptr(), name.len(), &mut graph) })?;
        Ok(Graph(graph))
    }

    /// A new execution context: inputs, one run, outputs.
    pub fn context(&self) -> Result<Context, NnError> {
        let mut ctx = 0u32;
        // SAFETY: `ctx` is live for the call.
        NnError::check(unsafe { raw::init_execution_context(self.0, &mut ctx) })?;
        Ok(Context(ctx))
    }
}

/// An execution context of a [`Graph`].
#[derive(Debug)]
pub struct Context(u32);

impl Context {
    /// Sets input `index` to `data` (little-endian elements of type `ty`) of shape `dims`.
    pub fn set_input(&mut self, index: u32, dims: &[u32], ty: ElementType, data: &[u8]) -> Result<(), NnError> {
        let tensor = raw::Tensor {
            dims_ptr: dims.as_ptr(),
            dims_len: dims.len(),
            ty: ty as u8,
            data_ptr: data.as_ptr(),
            data_len: data.len(),
        };
        // SAFETY: the tensor and the slices it points into are live for the call.
        NnError::check(unsafe { raw::set_input(self.0, index, &tensor) })
    }

    /// Sets input `index` to the `f32` values `data` of shape `dims`.
    pub fn set_input_f32(&mut self, index: u32, dims: &[u32], data: &[f32]) -> Result<(), NnError> {
        // SAFETY: any f32 is 4 plain bytes; wasm32 is little-endian, as wasi-nn wants.
        let bytes = unsafe { core::slice::from_raw_parts(data.as_ptr().cast::<u8>(), core::mem::size_of_val(data)) };
        self.set_input(index, dims, ElementType::F32, bytes)
    }

    /// Runs the model on the inputs set.
    pub fn compute(&mut self) -> Result<(), NnError> {
        // SAFETY: no pointers.
        NnError::check(unsafe { raw::compute(self.0) })
    }

    /// Copies output `index` into `out`; returns the bytes copied.
    pub fn output(&mut self, index: u32, out: &mut [u8]) -> Result<usize, NnError> {
        let mut written = 0u32;
        // SAFETY: `out` and `written` are live for the call.
        NnError::check(unsafe { raw::get_output(self.0, index, out.as_mut_ptr(), out.len(), &mut written) })?;
        Ok(written as usize)
    }

    /// Copies output `index`, of `f32`s, into `out`; returns the values copied.
    pub fn output_f32(&mut self, index: u32, out: &mut [f32]) -> Result<usize, NnError> {
        // SAFETY: any 4 bytes are an f32; the host writes little-endian elements.
        let bytes =
            unsafe { core::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), core::mem::size_of_val(out)) };
        Ok(self.output(index, bytes)? / 4)
    }
}
