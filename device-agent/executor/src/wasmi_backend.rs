//! The microcontroller backend: the wasmi interpreter, `no_std` + `alloc`.
//!
//! How each bound is enforced, and why this way:
//! * **fuel** (`Config::consume_fuel`): the budget, and on a device without a clock the
//!   only time bound there is (a budget of N fuel is at most about N instructions);
//! * **wall clock and stop signal**: an interpreter has no epoch to interrupt it, so when
//!   a [`Clock`] is installed or the job carries a [`StopSignal`], the budget is handed
//!   out in slices of `ExecutorConfig::fuel_slice` with a *resumable* call; each time a
//!   slice runs out the executor checks the clock and the signal, then resumes. Without
//!   either, the whole budget is given at once (no resumption overhead);
//! * **slices for the caller**: [`WasmiExecutor::start`] and [`WasmiExecutor::resume`]
//!   hand the pauses between slices to the caller, so a single-task firmware answers its
//!   link (keep-alives, new envelopes, a cancel) while a job runs; [`WasmiExecutor::run`]
//!   is the same loop with nothing in between;
//! * **memory**: wasmi's `ResourceLimiter` refuses growth past the cap (and with it,
//!   allocations the firmware's heap could not afford anyway);
//! * **stack**: wasmi's value-stack height and recursion depth limits
//!   (`stack_bytes`, `max_call_depth`); exhausting either is a stack-overflow trap.
//!
//! The features enabled are the same portable set as on wasmtime (see
//! [`crate::WasmtimeExecutor`]): Wasm 2.0 plus tail calls and extended constants.
//! Validated modules are cached by SHA-256 like on wasmtime (one entry on a
//! microcontroller by default).
//!
//! Runs take `&mut self`: the firmware runs one job at a time, and the cache then needs
//! no lock.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;

use ::wasmi::{
    Caller, CompilationMode, Config, CustomFuelCosts, Engine, Error, Extern, ExternType, FuncType, Linker, Memory,
    Module, ResourceLimiter, Store, TrapCode, TypedFunc, TypedResumableCall, TypedResumableCallOutOfFuel, Val, ValType,
};
use fleet_schemas::digest::sha256;
use wasmi_core::LimiterError;

use crate::abi::{self, AbiTrap, Host, MEMORY_EXPORT, MODULE};
use crate::cache::{CacheStats, ModuleCache};
use crate::config::{ExecutorConfig, SetupError};
use crate::control::{Clock, StopSignal};
use crate::inputs::DataInputs;
use crate::job::Job;
use crate::limiter::MemoryCap;
use crate::outcome::{Ending, RunResult, conclude};

/// The smallest value stack wasmi accepts, in bytes.
const MIN_STACK_BYTES: usize = 1024;

/// Runs jobs on wasmi.
pub struct WasmiExecutor {
    wasm: Config,
    engine: Engine,
    linker: Linker<Data>,
    config: ExecutorConfig,
    cache: ModuleCache<Module>,
    clock: Option<Arc<dyn Clock>>,
}

/// A store's data: the ABI host state plus what the runtime glue needs.
struct Data {
    host: Host,
    cap: MemoryCap,
    memory: Option<Memory>,
}

