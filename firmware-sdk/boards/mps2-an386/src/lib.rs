//! # Board support for QEMU's `mps2-an386` (Cortex-M4F)
//!
//! This folder is the template for a new board: it implements the SDK's boundary
//! traits for one machine and nothing else.
//!
//! | file | implements | with |
//! |---|---|---|
//! | `uart.rs` | `fleet_firmware_sdk::transport::Transport` | CMSDK APB UART0 at `0x4000_4000` (QEMU bridges it to TCP with `-serial tcp:HOST:PORT`) |
//! | `clock.rs` | `fleet_firmware_sdk::clock::Clock` | SysTick at 1 kHz |
//! | `flash.rs` | `embedded-storage-async` `NorFlash` | a host file through semihosting, so flash survives a power cycle |
//! | `semihost.rs` | exit codes and console | ARM semihosting (`-semihosting-config enable=on,target=native`) |
//! | `probe.rs` | the link probes' login (what a TLS client costs, `bin/tls_probe.rs`) | MQTT CONNECT by hand |
//! | `memory.x` | the memory map | sized to the fleet's budget (640 KiB flash, 256 KiB RAM) |
//!
//! A real board replaces `uart.rs` with its modem or network socket, `flash.rs` with
//! its flash driver, and keeps the rest of the firmware unchanged.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod clock;
pub mod flash;
pub mod host_input;
pub mod probe;
pub mod semihost;
pub mod uart;

use core::mem::MaybeUninit;

use fleet_firmware_sdk::heap::{HeapStats, TrackedHeap};
use fleet_firmware_sdk::layout::Layout;

pub use cortex_m_rt::entry;

/// The heap's size. The agent holds a job's Wasm memory (one 64 KiB page), wasmi's
/// module and stacks, an envelope or two and its queue there; the rest of the 256 KiB
/// RAM budget is statics and the stack (signature checks need a few KiB of it).
pub const HEAP_BYTES: usize = 192 * 1024;

/// The flash partitions: one 4 KiB page of config, 63 of store (252 KiB: the agent's
/// journal, a ring that compacts itself when half full).
pub const LAYOUT: Layout = Layout::new(flash::ERASE_SIZE, 63);

#[global_allocator]
static HEAP: TrackedHeap = TrackedHeap::empty();

/// Everything the firmware gets from the board.
pub struct Board {
    /// The link to the broker.
    pub uart: uart::Uart,
    /// The clock.
    pub clock: clock::SysTickClock,
}

/// Brings the board up: heap, SysTick, UART. Call once, first thing in `main`;
/// `None` if called again.
pub fn init() -> Option<Board> {
    let peripherals = cortex_m::Peripherals::take()?;
    static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];
    #[allow(unsafe_code)]
    // SAFETY: `Peripherals::take` succeeds once, so this borrow is the only one ever made.
    let memory = unsafe { &mut *core::ptr::addr_of_mut!(HEAP_MEM) };
    HEAP.init(memory);
    let clock = clock::SysTickClock::start(peripherals.SYST);
    Some(Board { uart: uart::Uart::uart0(), clock })
}

/// The heap's size, use and high-water mark.
pub fn heap_stats() -> HeapStats {
    HEAP.stats()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    semihost::eprintln(format_args!("firmware panicked: {info}"));
    semihost::exit(false)
}
