//! Deciding what to do with the bytes that arrived on the jobs topic.
//!
//! This is the gate of invariant 1 (nothing runs that `verify_envelope` did not pass)
//! and invariant 3 (a QoS 1 redelivery is acknowledged again and changes nothing). It is
//! a pure function of the bytes and the agent's state, returning a [`Verdict`] that the
//! agent turns into store operations and events.
//!
//! Three kinds of refusal, because they mean different things to the controller:
//!
//! * the bytes did not verify (size, frame, version, key, signature; or addressed to
//!   another device): their origin is unknown, so the `Rejected` event names attempt 0
//!   and the job id the bytes claim (`claimed_job_id`), and it is a diagnostic;
//! * a genuine envelope out of its time or sequence window (`NotYetValid`, `Expired`,
//!   `Replayed`): the refusal is about a real execution, so it names the real attempt,
//!   unless the device already knows that execution (then it says nothing, so that an
//!   execution never gets a second terminal event) or already refused this very envelope
//!   (a redelivery);
//! * a genuine, fresh envelope the device cannot serve (`Unsupported`, `QueueFull`): its
//!   seq is consumed and the execution ends with that `Rejected`.
//!
//! Redelivery versus replay: an envelope already accepted has a seq at or below the last
//! accepted one, so `verify_envelope` refuses it (`Replayed`, or `Expired` if its window
//! has passed since). Only when it refuses for a time or sequence reason (so the
//! signature, key and target are good) is the envelope checked a second time with those
//! checks disarmed, to read its signed content and compare it with what the device
//! remembers under that seq. Same seq, same order: a redelivery.

use alloc::collections::BTreeMap;

use fleet_schemas::limits::MAX_MODULE_BYTES;
use fleet_schemas::verify::claimed_job_id;
use fleet_schemas::{
    ChunkAssembler, DeviceId, Envelope, ExecutionKey, GpuRequirement, JobId, JobSpec, KeyRing, ModuleSource, Order,
    Refused, Rejection, ReplayState, Unsupported, verify_envelope_detailed,
};

use crate::config::Capabilities;
use crate::history::History;
use crate::queue::Queue;
use crate::store::SeenOrder;

/// What the agent knows when it judges an envelope.
pub(crate) struct Context<'a> {
    pub(crate) keys: &'a KeyRing,
    pub(crate) me: &'a DeviceId,
    pub(crate) unix_secs: Option<u64>,
    pub(crate) replay: &'a ReplayState,
    pub(crate) capabilities: &'a Capabilities,
    pub(crate) queue_capacity: usize,
    pub(crate) queue: &'a Queue,
    pub(crate) history: &'a History,
}

/// What to do with an envelope. A `replay` that is `Some` consumes the envelope's seq:
/// the agent persists it, so the same envelope is a redelivery from then on.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Verified, fresh, runnable: queue it.
    Run { replay: ReplayState, seq: u64, key: ExecutionKey, job: JobSpec },
    /// Verified, fresh cancel.
    Cancel { replay: ReplayState, seq: u64, job_id: JobId },
    /// A redelivery of an envelope already dealt with, or a genuine but stale envelope
    /// for an execution the device already knows: acknowledge, nothing else.
    Redelivered,
    /// Verified and fresh, but for an execution that is already queued, running or
    /// ended (the controller signed it again): consume the seq, run nothing.
    AlreadyKnown { replay: ReplayState, seq: u64, key: ExecutionKey },
    /// A genuine envelope the device refuses: remember it under its seq and end its
    /// execution with a `Rejected` event.
    Refused { replay: Option<ReplayState>, seq: u64, seen: SeenOrder, key: ExecutionKey, reason: Rejection },
    /// Bytes that did not verify: a `Rejected` event at attempt 0 (their attempt is
    /// unknown, and attempt 0 never collides with a real execution).
    Rejected { job_id: JobId, reason: Rejection },
}

pub(crate) fn admit(bytes: &[u8], cx: &Context<'_>) -> Verdict {
    match verify_envelope_detailed(bytes, cx.keys, cx.me, cx.unix_secs, cx.replay) {
        Ok(verified) => judge_fresh(verified.envelope, cx),
        Err(Refused {
            reason: reason @ (Rejection::Replayed { .. } | Rejection::Expired { .. } | Rejection::NotYetValid { .. }),
            authentic: Some(envelope),
        }) => judge_stale(*envelope, reason, cx),
        Err(Refused { reason, .. }) => Verdict::Rejected { job_id: claimed_job_id(bytes), reason },
    }
}

