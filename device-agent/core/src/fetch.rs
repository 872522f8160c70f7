//! Fetching chunked modules, one chunk at a time.
//!
//! A module too large for an envelope is published retained as hash-chained chunks at
//! `{prefix}/modules/{hash}/chunks/{index}`. The device fetches one module at a time
//! (the one the oldest waiting execution needs) and one chunk at a time: subscribe to
//! chunk `i`, check it against the signed chain with a [`ChunkAssembler`], persist its
//! bytes at their offset together with the assembler state, unsubscribe, go on with
//! `i + 1`. RAM holds one chunk at most, and a reboot resumes where the store says. A
//! chunk that does not come (or a retained chunk that fails the chain) is asked for
//! again after `chunk_timeout_ms` by subscribing anew, which redelivers the retained
//! message.

use alloc::collections::{BTreeMap, btree_map};
use alloc::string::String;
use alloc::vec::Vec;

use fleet_schemas::chunk::ChunkError;
use fleet_schemas::{ChunkAssembler, ChunkProgress, ChunkedModule, Digest, ModuleChunk, Topics};

use crate::action::{Action, Notice, QoS};
use crate::store::StoreOp;

struct Active {
    hash: Digest,
    /// The chunk topic subscribed to, and since when (monotonic ms).
    subscribed: Option<(String, u64)>,
}

/// The conditions a fetch step runs under.
pub(crate) struct Conditions<'a> {
    pub(crate) link_up: bool,
    pub(crate) now_ms: u64,
    pub(crate) topics: &'a Topics,
}

#[derive(Default)]
pub(crate) struct Fetcher {
    /// Assembly states of partly fetched modules, as persisted.
    partial: BTreeMap<Digest, ChunkAssembler>,
    active: Option<Active>,
}

/// What a chunk did.
pub(crate) enum ChunkResult {
    /// Nothing to persist.
    Ignored,
    /// Progress was made (the store ops are in the batch).
    Progress,
    /// The module is complete (the store ops are in the batch).
    Complete(Digest),
}

impl Fetcher {
    pub(crate) fn recovered(assemblies: &[ChunkAssembler]) -> Self {
        let partial = crate::by_insertion(assemblies.iter().map(|a| (a.spec().hash, *a)));
        Self { partial, active: None }
    }

    /// Starts, keeps or drops fetches given the modules the queue is missing (first
    /// needed first). Store ops go to `batch`, which the caller persists before `out`.
    pub(crate) fn drive(
        &mut self,
        missing: &[ChunkedModule],
        cx: &Conditions<'_>,
        batch: &mut Vec<StoreOp>,
        out: &mut Vec<Action>,
    ) {
        let needed = |hash: &Digest| missing.iter().any(|m| m.hash == *hash);
        if let Some(active) = self.active.take_if(|active| !needed(&active.hash))
            && let Some((topic, _)) = active.subscribed
            && cx.link_up
        {
            out.push(Action::Unsubscribe { topic });
        }
        let unneeded: Vec<Digest> = self.partial.keys().filter(|hash| !needed(hash)).copied().collect();
        for hash in unneeded {
            self.partial.remove(&hash);
            batch.push(StoreOp::DiscardModule(hash));
        }
        if self.active.is_none() {
            self.active = missing.iter().find_map(|spec| self.start(spec));
        }
        if let Some(active) = &mut self.active
            && active.subscribed.is_none()
            && cx.link_up
            && let Some(assembler) = self.partial.get(&active.hash)
            && let Some(next) = assembler.next_index()
        {
            // Chunks are filed under the chain head, which commits to the chunk size too.
            let topic = cx.topics.module_chunk(&assembler.spec().chain_head, next);
            out.push(Action::Subscribe { topic: topic.clone(), qos: QoS::AtLeastOnce });
            active.subscribed = Some((topic, cx.now_ms));
        }
    }

    /// Makes `spec` the active fetch, resuming a stored assembly if there is one.
    fn start(&mut self, spec: &ChunkedModule) -> Option<Active> {
        if let btree_map::Entry::Vacant(entry) = self.partial.entry(spec.hash) {
            // Admission refused bad geometry, so this only fails on a corrupt store.
            entry.insert(ChunkAssembler::new(*spec).ok()?);
        }
        Some(Active { hash: spec.hash, subscribed: None })
    }

    /// A chunk arrived on a `{prefix}/modules/{hash}/chunks/{index}` topic. As the
    /// protocol says, the module and index are read from the payload, not the topic
    /// (which parses leniently); the chain check authenticates them.
    pub(crate) fn on_chunk(
        &mut self,
        payload: &[u8],
        cx: &Conditions<'_>,
        batch: &mut Vec<StoreOp>,
        after: &mut Vec<Action>,
    ) -> ChunkResult {
        let chunk = match ModuleChunk::decode(payload) {
            Ok(chunk) => chunk,
            Err(error) => {
                after.push(Action::Notice(Notice::ChunkRefused(error)));
                return ChunkResult::Ignored;
            }
        };
        let Some(active) = self.active.as_mut() else {
            after.push(Action::Notice(Notice::UnexpectedChunk));
            return ChunkResult::Ignored;
        };
        let Some(assembler) = self.partial.get_mut(&active.hash).filter(|_| chunk.module_hash == active.hash) else {
            after.push(Action::Notice(Notice::UnexpectedChunk));
            return ChunkResult::Ignored;
        };
        let offset = assembler.offset_of(chunk.index);
        let progress = match assembler.accept(&chunk) {
            Ok(progress) => progress,
            Err(ChunkError::Duplicate(_)) => return ChunkResult::Ignored,
            Err(error) => {
                after.push(Action::Notice(Notice::ChunkRefused(error)));
                return ChunkResult::Ignored;
            }
        };
        let hash = active.hash;
        batch.push(StoreOp::WriteChunk { module: hash, offset, data: chunk.data });
        if let Some((topic, _)) = active.subscribed.take()
            && cx.link_up
        {
            after.push(Action::Unsubscribe { topic });
        }
        match progress {
            ChunkProgress::NeedMore { next_index } => {
                batch.push(StoreOp::SetAssembly(*assembler));
                if cx.link_up {
                    let topic = cx.topics.module_chunk(&assembler.spec().chain_head, next_index);
                    after.push(Action::Subscribe { topic: topic.clone(), qos: QoS::AtLeastOnce });
                    active.subscribed = Some((topic, cx.now_ms));
                }
                ChunkResult::Progress
            }
            ChunkProgress::Complete => {
                batch.push(StoreOp::ModuleComplete(hash));
                self.partial.remove(&hash);
                self.active = None;
                ChunkResult::Complete(hash)
            }
        }
    }

    /// The link went down: subscriptions are to be made again.
    pub(crate) fn link_lost(&mut self) {
        if let Some(active) = &mut self.active {
            active.subscribed = None;
        }
    }

    /// Asks again for a chunk that has not come in `timeout_ms`.
    pub(crate) fn retry_if_stalled(&mut self, now_ms: u64, timeout_ms: u64, out: &mut Vec<Action>) {
        if let Some(Active { subscribed: Some((topic, since)), .. }) = &mut self.active
            && now_ms.saturating_sub(*since) >= timeout_ms
        {
            out.push(Action::Unsubscribe { topic: topic.clone() });
            out.push(Action::Subscribe { topic: topic.clone(), qos: QoS::AtLeastOnce });
            *since = now_ms;
        }
    }
}
