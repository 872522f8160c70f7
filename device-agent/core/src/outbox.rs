//! Signed events waiting for the controller's acknowledgement, and the event counter.
//!
//! An MQTT PUBACK only says the broker has an event; an event leaves the outbox only
//! when the controller's signed, cumulative [`EventAck`](fleet_schemas::EventAck)
//! covers it. Event seqs start at 1 and have no gaps, which is what makes one number
//! enough for that ack. As the protocol asks, an ack is taken to cover only seqs that may
//! have been published, so it can never delete an event the controller cannot have.
//! Publishing is windowed: only the lowest `inflight_window` unacknowledged seqs are out
//! at once, each republished if no ack covers it in time.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::store::OutboxEvent;

struct Entry {
    bytes: Vec<u8>,
    /// When it was last published (monotonic ms), or `None` if not since the link came up.
    sent_at: Option<u64>,
}

pub(crate) struct Outbox {
    entries: BTreeMap<u64, Entry>,
    acked_through: u64,
    /// The highest seq that may have reached the broker: published in this session, or
    /// stored before the restart (it may have been published before).
    published_through: u64,
    next_seq: u64,
}

impl Outbox {
    pub(crate) fn recovered(events: &[OutboxEvent], acked_through: u64) -> Self {
        let entries: BTreeMap<u64, Entry> = crate::by_insertion(
            events
                .iter()
                .filter(|e| e.seq > acked_through)
                .map(|e| (e.seq, Entry { bytes: e.bytes.clone(), sent_at: None })),
        );
        let last = entries.keys().next_back().copied().unwrap_or(0).max(acked_through);
        Self { entries, acked_through, published_through: last, next_seq: last.saturating_add(1) }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The seq the next event gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds the event of seq [`Outbox::next_seq`] (already in a persist batch).
    pub(crate) fn push(&mut self, bytes: Vec<u8>) {
        self.entries.insert(self.next_seq, Entry { bytes, sent_at: None });
        self.next_seq = self.next_seq.saturating_add(1);
    }

    /// Applies a cumulative ack, as covering only events that may have been published
    /// (the protocol's rule: an ack never deletes an event the controller cannot have).
    /// Returns the new acked-through seq if it rose (the caller persists it).
    pub(crate) fn ack(&mut self, through_seq: u64) -> Option<u64> {
        let through_seq = through_seq.min(self.published_through);
        if through_seq <= self.acked_through {
            return None;
        }
        self.acked_through = through_seq;
        self.entries = self.entries.split_off(&through_seq.saturating_add(1));
        Some(through_seq)
    }

    /// The controller has every event of this device through `base` (a new store's
    /// sync grant): number from `base + 1`, and take no ack at or below `base` as
    /// covering anything. Only an empty outbox is rebased; the core never emits before
    /// it is synced.
    pub(crate) fn rebase(&mut self, base: u64) {
        self.acked_through = self.acked_through.max(base);
        self.published_through = self.published_through.max(base);
        self.next_seq = self.next_seq.max(base.saturating_add(1));
    }

    /// The link went down: everything must be published again once it is back.
    pub(crate) fn link_lost(&mut self) {
        for entry in self.entries.values_mut() {
            entry.sent_at = None;
        }
    }

    /// The events to publish now, lowest seq first: those in the window never published
    /// since the link came up or published longer than `resend_after_ms` ago.
    pub(crate) fn due(&mut self, now_ms: u64, window: usize, resend_after_ms: u64) -> Vec<Vec<u8>> {
        let mut due = Vec::new();
        for (seq, entry) in self.entries.iter_mut().take(window.max(1)) {
            let send = match entry.sent_at {
                None => true,
                Some(at) => now_ms.saturating_sub(at) >= resend_after_ms,
            };
            if send {
                entry.sent_at = Some(now_ms);
                self.published_through = self.published_through.max(*seq);
                due.push(entry.bytes.clone());
            }
        }
        due
    }
}
