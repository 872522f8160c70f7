//! The agent's durable state on NOR flash: a log of the core's `Persist` batches.
//!
//! The agent core asks for one thing of storage: apply each batch of
//! [`StoreOp`]s *atomically* and durably, and give everything back as a
//! [`Recovered`] at boot. A batch touches several logical records at once (an accepted
//! envelope is a queued execution, a new replay state and an `Accepted` event; a
//! finished one is a removal, a history entry and a terminal event), so the unit of
//! atomicity has to be the batch, not the record.
//!
//! ## Why a log of batches, not a map of records
//!
//! `sequential-storage`'s map makes each *item* power-fail safe, but a batch of several
//! items written one by one could be cut between two of them, and a queued execution
//! with a module inline is larger than the page an item must fit in. Both would need a
//! journal in front of the map. So the journal *is* the store: each batch is appended
//! to a `sequential-storage` queue (a ring of CRC-checked items over the partition) as
//! one or more fragments, and only a batch whose last fragment is on flash counts.
//!
//! | item | bytes |
//! |---|---|
//! | tag | 1: `B` a batch, `C` a checkpoint |
//! | batch id | 4, little-endian, rising |
//! | fragment index | 2, little-endian, from 0 |
//! | flags | 1: bit 0 marks the last fragment |
//! | data | up to [`FRAGMENT_DATA`] bytes of the batch: its ops, each postcard-encoded, back to back |
//! | CRC-32 | 4, last fragment only: of the whole batch's data |
//!
//! **Commit rule.** `sequential-storage` writes an item's CRC last, so a torn item reads
//! as absent. A batch is applied at recovery only if fragments `0..=n` of one id follow
//! each other and fragment `n` is marked last and its CRC matches; anything else (the
//! fragments of a batch cut by power loss) is skipped. Because the core performs nothing
//! after a `Persist` until it returns, a skipped batch is one whose effects (a PUBACK, a
//! publish, a run) never happened.
//!
//! **Recovery** replays the log from its oldest item into [`Tables`], the logical
//! tables of `fleet_agent_core::store`, and hands them to the core as a [`Recovered`].
//!
//! **Compaction.** The log only grows, so when less than half of the partition is free
//! (and a quarter has been written since the last compaction, so a large live state
//! cannot make it run on every batch) the journal replays itself, appends the result as
//! a *checkpoint* (the ops that rebuild the tables from nothing), and only then pops
//! every item older than the checkpoint. A complete checkpoint at recovery resets the
//! tables before it is applied, so a power cut anywhere in compaction leaves either the
//! old log (checkpoint incomplete) or a log whose head no longer matters.
//!
//! The cost of this choice: boot replays the whole log, and compaction needs the live
//! state in RAM once more; both are bounded by the partition, which the agent's tuning
//! (a queue of two, a short history, a small outbox) keeps small. It needs NOR flash that
//! can clear bits of a written word again (`MultiwriteNorFlash`, to pop items), which
//! most internal and SPI NOR flash can; flash with ECC words that cannot (STM32L4/H7)
//! would pop by erasing whole pages instead.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use fleet_agent_core::{HistoryEntry, OutboxEvent, Recovered, StoreOp, StoredExecution, StoredKeys};
use fleet_schemas::{ChunkAssembler, Digest, Incarnation, ReplayState};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::queue::{QueueConfig, QueueStorage};

/// The size of one log item: header, data, CRC. Small enough that a page ends with
/// little waste, large enough that headers cost under 2 %.
pub const ITEM_BYTES: usize = 1024;
/// The batch bytes one fragment carries.
pub const FRAGMENT_DATA: usize = ITEM_BYTES - HEADER - CRC_BYTES;

const HEADER: usize = 8;
const CRC_BYTES: usize = 4;
const TAG_BATCH: u8 = b'B';
const TAG_CHECKPOINT: u8 = b'C';
const FLAG_LAST: u8 = 1;

static CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Why the journal failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The partition is not whole erase pages.
    #[error("the journal partition is not whole erase pages")]
    BadPartition,
    /// The flash failed to read, write or erase.
    #[error("flash operation failed")]
    Flash,
    /// The live state does not fit the partition even after compaction.
    #[error("the journal is full: the live state does not fit the partition")]
    Full,
    /// The log holds a committed batch this firmware cannot apply (written by another
    /// firmware version, or flash damage the item CRCs did not catch). Erasing the
    /// partition starts the device afresh (it loses its queue and outbox).
    #[error("the journal is corrupted: {0}")]
    Corrupted(&'static str),
    /// An op could not be encoded (should not happen).
    #[error("a store op could not be encoded")]
    Encode,
}

