//! The gateway backend: wasmtime with Cranelift.
//!
//! How each bound is enforced, and why this way:
//! * **fuel** (`Config::consume_fuel`): deterministic, counts work not time, the same
//!   budget means the same cut-off on every run;
//! * **wall clock** (`Config::epoch_interruption`): a ticker thread advances the engine's
//!   epoch every [`TICK`] while a job runs; each store's epoch callback compares the
//!   clock with the job's deadline (and its [`StopSignal`]) and traps when it has
//!   passed. Cheaper than fuel for this (one counter check per loop header) and the
//!   only way to bound time spent in a job with a huge fuel budget;
//! * **memory**: a `ResourceLimiter` refuses growth past the cap, so a memory bomb sees
//!   `memory.grow` fail and is reported as `OutOfMemory`, never takes the agent down;
//! * **stack**: `Config::max_wasm_stack`; exhausting it is a `StackOverflow` trap.
//!
//! Compiling is the expensive step of a short job, so linked modules (`InstancePre`:
//! compiled code with imports already resolved) are cached by SHA-256 (see
//! [`crate::cache`]); a repeated job only instantiates. The executor is `Sync`: the
//! agent can run jobs on several threads with one executor and one cache.
//!
//! Only the features both runtimes implement are enabled (Wasm 2.0 plus tail calls and
//! extended constants; no SIMD, threads, memory64 or multi-memory), so a job that runs
//! on a gateway also validates on a microcontroller.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;
use std::sync::Mutex;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use ::wasmtime::{
    Caller, Config, Engine, Extern, ExternType, InstancePre, Linker, Memory, Module, OptLevel, ResourceLimiter, Store,
    Trap, UpdateDeadline, ValType,
};
use fleet_schemas::digest::sha256;

use crate::abi::{self, AbiTrap, Host, MEMORY_EXPORT, MODULE};
use crate::cache::{CacheStats, ModuleCache};
use crate::config::{ExecutorConfig, SetupError};
use crate::control::StopSignal;
use crate::inputs::DataInputs;
use crate::job::Job;
use crate::limiter::MemoryCap;
use crate::outcome::{Ending, RunResult, conclude};

/// How often the epoch advances while a job runs: the resolution of timeouts and stops.
pub const TICK: Duration = Duration::from_millis(5);

/// Runs jobs on wasmtime. Build one per agent and share it (it is `Send + Sync`).
pub struct WasmtimeExecutor {
    engine: Engine,
    linker: Linker<Data>,
    config: ExecutorConfig,
    cache: Mutex<ModuleCache<InstancePre<Data>>>,
    ticker: Ticker,
    #[cfg(feature = "nn")]
    inference: Option<Arc<crate::nn::OnnxRuntime>>,
    #[cfg(feature = "nn")]
    watchlist: Arc<crate::nn::Watchlist>,
    /// WASI 0.2 for components, and their compiled, linked form by SHA-256.
    #[cfg(feature = "components")]
    components: ComponentSide,
}

/// What the executor keeps for components (see [`crate::component`]).
#[cfg(feature = "components")]
struct ComponentSide {
    linker: ::wasmtime::component::Linker<crate::component::ComponentData>,
    cache: Mutex<ModuleCache<crate::component::Prepared>>,
}

/// A store's data: the ABI host state plus what the runtime glue needs.
struct Data {
    host: Host,
    cap: MemoryCap,
    memory: Option<Memory>,
    /// wasi-nn's state, when this executor offers it.
    #[cfg(feature = "nn")]
    nn: Option<crate::nn::NnHost>,
    /// The wall-clock bound, for reporting a cut inference as a timeout.
    #[cfg(feature = "nn")]
    timeout_ms: u32,
}

/// Why the epoch callback interrupted a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Interrupted {
    #[error("wall-clock bound of {0} ms passed")]
    Timeout(u32),
    #[error("stopped by the agent")]
    Stopped,
}

