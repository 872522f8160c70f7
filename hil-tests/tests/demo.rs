//! The demo a newcomer runs first must keep working: run `fleet-demo` (Linux agents
//! only, without its build step, since this `cargo test` has built the binaries) and
//! check that it ran the job everywhere and stopped cleanly.

use std::process::Command;

#[test]
fn the_demo_runs_hello_on_every_device_and_stops_cleanly() {
    let output = Command::new(env!("CARGO_BIN_EXE_fleet-demo"))
        .args(["--no-board", "--no-build"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run fleet-demo: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "fleet-demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("job completed: 3 of 3 devices succeeded"), "{stdout}");
    for device in ["gw-01", "gw-02", "gw-03"] {
        assert!(stdout.contains(&format!("output: hello from {device}")), "{stdout}");
    }
    assert!(stdout.contains("stopped cleanly"), "{stdout}");
}
