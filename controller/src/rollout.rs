//! The rollout engine: a pure function from (now, a job, its executions) to actions.
//!
//! Every decision about *when* something happens to a job lives here: which queued
//! executions are sent now (rate and batch limits), which in-flight ones have passed
//! their deadline, which failures are retried, when the job aborts, completes or
//! finishes canceling, and which newly provisioned devices a continuous job picks up.
//! The engine holds no state of its own and does no I/O: the caller (the `serve` shell)
//! loads the job from the store, calls [`plan`], applies each [`Action`] to the store
//! (and publishes what it must), and calls [`plan`] again until it returns no action.
//! Because every input is in the database, a controller that restarts simply plans again
//! and carries on where it stopped; and because it is a plain function, the tests are
//! plain function calls.
//!
//! Rules, in the order they are applied:
//!
//! 1. **Timeouts**: an execution in flight (sent, accepted, running) whose deadline has
//!    passed is marked timed out, whatever the job's state.
//! 2. **Finished jobs** (completed, aborted, canceled) start nothing. An aborted or
//!    canceled job cancels what is left: queued executions are marked canceled without
//!    being sent, in-flight ones get a signed `Order::Cancel` (once).
//! 3. **Cancel requested**: the same, and the job becomes canceled.
//! 4. **Abort**: once at least `min_finished` devices have a final outcome and more than
//!    `failure_pct` percent of them failed (failed, timed out or rejected), the job
//!    aborts and cancels what is left.
//! 5. **Retries**: a device whose latest attempt failed or timed out (or was rejected
//!    for a reason that a fresh envelope can cure: replayed, expired, not yet valid,
//!    unknown key, queue full) gets a new attempt while `attempt <= retries`.
//! 6. **Continuous jobs** enqueue devices that match the target and have no execution.
//! 7. **Sending**: queued executions are sent in creation order while the rate limit
//!    (at most `rate_per_min` sends in any 60 s window) and the batch rule allow. A batch
//!    is `batch_size` devices; the next batch starts once every device of the started
//!    batches has a final outcome. Retries belong to their device's batch and are limited
//!    only by the rate.
//! 8. **Completion**: a job that is not continuous completes once every device has a
//!    final outcome.
//!
//! A device's *final outcome* is its latest attempt's state once that is terminal and
//! no retry will follow. Job counts and exit codes use it, so a device that failed once
//! and then succeeded counts as a success.

use std::collections::{BTreeMap, BTreeSet};

use fleet_schemas::{DeviceId, JobState};

use crate::model::{ExecState, RolloutParams};

/// The length of the rate limit's window.
pub const RATE_WINDOW_MS: u64 = 60_000;

/// What the engine needs to know about one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecView {
    /// The device.
    pub device: DeviceId,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Where it stands.
    pub state: ExecState,
    /// When its envelope was sent, Unix ms.
    pub sent_at_ms: Option<u64>,
    /// When it times out, Unix ms (set when sent).
    pub deadline_ms: Option<u64>,
    /// Whether a cancel order has been sent for it.
    pub cancel_sent: bool,
    /// For a rejected execution: whether a fresh envelope could cure the rejection.
    pub transient: bool,
}

/// What the engine needs to know about one job. `executions` must be in creation order.
#[derive(Debug, Clone, Copy)]
pub struct JobView<'a> {
    /// The job's state.
    pub state: JobState,
    /// Whether the operator asked to cancel it.
    pub cancel_requested: bool,
    /// How it rolls out.
    pub params: &'a RolloutParams,
    /// Every execution of the job, every attempt, in creation order.
    pub executions: &'a [ExecView],
    /// For a continuous job: every device that matches its target now (ignored
    /// otherwise).
    pub matching: &'a [DeviceId],
}

/// One thing the caller must do. Each is idempotent against the store: applying it twice
/// changes nothing the second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create attempt 1 for a device a continuous job picked up.
    Enqueue {
        /// The device.
        device: DeviceId,
    },
    /// Sign, store and publish the envelope of this queued execution.
    Send {
        /// The device.
        device: DeviceId,
        /// The attempt.
        attempt: u32,
    },
    /// Create a new queued attempt for a device whose last attempt failed.
    Retry {
        /// The device.
        device: DeviceId,
        /// The new attempt's number.
        attempt: u32,
    },
    /// Mark this in-flight execution timed out.
    TimeOut {
        /// The device.
        device: DeviceId,
        /// The attempt.
        attempt: u32,
    },
    /// Mark this queued execution canceled (it was never sent).
    CancelQueued {
        /// The device.
        device: DeviceId,
        /// The attempt.
        attempt: u32,
    },
    /// Sign, store and publish an `Order::Cancel` for this in-flight execution.
    SendCancel {
        /// The device.
        device: DeviceId,
        /// The attempt.
        attempt: u32,
    },
    /// The job reached a final state.
    Finish(JobState),
}