impl WasmiExecutor {
    /// An executor with `config`. With the `std` feature it keeps time with
    /// [`StdClock`](crate::StdClock); without, it has no clock until
    /// [`WasmiExecutor::with_clock`] gives it one, and `timeout_ms` is not enforced.
    pub fn new(config: ExecutorConfig) -> Result<Self, SetupError> {
        if config.stack_bytes < MIN_STACK_BYTES {
            return Err(SetupError {
                runtime: "wasmi",
                message: format!("stack_bytes must be at least {MIN_STACK_BYTES}, not {}", config.stack_bytes),
            });
        }
        let mut wasm = Config::default();
        // Translating a function costs no fuel: wasmi translates lazily, on a function's
        // first call, and a translation that runs out of fuel ends the call for good
        // rather than pausing it, so a job's result would depend on where its fuel
        // slices fall. Translation is bounded by the module's size instead, as on
        // wasmtime, which compiles before the job runs.
        let fuel_costs =
            CustomFuelCosts { bytes_copied_per_fuel: 64, fuel_per_bytes_translated: 0, fuel_per_bytes_validated: 0 };
        wasm.consume_fuel(true)
            .fuel_cost(fuel_costs)
            .compilation_mode(CompilationMode::LazyTranslation)
            .set_max_stack_height(config.stack_bytes)
            .set_max_recursion_depth(config.max_call_depth)
            .wasm_multi_memory(false)
            .wasm_custom_page_sizes(false)
            .wasm_wide_arithmetic(false)
            .wasm_bulk_memory(true)
            .wasm_reference_types(true)
            .wasm_multi_value(true)
            .wasm_tail_call(true)
            .wasm_extended_const(true);
        let engine = Engine::new(&wasm);
        let linker = abi_linker(&engine).map_err(|e| SetupError { runtime: "wasmi", message: e.to_string() })?;
        let cache = ModuleCache::new(config.module_cache_entries);
        #[cfg(feature = "std")]
        let clock: Option<Arc<dyn Clock>> = Some(Arc::new(crate::control::StdClock::new()));
        #[cfg(not(feature = "std"))]
        let clock: Option<Arc<dyn Clock>> = None;
        Ok(Self { wasm, engine, linker, config, cache, clock })
    }

