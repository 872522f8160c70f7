//! The agent's MQTT 3.1.1 session against mosquitto, the reference broker.
//!
//! The other agent tests run against the fleet's own broker (rumqttd behind the fleet's
//! front door). This one checks the session against an implementation that is not ours
//! in any part, as the fleet runs on a third-party MQTT cluster past one broker: the
//! device logs in with its password, leaves a retained online status, and its last-will
//! turns it offline when the power goes.

use std::time::Duration;

use fleet_firmware_qemu_tests::board::{Board, agent_command};
use fleet_firmware_qemu_tests::broker::Broker;
use fleet_firmware_qemu_tests::provision::{golden_device, write_flash};
use fleet_firmware_qemu_tests::{firmware, free_port, scratch_dir};
use fleet_schemas::status::from_json;
use fleet_schemas::{DeviceStatus, Presence};

const STATUS: &str = "fleet/devices/gw-001/status";
const WATCHER: (&str, &str) = ("watcher", "watcher-pw");

fn presence(message: &[u8]) -> Option<Presence> {
    from_json::<DeviceStatus>(message).ok().map(|status| status.state)
}

#[test]
fn the_agent_goes_online_on_mosquitto_and_its_last_will_says_offline() {
    let dir = scratch_dir("agent-mosquitto");
    let port = free_port();
    let broker = Broker::start(&dir, port, &[("gw-001", "device-pw"), WATCHER]);
    write_flash(&dir, &golden_device("device-pw", port));
    let mut board = Board::start(agent_command(&firmware("agent"), &dir, port));

    let online =
        broker.wait_retained(WATCHER, STATUS, Duration::from_secs(30), |m| presence(m) == Some(Presence::Online));
    assert_eq!(online.as_deref().and_then(presence), Some(Presence::Online), "{board}");
    let status: Option<DeviceStatus> = online.as_deref().and_then(|m| from_json(m).ok());
    assert_eq!(status.map(|s| s.labels.get("site").cloned()), Some(Some("qemu".to_string())));

    board.kill();
    let offline =
        broker.wait_retained(WATCHER, STATUS, Duration::from_secs(10), |m| presence(m) == Some(Presence::Offline));
    assert_eq!(offline.as_deref().and_then(presence), Some(Presence::Offline), "the last-will did not fire");
}