/// The engine's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// What to do now, in order.
    pub actions: Vec<Action>,
    /// The earliest time at which planning again could give a different answer with
    /// no other change (a deadline, a rate window freeing up); `None` if only a change
    /// (an event, an operator action) can.
    pub wake_at_ms: Option<u64>,
}

/// One device's executions, summarised.
struct DeviceLine<'a> {
    latest: &'a ExecView,
    /// The latest attempt's state after this plan's timeouts.
    state: ExecState,
    /// Whether a new attempt follows (only while the job is in progress).
    retry: bool,
}

impl DeviceLine<'_> {
    fn started(&self) -> bool {
        self.latest.attempt > 1 || self.state != ExecState::Queued
    }

    fn done(&self) -> bool {
        self.state.is_terminal() && !self.retry
    }
}

/// Plans what to do for one job at time `now_ms`.
pub fn plan(now_ms: u64, job: &JobView<'_>) -> Plan {
    let mut actions = Vec::new();
    let mut wake_at: Option<u64> = None;
    let mut wake = |at: u64| wake_at = Some(wake_at.map_or(at, |w| w.min(at)));

    // 1. Timeouts, whatever the job's state: every execution ends in a terminal state.
    let mut timed_out: BTreeSet<(&DeviceId, u32)> = BTreeSet::new();
    for exec in job.executions {
        if !exec.state.is_in_flight() {
            continue;
        }
        match exec.deadline_ms {
            Some(deadline) if deadline <= now_ms => {
                timed_out.insert((&exec.device, exec.attempt));
                actions.push(Action::TimeOut { device: exec.device.clone(), attempt: exec.attempt });
            }
            Some(deadline) => wake(deadline),
            None => {}
        }
    }
    let state_of = |exec: &ExecView| {
        if timed_out.contains(&(&exec.device, exec.attempt)) { ExecState::TimedOut } else { exec.state }
    };

    // The latest attempt of each device, devices in order of first appearance.
    let mut order: Vec<&DeviceId> = Vec::new();
    let mut latest: BTreeMap<&DeviceId, &ExecView> = BTreeMap::new();
    for exec in job.executions {
        match latest.get(&exec.device) {
            None => {
                order.push(&exec.device);
                latest.insert(&exec.device, exec);
            }
            Some(seen) if seen.attempt < exec.attempt => {
                latest.insert(&exec.device, exec);
            }
            Some(_) => {}
        }
    }

    // 2. and 3. Finished jobs and cancel requests.
    let in_progress = job.state == JobState::InProgress;
    let winding_down = matches!(job.state, JobState::Aborted | JobState::Canceled);
    if winding_down || (in_progress && job.cancel_requested) {
        cancel_remaining(job.executions, &state_of, &mut actions);
        if in_progress {
            actions.push(Action::Finish(JobState::Canceled));
        }
        return Plan { actions, wake_at_ms: wake_at };
    }
    if !in_progress {
        return Plan { actions, wake_at_ms: wake_at };
    }

    let params = job.params;
    let lines: Vec<DeviceLine<'_>> = order
        .iter()
        .filter_map(|device| latest.get(device))
        .map(|exec| {
            let state = state_of(exec);
            let retryable = match state {
                ExecState::Failed | ExecState::TimedOut => true,
                ExecState::Rejected => exec.transient,
                _ => false,
            };
            DeviceLine { latest: exec, state, retry: retryable && exec.attempt <= params.retries }
        })
        .collect();

    // 4. Abort.
    if let Some(policy) = params.abort {
        let finals = lines.iter().filter(|line| line.done() && line.state != ExecState::Canceled);
        let (finished, failures) =
            finals.fold((0u64, 0u64), |(n, f), line| (n + 1, f + u64::from(line.state.is_failure())));
        if finished >= u64::from(policy.min_finished) && failures * 100 > u64::from(policy.failure_pct) * finished {
            cancel_remaining(job.executions, &state_of, &mut actions);
            actions.push(Action::Finish(JobState::Aborted));
            return Plan { actions, wake_at_ms: wake_at };
        }
    }

    // 5. Retries.
    for line in lines.iter().filter(|line| line.retry) {
        actions.push(Action::Retry { device: line.latest.device.clone(), attempt: line.latest.attempt + 1 });
    }

    // 6. Continuous jobs pick up new devices.
    let mut enqueued = false;
    if params.continuous {
        for device in job.matching {
            if !latest.contains_key(device) {
                actions.push(Action::Enqueue { device: device.clone() });
                enqueued = true;
            }
        }
    }

    // 7. Sending.
    let mut rate_budget = match params.rate_per_min {
        None => usize::MAX,
        Some(rate) => {
            let window_start = now_ms.saturating_sub(RATE_WINDOW_MS);
            let in_window: Vec<u64> = job
                .executions
                .iter()
                .filter_map(|exec| exec.sent_at_ms)
                .filter(|&sent| sent > window_start && sent <= now_ms)
                .collect();
            let budget = (rate as usize).saturating_sub(in_window.len());
            if budget == 0
                && let Some(oldest) = in_window.iter().min()
            {
                // A slot frees when the oldest send leaves the window.
                wake(oldest + RATE_WINDOW_MS);
            }
            budget
        }
    };
    let mut batch_budget = match params.batch_size {
        None | Some(0) => usize::MAX,
        Some(size) => {
            let size = size as usize;
            let started: Vec<&DeviceLine<'_>> = lines.iter().filter(|line| line.started()).collect();
            if !started.len().is_multiple_of(size) {
                size - started.len() % size
            } else if started.iter().all(|line| line.done()) {
                size
            } else {
                0
            }
        }
    };
    let queued = lines.iter().filter(|line| line.state == ExecState::Queued);
    // Retries of started devices go first: they belong to the current batch.
    let (retries, fresh): (Vec<&DeviceLine<'_>>, Vec<&DeviceLine<'_>>) = queued.partition(|line| line.started());
    for line in retries.into_iter().chain(fresh) {
        let is_fresh = !line.started();
        if rate_budget == 0 {
            break;
        }
        if is_fresh {
            if batch_budget == 0 {
                break;
            }
            batch_budget -= 1;
        }
        rate_budget -= 1;
        actions.push(Action::Send { device: line.latest.device.clone(), attempt: line.latest.attempt });
    }

    // 8. Completion.
    if !params.continuous && !enqueued && lines.iter().all(DeviceLine::done) {
        actions.push(Action::Finish(JobState::Completed));
    }

    Plan { actions, wake_at_ms: wake_at }
}

