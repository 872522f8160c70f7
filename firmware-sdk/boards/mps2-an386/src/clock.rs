//! SysTick as the board's millisecond clock.
//!
//! The SDK only asks for a monotonic millisecond count ([`Clock`]); SysTick exists on
//! every Cortex-M, so it is the clock any new board can start with. The interrupt
//! counts milliseconds in two 32-bit halves, so the count never wraps in practice and
//! needs no 64-bit atomics.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use fleet_firmware_sdk::clock::Clock;

/// The core clock of mps2-an386 (25 MHz), which SysTick counts.
pub const CORE_HZ: u32 = 25_000_000;

static MS_LO: AtomicU32 = AtomicU32::new(0);
static MS_HI: AtomicU32 = AtomicU32::new(0);

/// Milliseconds since [`SysTickClock::start`].
pub struct SysTickClock {
    _syst: SYST,
}

impl SysTickClock {
    /// Starts SysTick interrupting every millisecond.
    pub fn start(mut syst: SYST) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(CORE_HZ / 1000 - 1);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Self { _syst: syst }
    }
}

impl SysTickClock {
    /// SysTick's current count within the millisecond and the milliseconds so far: a
    /// value that depends on how long the boot took.
    pub fn now_raw() -> u64 {
        (millis() << 32) | u64::from(SYST::get_current())
    }
}

impl Clock for SysTickClock {
    fn now_ms(&self) -> u64 {
        millis()
    }
}

/// Milliseconds since SysTick started.
fn millis() -> u64 {
    loop {
        let hi = MS_HI.load(Ordering::Acquire);
        let lo = MS_LO.load(Ordering::Acquire);
        if MS_HI.load(Ordering::Acquire) == hi {
            return (u64::from(hi) << 32) | u64::from(lo);
        }
    }
}

#[exception]
fn SysTick() {
    if MS_LO.fetch_add(1, Ordering::AcqRel) == u32::MAX {
        MS_HI.fetch_add(1, Ordering::AcqRel);
    }
}

/// The same millisecond count for the job executor (`fleet-executor`'s own clock
/// trait, which it needs as an owned `'static` value): fills in a job's `duration_ms`
/// and enforces its `timeout_ms`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutorClock;

impl fleet_executor::Clock for ExecutorClock {
    fn now_ms(&self) -> u64 {
        millis()
    }
}
