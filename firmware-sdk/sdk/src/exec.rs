//! A minimal executor: the firmware is one task.
//!
//! The agent is one sans-IO state machine driven by one loop, so the firmware needs no
//! scheduler: [`block_on`] polls the one future until it completes, and futures that
//! wait (the UART, the clock) return `Pending` and are simply polled again. A board
//! that wants to sleep between interrupts can run the same futures on embassy's
//! executor instead; nothing in the SDK depends on this one.

pub use embassy_futures::block_on;
pub use embassy_futures::select::{Either, select};
