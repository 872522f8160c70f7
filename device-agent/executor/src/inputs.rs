//! Named data inputs: the only device data a job can read.
//!
//! A job spec lists the names it wants (`JobSpec::inputs`); the device's configuration
//! says what each name is (a file on a gateway, a sensor on a microcontroller). The
//! executor enforces the first half (a name the spec does not list cannot be opened,
//! whatever the device has, see [`crate::abi`]); a [`DataInputs`] implementation is
//! the second half. Keeping it a trait is what lets the firmware plug in a sensor
//! without the executor knowing about hardware.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;

/// Why reading an input failed. The job sees -1; the message goes to the job's logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// The device's data inputs, by name.
pub trait DataInputs {
    /// Opens the input `name` for reading from its start, or `None` if the device has
    /// no such input. Only called for names the job spec lists.
    fn open(&mut self, name: &str) -> Option<Box<dyn DataInput>>;
}

/// One open input: a byte stream.
pub trait DataInput {
    /// Reads up to `buf.len()` bytes into `buf`, returning how many; 0 at the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, InputError>;
}

impl<T: DataInputs + ?Sized> DataInputs for Box<T> {
    fn open(&mut self, name: &str) -> Option<Box<dyn DataInput>> {
        (**self).open(name)
    }
}

/// A device with no data inputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInputs;

impl DataInputs for NoInputs {
    fn open(&mut self, _name: &str) -> Option<Box<dyn DataInput>> {
        None
    }
}

/// Inputs held in memory: a snapshot of sensor readings on a microcontroller, or test
/// data. Cloning is cheap (the bytes are shared).
#[derive(Debug, Clone, Default)]
pub struct MemoryInputs {
    data: BTreeMap<String, Arc<[u8]>>,
}

impl MemoryInputs {
    /// No inputs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the input `name`.
    pub fn with(mut self, name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        self.data.insert(name.into(), bytes.into());
        self
    }
}

impl DataInputs for MemoryInputs {
    fn open(&mut self, name: &str) -> Option<Box<dyn DataInput>> {
        let bytes = self.data.get(name)?.clone();
        Some(Box::new(MemoryReader { bytes, pos: 0 }))
    }
}

struct MemoryReader {
    bytes: Arc<[u8]>,
    pos: usize,
}

impl DataInput for MemoryReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, InputError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// Inputs backed by files on a gateway: name → path, from the agent's configuration.
///
/// Files are opened read-only, when the job opens them, and only for names the job
/// spec lists; the job never sees a path, so it can read nothing else on the machine.
/// Cloning is cheap (the map is shared).
#[cfg(feature = "std")]
#[derive(Debug, Clone, Default)]
pub struct FileInputs {
    files: Arc<BTreeMap<String, std::path::PathBuf>>,
}

#[cfg(feature = "std")]
impl FileInputs {
    /// Inputs from a map of names to paths.
    pub fn new(files: impl IntoIterator<Item = (String, std::path::PathBuf)>) -> Self {
        Self { files: Arc::new(files.into_iter().collect()) }
    }
}

#[cfg(feature = "std")]
impl DataInputs for FileInputs {
    fn open(&mut self, name: &str) -> Option<Box<dyn DataInput>> {
        let path = self.files.get(name)?;
        let file = std::fs::File::open(path).ok()?;
        Some(Box::new(FileReader(file)))
    }
}

#[cfg(feature = "std")]
struct FileReader(std::fs::File);

#[cfg(feature = "std")]
impl DataInput for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, InputError> {
        use std::io::Read;
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other.map_err(|e| InputError(alloc::format!("{e}"))),
            }
        }
    }
}
