//! The controller's vocabulary: execution states, device kinds, job targets, label
//! selectors and rollout parameters.
//!
//! These types are shared by the store (which persists them as text and JSON), the
//! rollout engine (which reasons about them) and `fleetctl` (which parses them from the
//! command line and prints them), so each one has exactly one spelling everywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use fleet_schemas::{DeviceId, RuntimeClass};
use serde::{Deserialize, Serialize};

/// A device's labels: matched by job selectors.
pub type Labels = BTreeMap<String, String>;

/// The kind of device, which decides its runtime class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A Linux gateway running `fleet-agent` (wasmtime).
    Linux,
    /// A microcontroller running the firmware agent (wasmi).
    Mcu,
}

impl DeviceKind {
    /// The spelling used in the database and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Linux => "linux",
            DeviceKind::Mcu => "mcu",
        }
    }

    /// The runtime class written into the device's configuration.
    pub fn runtime(self) -> RuntimeClass {
        match self {
            DeviceKind::Linux => RuntimeClass::Gateway,
            DeviceKind::Mcu => RuntimeClass::Microcontroller,
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl FromStr for DeviceKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "linux" => Ok(DeviceKind::Linux),
            "mcu" => Ok(DeviceKind::Mcu),
            other => Err(ParseError(format!("unknown device kind {other:?}: expected `linux` or `mcu`"))),
        }
    }
}

/// Where one execution (a job, on a device, at one attempt) stands at the controller.
///
/// `Queued` is created; `Sent` means its envelope is signed, stored and published;
/// `Accepted` and `Running` come from the device. The last five are terminal: once an
/// execution is in one of them, nothing changes it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecState {
    /// Created, waiting for its turn in the rollout.
    Queued,
    /// Envelope signed, stored and published; no answer from the device yet.
    Sent,
    /// The device stored the envelope.
    Accepted,
    /// The device started it.
    Running,
    /// Finished and returned.
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// No result before its deadline.
    TimedOut,
    /// The device refused the envelope.
    Rejected,
    /// Canceled by the operator or by an abort.
    Canceled,
}

impl ExecState {
    /// Every state, in lifecycle order.
    pub const ALL: [ExecState; 9] = [
        ExecState::Queued,
        ExecState::Sent,
        ExecState::Accepted,
        ExecState::Running,
        ExecState::Succeeded,
        ExecState::Failed,
        ExecState::TimedOut,
        ExecState::Rejected,
        ExecState::Canceled,
    ];

    /// The spelling used in the database and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecState::Queued => "queued",
            ExecState::Sent => "sent",
            ExecState::Accepted => "accepted",
            ExecState::Running => "running",
            ExecState::Succeeded => "succeeded",
            ExecState::Failed => "failed",
            ExecState::TimedOut => "timed_out",
            ExecState::Rejected => "rejected",
            ExecState::Canceled => "canceled",
        }
    }

    /// Whether nothing can change this execution any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecState::Succeeded | ExecState::Failed | ExecState::TimedOut | ExecState::Rejected | ExecState::Canceled
        )
    }

    /// Whether the device has (or may have) the envelope and the execution has not ended.
    pub fn is_in_flight(self) -> bool {
        matches!(self, ExecState::Sent | ExecState::Accepted | ExecState::Running)
    }

    /// Whether this terminal state counts as a failure for abort thresholds and exit codes.
    pub fn is_failure(self) -> bool {
        matches!(self, ExecState::Failed | ExecState::TimedOut | ExecState::Rejected)
    }
}

impl fmt::Display for ExecState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecState {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        ExecState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseError(format!("unknown execution state {s:?}")))
    }
}

/// Which devices a job is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// These devices, by id.
    Devices(Vec<DeviceId>),
    /// Every device carrying all of these labels with these values.
    Selector(Labels),
    /// Every device.
    All,
}

