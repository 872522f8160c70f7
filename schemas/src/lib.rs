//! # fleet-schemas: the fleet's wire protocol
//!
//! Every part of the fleet (the controller, the Linux agent `fleet-agent`, the
//! microcontroller firmware) links this crate, so a byte that one side writes is read the
//! same way by every other. It is `no_std` with `alloc` and does no I/O: it defines the
//! messages, encodes them (postcard on the wire, JSON for the retained status topics),
//! and signs and verifies them as pure functions.
//!
//! | module | what |
//! |---|---|
//! | [`job`] | the job spec: module, entry, args, limits, requirements, data inputs |
//! | [`envelope`] | one signed order (run or cancel) for one device |
//! | [`verify`] | [`verify_envelope`]: bytes in, verified envelope or typed [`Rejection`] out |
//! | [`chunk`] | modules larger than an envelope, as hash-chained chunks |
//! | [`event`] | device-signed execution events, with their idempotency key |
//! | [`ack`] | controller-signed acknowledgement of a device's events |
//! | [`rotation`] | root-signed replacement of the trusted job-signing keys |
//! | [`sync`] | a device whose store came back empty learns where it stands (replay floor, event base) |
//! | [`status`] | retained JSON status documents |
//! | [`topics`] | MQTT topic names under a configurable prefix |
//! | [`provision`] | a device's identity and settings, written by `fleetctl device provision` |
//! | [`limits`] | every size and time bound, in one place |
//!
//! `docs/protocol.md` at the repository root describes the protocol as a whole: topics,
//! QoS, retained flags, encodings, limits, versioning and the threat model.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod ack;
pub mod chunk;
pub mod digest;
pub mod envelope;
pub mod event;
#[cfg(feature = "golden")]
pub mod golden;
pub mod ids;
pub mod job;
pub mod limits;
pub mod provision;
pub mod rotation;
pub mod signed;
pub mod status;
pub mod sync;
pub mod topics;
pub mod verify;

pub use ack::{ACK_VERSION, EventAck, verify_ack};
pub use chunk::{ChunkAssembler, ChunkError, ChunkProgress, ModuleChunk};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use envelope::{ENVELOPE_VERSION, Envelope, Order};
pub use event::{
    EVENT_VERSION, EventError, EventKind, ExecutionEvent, ExecutionKey, FailReason, RunReport, verify_event,
};
pub use ids::{DeviceId, Digest, Incarnation, JobId, KeyId, PublicKey, SignatureBytes};
pub use job::{ChunkedModule, GpuRequirement, JobSpec, Limits, ModuleSource, Requirements, RuntimeClass};
pub use rotation::{KeyRotation, ROTATION_VERSION, TrustedKey, verify_rotation};
pub use signed::{Signable, SignedMessage, Trusted};
pub use status::{ControllerStatus, DeviceStatus, JobCounts, JobState, JobStatus, Presence};
pub use sync::{SYNC_VERSION, SyncGrant, SyncRequest, verify_sync_grant, verify_sync_request};
pub use topics::{Topic, Topics};
pub use verify::{
    KeyRing, Refused, Rejection, ReplayState, Unsupported, VerifiedEnvelope, verify_envelope, verify_envelope_detailed,
};
