//! Errors that cross the core's boundary.
//!
//! The core refuses hostile input by reporting it (events, notices), never by failing,
//! so the only error a shell sees is a store it cannot recover from.

/// Why the core cannot be rebuilt from what the store holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoverError {
    /// The stored trusted keys do not form a valid key ring (a key is not an ed25519
    /// point, its id does not match, or there are too many). Reprovision the device's
    /// keys or restore the store from a backup.
    #[error("the stored trusted keys are not a valid key ring; reprovision the device's keys")]
    InvalidKeySet,
}
