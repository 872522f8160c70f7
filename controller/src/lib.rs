//! # fleet-controller: the fleet's brain, and `fleetctl`
//!
//! The controller owns the fleet's durable state (devices, keys, jobs, executions,
//! events seen, the audit log) in one SQLite database, decides what to send when, signs
//! envelopes and acks, and ingests device events. It is split the way quinn splits
//! `quinn-proto` from `quinn`: every decision is made by plain functions that are tested
//! without sockets, and a thin tokio shell moves bytes between them and MQTT.
//!
//! | module | what | I/O |
//! |---|---|---|
//! | [`model`] | the vocabulary: execution states, targets, label selectors, rollout parameters | none |
//! | [`rollout`] | the rollout engine: job + executions + now in, actions out | none |
//! | [`ingest`] | an event's bytes in, a recorded state change and the ack to send out | the store |
//! | [`store`] | the SQLite database: schema, migrations, every query | disk |
//! | [`datadir`] | the data directory: database, key files (0600), the controller's credential | disk |
//! | [`signer`] | envelopes, acks and key rotations, signed | none |
//! | [`auth`] | the embedded broker's authenticator: device passwords checked against the store | disk |
//! | [`acl`] | mosquitto `passwd` and `acl` files from the registry, for an external broker | none |
//! | [`operate`] | the operator's operations and views, one implementation for the API and the CLI | the store |
//! | [`tokens`] | API tokens and their roles | none |
//! | [`api`] | the operator API: JSON over HTTPS, a role guard before every route | network |
//! | [`tls`] | the controller's own CA and the API's and broker's certificates | disk |
//! | [`metrics`] | Prometheus metrics from the store and the counters | the store |
//! | [`server`] | `fleetctl serve`: the MQTT shell that runs the above | network, disk |
//!
//! `fleetctl` (in `src/bin/fleetctl`) talks to a running `serve` through its API (a thin
//! shell over [`operate`], which wakes the rollout at once on a push); with none running
//! it calls [`operate`] on the database itself, and a `serve` started later notices the
//! commit through `PRAGMA data_version` and acts. See `README.md`.

pub mod acl;
pub mod api;
pub mod auth;
pub mod datadir;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod operate;
pub mod rollout;
pub mod server;
pub mod signer;
pub mod store;
pub mod tls;
pub mod tokens;

/// The controller's version, as published in its status document.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The MQTT client id (and username) of the controller.
pub const CONTROLLER_CLIENT_ID: &str = "fleet-controller";

/// The MQTT username of the fleet's read-only watchers (`fleetctl broker observer`):
/// it may read every status document and publish nothing.
pub const OBSERVER_USERNAME: &str = "fleet-observer";

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// 32 random bytes from the operating system.
pub fn random_32() -> Result<[u8; 32], getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}