impl WasmtimeExecutor {
    /// An executor with `config`. Starts the (idle) epoch ticker thread.
    pub fn new(config: ExecutorConfig) -> Result<Self, SetupError> {
        let setup = |message: String| SetupError { runtime: "wasmtime", message };
        let mut wasm = Config::new();
        wasm.consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.stack_bytes)
            .cranelift_opt_level(OptLevel::Speed)
            .wasm_simd(false)
            .wasm_relaxed_simd(false)
            .wasm_multi_memory(false)
            .wasm_memory64(false)
            .wasm_custom_page_sizes(false)
            .wasm_wide_arithmetic(false)
            .wasm_bulk_memory(true)
            .wasm_multi_value(true)
            .wasm_tail_call(true)
            .wasm_extended_const(true);
        let engine = Engine::new(&wasm).map_err(|e| setup(format!("{e:#}")))?;
        let linker = abi_linker(&engine).map_err(|e| setup(format!("{e:#}")))?;
        #[cfg(feature = "nn")]
        let watchlist = Arc::new(crate::nn::Watchlist::default());
        #[cfg(feature = "nn")]
        let sweep: Sweep = {
            let watchlist = watchlist.clone();
            Box::new(move || watchlist.sweep())
        };
        #[cfg(not(feature = "nn"))]
        let sweep: Sweep = Box::new(|| {});
        let ticker = Ticker::start(engine.clone(), sweep).map_err(|e| setup(format!("no ticker thread: {e}")))?;
        let cache = Mutex::new(ModuleCache::new(config.module_cache_entries));
        #[cfg(feature = "components")]
        let components = ComponentSide {
            linker: crate::component::linker(&engine).map_err(|e| setup(format!("{e:#}")))?,
            cache: Mutex::new(ModuleCache::new(config.module_cache_entries)),
        };
        Ok(Self {
            engine,
            linker,
            config,
            cache,
            ticker,
            #[cfg(feature = "nn")]
            inference: None,
            #[cfg(feature = "nn")]
            watchlist,
            #[cfg(feature = "components")]
            components,
        })
    }

    /// Offers wasi-nn to jobs, on `runtime` (see [`crate::nn`]). Without this, a job
    /// that imports wasi-nn fails as `Unsupported`.
    #[cfg(feature = "nn")]
    pub fn with_inference(mut self, runtime: Arc<crate::nn::OnnxRuntime>) -> Self {
        self.inference = Some(runtime);
        self.clear_cache();
        self
    }

    /// Whether jobs may import wasi-nn here.
    fn offers_nn(&self) -> bool {
        #[cfg(feature = "nn")]
        return self.inference.is_some();
        #[cfg(not(feature = "nn"))]
        false
    }

    /// The ONNX Runtime jobs' inference runs on, if this executor offers wasi-nn.
    #[cfg(feature = "nn")]
    pub fn inference(&self) -> Option<&crate::nn::OnnxRuntime> {
        self.inference.as_deref()
    }

    /// The configuration in use.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// Module cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.lock().map(|c| c.stats()).unwrap_or_default()
    }

    /// Empties the module cache (counters are kept).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
        #[cfg(feature = "components")]
        if let Ok(mut cache) = self.components.cache.lock() {
            cache.clear();
        }
    }

    /// Runs `job` with the device's data `inputs`, to completion or to a bound.
    pub fn run(&self, job: &Job<'_>, inputs: impl DataInputs + 'static) -> RunResult {
        let started = Instant::now();
        let limits = self.config.resolve(job.limits);
        #[cfg(feature = "components")]
        if crate::is_component(job.module) {
            return self.run_component(job, inputs, started, limits);
        }
        // Compiling (or the cache) first: the wall-clock bound starts at instantiation, so a
        // large module's compile time on a slow device is not taken from its run.
        let prepared = self.prepare(job.module);
        let instantiating = Instant::now();
        let host = Host::new(
            self.config.device_id.as_str(),
            job.args,
            job.inputs,
            Box::new(inputs),
            self.config.max_open_inputs,
            self.config.caps,
        );
        #[cfg(feature = "wasi")]
        let host = host.with_wasi_clock(Box::new(crate::wasi::StdWasiClock::new()));
        #[cfg(feature = "nn")]
        let nn = self.inference.clone().map(|runtime| {
            let deadline = limits.timeout_ms.map(|ms| instantiating + Duration::from_millis(u64::from(ms)));
            crate::nn::NnHost::new(
                runtime,
                job.accelerator,
                crate::nn::NnCaps::default(),
                (deadline, job.stop.clone()),
                self.watchlist.clone(),
            )
        });
        let data = Data {
            host,
            cap: MemoryCap::new(limits.memory_bytes()),
            memory: None,
            #[cfg(feature = "nn")]
            nn,
            #[cfg(feature = "nn")]
            timeout_ms: limits.timeout_ms.unwrap_or(0),
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|data| &mut data.cap);

        let ending = match (store.set_fuel(limits.fuel), prepared) {
            (Err(e), _) => Ending::Unsupported(format!("cannot set fuel: {e}")),
            (_, Err(message)) => Ending::Unsupported(message),
            (Ok(()), Ok(pre)) => {
                arm_deadline(&mut store, instantiating, limits.timeout_ms, job.stop.clone());
                let _running = self.ticker.running();
                execute(&mut store, &pre, job.entry_name())
            }
        };

        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let data = store.into_data();
        let refused = data.cap.refused.then_some(limits.memory_pages);
        conclude(data.host, ending, refused, fuel_used, duration_ms)
    }

    /// Runs a WASI 0.2 component under the same bounds (see [`crate::component`]).
    #[cfg(feature = "components")]
    fn run_component(
        &self,
        job: &Job<'_>,
        mut inputs: impl DataInputs + 'static,
        started: Instant,
        limits: crate::config::ResolvedLimits,
    ) -> RunResult {
        use crate::component::{Run, Sandbox};
        // The report's host state: caps and notes; the component's I/O goes through WASI.
        let mut host = Host::new(
            self.config.device_id.as_str(),
            job.args,
            job.inputs,
            Box::new(crate::inputs::NoInputs),
            self.config.max_open_inputs,
            self.config.caps,
        );
        let run =
            Run { args: job.args, listed: job.inputs, caps: self.config.caps, memory_bytes: limits.memory_bytes() };
        let mut fuel_used = 0;
        let mut refused = false;
        let ending = match self.prepare_component(job.module) {
            Err(message) => Ending::Unsupported(message),
            Ok(pre) => match (Instant::now(), Sandbox::new(&self.engine, &run, &mut inputs)) {
                (_, Err(message)) => Ending::Unsupported(message),
                // As for modules, the bound starts after compiling: a component's engine (a
                // JavaScript one is megabytes) takes the device seconds to compile.
                (instantiating, Ok(mut sandbox)) => {
                    let ending = match sandbox.store.set_fuel(limits.fuel) {
                        Err(e) => Ending::Unsupported(format!("cannot set fuel: {e}")),
                        Ok(()) => {
                            arm_deadline(&mut sandbox.store, instantiating, limits.timeout_ms, job.stop.clone());
                            let _running = self.ticker.running();
                            sandbox.execute(&pre, ending_of)
                        }
                    };
                    fuel_used = limits.fuel.saturating_sub(sandbox.store.get_fuel().unwrap_or(0));
                    refused = sandbox.memory_refused();
                    sandbox.drain_into(&mut host);
                    ending
                }
            },
        };
        let duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        conclude(host, ending, refused.then_some(limits.memory_pages), fuel_used, duration_ms)
    }

    /// The linked component for these bytes, from the cache or compiled and linked.
    #[cfg(feature = "components")]
    fn prepare_component(&self, bytes: &[u8]) -> Result<crate::component::Prepared, String> {
        let cache = &self.components.cache;
        let caching = cache.lock().map(|c| c.enabled()).unwrap_or(false);
        let key = caching.then(|| sha256(bytes));
        if let Some(pre) = cache.lock().ok().and_then(|mut c| c.get(key.as_ref())) {
            return Ok(pre);
        }
        let pre = crate::component::prepare(&self.engine, &self.components.linker, bytes)?;
        if let (Some(key), Ok(mut cache)) = (key, cache.lock()) {
            cache.insert(key, pre.clone());
        }
        Ok(pre)
    }

    /// The linked module for these bytes: from the cache, or compiled, checked against
    /// the ABI and linked. `Err` is the message of an `Unsupported` failure.
    fn prepare(&self, bytes: &[u8]) -> Result<InstancePre<Data>, String> {
        let caching = self.cache.lock().map(|c| c.enabled()).unwrap_or(false);
        let key = caching.then(|| sha256(bytes));
        if let Some(pre) = self.cache.lock().ok().and_then(|mut c| c.get(key.as_ref())) {
            return Ok(pre);
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| format!("invalid module: {e:#}"))?;
        for import in module.imports() {
            #[cfg(feature = "wasi")]
            if import.module() == crate::wasi::MODULE {
                let kind = |t: ValType| match t {
                    ValType::I32 => 'i',
                    ValType::I64 => 'I',
                    _ => '?',
                };
                let sig = match import.ty() {
                    ExternType::Func(ty) => Some(crate::wasi::signature(ty.params().map(kind), ty.results().map(kind))),
                    _ => None,
                };
                crate::wasi::check_import(import.name(), sig.as_deref(), true)?;
                continue;
            }
            let func = match import.ty() {
                ExternType::Func(ty) => Some(
                    if ty.params().all(|t| matches!(t, ValType::I32)) && ty.results().all(|t| matches!(t, ValType::I32))
                    {
                        Ok((ty.params().len(), ty.results().len()))
                    } else {
                        Err(())
                    },
                ),
                _ => None,
            };
            abi::check_import(import.module(), import.name(), func, self.offers_nn())?;
        }
        let pre = self.linker.instantiate_pre(&module).map_err(|e| format!("cannot link the module: {e:#}"))?;
        if let (Some(key), Ok(mut cache)) = (key, self.cache.lock()) {
            cache.insert(key, pre.clone());
        }
        Ok(pre)
    }
}

