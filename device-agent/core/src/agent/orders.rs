//! The execution lifecycle: envelopes (run and cancel orders) in, executions out of the
//! queue with exactly one terminal event each.
//!
//! Every path that ends an execution (finished, canceled, refused) writes its terminal
//! event in the same batch that takes it out of the queue and into the history, so a
//! crash either leaves it queued (it runs again) or ended (it never runs again).

use alloc::vec::Vec;

use fleet_schemas::{EventKind, ExecutionKey, JobId, Rejection, ReplayState};

use super::{AgentCore, Step, commit};
use crate::action::{Action, Notice};
use crate::admission::{self, Verdict};
use crate::input::{Now, Outcome};
use crate::store::{SeenOrder, StoreOp, StoredExecution};

impl AgentCore {
    pub(super) fn on_envelope(&mut self, payload: &[u8], now: Now, step: &mut Step) {
        let cx = admission::Context {
            keys: &self.keys,
            me: &self.config.device_id,
            unix_secs: now.unix_secs,
            replay: &self.replay,
            capabilities: &self.config.capabilities,
            queue_capacity: usize::try_from(self.config.tuning.queue_capacity).unwrap_or(usize::MAX),
            queue: &self.queue,
            history: &self.history,
        };
        match admission::admit(payload, &cx) {
            Verdict::Run { replay, seq, key, job } => {
                let execution = StoredExecution { seq, key: key.clone(), job, started: false };
                step.batch.push(StoreOp::PutExecution(execution.clone()));
                self.set_replay(replay, step);
                self.emit(key, EventKind::Accepted, now, step);
                self.queue.insert(execution);
            }
            Verdict::Cancel { replay, seq, job_id } => {
                self.set_replay(replay, step);
                self.history.remember(seq, SeenOrder::Cancel(job_id), &mut step.batch);
                self.cancel_job(&job_id, now, step);
            }
            Verdict::Redelivered => {}
            Verdict::AlreadyKnown { replay, seq, key } => {
                self.set_replay(replay, step);
                self.history.remember(seq, SeenOrder::Run(key), &mut step.batch);
            }
            Verdict::Refused { replay, seq, seen, key, reason } => {
                if let Some(replay) = replay {
                    self.set_replay(replay, step);
                }
                self.history.remember(seq, seen, &mut step.batch);
                step.after.push(Action::Notice(Notice::EnvelopeRejected(reason.clone())));
                self.emit(key, EventKind::Rejected { reason }, now, step);
            }
            Verdict::Rejected { job_id, reason } => self.reject_unverified(job_id, reason, now, step),
        }
    }

    pub(super) fn set_replay(&mut self, replay: ReplayState, step: &mut Step) {
        self.replay = replay;
        step.batch.push(StoreOp::SetReplay(replay));
    }

    /// Drops the job's queued executions and stops its running ones, each with a
    /// `Canceled` event. A job with nothing queued or running is left alone.
    fn cancel_job(&mut self, job_id: &JobId, now: Now, step: &mut Step) {
        for slot in self.queue.take_job(job_id) {
            let key = slot.execution.key;
            step.batch.push(StoreOp::RemoveExecution(key.clone()));
            self.history.remember(slot.execution.seq, SeenOrder::Run(key.clone()), &mut step.batch);
            self.emit(key.clone(), EventKind::Canceled, now, step);
            if slot.running {
                step.after.push(Action::Stop { key });
            }
        }
    }

    /// Reports an envelope that did not verify, unless the outbox is already long:
    /// anyone who can publish on the topic can send garbage, and each report costs
    /// storage until the controller acknowledges it.
    fn reject_unverified(&mut self, job_id: JobId, reason: Rejection, now: Now, step: &mut Step) {
        step.after.push(Action::Notice(Notice::EnvelopeRejected(reason.clone())));
        let soft_limit = usize::try_from(self.config.tuning.outbox_soft_limit).unwrap_or(usize::MAX);
        if self.outbox.len() >= soft_limit {
            step.after.push(Action::Notice(Notice::RejectionNotReported));
            return;
        }
        let key = ExecutionKey { job_id, device_id: self.config.device_id.clone(), attempt: 0 };
        self.emit(key, EventKind::Rejected { reason }, now, step);
    }

    pub(super) fn on_finished(&mut self, key: ExecutionKey, outcome: Outcome, now: Now, out: &mut Vec<Action>) {
        if self.queue.stopped(&key) {
            // Canceled while running: its terminal event is already written.
            return;
        }
        let Some(execution) = self.queue.take_running(&key) else {
            out.push(Action::Notice(Notice::UnknownExecution(key)));
            return;
        };
        let kind = match outcome {
            Outcome::Succeeded(report) => EventKind::Succeeded(report),
            Outcome::Failed { reason, message, report } => EventKind::Failed { reason, message, report },
        };
        let mut step = Step::default();
        // One batch: the execution leaves the queue with its terminal event, so a crash
        // either re-runs it (no terminal event yet) or never runs it again.
        step.batch.push(StoreOp::RemoveExecution(key.clone()));
        self.history.remember(execution.seq, SeenOrder::Run(key.clone()), &mut step.batch);
        self.emit(key, kind, now, &mut step);
        commit(step.batch, out);
        out.extend(step.after);
    }
}
