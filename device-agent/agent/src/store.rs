//! The agent's durable state in one SQLite file: the core's [`StoreOp`] batches in, a
//! [`Recovered`] snapshot out.
//!
//! Why SQLite: one `Persist` batch must be applied atomically and durably (the core's
//! contract), and SQLite gives exactly that with one transaction per batch, survives
//! power loss, and is one file an operator can open with `sqlite3` to see what a device
//! holds.
//!
//! Why WAL with `synchronous=FULL`: the batch is committed before the agent acknowledges
//! an envelope (PUBACK) or publishes an event. In WAL mode, `synchronous=NORMAL` fsyncs
//! only at checkpoints, so a commit that has returned can still be lost on power failure;
//! the broker would already have dropped the envelope we acknowledged, and the controller
//! may already have an event whose seq we would then reuse for another event. `FULL`
//! fsyncs the WAL on every commit, so a commit that returned is on disk. WAL (rather than
//! a rollback journal) keeps that to one fsync per commit and lets a reader (an operator,
//! or a test) look at the store while the agent writes.
//!
//! Tables (one per logical table of [`fleet_agent_core::store`]; postcard blobs for the
//! structured values, which only this agent reads):
//!
//! | table | key | holds |
//! |---|---|---|
//! | `executions` | job id, device id, attempt | envelope seq, started flag, the `JobSpec` |
//! | `replay` | one row | last accepted seq, time floor |
//! | `history` | envelope seq | what that envelope asked (`SeenOrder`) |
//! | `trusted_keys` | one row | the latest key rotation applied |
//! | `outbox` | event seq | the signed event bytes, as published |
//! | `acked` | one row | the controller's cumulative ack |
//! | `assemblies` | module hash | a partly fetched module's `ChunkAssembler` |
//! | `module_chunks` | module hash, offset | the module's bytes, one row per chunk |
//! | `modules` | module hash | marks a module complete |
//! | `incarnation` | one row | the store's incarnation, set once it is synced |
//!
//! Module bytes live in the database, one row per chunk, so that a chunk and the
//! assembler state that accounts for it commit together: there is no file that can be
//! ahead of or behind the database after a crash.

use std::path::{Path, PathBuf};

use fleet_agent_core::{HistoryEntry, OutboxEvent, Recovered, StoreOp, StoredExecution, StoredKeys};
use fleet_schemas::{ChunkAssembler, DeviceId, Digest, ExecutionKey, Incarnation, JobId, ReplayState};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The store's file name inside the state directory.
pub const DB_FILE: &str = "agent.db";

/// The schema, one migration per version (the index + 1 is the version written to
/// `PRAGMA user_version`). Never edit a migration that has shipped: add one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE executions (
        job_id    BLOB    NOT NULL,
        device_id TEXT    NOT NULL,
        attempt   INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        started   INTEGER NOT NULL,
        job       BLOB    NOT NULL,
        PRIMARY KEY (job_id, device_id, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE replay (id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL, time_floor INTEGER NOT NULL);
    CREATE TABLE history (seq INTEGER PRIMARY KEY, entry BLOB NOT NULL);
    CREATE TABLE trusted_keys (id INTEGER PRIMARY KEY CHECK (id = 1), stored BLOB NOT NULL);
    CREATE TABLE outbox (seq INTEGER PRIMARY KEY, bytes BLOB NOT NULL);
    CREATE TABLE acked (id INTEGER PRIMARY KEY CHECK (id = 1), through_seq INTEGER NOT NULL);
    CREATE TABLE assemblies (hash BLOB PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE module_chunks (
        hash   BLOB    NOT NULL,
        offset INTEGER NOT NULL,
        data   BLOB    NOT NULL,
        PRIMARY KEY (hash, offset)
    ) WITHOUT ROWID;
    CREATE TABLE modules (hash BLOB PRIMARY KEY) WITHOUT ROWID;",
    // 2: the store's incarnation (a store without one is new: it syncs before it runs
    // anything, fleet_schemas::sync).
    "CREATE TABLE incarnation (id INTEGER PRIMARY KEY CHECK (id = 1), value BLOB NOT NULL);",
];

/// Why the store failed. While applying a batch, any of these but a full disk (or
/// another [`StoreError::is_unwritable`] refusal, which the shell waits out) stops the
/// agent: the core has moved on in memory, and only a restart from what is on disk is
/// safe.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory or the database could not be opened.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A statement failed (disk full, I/O error, a corrupt file).
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer agent.
    #[error("the store has schema version {found}, newer than this agent's {known}: upgrade the agent")]
    TooNew {
        /// The version on disk.
        found: i64,
        /// The newest this agent knows.
        known: i64,
    },
    /// A stored value does not decode.
    #[error("the store's {table} table holds a value that does not decode; restore the state directory or remove it")]
    Corrupt {
        /// The table.
        table: &'static str,
    },
    /// A value could not be encoded (should not happen).
    #[error("cannot encode a value for the {table} table")]
    Encode {
        /// The table.
        table: &'static str,
    },
}