/// Instantiates and calls the entry, returning how it ended.
fn execute(store: &mut Store<Data>, pre: &InstancePre<Data>, entry: &str) -> Ending {
    let instance = match pre.instantiate(&mut *store) {
        Ok(instance) => instance,
        Err(e) if store.data().cap.refused => return Ending::OutOfMemory(format!("{e:#}")),
        Err(e) => return ending_of(e, "instantiation"),
    };
    let Some(memory) = instance.get_memory(&mut *store, MEMORY_EXPORT) else {
        return Ending::Unsupported(format!("the module exports no memory named `{MEMORY_EXPORT}`"));
    };
    store.data_mut().memory = Some(memory);
    #[cfg(feature = "wasi")]
    if entry == crate::abi::DEFAULT_ENTRY
        && instance.get_func(&mut *store, entry).is_none()
        && let Some(start) = instance.get_func(&mut *store, crate::wasi::COMMAND_ENTRY)
    {
        // A WASI command: `_start`, and its exit code through `proc_exit`.
        let Ok(start) = start.typed::<(), ()>(&*store) else {
            return Ending::Unsupported(format!("the entry `{}` must have type () -> ()", crate::wasi::COMMAND_ENTRY));
        };
        return match start.call(&mut *store, ()) {
            Ok(()) => Ending::Exited(0),
            Err(e) => ending_of(e, "run"),
        };
    }
    let Some(func) = instance.get_func(&mut *store, entry) else {
        return Ending::Unsupported(format!("the module exports no function `{entry}`"));
    };
    let Ok(func) = func.typed::<(), i32>(&*store) else {
        return Ending::Unsupported(format!("the entry `{entry}` must have type () -> i32"));
    };
    match func.call(&mut *store, ()) {
        Ok(code) => Ending::Returned(code),
        Err(e) => ending_of(e, "run"),
    }
}

