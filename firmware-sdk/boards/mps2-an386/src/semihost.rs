//! ARM semihosting: the board's console, exit code and host files.
//!
//! Under QEMU (`-semihosting-config enable=on,target=native`) a `bkpt 0xab` hands a
//! request to the emulator, which performs it on the host: print to QEMU's stdout, exit
//! QEMU with a status (what the test harness asserts on), or open, read, write and seek
//! a host file (what [`crate::flash`] builds flash on). On a real board without a
//! debugger attached semihosting faults, so production firmware for a real board uses
//! none of this.

use core::fmt;

use cortex_m_semihosting::{debug, nr, syscall};

/// Prints a line on the host's stdout.
pub fn println(args: fmt::Arguments) {
    cortex_m_semihosting::hprintln!("{}", args);
}

/// Prints a line on the host's stderr.
pub fn eprintln(args: fmt::Arguments) {
    cortex_m_semihosting::heprintln!("{}", args);
}

/// Ends the emulation: QEMU exits 0 if `ok`, else 1.
pub fn exit(ok: bool) -> ! {
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    // Only reached under a debugger that resumes after the exit request.
    loop {
        cortex_m::asm::bkpt();
    }
}

/// 16 bytes that differ from one boot to the next: the host's time in seconds and the
/// emulation's clock in centiseconds (semihosting SYS_TIME and SYS_CLOCK), hashed.
/// QEMU's board has no random number generator; what the agent needs this for (the
/// incarnation of a new store, `fleet_schemas::sync`) only has to be unique across the
/// device's resets, not secret. A real board reads its TRNG instead.
#[allow(unsafe_code)]
pub fn boot_entropy(more: &[u8]) -> [u8; 16] {
    // SAFETY: SYS_TIME and SYS_CLOCK take no argument and only return a value.
    let (time, clock) = unsafe { (syscall!(TIME), syscall!(CLOCK)) };
    let mut seed = [0u8; 96];
    let (head, rest) = seed.split_at_mut(8);
    head[..4].copy_from_slice(&(time as u32).to_le_bytes());
    head[4..].copy_from_slice(&(clock as u32).to_le_bytes());
    let n = more.len().min(rest.len());
    rest[..n].copy_from_slice(&more[..n]);
    let digest = fleet_schemas::digest::sha256(&seed[..8 + n]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest.0[..16]);
    out
}

/// A host file handle.
#[derive(Debug)]
pub struct HostFile(usize);

/// A failed host file operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostIoError;

/// How to open a host file.
#[derive(Debug, Clone, Copy)]
pub enum OpenMode {
    /// `rb`: read an existing file.
    Read,
    /// `r+b`: read and write an existing file.
    ReadWrite,
    /// `w+b`: create or truncate, then read and write.
    Create,
}

#[allow(unsafe_code)]
impl HostFile {
    /// Opens `path` (NUL-terminated, relative to QEMU's working directory).
    pub fn open(path: &core::ffi::CStr, mode: OpenMode) -> Result<Self, HostIoError> {
        let mode = match mode {
            OpenMode::Read => nr::open::R_BINARY,
            OpenMode::ReadWrite => nr::open::RW_BINARY,
            OpenMode::Create => nr::open::RW_TRUNC_BINARY,
        };
        let len = path.to_bytes().len();
        // SAFETY: SYS_OPEN reads `len` bytes of the NUL-terminated string at the pointer,
        // which lives for the call.
        let handle = unsafe { syscall!(OPEN, path.as_ptr(), mode, len) };
        if handle as isize == -1 { Err(HostIoError) } else { Ok(Self(handle)) }
    }

    /// The file's length.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> Result<usize, HostIoError> {
        // SAFETY: SYS_FLEN takes only the handle.
        let len = unsafe { syscall!(FLEN, self.0) };
        if len as isize == -1 { Err(HostIoError) } else { Ok(len) }
    }

    /// Moves to `offset` from the start.
    pub fn seek(&mut self, offset: usize) -> Result<(), HostIoError> {
        // SAFETY: SYS_SEEK takes the handle and an offset.
        let status = unsafe { syscall!(SEEK, self.0, offset) };
        if status == 0 { Ok(()) } else { Err(HostIoError) }
    }

    /// Reads exactly `buf.len()` bytes.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), HostIoError> {
        // SAFETY: SYS_READ writes at most `buf.len()` bytes into `buf`, which is
        // exclusively borrowed for the call.
        let not_read = unsafe { syscall!(READ, self.0, buf.as_mut_ptr(), buf.len()) };
        if not_read == 0 { Ok(()) } else { Err(HostIoError) }
    }

    /// Writes all of `buf`.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), HostIoError> {
        // SAFETY: SYS_WRITE reads `buf.len()` bytes from `buf`, borrowed for the call.
        let not_written = unsafe { syscall!(WRITE, self.0, buf.as_ptr(), buf.len()) };
        if not_written == 0 { Ok(()) } else { Err(HostIoError) }
    }
}

#[allow(unsafe_code)]
impl Drop for HostFile {
    fn drop(&mut self) {
        // SAFETY: SYS_CLOSE takes only the handle, which is not used again.
        unsafe { syscall!(CLOSE, self.0) };
    }
}
