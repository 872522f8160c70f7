//! WASI preview 1, the part a job needs, on the same host state as the fleet ABI.
//!
//! Every Wasm toolchain emits `wasi_snapshot_preview1` imports by default (C with
//! wasi-libc, Rust's `wasm32-wasip1`, AssemblyScript's WASI shim), so a job written as a
//! plain program (`printf`, `fopen`, `argv`, an exit code) must run as is. Why our own
//! subset rather than a full WASI implementation: it is written once, here, against a
//! plain `&mut [u8]` like the rest of the ABI ([`crate::abi`]), so a job sees exactly the
//! same files, caps and errors on a gateway and on a microcontroller, and it adds no
//! file system, socket or clock of the host that nobody audited for a job:
//!
//! * **argv** is the job's name `job` followed by its args; the environment is empty;
//! * **stdout** (fd 1) is the execution's output, capped like `fleet.output`; **stderr**
//!   (fd 2) is its logs, one line per `\n`, capped like `fleet.log`; stdin (fd 0) is
//!   empty;
//! * **files**: one preopened read-only directory, [`INPUTS_DIR`]; `path_open` opens a
//!   name the job spec lists and the device provides (the same rule as
//!   `fleet.input_open`), read-only; anything else is `ENOENT`, any write or create
//!   `EROFS`, a path with `/` or `..` `ENOENT`: there is no other directory to reach;
//!   inputs are streams (a sensor's samples), so seeking is refused but for asking the
//!   position;
//! * **exit**: `proc_exit(code)` ends the job; 0 succeeded, anything else failed with
//!   the code in the message; returning from `_start` is exit 0;
//! * **clocks and random**: as the device has them ([`WasiClock`]): wall and monotonic
//!   time and the OS's random bytes on a gateway; on a microcontroller the time since
//!   the run began on its timer ([`RunClock`]) and `ENOTSUP` for the wall clock and
//!   randomness.
//!   A job that reads them is not deterministic (see `docs/job-abi.md`).
//!
//! Any other WASI function is refused when the module is checked, before anything runs,
//! with an `Unsupported` failure that names it.
//!
//! Every pointer is checked against the memory as in the fleet ABI: out of bounds traps
//! the job (rather than returning `EFAULT`), with the call named.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::abi::{AbiTrap, Host, span};

/// The import module name of WASI preview 1.
pub const MODULE: &str = "wasi_snapshot_preview1";
/// The one preopened directory: the job's data inputs, read-only.
pub const INPUTS_DIR: &str = "/inputs";
/// argv\[0\].
pub const PROGRAM_NAME: &str = "job";
/// The WASI command entry, called when the spec names none and the module exports no
/// `run`.
pub const COMMAND_ENTRY: &str = "_start";

/// The file descriptor of [`INPUTS_DIR`].
const INPUTS_FD: u32 = 3;
/// The first file descriptor of an opened input.
const FIRST_FILE_FD: u32 = 4;

/// The functions offered and their signatures: parameters, `>`, results; `i` is an
/// `i32`, `I` an `i64` (the form [`signature`] gives).
pub const IMPORTS: &[(&str, &str)] = &[
    ("args_get", "ii>i"),
    ("args_sizes_get", "ii>i"),
    ("environ_get", "ii>i"),
    ("environ_sizes_get", "ii>i"),
    ("clock_res_get", "ii>i"),
    ("clock_time_get", "iIi>i"),
    ("fd_close", "i>i"),
    ("fd_fdstat_get", "ii>i"),
    ("fd_fdstat_set_flags", "ii>i"),
    ("fd_filestat_get", "ii>i"),
    ("fd_prestat_get", "ii>i"),
    ("fd_prestat_dir_name", "iii>i"),
    ("fd_read", "iiii>i"),
    ("fd_seek", "iIii>i"),
    ("fd_write", "iiii>i"),
    ("path_open", "iiiiiIIii>i"),
    ("proc_exit", "i>"),
    ("random_get", "ii>i"),
    ("sched_yield", ">i"),
];

/// A function type as [`IMPORTS`] writes it, from its value types (`'i'` for `i32`,
/// `'I'` for `i64`, anything else for other types).
pub fn signature(params: impl Iterator<Item = char>, results: impl Iterator<Item = char>) -> String {
    let mut sig: String = params.collect();
    sig.push('>');
    sig.extend(results);
    sig
}

