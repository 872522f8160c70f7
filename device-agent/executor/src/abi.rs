//! The fleet job ABI, host side: the host state of one execution and every host call,
//! written once against a plain `&mut [u8]` (the job's linear memory).
//!
//! Why on a byte slice: both runtimes can lend the memory and the host state at the same
//! time (`Memory::data_and_store_mut`), so each backend's glue is one line per import
//! and every rule of the ABI (bounds checks, caps, which inputs are openable, the return
//! conventions) is in this file only, tested once, identical on gateways and
//! microcontrollers. `docs/job-abi.md` is the contract; this is its implementation.
//!
//! Safety rules, all enforced here:
//! * every `(ptr, len)` pair is read as two unsigned 32-bit numbers and must lie inside
//!   the memory, or the call traps ([`AbiTrap`]); the host never panics on guest values;
//! * the host copies at most what its caps allow, so a huge `len` costs nothing extra;
//! * `input_open` accepts only names the job spec lists and the device provides.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ops::Range;

use fleet_schemas::RunReport;

use crate::config::OutputCaps;
use crate::inputs::{DataInput, DataInputs};

/// The import module name of every host function.
pub const MODULE: &str = "fleet";
/// The entry function called when the spec names none.
pub const DEFAULT_ENTRY: &str = "run";
/// The memory the job must export.
pub const MEMORY_EXPORT: &str = "memory";
/// A WebAssembly page, in bytes.
pub const PAGE_BYTES: usize = 64 * 1024;

/// The host functions: name, number of `i32` parameters, number of `i32` results.
pub const IMPORTS: &[(&str, usize, usize)] = &[
    ("log", 2, 0),
    ("output", 2, 1),
    ("arg_count", 0, 1),
    ("arg_len", 1, 1),
    ("arg_read", 3, 1),
    ("device_id", 2, 1),
    ("input_open", 2, 1),
    ("input_read", 3, 1),
];

/// The import module of wasi-nn, the standard inference interface (its `witx` ABI).
/// Gateways whose agent found ONNX Runtime offer it (feature `nn`); see [`crate::nn`].
pub const NN_MODULE: &str = "wasi_ephemeral_nn";

/// The wasi-nn functions, as [`IMPORTS`]: every parameter and result an `i32`.
pub const NN_IMPORTS: &[(&str, usize, usize)] = &[
    ("load", 5, 1),
    ("load_by_name", 3, 1),
    ("init_execution_context", 2, 1),
    ("set_input", 3, 1),
    ("compute", 1, 1),
    ("get_output", 5, 1),
];

/// The signature `(params, results)` of host function `module.name`, all `i32`; `None`
/// if the ABI has no such function. wasi-nn's functions count only where the executor
/// offers it (`nn_offered`).
pub fn import_signature(module: &str, name: &str, nn_offered: bool) -> Option<(usize, usize)> {
    let table = match module {
        MODULE => IMPORTS,
        NN_MODULE if nn_offered => NN_IMPORTS,
        _ => return None,
    };
    table.iter().find(|(n, _, _)| *n == name).map(|&(_, params, results)| (params, results))
}

/// Checks one import of a module against the ABI (with wasi-nn where the executor offers
/// it). `func` is the import's signature as `(params, results)` counts if the import is
/// a function whose every parameter and result is `i32`; `Err(())` for a function of any
/// other type, `None` for a non-function import. The error is the message of the
/// resulting `Unsupported` failure.
pub fn check_import(
    module: &str,
    name: &str,
    func: Option<Result<(usize, usize), ()>>,
    nn_offered: bool,
) -> Result<(), String> {
    let Some(expected) = import_signature(module, name, nn_offered) else {
        if module == NN_MODULE && nn_offered {
            return Err(format!("import `{module}.{name}` is not a wasi-nn function"));
        }
        if module == NN_MODULE {
            return Err(format!(
                "import `{module}.{name}`: this device offers no wasi-nn inference (a gateway offers it when its agent \
                 finds ONNX Runtime; microcontrollers never do)"
            ));
        }
        return Err(format!(
            "import `{module}.{name}` is not part of the fleet job ABI (the host offers only module `{MODULE}`: {})",
            IMPORTS.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().join(", ")
        ));
    };
    match func {
        Some(Ok(sig)) if sig == expected => Ok(()),
        _ => Err(format!(
            "import `{module}.{name}` must be a function of {} i32 parameter(s) and {} i32 result(s)",
            expected.0, expected.1
        )),
    }
}

