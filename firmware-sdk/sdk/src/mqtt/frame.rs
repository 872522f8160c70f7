//! Where one inbound packet ends, whether a client may receive it, and how much of it
//! to keep.
//!
//! `mqttrs` decodes a packet it is handed whole, and trusts the lengths inside it: a
//! CONNACK with no body, or a PUBLISH whose topic length runs past its end, makes it
//! index out of bounds. So the framing is ours and runs first: it reads the fixed header
//! byte by byte, refuses every packet type a broker never sends a 3.1.1 client at QoS 1,
//! checks each body against the shape of its type, and only then passes the bytes to
//! `mqttrs` (see [`Frame::checked`]). A packet that passed these checks cannot make
//! `mqttrs` read outside it.
//!
//! It also bounds memory: at most `max_packet` bytes of one packet are ever buffered.
//! A PUBLISH over that is not refused (the broker would only send it again on the next
//! connection, forever) but *skipped*: its topic and packet id are kept, the payload is
//! counted and dropped, and the session acknowledges it as one message it cannot hold.

use alloc::vec::Vec;

/// The packet types a client may receive, with what the session needs of their header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connack,
    Publish { qos1: bool },
    Puback,
    Suback,
    Unsuback,
    Pingresp,
}

/// Why the inbound bytes are not MQTT 3.1.1 as a broker sends it to this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A remaining length over four bytes.
    Length,
    /// A packet type a server never sends, or QoS 2 (never subscribed to).
    Unexpected,
    /// A body of the wrong size for its type.
    Shape,
    /// A PUBLISH whose header (topic and packet id) alone is over the limit.
    HeaderTooLarge,
}

/// One complete inbound packet, or what was kept of a skipped one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// The whole packet (fixed header included), ready for `mqttrs`.
    Whole(Vec<u8>),
    /// A PUBLISH over the limit: its topic, its packet id if QoS 1, and its body size.
    Skipped { topic: Vec<u8>, pid: Option<u16>, body_len: usize },
}

enum Stage {
    /// Reading the fixed header: type byte and up to four length bytes.
    Header,
    /// Reading the body: the first `keep` bytes are buffered, the rest only counted.
    /// `sized` once `keep` is final (a skipped PUBLISH learns it from its topic length).
    Body { kind: Kind, header_len: usize, body_len: usize, seen: usize, keep: usize, sized: bool },
    /// A frame is complete and waits for [`Inbound::take`].
    Ready,
}

/// The inbound byte stream, cut into packets.
pub(crate) struct Inbound {
    max_packet: usize,
    stage: Stage,
    /// The bytes kept of the current packet: fixed header, then (up to `keep`) body.
    buf: Vec<u8>,
}

impl Inbound {
    pub(crate) fn new(max_packet: usize) -> Self {
        Self { max_packet: max_packet.max(16), stage: Stage::Header, buf: Vec::new() }
    }

    /// Forgets any partial packet (the connection is gone).
    pub(crate) fn reset(&mut self) {
        self.stage = Stage::Header;
        self.buf = Vec::new();
    }

