//! The persistent store: small values that must survive power loss.
//!
//! Counters and settings a board keeps outside the agent core (a boot count, bring-up
//! values): small values rewritten often, which is what `sequential-storage`'s map is
//! for: each write appends a new version of the item (CRC-protected) and pages are
//! erased only when full, so a write torn by power loss leaves the previous value
//! readable and wear is spread over the partition.
//!
//! The agent core's own state (queue, replay state, outbox) is *not* kept here: its
//! writes come in batches that must land together, which one map item cannot promise;
//! it lives in [`crate::journal`], on the same partition in the agent image.
//!
//! Keys are the [`Key`] enum, so two parts of the firmware cannot pick the same number.
//! Values are bytes, or postcard through [`Store::get_value`] / [`Store::put_value`].

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use embedded_storage_async::nor_flash::NorFlash;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest value the store holds, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

/// What the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Key {
    /// `fleet_schemas::ReplayState`: the last accepted envelope sequence and time floor.
    Replay = 1,
    /// How many times the firmware has booted (`u32`).
    BootCount = 2,
    /// The next event sequence number (`u64`).
    EventSeq = 3,
    /// Free for tests and bring-up: never read by the agent.
    Scratch = 0x7fff,
}

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The partition is not whole erase pages, or fewer than two.
    #[error("the store partition is not at least two whole erase pages")]
    BadPartition,
    /// The flash failed to read, write or erase.
    #[error("flash operation failed")]
    Flash,
    /// The store is full (values too large for the partition).
    #[error("the store is full")]
    Full,
    /// The stored data is corrupt beyond what the store repairs; erase the partition.
    #[error("the store is corrupted")]
    Corrupted,
    /// A value is over [`MAX_VALUE_BYTES`].
    #[error("value of {0} bytes is over the {MAX_VALUE_BYTES} byte limit")]
    TooLarge(usize),
    /// A stored value does not decode as the type asked for.
    #[error("stored value does not decode")]
    Decode,
}

impl<E> From<sequential_storage::Error<E>> for StoreError {
    fn from(error: sequential_storage::Error<E>) -> Self {
        match error {
            sequential_storage::Error::Storage { .. } => StoreError::Flash,
            sequential_storage::Error::FullStorage => StoreError::Full,
            sequential_storage::Error::BufferTooSmall(n) => StoreError::TooLarge(n),
            sequential_storage::Error::SerializationError(_) => StoreError::Decode,
            _ => StoreError::Corrupted,
        }
    }
}

/// A key-value store on a NOR flash partition.
pub struct Store<F: NorFlash> {
    map: MapStorage<u16, F, Cache<Uncached, Uncached, Uncached, u16>>,
    buffer: Vec<u8>,
}

impl<F: NorFlash> Store<F> {
    /// A store on `range` of `flash` (whole erase pages, at least two). Opening reads
    /// nothing: an erased partition is an empty store.
    pub fn new(flash: F, range: Range<u32>) -> Result<Self, StoreError> {
        let config = MapConfig::try_new(range).map_err(|_| StoreError::BadPartition)?;
        // Room for the key, the value and the item's alignment to the flash's word.
        let buffer = vec![0u8; MAX_VALUE_BYTES + 2 * F::WRITE_SIZE.max(4) + 2];
        Ok(Self { map: MapStorage::new(flash, config, Cache::new_uncached()), buffer })
    }

    /// The bytes stored under `key`, if any.
    pub async fn get(&mut self, key: Key) -> Result<Option<Vec<u8>>, StoreError> {
        let value: Option<&[u8]> = self.map.fetch_item(&mut self.buffer, &(key as u16)).await?;
        Ok(value.map(<[u8]>::to_vec))
    }

    /// Stores `value` under `key`, replacing what was there. Once this returns, the
    /// value survives power loss.
    pub async fn put(&mut self, key: Key, value: &[u8]) -> Result<(), StoreError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::TooLarge(value.len()));
        }
        self.map.store_item(&mut self.buffer, &(key as u16), &value).await?;
        Ok(())
    }

    /// The value stored under `key`, decoded from postcard.
    pub async fn get_value<T: DeserializeOwned>(&mut self, key: Key) -> Result<Option<T>, StoreError> {
        match self.get(key).await? {
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(|_| StoreError::Decode),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`, encoded with postcard.
    pub async fn put_value<T: Serialize>(&mut self, key: Key, value: &T) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(value).map_err(|_| StoreError::Decode)?;
        self.put(key, &bytes).await
    }

    /// Erases the whole partition.
    pub async fn erase_all(&mut self) -> Result<(), StoreError> {
        self.map.erase_all().await?;
        Ok(())
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.map.destroy().0
    }
}
