//! WASI 0.2 components (`wasi:cli/run`) on the gateway backend.
//!
//! Some toolchains emit only components: componentize-py, componentize-js/jco, Rust's
//! `wasm32-wasip2`. A component is not a core module, so neither the fleet ABI nor the
//! preview 1 subset of [`crate::wasi`] applies; it gets WASI 0.2 from wasmtime-wasi,
//! configured to see what a preview 1 job sees and nothing more:
//!
//! * **argv** `job` then the job's args; an empty environment; an empty stdin;
//! * **stdout** is the execution's output and **stderr** its logs, under the same caps
//!   (past them, bytes are dropped and the report says so, never a trap);
//! * **files**: one preopened read-only directory, `/inputs`, holding the data inputs the
//!   spec lists and the device has, copied into a private directory for the run (a
//!   component reads files through wasi:filesystem, which needs a real directory; the
//!   copy is removed when the run ends); nothing else of the host's file system;
//! * **no sockets**: TCP, UDP and name lookup are off and every address is refused;
//! * clocks and random are the host's, as for a preview 1 job on a gateway.
//!
//! The bounds are those of every job: fuel and the epoch deadline on the same engine,
//! and a resource limiter that counts the growth of all the component's memories against
//! the one memory cap (a component instantiates several core modules).
//!
//! Microcontrollers run no components: wasmi has no component model, and the smallest
//! component (std Rust) is several times a board's module limit.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ::wasmtime::component::{Component, Linker, ResourceTable};
use ::wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::abi::Host;
use crate::config::OutputCaps;
use crate::inputs::DataInputs;
use crate::limiter::MemoryCap;
use crate::outcome::Ending;

/// How a device lists WASI 0.2 components in its status (`DeviceStatus::wasi`).
pub const VERSION: &str = "0.2";

/// A store's data for a component run.
pub(crate) struct ComponentData {
    ctx: WasiCtx,
    table: ResourceTable,
    cap: AllMemories,
}

impl WasiView for ComponentData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// A component linked to WASI 0.2, ready to instantiate (what the cache keeps).
pub(crate) type Prepared = CommandPre<ComponentData>;

/// The linker with WASI 0.2 (synchronous bindings), built once per executor.
pub(crate) fn linker(engine: &Engine) -> ::wasmtime::Result<Linker<ComponentData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    Ok(linker)
}

/// Compiles and links `bytes`; `Err` is the message of an `Unsupported` failure (not a
/// component of `wasi:cli/run`, or importing what WASI 0.2 does not define).
pub(crate) fn prepare(engine: &Engine, linker: &Linker<ComponentData>, bytes: &[u8]) -> Result<Prepared, String> {
    let component = Component::new(engine, bytes).map_err(|e| format!("invalid component: {e:#}"))?;
    let pre = linker.instantiate_pre(&component).map_err(|e| format!("cannot link the component: {e:#}"))?;
    CommandPre::new(pre).map_err(|e| format!("the component is not a WASI command (wasi:cli/run): {e:#}"))
}

/// What a component run needs besides the engine: its args, the inputs it may read, the
/// caps, the memory bound.
pub(crate) struct Run<'a> {
    pub(crate) args: &'a [String],
    pub(crate) listed: &'a [String],
    pub(crate) caps: OutputCaps,
    pub(crate) memory_bytes: usize,
}

/// The store for one run and what it writes: stdout and stderr, and the private inputs
/// directory (removed on drop).
pub(crate) struct Sandbox {
    pub(crate) store: Store<ComponentData>,
    stdout: Capped,
    stderr: Capped,
    _inputs: InputsDir,
}

