//! The link's look at the broker between two slices of a running job
//! (`Link::poll_event`): it must not wait when nothing came, must read a packet whose
//! bytes keep coming, must stop at a gap, and must still send the keep-alive ping.
//!
//! The transport is a script of byte runs, each available from a given millisecond, on
//! a clock that advances one millisecond each time it is read: as on the board, time
//! passes only while the firmware looks at it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::rc::Rc;

use fleet_firmware_sdk::clock::Clock;
use fleet_firmware_sdk::exec::block_on;
use fleet_firmware_sdk::mqtt::{Event, Link, Session, SessionConfig};
use mqttrs::{Connack, ConnectReturnCode, Packet, QosPid};

const KEEP_ALIVE_SECS: u16 = 10;
const LINGER_MS: u64 = 5;

#[derive(Clone, Default)]
struct TickingClock(Rc<Cell<u64>>);

impl TickingClock {
    fn peek(&self) -> u64 {
        self.0.get()
    }
}

impl Clock for TickingClock {
    fn now_ms(&self) -> u64 {
        let now = self.0.get();
        self.0.set(now + 1);
        now
    }
}

/// Bytes available from a millisecond on.
type Run = (u64, Vec<u8>);

/// Bytes the broker sent, each run available from its millisecond; what the device
/// wrote.
#[derive(Clone)]
struct Script {
    clock: TickingClock,
    runs: Rc<RefCell<VecDeque<Run>>>,
    written: Rc<RefCell<Vec<u8>>>,
}

impl Script {
    fn new(clock: &TickingClock) -> Self {
        Self { clock: clock.clone(), runs: Rc::default(), written: Rc::default() }
    }

    /// `bytes` arrive from `at_ms` on, `every_ms` apart, `chunk` bytes at a time.
    fn arrive(&self, at_ms: u64, bytes: &[u8], chunk: usize, every_ms: u64) {
        let mut runs = self.runs.borrow_mut();
        for (i, piece) in bytes.chunks(chunk).enumerate() {
            runs.push_back((at_ms + i as u64 * every_ms, piece.to_vec()));
        }
    }

    fn written_packets(&self) -> Vec<u8> {
        std::mem::take(&mut *self.written.borrow_mut()).iter().map(|b| b >> 4).collect()
    }
}

impl embedded_io_async::ErrorType for Script {
    type Error = Infallible;
}

impl embedded_io_async::Read for Script {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        core::future::poll_fn(|cx| {
            let mut runs = self.runs.borrow_mut();
            match runs.front_mut() {
                Some((at, bytes)) if *at <= self.clock.peek() => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    bytes.drain(..n);
                    if bytes.is_empty() {
                        runs.pop_front();
                    }
                    std::task::Poll::Ready(Ok(n))
                }
                _ => {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }
}

impl embedded_io_async::Write for Script {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        // Only the first byte of each packet matters here (its type): the session
        // writes whole packets, one per call or several back to back.
        let mut rest = buf;
        while !rest.is_empty() {
            let len = packet_len(rest);
            self.written.borrow_mut().push(rest[0]);
            rest = &rest[len.min(rest.len())..];
        }
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

fn packet_len(bytes: &[u8]) -> usize {
    let mut len = 0usize;
    for (i, b) in bytes[1..].iter().enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return 2 + i + len;
        }
    }
    bytes.len()
}

fn wire(packet: &Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = mqttrs::encode_slice(packet, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn publish(payload: &[u8]) -> Vec<u8> {
    let qospid = QosPid::AtLeastOnce(mqttrs::Pid::try_from(7).unwrap());
    wire(&Packet::Publish(mqttrs::Publish {
        dup: false,
        qospid,
        retain: false,
        topic_name: "fleet/devices/gw-001/jobs",
        payload,
    }))
}

/// A link whose session is connected (CONNECT sent, CONNACK read) at about 0 ms.
fn connected() -> (Link<Script>, Script, TickingClock) {
    let clock = TickingClock::default();
    let script = Script::new(&clock);
    let config = SessionConfig {
        client_id: "gw-001".into(),
        username: "gw-001".into(),
        password: "secret".into(),
        keep_alive_secs: KEEP_ALIVE_SECS,
        will: None,
        max_packet_bytes: 32 * 1024,
        connect_timeout_ms: 3_000,
        max_inflight: 4,
    };
    let mut link = Link::new(script.clone(), Session::new(config));
    let connack = wire(&Packet::Connack(Connack { session_present: false, code: ConnectReturnCode::Accepted }));
    block_on(async {
        link.connect(&clock, 0).await.unwrap();
        script.arrive(clock.peek(), &connack, 64, 1);
        let event = link.next_event(&clock, 1_000).await.unwrap();
        assert_eq!(event, Some(Event::Connected { session_present: false }));
    });
    script.written_packets();
    (link, script, clock)
}

#[test]
fn an_idle_link_is_looked_at_without_waiting() {
    let (mut link, _script, clock) = connected();
    // A long linger: it applies only once bytes came, so an idle look ends at once
    // (a few clock reads, each a tick here), not after it.
    let before = clock.peek();
    assert_eq!(block_on(link.poll_event(&clock, 1_000)).unwrap(), None);
    assert!(clock.peek() - before < 20, "waited {} ms on an idle link", clock.peek() - before);
}

#[test]
fn a_packet_whose_bytes_keep_coming_is_read_whole() {
    let (mut link, script, clock) = connected();
    let payload = vec![0x5a; 6_000];
    // 6 KB in 16-byte pieces a millisecond apart: far longer than the linger in all,
    // never a gap as long as it.
    script.arrive(clock.peek(), &publish(&payload), 16, 1);
    let event = block_on(link.poll_event(&clock, LINGER_MS)).unwrap();
    let Some(Event::Message { payload: got, token, .. }) = event else { panic!("{event:?}") };
    assert_eq!(got, payload);
    assert!(token.is_some());
}

#[test]
fn a_gap_longer_than_the_linger_ends_the_look_and_the_rest_is_read_later() {
    let (mut link, script, clock) = connected();
    let packet = publish(b"a job");
    let now = clock.peek();
    script.arrive(now, &packet[..4], 4, 1);
    script.arrive(now + 50, &packet[4..], 64, 1);
    assert_eq!(block_on(link.poll_event(&clock, LINGER_MS)).unwrap(), None, "waited through the gap");
    assert!(clock.peek() < now + 50);
    while clock.peek() < now + 50 {
        clock.now_ms();
    }
    let event = block_on(link.poll_event(&clock, LINGER_MS)).unwrap();
    assert!(matches!(event, Some(Event::Message { ref payload, .. }) if payload == b"a job"), "{event:?}");
}

#[test]
fn the_keep_alive_ping_goes_out_from_a_look() {
    let (mut link, script, clock) = connected();
    while clock.peek() < u64::from(KEEP_ALIVE_SECS) * 1000 / 2 + 10 {
        clock.now_ms();
    }
    assert_eq!(block_on(link.poll_event(&clock, LINGER_MS)).unwrap(), None);
    assert_eq!(script.written_packets(), [12], "no PINGREQ (type 12)");
}

#[test]
fn an_ack_is_sent_for_a_message_read_in_a_look() {
    let (mut link, script, clock) = connected();
    script.arrive(clock.peek(), &publish(b"x"), 64, 1);
    let Some(Event::Message { token: Some(token), .. }) = block_on(link.poll_event(&clock, LINGER_MS)).unwrap() else {
        panic!("no message")
    };
    assert!(link.session().ack(token));
    block_on(link.flush()).unwrap();
    assert_eq!(script.written_packets(), [4], "no PUBACK (type 4)");
}
