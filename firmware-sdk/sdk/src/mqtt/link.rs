//! Moving a [`Session`]'s bytes over a [`Transport`], in time.
//!
//! The session decides everything and touches nothing; this is the part that does: it
//! writes what the session queued, reads what the broker sent (a few hundred bytes at a
//! time, so RAM holds one packet and one read buffer), and sleeps until the session's
//! next deadline (a ping, a timeout) or the caller's, whichever comes first.
//!
//! A transport read is raced against the clock with `select`; the future that loses is
//! dropped. That is safe for the SDK's transports (the UART's read takes bytes only when
//! it completes); a transport whose read can lose bytes when dropped mid-way needs a
//! buffering wrapper.

use crate::clock::{Clock, sleep_until};
use crate::exec::{Either, select};
use crate::transport::Transport;

use super::session::{Event, Session, SessionError};

/// Bytes read from the transport at a time.
const READ_CHUNK: usize = 256;

/// Why the link failed. Each means the connection is gone (the session knows it too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The session failed (refused, timed out, protocol error).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The transport failed.
    #[error("the transport failed")]
    Transport,
    /// The transport reached its end.
    #[error("the transport closed")]
    Closed,
}

/// A session over a transport.
pub struct Link<T: Transport> {
    transport: T,
    session: Session,
    rx: [u8; READ_CHUNK],
    rx_start: usize,
    rx_end: usize,
}

impl<T: Transport> Link<T> {
    /// A link that will run `session` over `transport`.
    pub fn new(transport: T, session: Session) -> Self {
        Self { transport, session, rx: [0; READ_CHUNK], rx_start: 0, rx_end: 0 }
    }

    /// The session, to publish, subscribe, acknowledge or connect.
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Writes everything the session has queued.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        while !self.session.outgoing().is_empty() {
            match self.transport.write(self.session.outgoing()).await {
                Ok(0) => return Err(self.lost(LinkError::Closed)),
                Ok(n) => self.session.consume_outgoing(n),
                Err(_) => return Err(self.lost(LinkError::Transport)),
            }
        }
        if self.transport.flush().await.is_err() {
            return Err(self.lost(LinkError::Transport));
        }
        Ok(())
    }

    /// Starts a new connection: drops what the old one left in the transport (bytes
    /// still arriving for `quiet_ms`), then sends CONNECT.
    pub async fn connect<C: Clock>(&mut self, clock: &C, quiet_ms: u64) -> Result<(), LinkError> {
        self.rx_start = 0;
        self.rx_end = 0;
        loop {
            let until = clock.now_ms().saturating_add(quiet_ms);
            match select(self.transport.read(&mut self.rx), sleep_until(clock, until)).await {
                Either::First(Ok(n)) if n > 0 => continue,
                Either::First(Ok(_)) => return Err(self.lost(LinkError::Closed)),
                Either::First(Err(_)) => return Err(self.lost(LinkError::Transport)),
                Either::Second(()) => break,
            }
        }
        if let Err(error) = self.session.connect(clock.now_ms()) {
            return Err(self.lost(error.into()));
        }
        self.flush().await
    }

    /// Waits for the next session event, or until `until_ms`: `Ok(None)` then. Pings
    /// and timeouts are handled on the way.
    pub async fn next_event<C: Clock>(&mut self, clock: &C, until_ms: u64) -> Result<Option<Event>, LinkError> {
        self.event_within(clock, until_ms, 0).await
    }

    /// The next event from what the broker has already sent, without waiting for it to
    /// send more: reads while bytes keep coming, and stops at the first gap longer than
    /// `linger_ms` (`Ok(None)` then). Pings due are sent on the way. For a shell that
    /// has other work (a job's next fuel slice) and looks at its link in between.
    pub async fn poll_event<C: Clock>(&mut self, clock: &C, linger_ms: u64) -> Result<Option<Event>, LinkError> {
        self.event_within(clock, clock.now_ms(), linger_ms).await
    }

    /// Events until `until_ms`, pushed back by `linger_ms` after each read that got
    /// bytes. A read is always tried once, even when `until_ms` has passed.
    async fn event_within<C: Clock>(
        &mut self,
        clock: &C,
        mut until_ms: u64,
        linger_ms: u64,
    ) -> Result<Option<Event>, LinkError> {
        loop {
            while self.rx_start < self.rx_end {
                let taken = match self.session.received(&self.rx[self.rx_start..self.rx_end]) {
                    Ok(taken) => taken,
                    Err(error) => return Err(self.lost(error.into())),
                };
                self.rx_start += taken;
                // Handles the packet `received` completed, if any (then takes the rest).
                match self.session.poll(clock.now_ms()) {
                    Ok(Some(event)) => {
                        self.flush().await?;
                        return Ok(Some(event));
                    }
                    Ok(None) => {}
                    Err(error) => return Err(self.lost(error.into())),
                }
            }
            match self.session.poll(clock.now_ms()) {
                Ok(Some(event)) => {
                    self.flush().await?;
                    return Ok(Some(event));
                }
                Ok(None) => {}
                Err(error) => return Err(self.lost(error.into())),
            }
            self.flush().await?;
            let now = clock.now_ms();
            // A deadline already passed makes this read a look: it completes only if
            // bytes are waiting, and the sleep is ready at once otherwise.
            let wake = self.session.next_deadline().map_or(until_ms, |d| d.min(until_ms)).max(now);
            match select(self.transport.read(&mut self.rx), sleep_until(clock, wake)).await {
                Either::First(Ok(0)) => return Err(self.lost(LinkError::Closed)),
                Either::First(Ok(n)) => {
                    self.rx_start = 0;
                    self.rx_end = n;
                    if linger_ms > 0 {
                        until_ms = until_ms.max(clock.now_ms().saturating_add(linger_ms));
                    }
                }
                Either::First(Err(_)) => return Err(self.lost(LinkError::Transport)),
                Either::Second(()) if clock.now_ms() >= until_ms => return Ok(None),
                Either::Second(()) => {}
            }
        }
    }

    fn lost(&mut self, error: LinkError) -> LinkError {
        self.session.link_lost();
        self.rx_start = 0;
        self.rx_end = 0;
        error
    }
}
