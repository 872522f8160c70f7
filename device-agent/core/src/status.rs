//! The device's retained status document, and when to publish it.
//!
//! Status is pushed, never polled: the device publishes its `DeviceStatus` (retained) on
//! every link up, again when its queue depth changes (at most once per
//! `status_min_interval_ms`), and at least every `status_refresh_ms`. The broker's
//! last-will writes the offline form when the link dies; [`offline_document`] builds it.

use alloc::vec;
use alloc::vec::Vec;

use fleet_schemas::status::to_json;
use fleet_schemas::{DeviceStatus, ENVELOPE_VERSION, Presence};

use crate::config::{AgentConfig, Tuning};

/// What the status document reports besides the device's fixed description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Depths {
    pub(crate) queue: usize,
    pub(crate) outbox: usize,
}

#[derive(Default)]
pub(crate) struct StatusTracker {
    /// Publish at the next chance regardless of timers (the link just came up).
    forced: bool,
    /// When the last document was published, and the queue depth it reported.
    last: Option<(u64, usize)>,
}

impl StatusTracker {
    pub(crate) fn link_up(&mut self) {
        self.forced = true;
    }

    /// Whether to publish a document now.
    pub(crate) fn due(&self, queue_depth: usize, now_ms: u64, tuning: &Tuning) -> bool {
        let Some((at, depth)) = self.last.filter(|_| !self.forced) else {
            return true;
        };
        let elapsed = now_ms.saturating_sub(at);
        (depth != queue_depth && elapsed >= tuning.status_min_interval_ms) || elapsed >= tuning.status_refresh_ms
    }

    pub(crate) fn published(&mut self, queue_depth: usize, now_ms: u64) {
        self.forced = false;
        self.last = Some((now_ms, queue_depth));
    }
}

/// The JSON status document.
pub(crate) fn document(config: &AgentConfig, presence: Presence, depths: Depths, unix_secs: Option<u64>) -> Vec<u8> {
    let status = DeviceStatus {
        device_id: config.device_id.clone(),
        state: presence,
        runtime: config.capabilities.runtime,
        agent_version: config.agent_version.clone(),
        labels: config.capabilities.labels.clone(),
        queue_depth: u32::try_from(depths.queue).unwrap_or(u32::MAX),
        outbox_depth: u32::try_from(depths.outbox).unwrap_or(u32::MAX),
        gpu: config.capabilities.gpu.clone(),
        inference: config.capabilities.inference.clone(),
        wasi: config.capabilities.wasi.clone(),
        formats: vec![ENVELOPE_VERSION],
        ts: unix_secs.unwrap_or(0),
    };
    to_json(&status)
}

/// The offline document for the MQTT last-will.
pub(crate) fn offline_document(config: &AgentConfig) -> Vec<u8> {
    document(config, Presence::Offline, Depths { queue: 0, outbox: 0 }, None)
}
