//! The journal of the agent core's `Persist` batches, on a RAM NOR flash that can lose
//! power at any byte (the SQLite crash-test idea: cut at every step, check invariants).
//!
//! The invariants: a batch is all or nothing whatever byte the power goes at; what was
//! appended is what is replayed; compaction (and a cut during it) changes nothing the
//! core can see; the log never fills while the live state is small.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::RamFlash;
use embassy_futures::block_on;
use fleet_agent_core::{HistoryEntry, OutboxEvent, SeenOrder, StoreOp, StoredExecution};
use fleet_firmware_sdk::journal::{Journal, JournalError, Tables};
use fleet_schemas::{
    DeviceId, Digest, ExecutionKey, Incarnation, JobId, JobSpec, Limits, ModuleSource, ReplayState, Requirements,
};

const PAGE: u32 = 4096;
const MAX_MODULE: usize = 32 * 1024;

fn key(n: u8) -> ExecutionKey {
    ExecutionKey { job_id: JobId([n; 16]), device_id: DeviceId::new("gw-001").unwrap(), attempt: 1 }
}

fn job(n: u8, module_len: usize) -> JobSpec {
    JobSpec {
        job_id: JobId([n; 16]),
        module: ModuleSource::Inline((0..module_len).map(|i| (i as u8).wrapping_mul(n)).collect()),
        entry: "run".into(),
        args: vec![],
        limits: Limits { fuel: 0, memory_pages: 0, timeout_ms: 0 },
        requirements: Requirements::default(),
        inputs: vec![],
    }
}

fn event(seq: u64, len: usize) -> StoreOp {
    StoreOp::PutEvent(OutboxEvent { seq, bytes: vec![seq as u8; len] })
}

/// The batches of one execution's life, as the core writes them: accepted, started,
/// finished (and then, once the controller has the events, acknowledged).
fn life(n: u8, seq: u64, first_event: u64, module_len: usize) -> Vec<Vec<StoreOp>> {
    let execution = StoredExecution { seq, key: key(n), job: job(n, module_len), started: false };
    vec![
        vec![
            StoreOp::PutExecution(execution),
            StoreOp::SetReplay(ReplayState { last_seq: seq, time_floor: 1_800_000_000 + seq }),
            event(first_event, 180),
        ],
        vec![StoreOp::MarkStarted(key(n)), event(first_event + 1, 180)],
        vec![
            StoreOp::RemoveExecution(key(n)),
            StoreOp::Remember(HistoryEntry { seq, order: SeenOrder::Run(key(n)) }),
            StoreOp::Forget { seq: seq.saturating_sub(16) },
            event(first_event + 2, 400),
        ],
        // The incarnation rides along (set once in a real life; setting it again is
        // harmless), so replay and compaction are checked to keep it too.
        vec![StoreOp::AckEvents { through_seq: first_event + 2 }, StoreOp::SetIncarnation(Incarnation([n; 16]))],
    ]
}

fn model(batches: &[Vec<StoreOp>]) -> Tables {
    let mut tables = Tables::default();
    for op in batches.iter().flatten() {
        tables.apply(op.clone(), MAX_MODULE).unwrap();
    }
    tables
}

fn open(flash: RamFlash, pages: u32) -> Result<(Journal<RamFlash>, Tables), JournalError> {
    block_on(Journal::open(flash, 0..pages * PAGE, MAX_MODULE))
}

fn written(batches: &[Vec<StoreOp>], pages: u32) -> RamFlash {
    let (mut journal, _) = open(RamFlash::new((pages * PAGE) as usize), pages).unwrap();
    for batch in batches {
        block_on(journal.append(batch)).unwrap();
    }
    journal.into_flash()
}

