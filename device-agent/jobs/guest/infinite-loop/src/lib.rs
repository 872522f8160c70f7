//! `infinite-loop` (hostile): never returns. The executor must stop it with the fuel
//! budget, or with the wall-clock timeout where fuel is plentiful.
#![no_std]

fn main() -> Result<(), i32> {
    fleet_job::log("about to spin forever");
    let mut spins: u32 = 0;
    loop {
        // The counter keeps the loop from being a bare `br`; either way it never ends.
        spins = spins.wrapping_add(1);
        if spins == 0 {
            fleet_job::log("still spinning");
        }
    }
}

fleet_job::entry!(main);