/// A genuine envelope refused for its time or seq (`reason`): a redelivery, an
/// execution the device knows, or a refusal to report with its real attempt.
fn judge_stale(envelope: Envelope, reason: Rejection, cx: &Context<'_>) -> Verdict {
    let seq = envelope.seq;
    let (seen, key) = match envelope.order {
        Order::Run { attempt, job } => {
            let key = ExecutionKey { job_id: job.job_id, device_id: cx.me.clone(), attempt };
            (SeenOrder::Run(key.clone()), key)
        }
        Order::Cancel { job_id } => {
            (SeenOrder::Cancel(job_id), ExecutionKey { job_id, device_id: cx.me.clone(), attempt: 0 })
        }
    };
    let redelivered = cx.history.get(seq) == Some(&seen) || cx.queue.seq_of(&key) == Some(seq);
    let known = matches!(seen, SeenOrder::Run(_)) && (cx.queue.seq_of(&key).is_some() || cx.history.knows_run(&key));
    if redelivered || known {
        return Verdict::Redelivered;
    }
    Verdict::Refused { replay: None, seq, seen, key, reason }
}

fn judge_fresh(envelope: Envelope, cx: &Context<'_>) -> Verdict {
    let mut replay = *cx.replay;
    replay.accept(&envelope);
    let seq = envelope.seq;
    let (attempt, job) = match envelope.order {
        Order::Cancel { job_id } => return Verdict::Cancel { replay, seq, job_id },
        Order::Run { attempt, job } => (attempt, job),
    };
    let key = ExecutionKey { job_id: job.job_id, device_id: cx.me.clone(), attempt };
    if cx.queue.seq_of(&key).is_some() || cx.history.knows_run(&key) {
        return Verdict::AlreadyKnown { replay, seq, key };
    }
    match refusal(attempt, &job, cx) {
        Some(reason) => Verdict::Refused { replay: Some(replay), seq, seen: SeenOrder::Run(key.clone()), key, reason },
        None => Verdict::Run { replay, seq, key, job: *job },
    }
}

/// Why the device cannot take this (verified) job, if it cannot.
fn refusal(attempt: u32, job: &JobSpec, cx: &Context<'_>) -> Option<Rejection> {
    // Attempts count from 1; 0 is reserved for rejections of unreadable envelopes.
    if attempt == 0 {
        return Some(Rejection::Malformed);
    }
    if let ModuleSource::Chunked(spec) = &job.module
        && spec.size <= MAX_MODULE_BYTES
        && ChunkAssembler::new(*spec).is_err()
    {
        return Some(Rejection::Malformed);
    }
    if let Err(unsupported) = check_requirements(job, cx.capabilities) {
        return Some(Rejection::Unsupported(unsupported));
    }
    if cx.queue.len() >= cx.queue_capacity {
        return Some(Rejection::QueueFull { capacity: u32::try_from(cx.queue_capacity).unwrap_or(u32::MAX) });
    }
    None
}

/// Checks a job's requirements against the device's capabilities.
pub(crate) fn check_requirements(job: &JobSpec, caps: &Capabilities) -> Result<(), Unsupported> {
    let needs = &job.requirements;
    if let Some(required) = needs.runtime
        && required != caps.runtime
    {
        return Err(Unsupported::Runtime { required });
    }
    if needs.gpu == GpuRequirement::Required && caps.gpu.is_none() {
        return Err(Unsupported::GpuRequired);
    }
    if !labels_match(&needs.labels, &caps.labels) {
        return Err(Unsupported::Label);
    }
    if !job.inputs.iter().all(|input| caps.data_inputs.contains(input)) {
        return Err(Unsupported::DataInput);
    }
    let size = match &job.module {
        ModuleSource::Inline(bytes) => u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        ModuleSource::Chunked(spec) => u64::from(spec.size),
    };
    if size > u64::from(caps.max_module_bytes.min(MAX_MODULE_BYTES)) {
        return Err(Unsupported::ModuleTooLarge);
    }
    Ok(())
}

fn labels_match(
    required: &BTreeMap<alloc::string::String, alloc::string::String>,
    have: &BTreeMap<alloc::string::String, alloc::string::String>,
) -> bool {
    required.iter().all(|(name, value)| have.get(name) == Some(value))
}