/// A host call refused the job's arguments. The job traps with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiTrap {
    /// A pointer range is outside the job's memory.
    #[error("fleet.{call}: range {ptr:#x}+{len} is outside the job's memory of {size} bytes")]
    OutOfBounds {
        /// The host function.
        call: &'static str,
        /// The start, as the job passed it.
        ptr: u32,
        /// The length, as the job passed it.
        len: u32,
        /// The memory's size.
        size: usize,
    },
    /// A pointer range passed to a wasi-nn function is outside the job's memory.
    #[error("{NN_MODULE}.{call}: range {ptr:#x}+{len} is outside the job's memory of {size} bytes")]
    NnOutOfBounds {
        /// The wasi-nn function.
        call: &'static str,
        /// The start, as the job passed it (or as read from its memory).
        ptr: u32,
        /// The length in bytes.
        len: u32,
        /// The memory's size.
        size: usize,
    },
    /// A pointer range passed to a WASI function is outside the job's memory.
    #[cfg(feature = "wasi")]
    #[error("wasi_snapshot_preview1.{call}: range {ptr:#x}+{len} is outside the job's memory of {size} bytes")]
    WasiOutOfBounds {
        /// The WASI function.
        call: &'static str,
        /// The start, as the job passed it (or as read from its memory).
        ptr: u32,
        /// The length in bytes.
        len: u32,
        /// The memory's size.
        size: usize,
    },
    /// The job called WASI's `proc_exit` with this code.
    #[cfg(feature = "wasi")]
    #[error("exited with code {0}")]
    Exit(i32),
    /// The job called a host function that needs memory but exports none.
    #[error("fleet.{call}: the job exports no memory named `{MEMORY_EXPORT}`")]
    NoMemory {
        /// The host function.
        call: &'static str,
    },
}

/// The range `ptr..ptr + len` of a memory of `size` bytes, or a trap.
fn range(call: &'static str, size: usize, ptr: i32, len: i32) -> Result<Range<usize>, AbiTrap> {
    let (p, l) = (ptr as u32, len as u32);
    span(size, p, l).ok_or(AbiTrap::OutOfBounds { call, ptr: p, len: l, size })
}

/// `ptr..ptr + len` if it lies inside a memory of `size` bytes (computed without
/// overflow): the one bounds rule of every host call, fleet ABI and wasi-nn alike.
pub(crate) fn span(size: usize, ptr: u32, len: u32) -> Option<Range<usize>> {
    let start = ptr as usize;
    start.checked_add(len as usize).filter(|&end| end <= size).map(|end| start..end)
}

/// Clamps a length to what an `i32` result can say.
fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Everything one execution's host functions read and write.
pub struct Host {
    device_id: String,
    args: Vec<String>,
    allowed_inputs: Vec<String>,
    inputs: Box<dyn DataInputs>,
    open: Vec<Option<Box<dyn DataInput>>>,
    max_open: usize,
    caps: OutputCaps,
    output: Vec<u8>,
    output_truncated: bool,
    logs: Vec<String>,
    dropped_logs: u64,
    notes: Vec<String>,
    #[cfg(feature = "wasi")]
    wasi: crate::wasi::WasiState,
}

/// Why an input did not open.
#[cfg(feature = "wasi")]
pub(crate) enum OpenRefused {
    /// The spec does not list it or the device does not have it.
    NotOffered,
    /// Too many inputs are open.
    TooMany,
}

impl Host {
    /// The host state for one execution.
    pub fn new(
        device_id: &str,
        args: &[String],
        allowed_inputs: &[String],
        inputs: Box<dyn DataInputs>,
        max_open: usize,
        caps: OutputCaps,
    ) -> Self {
        Self {
            device_id: device_id.to_string(),
            args: args.to_vec(),
            allowed_inputs: allowed_inputs.to_vec(),
            inputs,
            open: Vec::new(),
            max_open,
            caps,
            output: Vec::new(),
            output_truncated: false,
            logs: Vec::new(),
            dropped_logs: 0,
            notes: Vec::new(),
            #[cfg(feature = "wasi")]
            wasi: crate::wasi::WasiState::default(),
        }
    }

    /// Gives WASI jobs these clocks and this randomness (none by default).
    #[cfg(feature = "wasi")]
    pub fn with_wasi_clock(mut self, clock: alloc::boxed::Box<dyn crate::wasi::WasiClock>) -> Self {
        self.wasi = crate::wasi::WasiState::new(clock);
        self
    }