/// Classifies a wasmtime error raised while running a job.
fn ending_of(error: ::wasmtime::Error, stage: &str) -> Ending {
    #[cfg(feature = "wasi")]
    if let Some(AbiTrap::Exit(code)) = error.downcast_ref::<AbiTrap>() {
        return Ending::Exited(*code);
    }
    if let Some(trap) = error.downcast_ref::<AbiTrap>() {
        return Ending::Trap(trap.to_string());
    }
    if let Some(interrupted) = error.downcast_ref::<Interrupted>() {
        return match *interrupted {
            Interrupted::Timeout(ms) => Ending::Timeout(ms),
            Interrupted::Stopped => Ending::Stopped,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Ending::OutOfFuel,
        Some(Trap::StackOverflow) => Ending::Trap(format!("stack overflow: {}", Trap::StackOverflow)),
        Some(trap) => Ending::Trap(trap.to_string()),
        None if stage == "instantiation" => Ending::Unsupported(format!("cannot instantiate the module: {error:#}")),
        None => Ending::Trap(format!("{error:#}")),
    }
}

/// Makes the store check the deadline and the stop signal at every epoch tick.
fn arm_deadline<T: 'static>(store: &mut Store<T>, from: Instant, timeout_ms: Option<u32>, stop: Option<StopSignal>) {
    let deadline = timeout_ms.map(|ms| (ms, from + Duration::from_millis(u64::from(ms))));
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if stop.as_ref().is_some_and(StopSignal::is_stopped) {
            return Err(::wasmtime::Error::new(Interrupted::Stopped));
        }
        match deadline {
            Some((ms, at)) if Instant::now() >= at => Err(::wasmtime::Error::new(Interrupted::Timeout(ms))),
            _ => Ok(UpdateDeadline::Continue(1)),
        }
    });
}

