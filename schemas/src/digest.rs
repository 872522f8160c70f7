//! SHA-256, the one hash of the protocol (module content hashes, chunk chain links,
//! key ids).

use sha2::{Digest as _, Sha256};

use crate::ids::Digest;

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    let out = Sha256::digest(bytes);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&out);
    Digest(digest)
}