/// Cancels every execution not yet ended: queued ones locally, in-flight ones with a
/// cancel order (once).
fn cancel_remaining(executions: &[ExecView], state_of: &dyn Fn(&ExecView) -> ExecState, actions: &mut Vec<Action>) {
    for exec in executions {
        let state = state_of(exec);
        if state == ExecState::Queued {
            actions.push(Action::CancelQueued { device: exec.device.clone(), attempt: exec.attempt });
        } else if state.is_in_flight() && !exec.cancel_sent {
            actions.push(Action::SendCancel { device: exec.device.clone(), attempt: exec.attempt });
        }
    }
}

/// Counts a job's devices by the state of their latest attempt (the numbers in the
/// job's retained status document and in `fleetctl job status`).
pub fn counts(executions: &[ExecView]) -> (u32, fleet_schemas::JobCounts) {
    let mut latest: BTreeMap<&DeviceId, &ExecView> = BTreeMap::new();
    for exec in executions {
        let newer = latest.get(&exec.device).is_none_or(|seen| seen.attempt < exec.attempt);
        if newer {
            latest.insert(&exec.device, exec);
        }
    }
    let mut counts = fleet_schemas::JobCounts::default();
    for exec in latest.values() {
        let slot = match exec.state {
            ExecState::Queued | ExecState::Sent => &mut counts.queued,
            ExecState::Accepted | ExecState::Running => &mut counts.running,
            ExecState::Succeeded => &mut counts.succeeded,
            ExecState::Failed => &mut counts.failed,
            ExecState::TimedOut => &mut counts.timed_out,
            ExecState::Rejected => &mut counts.rejected,
            ExecState::Canceled => &mut counts.canceled,
        };
        *slot += 1;
    }
    (u32::try_from(latest.len()).unwrap_or(u32::MAX), counts)
}
