//! A NOR flash in RAM for the SDK's flash tests, with a power cut on demand.

use embedded_storage_async::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash};

/// NOR semantics in RAM: erase sets a page to `0xff`, a write only clears bits.
/// `budget` is how many more bytes may be written before the power goes: the write
/// that crosses it is cut short (the bytes before it land) and fails, as do all after.
#[derive(Clone)]
pub struct RamFlash {
    pub cells: Vec<u8>,
    pub budget: usize,
}

impl RamFlash {
    pub fn new(len: usize) -> Self {
        Self { cells: vec![0xff; len], budget: usize::MAX }
    }
}

impl ErrorType for RamFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;
    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        bytes.copy_from_slice(self.cells.get(at..at + bytes.len()).ok_or(NorFlashErrorKind::OutOfBounds)?);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.cells.len()
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;
    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if self.budget == 0 {
            return Err(NorFlashErrorKind::Other);
        }
        self.cells[from as usize..to as usize].fill(0xff);
        Ok(())
    }
    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        for (i, b) in bytes.iter().enumerate() {
            if self.budget == 0 {
                return Err(NorFlashErrorKind::Other);
            }
            self.budget -= 1;
            self.cells[offset as usize + i] &= b;
        }
        Ok(())
    }
}

impl MultiwriteNorFlash for RamFlash {}
