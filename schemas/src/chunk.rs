//! Module chunks: modules larger than an envelope, sent in pieces that are each
//! authenticated as they arrive.
//!
//! The controller splits a module into fixed-size chunks and links them with a hash
//! chain, last to first: `link(i) = SHA-256("fleet-chunk-v1" ‖ i ‖ len ‖ data(i) ‖
//! link(i+1))`, with `link(n) = 0…0`. The signed envelope carries `link(0)`, the
//! [`ChunkedModule::chain_head`]. Chunk `i` carries its data and `link(i+1)`, so a device
//! that trusts `link(i)` checks chunk `i` with one hash and learns the next link to
//! trust. The state a device keeps is one index and one digest ([`ChunkAssembler`]), it
//! never holds more than one chunk in RAM, and it can persist that state across a power
//! cycle. When the last chunk is in, the caller checks the whole module against the
//! signed [`ChunkedModule::hash`] with [`module_matches`] before anything runs.
//!
//! Chunks are published retained at `{prefix}/modules/{chain_head}/chunks/{index}`; a device
//! fetches them one by one, in order, at its own pace.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::sha256;
use crate::ids::Digest;
use crate::job::ChunkedModule;
use crate::limits::{MAX_CHUNK_BYTES, MAX_CHUNK_DATA, MAX_MODULE_BYTES};

/// One piece of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct ModuleChunk {
    /// The module this chunk belongs to ([`ChunkedModule::hash`]).
    pub module_hash: Digest,
    /// Its place, from 0.
    pub index: u32,
    /// The chain link of the next chunk (all zero after the last).
    pub next: Digest,
    /// The payload.
    #[serde(with = "crate::ids::hex_bytes")]
    #[cfg_attr(
        feature = "arbitrary",
        proptest(strategy = "proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..64)")
    )]
    pub data: Vec<u8>,
}

impl ModuleChunk {
    /// Decodes a chunk from wire bytes, refusing oversized input first.
    pub fn decode(bytes: &[u8]) -> Result<Self, ChunkError> {
        if bytes.len() > MAX_CHUNK_BYTES {
            return Err(ChunkError::TooLarge);
        }
        postcard::from_bytes(bytes).map_err(|_| ChunkError::Malformed)
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A Vec sink cannot fail for these field types.
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// The chain link of chunk `index`.
pub fn chain_link(index: u32, data: &[u8], next: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(b"fleet-chunk-v1");
    hasher.update(index.to_le_bytes());
    hasher.update(u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    hasher.update(data);
    hasher.update(next.0);
    let mut out = [0u8; 32];
    out.copy_from_slice(&hasher.finalize());
    Digest(out)
}

/// Why a module cannot be split or a chunk was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The bytes are not a chunk.
    #[error("malformed chunk")]
    Malformed,
    /// The chunk is larger than the protocol allows.
    #[error("chunk over the {MAX_CHUNK_BYTES} byte limit")]
    TooLarge,
    /// The module or chunk size is outside the protocol's bounds.
    #[error("module or chunk size out of bounds")]
    BadGeometry,
    /// The chunk belongs to another module.
    #[error("chunk of another module")]
    WrongModule,
    /// A chunk already taken in (a redelivery): harmless, ignore it.
    #[error("chunk {0} already taken in")]
    Duplicate(u32),
    /// A chunk ahead of the next one needed.
    #[error("chunk {got} arrived while {expected} is needed")]
    OutOfOrder {
        /// The index needed next.
        expected: u32,
        /// The index received.
        got: u32,
    },
    /// The chunk's payload has the wrong length for its place.
    #[error("chunk {0} has the wrong length")]
    BadLength(u32),
    /// The chunk does not hash to the link the device trusts: forged or corrupt.
    #[error("chunk {0} does not match the signed hash chain")]
    ChainMismatch(u32),
    /// All chunks are already in.
    #[error("the module is already complete")]
    AlreadyComplete,
}

/// Splits a module into chunks of `chunk_size` bytes and returns the signed-side
/// description with the chunks.
pub fn split_module(module: &[u8], chunk_size: u32) -> Result<(ChunkedModule, Vec<ModuleChunk>), ChunkError> {
    let size = u32::try_from(module.len()).map_err(|_| ChunkError::BadGeometry)?;
    check_geometry(size, chunk_size)?;
    let hash = sha256(module);
    let pieces: Vec<&[u8]> = module.chunks(chunk_size as usize).collect();
    let mut chunks = Vec::with_capacity(pieces.len());
    let mut next = Digest([0; 32]);
    for (index, data) in pieces.iter().enumerate().rev() {
        let index = u32::try_from(index).map_err(|_| ChunkError::BadGeometry)?;
        chunks.push(ModuleChunk { module_hash: hash, index, next, data: data.to_vec() });
        next = chain_link(index, data, &next);
    }
    chunks.reverse();
    Ok((ChunkedModule { hash, size, chunk_size, chain_head: next }, chunks))
}

fn check_geometry(size: u32, chunk_size: u32) -> Result<(), ChunkError> {
    if size == 0 || size > MAX_MODULE_BYTES || chunk_size == 0 || chunk_size as usize > MAX_CHUNK_DATA {
        return Err(ChunkError::BadGeometry);
    }
    Ok(())
}

/// Whether a reassembled module is the one the envelope signed.
pub fn module_matches(module: &[u8], spec: &ChunkedModule) -> bool {
    module.len() == spec.size as usize && sha256(module) == spec.hash
}

/// What a device needs to take in the chunks of one module, in order. Small and
/// serializable, so it can be stored beside the partial module and survive a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkAssembler {
    spec: ChunkedModule,
    next_index: u32,
    expected_link: Digest,
}

/// Where an assembly stands after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkProgress {
    /// Chunk `next_index` is needed next.
    NeedMore {
        /// The index to fetch next.
        next_index: u32,
    },
    /// Every chunk is in; check the module with [`module_matches`] and run it.
    Complete,
}

