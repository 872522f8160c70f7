//! A sensor on an I2C bus as a job's data input: the example `csv-summary` job reads a
//! temperature through `BoardInputs` and `I2cRegisters`, run in wasmi as on the board.
//!
//! The I2C device is a register file with a TMP102's layout (address 0x48, register 0:
//! temperature, 12 bits left-justified, 0.0625 °C a step), behind the embedded-hal
//! `I2c` trait: the same trait a board's real bus driver implements. There is no
//! sensor on QEMU's mps2-an386 to read instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::rc::Rc;

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};
use fleet_executor::{ExecutorConfig, Job, WasmiExecutor};
use fleet_firmware_sdk::inputs::{BoardData, BoardInputs, I2cRegisters};
use fleet_schemas::{DeviceId, FailReason};

struct RegisterFile {
    address: u8,
    registers: [u8; 256],
    pointer: u8,
    present: bool,
}

impl ErrorType for RegisterFile {
    type Error = ErrorKind;
}

impl I2c for RegisterFile {
    fn transaction(&mut self, address: u8, operations: &mut [Operation<'_>]) -> Result<(), ErrorKind> {
        if address != self.address || !self.present {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for operation in operations {
            match operation {
                Operation::Write(bytes) => {
                    if let Some(&pointer) = bytes.first() {
                        self.pointer = pointer;
                    }
                }
                Operation::Read(buf) => {
                    for byte in buf.iter_mut() {
                        *byte = self.registers[usize::from(self.pointer)];
                        self.pointer = self.pointer.wrapping_add(1);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A TMP102 reading of `celsius`.
fn tmp102(celsius: f64) -> RegisterFile {
    let steps = (celsius / 0.0625) as i16;
    let mut registers = [0u8; 256];
    registers[..2].copy_from_slice(&(steps << 4).to_be_bytes());
    RegisterFile { address: 0x48, registers, pointer: 0, present: true }
}

/// The board's format for `csv-summary`: one `timestamp,value` line.
fn celsius_csv(raw: &[u8]) -> Vec<u8> {
    let steps = i16::from_be_bytes([raw[0], raw[1]]) >> 4;
    format!("0,{}\n", f64::from(steps) * 0.0625).into_bytes()
}

fn executor() -> WasmiExecutor {
    WasmiExecutor::new(ExecutorConfig::microcontroller(DeviceId::new("mcu-1").unwrap())).unwrap()
}

#[test]
fn a_job_reads_a_sensor_on_the_i2c_bus() {
    let bus = Rc::new(RefCell::new(tmp102(23.5)));
    let inputs = BoardInputs::none().add("readings", I2cRegisters::new(bus.clone(), 0x48, 0x00, 2, celsius_csv));
    assert_eq!(inputs.names().into_iter().collect::<Vec<_>>(), ["readings"]);

    let listed = ["readings".to_string()];
    let job = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&listed);
    let report = executor().run(&job, inputs.clone()).unwrap();
    let output = String::from_utf8(report.output).unwrap();
    assert!(output.starts_with("count=1 min=23.5 max=23.5 mean=23.5"), "{output}");

    // The sensor is read when the job opens the input: a new reading, a new result.
    bus.borrow_mut().registers[..2].copy_from_slice(&((-4.25f64 / 0.0625) as i16 * 16).to_be_bytes());
    let report = executor().run(&job, inputs).unwrap();
    let output = String::from_utf8(report.output).unwrap();
    assert!(output.starts_with("count=1 min=-4.25 max=-4.25"), "{output}");
}

/// The same sensor read by plain programs through WASI preview 1 (`/inputs/readings`) in
/// one page of memory, as a board gives a job: csv-summary in C (wasi-libc's `fopen` and
/// `fgets`) and in AssemblyScript print the fleet-ABI job's output, byte for byte. (The
/// AssemblyScript one is 14 KB and fits `Settings::microcontroller`'s 16 KiB module
/// limit; the C one, 41 KB with `printf` and `strtod`, needs a board with a larger one.)
#[test]
fn programs_in_c_and_assemblyscript_read_the_sensor_as_a_file_and_print_what_the_fleet_abi_job_prints() {
    let bus = Rc::new(RefCell::new(tmp102(23.5)));
    let inputs = BoardInputs::none().add("readings", I2cRegisters::new(bus, 0x48, 0x00, 2, celsius_csv));
    let listed = ["readings".to_string()];
    let one_page = fleet_schemas::Limits { fuel: 0, memory_pages: 1, timeout_ms: 0 };
    let c = Job::new(fleet_wasi_jobs::CSV_SUMMARY).with_inputs(&listed).with_limits(one_page);
    let from_c = executor().run(&c, inputs.clone()).unwrap_or_else(|f| panic!("{f}"));
    let abi = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&listed);
    let from_abi = executor().run(&abi, inputs.clone()).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(String::from_utf8_lossy(&from_c.output), "count=1 min=23.5 max=23.5 mean=23.500 skipped=0");
    assert_eq!(from_c.output, from_abi.output);
    assert_eq!(from_c.logs, from_abi.logs);
    let assemblyscript = Job::new(fleet_wasi_jobs::CSV_SUMMARY_AS).with_inputs(&listed).with_limits(one_page);
    let from_as = executor().run(&assemblyscript, inputs).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(from_as.output, from_abi.output);
    assert_eq!(from_as.logs, from_abi.logs);
    assert!(fleet_wasi_jobs::CSV_SUMMARY_AS.len() <= 16 * 1024);
}

#[test]
fn a_sensor_that_does_not_answer_fails_the_job_with_the_reason_in_its_logs() {
    let bus = Rc::new(RefCell::new(tmp102(20.0)));
    bus.borrow_mut().present = false;
    let inputs = BoardInputs::none().add("readings", I2cRegisters::new(bus, 0x48, 0x00, 2, celsius_csv));
    let listed = ["readings".to_string()];
    let job = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&listed);
    let failure = executor().run(&job, inputs).unwrap_err();
    // csv-summary returns 3 on a read error: a `Trap` with `job returned 3`.
    assert_eq!(failure.reason, FailReason::Trap, "{failure:?}");
    assert!(failure.message.contains("job returned 3"), "{failure:?}");
    let logs = failure.report.logs.join("\n");
    assert!(logs.contains("I2C read of device 0x48 register 0x00 failed"), "{logs}");
}

#[test]
fn an_input_the_board_does_not_have_is_not_there() {
    let inputs = BoardInputs::none();
    assert!(inputs.names().is_empty());
    let listed = ["readings".to_string()];
    let job = Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&listed);
    let failure = executor().run(&job, inputs).unwrap_err();
    // csv-summary returns 2 when `readings` cannot be opened.
    assert_eq!(failure.reason, FailReason::Trap, "{failure:?}");
    assert!(failure.message.contains("job returned 2"), "{failure:?}");
}