/// The signature of WASI function `name`, if offered.
pub fn import_signature(name: &str) -> Option<&'static str> {
    IMPORTS.iter().find(|(n, _)| *n == name).map(|(_, sig)| *sig)
}

/// WASI errno values (`wasi_snapshot_preview1`'s `errno`).
#[allow(missing_docs)]
pub mod errno {
    pub const SUCCESS: i32 = 0;
    pub const ACCES: i32 = 2;
    pub const BADF: i32 = 8;
    pub const INVAL: i32 = 28;
    pub const IO: i32 = 29;
    pub const ISDIR: i32 = 31;
    pub const MFILE: i32 = 33;
    pub const NOENT: i32 = 44;
    pub const NOTDIR: i32 = 54;
    pub const NOTSUP: i32 = 58;
    pub const ROFS: i32 = 69;
    pub const SPIPE: i32 = 70;
}

const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const FILETYPE_DIRECTORY: u8 = 3;
const FILETYPE_REGULAR_FILE: u8 = 4;
const OFLAGS_WRITING: i32 = 0b1101; // creat | excl | trunc
const OFLAGS_DIRECTORY: i32 = 0b0010;
const RIGHTS_FD_WRITE: i64 = 1 << 6;
const WHENCE_CUR: i32 = 1;

/// The clocks and randomness a device gives WASI jobs.
pub trait WasiClock: Send {
    /// Clock `id` (0 realtime, 1 monotonic, 2 and 3 CPU time) in nanoseconds, if the
    /// device has it.
    fn time_ns(&self, id: u32) -> Option<u64>;
    /// The resolution of the clocks, in nanoseconds (`clock_res_get`).
    fn resolution_ns(&self) -> u64 {
        1_000
    }
    /// Fills `buf` with random bytes; `false` if the device has no source.
    fn random(&self, buf: &mut [u8]) -> bool;
}

/// No clock, no randomness (a microcontroller without them, or a deterministic run).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWasiClock;

impl WasiClock for NoWasiClock {
    fn time_ns(&self, _id: u32) -> Option<u64> {
        None
    }

    fn random(&self, _buf: &mut [u8]) -> bool {
        false
    }
}

/// The time since the run began on the executor's millisecond clock (a board's timer),
/// as the monotonic and the CPU-time clocks; no wall clock (a microcontroller has none it
/// can trust) and no randomness (`ENOTSUP`). What a WASI job gets on a microcontroller.
#[derive(Clone)]
pub struct RunClock {
    clock: alloc::sync::Arc<dyn crate::control::Clock>,
    start_ms: u64,
}

impl RunClock {
    /// Counts from `start_ms` on `clock`.
    pub fn new(clock: alloc::sync::Arc<dyn crate::control::Clock>, start_ms: u64) -> Self {
        Self { clock, start_ms }
    }
}

impl core::fmt::Debug for RunClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RunClock").field("start_ms", &self.start_ms).finish_non_exhaustive()
    }
}

impl WasiClock for RunClock {
    fn time_ns(&self, id: u32) -> Option<u64> {
        match id {
            1..=3 => Some(self.clock.now_ms().saturating_sub(self.start_ms).saturating_mul(1_000_000)),
            _ => None,
        }
    }

    fn resolution_ns(&self) -> u64 {
        1_000_000
    }

    fn random(&self, _buf: &mut [u8]) -> bool {
        false
    }
}

/// The host's clocks (`SystemTime`, `Instant` since the run began) and the kernel's
/// random bytes (`/dev/urandom`).
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct StdWasiClock {
    start: std::time::Instant,
}

#[cfg(feature = "std")]
impl StdWasiClock {
    /// Monotonic time counts from now.
    pub fn new() -> Self {
        Self { start: std::time::Instant::now() }
    }
}

#[cfg(feature = "std")]
impl Default for StdWasiClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "std")]
impl WasiClock for StdWasiClock {
    fn time_ns(&self, id: u32) -> Option<u64> {
        let ns = |d: core::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        match id {
            0 => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(ns),
            1..=3 => Some(ns(self.start.elapsed())),
            _ => None,
        }
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        use std::io::Read;
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf)).is_ok()
    }
}

