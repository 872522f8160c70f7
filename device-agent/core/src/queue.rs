//! The executions the device has accepted and not yet ended, in FIFO order.
//!
//! Keyed by the seq of the envelope that carried each one: the controller's seqs rise
//! and the device accepts each once, so seq order is acceptance order. An execution is
//! waiting (its module may still be being fetched) or running. Executions that were
//! canceled while running have left the queue (their `Canceled` event is written) but
//! still hold a slot until the shell confirms they stopped: that is `stopping`.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use fleet_schemas::{ChunkedModule, ExecutionKey, JobId, JobSpec, ModuleSource};

use crate::store::StoredExecution;

pub(crate) struct Slot {
    pub(crate) execution: StoredExecution,
    pub(crate) running: bool,
}

#[derive(Default)]
pub(crate) struct Queue {
    by_seq: BTreeMap<u64, Slot>,
    stopping: BTreeSet<ExecutionKey>,
}

impl Queue {
    /// The queue after a restart: everything waits, including what was running when
    /// the device went down (it runs again: execution is at least once).
    pub(crate) fn recovered(executions: &[StoredExecution]) -> Self {
        let by_seq =
            crate::by_insertion(executions.iter().map(|e| (e.seq, Slot { execution: e.clone(), running: false })));
        Self { by_seq, stopping: BTreeSet::new() }
    }

    /// Executions waiting or running.
    pub(crate) fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Executions holding a run slot (running, or stopping after a cancel).
    pub(crate) fn busy_slots(&self) -> usize {
        self.by_seq.values().filter(|s| s.running).count() + self.stopping.len()
    }

    pub(crate) fn insert(&mut self, execution: StoredExecution) {
        self.by_seq.insert(execution.seq, Slot { execution, running: false });
    }

    /// The envelope seq of this execution, if it is queued or running.
    pub(crate) fn seq_of(&self, key: &ExecutionKey) -> Option<u64> {
        self.by_seq.values().find(|s| s.execution.key == *key).map(|s| s.execution.seq)
    }

    /// Removes a running execution that finished.
    pub(crate) fn take_running(&mut self, key: &ExecutionKey) -> Option<StoredExecution> {
        let seq = self.by_seq.values().find(|s| s.running && s.execution.key == *key)?.execution.seq;
        self.by_seq.remove(&seq).map(|slot| slot.execution)
    }

    /// Removes every execution of a job (a cancel); running ones move to `stopping`.
    pub(crate) fn take_job(&mut self, job_id: &JobId) -> Vec<Slot> {
        let seqs: Vec<u64> =
            self.by_seq.values().filter(|s| s.execution.key.job_id == *job_id).map(|s| s.execution.seq).collect();
        let taken: Vec<Slot> = seqs.iter().filter_map(|seq| self.by_seq.remove(seq)).collect();
        for slot in taken.iter().filter(|s| s.running) {
            self.stopping.insert(slot.execution.key.clone());
        }
        taken
    }

    /// Whether a canceled execution was still stopping; it no longer is.
    pub(crate) fn stopped(&mut self, key: &ExecutionKey) -> bool {
        self.stopping.remove(key)
    }

    /// The first waiting execution whose module is at hand.
    pub(crate) fn next_startable(&mut self, module_ready: impl Fn(&JobSpec) -> bool) -> Option<&mut Slot> {
        self.by_seq.values_mut().find(|s| !s.running && module_ready(&s.execution.job))
    }

    /// The chunked modules the waiting executions need and `have` does not hold, first
    /// needed first.
    pub(crate) fn missing_modules(&self, have: impl Fn(&ChunkedModule) -> bool) -> Vec<ChunkedModule> {
        let mut missing: Vec<ChunkedModule> = Vec::new();
        for slot in self.by_seq.values().filter(|s| !s.running) {
            if let ModuleSource::Chunked(spec) = &slot.execution.job.module
                && !have(spec)
                && !missing.iter().any(|m| m.hash == spec.hash)
            {
                missing.push(*spec);
            }
        }
        missing
    }
}
