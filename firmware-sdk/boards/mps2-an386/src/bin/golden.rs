//! Firmware check 1: the golden vectors decode on the microcontroller.
//!
//! Every part of the fleet must read the same bytes the same way. This image runs
//! `fleet_schemas::golden::check_all()` (decode, compare with the committed JSON,
//! re-encode) and a full `verify_envelope` of the golden envelope with the golden
//! controller key, on the emulated Cortex-M4, and exits QEMU with 0 only if all pass.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;

use fleet_board_mps2_an386::{self as board, entry, semihost};
use fleet_schemas::golden::{self, CONTROLLER_SEED, DEVICE_ID};
use fleet_schemas::{DeviceId, KeyRing, Order, Rejection, ReplayState, SigningKey, Trusted, verify_envelope};

#[entry]
fn main() -> ! {
    if board::init().is_none() {
        semihost::exit(false);
    }
    let ok = run();
    let heap = board::heap_stats();
    semihost::println(format_args!("heap: peak {} of {} bytes", heap.peak, heap.size));
    semihost::println(format_args!("golden: {}", if ok { "PASS" } else { "FAIL" }));
    semihost::exit(ok)
}

fn run() -> bool {
    match golden::check_all() {
        Ok(n) => semihost::println(format_args!("golden: {n} vectors decode, read and re-encode as committed")),
        Err(mismatch) => {
            semihost::eprintln(format_args!("golden: {mismatch}"));
            return false;
        }
    }
    verify_golden_envelope()
}

fn verify_golden_envelope() -> bool {
    let Some(vector) = golden::VECTORS.iter().find(|v| v.name == "envelope_run_inline") else {
        semihost::eprintln(format_args!("verify: no envelope_run_inline vector"));
        return false;
    };
    let Some(ring) = KeyRing::new(vec![Trusted::of_signing_key(&SigningKey::from_bytes(&CONTROLLER_SEED))]) else {
        return false;
    };
    let Ok(me) = DeviceId::new(DEVICE_ID) else {
        return false;
    };
    let replay = ReplayState::default();
    let verified = match verify_envelope(vector.bytes, &ring, &me, None, &replay) {
        Ok(verified) => verified,
        Err(rejection) => {
            semihost::eprintln(format_args!("verify: golden envelope rejected: {rejection}"));
            return false;
        }
    };
    let envelope = &verified.envelope;
    if envelope.device_id != me || envelope.seq != 1 || !matches!(envelope.order, Order::Run { .. }) {
        semihost::eprintln(format_args!("verify: golden envelope verified to unexpected content"));
        return false;
    }
    // The same bytes with one signature bit flipped must be refused.
    let mut tampered = vector.bytes.to_vec();
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    let tampered = verify_envelope(&tampered, &ring, &me, None, &replay);
    if tampered != Err(Rejection::BadSignature) {
        semihost::eprintln(format_args!("verify: tampered envelope gave {tampered:?}"));
        return false;
    }
    // And once accepted, the same envelope is a replay.
    let mut after = replay;
    after.accept(envelope);
    if !matches!(verify_envelope(vector.bytes, &ring, &me, None, &after), Err(Rejection::Replayed { .. })) {
        semihost::eprintln(format_args!("verify: replayed envelope was not refused"));
        return false;
    }
    semihost::println(format_args!(
        "verify: golden envelope seq {} for {} verified; tampered and replayed copies refused",
        envelope.seq, envelope.device_id
    ));
    true
}
