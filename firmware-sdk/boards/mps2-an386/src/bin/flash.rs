//! Firmware check 2: the flash store survives a power cycle.
//!
//! Each boot opens the store on the host-file flash, reads the boot count and a
//! scratch value written by the previous boot, checks the scratch value matches the
//! count it claims, then writes the next ones. The harness runs QEMU twice on the same
//! file and expects `boot 1` then `boot 2`: the second boot can only say so if the
//! first boot's writes reached the file.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use fleet_board_mps2_an386::flash::{DEFAULT_FILE, HostFileFlash};
use fleet_board_mps2_an386::{self as board, LAYOUT, entry, semihost};
use fleet_firmware_sdk::exec::block_on;
use fleet_firmware_sdk::store::{Key, Store, StoreError};

#[entry]
fn main() -> ! {
    if board::init().is_none() {
        semihost::exit(false);
    }
    let result = block_on(run());
    let heap = board::heap_stats();
    semihost::println(format_args!("heap: peak {} of {} bytes", heap.peak, heap.size));
    match result {
        Ok(boot) => {
            semihost::println(format_args!("flash: boot {boot}"));
            semihost::exit(true)
        }
        Err(error) => {
            semihost::eprintln(format_args!("flash: {error}"));
            semihost::exit(false)
        }
    }
}

/// A value whose content depends on the boot it was written in: 600 bytes, so it
/// spans several flash words and a torn write would show.
fn scratch_for(boot: u32) -> Vec<u8> {
    (0..600u32).map(|i| (i.wrapping_mul(31).wrapping_add(boot)) as u8).collect()
}

async fn run() -> Result<u32, StoreError> {
    let flash = HostFileFlash::open(DEFAULT_FILE, LAYOUT.len() as usize).map_err(|_| StoreError::Flash)?;
    let mut store = Store::new(flash, LAYOUT.store.clone())?;
    let previous: u32 = store.get_value(Key::BootCount).await?.unwrap_or(0);
    if previous > 0 && store.get(Key::Scratch).await?.as_deref() != Some(scratch_for(previous).as_slice()) {
        return Err(StoreError::Corrupted);
    }
    let boot = previous.saturating_add(1);
    store.put(Key::Scratch, &scratch_for(boot)).await?;
    store.put_value(Key::BootCount, &boot).await?;
    if store.get_value::<u32>(Key::BootCount).await? != Some(boot) {
        return Err(StoreError::Corrupted);
    }
    Ok(boot)
}
