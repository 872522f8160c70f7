//! `hello`: the smallest useful job. Outputs `hello from {device id}` and logs a line;
//! the first job to push to a new device, and the per-instantiation benchmark.
#![no_std]

use fleet_job::{log, output};

fn main() -> Result<(), i32> {
    let mut buf = [0u8; 64];
    let id = fleet_job::device_id(&mut buf).unwrap_or("an unknown device");
    log!("hello job running on {id} with {} argument(s)", fleet_job::arg_count());
    if output!("hello from {id}") { Ok(()) } else { Err(2) }
}

fleet_job::entry!(main);
