//! Size and time bounds of the protocol, in one place.
//!
//! Every decoder checks its input against one of these before it decodes anything, so
//! the memory a hostile message can cost is bounded by a constant, not by a length the
//! attacker writes. A microcontroller agent sizes its buffers from the same numbers.

/// The largest signed job envelope, in bytes (inline module included). Larger modules
/// travel as [`crate::chunk::ModuleChunk`]s.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// The largest signed execution event (output and logs included), in bytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The largest signed key rotation, in bytes.
pub const MAX_ROTATION_BYTES: usize = 4 * 1024;

/// The largest payload of one module chunk, in bytes.
pub const MAX_CHUNK_DATA: usize = 16 * 1024;

/// The largest encoded module chunk, in bytes (payload plus addressing and chain link).
pub const MAX_CHUNK_BYTES: usize = MAX_CHUNK_DATA + 128;

/// The largest module a job may name, in bytes.
pub const MAX_MODULE_BYTES: u32 = 16 * 1024 * 1024;

/// The largest retained status document (JSON), in bytes.
pub const MAX_STATUS_BYTES: usize = 8 * 1024;

/// The most job-signing keys a device trusts at once.
pub const MAX_TRUSTED_KEYS: usize = 8;

/// How far ahead of the device's clock an envelope's `issued_at` may be before it is
/// refused as not yet valid, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// The largest signed event acknowledgement, in bytes.
pub const MAX_ACK_BYTES: usize = 512;

/// The longest device id, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// The largest signed sync request or sync grant, in bytes.
pub const MAX_SYNC_BYTES: usize = 512;