    /// `log(ptr, len)`: appends one line (lossy UTF-8, cut at the line cap; past the line
    /// count cap, counted and dropped).
    pub fn log(&mut self, memory: &[u8], ptr: i32, len: i32) -> Result<(), AbiTrap> {
        let range = range("log", memory.len(), ptr, len)?;
        if self.logs.len() >= self.caps.max_log_lines {
            self.dropped_logs += 1;
            return Ok(());
        }
        let bytes = &memory[range];
        let cut = bytes.len() > self.caps.max_log_line_bytes;
        let mut line = String::from_utf8_lossy(&bytes[..bytes.len().min(self.caps.max_log_line_bytes)]).into_owned();
        if cut {
            line.push_str(" [cut]");
        }
        self.logs.push(line);
        Ok(())
    }

    /// `output(ptr, len) -> accepted`: appends to the result bytes, up to the output cap.
    pub fn output(&mut self, memory: &[u8], ptr: i32, len: i32) -> Result<i32, AbiTrap> {
        let range = range("output", memory.len(), ptr, len)?;
        let room = self.caps.max_output_bytes.saturating_sub(self.output.len());
        let take = range.len().min(room);
        if take < range.len() {
            self.output_truncated = true;
        }
        self.output.extend_from_slice(&memory[range.start..range.start + take]);
        Ok(to_i32(take))
    }

    /// `arg_count() -> n`.
    pub fn arg_count(&self) -> i32 {
        to_i32(self.args.len())
    }

    /// `arg_len(i) -> len`, or -1 for no such argument.
    pub fn arg_len(&self, index: i32) -> i32 {
        self.arg(index).map_or(-1, |arg| to_i32(arg.len()))
    }

    /// `arg_read(i, ptr, len) -> full length`: copies up to `len` bytes of argument `i`;
    /// -1 for no such argument.
    pub fn arg_read(&self, memory: &mut [u8], index: i32, ptr: i32, len: i32) -> Result<i32, AbiTrap> {
        let range = range("arg_read", memory.len(), ptr, len)?;
        Ok(match self.arg(index) {
            Some(arg) => copy_out(&mut memory[range], arg.as_bytes()),
            None => -1,
        })
    }

    /// `device_id(ptr, len) -> full length`: copies up to `len` bytes of the device id.
    pub fn device_id(&self, memory: &mut [u8], ptr: i32, len: i32) -> Result<i32, AbiTrap> {
        let range = range("device_id", memory.len(), ptr, len)?;
        Ok(copy_out(&mut memory[range], self.device_id.as_bytes()))
    }

    /// `input_open(name_ptr, name_len) -> handle`, or -1 if the spec does not list the
    /// name, the device does not have it, or too many inputs are open.
    pub fn input_open(&mut self, memory: &[u8], ptr: i32, len: i32) -> Result<i32, AbiTrap> {
        let range = range("input_open", memory.len(), ptr, len)?;
        let Ok(name) = core::str::from_utf8(&memory[range]) else {
            return Ok(-1);
        };
        if !self.allowed_inputs.iter().any(|allowed| allowed == name) {
            return Ok(-1);
        }
        if self.open.iter().filter(|slot| slot.is_some()).count() >= self.max_open {
            self.note(format!("input `{name}` not opened: {} inputs already open", self.max_open));
            return Ok(-1);
        }
        let Some(reader) = self.inputs.open(name) else {
            return Ok(-1);
        };
        let handle = match self.open.iter().position(Option::is_none) {
            Some(free) => {
                self.open[free] = Some(reader);
                free
            }
            None => {
                self.open.push(Some(reader));
                self.open.len() - 1
            }
        };
        Ok(to_i32(handle))
    }

    /// `input_read(handle, ptr, len) -> n`: reads up to `len` bytes; 0 at the end, -1
    /// for a bad handle or a read error (which also closes the handle).
    pub fn input_read(&mut self, memory: &mut [u8], handle: i32, ptr: i32, len: i32) -> Result<i32, AbiTrap> {
        let range = range("input_read", memory.len(), ptr, len)?;
        let Some(slot) = usize::try_from(handle).ok().and_then(|h| self.open.get_mut(h)) else {
            return Ok(-1);
        };
        let Some(reader) = slot.as_mut() else {
            return Ok(-1);
        };
        let buf = &mut memory[range];
        match reader.read(buf) {
            Ok(n) => Ok(to_i32(n.min(buf.len()))),
            Err(e) => {
                *slot = None;
                self.note(format!("input handle {handle}: read failed: {e}"));
                Ok(-1)
            }
        }
    }

    #[cfg(feature = "wasi")]
    pub(crate) fn wasi(&self) -> &crate::wasi::WasiState {
        &self.wasi
    }

    #[cfg(feature = "wasi")]
    pub(crate) fn wasi_mut(&mut self) -> &mut crate::wasi::WasiState {
        &mut self.wasi
    }

    #[cfg(feature = "wasi")]
    pub(crate) fn args(&self) -> &[String] {
        &self.args
    }

