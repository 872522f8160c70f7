//! The rollout engine, as plain function calls: a job and its executions in, actions out.
#![allow(clippy::unwrap_used)]

use fleet_controller::model::{AbortPolicy, ExecState, RolloutParams};
use fleet_controller::rollout::{Action, ExecView, JobView, Plan, RATE_WINDOW_MS, counts, plan};
use fleet_schemas::{DeviceId, JobState};

fn dev(n: usize) -> DeviceId {
    DeviceId::new(format!("d{n}")).unwrap()
}

fn exec(n: usize, attempt: u32, state: ExecState) -> ExecView {
    let sent = !matches!(state, ExecState::Queued);
    ExecView {
        device: dev(n),
        attempt,
        state,
        sent_at_ms: sent.then_some(0),
        deadline_ms: sent.then_some(1_000_000),
        cancel_sent: false,
        transient: false,
    }
}

fn queued(n: usize) -> Vec<ExecView> {
    (0..n).map(|i| exec(i, 1, ExecState::Queued)).collect()
}

fn run(now: u64, params: &RolloutParams, executions: &[ExecView]) -> Plan {
    plan(now, &JobView { state: JobState::InProgress, cancel_requested: false, params, executions, matching: &[] })
}

fn sends(plan: &Plan) -> Vec<(DeviceId, u32)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { device, attempt } => Some((device.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

fn finishes(plan: &Plan) -> Vec<JobState> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Finish(state) => Some(*state),
            _ => None,
        })
        .collect()
}

/// Applies the engine's sends to the executions, as the store would.
fn mark_sent(executions: &mut [ExecView], plan: &Plan, now: u64, timeout: u64) {
    for (device, attempt) in sends(plan) {
        let e = executions.iter_mut().find(|e| e.device == device && e.attempt == attempt).unwrap();
        e.state = ExecState::Sent;
        e.sent_at_ms = Some(now);
        e.deadline_ms = Some(now + timeout);
    }
}

#[test]
fn without_limits_everything_is_sent_at_once_and_the_job_completes() {
    let params = RolloutParams::default();
    let mut executions = queued(3);
    let first = run(0, &params, &executions);
    assert_eq!(sends(&first), vec![(dev(0), 1), (dev(1), 1), (dev(2), 1)]);
    assert!(finishes(&first).is_empty());
    mark_sent(&mut executions, &first, 0, 60_000);
    let again = run(1, &params, &executions);
    assert!(again.actions.is_empty(), "nothing is sent twice: {again:?}");
    assert_eq!(again.wake_at_ms, Some(60_000), "wakes for the earliest deadline");
    for e in &mut executions {
        e.state = ExecState::Succeeded;
    }
    assert_eq!(run(2, &params, &executions).actions, vec![Action::Finish(JobState::Completed)]);
}

#[test]
fn rate_limit_sends_at_most_n_per_window_and_wakes_when_a_slot_frees() {
    let params = RolloutParams { rate_per_min: Some(2), ..RolloutParams::default() };
    let mut executions = queued(5);
    let first = run(1_000, &params, &executions);
    assert_eq!(sends(&first).len(), 2);
    mark_sent(&mut executions, &first, 1_000, 10 * RATE_WINDOW_MS);

    let within = run(30_000, &params, &executions);
    assert!(sends(&within).is_empty());
    assert_eq!(within.wake_at_ms, Some(1_000 + RATE_WINDOW_MS));

    let after = run(1_000 + RATE_WINDOW_MS, &params, &executions);
    assert_eq!(sends(&after), vec![(dev(2), 1), (dev(3), 1)]);
}

#[test]
fn batches_wait_for_the_previous_batch_to_finish() {
    let params = RolloutParams { batch_size: Some(2), ..RolloutParams::default() };
    let mut executions = queued(5);
    let first = run(0, &params, &executions);
    assert_eq!(sends(&first), vec![(dev(0), 1), (dev(1), 1)]);
    mark_sent(&mut executions, &first, 0, 60_000);

    executions[0].state = ExecState::Succeeded;
    executions[1].state = ExecState::Running;
    assert!(sends(&run(1, &params, &executions)).is_empty(), "batch 1 is not finished");

    executions[1].state = ExecState::Failed;
    let second = run(2, &params, &executions);
    assert_eq!(sends(&second), vec![(dev(2), 1), (dev(3), 1)]);
    mark_sent(&mut executions, &second, 2, 60_000);
    executions[2].state = ExecState::Succeeded;
    executions[3].state = ExecState::Rejected;
    let third = run(3, &params, &executions);
    assert_eq!(sends(&third), vec![(dev(4), 1)], "the last batch is what is left");
}