impl Target {
    /// Whether a device with this id and these labels is a target.
    pub fn matches(&self, id: &DeviceId, labels: &Labels) -> bool {
        match self {
            Target::Devices(ids) => ids.contains(id),
            Target::Selector(selector) => selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
            Target::All => true,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Devices(ids) => {
                let ids: Vec<&str> = ids.iter().map(DeviceId::as_str).collect();
                write!(f, "devices {}", ids.join(","))
            }
            Target::Selector(labels) => write!(f, "selector {}", format_labels(labels)),
            Target::All => f.write_str("all devices"),
        }
    }
}

/// Parses `k=v,k2=v2` into labels. Keys and values are non-empty and hold no `,` or `=`;
/// whitespace around items is ignored. An empty string is no labels.
pub fn parse_labels(text: &str) -> Result<Labels, ParseError> {
    let mut labels = Labels::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(ParseError(format!("label {item:?} is not of the form key=value")));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() || value.contains('=') {
            return Err(ParseError(format!("label {item:?} is not of the form key=value")));
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(ParseError(format!("label key {key:?} is given twice")));
        }
    }
    Ok(labels)
}

/// Formats labels as `k=v,k2=v2` (the inverse of [`parse_labels`]).
pub fn format_labels(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// When a job stops by itself because too many executions failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortPolicy {
    /// Abort once failures exceed this percentage of finished executions (0 to 100).
    pub failure_pct: u8,
    /// ... but only once at least this many executions have finished.
    pub min_finished: u32,
}

/// How a job rolls out. Stored with the job as JSON; fields added later must default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutParams {
    /// At most this many envelopes sent in any 60 s window (`None`: no limit).
    pub rate_per_min: Option<u32>,
    /// Devices are started in batches of this many, and a batch starts only once every
    /// device of the previous one has finished (`None`: one batch of everything).
    pub batch_size: Option<u32>,
    /// Stop the job when failures pass a threshold.
    pub abort: Option<AbortPolicy>,
    /// How long after sending the controller waits for a terminal event before it marks
    /// the execution timed out, in milliseconds. Also the envelope's validity.
    pub exec_timeout_ms: u64,
    /// How many times a failed or timed-out execution is tried again (a new attempt with
    /// a new envelope and sequence number).
    pub retries: u32,
    /// Whether the job also targets devices provisioned later that match its target.
    pub continuous: bool,
}

impl Default for RolloutParams {
    fn default() -> Self {
        Self {
            rate_per_min: None,
            batch_size: None,
            abort: None,
            exec_timeout_ms: 10 * 60 * 1000,
            retries: 0,
            continuous: false,
        }
    }
}

/// The spelling of a [`fleet_schemas::JobState`] in the database and in output.
pub fn job_state_str(state: fleet_schemas::JobState) -> &'static str {
    use fleet_schemas::JobState;
    match state {
        JobState::InProgress => "in_progress",
        JobState::Completed => "completed",
        JobState::Aborted => "aborted",
        JobState::Canceled => "canceled",
    }
}

/// Parses the spelling written by [`job_state_str`].
pub fn parse_job_state(text: &str) -> Result<fleet_schemas::JobState, ParseError> {
    use fleet_schemas::JobState;
    match text {
        "in_progress" => Ok(JobState::InProgress),
        "completed" => Ok(JobState::Completed),
        "aborted" => Ok(JobState::Aborted),
        "canceled" => Ok(JobState::Canceled),
        other => Err(ParseError(format!("unknown job state {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn labels_round_trip_and_refuse_garbage() {
        let labels = parse_labels(" site=plant-3, role = gw ").unwrap();
        assert_eq!(format_labels(&labels), "role=gw,site=plant-3");
        assert_eq!(parse_labels("").unwrap(), Labels::new());
        assert!(parse_labels("site").is_err());
        assert!(parse_labels("=x").is_err());
        assert!(parse_labels("a=b=c").is_err());
        assert!(parse_labels("a=1,a=2").is_err());
    }

    #[test]
    fn exec_state_spellings_round_trip() {
        for state in ExecState::ALL {
            assert_eq!(state.as_str().parse::<ExecState>().unwrap(), state);
        }
    }
}
