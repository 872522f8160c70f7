//! What the two link probes share (`bin/plain_probe.rs`, `bin/tls_probe.rs`): the login
//! they send, and the files they read from the host.
//!
//! The probes measure what a TLS 1.3 client costs this board. Each logs in to the
//! fleet's broker as the golden device, with an MQTT CONNECT and the CONNACK that
//! answers it, one over the plain UART link, one inside a TLS session on it; everything
//! else is the same code, so the difference between the two images is the TLS client.

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use crate::semihost::{HostFile, OpenMode};

/// A host file's whole content (`path` relative to QEMU's working directory).
pub fn read_host_file(path: &core::ffi::CStr) -> Option<Vec<u8>> {
    let mut file = HostFile::open(path, OpenMode::ReadWrite).ok()?;
    let mut bytes = vec![0u8; file.len().ok()?];
    file.read_exact(&mut bytes).ok()?;
    Some(bytes)
}

/// An MQTT 3.1.1 CONNECT with a clean session, `client_id` as id and username, and
/// `password`, keep-alive 60 s.
pub fn connect_packet(client_id: &str, password: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + 2 * client_id.len() + password.len());
    field(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0b1100_0010); // username, password, clean session
    body.extend_from_slice(&60u16.to_be_bytes());
    field(&mut body, client_id.as_bytes());
    field(&mut body, client_id.as_bytes());
    field(&mut body, password);
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The CONNACK's return code (0: accepted), if `bytes` is one.
pub fn connack_code(bytes: &[u8; 4]) -> Option<u8> {
    (bytes[0] == 0x20 && bytes[1] == 2).then_some(bytes[3])
}