#[test]
fn what_was_appended_is_what_is_replayed() {
    let mut batches = life(1, 1, 1, 2_000);
    // A second execution still queued and started when the power went.
    batches.extend(life(2, 2, 4, 300).into_iter().take(2));
    let flash = written(&batches, 16);
    let (_, tables) = open(flash, 16).unwrap();
    assert_eq!(tables, model(&batches));
    let recovered = tables.recovered();
    assert_eq!(recovered.executions.len(), 1);
    assert!(recovered.executions[0].started);
    assert_eq!(recovered.acked_through, 3);
    assert_eq!(recovered.outbox.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(recovered.replay.last_seq, 2);
}

#[test]
fn a_batch_is_all_or_nothing_wherever_the_power_goes() {
    const PAGES: u32 = 8;
    let before = life(1, 1, 1, 500);
    // A batch of several fragments: an execution with a 3 KiB module, and its event.
    let big = life(2, 2, 4, 3_000).remove(0);
    let base = written(&before, PAGES);
    let mut all = before.clone();
    all.push(big.clone());
    let (want_before, want_after) = (model(&before), model(&all));

    // How many bytes the append writes.
    let (mut journal, _) = open(base.clone(), PAGES).unwrap();
    block_on(journal.append(&big)).unwrap();
    let cost = usize::MAX - journal.into_flash().budget;
    assert!(cost > 3_000, "{cost}");

    let mut outcomes = [0usize; 2];
    for cut in 0..=cost {
        let mut flash = base.clone();
        flash.budget = cut;
        let (mut journal, _) = open(flash, PAGES).unwrap();
        let result = block_on(journal.append(&big));
        let mut flash = journal.into_flash();
        flash.budget = usize::MAX;
        let (mut journal, tables) = open(flash, PAGES).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        if tables == want_before {
            assert!(result.is_err(), "cut at {cut}: the append said ok but the batch is gone");
            outcomes[0] += 1;
        } else {
            assert_eq!(tables, want_after, "cut at {cut}: half a batch was applied");
            outcomes[1] += 1;
        }
        // The journal goes on after the cut.
        let next = vec![event(99, 50)];
        block_on(journal.append(&next)).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let (_, again) = open(journal.into_flash(), PAGES).unwrap();
        let mut expected = tables.clone();
        expected.apply(next[0].clone(), MAX_MODULE).unwrap();
        assert_eq!(again, expected, "cut at {cut}");
    }
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

#[test]
fn compaction_keeps_the_live_state_and_the_log_never_fills() {
    const PAGES: u32 = 8;
    let (mut journal, _) = open(RamFlash::new((PAGES * PAGE) as usize), PAGES).unwrap();
    let mut batches = Vec::new();
    // About 40 times the partition's size goes through the log.
    for n in 0..400u64 {
        for batch in life((n % 200) as u8 + 1, n + 1, 3 * n + 1, 1_000) {
            block_on(journal.append(&batch)).unwrap_or_else(|e| panic!("execution {n}: {e}"));
            batches.push(batch);
        }
    }
    // One more, left queued, so the live state is not empty.
    let last = life(250, 401, 1_201, 1_000);
    for batch in last.iter().take(2) {
        block_on(journal.append(batch)).unwrap();
        batches.push(batch.clone());
    }
    let (_, tables) = open(journal.into_flash(), PAGES).unwrap();
    assert_eq!(tables, model(&batches));
}

#[test]
fn a_power_cut_during_compaction_changes_nothing() {
    const PAGES: u32 = 8;
    let mut batches = Vec::new();
    for n in 0..6u64 {
        batches.extend(life(n as u8 + 1, n + 1, 3 * n + 1, 700));
    }
    batches.extend(life(9, 7, 19, 700).into_iter().take(2));
    let base = written(&batches, PAGES);
    let want = model(&batches);

    let (mut journal, _) = open(base.clone(), PAGES).unwrap();
    block_on(journal.compact()).unwrap();
    let cost = usize::MAX - journal.into_flash().budget;
    for cut in 0..=cost {
        let mut flash = base.clone();
        flash.budget = cut;
        let (mut journal, _) = open(flash, PAGES).unwrap();
        let _ = block_on(journal.compact());
        let mut flash = journal.into_flash();
        flash.budget = usize::MAX;
        let (_, tables) = open(flash, PAGES).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(tables, want, "cut at {cut}");
    }
}

#[test]
fn a_module_fetched_in_chunks_is_kept_and_loads() {
    let hash = Digest([7; 32]);
    let bytes: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut batches: Vec<Vec<StoreOp>> = bytes
        .chunks(4096)
        .enumerate()
        .map(|(i, chunk)| vec![StoreOp::WriteChunk { module: hash, offset: (i * 4096) as u64, data: chunk.to_vec() }])
        .collect();
    batches.push(vec![StoreOp::ModuleComplete(hash)]);
    let (mut journal, _) = open(RamFlash::new((16 * PAGE) as usize), 16).unwrap();
    for batch in &batches {
        block_on(journal.append(batch)).unwrap();
    }
    assert_eq!(block_on(journal.load_module(hash)).unwrap(), Some(bytes.clone()));
    assert_eq!(block_on(journal.load_module(Digest([8; 32]))).unwrap(), None);
    block_on(journal.compact()).unwrap();
    let (mut journal, tables) = open(journal.into_flash(), 16).unwrap();
    assert_eq!(tables.recovered().modules, [hash]);
    assert_eq!(block_on(journal.load_module(hash)).unwrap(), Some(bytes));

    block_on(journal.append(&[StoreOp::DiscardModule(hash)])).unwrap();
    assert_eq!(block_on(journal.load_module(hash)).unwrap(), None);
}

#[test]
fn a_module_over_the_limit_in_the_log_is_corruption() {
    let (mut journal, _) = open(RamFlash::new((8 * PAGE) as usize), 8).unwrap();
    let op = StoreOp::WriteChunk { module: Digest([1; 32]), offset: MAX_MODULE as u64, data: vec![1] };
    block_on(journal.append(&[op])).unwrap();
    assert!(matches!(open(journal.into_flash(), 8), Err(JournalError::Corrupted(_))));
}