impl ChunkAssembler {
    /// Starts taking in the module a signed envelope describes.
    pub fn new(spec: ChunkedModule) -> Result<Self, ChunkError> {
        check_geometry(spec.size, spec.chunk_size)?;
        Ok(Self { spec, next_index: 0, expected_link: spec.chain_head })
    }

    /// How many chunks the module has.
    pub fn total_chunks(&self) -> u32 {
        self.spec.size.div_ceil(self.spec.chunk_size)
    }

    /// The index needed next, or `None` when complete.
    pub fn next_index(&self) -> Option<u32> {
        (self.next_index < self.total_chunks()).then_some(self.next_index)
    }

    /// Byte offset of chunk `index` in the module.
    pub fn offset_of(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.spec.chunk_size)
    }

    /// The module being assembled.
    pub fn spec(&self) -> &ChunkedModule {
        &self.spec
    }

    /// Checks a chunk against the chain. On `Ok`, the caller stores `chunk.data` at
    /// [`ChunkAssembler::offset_of`]`(chunk.index)`; on `Err`, the state is unchanged.
    pub fn accept(&mut self, chunk: &ModuleChunk) -> Result<ChunkProgress, ChunkError> {
        if chunk.module_hash != self.spec.hash {
            return Err(ChunkError::WrongModule);
        }
        let total = self.total_chunks();
        if self.next_index >= total {
            return Err(ChunkError::AlreadyComplete);
        }
        if chunk.index < self.next_index {
            return Err(ChunkError::Duplicate(chunk.index));
        }
        if chunk.index > self.next_index {
            return Err(ChunkError::OutOfOrder { expected: self.next_index, got: chunk.index });
        }
        let expected_len = if chunk.index + 1 == total {
            self.spec.size - self.spec.chunk_size * (total - 1)
        } else {
            self.spec.chunk_size
        };
        if chunk.data.len() != expected_len as usize {
            return Err(ChunkError::BadLength(chunk.index));
        }
        if chain_link(chunk.index, &chunk.data, &chunk.next) != self.expected_link {
            return Err(ChunkError::ChainMismatch(chunk.index));
        }
        self.expected_link = chunk.next;
        self.next_index += 1;
        Ok(match self.next_index() {
            Some(next_index) => ChunkProgress::NeedMore { next_index },
            None => ChunkProgress::Complete,
        })
    }
}
