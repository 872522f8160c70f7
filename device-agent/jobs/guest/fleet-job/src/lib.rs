//! Safe wrappers over the fleet job ABI, for jobs written in `no_std` Rust.
//!
//! A fleet job is a `wasm32-unknown-unknown` module that imports a handful of host
//! functions from the module `"fleet"` and exports `memory` and an entry function
//! (`run`, `() -> i32`). The contract is written down in `docs/job-abi.md` at the root of
//! the repository; this crate is the guest half of it, so that a job never touches a raw
//! pointer:
//!
//! ```ignore
//! #![no_std]
//! use fleet_job::{log, output};
//!
//! fn main() -> Result<(), i32> {
//!     let mut buf = [0u8; 64];
//!     let id = fleet_job::device_id(&mut buf).unwrap_or("unknown");
//!     log!("running on {id}");
//!     output!("hello from {id}");
//!     Ok(())
//! }
//! fleet_job::entry!(main);
//! ```
//!
//! Why `no_std` and no allocator: the same module runs on a Linux gateway and on a
//! Cortex-M microcontroller that may give it a single 64 KiB page. Everything here
//! works from stack buffers; a job that wants a heap brings its own allocator.
//!
//! Why the wrappers are worth having: the host checks every pointer and traps on a bad
//! one, so a mistake in raw calls kills the job. The wrappers only ever pass ranges
//! of live Rust slices.
#![no_std]

use core::fmt;

pub mod nn;

/// The raw imports. Prefer the safe functions of this crate.
pub mod raw {
    #[link(wasm_import_module = "fleet")]
    unsafe extern "C" {
        /// Appends one log line (UTF-8, lossily decoded; capped by the host).
        pub fn log(ptr: *const u8, len: usize);
        /// Appends to the job's result bytes; returns how many bytes were accepted.
        pub fn output(ptr: *const u8, len: usize) -> i32;
        /// The number of arguments.
        pub fn arg_count() -> i32;
        /// The length of argument `index` in bytes, or -1 if there is none.
        pub fn arg_len(index: i32) -> i32;
        /// Copies up to `len` bytes of argument `index`; returns its full length, or -1.
        pub fn arg_read(index: i32, ptr: *mut u8, len: usize) -> i32;
        /// Copies up to `len` bytes of the device id; returns its full length.
        pub fn device_id(ptr: *mut u8, len: usize) -> i32;
        /// Opens a data input the job spec lists; returns a handle, or -1.
        pub fn input_open(name_ptr: *const u8, name_len: usize) -> i32;
        /// Reads from an open input; returns bytes read (0 at the end), or -1.
        pub fn input_read(handle: i32, ptr: *mut u8, len: usize) -> i32;
    }
}

/// Writes one log line.
pub fn log(line: &str) {
    // SAFETY: the range is a live `&str`.
    unsafe { raw::log(line.as_ptr(), line.len()) }
}

/// Appends `bytes` to the job's output. Returns how many bytes the host accepted: fewer
/// than `bytes.len()` once the host's output cap is reached.
pub fn output(bytes: &[u8]) -> usize {
    // SAFETY: the range is a live slice.
    let accepted = unsafe { raw::output(bytes.as_ptr(), bytes.len()) };
    usize::try_from(accepted).unwrap_or(0)
}

/// The number of arguments the job spec carries.
pub fn arg_count() -> usize {
    // SAFETY: no pointers.
    usize::try_from(unsafe { raw::arg_count() }).unwrap_or(0)
}

/// Why an argument or the device id could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgError {
    /// There is no argument with this index.
    Missing,
    /// The value is longer than the buffer; it needs this many bytes.
    TooLong(usize),
    /// The value is not UTF-8 (the host passes bytes through).
    NotUtf8,
}

/// Reads argument `index` into `buf` and returns it as text.
pub fn arg(index: usize, buf: &mut [u8]) -> Result<&str, ArgError> {
    let index = i32::try_from(index).map_err(|_| ArgError::Missing)?;
    // SAFETY: the range is a live mutable slice.
    let full = unsafe { raw::arg_read(index, buf.as_mut_ptr(), buf.len()) };
    filled(buf, full).ok_or(ArgError::Missing)?
}

/// Reads the id of the device the job runs on into `buf`.
pub fn device_id(buf: &mut [u8]) -> Result<&str, ArgError> {
    // SAFETY: the range is a live mutable slice.
    let full = unsafe { raw::device_id(buf.as_mut_ptr(), buf.len()) };
    filled(buf, full).ok_or(ArgError::Missing)?
}