    /// Appends to the output up to its cap; how much was taken.
    #[cfg(feature = "wasi")]
    pub(crate) fn push_output(&mut self, bytes: &[u8]) -> usize {
        let room = self.caps.max_output_bytes.saturating_sub(self.output.len());
        let take = bytes.len().min(room);
        if take < bytes.len() {
            self.output_truncated = true;
        }
        self.output.extend_from_slice(&bytes[..take]);
        take
    }

    /// Appends one log line under the caps, as `log` does.
    #[cfg(feature = "wasi")]
    pub(crate) fn push_log(&mut self, bytes: &[u8]) {
        if self.logs.len() >= self.caps.max_log_lines {
            self.dropped_logs += 1;
            return;
        }
        let cut = bytes.len() > self.caps.max_log_line_bytes;
        let mut line = String::from_utf8_lossy(&bytes[..bytes.len().min(self.caps.max_log_line_bytes)]).into_owned();
        if cut {
            line.push_str(" [cut]");
        }
        self.logs.push(line);
    }

    #[cfg(feature = "wasi")]
    pub(crate) fn log_line_cap(&self) -> usize {
        self.caps.max_log_line_bytes
    }

    #[cfg(feature = "wasi")]
    pub(crate) fn is_open(&self, handle: usize) -> bool {
        self.open.get(handle).is_some_and(Option::is_some)
    }

    #[cfg(feature = "wasi")]
    pub(crate) fn close_input(&mut self, handle: usize) {
        if let Some(slot) = self.open.get_mut(handle) {
            *slot = None;
        }
    }

    /// Reads from an open input; `None` on a read error (which closes it).
    #[cfg(feature = "wasi")]
    pub(crate) fn read_input(&mut self, handle: usize, buf: &mut [u8]) -> Option<usize> {
        let reader = self.open.get_mut(handle)?.as_mut()?;
        match reader.read(buf) {
            Ok(n) => Some(n.min(buf.len())),
            Err(e) => {
                self.open[handle] = None;
                self.note(format!("input handle {handle}: read failed: {e}"));
                None
            }
        }
    }

    /// Opens input `name` under the rules of `input_open`.
    #[cfg(feature = "wasi")]
    pub(crate) fn open_input(&mut self, name: &str) -> Result<usize, OpenRefused> {
        if !self.allowed_inputs.iter().any(|allowed| allowed == name) {
            return Err(OpenRefused::NotOffered);
        }
        if self.open.iter().filter(|slot| slot.is_some()).count() >= self.max_open {
            self.note(format!("input `{name}` not opened: {} inputs already open", self.max_open));
            return Err(OpenRefused::TooMany);
        }
        let reader = self.inputs.open(name).ok_or(OpenRefused::NotOffered)?;
        Ok(match self.open.iter().position(Option::is_none) {
            Some(free) => {
                self.open[free] = Some(reader);
                free
            }
            None => {
                self.open.push(Some(reader));
                self.open.len() - 1
            }
        })
    }

    /// Records a host remark for the job's logs (outside the job's own line cap).
    pub fn note(&mut self, line: String) {
        if self.notes.len() < 8 {
            self.notes.push(line);
        }
    }

    /// The report: output, the job's logs, then the host's remarks.
    pub fn into_report(mut self, fuel_used: u64, duration_ms: u32) -> RunReport {
        #[cfg(feature = "wasi")]
        self.wasi_finish();
        if self.dropped_logs > 0 {
            self.notes.push(format!(
                "fleet: {} more log line(s) dropped (cap {})",
                self.dropped_logs, self.caps.max_log_lines
            ));
        }
        if self.output_truncated {
            self.notes.push(format!("fleet: output cut at the cap of {} bytes", self.caps.max_output_bytes));
        }
        let mut logs = self.logs;
        logs.extend(self.notes.into_iter().map(|n| if n.starts_with("fleet: ") { n } else { format!("fleet: {n}") }));
        RunReport { output: self.output, logs, fuel_used, duration_ms }
    }

    fn arg(&self, index: i32) -> Option<&String> {
        usize::try_from(index).ok().and_then(|i| self.args.get(i))
    }
}

