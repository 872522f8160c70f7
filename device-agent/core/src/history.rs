//! The envelopes the device has dealt with, remembered so that a QoS 1 redelivery is
//! acknowledged again instead of being refused as a replay, and so that an execution key
//! that already ended is never run again.
//!
//! Queued and running executions remember their own envelope seq (see
//! [`crate::queue`]); this holds the rest: finished, canceled and refused runs, and
//! cancels. It is bounded: past `history_len` entries the oldest is forgotten, after
//! which a redelivery of it is refused as `Replayed` (harmless: the controller has long
//! had its outcome).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use fleet_schemas::ExecutionKey;

use crate::store::{HistoryEntry, SeenOrder, StoreOp};

pub(crate) struct History {
    by_seq: BTreeMap<u64, SeenOrder>,
    capacity: usize,
}

impl History {
    pub(crate) fn new(entries: &[HistoryEntry], capacity: usize) -> Self {
        let by_seq = crate::by_insertion(entries.iter().map(|e| (e.seq, e.order.clone())));
        Self { by_seq, capacity: capacity.max(1) }
    }

    /// Records an entry, and forgets the oldest past the capacity; the store ops go to
    /// `batch`.
    pub(crate) fn remember(&mut self, seq: u64, order: SeenOrder, batch: &mut Vec<StoreOp>) {
        self.by_seq.insert(seq, order.clone());
        batch.push(StoreOp::Remember(HistoryEntry { seq, order }));
        while self.by_seq.len() > self.capacity {
            match self.by_seq.pop_first() {
                Some((seq, _)) => batch.push(StoreOp::Forget { seq }),
                None => break,
            }
        }
    }

    /// What the envelope of this seq asked for, if remembered.
    pub(crate) fn get(&self, seq: u64) -> Option<&SeenOrder> {
        self.by_seq.get(&seq)
    }

    /// Whether an envelope for this execution was dealt with: it ended (finished,
    /// canceled, refused) or was signed again while queued.
    pub(crate) fn knows_run(&self, key: &ExecutionKey) -> bool {
        self.by_seq.values().any(|order| matches!(order, SeenOrder::Run(k) if k == key))
    }
}
