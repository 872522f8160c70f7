//! The link to the broker, as a byte stream.
//!
//! MQTT needs nothing but an ordered, reliable byte stream, so the SDK asks for exactly
//! that: `embedded-io-async` [`Read`] + [`Write`]. A board can hand over a UART bridged to
//! TCP (QEMU, a serial-to-Ethernet gateway), the TCP socket of a cellular modem's AT
//! stack, or an `embassy-net` socket; TLS, when the board needs it, wraps the stream
//! (embedded-tls) without the SDK knowing.

pub use embedded_io_async::{ErrorType, Read, Write};

/// A reliable, ordered byte stream to the broker.
pub trait Transport: Read + Write {}

impl<T: Read + Write> Transport for T {}
