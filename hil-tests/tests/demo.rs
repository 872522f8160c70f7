//! The demo a newcomer runs first must keep working: run `fleet-demo` (without its build
//! step for the fleet's binaries, since this `cargo test` has built them; it builds the
//! firmware itself) and check that it ran the job everywhere, the emulated board too
//! where QEMU and the firmware target are there (required when FLEET_HIL_REQUIRE_BOARDS
//! is set, as CI sets it), and stopped cleanly.

use std::process::Command;

#[test]
fn the_demo_runs_hello_on_every_device_the_board_too_and_stops_cleanly() {
    let output = Command::new(env!("CARGO_BIN_EXE_fleet-demo"))
        .arg("--no-build")
        .output()
        .unwrap_or_else(|e| panic!("cannot run fleet-demo: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "fleet-demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("The first run builds everything"), "{stdout}");
    let board = !stdout.contains("(no emulated board");
    if std::env::var_os("FLEET_HIL_REQUIRE_BOARDS").is_some_and(|v| v == "1") {
        assert!(board, "no board in the demo, and FLEET_HIL_REQUIRE_BOARDS=1:\n{stdout}");
    }
    let devices: &[&str] = if board { &["gw-01", "gw-02", "gw-03", "mcu-01"] } else { &["gw-01", "gw-02", "gw-03"] };
    assert!(stdout.contains(&format!("job completed: {n} of {n} devices succeeded", n = devices.len())), "{stdout}");
    for device in devices {
        assert!(stdout.contains(&format!("output: hello from {device}")), "{stdout}");
    }
    if board {
        // The same job's result from the board, beside the gateways'.
        assert!(stdout.contains("mcu-01   mcu    succeeded  hello from mcu-01"), "{stdout}");
    }
    assert!(stdout.contains("stopped cleanly"), "{stdout}");
}