    /// Uses `clock` for timeouts and `duration_ms` (the firmware's timer); without `std`,
    /// also for a WASI job's monotonic clock ([`RunClock`](crate::wasi::RunClock)).
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Runs without a clock: fuel is the only bound, `duration_ms` is 0.
    pub fn without_clock(mut self) -> Self {
        self.clock = None;
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// Module cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Empties the module cache (counters are kept).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// Runs `job` with the device's data `inputs`, to completion or to a bound.
    pub fn run(&mut self, job: &Job<'_>, inputs: impl DataInputs + 'static) -> RunResult {
        let mut run = self.start(job, inputs);
        loop {
            match self.resume(run) {
                Slice::Finished(result) => return result,
                Slice::Paused(paused) => run = paused,
            }
        }
    }

    /// Prepares and instantiates `job`, without running its entry yet: each
    /// [`WasmiExecutor::resume`] then runs it for one fuel slice, so the caller can do
    /// its own work in between (a firmware answering its link while a job runs). The
    /// module bytes are not needed after this call.
    ///
    /// A job is sliced when it carries a [`StopSignal`](crate::StopSignal) or has a
    /// timeout to check against a clock; otherwise it gets its whole budget at once and
    /// the first `resume` runs it to its end. Where it is sliced changes nothing about
    /// what it does: it gets the same fuel in total and stops at the same instruction
    /// when that runs out, so its output, its fuel used and its ending are the same.
    /// Instantiation (data segments, a start function) is not sliced.
    pub fn start(&mut self, job: &Job<'_>, inputs: impl DataInputs + 'static) -> WasmiRun {
        let started = self.now();
        let limits = self.config.resolve(job.limits);
        let host = Host::new(
            self.config.device_id.as_str(),
            job.args,
            job.inputs,
            Box::new(inputs),
            self.config.max_open_inputs,
            self.config.caps,
        );
        #[cfg(all(feature = "wasi", feature = "std"))]
        let host = host.with_wasi_clock(Box::new(crate::wasi::StdWasiClock::new()));
        // A device without std (a microcontroller) has no wall clock or randomness to
        // offer, but its timer is a monotonic clock.
        #[cfg(all(feature = "wasi", not(feature = "std")))]
        let host = match (&self.clock, started) {
            (Some(clock), Some(start_ms)) => {
                host.with_wasi_clock(Box::new(crate::wasi::RunClock::new(clock.clone(), start_ms)))
            }
            _ => host,
        };
        // Prepare first: it may start a fresh engine, and the store must live in the
        // engine the module was compiled in.
        let prepared = self.prepare(job.module);
        let mut store =
            Store::new(&self.engine, Data { host, cap: MemoryCap::new(limits.memory_bytes()), memory: None });
        store.limiter(|data| &mut data.cap);
        // The bound starts at instantiation, as on gateways: parsing is not counted.
        let deadline = match (self.now().or(started), limits.timeout_ms) {
            (Some(start), Some(ms)) => Some((ms, start.saturating_add(u64::from(ms)))),
            _ => None,
        };
        let slice = if deadline.is_some() || job.stop.is_some() { self.config.fuel_slice.max(1) } else { u64::MAX };
        let mut run = WasmiRun {
            store,
            state: RunState::Ended(Ending::OutOfFuel),
            memory_pages: limits.memory_pages,
            started,
            deadline,
            stop: job.stop.clone(),
            slice,
            reserve: 0,
            fuel_given: 0,
            slices: 0,
        };
        run.state = match prepared {
            Err(message) => RunState::Ended(Ending::Unsupported(message)),
            Ok(module) => self.instantiate(&mut run, &module, job, limits.fuel),
        };
        run
    }

    /// Runs `run` for its next fuel slice, after checking its stop signal and its
    /// deadline: `Paused` when the slice ran out and fuel is left, `Finished` when the
    /// job ended (returned, trapped, ran out of its budget, timed out or was stopped).
    pub fn resume(&self, mut run: WasmiRun) -> Slice {
        let progress = match core::mem::replace(&mut run.state, RunState::Running) {
            RunState::Ended(ending) => return Slice::Finished(self.finish(run, ending)),
            RunState::Running => return Slice::Finished(self.finish(run, Ending::OutOfFuel)),
            RunState::Ready(func) => {
                progress(func.call_resumable(&mut run.store, ()), RunState::Paused, Ending::Returned)
            }
            #[cfg(feature = "wasi")]
            RunState::ReadyCommand(func) => {
                progress(func.call_resumable(&mut run.store, ()), RunState::PausedCommand, |()| Ending::Exited(0))
            }
            paused => {
                if run.stop.as_ref().is_some_and(|s| s.is_stopped()) {
                    return Slice::Finished(self.finish(run, Ending::Stopped));
                }
                if let (Some((ms, at)), Some(now)) = (run.deadline, self.now())
                    && now >= at
                {
                    return Slice::Finished(self.finish(run, Ending::Timeout(ms)));
                }
                let have = run.store.get_fuel().unwrap_or(0);
                let need = paused.required_fuel().saturating_sub(have);
                let give = run.slice.min(run.reserve).max(need);
                run.reserve -= give;
                if run.store.set_fuel(have + give).is_err() {
                    return Slice::Finished(self.finish(run, Ending::OutOfFuel));
                }
                run.fuel_given += give;
                match paused {
                    RunState::Paused(pending) => {
                        progress(pending.resume(&mut run.store), RunState::Paused, Ending::Returned)
                    }
                    #[cfg(feature = "wasi")]
                    RunState::PausedCommand(pending) => {
                        progress(pending.resume(&mut run.store), RunState::PausedCommand, |()| Ending::Exited(0))
                    }
                    _ => Progress::Done(Ending::OutOfFuel),
                }
            }
        };
        run.slices += 1;
        let ending = match progress {
            Progress::Done(ending) => ending,
            Progress::OutOfFuel(required, paused) => {
                let have = run.store.get_fuel().unwrap_or(0);
                let need = required.saturating_sub(have);
                if run.reserve == 0 || need > run.reserve {
                    // Out of the whole budget: where an unsliced run stops too.
                    Ending::OutOfFuel
                } else {
                    run.state = paused;
                    return Slice::Paused(run);
                }
            }
        };
        Slice::Finished(self.finish(run, ending))
    }

    /// The result of a run that ended with `ending`.
    fn finish(&self, run: WasmiRun, ending: Ending) -> RunResult {
        let WasmiRun { store, fuel_given, started, memory_pages, .. } = run;
        let fuel_used = fuel_given.saturating_sub(store.get_fuel().unwrap_or(0));
        let duration_ms = match (started, self.now()) {
            (Some(start), Some(end)) => u32::try_from(end.saturating_sub(start)).unwrap_or(u32::MAX),
            _ => 0,
        };
        let data = store.into_data();
        let refused = data.cap.refused.then_some(memory_pages);
        conclude(data.host, ending, refused, fuel_used, duration_ms)
    }

    fn now(&self) -> Option<u64> {
        self.clock.as_ref().map(|clock| clock.now_ms())
    }

    /// The validated module for these bytes, from the cache or checked against the ABI.
    /// `Err` is the message of an `Unsupported` failure.
    fn prepare(&mut self, bytes: &[u8]) -> Result<Module, String> {
        let key = self.cache.enabled().then(|| sha256(bytes));
        if let Some(module) = self.cache.get(key.as_ref()) {
            return Ok(module);
        }
        if self.config.module_cache_entries <= 1 {
            // A wasmi engine keeps the code of every module compiled in it for its whole
            // life. With at most one module cached (the microcontroller default), the
            // cached one is about to be replaced anyway: start a fresh engine so the
            // heap holds one module's code, not every module the device has ever run.
            self.cache.clear();
            self.engine = Engine::new(&self.wasm);
            self.linker = abi_linker(&self.engine).map_err(|e| format!("cannot set up the engine: {e}"))?;
        }
        if crate::is_component(bytes) {
            return Err(String::from(
                "the module is a WASI 0.2 component, which runs on gateways only: build the job as a core module \
                 (wasm32-wasip1, or the fleet job ABI) for a microcontroller",
            ));
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| format!("invalid module: {e}"))?;
        for import in module.imports() {
            #[cfg(feature = "wasi")]
            if import.module() == crate::wasi::MODULE {
                let kind = |t: &ValType| match t {
                    ValType::I32 => 'i',
                    ValType::I64 => 'I',
                    _ => '?',
                };
                let sig = match import.ty() {
                    ExternType::Func(ty) => {
                        Some(crate::wasi::signature(ty.params().iter().map(kind), ty.results().iter().map(kind)))
                    }
                    _ => None,
                };
                crate::wasi::check_import(import.name(), sig.as_deref(), true)?;
                continue;
            }
            let func = match import.ty() {
                ExternType::Func(ty) => {
                    Some(if ty.params().iter().chain(ty.results()).all(|t| matches!(t, ValType::I32)) {
                        Ok((ty.params().len(), ty.results().len()))
                    } else {
                        Err(())
                    })
                }
                _ => None,
            };
            // No inference on microcontrollers.
            abi::check_import(import.module(), import.name(), func, false)?;
        }
        if let Some(key) = key {
            self.cache.insert(key, module.clone());
        }
        Ok(module)
    }

    /// Instantiates the module with the whole budget, finds the entry, and holds the
    /// budget back but for the first slice.
    fn instantiate(&self, run: &mut WasmiRun, module: &Module, job: &Job<'_>, fuel: u64) -> RunState {
        let store = &mut run.store;
        // Instantiation (data segments, a start function) gets the whole budget.
        if let Err(e) = store.set_fuel(fuel) {
            return RunState::Ended(Ending::Unsupported(format!("cannot set fuel: {e}")));
        }
        run.fuel_given = fuel;
        let instance = match self.linker.instantiate_and_start(&mut *store, module) {
            Ok(instance) => instance,
            Err(e) if store.data().cap.refused => return RunState::Ended(Ending::OutOfMemory(e.to_string())),
            Err(e) => return RunState::Ended(ending_of(&e, true)),
        };
        let Some(memory) = instance.get_memory(&*store, MEMORY_EXPORT) else {
            return RunState::Ended(Ending::Unsupported(format!(
                "the module exports no memory named `{MEMORY_EXPORT}`"
            )));
        };
        store.data_mut().memory = Some(memory);
        let entry = job.entry_name();
        #[cfg(feature = "wasi")]
        let command = (entry == abi::DEFAULT_ENTRY && instance.get_func(&*store, entry).is_none())
            .then(|| instance.get_func(&*store, crate::wasi::COMMAND_ENTRY))
            .flatten();
        #[cfg(feature = "wasi")]
        if let Some(start) = command {
            // A WASI command: `_start`, and its exit code through `proc_exit`.
            let Ok(start) = start.typed::<(), ()>(&*store) else {
                return RunState::Ended(Ending::Unsupported(format!(
                    "the entry `{}` must have type () -> ()",
                    crate::wasi::COMMAND_ENTRY
                )));
            };
            return hold_back(run, RunState::ReadyCommand(start));
        }
        if instance.get_func(&*store, entry).is_none() {
            return RunState::Ended(Ending::Unsupported(format!("the module exports no function `{entry}`")));
        }
        let Ok(func) = instance.get_typed_func::<(), i32>(&*store, entry) else {
            return RunState::Ended(Ending::Unsupported(format!("the entry `{entry}` must have type () -> i32")));
        };
        hold_back(run, RunState::Ready(func))
    }
}

/// Holds the budget back but for the first slice, and starts in `ready`.
fn hold_back(run: &mut WasmiRun, ready: RunState) -> RunState {
    // What is left of the budget, handed out in slices.
    let left = run.store.get_fuel().unwrap_or(0);
    run.reserve = left.saturating_sub(run.slice);
    if run.store.set_fuel(left - run.reserve).is_err() {
        return RunState::Ended(Ending::OutOfFuel);
    }
    run.fuel_given -= run.reserve;
    ready
}

/// A job on wasmi between two fuel slices (see [`WasmiExecutor::start`]). Dropping it
/// abandons the job.
pub struct WasmiRun {
    store: Store<Data>,
    state: RunState,
    memory_pages: u32,
    started: Option<u64>,
    /// The timeout and when it is reached, on the executor's clock.
    deadline: Option<(u32, u64)>,
    stop: Option<StopSignal>,
    /// Fuel per slice (`u64::MAX`: unsliced).
    slice: u64,
    /// Budget not yet handed to the store.
    reserve: u64,
    /// Fuel handed to the store so far.
    fuel_given: u64,
    slices: u32,
}

impl WasmiRun {
    /// Slices run so far.
    pub fn slices(&self) -> u32 {
        self.slices
    }
}

/// What one call or resumption did: ended, or ran out of its slice (with the fuel the
/// next step needs, and the state to resume from).
enum Progress {
    Done(Ending),
    OutOfFuel(u64, RunState),
}

fn progress<R>(
    call: Result<TypedResumableCall<R>, Error>,
    paused: fn(TypedResumableCallOutOfFuel<R>) -> RunState,
    done: fn(R) -> Ending,
) -> Progress {
    match call {
        Ok(TypedResumableCall::Finished(value)) => Progress::Done(done(value)),
        Ok(TypedResumableCall::HostTrap(trap)) => Progress::Done(ending_of(trap.host_error(), false)),
        Err(e) => Progress::Done(ending_of(&e, false)),
        Ok(TypedResumableCall::OutOfFuel(pending)) => Progress::OutOfFuel(pending.required_fuel(), paused(pending)),
    }
}

impl RunState {
    /// The fuel a paused call needs to make progress.
    fn required_fuel(&self) -> u64 {
        match self {
            Self::Paused(pending) => pending.required_fuel(),
            #[cfg(feature = "wasi")]
            Self::PausedCommand(pending) => pending.required_fuel(),
            _ => 0,
        }
    }
}

/// Where a [`WasmiRun`] stands.
enum RunState {
    /// Instantiated; the entry not yet called.
    Ready(TypedFunc<(), i32>),
    /// A slice ran out of fuel, and the budget has more.
    Paused(TypedResumableCallOutOfFuel<i32>),
    /// A WASI command (`_start`), instantiated, not yet called.
    #[cfg(feature = "wasi")]
    ReadyCommand(TypedFunc<(), ()>),
    /// A WASI command paused between slices.
    #[cfg(feature = "wasi")]
    PausedCommand(TypedResumableCallOutOfFuel<()>),
    /// Ended before the entry ran (an unsupported module, a trap in instantiation).
    Ended(Ending),
    /// Inside [`WasmiExecutor::resume`].
    Running,
}

/// What one [`WasmiExecutor::resume`] left.
#[allow(clippy::large_enum_variant)]
pub enum Slice {
    /// The slice ran out of fuel and the job has more: resume it when ready.
    Paused(WasmiRun),
    /// The job ended.
    Finished(RunResult),
}

/// Classifies a wasmi error raised while running a job.
fn ending_of(error: &Error, instantiating: bool) -> Ending {
    #[cfg(feature = "wasi")]
    if let Some(AbiTrap::Exit(code)) = error.downcast_ref::<AbiTrap>() {
        return Ending::Exited(*code);
    }
    if let Some(trap) = error.downcast_ref::<AbiTrap>() {
        return Ending::Trap(trap.to_string());
    }
    match error.as_trap_code() {
        Some(TrapCode::OutOfFuel) => Ending::OutOfFuel,
        Some(TrapCode::StackOverflow) => Ending::Trap(format!("stack overflow: {error}")),
        Some(_) => Ending::Trap(error.to_string()),
        None if instantiating => Ending::Unsupported(format!("cannot instantiate the module: {error}")),
        None => Ending::Trap(error.to_string()),
    }
}

impl ::wasmi::errors::HostError for AbiTrap {}

/// One host function's glue: takes its arguments from `args` (wasmi has checked their
/// types against the signature the function was linked with) and returns its `i32`
/// result, if it has one.
type Glue = fn(&mut Caller<'_, Data>, &[Val]) -> Result<Option<i32>, Error>;

/// Argument `i` as an `i32`.
fn i32_arg(args: &[Val], i: usize) -> i32 {
    args.get(i).and_then(Val::i32).unwrap_or_default()
}

/// Argument `i` as an `i64`.
#[cfg(feature = "wasi")]
fn i64_arg(args: &[Val], i: usize) -> i64 {
    args.get(i).and_then(Val::i64).unwrap_or_default()
}

/// A host call on the job's memory: `$call(memory, args...)` of `Host`, its `i32` result.
macro_rules! on_memory {
    ($name:literal, $call:ident $(, $arg:ident($i:literal))*) => {
        |c, a| {
            let (mem, data) = memory(c, $name)?;
            data.host.$call(mem $(, $arg(a, $i))*).map(Some).map_err(Error::host)
        }
    };
}

/// The fleet ABI's glue, by name; the signatures are [`abi::IMPORTS`].
const ABI_GLUE: &[(&str, Glue)] = &[
    ("log", |c, a| {
        let (mem, data) = memory(c, "log")?;
        data.host.log(mem, i32_arg(a, 0), i32_arg(a, 1)).map(|()| None).map_err(Error::host)
    }),
    ("output", on_memory!("output", output, i32_arg(0), i32_arg(1))),
    ("arg_count", |c, _| Ok(Some(c.data().host.arg_count()))),
    ("arg_len", |c, a| Ok(Some(c.data().host.arg_len(i32_arg(a, 0))))),
    ("arg_read", on_memory!("arg_read", arg_read, i32_arg(0), i32_arg(1), i32_arg(2))),
    ("device_id", on_memory!("device_id", device_id, i32_arg(0), i32_arg(1))),
    ("input_open", on_memory!("input_open", input_open, i32_arg(0), i32_arg(1))),
    ("input_read", on_memory!("input_read", input_read, i32_arg(0), i32_arg(1), i32_arg(2))),
];

/// The WASI preview 1 glue (`crate::wasi`), by name; the signatures are
/// [`crate::wasi::IMPORTS`].
#[cfg(feature = "wasi")]
const WASI_GLUE: &[(&str, Glue)] = &[
    ("args_get", on_memory!("args_get", wasi_args_get, i32_arg(0), i32_arg(1))),
    ("args_sizes_get", on_memory!("args_sizes_get", wasi_args_sizes_get, i32_arg(0), i32_arg(1))),
    ("environ_get", on_memory!("environ_get", wasi_environ_get, i32_arg(0), i32_arg(1))),
    ("environ_sizes_get", on_memory!("environ_sizes_get", wasi_environ_sizes_get, i32_arg(0), i32_arg(1))),
    ("clock_res_get", on_memory!("clock_res_get", wasi_clock_res_get, i32_arg(0), i32_arg(1))),
    ("clock_time_get", on_memory!("clock_time_get", wasi_clock_time_get, i32_arg(0), i64_arg(1), i32_arg(2))),
    ("fd_close", |c, a| c.data_mut().host.wasi_fd_close(i32_arg(a, 0)).map(Some).map_err(Error::host)),
    ("fd_fdstat_get", on_memory!("fd_fdstat_get", wasi_fd_fdstat_get, i32_arg(0), i32_arg(1))),
    ("fd_fdstat_set_flags", |c, a| {
        c.data().host.wasi_fd_fdstat_set_flags(i32_arg(a, 0), i32_arg(a, 1)).map(Some).map_err(Error::host)
    }),
    ("fd_filestat_get", on_memory!("fd_filestat_get", wasi_fd_filestat_get, i32_arg(0), i32_arg(1))),
    ("fd_prestat_get", on_memory!("fd_prestat_get", wasi_fd_prestat_get, i32_arg(0), i32_arg(1))),
    (
        "fd_prestat_dir_name",
        on_memory!("fd_prestat_dir_name", wasi_fd_prestat_dir_name, i32_arg(0), i32_arg(1), i32_arg(2)),
    ),
    ("fd_read", on_memory!("fd_read", wasi_fd_read, i32_arg(0), i32_arg(1), i32_arg(2), i32_arg(3))),
    ("fd_seek", on_memory!("fd_seek", wasi_fd_seek, i32_arg(0), i64_arg(1), i32_arg(2), i32_arg(3))),
    ("fd_write", on_memory!("fd_write", wasi_fd_write, i32_arg(0), i32_arg(1), i32_arg(2), i32_arg(3))),
    // (dirfd, dirflags, path, len, oflags, rights base, rights inheriting, fdflags, fd)
    (
        "path_open",
        on_memory!("path_open", wasi_path_open, i32_arg(0), i32_arg(2), i32_arg(3), i32_arg(4), i64_arg(5), i32_arg(8)),
    ),
    ("proc_exit", |c, a| Err(Error::host(c.data_mut().host.wasi_proc_exit(i32_arg(a, 0))))),
    ("random_get", on_memory!("random_get", wasi_random_get, i32_arg(0), i32_arg(1))),
    ("sched_yield", |_, _| Ok(Some(0))),
];

/// Links `glue` as `module.name` of type `ty`. Every host function goes through this
/// one closure type, so wasmi's host trampoline is compiled once, not once per
/// function: on a microcontroller that is most of what a host function costs in flash.
fn link(linker: &mut Linker<Data>, module: &str, name: &str, ty: FuncType, glue: Glue) -> Result<(), Error> {
    linker.func_new(module, name, ty, move |mut caller, args, results| {
        let result = glue(&mut caller, args)?;
        if let (Some(value), Some(slot)) = (result, results.first_mut()) {
            *slot = Val::I32(value);
        }
        Ok(())
    })?;
    Ok(())
}

/// A glue table without its signature in the ABI's table: a bug in this file.
fn unlisted(module: &str, name: &str) -> Error {
    Error::new(format!("host function `{module}.{name}` has glue but no signature"))
}

/// The linker with every ABI host function, built once per executor.
fn abi_linker(engine: &Engine) -> Result<Linker<Data>, Error> {
    let mut linker = Linker::new(engine);
    for &(name, glue) in ABI_GLUE {
        let (params, results) = abi::import_signature(MODULE, name, false).ok_or_else(|| unlisted(MODULE, name))?;
        let ty = FuncType::new(core::iter::repeat_n(ValType::I32, params), core::iter::repeat_n(ValType::I32, results));
        link(&mut linker, MODULE, name, ty, glue)?;
    }
    #[cfg(feature = "wasi")]
    for &(name, glue) in WASI_GLUE {
        use crate::wasi::MODULE as W;
        let sig = crate::wasi::import_signature(name).ok_or_else(|| unlisted(W, name))?;
        let (params, results) = sig.split_once('>').ok_or_else(|| unlisted(W, name))?;
        let ty = |s: &str| {
            s.chars().map(|c| if c == 'I' { ValType::I64 } else { ValType::I32 }).collect::<alloc::vec::Vec<_>>()
        };
        link(&mut linker, W, name, FuncType::new(ty(params), ty(results)), glue)?;
    }
    Ok(linker)
}

/// The job's memory and the store data, borrowed together. Falls back to looking the
/// export up, for host calls made by a start function before `execute` records it.
fn memory<'a>(caller: &'a mut Caller<'_, Data>, call: &'static str) -> Result<(&'a mut [u8], &'a mut Data), Error> {
    let memory = match caller.data().memory {
        Some(memory) => Some(memory),
        None => caller.get_export(MEMORY_EXPORT).and_then(Extern::into_memory),
    };
    let memory = memory.ok_or_else(|| Error::host(AbiTrap::NoMemory { call }))?;
    Ok(memory.data_and_store_mut(caller))
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Ok(MemoryCap::memory_growing(self, desired))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Ok(MemoryCap::table_growing(self, desired))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}
