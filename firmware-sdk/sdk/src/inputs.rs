//! The board's data sources as job inputs: sensors read through embedded-hal.
//!
//! A job reads device data only through named inputs (`fleet_executor::DataInputs`):
//! on a gateway a name is a file, here it is a sensor. A board registers each sensor
//! under the name jobs ask for ([`BoardInputs::add`]); the agent advertises those names
//! in its capabilities (so a job that needs an input this device lacks is refused with
//! a typed reason, not run) and hands the executor a handle for each run.
//!
//! A sensor is read when a job opens the input, once, and the job reads that sample as
//! a byte stream in the board's format (CSV `timestamp,value` lines for the example
//! `csv-summary` job). So a job sees one consistent reading, a sensor is never woken for
//! a job that does not ask, and the driver is any embedded-hal implementation: the
//! [`I2cRegisters`] sensor here takes an `embedded_hal::i2c::I2c` bus, shared with the
//! board's other drivers through a `RefCell`.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use embedded_hal::i2c::{Error as _, I2c};
use fleet_executor::{DataInput, DataInputs, InputError, MemoryInputs, NoInputs};

/// What a board hands the agent as its data sources: inputs a run can hold (a cheap
/// clone per run) and the names the agent advertises.
pub trait BoardData: DataInputs + Clone + 'static {
    /// The names jobs may open.
    fn names(&self) -> BTreeSet<String>;
}

impl BoardData for NoInputs {
    fn names(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }
}

/// One data source: a sample, as the bytes a job reads.
pub trait Sensor {
    /// Reads the source now.
    fn sample(&mut self) -> Result<Vec<u8>, InputError>;
}

/// A sensor behind I2C registers: reads `len` bytes from `register` of the device at
/// `address` (a write of the register number, then a read) and turns them into what
/// jobs read with `format`.
pub struct I2cRegisters<B, F> {
    bus: Rc<RefCell<B>>,
    address: u8,
    register: u8,
    len: usize,
    format: F,
}

impl<B: I2c, F: FnMut(&[u8]) -> Vec<u8>> I2cRegisters<B, F> {
    /// A sensor at `address` on `bus`.
    pub fn new(bus: Rc<RefCell<B>>, address: u8, register: u8, len: usize, format: F) -> Self {
        Self { bus, address, register, len, format }
    }
}

impl<B: I2c, F: FnMut(&[u8]) -> Vec<u8>> Sensor for I2cRegisters<B, F> {
    fn sample(&mut self) -> Result<Vec<u8>, InputError> {
        let mut raw = vec![0u8; self.len];
        let mut bus = self
            .bus
            .try_borrow_mut()
            .map_err(|_| InputError(String::from("the I2C bus is in use by another driver")))?;
        bus.write_read(self.address, &[self.register], &mut raw).map_err(|e| {
            InputError(format!(
                "I2C read of device {:#04x} register {:#04x} failed: {:?}",
                self.address,
                self.register,
                e.kind()
            ))
        })?;
        Ok((self.format)(&raw))
    }
}

/// The board's named inputs. Cloning is cheap (the sensors are shared), which is how
/// each run gets a handle of its own.
#[derive(Clone, Default)]
pub struct BoardInputs {
    sensors: Rc<RefCell<BTreeMap<String, Box<dyn Sensor>>>>,
}

impl BoardInputs {
    /// A board without data sources.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds `sensor` under `name` (a later one with the same name replaces it).
    pub fn add(self, name: impl Into<String>, sensor: impl Sensor + 'static) -> Self {
        self.sensors.borrow_mut().insert(name.into(), Box::new(sensor));
        self
    }
}

impl BoardData for BoardInputs {
    fn names(&self) -> BTreeSet<String> {
        // `extend`, not `collect()`: collecting into a set sorts first, with a copy of
        // the stable sort for this type alone (about 3 KB of flash).
        let mut names = BTreeSet::new();
        names.extend(self.sensors.borrow().keys().cloned());
        names
    }
}

impl DataInputs for BoardInputs {
    fn open(&mut self, name: &str) -> Option<Box<dyn DataInput>> {
        let Ok(mut sensors) = self.sensors.try_borrow_mut() else {
            return Some(Box::new(Unreadable(InputError(String::from("the board's inputs are in use")))));
        };
        let sensor = sensors.get_mut(name)?;
        match sensor.sample() {
            Ok(bytes) => MemoryInputs::new().with(name, bytes).open(name),
            // The job sees a read error (-1); the reason goes to its logs.
            Err(error) => Some(Box::new(Unreadable(error))),
        }
    }
}

/// An input whose source could not be read.
struct Unreadable(InputError);

impl DataInput for Unreadable {
    fn read(&mut self, _buf: &mut [u8]) -> Result<usize, InputError> {
        Err(self.0.clone())
    }
}