impl Sandbox {
    /// Sets up the store: WASI context, limiter, the inputs copied. `Err` is an
    /// `Unsupported` message (the inputs directory could not be made).
    pub(crate) fn new(engine: &Engine, run: &Run<'_>, inputs: &mut dyn DataInputs) -> Result<Self, String> {
        let dir = InputsDir::create(run.listed, inputs)
            .map_err(|e| format!("cannot prepare the inputs directory for the component: {e}"))?;
        // One line more than the caps keep, so the host sees that something was cut.
        let stdout = Capped::new(run.caps.max_output_bytes.saturating_add(1));
        let stderr = Capped::new(
            run.caps.max_log_lines.saturating_add(1).saturating_mul(run.caps.max_log_line_bytes.saturating_add(2)),
        );
        let mut argv = Vec::with_capacity(run.args.len() + 1);
        argv.push(crate::wasi::PROGRAM_NAME);
        argv.extend(run.args.iter().map(String::as_str));
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&argv)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        builder
            .preopened_dir(&dir.path, crate::wasi::INPUTS_DIR, FsPerms::ReadOnly)
            .map_err(|e| format!("cannot open the inputs directory for the component: {e:#}"))?;
        let data = ComponentData {
            ctx: builder.build(),
            table: ResourceTable::new(),
            cap: AllMemories::new(run.memory_bytes),
        };
        let mut store = Store::new(engine, data);
        store.limiter(|data| &mut data.cap);
        Ok(Self { store, stdout, stderr, _inputs: dir })
    }

    /// Runs `wasi:cli/run` and says how it ended.
    pub(crate) fn execute(&mut self, pre: &Prepared, ending_of: impl Fn(::wasmtime::Error, &str) -> Ending) -> Ending {
        let command = match pre.instantiate(&mut self.store) {
            Ok(command) => command,
            Err(e) if self.store.data().cap.inner.refused => return Ending::OutOfMemory(format!("{e:#}")),
            Err(e) => return ending_of(e, "instantiation"),
        };
        match command.wasi_cli_run().call_run(&mut self.store) {
            Ok(Ok(())) => Ending::Exited(0),
            // `run` returned its error result: what `main` returning an error, or
            // `std::process::exit(1)` after a panic message, comes to.
            Ok(Err(())) => Ending::Exited(1),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => Ending::Exited(exit.0),
                None => ending_of(e, "run"),
            },
        }
    }

    /// Whether a memory growth was refused.
    pub(crate) fn memory_refused(&self) -> bool {
        self.store.data().cap.inner.refused
    }

    /// Hands what the component wrote to `host`, under the caps there.
    pub(crate) fn drain_into(&self, host: &mut Host) {
        // Past the cap the stream kept one byte more than the host takes, so the host
        // marks the output cut.
        let (out, _) = self.stdout.take();
        host.push_output(&out);
        let (err, err_dropped) = self.stderr.take();
        host.wasi_stderr(&err);
        host.wasi_finish();
        if err_dropped {
            host.note(String::from("stderr past the log caps dropped"));
        }
    }
}

/// The memory cap over every memory of the component (their growth summed), and room
/// for the several core instances and tables a component is made of.
struct AllMemories {
    inner: MemoryCap,
    total: usize,
}

impl AllMemories {
    fn new(max_bytes: usize) -> Self {
        Self { inner: MemoryCap::new(max_bytes), total: 0 }
    }
}

impl ResourceLimiter for AllMemories {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> ::wasmtime::Result<bool> {
        let total = self.total.saturating_add(desired.saturating_sub(current));
        let allowed = self.inner.memory_growing(total);
        if allowed {
            self.total = total;
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> ::wasmtime::Result<bool> {
        Ok(self.inner.table_growing(desired))
    }

    fn instances(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        64
    }
}

/// An output stream that keeps up to `cap` bytes and drops the rest (saying it did),
/// always accepting the write: a job that prints too much is cut, not trapped.
#[derive(Clone)]
struct Capped {
    kept: Arc<Mutex<(Vec<u8>, bool)>>,
    cap: usize,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self { kept: Arc::new(Mutex::new((Vec::new(), false))), cap }
    }

    /// What was kept, and whether anything was dropped.
    fn take(&self) -> (Vec<u8>, bool) {
        match self.kept.lock() {
            Ok(mut kept) => (core::mem::take(&mut kept.0), kept.1),
            Err(_) => (Vec::new(), true),
        }
    }
}

impl IsTerminal for Capped {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capped {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        if let Ok(mut kept) = self.kept.lock() {
            let room = self.cap.saturating_sub(kept.0.len());
            let take = room.min(data.len());
            kept.0.extend_from_slice(&data[..take]);
            if take < data.len() {
                kept.1 = true;
            }
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A private directory holding copies of the listed inputs the device has, read-only,
/// removed on drop.
struct InputsDir {
    path: PathBuf,
}

impl InputsDir {
    fn create(listed: &[String], inputs: &mut dyn DataInputs) -> std::io::Result<Self> {
        use std::io::Write;
        let path = unique_dir()?;
        let dir = Self { path };
        for name in listed {
            // The spec's names are plain names (`fleet_schemas` checks them); refuse
            // anything that could leave the directory all the same.
            if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
                continue;
            }
            let Some(mut input) = inputs.open(name) else { continue };
            let file_path = dir.path.join(name);
            let mut file = std::fs::File::create(&file_path)?;
            let mut buf = [0u8; 8192];
            loop {
                let n = input.read(&mut buf).map_err(|e| std::io::Error::other(e.0))?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])?;
            }
            drop(file);
            set_read_only(&file_path)?;
        }
        Ok(dir)
    }
}

impl Drop for InputsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A new directory only this user can enter, under the system's temporary directory.
fn unique_dir() -> std::io::Result<PathBuf> {
    use core::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("fleet-job-{}-{nanos}-{n}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn set_read_only(path: &Path) -> std::io::Result<()> {
    let mut perms = std::fs::metadata(path)?.permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(path, perms)
}
