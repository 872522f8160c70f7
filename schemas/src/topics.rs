//! MQTT topic names, under a configurable prefix (default `fleet`).
//!
//! Building and parsing live together so the broker's ACL, the controller and the
//! agents agree on every name. Device ids are validated before they are spliced in, so
//! no topic built here holds a wildcard or an extra level.

use alloc::format;
use alloc::string::String;

use crate::ids::{DeviceId, Digest, JobId, validate_device_id, validate_name};

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "fleet";

/// Why a prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a topic prefix is one or more levels of A-Z a-z 0-9 _ - separated by '/', got {0:?}")]
pub struct PrefixError(pub String);

/// The topic names of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// A topic of the fleet, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `{prefix}/devices/{id}/jobs`: signed envelopes, controller to device, QoS 1.
    DeviceJobs(&'a str),
    /// `{prefix}/devices/{id}/events`: signed events, device to controller, QoS 1.
    DeviceEvents(&'a str),
    /// `{prefix}/devices/{id}/status`: retained device status, JSON.
    DeviceStatus(&'a str),
    /// `{prefix}/devices/{id}/acks`: signed event acks, controller to device, QoS 1.
    DeviceAcks(&'a str),
    /// `{prefix}/jobs/{job}/status`: retained job status, JSON.
    JobStatus(&'a str),
    /// `{prefix}/controller/status`: retained controller status, JSON.
    ControllerStatus,
    /// `{prefix}/keys`: retained signed key rotation.
    Keys,
    /// `{prefix}/modules/{chain_head}/chunks/{index}`: retained module chunk.
    ModuleChunk {
        /// The chunk chain head ([`crate::job::ChunkedModule::chain_head`]), hex.
        module: &'a str,
        /// The chunk index, text.
        index: &'a str,
    },
}

impl Default for Topics {
    fn default() -> Self {
        Self { prefix: String::from(DEFAULT_PREFIX) }
    }
}

impl Topics {
    /// Topics under `prefix` (e.g. `fleet` or `site3/fleet`).
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        let ok = !prefix.is_empty() && prefix.split('/').all(|level| validate_name(level).is_ok());
        if ok { Ok(Self { prefix: String::from(prefix) }) } else { Err(PrefixError(String::from(prefix))) }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where the controller sends a device its envelopes.
    pub fn device_jobs(&self, device: &DeviceId) -> String {
        format!("{}/devices/{device}/jobs", self.prefix)
    }

    /// Where a device sends its events.
    pub fn device_events(&self, device: &DeviceId) -> String {
        format!("{}/devices/{device}/events", self.prefix)
    }

    /// Where the controller acknowledges a device's events.
    pub fn device_acks(&self, device: &DeviceId) -> String {
        format!("{}/devices/{device}/acks", self.prefix)
    }

    /// A device's retained status.
    pub fn device_status(&self, device: &DeviceId) -> String {
        format!("{}/devices/{device}/status", self.prefix)
    }

    /// A job's retained status.
    pub fn job_status(&self, job: &JobId) -> String {
        format!("{}/jobs/{job}/status", self.prefix)
    }

    /// The controller's retained status.
    pub fn controller_status(&self) -> String {
        format!("{}/controller/status", self.prefix)
    }

    /// The retained key rotation.
    pub fn keys(&self) -> String {
        format!("{}/keys", self.prefix)
    }

    /// One retained module chunk. Chunks are filed under the chain head, not the module
    /// hash: the head commits to the module *and* its chunk size, so two splits of one
    /// module never overwrite each other's retained chunks.
    pub fn module_chunk(&self, chain_head: &Digest, index: u32) -> String {
        format!("{}/modules/{chain_head}/chunks/{index}", self.prefix)
    }

    /// The filter the controller subscribes to for every device's events.
    pub fn all_device_events(&self) -> String {
        format!("{}/devices/+/events", self.prefix)
    }

    /// The filter for every device's status.
    pub fn all_device_status(&self) -> String {
        format!("{}/devices/+/status", self.prefix)
    }

    /// Parses a topic name of this fleet; `None` for anything else, including names
    /// whose device id is not valid.
    pub fn parse<'a>(&self, topic: &'a str) -> Option<Topic<'a>> {
        let rest = topic.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let mut levels = rest.split('/');
        let parsed = match (levels.next()?, levels.next(), levels.next(), levels.next()) {
            ("devices", Some(id), Some(leaf), None) if validate_device_id(id).is_ok() => match leaf {
                "jobs" => Topic::DeviceJobs(id),
                "events" => Topic::DeviceEvents(id),
                "status" => Topic::DeviceStatus(id),
                "acks" => Topic::DeviceAcks(id),
                _ => return None,
            },
            ("jobs", Some(job), Some("status"), None) if job.parse::<JobId>().is_ok_and(|j| j.to_hex() == job) => {
                Topic::JobStatus(job)
            }
            ("controller", Some("status"), None, None) => Topic::ControllerStatus,
            ("keys", None, None, None) => Topic::Keys,
            ("modules", Some(module), Some("chunks"), Some(index))
                if module.parse::<Digest>().is_ok_and(|d| d.to_hex() == module)
                    && index.parse::<u32>().is_ok_and(|i| alloc::format!("{i}") == index) =>
            {
                if levels.next().is_some() {
                    return None;
                }
                Topic::ModuleChunk { module, index }
            }
            _ => return None,
        };
        Some(parsed)
    }
}
