//! Link probe, plain: the golden device logs in to the broker over the UART link as it
//! is (MQTT CONNECT, CONNACK), and exits 0 if the login is accepted. The baseline the
//! TLS probe (`tls_probe.rs`) is measured against: the same image plus a TLS client.
//!
//! Host files: `probe-password.txt`, the device's MQTT password.
#![no_std]
#![no_main]

use embedded_io::{Read as _, Write as _};
use fleet_board_mps2_an386::{self as board, entry, probe, semihost};
use fleet_firmware_sdk::clock::Clock as _;

#[entry]
fn main() -> ! {
    let Some(mut board) = board::init() else { semihost::exit(false) };
    let Some(password) = probe::read_host_file(c"probe-password.txt") else {
        semihost::eprintln(format_args!("probe: cannot read probe-password.txt"));
        semihost::exit(false)
    };
    let started = board.clock.now_ms();
    let connect = probe::connect_packet(fleet_schemas::golden::DEVICE_ID, password.trim_ascii());
    let Ok(()) = board.uart.write_all(&connect);
    let mut connack = [0u8; 4];
    let Ok(()) = board.uart.read_exact(&mut connack).map_err(|_| ()) else { semihost::exit(false) };
    let took = board.clock.now_ms() - started;
    let code = probe::connack_code(&connack);
    semihost::println(format_args!("probe: plain login in {took} ms, CONNACK code {code:?}"));
    let heap = board::heap_stats();
    semihost::println(format_args!("heap: peak {} of {} bytes", heap.peak, heap.size));
    semihost::exit(code == Some(0))
}