impl<E> From<sequential_storage::Error<E>> for JournalError {
    fn from(error: sequential_storage::Error<E>) -> Self {
        match error {
            sequential_storage::Error::Storage { .. } => JournalError::Flash,
            sequential_storage::Error::FullStorage => JournalError::Full,
            sequential_storage::Error::BufferTooSmall(_) => JournalError::Corrupted("an item over the fragment size"),
            _ => JournalError::Corrupted("the queue structure"),
        }
    }
}

/// Which tables a replay keeps: all of them, or one module's bytes (to load a module
/// without holding a second copy of everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    Module(Digest),
}

/// A stored module: its bytes so far, and whether it is complete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredModule {
    /// The bytes (a prefix while it is being fetched).
    pub bytes: Vec<u8>,
    /// Whether `ModuleComplete` was applied.
    pub complete: bool,
}

/// The logical tables of `fleet_agent_core::store`, as the log rebuilds them.
///
/// Plain vectors, not maps: each table holds a handful of rows (the agent's tuning keeps
/// the queue, history and outbox short), and every map type instantiated costs flash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    /// The replay state.
    pub replay: ReplayState,
    /// The keys of the latest rotation.
    pub keys: Option<StoredKeys>,
    /// Queued and interrupted executions.
    pub executions: Vec<StoredExecution>,
    /// History entries.
    pub history: Vec<HistoryEntry>,
    /// The outbox.
    pub outbox: Vec<OutboxEvent>,
    /// The highest event seq the controller acknowledged.
    pub acked_through: u64,
    /// Assembly states of partly fetched modules.
    pub assemblies: Vec<ChunkAssembler>,
    /// Module bytes, partial and complete, by hash.
    pub modules: Vec<(Digest, StoredModule)>,
    /// The store's incarnation, once it is synced with the controller.
    pub incarnation: Option<Incarnation>,
}

/// Replaces the row `same` finds, or adds `row`.
fn upsert<T>(rows: &mut Vec<T>, row: T, same: impl Fn(&T, &T) -> bool) {
    match rows.iter_mut().find(|r| same(r, &row)) {
        Some(slot) => *slot = row,
        None => rows.push(row),
    }
}

impl Tables {
    /// Applies one op, as the core defines it (`fleet_agent_core::StoreOp`).
    /// `max_module_bytes` bounds what a `WriteChunk` may make a module grow to.
    pub fn apply(&mut self, op: StoreOp, max_module_bytes: usize) -> Result<(), JournalError> {
        self.apply_in(op, Scope::All, max_module_bytes)
    }

    fn apply_in(&mut self, op: StoreOp, scope: Scope, max_module_bytes: usize) -> Result<(), JournalError> {
        let keep = |hash: &Digest| match scope {
            Scope::All => true,
            Scope::Module(wanted) => *hash == wanted,
        };
        let all = scope == Scope::All;
        match op {
            StoreOp::PutExecution(execution) if all => upsert(&mut self.executions, execution, |a, b| a.key == b.key),
            StoreOp::MarkStarted(key) if all => {
                if let Some(execution) = self.executions.iter_mut().find(|e| e.key == key) {
                    execution.started = true;
                }
            }
            StoreOp::RemoveExecution(key) if all => self.executions.retain(|e| e.key != key),
            StoreOp::SetReplay(replay) if all => self.replay = replay,
            StoreOp::Remember(entry) if all => upsert(&mut self.history, entry, |a, b| a.seq == b.seq),
            StoreOp::Forget { seq } if all => self.history.retain(|e| e.seq != seq),
            StoreOp::SetKeys(keys) if all => self.keys = Some(keys),
            StoreOp::PutEvent(event) if all && event.seq > self.acked_through => {
                upsert(&mut self.outbox, event, |a, b| a.seq == b.seq);
            }
            StoreOp::AckEvents { through_seq } if all => {
                self.acked_through = self.acked_through.max(through_seq);
                let acked = self.acked_through;
                self.outbox.retain(|e| e.seq > acked);
            }
            StoreOp::SetAssembly(assembler) if all => {
                upsert(&mut self.assemblies, assembler, |a, b| a.spec().hash == b.spec().hash);
            }
            StoreOp::WriteChunk { module, offset, data } if keep(&module) => {
                let start = usize::try_from(offset).map_err(|_| JournalError::Corrupted("a chunk offset"))?;
                let end = start.checked_add(data.len()).filter(|end| *end <= max_module_bytes);
                let end = end.ok_or(JournalError::Corrupted("a module over the size limit"))?;
                let stored = self.module_mut(module);
                if stored.bytes.len() < end {
                    stored.bytes.resize(end, 0);
                }
                stored.bytes[start..end].copy_from_slice(&data);
            }
            StoreOp::ModuleComplete(hash) if keep(&hash) => {
                self.assemblies.retain(|a| a.spec().hash != hash);
                self.module_mut(hash).complete = true;
            }
            StoreOp::DiscardModule(hash) if keep(&hash) => {
                self.assemblies.retain(|a| a.spec().hash != hash);
                self.modules.retain(|(h, _)| *h != hash);
            }
            StoreOp::SetIncarnation(incarnation) if all => self.incarnation = Some(incarnation),
            _ => {}
        }
        Ok(())
    }