/// Copies as much of `value` as fits in `buf` and returns the full length.
fn copy_out(buf: &mut [u8], value: &[u8]) -> i32 {
    let n = buf.len().min(value.len());
    buf[..n].copy_from_slice(&value[..n]);
    to_i32(value.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloc::vec;

    use super::*;
    use crate::inputs::{MemoryInputs, NoInputs};

    fn caps() -> OutputCaps {
        OutputCaps { max_output_bytes: 8, max_log_lines: 2, max_log_line_bytes: 4 }
    }

    fn host(inputs: Box<dyn DataInputs>, allowed: &[&str]) -> Host {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        Host::new("dev-1", &["abc".to_string()], &allowed, inputs, 1, caps())
    }

    #[test]
    fn ranges_are_checked_as_unsigned_and_without_overflow() {
        assert_eq!(range("log", 10, 0, 10), Ok(0..10));
        assert!(range("log", 10, 1, 10).is_err());
        assert!(range("log", 10, -1, 1).is_err());
        assert!(range("log", 10, 4, -1).is_err());
    }

    #[test]
    fn logs_and_output_are_capped() {
        let mut h = host(Box::new(NoInputs), &[]);
        let mem = b"hello world".to_vec();
        h.log(&mem, 0, 11).unwrap();
        h.log(&mem, 0, 2).unwrap();
        h.log(&mem, 0, 2).unwrap();
        assert_eq!(h.output(&mem, 0, 5).unwrap(), 5);
        assert_eq!(h.output(&mem, 0, 5).unwrap(), 3);
        assert!(h.output(&mem, 20, 1).is_err());
        let report = h.into_report(7, 1);
        assert_eq!(report.output, b"hellohel");
        assert_eq!(report.logs[0], "hell [cut]");
        assert_eq!(report.logs[1], "he");
        assert!(report.logs[2].contains("1 more log line"));
        assert!(report.logs[3].contains("output cut"));
    }

    #[test]
    fn copy_out_returns_the_full_length() {
        let h = host(Box::new(NoInputs), &[]);
        let mut mem = vec![0u8; 4];
        assert_eq!(h.device_id(&mut mem, 0, 2).unwrap(), 5);
        assert_eq!(&mem[..2], b"de");
        assert_eq!(h.arg_read(&mut mem, 0, 0, 4).unwrap(), 3);
        assert_eq!(h.arg_read(&mut mem, 1, 0, 4).unwrap(), -1);
        assert_eq!(h.arg_len(0), 3);
        assert_eq!(h.arg_len(-1), -1);
        assert!(h.arg_read(&mut mem, 0, 2, 4).is_err());
    }

    #[test]
    fn only_listed_and_present_inputs_open() {
        let inputs = MemoryInputs::new().with("a", &b"xyz"[..]).with("secret", &b"no"[..]);
        let mut h = host(Box::new(inputs), &["a", "missing"]);
        let mut mem = b"secretamissing\0\0\0\0".to_vec();
        assert_eq!(h.input_open(&mem, 0, 6).unwrap(), -1, "not listed in the spec");
        assert_eq!(h.input_open(&mem, 7, 7).unwrap(), -1, "listed but absent");
        let handle = h.input_open(&mem, 6, 1).unwrap();
        assert_eq!(handle, 0);
        assert_eq!(h.input_open(&mem, 6, 1).unwrap(), -1, "over the open-input cap");
        assert_eq!(h.input_read(&mut mem, handle, 14, 2).unwrap(), 2);
        assert_eq!(&mem[14..16], b"xy");
        assert_eq!(h.input_read(&mut mem, handle, 14, 4).unwrap(), 1);
        assert_eq!(h.input_read(&mut mem, handle, 14, 4).unwrap(), 0);
        assert_eq!(h.input_read(&mut mem, 5, 14, 4).unwrap(), -1);
        assert!(h.input_read(&mut mem, handle, 16, 4).is_err());
    }

    #[test]
    fn import_check_names_the_offender() {
        assert!(check_import("fleet", "log", Some(Ok((2, 0))), false).is_ok());
        assert!(check_import("fleet", "log", Some(Ok((2, 1))), false).unwrap_err().contains("2 i32 parameter"));
        assert!(check_import("fleet", "log", Some(Err(())), false).is_err());
        assert!(check_import("fleet", "log", None, false).is_err());
        assert!(
            check_import("wasi_snapshot_preview1", "fd_write", Some(Ok((4, 1))), false)
                .unwrap_err()
                .contains("not part")
        );
        // wasi-nn only where it is offered.
        assert!(check_import(NN_MODULE, "compute", Some(Ok((1, 1))), true).is_ok());
        assert!(check_import(NN_MODULE, "compute", Some(Ok((1, 1))), false).unwrap_err().contains("offers no wasi-nn"));
        assert!(check_import(NN_MODULE, "compute", Some(Ok((2, 1))), true).unwrap_err().contains("1 i32 parameter"));
        assert!(
            check_import(NN_MODULE, "train", Some(Ok((1, 1))), true).unwrap_err().contains("not a wasi-nn function")
        );
    }
}