/// What WASI adds to an execution's host state: positions of opened inputs, the stderr
/// line being written, the clock.
pub struct WasiState {
    clock: alloc::boxed::Box<dyn WasiClock>,
    positions: Vec<u64>,
    stderr_line: Vec<u8>,
}

impl WasiState {
    /// State with `clock`.
    pub fn new(clock: alloc::boxed::Box<dyn WasiClock>) -> Self {
        Self { clock, positions: Vec::new(), stderr_line: Vec::new() }
    }
}

impl Default for WasiState {
    fn default() -> Self {
        Self::new(alloc::boxed::Box::new(NoWasiClock))
    }
}

fn oob(call: &'static str, size: usize, ptr: u32, len: u32) -> AbiTrap {
    AbiTrap::WasiOutOfBounds { call, ptr, len, size }
}

/// `len` bytes at `ptr`, or a trap.
fn bytes<'m>(call: &'static str, memory: &'m [u8], ptr: i32, len: u32) -> Result<&'m [u8], AbiTrap> {
    let r = span(memory.len(), ptr as u32, len).ok_or_else(|| oob(call, memory.len(), ptr as u32, len))?;
    Ok(&memory[r])
}

fn put(call: &'static str, memory: &mut [u8], ptr: i32, value: &[u8]) -> Result<(), AbiTrap> {
    let size = memory.len();
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    let r = span(size, ptr as u32, len).ok_or_else(|| oob(call, size, ptr as u32, len))?;
    memory[r].copy_from_slice(value);
    Ok(())
}

fn put_u32(call: &'static str, memory: &mut [u8], ptr: i32, value: u32) -> Result<(), AbiTrap> {
    put(call, memory, ptr, &value.to_le_bytes())
}

fn put_u64(call: &'static str, memory: &mut [u8], ptr: i32, value: u64) -> Result<(), AbiTrap> {
    put(call, memory, ptr, &value.to_le_bytes())
}

/// The `(ptr, len)` pairs of an iovec array.
fn iovecs(call: &'static str, memory: &[u8], iovs: i32, count: i32) -> Result<Vec<(i32, u32)>, AbiTrap> {
    let n = count as u32;
    let table = bytes(call, memory, iovs, n.saturating_mul(8))?;
    Ok(table
        .chunks_exact(8)
        .map(|c| {
            let ptr = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let len = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            (ptr as i32, len)
        })
        .collect())
}

impl Host {
    fn argv(&self) -> impl Iterator<Item = &[u8]> {
        core::iter::once(PROGRAM_NAME.as_bytes()).chain(self.args().iter().map(String::as_bytes))
    }

    /// `args_sizes_get(argc_ptr, buf_size_ptr)`.
    pub fn wasi_args_sizes_get(&self, memory: &mut [u8], argc: i32, size: i32) -> Result<i32, AbiTrap> {
        let count = self.argv().count();
        let total: usize = self.argv().map(|a| a.len() + 1).sum();
        put_u32("args_sizes_get", memory, argc, u32::try_from(count).unwrap_or(u32::MAX))?;
        put_u32("args_sizes_get", memory, size, u32::try_from(total).unwrap_or(u32::MAX))?;
        Ok(errno::SUCCESS)
    }

    /// `args_get(argv_ptr, buf_ptr)`: the pointers, then the NUL-terminated strings.
    pub fn wasi_args_get(&self, memory: &mut [u8], argv: i32, buf: i32) -> Result<i32, AbiTrap> {
        let mut at = buf as u32;
        let args: Vec<Vec<u8>> = self.argv().map(<[u8]>::to_vec).collect();
        for (i, arg) in args.iter().enumerate() {
            let slot = (argv as u32).wrapping_add(4 * i as u32);
            put_u32("args_get", memory, slot as i32, at)?;
            put("args_get", memory, at as i32, arg)?;
            put("args_get", memory, at.wrapping_add(arg.len() as u32) as i32, &[0])?;
            at = at.wrapping_add(arg.len() as u32 + 1);
        }
        Ok(errno::SUCCESS)
    }

    /// `environ_sizes_get`: an empty environment.
    pub fn wasi_environ_sizes_get(&self, memory: &mut [u8], count: i32, size: i32) -> Result<i32, AbiTrap> {
        put_u32("environ_sizes_get", memory, count, 0)?;
        put_u32("environ_sizes_get", memory, size, 0)?;
        Ok(errno::SUCCESS)
    }

