//! `sum-compute`: a compute-bound loop for benchmarks and for checking that both
//! runtimes compute the same thing. Sums the states of a xorshift64* generator over
//! N iterations (argument 0, default 1 000 000) and outputs `n=N sum=HEX`.
//! Deterministic: the same N gives the same output on every runtime.
#![no_std]

use fleet_job::{log, output};

fn main() -> Result<(), i32> {
    let mut buf = [0u8; 24];
    let n = match fleet_job::arg(0, &mut buf) {
        Ok(text) => text.parse::<u64>().map_err(|_| {
            log!("argument 0 must be an iteration count, got {text:?}");
            2
        })?,
        Err(_) => 1_000_000,
    };
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut sum: u64 = 0;
    for _ in 0..n {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        sum = sum.wrapping_add(state.wrapping_mul(0x2545_F491_4F6C_DD1D));
    }
    if output!("n={n} sum={sum:016x}") { Ok(()) } else { Err(3) }
}

fleet_job::entry!(main);
