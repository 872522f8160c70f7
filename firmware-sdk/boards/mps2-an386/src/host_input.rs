//! A data input read from a file on the machine QEMU runs on: the emulated board's
//! stand-in for a sensor.
//!
//! QEMU's mps2-an386 has no sensor on its I2C buses, so the agent image would offer jobs
//! no data input at all. With a file named [`READINGS_FILE`] in QEMU's working directory
//! at boot, it offers [`READINGS`]: each open of the input reads the file again through
//! semihosting (a new sample), up to [`MAX_SAMPLE_BYTES`], as a sensor driver would read
//! its registers. A real board registers its real sensors instead
//! (`fleet_firmware_sdk::inputs::BoardInputs` with `I2cRegisters`).

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::CStr;

use fleet_executor::{DataInput, DataInputs, InputError};
use fleet_firmware_sdk::inputs::BoardData;

use crate::semihost::{HostFile, OpenMode};

/// The host file the agent image offers as the input [`READINGS`], if it exists at boot.
pub const READINGS_FILE: &CStr = c"fleet-readings.csv";
/// The input's name, as jobs open it.
pub const READINGS: &str = "readings";

/// The most of the file one sample holds: a job's input sits in the heap beside it.
pub const MAX_SAMPLE_BYTES: usize = 4 * 1024;

/// The board's data inputs: [`READINGS`] from a host file, or none. (Not
/// `fleet_firmware_sdk::inputs::BoardInputs`: its map of named sensors costs about 4 KB
/// more flash, most of what this image has left, for what is here one name.)
#[derive(Debug, Clone, Copy)]
pub struct HostFileInputs {
    path: Option<&'static CStr>,
}

impl HostFileInputs {
    /// The file at `path` (relative to QEMU's working directory) as [`READINGS`] if it
    /// can be opened now; otherwise no inputs.
    pub fn find(path: &'static CStr) -> Self {
        Self { path: HostFile::open(path, OpenMode::Read).ok().map(|_| path) }
    }

    fn sample(path: &CStr) -> Result<Vec<u8>, InputError> {
        let failed = || InputError(String::from("reading the host file failed"));
        let mut file = HostFile::open(path, OpenMode::Read).map_err(|_| failed())?;
        let len = file.len().map_err(|_| failed())?.min(MAX_SAMPLE_BYTES);
        let mut bytes = vec![0; len];
        file.read_exact(&mut bytes).map_err(|_| failed())?;
        Ok(bytes)
    }
}

impl BoardData for HostFileInputs {
    fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        if self.path.is_some() {
            names.insert(String::from(READINGS));
        }
        names
    }
}

impl DataInputs for HostFileInputs {
    fn open(&mut self, name: &str) -> Option<Box<dyn DataInput>> {
        let path = self.path.filter(|_| name == READINGS)?;
        Some(Box::new(Sample { bytes: Self::sample(path), at: 0 }))
    }
}

/// One reading of the file, as a job reads it (or the reason it could not be read).
struct Sample {
    bytes: Result<Vec<u8>, InputError>,
    at: usize,
}

impl DataInput for Sample {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, InputError> {
        let bytes = self.bytes.as_ref().map_err(Clone::clone)?;
        let rest = bytes.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}
