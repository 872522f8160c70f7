//! NOR flash backed by a host file, so the emulated board keeps its flash across a
//! power cycle (kill QEMU, start it again with the same file).
//!
//! It behaves like NOR flash, not like a file, so that code tested here behaves the
//! same on a real part: erase sets a whole page to `0xff`; a write can only clear bits
//! (the new contents are the AND of old and new, as a NOR cell would give); writes and
//! erases must be aligned to [`WRITE_SIZE`] and [`ERASE_SIZE`]. A missing or short file
//! is created or extended erased (all `0xff`).

use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use crate::semihost::{HostFile, HostIoError, OpenMode};

/// The erase page size.
pub const ERASE_SIZE: u32 = 4096;
/// The write granularity, as on most internal flash.
pub const WRITE_SIZE: usize = 4;
/// The default backing file, relative to QEMU's working directory.
pub const DEFAULT_FILE: &core::ffi::CStr = c"fleet-flash.bin";

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// Outside the flash.
    OutOfBounds,
    /// Not aligned to the write or erase size.
    NotAligned,
    /// The host file operation failed.
    Io,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::Io => NorFlashErrorKind::Other,
        }
    }
}

impl From<HostIoError> for FlashError {
    fn from(_: HostIoError) -> Self {
        FlashError::Io
    }
}

/// A NOR flash of `capacity` bytes in a host file.
#[derive(Debug)]
pub struct HostFileFlash {
    file: HostFile,
    capacity: usize,
}

impl HostFileFlash {
    /// Opens (or creates, erased) the backing file for a flash of `capacity` bytes, a
    /// multiple of [`ERASE_SIZE`].
    pub fn open(path: &core::ffi::CStr, capacity: usize) -> Result<Self, FlashError> {
        if !capacity.is_multiple_of(ERASE_SIZE as usize) {
            return Err(FlashError::NotAligned);
        }
        let mut file = match HostFile::open(path, OpenMode::ReadWrite) {
            Ok(file) => file,
            Err(_) => HostFile::open(path, OpenMode::Create)?,
        };
        let len = file.len()?;
        if len < capacity {
            // Extend with erased pages: a new chip reads all ones.
            file.seek(len)?;
            let erased = [0xffu8; 256];
            let mut left = capacity - len;
            while left > 0 {
                let n = left.min(erased.len());
                file.write_all(&erased[..n])?;
                left -= n;
            }
        }
        Ok(Self { file, capacity })
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<usize, FlashError> {
        let offset = offset as usize;
        if offset.checked_add(len).is_none_or(|end| end > self.capacity) {
            return Err(FlashError::OutOfBounds);
        }
        if !offset.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(FlashError::NotAligned);
        }
        Ok(offset)
    }
}

impl ErrorType for HostFileFlash {
    type Error = FlashError;
}

impl ReadNorFlash for HostFileFlash {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let offset = self.check(offset, bytes.len(), 1)?;
        self.file.seek(offset)?;
        self.file.read_exact(bytes)?;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

impl NorFlash for HostFileFlash {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE as usize;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let len = to.checked_sub(from).ok_or(FlashError::OutOfBounds)? as usize;
        let offset = self.check(from, len, ERASE_SIZE as usize)?;
        self.file.seek(offset)?;
        let erased = [0xffu8; 256];
        for _ in 0..len / erased.len() {
            self.file.write_all(&erased)?;
        }
        Ok(())
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let offset = self.check(offset, bytes.len(), WRITE_SIZE)?;
        let mut chunk = [0u8; 256];
        for (i, new) in bytes.chunks(chunk.len()).enumerate() {
            let at = offset + i * chunk.len();
            let cells = &mut chunk[..new.len()];
            self.file.seek(at)?;
            self.file.read_exact(cells)?;
            // NOR programming only clears bits.
            cells.iter_mut().zip(new).for_each(|(cell, bit)| *cell &= bit);
            self.file.seek(at)?;
            self.file.write_all(cells)?;
        }
        Ok(())
    }
}

// Writing only clears bits, so writing a word twice is as on real multi-write NOR.
impl MultiwriteNorFlash for HostFileFlash {}