/// The text the host wrote into `buf`, given the full length it returned (None if the
/// host said -1).
fn filled(buf: &[u8], full: i32) -> Option<Result<&str, ArgError>> {
    let full = usize::try_from(full).ok()?;
    Some(match buf.get(..full) {
        Some(bytes) => core::str::from_utf8(bytes).map_err(|_| ArgError::NotUtf8),
        None => Err(ArgError::TooLong(full)),
    })
}

/// A named data input, opened for reading.
#[derive(Debug)]
pub struct Input {
    handle: i32,
}

/// Why an input read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputError;

impl Input {
    /// Opens the data input `name`. `None` if the job spec does not list it or the
    /// device does not have it.
    pub fn open(name: &str) -> Option<Input> {
        // SAFETY: the range is a live `&str`.
        let handle = unsafe { raw::input_open(name.as_ptr(), name.len()) };
        (handle >= 0).then_some(Input { handle })
    }

    /// Reads up to `buf.len()` bytes; `Ok(0)` at the end of the input.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, InputError> {
        // SAFETY: the range is a live mutable slice.
        let n = unsafe { raw::input_read(self.handle, buf.as_mut_ptr(), buf.len()) };
        usize::try_from(n).map_err(|_| InputError)
    }
}

/// A line longer than the buffer [`Input::for_each_line`] was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

impl Input {
    /// Calls `each` with every line of the input, without its `\n`, streaming it through
    /// a 512-byte buffer: any input size runs in a page of memory. A line longer than
    /// `N` bytes is passed as `Err(LineTooLong)` instead. The last line needs no `\n`.
    pub fn for_each_line<const N: usize>(
        &mut self,
        mut each: impl FnMut(Result<&[u8], LineTooLong>),
    ) -> Result<(), InputError> {
        let mut chunk = [0u8; 512];
        let mut line = [0u8; N];
        let mut len = 0;
        let mut too_long = false;
        loop {
            let n = self.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            for &byte in &chunk[..n] {
                if byte == b'\n' {
                    each(if too_long { Err(LineTooLong) } else { Ok(&line[..len]) });
                    len = 0;
                    too_long = false;
                } else if len < N {
                    line[len] = byte;
                    len += 1;
                } else {
                    too_long = true;
                }
            }
        }
        if too_long {
            each(Err(LineTooLong));
        } else if len > 0 {
            each(Ok(&line[..len]));
        }
        Ok(())
    }
}

/// A [`fmt::Write`] sink that appends to the job's output.
#[derive(Debug, Default)]
pub struct Output;

impl fmt::Write for Output {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if output(s.as_bytes()) == s.len() { Ok(()) } else { Err(fmt::Error) }
    }
}

/// A fixed-size text buffer for formatting without an allocator. Text past the
/// capacity is dropped (cut at a character boundary), never an error.
pub struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Line<N> {
    /// An empty line.
    pub const fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        // Only whole `&str`s, cut at character boundaries, are ever copied in.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> Default for Line<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Formats one log line (up to 256 bytes) and writes it with [`log`].
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        let mut line = $crate::Line::<256>::new();
        let _ = ::core::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        $crate::log(line.as_str());
    }};
}

/// Formats text onto the job's output. Evaluates to `true` if all of it was accepted.
#[macro_export]
macro_rules! output {
    ($($arg:tt)*) => {
        ::core::fmt::Write::write_fmt(&mut $crate::Output, format_args!($($arg)*)).is_ok()
    };
}

/// Exports `fn main() -> Result<(), i32>` as the job's entry `run`: `Ok` returns 0,
/// `Err(code)` returns `code` (the host reports a nonzero code as a failure).
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn run() -> i32 {
            match $main() {
                Ok(()) => 0,
                Err(0) => 1,
                Err(code) => code,
            }
        }
    };
}

/// Logs the panic and traps, so the host reports the job as failed with the message
/// in its logs.
#[cfg(all(feature = "panic-handler", target_arch = "wasm32", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut line = Line::<256>::new();
    let _ = fmt::Write::write_fmt(&mut line, format_args!("panicked: {}", info.message()));
    if let Some(location) = info.location() {
        let _ = fmt::Write::write_fmt(&mut line, format_args!(" at {}:{}", location.file(), location.line()));
    }
    log(line.as_str());
    core::arch::wasm32::unreachable()
}
