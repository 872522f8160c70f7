//! Milestone 2: the flash store survives a power cycle. QEMU runs the `flash` image
//! three times on the same backing file; each boot must see the previous boot's writes.

use std::time::Duration;

use fleet_firmware_qemu_tests::{field, firmware, qemu_command, run_to_end, scratch_dir};

#[test]
fn store_survives_power_cycles() {
    let elf = firmware("flash");
    let dir = scratch_dir("flash");
    for expected in 1..=3 {
        let run = run_to_end(qemu_command(&elf, &dir, "null"), Duration::from_secs(60));
        assert!(run.passed(), "boot {expected} failed:\n{run}");
        assert_eq!(field(&run.stdout, "flash: boot"), Some(expected.to_string().as_str()), "{run}");
    }
    let flash = std::fs::read(dir.join("fleet-flash.bin")).unwrap_or_default();
    assert_eq!(
        flash.len(),
        fleet_firmware_qemu_tests::provision::FLASH_BYTES,
        "the flash file has the board's flash size"
    );
}

#[test]
fn a_killed_boot_leaves_a_readable_store() {
    // Power is cut (QEMU killed) right after start, possibly mid-write; the next boots
    // must still read a consistent store and count on.
    let elf = firmware("flash");
    let dir = scratch_dir("flash-kill");
    let first = run_to_end(qemu_command(&elf, &dir, "null"), Duration::from_secs(60));
    assert!(first.passed(), "{first}");
    for _ in 0..3 {
        let killed = run_to_end(qemu_command(&elf, &dir, "null"), Duration::from_millis(30));
        let _ = killed;
    }
    let after = run_to_end(qemu_command(&elf, &dir, "null"), Duration::from_secs(60));
    assert!(after.passed(), "the store did not survive killed boots:\n{after}");
    let boot: u32 = field(&after.stdout, "flash: boot").and_then(|b| b.parse().ok()).unwrap_or(0);
    assert!((2..=5).contains(&boot), "boot count {boot} after 1 full, 3 killed and 1 full boot:\n{after}");
}