    /// `environ_get`: nothing to write.
    pub fn wasi_environ_get(&self, _memory: &mut [u8], _environ: i32, _buf: i32) -> Result<i32, AbiTrap> {
        Ok(errno::SUCCESS)
    }

    /// `clock_res_get(id, res_ptr)`: 1 µs where the clock exists.
    pub fn wasi_clock_res_get(&self, memory: &mut [u8], id: i32, res: i32) -> Result<i32, AbiTrap> {
        if self.wasi().clock.time_ns(id as u32).is_none() {
            return Ok(errno::NOTSUP);
        }
        put_u64("clock_res_get", memory, res, self.wasi().clock.resolution_ns())?;
        Ok(errno::SUCCESS)
    }

    /// `clock_time_get(id, precision, time_ptr)`.
    pub fn wasi_clock_time_get(&self, memory: &mut [u8], id: i32, _precision: i64, time: i32) -> Result<i32, AbiTrap> {
        match self.wasi().clock.time_ns(id as u32) {
            Some(ns) => {
                put_u64("clock_time_get", memory, time, ns)?;
                Ok(errno::SUCCESS)
            }
            None => Ok(errno::NOTSUP),
        }
    }

    /// `random_get(buf, len)`.
    pub fn wasi_random_get(&self, memory: &mut [u8], buf: i32, len: i32) -> Result<i32, AbiTrap> {
        let size = memory.len();
        let r = span(size, buf as u32, len as u32).ok_or_else(|| oob("random_get", size, buf as u32, len as u32))?;
        Ok(if self.wasi().clock.random(&mut memory[r]) { errno::SUCCESS } else { errno::NOTSUP })
    }

    /// `fd_write(fd, iovs, iovs_len, nwritten_ptr)`: stdout to the output, stderr to the
    /// logs; every other descriptor is read-only or unknown.
    pub fn wasi_fd_write(
        &mut self,
        memory: &mut [u8],
        fd: i32,
        iovs: i32,
        count: i32,
        written: i32,
    ) -> Result<i32, AbiTrap> {
        let vecs = iovecs("fd_write", memory, iovs, count)?;
        let mut total: u32 = 0;
        for (ptr, len) in vecs {
            let data = bytes("fd_write", memory, ptr, len)?;
            match fd {
                1 => {
                    self.push_output(data);
                }
                2 => self.wasi_stderr(data),
                // stdin, the inputs directory and the inputs are read-only.
                _ => return Ok(errno::BADF),
            }
            // A write past the output cap is taken whole and dropped, as the report
            // says: a program that checks printf's result must not loop on it.
            total = total.saturating_add(len);
        }
        put_u32("fd_write", memory, written, total)?;
        Ok(errno::SUCCESS)
    }

    /// `fd_read(fd, iovs, iovs_len, nread_ptr)`: an opened input, or the empty stdin.
    pub fn wasi_fd_read(
        &mut self,
        memory: &mut [u8],
        fd: i32,
        iovs: i32,
        count: i32,
        nread: i32,
    ) -> Result<i32, AbiTrap> {
        let vecs = iovecs("fd_read", memory, iovs, count)?;
        let mut total: u32 = 0;
        match fd {
            0 => {}
            3 => return Ok(errno::ISDIR),
            _ => {
                let Some(handle) = self.input_slot(fd) else { return Ok(errno::BADF) };
                for (ptr, len) in vecs {
                    let size = memory.len();
                    let r = span(size, ptr as u32, len).ok_or_else(|| oob("fd_read", size, ptr as u32, len))?;
                    let n = match self.read_input(handle, &mut memory[r]) {
                        Some(n) => n,
                        None => return Ok(errno::IO),
                    };
                    total = total.saturating_add(n as u32);
                    if let Some(pos) = self.wasi_mut().positions.get_mut(handle) {
                        *pos += n as u64;
                    }
                    if (n as u32) < len {
                        break;
                    }
                }
            }
        }
        put_u32("fd_read", memory, nread, total)?;
        Ok(errno::SUCCESS)
    }

