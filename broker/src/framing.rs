//! Cutting byte streams into MQTT 3.1.1 packets, with rumqttd's own v4 codec.
//!
//! Why here and not in the I/O code: the three ways a client's bytes can go wrong (too
//! big, not MQTT, another protocol version) are told apart in one place, and the
//! property tests can throw arbitrary bytes at it without a socket.

use bytes::BytesMut;
use rumqttd::protocol::v4::{self, PacketType, V4};
use rumqttd::protocol::{self, Packet, Protocol};

/// Why a byte stream could not be cut into a packet.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The packet's announced body is larger than allowed: refused before buffering it.
    #[error("packet body of {0} bytes is over the limit")]
    Oversized(usize),
    /// A CONNECT for a protocol other than MQTT 3.1.1 (3.1's `MQIsdp`, or 5).
    #[error("not MQTT 3.1.1: {0}")]
    UnsupportedProtocol(protocol::Error),
    /// Not a valid MQTT 3.1.1 packet.
    #[error("malformed packet: {0}")]
    Malformed(protocol::Error),
}

/// Decodes and removes the next whole packet from `buf`; `None` when more bytes are
/// needed. After an error the buffer is in no useful state: close the connection.
pub(crate) fn next_packet(buf: &mut BytesMut, max_body: usize) -> Result<Option<Packet>, FrameError> {
    match V4.read_mut(buf, max_body) {
        Ok(packet) => Ok(Some(packet)),
        Err(protocol::Error::InsufficientBytes(_)) => Ok(None),
        Err(protocol::Error::PayloadSizeLimitExceeded(size)) => Err(FrameError::Oversized(size)),
        Err(e @ (protocol::Error::InvalidProtocol | protocol::Error::InvalidProtocolLevel(_))) => {
            Err(FrameError::UnsupportedProtocol(e))
        }
        Err(e) => Err(FrameError::Malformed(e)),
    }
}

/// The length and type of the whole packet at the start of `bytes`; `None` when it is
/// not all there yet. Used on the engine's stream, which is relayed without decoding.
pub(crate) fn peek_frame(bytes: &[u8], max_body: usize) -> Result<Option<(usize, PacketType)>, FrameError> {
    match v4::check(bytes.iter(), max_body) {
        Ok(header) => {
            let kind = header.packet_type().map_err(FrameError::Malformed)?;
            Ok(Some((header.frame_length(), kind)))
        }
        Err(protocol::Error::InsufficientBytes(_)) => Ok(None),
        Err(protocol::Error::PayloadSizeLimitExceeded(size)) => Err(FrameError::Oversized(size)),
        Err(e) => Err(FrameError::Malformed(e)),
    }
}

/// The first byte of every CONNECT (MQTT 3.1.1 section 3.1.1: type 1, flags 0).
pub(crate) const CONNECT_BYTE: u8 = 0x10;

/// Whether `byte1` can start a packet a client sends after CONNECT. Checked on the first
/// byte, so garbage is refused at once instead of after its "body" has been waited for.
pub(crate) fn plausible_client_packet(byte1: u8) -> bool {
    // PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT.
    matches!(byte1 >> 4, 3 | 4 | 5 | 6 | 7 | 8 | 10 | 12 | 14)
}

/// Appends `packet`, encoded, to `out`.
pub(crate) fn encode(packet: Packet, out: &mut BytesMut) -> Result<(), FrameError> {
    V4.write(packet, out).map(|_| ()).map_err(FrameError::Malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;
    use rumqttd::protocol::{Connect, Login, Publish};

    use super::*;

    #[test]
    fn round_trip_and_partial_input() {
        let mut out = BytesMut::new();
        encode(Packet::Publish(Publish::new("a/b", "hello", true), None), &mut out).unwrap();
        let whole = out.clone();
        let mut partial = BytesMut::from(&whole[..whole.len() - 1]);
        assert!(next_packet(&mut partial, 1024).unwrap().is_none());
        assert_eq!(peek_frame(&partial, 1024).unwrap(), None);
        assert_eq!(peek_frame(&whole, 1024).unwrap(), Some((whole.len(), PacketType::Publish)));
        let Some(Packet::Publish(p, None)) = next_packet(&mut out, 1024).unwrap() else { panic!("not a publish") };
        assert_eq!((&p.topic[..], &p.payload[..], p.retain), (&b"a/b"[..], &b"hello"[..], true));
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_is_refused_from_the_header() {
        // A header announcing 1 MiB, with no body yet.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x40][..]);
        assert!(matches!(next_packet(&mut buf, 256 * 1024), Err(FrameError::Oversized(1_048_576))));
    }

    #[test]
    fn other_protocol_versions_are_told_apart() {
        let mut out = BytesMut::new();
        let connect = Connect { keep_alive: 10, client_id: "c".into(), clean_session: true };
        let login = Login { username: "u".into(), password: "p".into() };
        encode(Packet::Connect(connect, None, None, None, Some(login)), &mut out).unwrap();
        // Protocol level is the byte after "MQTT": 4 -> 5.
        let level = out.iter().position(|&b| b == 4).unwrap();
        out[level] = 5;
        assert!(matches!(next_packet(&mut out, 1024), Err(FrameError::UnsupportedProtocol(_))));
    }

    #[test]
    fn garbage_is_malformed() {
        let mut buf = BytesMut::from(&[0xf0, 0x00][..]);
        assert!(matches!(next_packet(&mut buf, 1024), Err(FrameError::Malformed(_))));
        // Text looks like a partial packet to a decoder; the first-byte checks catch it.
        assert_ne!(b'G', CONNECT_BYTE);
        assert!(!plausible_client_packet(0x00) && !plausible_client_packet(0x20) && !plausible_client_packet(0x90));
        assert!(plausible_client_packet(0x30) && plausible_client_packet(0x82) && plausible_client_packet(0xe0));
    }

    proptest! {
        /// Hostile bytes never panic the decoder and never make it buffer past the limit.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = next_packet(&mut buf, 256) {}
            let _ = peek_frame(&bytes, 256);
        }
    }
}