/// The linker with every ABI host function, built once per executor.
fn abi_linker(engine: &Engine) -> ::wasmtime::Result<Linker<Data>> {
    type R<T> = ::wasmtime::Result<T>;
    let mut linker = Linker::new(engine);
    linker.func_wrap(MODULE, "log", |mut c: Caller<'_, Data>, ptr: i32, len: i32| -> R<()> {
        let (mem, data) = memory(&mut c, "log")?;
        Ok(data.host.log(mem, ptr, len)?)
    })?;
    linker.func_wrap(MODULE, "output", |mut c: Caller<'_, Data>, ptr: i32, len: i32| -> R<i32> {
        let (mem, data) = memory(&mut c, "output")?;
        Ok(data.host.output(mem, ptr, len)?)
    })?;
    linker.func_wrap(MODULE, "arg_count", |c: Caller<'_, Data>| -> i32 { c.data().host.arg_count() })?;
    linker.func_wrap(MODULE, "arg_len", |c: Caller<'_, Data>, i: i32| -> i32 { c.data().host.arg_len(i) })?;
    linker.func_wrap(MODULE, "arg_read", |mut c: Caller<'_, Data>, i: i32, ptr: i32, len: i32| -> R<i32> {
        let (mem, data) = memory(&mut c, "arg_read")?;
        Ok(data.host.arg_read(mem, i, ptr, len)?)
    })?;
    linker.func_wrap(MODULE, "device_id", |mut c: Caller<'_, Data>, ptr: i32, len: i32| -> R<i32> {
        let (mem, data) = memory(&mut c, "device_id")?;
        Ok(data.host.device_id(mem, ptr, len)?)
    })?;
    linker.func_wrap(MODULE, "input_open", |mut c: Caller<'_, Data>, ptr: i32, len: i32| -> R<i32> {
        let (mem, data) = memory(&mut c, "input_open")?;
        Ok(data.host.input_open(mem, ptr, len)?)
    })?;
    linker.func_wrap(MODULE, "input_read", |mut c: Caller<'_, Data>, h: i32, ptr: i32, len: i32| -> R<i32> {
        let (mem, data) = memory(&mut c, "input_read")?;
        Ok(data.host.input_read(mem, h, ptr, len)?)
    })?;
    #[cfg(feature = "nn")]
    nn_linker(&mut linker)?;
    #[cfg(feature = "wasi")]
    wasi_linker(&mut linker)?;
    Ok(linker)
}