    fn module_mut(&mut self, hash: Digest) -> &mut StoredModule {
        let at = match self.modules.iter().position(|(h, _)| *h == hash) {
            Some(at) => at,
            None => {
                self.modules.push((hash, StoredModule::default()));
                self.modules.len() - 1
            }
        };
        &mut self.modules[at].1
    }

    /// What the core is rebuilt from.
    pub fn recovered(&self) -> Recovered {
        Recovered {
            replay: self.replay,
            keys: self.keys.clone(),
            executions: self.executions.clone(),
            history: self.history.clone(),
            outbox: self.outbox.clone(),
            acked_through: self.acked_through,
            assemblies: self.assemblies.clone(),
            modules: self.modules.iter().filter(|(_, m)| m.complete).map(|(hash, _)| *hash).collect(),
            incarnation: self.incarnation,
        }
    }

    /// What the core is rebuilt from, without copying.
    pub fn into_recovered(self) -> Recovered {
        let modules = self.modules.iter().filter(|(_, m)| m.complete).map(|(hash, _)| *hash).collect();
        Recovered {
            replay: self.replay,
            keys: self.keys,
            executions: self.executions,
            history: self.history,
            outbox: self.outbox,
            acked_through: self.acked_through,
            assemblies: self.assemblies,
            modules,
            incarnation: self.incarnation,
        }
    }

    /// The ops that rebuild these tables from nothing: a checkpoint.
    fn into_checkpoint(self) -> Vec<StoreOp> {
        let mut ops = vec![StoreOp::SetReplay(self.replay)];
        ops.extend(self.incarnation.map(StoreOp::SetIncarnation));
        ops.extend(self.keys.map(StoreOp::SetKeys));
        if self.acked_through > 0 {
            ops.push(StoreOp::AckEvents { through_seq: self.acked_through });
        }
        ops.extend(self.outbox.into_iter().map(StoreOp::PutEvent));
        ops.extend(self.executions.into_iter().map(StoreOp::PutExecution));
        ops.extend(self.history.into_iter().map(StoreOp::Remember));
        ops.extend(self.assemblies.into_iter().map(StoreOp::SetAssembly));
        for (hash, module) in self.modules {
            ops.push(StoreOp::WriteChunk { module: hash, offset: 0, data: module.bytes });
            if module.complete {
                ops.push(StoreOp::ModuleComplete(hash));
            }
        }
        ops
    }
}

/// The header of one log item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ItemHeader {
    tag: u8,
    id: u32,
    index: u16,
    last: bool,
}

impl ItemHeader {
    fn parse(item: &[u8]) -> Option<(Self, &[u8])> {
        let (head, data) = item.split_at_checked(HEADER)?;
        let tag = head[0];
        if tag != TAG_BATCH && tag != TAG_CHECKPOINT {
            return None;
        }
        let id = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let index = u16::from_le_bytes([head[5], head[6]]);
        Some((Self { tag, id, index, last: head[7] & FLAG_LAST != 0 }, data))
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.tag);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.push(if self.last { FLAG_LAST } else { 0 });
    }
}

