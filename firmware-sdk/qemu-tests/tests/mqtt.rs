//! Milestone 3: the firmware joins the fleet over MQTT through its UART.
//!
//! A real broker (mosquitto, password auth) listens on loopback; QEMU bridges the
//! board's UART0 to it (`-serial tcp:127.0.0.1:PORT`). The test checks, as any MQTT
//! client would see it: the retained device status turns online; a signed golden
//! envelope published on the device's jobs topic is verified by the firmware; and when
//! the firmware goes away without a DISCONNECT the last-will turns the status offline.

use std::time::Duration;

use fleet_firmware_qemu_tests::broker::Broker;
use fleet_firmware_qemu_tests::provision::{golden_device, write_flash};
use fleet_firmware_qemu_tests::{firmware, free_port, qemu_command, scratch_dir, wait_with_timeout};
use fleet_schemas::golden::VECTORS;
use fleet_schemas::status::from_json;
use fleet_schemas::{DeviceStatus, Presence};

const STATUS: &str = "fleet/devices/gw-001/status";
const JOBS: &str = "fleet/devices/gw-001/jobs";
const WATCHER: (&str, &str) = ("watcher", "watcher-pw");

fn presence(message: &[u8]) -> Option<Presence> {
    from_json::<DeviceStatus>(message).ok().map(|status| status.state)
}

#[test]
fn device_goes_online_verifies_a_job_and_leaves_a_last_will() {
    let elf = firmware("mqtt");
    let dir = scratch_dir("mqtt");
    let port = free_port();
    let broker = Broker::start(&dir, port, &[("gw-001", "device-pw"), WATCHER]);
    write_flash(&dir, &golden_device("device-pw", port));

    let qemu = qemu_command(&elf, &dir, &format!("tcp:127.0.0.1:{port}"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start qemu-system-arm: {e}"));

    let online =
        broker.wait_retained(WATCHER, STATUS, Duration::from_secs(30), |m| presence(m) == Some(Presence::Online));
    let online = online.unwrap_or_default();
    let status: Option<DeviceStatus> = from_json(&online).ok();
    if status.as_ref().map(|s| s.state) != Some(Presence::Online) {
        let run = wait_with_timeout(qemu, Duration::from_secs(1));
        panic!("no retained online status (got {:?}):\n{run}", String::from_utf8_lossy(&online));
    }
    let status = status.unwrap_or_else(|| unreachable!());
    assert_eq!(status.device_id.as_str(), "gw-001");
    assert_eq!(status.labels.get("site").map(String::as_str), Some("qemu"));

    let envelope = VECTORS.iter().find(|v| v.name == "envelope_run_inline").map(|v| v.bytes).unwrap_or_default();
    broker.publish(WATCHER, JOBS, envelope);
    let run = wait_with_timeout(qemu, Duration::from_secs(30));
    assert!(run.passed(), "the firmware did not verify the job:\n{run}");
    assert!(run.stdout.contains("job: verified seq 1"), "{run}");
    eprintln!("{run}");

    let offline =
        broker.wait_retained(WATCHER, STATUS, Duration::from_secs(10), |m| presence(m) == Some(Presence::Offline));
    assert_eq!(offline.as_deref().and_then(presence), Some(Presence::Offline), "the last-will did not fire");
}

#[test]
fn a_wrong_password_is_refused() {
    let elf = firmware("mqtt");
    let dir = scratch_dir("mqtt-refused");
    let port = free_port();
    let _broker = Broker::start(&dir, port, &[("gw-001", "device-pw")]);
    write_flash(&dir, &golden_device("not-the-password", port));
    let qemu = qemu_command(&elf, &dir, &format!("tcp:127.0.0.1:{port}"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start qemu-system-arm: {e}"));
    let run = wait_with_timeout(qemu, Duration::from_secs(30));
    assert_eq!(run.code, Some(1), "a refused login must fail the boot:\n{run}");
    assert!(run.stderr.contains("connect:"), "{run}");
}

#[test]
fn an_unprovisioned_board_says_so() {
    let elf = firmware("mqtt");
    let dir = scratch_dir("mqtt-unprovisioned");
    let qemu = qemu_command(&elf, &dir, "null").spawn().unwrap_or_else(|e| panic!("cannot start qemu: {e}"));
    let run = wait_with_timeout(qemu, Duration::from_secs(30));
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("not provisioned"), "{run}");
}