#[test]
fn a_batch_cut_short_by_the_rate_limit_is_filled_before_the_next_starts() {
    let params = RolloutParams { batch_size: Some(2), rate_per_min: Some(1), ..RolloutParams::default() };
    let mut executions = queued(4);
    let first = run(1_000, &params, &executions);
    assert_eq!(sends(&first), vec![(dev(0), 1)]);
    mark_sent(&mut executions, &first, 1_000, 10 * RATE_WINDOW_MS);
    // d0 still running: the second member of batch 1 may start once the rate allows.
    let second = run(1_000 + RATE_WINDOW_MS, &params, &executions);
    assert_eq!(sends(&second), vec![(dev(1), 1)]);
}

#[test]
fn abort_fires_only_past_the_threshold_and_after_the_minimum() {
    let params = RolloutParams {
        abort: Some(AbortPolicy { failure_pct: 50, min_finished: 4 }),
        batch_size: Some(4),
        ..RolloutParams::default()
    };
    let mut executions = queued(10);
    for (i, state) in [ExecState::Failed, ExecState::Failed, ExecState::TimedOut].into_iter().enumerate() {
        executions[i].state = state;
    }
    executions[3].state = ExecState::Running;
    // 3 finished, all failures, but fewer than the minimum of 4.
    assert!(finishes(&run(0, &params, &executions)).is_empty());

    // 4 finished, 2 failed: exactly 50% does not pass 50%.
    let mut even = executions.clone();
    even[0].state = ExecState::Succeeded;
    even[3].state = ExecState::Succeeded;
    assert!(finishes(&run(0, &params, &even)).is_empty());

    // 4 finished, 3 failed: 75% > 50%. Queued ones are canceled, running ones told to stop.
    executions[3].state = ExecState::Succeeded;
    executions[4].state = ExecState::Accepted;
    let aborted = run(0, &params, &executions);
    assert_eq!(finishes(&aborted), vec![JobState::Aborted]);
    assert!(aborted.actions.contains(&Action::SendCancel { device: dev(4), attempt: 1 }));
    for i in 5..10 {
        assert!(aborted.actions.contains(&Action::CancelQueued { device: dev(i), attempt: 1 }));
    }
    assert!(sends(&aborted).is_empty());
}

#[test]
fn a_failure_that_will_be_retried_does_not_count_towards_abort() {
    let params = RolloutParams {
        abort: Some(AbortPolicy { failure_pct: 0, min_finished: 1 }),
        retries: 1,
        ..RolloutParams::default()
    };
    let executions = vec![exec(0, 1, ExecState::Failed), exec(1, 1, ExecState::Running)];
    let plan = run(0, &params, &executions);
    assert!(finishes(&plan).is_empty());
    assert_eq!(plan.actions, vec![Action::Retry { device: dev(0), attempt: 2 }]);
}

#[test]
fn an_execution_past_its_deadline_times_out_and_is_retried() {
    let params = RolloutParams { retries: 1, ..RolloutParams::default() };
    let mut executions = vec![exec(0, 1, ExecState::Accepted)];
    executions[0].deadline_ms = Some(5_000);
    let early = run(4_999, &params, &executions);
    assert!(early.actions.is_empty());
    assert_eq!(early.wake_at_ms, Some(5_000));

    let late = run(5_000, &params, &executions);
    assert_eq!(
        late.actions,
        vec![Action::TimeOut { device: dev(0), attempt: 1 }, Action::Retry { device: dev(0), attempt: 2 }]
    );

    // With no retries left, the timeout is final and the job completes.
    let no_retry = RolloutParams::default();
    let final_plan = run(5_000, &no_retry, &executions);
    assert_eq!(
        final_plan.actions,
        vec![Action::TimeOut { device: dev(0), attempt: 1 }, Action::Finish(JobState::Completed)]
    );
}

