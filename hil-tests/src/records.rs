//! The controller's records, as `fleetctl ... --json` prints them.
//!
//! Why parse the CLI's JSON instead of opening the database: the scenarios check what an
//! operator (or a script) sees. If `fleetctl job status --json` says a device succeeded
//! once, that is the contract; the schema behind it may change. Only the fields the
//! scenarios read are declared, and unknown fields are ignored, so the CLI can grow.

use std::collections::BTreeMap;

use fleet_schemas::{DeviceStatus, JobCounts};
use serde::Deserialize;

use crate::error::{HarnessError, Result};

/// `fleetctl job status ID --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub job: JobSummary,
    /// One row per execution (a device's retries are separate rows).
    pub executions: Vec<ExecutionRecord>,
}

/// The job part of [`JobRecord`].
#[derive(Debug, Clone, Deserialize)]
pub struct JobSummary {
    /// Its id (32 hex digits).
    pub id: String,
    /// `in_progress`, `completed`, `aborted` or `canceled`.
    pub state: String,
    /// Whether an operator asked to cancel it.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Executions (a device's latest attempt counts once).
    pub total: u32,
    /// Executions by state.
    pub counts: JobCounts,
}

/// One execution: a device's attempt at a job.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecutionRecord {
    /// The device.
    pub device: String,
    /// The attempt, from 1.
    pub attempt: u32,
    /// `queued`, `sent`, `accepted`, `running`, `succeeded`, `failed`, `timed_out`,
    /// `rejected` or `canceled`.
    pub state: String,
    /// The envelope's sequence number, once sent.
    pub envelope_seq: Option<u64>,
    /// When the controller gives up on it (ms since the epoch), once sent.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Why it failed, was rejected, timed out.
    pub reason: Option<String>,
    /// The job's output, if it is UTF-8.
    pub output: Option<String>,
    /// The lines it logged.
    #[serde(default)]
    pub logs: Vec<String>,
}

impl ExecutionRecord {
    /// Whether the execution has ended (one of the five terminal states).
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "timed_out" | "rejected" | "canceled")
    }
}

impl JobRecord {
    /// Parses `job status --json` output.
    pub fn parse(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| HarnessError::Parse { what: "`fleetctl job status --json`".into(), detail: e.to_string() })
    }

    /// Whether the job has reached a final state.
    pub fn is_finished(&self) -> bool {
        self.job.state != "in_progress"
    }

    /// The executions of one device, oldest attempt first.
    pub fn executions_of(&self, device: &str) -> Vec<&ExecutionRecord> {
        let mut rows: Vec<_> = self.executions.iter().filter(|e| e.device == device).collect();
        rows.sort_by_key(|e| e.attempt);
        rows
    }

    /// Each device's latest execution.
    pub fn latest(&self) -> BTreeMap<&str, &ExecutionRecord> {
        let mut latest: BTreeMap<&str, &ExecutionRecord> = BTreeMap::new();
        for row in &self.executions {
            match latest.get(row.device.as_str()) {
                Some(seen) if seen.attempt >= row.attempt => {}
                _ => {
                    latest.insert(row.device.as_str(), row);
                }
            }
        }
        latest
    }

    /// How many devices ended in `state` (latest attempt).
    pub fn count_latest(&self, state: &str) -> usize {
        self.latest().values().filter(|e| e.state == state).count()
    }

    /// A one-line summary for logs and the report: `8 succeeded, 1 timed_out`.
    pub fn outcome_line(&self) -> String {
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for row in self.latest().values() {
            *by_state.entry(row.state.as_str()).or_default() += 1;
        }
        let parts: Vec<String> = by_state.iter().map(|(state, n)| format!("{n} {state}")).collect();
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    }
}

/// One entry of `fleetctl device list --json` (or `device show ID --json`).
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceRecord {
    /// The device.
    pub id: String,
    /// `linux` or `mcu`.
    pub kind: String,
    /// `online`, `offline` or `never seen`.
    pub state: String,
    /// The last status the device published.
    pub status: Option<DeviceStatus>,
    /// The next envelope sequence number the controller will sign for it.
    pub next_envelope_seq: u64,
    /// The highest event sequence number recorded contiguously (what the controller acks).
    pub acked_event_seq: u64,
    /// Its store as the controller knows it.
    pub store: StoreRecord,
}

/// A device's store, from `device list --json`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StoreRecord {
    /// Its incarnation, once it synced (hex).
    pub incarnation: Option<String>,
    /// How many times its store came back empty.
    pub resets: u64,
}

impl DeviceRecord {
    /// Parses `device list --json` output.
    pub fn parse_list(json: &str) -> Result<Vec<Self>> {
        serde_json::from_str(json)
            .map_err(|e| HarnessError::Parse { what: "`fleetctl device list --json`".into(), detail: e.to_string() })
    }

    /// Whether the controller sees it online.
    pub fn is_online(&self) -> bool {
        self.state == "online"
    }
}

/// `fleetctl status --json`: the counters are what the scenarios read.
#[derive(Debug, Clone, Deserialize)]
pub struct ControllerRecord {
    /// Whether a `serve` wrote its heartbeat recently.
    pub running: bool,
    /// `events.malformed`, `status.malformed`, `other.malformed`, ...
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

impl ControllerRecord {
    /// Parses `status --json` output.
    pub fn parse(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| HarnessError::Parse { what: "`fleetctl status --json`".into(), detail: e.to_string() })
    }

    /// A counter's value (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_job_status_json_and_picks_the_latest_attempt() {
        let json = r#"{
          "executions": [
            {"attempt": 1, "device": "a", "state": "timed_out", "envelope_seq": 1, "reason": "deadline", "output": null, "logs": []},
            {"attempt": 2, "device": "a", "state": "succeeded", "envelope_seq": 2, "reason": null, "output": "hello from a", "logs": ["x"]},
            {"attempt": 1, "device": "b", "state": "failed", "envelope_seq": 1, "reason": "out of fuel: x", "output": null, "logs": [], "extra": 1}
          ],
          "job": {"id": "ab", "state": "completed", "cancel_requested": false, "total": 2,
                  "counts": {"queued":0,"running":0,"succeeded":1,"failed":1,"rejected":0,"timed_out":0,"canceled":0}}
        }"#;
        let record = JobRecord::parse(json).unwrap();
        assert!(record.is_finished());
        assert_eq!(record.latest()["a"].attempt, 2);
        assert_eq!(record.count_latest("succeeded"), 1);
        assert_eq!(record.outcome_line(), "1 failed, 1 succeeded");
        assert_eq!(record.executions_of("a").len(), 2);
    }
}