/// The WASI preview 1 functions (`crate::wasi`), each a line of glue.
#[cfg(feature = "wasi")]
fn wasi_linker(linker: &mut Linker<Data>) -> ::wasmtime::Result<()> {
    use crate::wasi::MODULE as W;
    type R<T> = ::wasmtime::Result<T>;
    macro_rules! with_memory {
        ($name:literal, |$host:ident, $mem:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {
            linker.func_wrap(W, $name, |mut c: Caller<'_, Data>, $($arg: $ty),*| -> R<i32> {
                let ($mem, data) = memory(&mut c, $name)?;
                let $host = &mut data.host;
                Ok($body?)
            })?;
        };
    }
    with_memory!("args_get", |h, m, argv: i32, buf: i32| h.wasi_args_get(m, argv, buf));
    with_memory!("args_sizes_get", |h, m, argc: i32, size: i32| h.wasi_args_sizes_get(m, argc, size));
    with_memory!("environ_get", |h, m, env: i32, buf: i32| h.wasi_environ_get(m, env, buf));
    with_memory!("environ_sizes_get", |h, m, count: i32, size: i32| h.wasi_environ_sizes_get(m, count, size));
    with_memory!("clock_res_get", |h, m, id: i32, res: i32| h.wasi_clock_res_get(m, id, res));
    with_memory!("clock_time_get", |h, m, id: i32, precision: i64, time: i32| h
        .wasi_clock_time_get(m, id, precision, time));
    with_memory!("fd_fdstat_get", |h, m, fd: i32, stat: i32| h.wasi_fd_fdstat_get(m, fd, stat));
    with_memory!("fd_filestat_get", |h, m, fd: i32, stat: i32| h.wasi_fd_filestat_get(m, fd, stat));
    with_memory!("fd_prestat_get", |h, m, fd: i32, stat: i32| h.wasi_fd_prestat_get(m, fd, stat));
    with_memory!("fd_prestat_dir_name", |h, m, fd: i32, path: i32, len: i32| h
        .wasi_fd_prestat_dir_name(m, fd, path, len));
    with_memory!("fd_read", |h, m, fd: i32, iovs: i32, n: i32, out: i32| h.wasi_fd_read(m, fd, iovs, n, out));
    with_memory!("fd_seek", |h, m, fd: i32, offset: i64, whence: i32, out: i32| h
        .wasi_fd_seek(m, fd, offset, whence, out));
    with_memory!("fd_write", |h, m, fd: i32, iovs: i32, n: i32, out: i32| h.wasi_fd_write(m, fd, iovs, n, out));
    with_memory!("random_get", |h, m, buf: i32, len: i32| h.wasi_random_get(m, buf, len));
    linker.func_wrap(
        W,
        "path_open",
        |mut c: Caller<'_, Data>,
         dirfd: i32,
         _dirflags: i32,
         path: i32,
         len: i32,
         oflags: i32,
         rights: i64,
         _inheriting: i64,
         _fdflags: i32,
         fd: i32|
         -> R<i32> {
            let (mem, data) = memory(&mut c, "path_open")?;
            Ok(data.host.wasi_path_open(mem, dirfd, path, len, oflags, rights, fd)?)
        },
    )?;
    linker.func_wrap(W, "fd_close", |mut c: Caller<'_, Data>, fd: i32| -> R<i32> {
        Ok(c.data_mut().host.wasi_fd_close(fd)?)
    })?;
    linker.func_wrap(W, "fd_fdstat_set_flags", |c: Caller<'_, Data>, fd: i32, flags: i32| -> R<i32> {
        Ok(c.data().host.wasi_fd_fdstat_set_flags(fd, flags)?)
    })?;
    linker.func_wrap(W, "proc_exit", |mut c: Caller<'_, Data>, code: i32| -> R<()> {
        Err(::wasmtime::Error::new(c.data_mut().host.wasi_proc_exit(code)))
    })?;
    linker.func_wrap(W, "sched_yield", |_c: Caller<'_, Data>| -> i32 { 0 })?;
    Ok(())
}

