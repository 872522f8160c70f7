//! Signing execution events, within the protocol's size limit.
//!
//! The controller refuses an event over `MAX_EVENT_BYTES`, and a refused event is never
//! acknowledged, so it would sit in the outbox forever and its execution would never
//! end at the controller. A job's output and logs are the job's to choose, so an event
//! that would be too large is shrunk before it is signed: logs first (replaced by one
//! marker line), then the output, then the failure message.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use fleet_schemas::limits::MAX_EVENT_BYTES;
use fleet_schemas::{EventKind, ExecutionEvent, RunReport, SignedMessage, SigningKey};

/// The log line that replaces logs dropped to fit the size limit.
pub(crate) const LOGS_TRUNCATED: &str = "[fleet-agent: logs dropped, the event was over the size limit]";

/// Room for the length prefixes that shrinking changes.
const SLACK: usize = 32;

/// Signs a message with the device's key and returns its wire bytes; `None` only if
/// the value cannot be encoded (not expected).
pub(crate) fn sign_message<T: fleet_schemas::Signable>(value: &T, key: &SigningKey) -> Option<Vec<u8>> {
    SignedMessage::sign(value, key).ok()?.to_bytes().ok()
}

/// Signs `event` and returns its wire bytes, shrinking its report if it would be over
/// the size limit. `None` only if the value cannot be encoded (not expected).
pub(crate) fn sign_event(mut event: ExecutionEvent, key: &SigningKey) -> Option<Vec<u8>> {
    // Each round removes the excess from one field; three fields, so four rounds.
    for _ in 0..4 {
        let bytes = sign_message(&event, key)?;
        let Some(excess) = bytes.len().checked_sub(MAX_EVENT_BYTES).filter(|e| *e > 0) else {
            return Some(bytes);
        };
        if !shrink(&mut event.kind, excess.saturating_add(SLACK)) {
            return None;
        }
    }
    None
}

/// Removes about `excess` bytes from the event's payload; false if nothing is left to
/// remove.
fn shrink(kind: &mut EventKind, excess: usize) -> bool {
    let (report, message): (&mut RunReport, Option<&mut String>) = match kind {
        EventKind::Succeeded(report) => (report, None),
        EventKind::Failed { report, message, .. } => (report, Some(message)),
        _ => return false,
    };
    let logs_are_marker = report.logs.len() == 1 && report.logs.first().is_some_and(|l| l == LOGS_TRUNCATED);
    if !report.logs.is_empty() && !logs_are_marker {
        report.logs = vec![String::from(LOGS_TRUNCATED)];
        return true;
    }
    if !report.output.is_empty() {
        report.output.truncate(report.output.len().saturating_sub(excess));
        return true;
    }
    match message {
        Some(message) if !message.is_empty() => {
            let mut len = message.len().saturating_sub(excess);
            while !message.is_char_boundary(len) {
                len = len.saturating_sub(1);
            }
            message.truncate(len);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloc::string::String;
    use alloc::vec;

    use fleet_schemas::limits::MAX_EVENT_BYTES;
    use fleet_schemas::{
        DeviceId, EVENT_VERSION, EventKind, ExecutionEvent, ExecutionKey, FailReason, JobId, RunReport, SigningKey,
        verify_event,
    };

    use super::sign_event;

    fn failed(message: String, output_len: usize, log_lines: usize) -> ExecutionEvent {
        let report = RunReport {
            output: vec![1; output_len],
            logs: vec![String::from("line"); log_lines],
            ..Default::default()
        };
        ExecutionEvent {
            version: EVENT_VERSION,
            key: ExecutionKey { job_id: JobId([1; 16]), device_id: DeviceId::new("d").unwrap(), attempt: 1 },
            event_seq: 1,
            at: 0,
            kind: EventKind::Failed { reason: FailReason::Trap, message, report },
        }
    }

    #[test]
    fn oversized_events_are_shrunk_to_fit_and_still_verify() {
        let key = SigningKey::from_bytes(&[7; 32]);
        // Multi-byte characters: the message must be cut on a character boundary.
        for event in
            [failed("é".repeat(50_000), 0, 0), failed("x".repeat(10), 70_000, 10_000), failed(String::new(), 0, 20_000)]
        {
            let bytes = sign_event(event, &key).unwrap();
            assert!(bytes.len() <= MAX_EVENT_BYTES);
            let decoded = verify_event(&bytes, &DeviceId::new("d").unwrap(), &key.verifying_key()).unwrap();
            assert!(matches!(decoded.kind, EventKind::Failed { .. }));
        }
    }

    #[test]
    fn events_within_the_limit_are_unchanged() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let event = failed(String::from("trap"), 100, 3);
        let bytes = sign_event(event.clone(), &key).unwrap();
        let decoded = verify_event(&bytes, &DeviceId::new("d").unwrap(), &key.verifying_key()).unwrap();
        assert_eq!(decoded, event);
    }
}
