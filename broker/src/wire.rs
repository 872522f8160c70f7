//! The bytes of the packets the native engine sends, and the two PUBLISH header fields
//! the v4 codec keeps to itself.
//!
//! Why by hand: rumqttd's `Publish` keeps its QoS, packet id and DUP flag crate-private,
//! so its codec can neither build the QoS 1 publishes the engine sends nor say at which
//! QoS a client published. Every packet a server sends in MQTT 3.1.1 is a few fixed
//! bytes or, for PUBLISH, a header, the topic, a packet id and the payload; the tests
//! read everything written here back with rumqttd's decoder, so there is still one
//! reading of the protocol.

use bytes::{BufMut, BytesMut};
use rumqttd::protocol::{QoS, SubscribeReasonCode};

use crate::router::Out;

/// MQTT's variable-length "remaining length".
fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

fn suback_code(code: &SubscribeReasonCode) -> u8 {
    match code {
        SubscribeReasonCode::Success(QoS::AtMostOnce) | SubscribeReasonCode::QoS0 => 0,
        SubscribeReasonCode::Success(QoS::AtLeastOnce) | SubscribeReasonCode::QoS1 => 1,
        SubscribeReasonCode::Success(QoS::ExactlyOnce) | SubscribeReasonCode::QoS2 => 2,
        _ => 0x80,
    }
}

/// Appends the bytes of `packet` to `out`. [`Out::Close`] writes nothing.
pub(crate) fn encode(packet: &Out, out: &mut BytesMut) {
    let ack = |out: &mut BytesMut, kind: u8, pkid: u16| {
        out.put_u8(kind);
        out.put_u8(2);
        out.put_u16(pkid);
    };
    match packet {
        Out::ConnAck { session_present } => {
            out.put_slice(&[0x20, 2, u8::from(*session_present), 0]);
        }
        Out::Publish { pkid, dup, message } => {
            let qos = message.qos.min(1);
            let len = 2 + message.topic.len() + if qos > 0 { 2 } else { 0 } + message.payload.len();
            out.reserve(len + 5);
            out.put_u8(0x30 | (u8::from(*dup && qos > 0) << 3) | (qos << 1) | u8::from(message.retain));
            put_remaining_length(out, len);
            out.put_u16(message.topic.len() as u16);
            out.put_slice(&message.topic);
            if qos > 0 {
                out.put_u16(*pkid);
            }
            out.put_slice(&message.payload);
        }
        Out::PubAck(pkid) => ack(out, 0x40, *pkid),
        Out::PubRec(pkid) => ack(out, 0x50, *pkid),
        Out::PubComp(pkid) => ack(out, 0x70, *pkid),
        Out::UnsubAck(pkid) => ack(out, 0xb0, *pkid),
        Out::SubAck { pkid, codes } => {
            out.put_u8(0x90);
            put_remaining_length(out, 2 + codes.len());
            out.put_u16(*pkid);
            for code in codes {
                out.put_u8(suback_code(code));
            }
        }
        Out::PingResp => out.put_slice(&[0xd0, 0]),
        Out::Close => {}
    }
}

/// The QoS and packet id of the PUBLISH at the start of `bytes` (0 for QoS 0), if its
/// header is all there. The caller decodes the packet with the codec as well, which
/// checks the rest.
pub(crate) fn publish_qos_pkid(bytes: &[u8]) -> Option<(u8, u16)> {
    let first = *bytes.first()?;
    if first >> 4 != 3 {
        return None;
    }
    let qos = (first >> 1) & 0b11;
    let mut at = 1;
    for _ in 0..4 {
        let byte = *bytes.get(at)?;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let topic_len = usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
    at += 2 + topic_len;
    if qos == 0 {
        return Some((0, 0));
    }
    Some((qos, u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?])))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use rumqttd::protocol::Packet;

    use super::*;
    use crate::framing::next_packet;
    use crate::router::Message;

    fn roundtrip(packet: &Out) -> Packet {
        let mut bytes = BytesMut::new();
        encode(packet, &mut bytes);
        let decoded = next_packet(&mut bytes, 1 << 20).unwrap().unwrap();
        assert!(bytes.is_empty(), "{packet:?}: the codec read every byte");
        decoded
    }

    #[test]
    fn what_the_engine_writes_reads_back_with_the_codec() {
        assert!(
            matches!(roundtrip(&Out::ConnAck { session_present: true }), Packet::ConnAck(a, _) if a.session_present)
        );
        assert!(matches!(roundtrip(&Out::PubAck(7)), Packet::PubAck(a, _) if a.pkid == 7));
        assert!(matches!(roundtrip(&Out::PubRec(8)), Packet::PubRec(a, _) if a.pkid == 8));
        assert!(matches!(roundtrip(&Out::PubComp(9)), Packet::PubComp(a, _) if a.pkid == 9));
        assert!(matches!(roundtrip(&Out::UnsubAck(10)), Packet::UnsubAck(a, _) if a.pkid == 10));
        assert!(matches!(roundtrip(&Out::PingResp), Packet::PingResp(_)));
        let codes = vec![SubscribeReasonCode::Success(QoS::AtLeastOnce), SubscribeReasonCode::Failure];
        let Packet::SubAck(suback, _) = roundtrip(&Out::SubAck { pkid: 11, codes: codes.clone() }) else { panic!() };
        assert_eq!((suback.pkid, suback.return_codes), (11, codes));
        // A payload long enough for a two-byte remaining length, at QoS 1 and 0.
        for qos in [0u8, 1] {
            let message = Message {
                topic: Bytes::from_static(b"fleet/devices/d1/jobs"),
                payload: Bytes::from(vec![0xa5; 300]),
                qos,
                retain: qos == 0,
            };
            let mut bytes = BytesMut::new();
            encode(&Out::Publish { pkid: 513, dup: true, message }, &mut bytes);
            assert_eq!(publish_qos_pkid(&bytes), Some((qos, if qos == 1 { 513 } else { 0 })));
            let Packet::Publish(publish, _) = next_packet(&mut bytes, 1 << 20).unwrap().unwrap() else { panic!() };
            assert_eq!(&publish.topic[..], b"fleet/devices/d1/jobs");
            assert_eq!(publish.payload.len(), 300);
            assert_eq!(publish.retain, qos == 0);
        }
    }

    #[test]
    fn a_partial_header_is_not_read() {
        let mut bytes = BytesMut::new();
        let message =
            Message { topic: Bytes::from_static(b"t"), payload: Bytes::from_static(b"x"), qos: 1, retain: false };
        encode(&Out::Publish { pkid: 3, dup: false, message }, &mut bytes);
        for cut in 0..7 {
            assert_eq!(publish_qos_pkid(&bytes[..cut]), None, "{cut} bytes");
        }
        assert_eq!(publish_qos_pkid(&bytes[..7]), Some((1, 3)));
        assert_eq!(publish_qos_pkid(&[0x82, 0]), None, "not a PUBLISH");
    }
}
