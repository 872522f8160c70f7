//! The SQLite store against real files: every `StoreOp` lands where `Recovered` reads it
//! back, a batch is all or nothing, chunked modules reassemble, and the schema is
//! versioned.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleet_agent::store::{DB_FILE, Store, StoreError};
use fleet_agent_core::{HistoryEntry, OutboxEvent, SeenOrder, StoreOp, StoredExecution, StoredKeys};
use fleet_schemas::chunk::{module_matches, split_module};
use fleet_schemas::{
    ChunkAssembler, DeviceId, ExecutionKey, JobId, JobSpec, Limits, ModuleSource, PublicKey, ReplayState, Requirements,
    TrustedKey,
};

fn key(n: u8) -> ExecutionKey {
    ExecutionKey { job_id: JobId([n; 16]), device_id: DeviceId::new("gw-1").unwrap(), attempt: 1 }
}

fn execution(n: u8, seq: u64) -> StoredExecution {
    let job = JobSpec {
        job_id: JobId([n; 16]),
        module: ModuleSource::Inline(vec![0, b'a', b's', b'm', n]),
        entry: "run".into(),
        args: vec!["a".into()],
        limits: Limits { fuel: 1, memory_pages: 2, timeout_ms: 3 },
        requirements: Requirements::default(),
        inputs: vec!["readings".into()],
    };
    StoredExecution { seq, key: key(n), job, started: false }
}

fn event(seq: u64) -> OutboxEvent {
    OutboxEvent { seq, bytes: vec![seq as u8; 10] }
}

#[test]
fn a_new_store_recovers_as_a_new_device() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.recover().unwrap(), fleet_agent_core::Recovered::default());
}

#[test]
fn every_op_is_read_back_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let keys = StoredKeys { rotation_seq: 4, keys: vec![TrustedKey::new(PublicKey([9; 32]))] };
    {
        let mut store = Store::open(dir.path()).unwrap();
        store
            .apply(&[
                StoreOp::PutExecution(execution(1, 10)),
                StoreOp::PutExecution(execution(2, 11)),
                StoreOp::PutExecution(execution(3, 12)),
                StoreOp::SetReplay(ReplayState { last_seq: 12, time_floor: 1_800_000_000 }),
                StoreOp::PutEvent(event(1)),
                StoreOp::PutEvent(event(2)),
                StoreOp::PutEvent(event(3)),
                StoreOp::Remember(HistoryEntry { seq: 5, order: SeenOrder::Cancel(JobId([5; 16])) }),
                StoreOp::Remember(HistoryEntry { seq: 6, order: SeenOrder::Run(key(6)) }),
                StoreOp::SetKeys(keys.clone()),
            ])
            .unwrap();
        store
            .apply(&[
                StoreOp::MarkStarted(key(1)),
                StoreOp::RemoveExecution(key(2)),
                StoreOp::Forget { seq: 5 },
                StoreOp::AckEvents { through_seq: 2 },
                // No-ops on what is not stored.
                StoreOp::MarkStarted(key(9)),
                StoreOp::RemoveExecution(key(9)),
            ])
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let recovered = store.recover().unwrap();
    let mut executions = recovered.executions.clone();
    executions.sort_by_key(|e| e.seq);
    let mut started = execution(1, 10);
    started.started = true;
    assert_eq!(executions, vec![started, execution(3, 12)]);
    assert_eq!(recovered.replay, ReplayState { last_seq: 12, time_floor: 1_800_000_000 });
    assert_eq!(recovered.outbox, vec![event(3)]);
    assert_eq!(recovered.acked_through, 2);
    assert_eq!(recovered.history, vec![HistoryEntry { seq: 6, order: SeenOrder::Run(key(6)) }]);
    assert_eq!(recovered.keys, Some(keys));
}

#[test]
fn a_batch_that_fails_midway_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.apply(&[StoreOp::PutEvent(event(1))]).unwrap();
    // A fault injected from outside: any write to the outbox now fails.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch("CREATE TRIGGER fail BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'injected'); END;")
        .unwrap();
    let error = store
        .apply(&[
            StoreOp::PutExecution(execution(1, 1)),
            StoreOp::SetReplay(ReplayState { last_seq: 1, time_floor: 1 }),
            StoreOp::AckEvents { through_seq: 1 },
            StoreOp::PutEvent(event(2)),
        ])
        .unwrap_err();
    assert!(matches!(error, StoreError::Sqlite(_)), "{error}");
    let recovered = store.recover().unwrap();
    assert!(recovered.executions.is_empty());
    assert_eq!(recovered.replay, ReplayState::default());
    assert_eq!(recovered.outbox, vec![event(1)]);
    assert_eq!(recovered.acked_through, 0);
}

#[test]
fn a_chunked_module_reassembles_and_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let module: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (spec, chunks) = split_module(&module, 4096).unwrap();
    let mut assembler = ChunkAssembler::new(spec).unwrap();
    for chunk in &chunks {
        let offset = assembler.offset_of(chunk.index);
        assembler.accept(chunk).unwrap();
        let mut batch = vec![StoreOp::WriteChunk { module: spec.hash, offset, data: chunk.data.clone() }];
        if assembler.next_index().is_some() {
            batch.push(StoreOp::SetAssembly(assembler));
        } else {
            batch.push(StoreOp::ModuleComplete(spec.hash));
        }
        // Written twice, as after a crash between commit and ack: idempotent.
        store.apply(&batch).unwrap();
        store.apply(&batch).unwrap();
        if assembler.next_index().is_some() {
            assert_eq!(store.recover().unwrap().assemblies, vec![assembler]);
            assert_eq!(store.load_module(&spec.hash).unwrap(), None, "not complete yet");
        }
    }
    let recovered = store.recover().unwrap();
    assert!(recovered.assemblies.is_empty());
    assert_eq!(recovered.modules, vec![spec.hash]);
    let loaded = store.load_module(&spec.hash).unwrap().unwrap();
    assert!(module_matches(&loaded, &spec));

    store.apply(&[StoreOp::DiscardModule(spec.hash)]).unwrap();
    assert!(store.recover().unwrap().modules.is_empty());
    assert_eq!(store.load_module(&spec.hash).unwrap(), None);
}

#[test]
fn large_seqs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let replay = ReplayState { last_seq: u64::MAX, time_floor: u64::MAX - 1 };
    store.apply(&[StoreOp::SetReplay(replay)]).unwrap();
    assert_eq!(store.recover().unwrap().replay, replay);
}

#[test]
fn the_store_is_in_wal_mode_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(Store::open(dir.path()), Err(StoreError::TooNew { found: 99, .. })));
}