#[test]
fn retries_stop_after_the_last_attempt_and_only_for_curable_failures() {
    let params = RolloutParams { retries: 2, batch_size: Some(1), ..RolloutParams::default() };
    // Attempt 2 queued after a failure: sent even though batch 1 (this device) is not done.
    let executions = vec![exec(0, 1, ExecState::Failed), exec(0, 2, ExecState::Queued), exec(1, 1, ExecState::Queued)];
    assert_eq!(sends(&run(0, &params, &executions)), vec![(dev(0), 2)]);

    let exhausted = vec![exec(0, 1, ExecState::Failed), exec(0, 2, ExecState::Failed), exec(0, 3, ExecState::Failed)];
    assert_eq!(run(0, &params, &exhausted).actions, vec![Action::Finish(JobState::Completed)]);

    let mut permanent = exec(0, 1, ExecState::Rejected);
    permanent.transient = false;
    assert_eq!(run(0, &params, &[permanent.clone()]).actions, vec![Action::Finish(JobState::Completed)]);
    permanent.transient = true;
    assert_eq!(run(0, &params, &[permanent]).actions, vec![Action::Retry { device: dev(0), attempt: 2 }]);
}

#[test]
fn cancel_drops_queued_executions_and_tells_running_ones_once() {
    let params = RolloutParams::default();
    let mut executions = vec![
        exec(0, 1, ExecState::Queued),
        exec(1, 1, ExecState::Sent),
        exec(2, 1, ExecState::Running),
        exec(3, 1, ExecState::Succeeded),
    ];
    executions[2].cancel_sent = true;
    let canceled = plan(
        0,
        &JobView {
            state: JobState::InProgress,
            cancel_requested: true,
            params: &params,
            executions: &executions,
            matching: &[],
        },
    );
    assert_eq!(
        canceled.actions,
        vec![
            Action::CancelQueued { device: dev(0), attempt: 1 },
            Action::SendCancel { device: dev(1), attempt: 1 },
            Action::Finish(JobState::Canceled),
        ]
    );

    // Once canceled, nothing new starts, but in-flight executions still time out.
    executions[0].state = ExecState::Canceled;
    executions[1].cancel_sent = true;
    executions[2].deadline_ms = Some(10);
    let after = plan(
        10,
        &JobView {
            state: JobState::Canceled,
            cancel_requested: true,
            params: &params,
            executions: &executions,
            matching: &[],
        },
    );
    assert_eq!(after.actions, vec![Action::TimeOut { device: dev(2), attempt: 1 }]);
}

#[test]
fn continuous_jobs_pick_up_new_devices_and_never_complete() {
    let params = RolloutParams { continuous: true, ..RolloutParams::default() };
    let executions = vec![exec(0, 1, ExecState::Succeeded)];
    let matching = [dev(0), dev(1), dev(2)];
    let view = JobView {
        state: JobState::InProgress,
        cancel_requested: false,
        params: &params,
        executions: &executions,
        matching: &matching,
    };
    assert_eq!(plan(0, &view).actions, vec![Action::Enqueue { device: dev(1) }, Action::Enqueue { device: dev(2) }]);

    let all_done = [exec(0, 1, ExecState::Succeeded), exec(1, 1, ExecState::Succeeded)];
    let view = JobView { executions: &all_done, matching: &matching[..2], ..view };
    assert!(plan(0, &view).actions.is_empty(), "a continuous job waits for more devices");

    // A job that is not continuous ignores devices that appear later.
    let fixed = RolloutParams::default();
    let view = JobView { params: &fixed, matching: &matching, ..view };
    assert_eq!(plan(0, &view).actions, vec![Action::Finish(JobState::Completed)]);
}

#[test]
fn a_job_with_no_devices_completes_and_finished_jobs_start_nothing() {
    let params = RolloutParams::default();
    assert_eq!(run(0, &params, &[]).actions, vec![Action::Finish(JobState::Completed)]);
    let executions = queued(2);
    let done = plan(
        0,
        &JobView {
            state: JobState::Completed,
            cancel_requested: false,
            params: &params,
            executions: &executions,
            matching: &[],
        },
    );
    assert!(done.actions.is_empty());
}

#[test]
fn counts_use_each_devices_latest_attempt() {
    let executions =
        vec![exec(0, 1, ExecState::Failed), exec(0, 2, ExecState::Succeeded), exec(1, 1, ExecState::Running)];
    let (total, counts) = counts(&executions);
    assert_eq!(total, 2);
    assert_eq!((counts.succeeded, counts.failed, counts.running), (1, 0, 1));
}