/// A batch being reassembled from its fragments during replay.
struct Pending {
    tag: u8,
    id: u32,
    next_index: u16,
    data: Vec<u8>,
    /// Item bytes of its fragments so far.
    item_bytes: usize,
}

/// What one replay found.
struct Replayed {
    tables: Tables,
    /// The highest batch id seen, committed or not.
    max_id: Option<u32>,
    /// Item bytes written since the last complete checkpoint (all, if none).
    since_checkpoint: usize,
}

/// The log of `Persist` batches on a NOR flash partition. See the module docs.
pub struct Journal<F: MultiwriteNorFlash> {
    queue: QueueStorage<F, Cache<Uncached, Uncached, Uncached>>,
    buf: Vec<u8>,
    next_id: u32,
    capacity: usize,
    written_since_checkpoint: usize,
    max_module_bytes: usize,
}

impl<F: MultiwriteNorFlash> Journal<F> {
    /// Opens the journal on `range` of `flash` and replays it. `max_module_bytes` is the
    /// largest module the device stores (a larger one in the log is corruption).
    pub async fn open(flash: F, range: Range<u32>, max_module_bytes: usize) -> Result<(Self, Tables), JournalError> {
        let capacity =
            usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| JournalError::BadPartition)?;
        let config = QueueConfig::try_new(range).map_err(|_| JournalError::BadPartition)?;
        let mut journal = Self {
            queue: QueueStorage::new(flash, config, Cache::new_uncached()),
            buf: vec![0; ITEM_BYTES],
            next_id: 0,
            capacity,
            written_since_checkpoint: 0,
            max_module_bytes,
        };
        let replayed = journal.replay(Scope::All).await?;
        journal.next_id = replayed.max_id.map_or(0, |id| id.wrapping_add(1));
        journal.written_since_checkpoint = replayed.since_checkpoint;
        Ok((journal, replayed.tables))
    }

    /// Appends one batch; once this returns, it survives power loss. Compacts the log
    /// first if it is full, and after if it is getting full.
    pub async fn append(&mut self, ops: &[StoreOp]) -> Result<(), JournalError> {
        if ops.is_empty() {
            return Ok(());
        }
        match self.write(TAG_BATCH, ops.iter()).await {
            Err(JournalError::Full) => {
                // The fragments already written belong to a batch that never commits.
                self.compact().await?;
                self.write(TAG_BATCH, ops.iter()).await?;
            }
            other => {
                other?;
            }
        }
        if self.written_since_checkpoint >= self.capacity / 4 && self.space_left().await? < self.capacity / 2 {
            self.compact().await?;
        }
        Ok(())
    }

    /// The bytes of a complete module, read back from the log.
    pub async fn load_module(&mut self, hash: Digest) -> Result<Option<Vec<u8>>, JournalError> {
        let replayed = self.replay(Scope::Module(hash)).await?;
        let module = replayed.tables.modules.into_iter().find(|(h, _)| *h == hash).map(|(_, m)| m);
        Ok(module.filter(|m| m.complete).map(|m| m.bytes))
    }

    /// Free bytes in the partition (before item overhead).
    pub async fn space_left(&mut self) -> Result<usize, JournalError> {
        Ok(self.queue.space_left().await? as usize)
    }

    /// Rewrites the log as one checkpoint of its live state.
    pub async fn compact(&mut self) -> Result<(), JournalError> {
        let tables = self.replay(Scope::All).await?.tables;
        let id = self.next_id;
        let ops = tables.into_checkpoint();
        let written = self.write(TAG_CHECKPOINT, ops.iter()).await?;
        drop(ops);
        let mut items = self.queue.iter().await?;
        while let Some(entry) = items.next(&mut self.buf).await? {
            let checkpoint_start =
                ItemHeader::parse(&entry).is_some_and(|(h, _)| h.tag == TAG_CHECKPOINT && h.id == id && h.index == 0);
            if checkpoint_start {
                break;
            }
            entry.pop().await?;
        }
        self.written_since_checkpoint = written;
        Ok(())
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.queue.destroy().0
    }

    /// Writes ops as one batch (or checkpoint) of fragments; returns the item bytes.
    async fn write<'a>(&mut self, tag: u8, ops: impl Iterator<Item = &'a StoreOp>) -> Result<usize, JournalError> {
        let id = self.next_id;
        self.next_id = id.wrapping_add(1);
        let mut crc = CRC.digest();
        let mut index: u16 = 0;
        let mut data: Vec<u8> = Vec::with_capacity(FRAGMENT_DATA);
        let mut written = 0;
        for op in ops {
            // Room reserved for the module first: the buffer grows by doubling, so an op
            // that carries one would briefly take twice its size in one block.
            let hint = match op {
                StoreOp::PutExecution(stored) => match &stored.job.module {
                    fleet_schemas::ModuleSource::Inline(bytes) => bytes.len() + 1024,
                    fleet_schemas::ModuleSource::Chunked(_) => 1024,
                },
                StoreOp::WriteChunk { data, .. } => data.len() + 128,
                _ => 256,
            };
            let encoded = postcard::to_extend(op, Vec::with_capacity(hint)).map_err(|_| JournalError::Encode)?;
            crc.update(&encoded);
            let mut rest = encoded.as_slice();
            while !rest.is_empty() {
                if data.len() == FRAGMENT_DATA {
                    written += self.push(ItemHeader { tag, id, index, last: false }, &data, None).await?;
                    index = index.checked_add(1).ok_or(JournalError::Full)?;
                    data.clear();
                }
                let take = (FRAGMENT_DATA - data.len()).min(rest.len());
                data.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
        }
        written += self.push(ItemHeader { tag, id, index, last: true }, &data, Some(crc.finalize())).await?;
        self.written_since_checkpoint += written;
        Ok(written)
    }

    async fn push(&mut self, header: ItemHeader, data: &[u8], crc: Option<u32>) -> Result<usize, JournalError> {
        let mut item = Vec::with_capacity(HEADER + data.len() + CRC_BYTES);
        header.write(&mut item);
        item.extend_from_slice(data);
        if let Some(crc) = crc {
            item.extend_from_slice(&crc.to_le_bytes());
        }
        self.queue.push(&item, false).await?;
        Ok(item.len())
    }

    /// Replays the log, oldest item first.
    async fn replay(&mut self, scope: Scope) -> Result<Replayed, JournalError> {
        let mut tables = Tables::default();
        let mut pending: Option<Pending> = None;
        let mut max_id: Option<u32> = None;
        let mut since_checkpoint = 0;
        let max_module_bytes = self.max_module_bytes;
        let mut items = self.queue.iter().await?;
        while let Some(entry) = items.next(&mut self.buf).await? {
            since_checkpoint += entry.len();
            let Some((header, data)) = ItemHeader::parse(&entry) else {
                pending = None;
                continue;
            };
            max_id = Some(max_id.map_or(header.id, |m| m.max(header.id)));
            if header.index == 0 {
                pending =
                    Some(Pending { tag: header.tag, id: header.id, next_index: 0, data: Vec::new(), item_bytes: 0 });
            }
            let Some(batch) =
                pending.as_mut().filter(|p| p.tag == header.tag && p.id == header.id && p.next_index == header.index)
            else {
                // A fragment whose predecessors are gone: popped, or of a torn batch.
                pending = None;
                continue;
            };
            batch.item_bytes += entry.len();
            if !header.last {
                batch.data.extend_from_slice(data);
                batch.next_index = batch.next_index.saturating_add(1);
                continue;
            }
            let Some((data, crc)) = data.split_last_chunk::<CRC_BYTES>() else {
                pending = None;
                continue;
            };
            batch.data.extend_from_slice(data);
            let Some(batch) = pending.take() else { continue };
            if CRC.checksum(&batch.data) != u32::from_le_bytes(*crc) {
                continue;
            }
            if batch.tag == TAG_CHECKPOINT {
                tables = Tables::default();
                since_checkpoint = batch.item_bytes;
            }
            let mut rest = batch.data.as_slice();
            while !rest.is_empty() {
                let (op, tail) = postcard::take_from_bytes::<StoreOp>(rest)
                    .map_err(|_| JournalError::Corrupted("a committed batch that does not decode"))?;
                tables.apply_in(op, scope, max_module_bytes)?;
                rest = tail;
            }
        }
        Ok(Replayed { tables, max_id, since_checkpoint })
    }
}