/// The wasi-nn functions. Only reachable by modules whose wasi-nn imports passed
/// `abi::check_import`, which needs an executor with inference; `nn` is then always there.
#[cfg(feature = "nn")]
fn nn_linker(linker: &mut Linker<Data>) -> ::wasmtime::Result<()> {
    use crate::nn::{Cut, NnHost};
    type R<T> = ::wasmtime::Result<T>;
    const M: &str = abi::NN_MODULE;
    fn nn<'a>(data: &'a mut Data, call: &'static str) -> R<(&'a mut NnHost, &'a mut Host)> {
        match data.nn.as_mut() {
            Some(nn) => Ok((nn, &mut data.host)),
            None => Err(::wasmtime::Error::msg(format!("{M}.{call}: this executor offers no wasi-nn"))),
        }
    }
    linker.func_wrap(M, "load", |mut c: Caller<'_, Data>, b: i32, n: i32, e: i32, t: i32, out: i32| -> R<i32> {
        let (mem, data) = memory(&mut c, "load")?;
        let (nn, host) = nn(data, "load")?;
        Ok(nn.load(mem, host, b, n, e, t, out)?)
    })?;
    linker.func_wrap(M, "load_by_name", |mut c: Caller<'_, Data>, p: i32, l: i32, out: i32| -> R<i32> {
        let (mem, data) = memory(&mut c, "load_by_name")?;
        Ok(nn(data, "load_by_name")?.0.load_by_name(mem, p, l, out)?)
    })?;
    linker.func_wrap(M, "init_execution_context", |mut c: Caller<'_, Data>, g: i32, out: i32| -> R<i32> {
        let (mem, data) = memory(&mut c, "init_execution_context")?;
        Ok(nn(data, "init_execution_context")?.0.init_execution_context(mem, g, out)?)
    })?;
    linker.func_wrap(M, "set_input", |mut c: Caller<'_, Data>, ctx: i32, i: i32, t: i32| -> R<i32> {
        let (mem, data) = memory(&mut c, "set_input")?;
        let (nn, host) = nn(data, "set_input")?;
        Ok(nn.set_input(mem, host, ctx, i, t)?)
    })?;
    linker.func_wrap(M, "compute", |mut c: Caller<'_, Data>, ctx: i32| -> R<i32> {
        let data = c.data_mut();
        let timeout_ms = data.timeout_ms;
        let (nn, host) = nn(data, "compute")?;
        nn.compute(host, ctx).map_err(|cut| match cut {
            Cut::Deadline => ::wasmtime::Error::new(Interrupted::Timeout(timeout_ms)),
            Cut::Stopped => ::wasmtime::Error::new(Interrupted::Stopped),
        })
    })?;
    linker.func_wrap(
        M,
        "get_output",
        |mut c: Caller<'_, Data>, ctx: i32, i: i32, out: i32, max: i32, written: i32| -> R<i32> {
            let (mem, data) = memory(&mut c, "get_output")?;
            Ok(nn(data, "get_output")?.0.get_output(mem, ctx, i, out, max, written)?)
        },
    )?;
    Ok(())
}

/// The job's memory and the store data, borrowed together. Falls back to looking the
/// export up, for host calls made by a start function before `execute` records it.
fn memory<'a>(caller: &'a mut Caller<'_, Data>, call: &'static str) -> Result<(&'a mut [u8], &'a mut Data), AbiTrap> {
    let memory = match caller.data().memory {
        Some(memory) => Some(memory),
        None => caller.get_export(MEMORY_EXPORT).and_then(Extern::into_memory),
    };
    let memory = memory.ok_or(AbiTrap::NoMemory { call })?;
    Ok(memory.data_and_store_mut(caller))
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> ::wasmtime::Result<bool> {
        Ok(MemoryCap::memory_growing(self, desired))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> ::wasmtime::Result<bool> {
        Ok(MemoryCap::table_growing(self, desired))
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }
}

/// Work the ticker does on every tick besides advancing the epoch (with wasi-nn: cutting
/// inferences that are past their bound, see `nn::Watchlist`).
type Sweep = Box<dyn Fn() + Send>;

/// Advances the engine's epoch every [`TICK`] while at least one job runs, and sleeps
/// otherwise (no wake-ups on an idle gateway).
struct Ticker {
    active: Arc<AtomicUsize>,
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, sweep: Sweep) -> std::io::Result<Self> {
        let active = Arc::new(AtomicUsize::new(0));
        let quit = Arc::new(AtomicBool::new(false));
        let (a, q) = (active.clone(), quit.clone());
        let thread = thread::Builder::new().name("fleet-epoch".to_string()).spawn(move || {
            while !q.load(Ordering::Acquire) {
                if a.load(Ordering::Acquire) == 0 {
                    thread::park();
                } else {
                    thread::sleep(TICK);
                    engine.increment_epoch();
                    sweep();
                }
            }
        })?;
        Ok(Self { active, quit, thread: Some(thread) })
    }

    /// Keeps the ticker running until the guard drops.
    fn running(&self) -> Running<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
        Running(self)
    }
}

struct Running<'a>(&'a Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