    /// Takes bytes up to the end of the current packet; returns how many it took
    /// (fewer than offered when a packet completed: take it first).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<usize, FrameError> {
        let mut used = 0;
        while used < bytes.len() {
            match &mut self.stage {
                Stage::Ready => break,
                Stage::Header => {
                    self.buf.push(bytes[used]);
                    used += 1;
                    if let Some((kind, header_len, body_len)) = parse_header(&self.buf)? {
                        let whole = header_len + body_len <= self.max_packet;
                        if !whole && !matches!(kind, Kind::Publish { .. }) {
                            return Err(FrameError::Shape);
                        }
                        // Too large to keep whole: keep the topic length first, to learn
                        // how much more of the header to keep.
                        let keep = if whole { body_len } else { 2 };
                        self.buf.reserve_exact(keep);
                        self.stage = if body_len == 0 {
                            Stage::Ready
                        } else {
                            Stage::Body { kind, header_len, body_len, seen: 0, keep, sized: whole }
                        };
                    }
                }
                Stage::Body { kind, header_len, body_len, seen, keep, sized } => {
                    // Up to the next boundary: the end of what is kept, then the end.
                    let boundary = if *seen < *keep { *keep } else { *body_len };
                    let take = (boundary - *seen).min(bytes.len() - used);
                    if *seen < *keep {
                        self.buf.extend_from_slice(&bytes[used..used + take]);
                    }
                    *seen += take;
                    used += take;
                    if !*sized && *seen == *keep {
                        let at = *header_len;
                        let (Some(&hi), Some(&lo)) = (self.buf.get(at), self.buf.get(at + 1)) else {
                            return Err(FrameError::Shape);
                        };
                        let topic_len = usize::from(u16::from_be_bytes([hi, lo]));
                        let pid_len = if matches!(kind, Kind::Publish { qos1: true }) { 2 } else { 0 };
                        let var_header = 2 + topic_len + pid_len;
                        if var_header > *body_len {
                            return Err(FrameError::Shape);
                        }
                        if *header_len + var_header > self.max_packet {
                            return Err(FrameError::HeaderTooLarge);
                        }
                        *keep = var_header;
                        *sized = true;
                    }
                    if *seen == *body_len {
                        self.stage = Stage::Ready;
                    }
                }
            }
        }
        Ok(used)
    }

    /// The complete frame, if one is ready.
    pub(crate) fn take(&mut self) -> Option<Frame> {
        let Stage::Ready = self.stage else { return None };
        self.stage = Stage::Header;
        let packet = core::mem::take(&mut self.buf);
        let (kind, header_len, body_len) = parse_header(&packet).ok().flatten()?;
        if packet.len() == header_len + body_len {
            return Some(Frame::Whole(packet));
        }
        // A skipped PUBLISH: the buffer holds the header, topic length, topic, pid.
        let body = packet.get(header_len..)?;
        let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let topic = body.get(2..2 + topic_len)?.to_vec();
        let pid = match kind {
            Kind::Publish { qos1: true } => {
                let at = 2 + topic_len;
                Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]))
            }
            _ => None,
        };
        Some(Frame::Skipped { topic, pid, body_len })
    }
}

impl Frame {
    /// Checks a whole packet's body against its type, so that `mqttrs` only ever reads
    /// inside it. Returns the packet, unchanged.
    pub(crate) fn checked(packet: &[u8]) -> Result<&[u8], FrameError> {
        let (kind, header_len, body_len) = parse_header(packet)?.ok_or(FrameError::Length)?;
        let body = packet.get(header_len..).filter(|b| b.len() == body_len).ok_or(FrameError::Length)?;
        let ok = match kind {
            Kind::Connack | Kind::Puback | Kind::Unsuback => body_len == 2,
            Kind::Pingresp => body_len == 0,
            // One packet id and one to five return codes (this client subscribes one
            // filter at a time; mqttrs keeps at most five codes without std).
            Kind::Suback => (3..=7).contains(&body_len),
            Kind::Publish { qos1 } => match body {
                [hi, lo, ..] => {
                    let topic_len = usize::from(u16::from_be_bytes([*hi, *lo]));
                    2 + topic_len + if qos1 { 2 } else { 0 } <= body_len
                }
                _ => false,
            },
        };
        if ok { Ok(packet) } else { Err(FrameError::Shape) }
    }
}

/// Reads a fixed header: `None` until it is complete.
fn parse_header(buf: &[u8]) -> Result<Option<(Kind, usize, usize)>, FrameError> {
    let Some((&first, lengths)) = buf.split_first() else { return Ok(None) };
    let kind = kind_of(first)?;
    let mut body_len = 0usize;
    for (i, &byte) in lengths.iter().enumerate().take(4) {
        body_len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((kind, i + 2, body_len)));
        }
    }
    if lengths.len() >= 4 { Err(FrameError::Length) } else { Ok(None) }
}

/// The type of a packet from its first byte, if a client may receive it.
fn kind_of(first: u8) -> Result<Kind, FrameError> {
    let flags = first & 0x0f;
    match (first >> 4, flags) {
        (2, 0) => Ok(Kind::Connack),
        // QoS 0 or 1; QoS 2 is never granted (every subscription asks for at most 1),
        // and 3 is invalid.
        (3, f) if (f >> 1) & 0b11 <= 1 => Ok(Kind::Publish { qos1: (f >> 1) & 0b11 == 1 }),
        (4, 0) => Ok(Kind::Puback),
        (9, 0) => Ok(Kind::Suback),
        (11, 0) => Ok(Kind::Unsuback),
        (13, 0) => Ok(Kind::Pingresp),
        _ => Err(FrameError::Unexpected),
    }
}