    /// `fd_seek(fd, offset, whence, newoffset_ptr)`: inputs are streams; only asking the
    /// position (offset 0 from the current one) is answered.
    pub fn wasi_fd_seek(
        &mut self,
        memory: &mut [u8],
        fd: i32,
        offset: i64,
        whence: i32,
        new: i32,
    ) -> Result<i32, AbiTrap> {
        match fd {
            0..=2 => Ok(errno::SPIPE),
            3 => Ok(errno::ISDIR),
            _ => {
                let Some(handle) = self.input_slot(fd) else { return Ok(errno::BADF) };
                if offset != 0 || whence != WHENCE_CUR {
                    return Ok(errno::SPIPE);
                }
                let pos = self.wasi().positions.get(handle).copied().unwrap_or(0);
                put_u64("fd_seek", memory, new, pos)?;
                Ok(errno::SUCCESS)
            }
        }
    }

    /// `fd_close(fd)`.
    pub fn wasi_fd_close(&mut self, fd: i32) -> Result<i32, AbiTrap> {
        match fd {
            0..=3 => Ok(errno::SUCCESS),
            _ => match self.input_slot(fd) {
                Some(handle) => {
                    self.close_input(handle);
                    Ok(errno::SUCCESS)
                }
                None => Ok(errno::BADF),
            },
        }
    }

