//! Firmware check: what running a job in fuel slices costs on the board.
//!
//! The agent runs every job in slices so that it can serve its link between them
//! (`fleet_firmware_sdk::agent`). This image runs `sum-compute` on wasmi unsliced (the
//! whole budget at once, as before slicing), then through `WasmiExecutor::start`/`resume`
//! with the microcontroller's slice and with a hundred times smaller one (to make the
//! cost of one pause visible), reading the UART's receive register between slices as
//! the agent's look at an idle link does. Each run follows a warm-up run on the same
//! executor, so the module is validated and cached and the runs differ only in slicing.
//! It prints the durations (under `-icount shift=0` they are millions of instructions,
//! the same on every run) and exits with 0 only if every run gives the same output and
//! fuel.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec;

use fleet_board_mps2_an386::clock::ExecutorClock;
use fleet_board_mps2_an386::{self as board, entry, semihost};
use fleet_executor::{ExecutorConfig, Job, NoInputs, Slice, StopSignal, WasmiExecutor};
use fleet_firmware_sdk::clock::Clock;
use fleet_schemas::{DeviceId, Limits};

/// Iterations of sum-compute: about 17 M fuel, long enough for the slices to show.
const ITERATIONS: &str = "600000";

#[entry]
fn main() -> ! {
    let Some(mut board) = board::init() else {
        semihost::exit(false);
    };
    let ok = run(&mut board);
    semihost::println(format_args!("slicing: {}", if ok { "PASS" } else { "FAIL" }));
    semihost::exit(ok)
}

fn run(board: &mut board::Board) -> bool {
    let Ok(device) = DeviceId::new("gw-001") else { return false };
    let config = ExecutorConfig::microcontroller(device);
    let default_slice = config.fuel_slice;
    let args = vec![String::from(ITERATIONS)];
    let limits = Limits { fuel: 100_000_000, memory_pages: 1, timeout_ms: 0 };
    let job = Job::new(fleet_example_jobs::SUM_COMPUTE).with_args(&args).with_limits(limits);
    let Ok(executor) = WasmiExecutor::new(config.clone()) else { return false };
    let mut executor = executor.with_clock(ExecutorClock);

    // Validated and cached first, so each run below costs the same but for slicing.
    let Ok(whole) = executor.run(&job, NoInputs) else { return false };
    let start = board.clock.now_ms();
    let again = executor.run(&job, NoInputs);
    let unsliced_ms = board.clock.now_ms() - start;
    semihost::println(format_args!(
        "slicing: sum-compute {ITERATIONS} iterations, {} fuel: unsliced {unsliced_ms} ms",
        whole.fuel_used
    ));
    let mut same = again.as_ref().is_ok_and(|r| r.output == whole.output);

    for slice in [default_slice, 10_000] {
        let Ok(executor) = WasmiExecutor::new(ExecutorConfig { fuel_slice: slice, ..config.clone() }) else {
            return false;
        };
        let mut executor = executor.with_clock(ExecutorClock);
        let stoppable = job.clone().with_stop(StopSignal::new());
        drop(executor.run(&stoppable, NoInputs));
        let start = board.clock.now_ms();
        let mut run = executor.start(&stoppable, NoInputs);
        let mut slices = 1u32;
        let mut waiting = 0usize;
        let sliced = loop {
            match executor.resume(run) {
                Slice::Finished(result) => break result,
                Slice::Paused(paused) => {
                    run = paused;
                    slices += 1;
                    // The agent's look at an idle link: the UART's receive register.
                    waiting += usize::from(board.uart.try_read_byte().is_some());
                }
            }
        };
        let sliced_ms = board.clock.now_ms() - start;
        semihost::println(format_args!(
            "slicing: sliced every {slice} fuel: {sliced_ms} ms in {slices} slices ({waiting} bytes waiting)"
        ));
        same &= sliced.is_ok_and(|r| r.output == whole.output && r.fuel_used == whole.fuel_used);
    }
    if !same {
        semihost::eprintln(format_args!("slicing: a sliced run differs from the unsliced one"));
    }
    same
}