impl StoreError {
    /// Whether the store refused a write for want of space or I/O (a full disk, a failing
    /// write or fsync), which can succeed later: the agent holds its actions and tries
    /// again instead of stopping.
    pub fn is_unwritable(&self) -> bool {
        let sqlite = match self {
            StoreError::Sqlite(error) | StoreError::Open { source: error, .. } => error,
            _ => return false,
        };
        matches!(
            sqlite,
            rusqlite::Error::SqliteFailure(e, _) if matches!(
                e.code,
                rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen
            )
        )
    }
}

/// The agent's SQLite store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir`, in WAL mode with
    /// `synchronous=FULL`, and brings its schema up to date.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join(DB_FILE);
        let open_error = |source| StoreError::Open { path: path.clone(), source };
        let mut conn = Connection::open(&path).map_err(open_error)?;
        // `journal_mode` answers with the mode in force: check it took.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_error(rusqlite::Error::InvalidQuery));
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_error)?;
        migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// Opens an existing store read-only, to look at it while an agent runs (WAL lets a
    /// reader see the last committed state without blocking the writer).
    pub fn open_read_only(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join(DB_FILE);
        let conn =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        Ok(Self { conn })
    }

    /// Applies one `Persist` batch: all of it, durably, or none of it.
    pub fn apply(&mut self, batch: &[StoreOp]) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in batch {
            apply_op(&tx, op)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Reads back everything the core is rebuilt from.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        let conn = &self.conn;
        let replay = conn
            .query_row("SELECT last_seq, time_floor FROM replay WHERE id = 1", [], |row| {
                Ok(ReplayState { last_seq: from_sql(row.get(0)?), time_floor: from_sql(row.get(1)?) })
            })
            .optional()?
            .unwrap_or_default();
        let keys = conn
            .query_row("SELECT stored FROM trusted_keys WHERE id = 1", [], |row| row.get::<_, Vec<u8>>(0))
            .optional()?
            .map(|bytes| decode::<StoredKeys>(&bytes, "trusted_keys"))
            .transpose()?;

        let mut executions = Vec::new();
        let mut stmt = conn.prepare("SELECT job_id, device_id, attempt, seq, started, job FROM executions")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let job_id: Vec<u8> = row.get(0)?;
            let device_id: String = row.get(1)?;
            let key = ExecutionKey {
                job_id: JobId(job_id.try_into().map_err(|_| StoreError::Corrupt { table: "executions" })?),
                device_id: DeviceId::new(device_id).map_err(|_| StoreError::Corrupt { table: "executions" })?,
                attempt: row.get(2)?,
            };
            let job_bytes: Vec<u8> = row.get(5)?;
            executions.push(StoredExecution {
                seq: from_sql(row.get(3)?),
                key,
                job: decode(&job_bytes, "executions")?,
                started: row.get(4)?,
            });
        }

        let history = blobs(conn, "SELECT entry FROM history")?
            .iter()
            .map(|bytes| decode::<HistoryEntry>(bytes, "history"))
            .collect::<Result<Vec<_>, _>>()?;

        let mut outbox = Vec::new();
        let mut stmt = conn.prepare("SELECT seq, bytes FROM outbox ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            outbox.push(OutboxEvent { seq: from_sql(row.get(0)?), bytes: row.get(1)? });
        }

        let acked_through = conn
            .query_row("SELECT through_seq FROM acked WHERE id = 1", [], |row| row.get(0))
            .optional()?
            .map(from_sql)
            .unwrap_or(0);
        let assemblies = blobs(conn, "SELECT state FROM assemblies")?
            .iter()
            .map(|bytes| decode::<ChunkAssembler>(bytes, "assemblies"))
            .collect::<Result<Vec<_>, _>>()?;
        let modules = blobs(conn, "SELECT hash FROM modules")?
            .into_iter()
            .map(|bytes| digest(bytes, "modules"))
            .collect::<Result<Vec<_>, _>>()?;

        let incarnation = conn
            .query_row("SELECT value FROM incarnation WHERE id = 1", [], |row| row.get::<_, Vec<u8>>(0))
            .optional()?
            .map(|bytes| {
                <[u8; 16]>::try_from(bytes.as_slice())
                    .map(Incarnation)
                    .map_err(|_| StoreError::Corrupt { table: "incarnation" })
            })
            .transpose()?;

        Ok(Recovered { replay, keys, executions, history, outbox, acked_through, assemblies, modules, incarnation })
    }

    /// The bytes of a complete module, or `None` if the store does not hold it. The
    /// caller checks them against the signed spec (`fleet_schemas::chunk::module_matches`).
    pub fn load_module(&self, hash: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let complete = self
            .conn
            .query_row("SELECT 1 FROM modules WHERE hash = ?1", [hash.as_bytes().as_slice()], |_| Ok(()))
            .optional()?;
        if complete.is_none() {
            return Ok(None);
        }
        let mut module = Vec::new();
        let mut stmt = self.conn.prepare("SELECT offset, data FROM module_chunks WHERE hash = ?1 ORDER BY offset")?;
        let mut rows = stmt.query([hash.as_bytes().as_slice()])?;
        while let Some(row) = rows.next()? {
            let offset =
                usize::try_from(from_sql(row.get(0)?)).map_err(|_| StoreError::Corrupt { table: "module_chunks" })?;
            let data: Vec<u8> = row.get(1)?;
            let end = offset.checked_add(data.len()).ok_or(StoreError::Corrupt { table: "module_chunks" })?;
            if end > fleet_schemas::limits::MAX_MODULE_BYTES as usize {
                return Err(StoreError::Corrupt { table: "module_chunks" });
            }
            if module.len() < end {
                module.resize(end, 0);
            }
            module[offset..end].copy_from_slice(&data);
        }
        Ok(Some(module))
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let found: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(usize::try_from(found).unwrap_or(0)) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

fn apply_op(tx: &Transaction<'_>, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::PutExecution(e) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO executions (job_id, device_id, attempt, seq, started, job)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                e.key.job_id.as_bytes().as_slice(),
                e.key.device_id.as_str(),
                e.key.attempt,
                to_sql(e.seq),
                e.started,
                encode(&e.job, "executions")?,
            ])?;
        }
        StoreOp::MarkStarted(key) => {
            tx.prepare_cached(
                "UPDATE executions SET started = 1 WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
            )?
            .execute(params![key.job_id.as_bytes().as_slice(), key.device_id.as_str(), key.attempt])?;
        }
        StoreOp::RemoveExecution(key) => {
            tx.prepare_cached("DELETE FROM executions WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3")?
                .execute(params![key.job_id.as_bytes().as_slice(), key.device_id.as_str(), key.attempt])?;
        }
        StoreOp::SetReplay(replay) => {
            tx.prepare_cached("INSERT OR REPLACE INTO replay (id, last_seq, time_floor) VALUES (1, ?1, ?2)")?
                .execute(params![to_sql(replay.last_seq), to_sql(replay.time_floor)])?;
        }
        StoreOp::Remember(entry) => {
            tx.prepare_cached("INSERT OR REPLACE INTO history (seq, entry) VALUES (?1, ?2)")?
                .execute(params![to_sql(entry.seq), encode(entry, "history")?])?;
        }
        StoreOp::Forget { seq } => {
            tx.prepare_cached("DELETE FROM history WHERE seq = ?1")?.execute([to_sql(*seq)])?;
        }
        StoreOp::SetKeys(keys) => {
            tx.prepare_cached("INSERT OR REPLACE INTO trusted_keys (id, stored) VALUES (1, ?1)")?
                .execute([encode(keys, "trusted_keys")?])?;
        }
        StoreOp::PutEvent(event) => {
            tx.prepare_cached("INSERT OR REPLACE INTO outbox (seq, bytes) VALUES (?1, ?2)")?
                .execute(params![to_sql(event.seq), event.bytes])?;
        }
        StoreOp::AckEvents { through_seq } => {
            tx.prepare_cached("DELETE FROM outbox WHERE seq <= ?1")?.execute([to_sql(*through_seq)])?;
            tx.prepare_cached("INSERT OR REPLACE INTO acked (id, through_seq) VALUES (1, ?1)")?
                .execute([to_sql(*through_seq)])?;
        }
        StoreOp::SetAssembly(assembler) => {
            tx.prepare_cached("INSERT OR REPLACE INTO assemblies (hash, state) VALUES (?1, ?2)")?
                .execute(params![assembler.spec().hash.as_bytes().as_slice(), encode(assembler, "assemblies")?])?;
        }
        StoreOp::WriteChunk { module, offset, data } => {
            tx.prepare_cached("INSERT OR REPLACE INTO module_chunks (hash, offset, data) VALUES (?1, ?2, ?3)")?
                .execute(params![module.as_bytes().as_slice(), to_sql(*offset), data])?;
        }
        StoreOp::ModuleComplete(hash) => {
            tx.prepare_cached("DELETE FROM assemblies WHERE hash = ?1")?.execute([hash.as_bytes().as_slice()])?;
            tx.prepare_cached("INSERT OR IGNORE INTO modules (hash) VALUES (?1)")?
                .execute([hash.as_bytes().as_slice()])?;
        }
        StoreOp::DiscardModule(hash) => {
            let hash = hash.as_bytes().as_slice();
            tx.prepare_cached("DELETE FROM assemblies WHERE hash = ?1")?.execute([hash])?;
            tx.prepare_cached("DELETE FROM module_chunks WHERE hash = ?1")?.execute([hash])?;
            tx.prepare_cached("DELETE FROM modules WHERE hash = ?1")?.execute([hash])?;
        }
        StoreOp::SetIncarnation(incarnation) => {
            tx.prepare_cached("INSERT OR REPLACE INTO incarnation (id, value) VALUES (1, ?1)")?
                .execute([incarnation.as_bytes().as_slice()])?;
        }
    }
    Ok(())
}

/// SQLite integers are signed 64-bit: a `u64` is stored as the same 64 bits. Every
/// value stored this way is either a counter that starts at 1 (event seqs, compared in
/// SQL) or only ever read back (envelope seqs, times), so the sign never matters.
fn to_sql(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

fn from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

fn encode<T: Serialize>(value: &T, table: &'static str) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(|_| StoreError::Encode { table })
}

fn decode<T: DeserializeOwned>(bytes: &[u8], table: &'static str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|_| StoreError::Corrupt { table })
}

fn digest(bytes: Vec<u8>, table: &'static str) -> Result<Digest, StoreError> {
    Ok(Digest(bytes.try_into().map_err(|_| StoreError::Corrupt { table })?))
}

fn blobs(conn: &Connection, sql: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |row| row.get::<_, Vec<u8>>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
