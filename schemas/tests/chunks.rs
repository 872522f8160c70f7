//! Chunked modules: split, reassemble in order, refuse everything forged, out of place
//! or of the wrong size, and resume from a persisted assembler.
#![allow(clippy::unwrap_used)]

use fleet_schemas::chunk::{ChunkAssembler, ChunkError, ChunkProgress, chain_link, module_matches, split_module};
use fleet_schemas::*;
use proptest::prelude::*;

fn module(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn reassemble(spec: ChunkedModule, chunks: &[ModuleChunk]) -> Vec<u8> {
    let mut asm = ChunkAssembler::new(spec).unwrap();
    let mut out = vec![0u8; spec.size as usize];
    for chunk in chunks {
        let progress = asm.accept(chunk).unwrap();
        let at = asm.offset_of(chunk.index) as usize;
        out[at..at + chunk.data.len()].copy_from_slice(&chunk.data);
        if chunk.index + 1 == asm.total_chunks() {
            assert_eq!(progress, ChunkProgress::Complete);
        }
    }
    out
}

proptest! {
    #[test]
    fn split_then_reassemble(len in 1usize..5000, chunk_size in 1u32..700) {
        let m = module(len);
        let (spec, chunks) = split_module(&m, chunk_size).unwrap();
        prop_assert_eq!(chunks.len() as u32, spec.size.div_ceil(chunk_size));
        let back = reassemble(spec, &chunks);
        prop_assert!(module_matches(&back, &spec));
        prop_assert_eq!(back, m);
    }

    #[test]
    fn any_flipped_bit_is_caught(len in 2usize..3000, chunk_size in 1u32..500, which in any::<prop::sample::Index>(), bit in 0u8..8) {
        let m = module(len);
        let (spec, mut chunks) = split_module(&m, chunk_size).unwrap();
        let i = which.index(chunks.len());
        let at = i % chunks[i].data.len();
        chunks[i].data[at] ^= 1 << bit;
        let mut asm = ChunkAssembler::new(spec).unwrap();
        for chunk in &chunks[..i] {
            asm.accept(chunk).unwrap();
        }
        prop_assert_eq!(asm.accept(&chunks[i]), Err(ChunkError::ChainMismatch(i as u32)));
    }
}

#[test]
fn each_refusal_leaves_the_state_unchanged() {
    let m = module(1000);
    let (spec, chunks) = split_module(&m, 300).unwrap();
    let mut asm = ChunkAssembler::new(spec).unwrap();
    let before = asm;
    assert_eq!(asm.accept(&chunks[1]), Err(ChunkError::OutOfOrder { expected: 0, got: 1 }));
    let mut other = chunks[0].clone();
    other.module_hash = Digest([7; 32]);
    assert_eq!(asm.accept(&other), Err(ChunkError::WrongModule));
    let mut short = chunks[0].clone();
    short.data.pop();
    assert_eq!(asm.accept(&short), Err(ChunkError::BadLength(0)));
    let mut relinked = chunks[0].clone();
    relinked.next = Digest([0; 32]);
    assert_eq!(asm.accept(&relinked), Err(ChunkError::ChainMismatch(0)));
    assert_eq!(asm, before);

    assert_eq!(asm.accept(&chunks[0]), Ok(ChunkProgress::NeedMore { next_index: 1 }));
    assert_eq!(asm.accept(&chunks[0]), Err(ChunkError::Duplicate(0)), "a redelivery is harmless");
    for chunk in &chunks[1..] {
        asm.accept(chunk).unwrap();
    }
    assert_eq!(asm.next_index(), None);
    assert_eq!(asm.accept(&chunks[3]), Err(ChunkError::AlreadyComplete));
}

#[test]
fn a_forged_chunk_with_a_consistent_chain_of_its_own_is_refused() {
    // An attacker builds a whole valid-looking chain for a different module and
    // addresses it to the signed module's hash: the signed head does not match.
    let (spec, _) = split_module(&module(600), 200).unwrap();
    let (_, mut forged) = split_module(&[0xee; 600], 200).unwrap();
    for c in &mut forged {
        c.module_hash = spec.hash;
    }
    let mut asm = ChunkAssembler::new(spec).unwrap();
    assert_eq!(asm.accept(&forged[0]), Err(ChunkError::ChainMismatch(0)));
}

#[test]
fn the_assembler_survives_a_power_cycle() {
    let m = module(2048);
    let (spec, chunks) = split_module(&m, 256).unwrap();
    let mut asm = ChunkAssembler::new(spec).unwrap();
    for chunk in &chunks[..3] {
        asm.accept(chunk).unwrap();
    }
    let stored = postcard::to_allocvec(&asm).unwrap();
    let mut resumed: ChunkAssembler = postcard::from_bytes(&stored).unwrap();
    assert_eq!(resumed.next_index(), Some(3));
    for chunk in &chunks[3..] {
        resumed.accept(chunk).unwrap();
    }
    assert_eq!(resumed.next_index(), None);
}

#[test]
fn geometry_is_bounded() {
    assert_eq!(split_module(&[], 10).unwrap_err(), ChunkError::BadGeometry);
    assert_eq!(split_module(&[1], 0).unwrap_err(), ChunkError::BadGeometry);
    let too_big_chunk = fleet_schemas::limits::MAX_CHUNK_DATA as u32 + 1;
    assert_eq!(split_module(&[1], too_big_chunk).unwrap_err(), ChunkError::BadGeometry);
    let spec = ChunkedModule { hash: Digest([0; 32]), size: u32::MAX, chunk_size: 1024, chain_head: Digest([0; 32]) };
    assert_eq!(ChunkAssembler::new(spec).unwrap_err(), ChunkError::BadGeometry);
}

#[test]
fn decode_refuses_oversized_and_malformed() {
    let big = vec![0u8; fleet_schemas::limits::MAX_CHUNK_BYTES + 1];
    assert_eq!(ModuleChunk::decode(&big), Err(ChunkError::TooLarge));
    assert_eq!(ModuleChunk::decode(b"\x01\x02"), Err(ChunkError::Malformed));
}

#[test]
fn the_chain_link_binds_the_index() {
    let next = Digest([3; 32]);
    assert_ne!(chain_link(0, b"abc", &next), chain_link(1, b"abc", &next));
    assert_ne!(chain_link(0, b"abc", &next), chain_link(0, b"abd", &next));
}
