//! Prints the flash and static RAM of firmware images against the budget.
//!
//! `cargo run -p fleet-firmware-qemu-tests --bin fw-size -- <elf>...`; exits 1 if one is
//! over budget. The heap's high-water mark needs a run: `cargo test --test sizes`.

use std::process::ExitCode;

use fleet_firmware_qemu_tests::size::{FLASH_BUDGET, RAM_BUDGET, measure};

fn main() -> ExitCode {
    let mut ok = true;
    println!("{:<40} {:>10} {:>10} {:>10} {:>10}", "image", "text", "rodata", "flash", "static RAM");
    for path in std::env::args().skip(1) {
        let sizes = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| measure(&b).map_err(|e| e.to_string()))
        {
            Ok(sizes) => sizes,
            Err(error) => {
                eprintln!("{path}: {error}");
                ok = false;
                continue;
            }
        };
        println!(
            "{:<40} {:>10} {:>10} {:>10} {:>10}",
            path,
            sizes.text,
            sizes.rodata,
            sizes.flash(),
            sizes.static_ram()
        );
        ok &= sizes.flash() <= FLASH_BUDGET && sizes.static_ram() <= RAM_BUDGET;
    }
    println!("budget: flash {} KiB, RAM {} KiB", FLASH_BUDGET / 1024, RAM_BUDGET / 1024);
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
