//! Milestone 1: the golden vectors decode, and the golden envelope verifies, on the
//! emulated Cortex-M4 (the firmware image `golden`).

use std::time::Duration;

use fleet_firmware_qemu_tests::{firmware, qemu_command, run_to_end, scratch_dir};

#[test]
fn golden_vectors_and_envelope_verify_on_the_board() {
    let elf = firmware("golden");
    let dir = scratch_dir("golden");
    let run = run_to_end(qemu_command(&elf, &dir, "null"), Duration::from_secs(60));
    assert!(run.passed(), "the golden firmware failed on QEMU:\n{run}");
    assert!(run.stdout.contains("golden: 17 vectors decode"), "{run}");
    assert!(run.stdout.contains("tampered and replayed copies refused"), "{run}");
}
