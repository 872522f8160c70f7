//! Milestone 4: every firmware image fits the budget (640 KiB flash, 256 KiB RAM).
//!
//! Flash and static RAM come from the ELF; the heap's high-water mark from running
//! the images that need no broker (the MQTT image reports its own in `tests/mqtt.rs`).
//! The table is printed with `--nocapture`; `memory.x` makes the linker enforce the
//! same budget, so this test is the readable report, not the only guard.

use std::time::Duration;

use fleet_firmware_qemu_tests::size::{FLASH_BUDGET, RAM_BUDGET, measure};
use fleet_firmware_qemu_tests::{field, firmware, qemu_command, run_to_end, scratch_dir};

#[test]
fn images_fit_the_budget() {
    let mut report = String::from("image     flash(text+rodata+data)  static RAM(data+bss, heap incl.)  heap peak\n");
    for image in ["golden", "flash", "mqtt"] {
        let elf = firmware(image);
        let bytes = std::fs::read(&elf).unwrap_or_else(|e| panic!("cannot read {}: {e}", elf.display()));
        let sizes = measure(&bytes).unwrap_or_else(|e| panic!("cannot parse {}: {e}", elf.display()));
        let peak = if image == "mqtt" {
            String::from("see tests/mqtt.rs")
        } else {
            let run = run_to_end(qemu_command(&elf, &scratch_dir(image), "null"), Duration::from_secs(60));
            assert!(run.passed(), "{run}");
            field(&run.stdout, "heap: peak").unwrap_or("?").to_string()
        };
        report += &format!(
            "{image:<9} {:>7} B ({:>5.1}% of {} KiB)  {:>7} B ({:>5.1}% of {} KiB)  {peak}\n",
            sizes.flash(),
            100.0 * sizes.flash() as f64 / FLASH_BUDGET as f64,
            FLASH_BUDGET / 1024,
            sizes.static_ram(),
            100.0 * sizes.static_ram() as f64 / RAM_BUDGET as f64,
            RAM_BUDGET / 1024,
        );
        assert!(sizes.flash() <= FLASH_BUDGET, "{image} is over the flash budget:\n{report}");
        assert!(sizes.static_ram() <= RAM_BUDGET, "{image} is over the RAM budget:\n{report}");
    }
    eprintln!("{report}");
}
