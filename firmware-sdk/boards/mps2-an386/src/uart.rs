//! The CMSDK APB UART0 as the firmware's byte stream.
//!
//! QEMU connects this UART to a TCP socket (`-serial tcp:127.0.0.1:1883`), so the
//! firmware speaks MQTT to a real broker without a network stack, the way a device
//! behind a serial-to-Ethernet bridge or a modem in transparent mode does. It
//! implements both `embedded-io` (blocking) and `embedded-io-async`; the async read
//! returns `Pending` while the receive register is empty, so a waiting read never
//! blocks the clock or a timeout raced against it.

use core::convert::Infallible;
use core::future::poll_fn;
use core::ptr::{read_volatile, write_volatile};
use core::task::Poll;

/// UART0's base address.
pub const UART0_BASE: usize = 0x4000_4000;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;

/// A CMSDK APB UART.
#[derive(Debug)]
pub struct Uart {
    base: usize,
}

#[allow(unsafe_code)]
impl Uart {
    /// UART0, enabled for transmit and receive.
    pub fn uart0() -> Self {
        let uart = Self { base: UART0_BASE };
        // The divisor only matters on hardware; QEMU wants it to be at least 16.
        uart.write_reg(BAUDDIV, 16);
        uart.write_reg(CTRL, CTRL_TX_EN | CTRL_RX_EN);
        uart
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `base + offset` is a register of the UART on this board's memory map.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// The next received byte, if one is waiting.
    pub fn try_read_byte(&mut self) -> Option<u8> {
        (self.read_reg(STATE) & STATE_RX_FULL != 0).then(|| self.read_reg(DATA) as u8)
    }

    /// Sends one byte, waiting while the transmit register is full.
    pub fn write_byte(&mut self, byte: u8) {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {}
        self.write_reg(DATA, u32::from(byte));
    }

    fn read_available(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            match self.try_read_byte() {
                Some(byte) => {
                    buf[n] = byte;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.read_available(buf);
            if n > 0 {
                return Ok(n);
            }
        }
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        buf.iter().for_each(|&b| self.write_byte(b));
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl embedded_io_async::Read for Uart {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            let n = self.read_available(buf);
            if n > 0 {
                Poll::Ready(Ok(n))
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await
    }
}

impl embedded_io_async::Write for Uart {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        embedded_io::Write::write(self, buf)
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}
