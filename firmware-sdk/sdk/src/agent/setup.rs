//! From the provisioned [`DeviceConfig`] to what the agent core and the MQTT session
//! are built from.
//!
//! The config block is written by provisioning, not by the firmware, so everything in
//! it is checked here once, with a typed reason ([`SetupError`]): a job key that is not
//! a curve point, or whose id does not match it, is a provisioning mistake to report at
//! boot, not a key to skip silently.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use fleet_agent_core::{AgentConfig, Capabilities, Tuning};
use fleet_schemas::provision::DeviceConfig;
use fleet_schemas::{Incarnation, KeyRing, Topics, Trusted};

use crate::mqtt::SessionConfig;

/// What the board decides about the agent (the rest comes from the config block).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent version reported in the status document.
    pub agent_version: String,
    /// The largest module the device runs and stores, in bytes.
    pub max_module_bytes: u32,
    /// The core's limits and timers.
    pub tuning: Tuning,
    /// The MQTT keep-alive, in seconds: also how fast a dead link is noticed.
    pub keep_alive_secs: u16,
    /// The largest inbound MQTT packet kept in RAM.
    pub max_packet_bytes: usize,
    /// Randomness from this boot (the board's TRNG, or what entropy it has): the
    /// store's incarnation if the store turns out to be new (`fleet_schemas::sync`). Only
    /// its uniqueness across the device's resets matters.
    pub fresh_incarnation: Incarnation,
}

impl Settings {
    /// Settings for a Cortex-M class device with about 256 KiB of RAM: modules up to
    /// 16 KiB, a queue of two, a short history and a small outbox.
    pub fn microcontroller(agent_version: &str, fresh_incarnation: Incarnation) -> Self {
        let max_module_bytes = 16 * 1024;
        Self {
            agent_version: agent_version.into(),
            max_module_bytes,
            tuning: Tuning {
                max_concurrent: 1,
                queue_capacity: 2,
                inflight_window: 4,
                resend_after_ms: 30_000,
                status_min_interval_ms: 1_000,
                status_refresh_ms: 300_000,
                chunk_timeout_ms: 30_000,
                history_len: 16,
                outbox_soft_limit: 16,
            },
            keep_alive_secs: 10,
            // An envelope with the largest module, its signature and framing.
            max_packet_bytes: max_module_bytes as usize + 4 * 1024,
            fresh_incarnation,
        }
    }
}

/// Why the config block cannot make an agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The topic prefix is not one the fleet allows.
    #[error("the config's topic prefix is invalid")]
    TopicPrefix,
    /// The root key is not an ed25519 public key.
    #[error("the config's root key is not a valid public key")]
    RootKey,
    /// A job key is not an ed25519 public key, or its id does not match it.
    #[error("job key {0} in the config is not a valid key")]
    JobKey(usize),
    /// No job key, or more than a key ring holds.
    #[error("the config must list between 1 and {} job keys", fleet_schemas::limits::MAX_TRUSTED_KEYS)]
    JobKeyCount,
}

/// The agent core's config for this device.
/// `inputs` are the names of the board's data inputs, advertised as capabilities.
pub fn agent_config(
    config: &DeviceConfig,
    settings: &Settings,
    inputs: BTreeSet<String>,
) -> Result<AgentConfig, SetupError> {
    let topics = Topics::new(&config.topic_prefix).map_err(|_| SetupError::TopicPrefix)?;
    let root_key = Trusted::new(&config.root_key).ok_or(SetupError::RootKey)?;
    let keys = config
        .job_keys
        .iter()
        .enumerate()
        .map(|(i, k)| Trusted::new(&k.public_key).filter(|t| t.key_id == k.key_id).ok_or(SetupError::JobKey(i)))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(SetupError::JobKeyCount);
    }
    let provisioned_keys = KeyRing::new(keys).ok_or(SetupError::JobKeyCount)?;
    Ok(AgentConfig {
        device_id: config.device_id.clone(),
        topics,
        device_key: config.device_key.signing_key(),
        root_key,
        provisioned_keys,
        capabilities: Capabilities {
            runtime: config.runtime,
            gpu: None,
            labels: config.labels.clone(),
            data_inputs: inputs,
            max_module_bytes: settings.max_module_bytes,
            inference: Vec::new(),
            wasi: fleet_executor::WASI_VERSIONS.iter().map(|v| String::from(*v)).collect(),
        },
        agent_version: settings.agent_version.clone(),
        tuning: settings.tuning,
        fresh_incarnation: settings.fresh_incarnation,
    })
}

/// The MQTT session's config for this device (the last-will is set from the core).
pub fn session_config(config: &DeviceConfig, settings: &Settings) -> SessionConfig {
    SessionConfig {
        client_id: config.device_id.as_str().into(),
        username: config.username.clone(),
        password: config.password.clone(),
        keep_alive_secs: settings.keep_alive_secs,
        will: None,
        max_packet_bytes: settings.max_packet_bytes,
        connect_timeout_ms: 3_000,
        max_inflight: 8,
    }
}