    /// `fd_fdstat_get(fd, stat_ptr)`: type, no flags, rights to read (and to write for
    /// stdout and stderr).
    pub fn wasi_fd_fdstat_get(&self, memory: &mut [u8], fd: i32, stat: i32) -> Result<i32, AbiTrap> {
        let filetype = match fd {
            0..=2 => FILETYPE_CHARACTER_DEVICE,
            3 => FILETYPE_DIRECTORY,
            _ if self.input_slot(fd).is_some() => FILETYPE_REGULAR_FILE,
            _ => return Ok(errno::BADF),
        };
        let mut record = [0u8; 24];
        record[0] = filetype;
        // All rights: what a descriptor may not do is refused by the call itself.
        record[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        record[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        put("fd_fdstat_get", memory, stat, &record)?;
        Ok(errno::SUCCESS)
    }

    /// `fd_fdstat_set_flags`: no flag can be changed.
    pub fn wasi_fd_fdstat_set_flags(&self, fd: i32, _flags: i32) -> Result<i32, AbiTrap> {
        Ok(if (0..=3).contains(&fd) || self.input_slot(fd).is_some() { errno::NOTSUP } else { errno::BADF })
    }

    /// `fd_filestat_get(fd, stat_ptr)`: the type; sizes and times are unknown (zero).
    pub fn wasi_fd_filestat_get(&self, memory: &mut [u8], fd: i32, stat: i32) -> Result<i32, AbiTrap> {
        let filetype = match fd {
            0..=2 => FILETYPE_CHARACTER_DEVICE,
            3 => FILETYPE_DIRECTORY,
            _ if self.input_slot(fd).is_some() => FILETYPE_REGULAR_FILE,
            _ => return Ok(errno::BADF),
        };
        let mut record = [0u8; 64];
        record[16] = filetype;
        put("fd_filestat_get", memory, stat, &record)?;
        Ok(errno::SUCCESS)
    }

    /// `fd_prestat_get(fd, prestat_ptr)`: fd 3 is [`INPUTS_DIR`]; nothing after it.
    pub fn wasi_fd_prestat_get(&self, memory: &mut [u8], fd: i32, prestat: i32) -> Result<i32, AbiTrap> {
        if fd as u32 != INPUTS_FD {
            return Ok(errno::BADF);
        }
        let mut record = [0u8; 8];
        record[4..8].copy_from_slice(&(INPUTS_DIR.len() as u32).to_le_bytes());
        put("fd_prestat_get", memory, prestat, &record)?;
        Ok(errno::SUCCESS)
    }

    /// `fd_prestat_dir_name(fd, path_ptr, len)`.
    pub fn wasi_fd_prestat_dir_name(&self, memory: &mut [u8], fd: i32, path: i32, len: i32) -> Result<i32, AbiTrap> {
        if fd as u32 != INPUTS_FD {
            return Ok(errno::BADF);
        }
        let name = INPUTS_DIR.as_bytes();
        let take = name.len().min(len.max(0) as usize);
        put("fd_prestat_dir_name", memory, path, &name[..take])?;
        Ok(errno::SUCCESS)
    }

    /// `path_open(dirfd, dirflags, path, path_len, oflags, rights, inheriting, fdflags,
    /// fd_ptr)`: an input the job may open, read-only.
    #[allow(clippy::too_many_arguments)]
    pub fn wasi_path_open(
        &mut self,
        memory: &mut [u8],
        dirfd: i32,
        path: i32,
        path_len: i32,
        oflags: i32,
        rights: i64,
        fd_out: i32,
    ) -> Result<i32, AbiTrap> {
        let name = bytes("path_open", memory, path, path_len as u32)?;
        let Ok(name) = core::str::from_utf8(name) else { return Ok(errno::NOENT) };
        let name = String::from(name);
        if dirfd as u32 != INPUTS_FD {
            return Ok(if (0..=2).contains(&dirfd) || self.input_slot(dirfd).is_some() {
                errno::NOTDIR
            } else {
                errno::BADF
            });
        }
        if oflags & OFLAGS_WRITING != 0 || rights & RIGHTS_FD_WRITE != 0 {
            return Ok(errno::ROFS);
        }
        if name.is_empty() || name == "." {
            return Ok(if oflags & OFLAGS_DIRECTORY != 0 { errno::NOTSUP } else { errno::ISDIR });
        }
        if name.contains('/') || name == ".." {
            return Ok(errno::NOENT);
        }
        if oflags & OFLAGS_DIRECTORY != 0 {
            return Ok(errno::NOTDIR);
        }
        let handle = match self.open_input(&name) {
            Ok(handle) => handle,
            Err(crate::abi::OpenRefused::TooMany) => return Ok(errno::MFILE),
            Err(crate::abi::OpenRefused::NotOffered) => return Ok(errno::NOENT),
        };
        let state = self.wasi_mut();
        if state.positions.len() <= handle {
            state.positions.resize(handle + 1, 0);
        }
        state.positions[handle] = 0;
        put_u32("path_open", memory, fd_out, FIRST_FILE_FD + handle as u32)?;
        Ok(errno::SUCCESS)
    }

    /// `proc_exit(code)`: ends the job.
    pub fn wasi_proc_exit(&mut self, code: i32) -> AbiTrap {
        AbiTrap::Exit(code)
    }

    /// The input handle behind WASI descriptor `fd`, if one is open.
    fn input_slot(&self, fd: i32) -> Option<usize> {
        let handle = (fd as u32).checked_sub(FIRST_FILE_FD)? as usize;
        self.is_open(handle).then_some(handle)
    }

    /// Appends what a job wrote to stderr to its logs: one line per `\n`, the rest kept
    /// for the next write (or [`Host::wasi_finish`]).
    pub(crate) fn wasi_stderr(&mut self, data: &[u8]) {
        let mut rest = data;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            let mut line = core::mem::take(&mut self.wasi_mut().stderr_line);
            line.extend_from_slice(&rest[..at]);
            self.push_log(&line);
            rest = &rest[at + 1..];
        }
        let cap = self.log_line_cap() + 1;
        let line = &mut self.wasi_mut().stderr_line;
        let room = cap.saturating_sub(line.len());
        line.extend_from_slice(&rest[..rest.len().min(room)]);
    }

    /// Flushes a last stderr line without its `\n` (at the end of the run).
    pub(crate) fn wasi_finish(&mut self) {
        let line = core::mem::take(&mut self.wasi_mut().stderr_line);
        if !line.is_empty() {
            self.push_log(&line);
        }
    }
}

/// Checks one import of module [`MODULE`]; the error is an `Unsupported` message that
/// names the call.
pub fn check_import(name: &str, func: Option<&str>, offered: bool) -> Result<(), String> {
    if !offered {
        return Err(format!(
            "import `{MODULE}.{name}`: this device runs no WASI jobs (its agent was built without them; \
             update the agent or the firmware)"
        ));
    }
    let Some(expected) = import_signature(name) else {
        return Err(format!(
            "import `{MODULE}.{name}` is a WASI call the fleet does not offer (it offers: {})",
            IMPORTS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ));
    };
    match func {
        Some(sig) if sig == expected => Ok(()),
        _ => Err(format!("import `{MODULE}.{name}` must be a function of type {expected}")),
    }
}
