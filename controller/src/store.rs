//! The controller's durable state: one SQLite database, every query in one place.
//!
//! Why SQLite: the controller must survive a crash at any point without losing or
//! repeating a decision, and `fleetctl` (a separate process) must be able to read and
//! write the same state while `serve` runs. SQLite in WAL mode gives both: concurrent
//! readers with one writer, and `synchronous=FULL` so a committed transaction survives a
//! power cut. The rule the rest of the crate follows is *store, then publish*: anything
//! decided (a sequence number, a signed envelope, a state change) is committed here
//! before it goes on the wire, so a restarted controller finds it and never signs the
//! same thing twice with different numbers.
//!
//! Migrations are a list of SQL scripts applied in order, the count kept in
//! `PRAGMA user_version` (the scheme `rusqlite_migration` uses; that crate is not used
//! because no release of it builds against rusqlite 0.41). A database written by a newer
//! controller is refused rather than guessed at.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fleet_schemas::{
    DeviceId, DeviceStatus, Digest, EventKind, ExecutionEvent, Incarnation, JobId, JobState, KeyId, PublicKey,
    Rejection,
};
use rusqlite::{Connection, OptionalExtension, Savepoint, Transaction, TransactionBehavior, params};

use crate::model::{DeviceKind, ExecState, Labels, RolloutParams, Target, job_state_str, parse_job_state};
use crate::rollout::ExecView;

/// The schema, one script per version. Never edit a script that has shipped: add one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE devices (
        id              TEXT PRIMARY KEY,
        kind            TEXT NOT NULL CHECK (kind IN ('linux', 'mcu')),
        labels          TEXT NOT NULL,           -- JSON object
        public_key      BLOB NOT NULL,           -- ed25519, 32 bytes
        password_hash   BLOB NOT NULL,           -- SHA-256 of the MQTT password
        mosquitto_hash  TEXT NOT NULL,           -- the same password as a mosquitto `$6$` entry
        status          TEXT,                    -- last DeviceStatus JSON the device published
        status_at       INTEGER,                 -- ms
        next_seq        INTEGER NOT NULL DEFAULT 1,  -- the next envelope sequence number
        acked_event_seq INTEGER NOT NULL DEFAULT 0,  -- highest contiguous event seq recorded
        created_at      INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE keys (
        key_id      TEXT PRIMARY KEY,            -- hex
        role        TEXT NOT NULL CHECK (role IN ('root', 'job')),
        public_key  BLOB NOT NULL,
        active      INTEGER NOT NULL DEFAULT 0,  -- the job key that signs now
        trusted     INTEGER NOT NULL DEFAULT 1,  -- in the set devices trust
        created_at  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE rotations (
        seq         INTEGER PRIMARY KEY,
        signed      BLOB NOT NULL,               -- SignedMessage bytes of the KeyRotation
        created_at  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE modules (
        hash   TEXT PRIMARY KEY,                 -- hex SHA-256
        bytes  BLOB NOT NULL
    ) STRICT;

    CREATE TABLE jobs (
        id               TEXT PRIMARY KEY,       -- hex
        spec             BLOB NOT NULL,          -- postcard JobSpec (inline module or chunk descriptor)
        module_hash      TEXT NOT NULL,
        module_size      INTEGER NOT NULL,
        chunked          INTEGER NOT NULL,
        entry            TEXT NOT NULL,
        target           TEXT NOT NULL,          -- JSON Target
        params           TEXT NOT NULL,          -- JSON RolloutParams
        state            TEXT NOT NULL CHECK (state IN ('in_progress', 'completed', 'aborted', 'canceled')),
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_at       INTEGER NOT NULL,
        finished_at      INTEGER
    ) STRICT;

    CREATE TABLE executions (
        job_id          TEXT NOT NULL REFERENCES jobs(id),
        device_id       TEXT NOT NULL REFERENCES devices(id),
        attempt         INTEGER NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'accepted', 'running', 'succeeded',
                                                       'failed', 'timed_out', 'rejected', 'canceled')),
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        envelope_seq    INTEGER,
        envelope        BLOB,                    -- the signed bytes, resent as they are after a restart
        sent_at         INTEGER,
        deadline        INTEGER,
        cancel_sent     INTEGER NOT NULL DEFAULT 0,
        cancel_seq      INTEGER,
        cancel_envelope BLOB,
        output          BLOB,
        logs            TEXT,                    -- JSON array of lines
        fuel_used       INTEGER,
        duration_ms     INTEGER,
        reason          TEXT,
        transient       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, device_id, attempt)
    ) STRICT;
    CREATE INDEX executions_by_state ON executions(state);

    CREATE TABLE events (
        device_id   TEXT NOT NULL,
        event_seq   INTEGER NOT NULL,
        job_id      TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        PRIMARY KEY (device_id, event_seq)
    ) STRICT;
    CREATE INDEX events_by_execution ON events(device_id, job_id, attempt, kind);

    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        detail  TEXT NOT NULL
    ) STRICT;

    CREATE TABLE counters (
        name   TEXT PRIMARY KEY,
        value  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE controller (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        info       TEXT NOT NULL,                -- JSON written by `serve`
        heartbeat  INTEGER NOT NULL
    ) STRICT;
    "#,
    // 2: what a device last said of its queue and outbox while online (its offline
    // last-will says 0 of both), and its store's incarnation (docs/protocol.md, "Store
    // resync"): the grant that answered it, resent as it is when the device asks again.
    r#"
    ALTER TABLE devices ADD COLUMN queue_depth INTEGER;
    ALTER TABLE devices ADD COLUMN outbox_depth INTEGER;
    ALTER TABLE devices ADD COLUMN depths_at INTEGER;         -- ms
    ALTER TABLE devices ADD COLUMN incarnation BLOB;          -- 16 bytes, from the device's SyncRequest
    ALTER TABLE devices ADD COLUMN sync_grant BLOB;           -- the signed SyncGrant that answered it
    ALTER TABLE devices ADD COLUMN synced_at INTEGER;         -- ms
    ALTER TABLE devices ADD COLUMN store_resets INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: removed devices (credentials and key revoked, history kept), and when a
    // device's credentials were last revoked (removed or replaced), for serve to cut off
    // its connections.
    r#"
    ALTER TABLE devices ADD COLUMN removed_at INTEGER;        -- ms
    ALTER TABLE devices ADD COLUMN revoked_at INTEGER;        -- ms
    "#,
    // 4: the operator API's tokens (only their SHA-256 is kept; see `tokens`).
    r#"
    CREATE TABLE api_tokens (
        name       TEXT PRIMARY KEY,
        role       TEXT NOT NULL,
        hash       BLOB NOT NULL UNIQUE,   -- SHA-256 of the token's text
        created_at INTEGER NOT NULL,       -- ms
        created_by TEXT NOT NULL,
        revoked_at INTEGER,                -- ms
        used_at    INTEGER                 -- ms, last request (at most once a minute)
    ) STRICT;
    "#,
    // 5: unfinished jobs found through an index. A job's row holds its spec (the inline
    // module, kilobytes, in overflow pages), and a scan for its state read every page of
    // every job ever pushed: 1 ms per reconcile at 200 jobs, on every push.
    r#"
    CREATE INDEX jobs_by_state ON jobs(state);
    "#,
    // 6: a device that logs in with a client certificate (mTLS) instead of a password:
    // the SHA-256 of the certificate's DER, which the broker looks the device up by.
    r#"
    ALTER TABLE devices ADD COLUMN cert_sha256 BLOB;
    CREATE UNIQUE INDEX devices_by_cert ON devices(cert_sha256);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused or failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer controller.
    #[error(
        "the database has schema version {found}, but this fleetctl knows only up to {SCHEMA_VERSION}; upgrade fleetctl"
    )]
    TooNew {
        /// The version found.
        found: usize,
    },
    /// The token name is taken.
    #[error("there is already a token named {0:?}")]
    TokenExists(String),
    /// No token of that name.
    #[error("no token named {0:?}")]
    NoToken(String),
    /// The device id is taken.
    #[error("device {0} is already provisioned")]
    DeviceExists(DeviceId),
    /// No device of that id.
    #[error("no device named {0:?}")]
    NoDevice(String),
    /// No job matches.
    #[error("no job matches {0:?}")]
    NoJob(String),
    /// More than one job matches a prefix.
    #[error("job id prefix {0:?} matches more than one job; give more digits")]
    AmbiguousJob(String),
    /// A row holds something this build cannot read.
    #[error("corrupt row in the database: {0}")]
    Corrupt(String),
    /// Signing inside a transaction failed.
    #[error("could not sign: {0}")]
    Sign(String),
}

impl StoreError {
    /// Whether the database refused a write for want of space or I/O (a full disk, a
    /// failing write or fsync): the write can succeed later, so `serve` holds what it
    /// could not record and tries again, instead of stopping.
    pub fn is_unwritable(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => matches!(
                error.code,
                rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen
            ),
            _ => false,
        }
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A device as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Its id.
    pub id: DeviceId,
    /// Linux gateway or microcontroller.
    pub kind: DeviceKind,
    /// Its labels.
    pub labels: Labels,
    /// The key its events are signed with.
    pub public_key: PublicKey,
    /// The last status document it published, if any.
    pub status: Option<DeviceStatus>,
    /// When that arrived, Unix ms.
    pub status_at_ms: Option<u64>,
    /// What it last reported while online: executions waiting or running, events not
    /// yet acknowledged, and when (its offline last-will reports neither).
    pub depths: Option<Depths>,
    /// Its store, as its sync requests told the controller.
    pub store: DeviceStore,
    /// When it was removed (`fleetctl device remove`): its credentials and key are
    /// revoked, its history kept.
    pub removed_at_ms: Option<u64>,
    /// The next envelope sequence number.
    pub next_seq: u64,
    /// The highest event sequence number recorded with every one before it.
    pub acked_event_seq: u64,
    /// When it was provisioned, Unix ms.
    pub created_at_ms: u64,
}

/// A device's store as the controller knows it from its sync requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceStore {
    /// The incarnation of its store (`None`: it never synced; an agent from before
    /// store resync).
    pub incarnation: Option<Incarnation>,
    /// When it last synced, Unix ms.
    pub synced_at_ms: Option<u64>,
    /// How many times its store came back empty.
    pub resets: u64,
}

/// A device's queue and outbox, as it last reported them while online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Depths {
    /// Executions waiting or running.
    pub queue: u32,
    /// Events on its storage not yet acknowledged by the controller.
    pub outbox: u32,
    /// When it reported them, Unix ms.
    pub at_ms: u64,
}

/// A device to register.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Its id.
    pub id: DeviceId,
    /// Its kind.
    pub kind: DeviceKind,
    /// Its labels.
    pub labels: Labels,
    /// Its event-signing public key.
    pub public_key: PublicKey,
    /// SHA-256 of its MQTT password.
    pub password_hash: [u8; 32],
    /// Its password as a mosquitto `passwd` entry (`$6$salt$hash`).
    pub mosquitto_hash: String,
    /// With a client certificate (mTLS): the SHA-256 of its DER.
    pub cert_sha256: Option<[u8; 32]>,
}

/// Root or job-signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs key rotations only.
    Root,
    /// Signs envelopes and acks.
    Job,
}

/// A key's public half and bookkeeping (the secret half is a file in the data dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Its id.
    pub key_id: KeyId,
    /// Root or job.
    pub role: KeyRole,
    /// The public key.
    pub public_key: PublicKey,
    /// Whether it is the job key that signs now.
    pub active: bool,
    /// Whether devices trust it.
    pub trusted: bool,
    /// When it was made, Unix ms.
    pub created_at_ms: u64,
}

/// A job as listed (without its spec and module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// Its id.
    pub id: JobId,
    /// SHA-256 of its module.
    pub module_hash: Digest,
    /// Its module's size in bytes.
    pub module_size: u64,
    /// Whether the module travels in chunks.
    pub chunked: bool,
    /// The function called.
    pub entry: String,
    /// Which devices it is for.
    pub target: Target,
    /// How it rolls out.
    pub params: RolloutParams,
    /// Its state.
    pub state: JobState,
    /// Whether the operator asked to cancel it.
    pub cancel_requested: bool,
    /// When it was pushed, Unix ms.
    pub created_at_ms: u64,
    /// When it reached its final state, Unix ms.
    pub finished_at_ms: Option<u64>,
}

/// A job to store.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id.
    pub id: JobId,
    /// The postcard encoding of its `JobSpec`.
    pub spec: Vec<u8>,
    /// SHA-256 of its module.
    pub module_hash: Digest,
    /// The module, stored apart when it travels in chunks.
    pub chunked_module: Option<Vec<u8>>,
    /// Its module's size.
    pub module_size: u64,
    /// The function called.
    pub entry: String,
    /// Which devices it is for.
    pub target: Target,
    /// How it rolls out.
    pub params: RolloutParams,
}

/// One execution, everything the store keeps about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionRow {
    /// The job.
    pub job_id: JobId,
    /// The device.
    pub device_id: DeviceId,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Where it stands.
    pub state: ExecState,
    /// When it was created, Unix ms.
    pub created_at_ms: u64,
    /// When it last changed, Unix ms.
    pub updated_at_ms: u64,
    /// The envelope's sequence number, once sent.
    pub envelope_seq: Option<u64>,
    /// When it was sent, Unix ms.
    pub sent_at_ms: Option<u64>,
    /// When it times out, Unix ms.
    pub deadline_ms: Option<u64>,
    /// Whether a cancel order was sent.
    pub cancel_sent: bool,
    /// The job's output bytes.
    pub output: Option<Vec<u8>>,
    /// The job's log lines.
    pub logs: Vec<String>,
    /// Fuel used.
    pub fuel_used: Option<u64>,
    /// Wall time on the device.
    pub duration_ms: Option<u64>,
    /// Why it failed, was rejected, timed out or was canceled.
    pub reason: Option<String>,
    /// For a rejection: whether a fresh envelope could cure it.
    pub transient: bool,
}

impl ExecutionRow {
    /// What the rollout engine needs of it.
    pub fn view(&self) -> ExecView {
        ExecView {
            device: self.device_id.clone(),
            attempt: self.attempt,
            state: self.state,
            sent_at_ms: self.sent_at_ms,
            deadline_ms: self.deadline_ms,
            cancel_sent: self.cancel_sent,
            transient: self.transient,
        }
    }
}

/// What recording an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOutcome {
    /// The event's sequence number was already recorded: nothing changed.
    pub duplicate: bool,
    /// The execution's state change, if the event changed it.
    pub transition: Option<(ExecState, ExecState)>,
    /// Whether the event names an execution the controller knows.
    pub known_execution: bool,
    /// The highest contiguous event seq now recorded for the device (what to ack).
    pub acked_through: u64,
}

/// A signed message waiting to be (re)published after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEnvelope {
    /// The device it is for.
    pub device: DeviceId,
    /// Its sequence number.
    pub seq: u64,
    /// The signed bytes.
    pub bytes: Vec<u8>,
}

/// What answering a device's sync request did ([`Store::resync_device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    /// The signed grant: publish it on the device's jobs topic before the envelopes.
    pub grant: Vec<u8>,
    /// The envelopes signed again, above the floor, for the executions still in flight:
    /// publish them after the grant, in this order.
    pub envelopes: Vec<PendingEnvelope>,
    /// Jobs whose executions ended here (a cancel the reset store never confirmed).
    pub touched: Vec<JobId>,
    /// Every envelope signed for the device before: refused by it from now on.
    pub replay_floor: u64,
    /// Every event of the device recorded: it numbers its events from here + 1.
    pub event_base: u64,
    /// The device had a store before (recorded events, or an earlier incarnation): this
    /// is a reset, not its first start.
    pub reset: bool,
    /// The request was answered before (the same incarnation): the same grant again,
    /// and nothing else changed.
    pub repeated: bool,
}

/// Signs what answering a sync request needs, inside its transaction.
pub trait ResyncSigner {
    /// The grant.
    fn grant(&mut self, replay_floor: u64, event_base: u64) -> Result<Vec<u8>, String>;
    /// A run envelope at `seq` for the stored job `spec` (its postcard `JobSpec`), valid
    /// until `deadline_ms`.
    fn run(&mut self, seq: u64, spec: &[u8], attempt: u32, deadline_ms: u64) -> Result<Vec<u8>, String>;
}

/// Counts for the metrics endpoint ([`Store::metrics_snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Devices by presence: online, offline, never seen, removed.
    pub devices: Vec<(String, u64)>,
    /// Executions (every attempt) by state.
    pub executions: Vec<(String, u64)>,
    /// Jobs by state.
    pub jobs: Vec<(String, u64)>,
    /// Rejected executions by the first word of their reason.
    pub rejections: Vec<(String, u64)>,
    /// Events recorded.
    pub events: u64,
    /// Envelopes signed (sequence numbers used).
    pub envelopes: u64,
}

/// A token to store: its name, role and hash (the text itself is never stored).
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Its name, unique.
    pub name: String,
    /// What it may do.
    pub role: crate::tokens::Role,
    /// The SHA-256 of its text ([`crate::tokens::token_hash`]).
    pub hash: [u8; 32],
}

/// A stored token (without its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRow {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: crate::tokens::Role,
    /// When it was made, Unix ms.
    pub created_at_ms: u64,
    /// Who made it.
    pub created_by: String,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<u64>,
    /// When it was last used (to the minute), if ever.
    pub used_at_ms: Option<u64>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// When, Unix ms.
    pub at_ms: u64,
    /// Who (the OS user running fleetctl, or `serve`).
    pub actor: String,
    /// What (`device.provision`, `job.push`, ...).
    pub action: String,
    /// Details, JSON.
    pub detail: String,
}

/// The database.
pub struct Store {
    conn: Connection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.conn.path()).finish()
    }
}

/// A transaction of one store operation (see [`Store::immediate`]).
enum Tx<'a> {
    Own(Transaction<'a>),
    Nested(Savepoint<'a>),
}

impl Tx<'_> {
    fn commit(self) -> Result<()> {
        match self {
            Tx::Own(tx) => {
                let started = std::time::Instant::now();
                tx.commit()?;
                crate::metrics::COMMITS.observe(started.elapsed());
            }
            Tx::Nested(sp) => sp.commit()?,
        }
        Ok(())
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Tx::Own(tx) => tx,
            Tx::Nested(sp) => sp,
        }
    }
}

const DEVICE_COLUMNS: &str = "id, kind, labels, public_key, status, status_at, next_seq, acked_event_seq, created_at, \
                              queue_depth, outbox_depth, depths_at, incarnation, synced_at, store_resets, \
                              removed_at";
const JOB_COLUMNS: &str = "id, module_hash, module_size, chunked, entry, target, params, state, cancel_requested, \
                           created_at, finished_at";
const EXEC_COLUMNS: &str = "job_id, device_id, attempt, state, created_at, updated_at, envelope_seq, sent_at, \
                            deadline, cancel_sent, output, logs, fuel_used, duration_ms, reason, transient";

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// Opens the database read-only (for the broker's authenticator, which must never
    /// write). The database must exist.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Self { conn })
    }

    fn setup(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers (fleetctl) never block the writer (serve), and the reverse.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before it returns, so "store, then publish" holds
        // across a power cut, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self { conn })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<usize> {
        let version: i64 = self.conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        Ok(usize::try_from(version).unwrap_or(0))
    }

    /// SQLite's `data_version`: changes whenever *another* connection commits. `serve`
    /// polls it to notice what `fleetctl` wrote.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self.conn.pragma_query_value(None, "data_version", |row| row.get(0))?)
    }

    /// One store operation's transaction: its own `BEGIN IMMEDIATE`, or a savepoint
    /// inside an open batch ([`Store::begin_batch`]).
    fn immediate(&mut self) -> Result<Tx<'_>> {
        if self.conn.is_autocommit() {
            Ok(Tx::Own(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?))
        } else {
            Ok(Tx::Nested(self.conn.savepoint()?))
        }
    }

    /// Opens a batch: every operation until [`Store::commit_batch`] becomes a savepoint
    /// in one transaction, so a burst of events costs one commit (one `fsync`) instead
    /// of one each. An operation that fails rolls back its own savepoint only. Nothing
    /// done in a batch is durable before the commit: whoever batches must hold back what
    /// depends on it (publishes, acks) until then.
    pub fn begin_batch(&mut self) -> Result<()> {
        if !self.conn.is_autocommit() {
            return Err(StoreError::Corrupt("a batch is already open".into()));
        }
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    /// Commits the open batch (no-op if none is open).
    pub fn commit_batch(&mut self) -> Result<()> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        if let Err(error) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(error.into());
        }
        crate::metrics::COMMITS.observe(started.elapsed());
        Ok(())
    }

    /// Rolls the open batch back (no-op if none is open): nothing of it is kept.
    pub fn rollback_batch(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Whether a batch is open.
    pub fn in_batch(&self) -> bool {
        !self.conn.is_autocommit()
    }

    // ----- devices -------------------------------------------------------------------

    /// Registers a device and records it in the audit log, in one transaction.
    pub fn insert_device(&mut self, device: &NewDevice, actor: &str, now_ms: u64) -> Result<()> {
        let tx = self.immediate()?;
        let exists: bool =
            tx.query_row("SELECT EXISTS(SELECT 1 FROM devices WHERE id = ?1)", [device.id.as_str()], |r| r.get(0))?;
        if exists {
            return Err(StoreError::DeviceExists(device.id.clone()));
        }
        let labels = serde_json::to_string(&device.labels).map_err(corrupt)?;
        tx.execute(
            "INSERT INTO devices (id, kind, labels, public_key, password_hash, mosquitto_hash, created_at, cert_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                device.id.as_str(),
                device.kind.as_str(),
                labels,
                &device.public_key.0[..],
                &device.password_hash[..],
                device.mosquitto_hash,
                to_i64(now_ms),
                device.cert_sha256.as_ref().map(|h| &h[..]),
            ],
        )?;
        let detail = serde_json::json!({
            "device": device.id.as_str(), "kind": device.kind.as_str(), "labels": device.labels,
        });
        audit_in(&tx, actor, "device.provision", &detail.to_string(), now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// One device.
    pub fn device(&self, id: &str) -> Result<Option<DeviceRow>> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1");
        let row = self.conn.query_row(&sql, [id], |row| Ok(read_device(row))).optional()?;
        row.transpose()
    }

    /// Every device, by id.
    pub fn devices(&self) -> Result<Vec<DeviceRow>> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], |row| Ok(read_device(row)))?;
        rows.map(|row| row?).collect()
    }

    /// A device's public key and password hash, for authentication and event checks.
    pub fn device_password_hash(&self, id: &str) -> Result<Option<[u8; 32]>> {
        let hash: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT password_hash FROM devices WHERE id = ?1 AND removed_at IS NULL", [id], |row| row.get(0))
            .optional()?;
        hash.map(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| corrupt("password hash length")))
            .transpose()
    }

    /// The active device whose client certificate has this SHA-256, if any.
    pub fn device_by_certificate(&self, sha256: &[u8; 32]) -> Result<Option<DeviceId>> {
        let id: Option<String> = self
            .conn
            .query_row("SELECT id FROM devices WHERE cert_sha256 = ?1 AND removed_at IS NULL", [&sha256[..]], |row| {
                row.get(0)
            })
            .optional()?;
        id.map(|id| DeviceId::new(id).map_err(corrupt)).transpose()
    }

    /// A device's event-signing public key.
    pub fn device_public_key(&self, id: &str) -> Result<Option<PublicKey>> {
        let key: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT public_key FROM devices WHERE id = ?1 AND removed_at IS NULL", [id], |row| row.get(0))
            .optional()?;
        key.map(|bytes| public_key_from(&bytes)).transpose()
    }

    /// Every device's mosquitto password entry, by id.
    pub fn mosquitto_entries(&self) -> Result<Vec<(DeviceId, String)>> {
        let mut stmt =
            self.conn.prepare("SELECT id, mosquitto_hash FROM devices WHERE removed_at IS NULL ORDER BY id")?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
        rows.map(|row| {
            let (id, hash) = row?;
            Ok((DeviceId::new(id).map_err(corrupt)?, hash))
        })
        .collect()
    }

    /// Records the status document a device published (and, from an online one, its
    /// queue and outbox depths).
    pub fn set_device_status(&mut self, id: &DeviceId, status_json: &str, now_ms: u64) -> Result<bool> {
        let depths = serde_json::from_str::<DeviceStatus>(status_json)
            .ok()
            .filter(|status| status.state == fleet_schemas::Presence::Online)
            .map(|status| (status.queue_depth, status.outbox_depth));
        let changed = match depths {
            Some((queue, outbox)) => self.conn.execute(
                "UPDATE devices SET status = ?2, status_at = ?3, queue_depth = ?4, outbox_depth = ?5, depths_at = ?3
                 WHERE id = ?1",
                params![id.as_str(), status_json, to_i64(now_ms), queue, outbox],
            )?,
            None => self.conn.execute(
                "UPDATE devices SET status = ?2, status_at = ?3 WHERE id = ?1",
                params![id.as_str(), status_json, to_i64(now_ms)],
            )?,
        };
        Ok(changed > 0)
    }

    /// The ids of the devices a target matches now, by id.
    pub fn matching_devices(&self, target: &Target) -> Result<Vec<DeviceId>> {
        Ok(self
            .devices()?
            .into_iter()
            .filter(|d| d.removed_at_ms.is_none() && target.matches(&d.id, &d.labels))
            .map(|d| d.id)
            .collect())
    }

    /// Removes a device: its credentials and key are revoked (it cannot log in, and what
    /// it still sends is not recorded), its executions not yet ended are canceled, its
    /// history is kept; audited. Returns the jobs whose executions it canceled, or
    /// `None` if it was removed already.
    pub fn remove_device(&mut self, id: &DeviceId, actor: &str, now_ms: u64) -> Result<Option<Vec<JobId>>> {
        let tx = self.immediate()?;
        let removed: Option<Option<i64>> =
            tx.query_row("SELECT removed_at FROM devices WHERE id = ?1", [id.as_str()], |row| row.get(0)).optional()?;
        match removed {
            None => return Err(StoreError::NoDevice(id.to_string())),
            Some(Some(_)) => return Ok(None),
            Some(None) => {}
        }
        let jobs: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT DISTINCT job_id FROM executions
                 WHERE device_id = ?1 AND state IN ('queued', 'sent', 'accepted', 'running')",
            )?;
            let rows = stmt.query_map([id.as_str()], |row| row.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute(
            "UPDATE executions SET state = 'canceled', reason = 'the device was removed', updated_at = ?2
             WHERE device_id = ?1 AND state IN ('queued', 'sent', 'accepted', 'running')",
            params![id.as_str(), to_i64(now_ms)],
        )?;
        tx.execute(
            "UPDATE devices SET removed_at = ?2, revoked_at = ?2 WHERE id = ?1",
            params![id.as_str(), to_i64(now_ms)],
        )?;
        let detail = serde_json::json!({ "device": id.as_str(), "canceled_jobs": jobs.len() });
        audit_in(&tx, actor, "device.remove", &detail.to_string(), now_ms)?;
        tx.commit()?;
        jobs.iter().map(|job| job.parse().map_err(corrupt)).collect::<Result<_>>().map(Some)
    }

    /// Gives a device (removed or not, a reinstall, a replacement unit) new credentials
    /// and a new key: the old ones are revoked at once, its history and envelope
    /// sequence are kept, and its store counts as new (it syncs: docs/protocol.md,
    /// "Store resync"). Audited.
    pub fn replace_device(&mut self, device: &NewDevice, actor: &str, now_ms: u64) -> Result<()> {
        let tx = self.immediate()?;
        let labels = serde_json::to_string(&device.labels).map_err(corrupt)?;
        let changed = tx.execute(
            "UPDATE devices SET kind = ?2, labels = ?3, public_key = ?4, password_hash = ?5, mosquitto_hash = ?6,
                 removed_at = NULL, revoked_at = ?7, incarnation = NULL, sync_grant = NULL, cert_sha256 = ?8
             WHERE id = ?1",
            params![
                device.id.as_str(),
                device.kind.as_str(),
                labels,
                &device.public_key.0[..],
                &device.password_hash[..],
                device.mosquitto_hash,
                to_i64(now_ms),
                device.cert_sha256.as_ref().map(|h| &h[..]),
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NoDevice(device.id.to_string()));
        }
        let detail = serde_json::json!({
            "device": device.id.as_str(), "kind": device.kind.as_str(), "labels": device.labels,
        });
        audit_in(&tx, actor, "device.replace", &detail.to_string(), now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Devices whose credentials were revoked after `since_ms` (removed or replaced),
    /// with the latest such time: serve cuts their connections off.
    pub fn revoked_since(&self, since_ms: u64) -> Result<(Vec<DeviceId>, u64)> {
        let mut stmt = self.conn.prepare("SELECT id, revoked_at FROM devices WHERE revoked_at > ?1")?;
        let rows = stmt.query_map([to_i64(since_ms)], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
        let mut ids = Vec::new();
        let mut latest = since_ms;
        for row in rows {
            let (id, at) = row?;
            ids.push(DeviceId::new(id).map_err(corrupt)?);
            latest = latest.max(to_u64(at));
        }
        Ok((ids, latest))
    }

    // ----- keys ----------------------------------------------------------------------

    /// Runs `generate` and stores the keys it returns, unless keys exist already; returns
    /// whether it did. It runs under the database's write lock, so two processes that
    /// initialise the same directory at once generate one set of keys.
    pub fn init_keys(&mut self, now_ms: u64, generate: impl FnOnce() -> Result<Vec<KeyRow>, String>) -> Result<bool> {
        let tx = self.immediate()?;
        let existing: i64 = tx.query_row("SELECT COUNT(*) FROM keys", [], |row| row.get(0))?;
        if existing > 0 {
            return Ok(false);
        }
        let rows = generate().map_err(StoreError::Sign)?;
        for key in &rows {
            tx.execute(
                "INSERT INTO keys (key_id, role, public_key, active, trusted, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    key.key_id.to_hex(),
                    role_str(key.role),
                    &key.public_key.0[..],
                    key.active,
                    key.trusted,
                    to_i64(key.created_at_ms)
                ],
            )?;
        }
        let ids: Vec<String> = rows.iter().map(|k| k.key_id.to_hex()).collect();
        audit_in(&tx, "fleetctl", "init", &serde_json::json!({ "keys": ids }).to_string(), now_ms)?;
        tx.commit()?;
        Ok(true)
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> Result<Vec<KeyRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT key_id, role, public_key, active, trusted, created_at FROM keys ORDER BY created_at, key_id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, bool>(3)?,
                row.get::<_, bool>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })?;
        rows.map(|row| {
            let (key_id, role, public_key, active, trusted, created_at) = row?;
            Ok(KeyRow {
                key_id: key_id.parse().map_err(corrupt)?,
                role: match role.as_str() {
                    "root" => KeyRole::Root,
                    "job" => KeyRole::Job,
                    other => return Err(corrupt(format!("key role {other:?}"))),
                },
                public_key: public_key_from(&public_key)?,
                active,
                trusted,
                created_at_ms: to_u64(created_at),
            })
        })
        .collect()
    }

    /// The job key that signs now.
    pub fn active_job_key(&self) -> Result<Option<KeyRow>> {
        Ok(self.keys()?.into_iter().find(|k| k.role == KeyRole::Job && k.active))
    }

    /// The root key.
    pub fn root_key(&self) -> Result<Option<KeyRow>> {
        Ok(self.keys()?.into_iter().find(|k| k.role == KeyRole::Root))
    }

    /// The job keys devices trust, oldest first.
    pub fn trusted_job_keys(&self) -> Result<Vec<KeyRow>> {
        Ok(self.keys()?.into_iter().filter(|k| k.role == KeyRole::Job && k.trusted).collect())
    }

    /// Makes `new` the active job key, trusts exactly `trusted` (which must include it),
    /// and stores the rotation that `sign(seq)` signs, in one transaction. Returns the
    /// rotation's sequence number.
    pub fn rotate_keys(
        &mut self,
        new: &KeyRow,
        trusted: &[KeyId],
        actor: &str,
        now_ms: u64,
        sign: impl FnOnce(u64) -> Result<Vec<u8>, String>,
    ) -> Result<u64> {
        let tx = self.immediate()?;
        let last: Option<i64> = tx.query_row("SELECT MAX(seq) FROM rotations", [], |row| row.get(0))?;
        let seq = to_u64(last.unwrap_or(0)) + 1;
        let signed = sign(seq).map_err(StoreError::Sign)?;
        tx.execute("UPDATE keys SET active = 0, trusted = 0 WHERE role = 'job'", [])?;
        tx.execute(
            "INSERT INTO keys (key_id, role, public_key, active, trusted, created_at) VALUES (?1, 'job', ?2, 1, 1, ?3)",
            params![new.key_id.to_hex(), &new.public_key.0[..], to_i64(now_ms)],
        )?;
        for key_id in trusted {
            tx.execute("UPDATE keys SET trusted = 1 WHERE key_id = ?1 AND role = 'job'", [key_id.to_hex()])?;
        }
        tx.execute(
            "INSERT INTO rotations (seq, signed, created_at) VALUES (?1, ?2, ?3)",
            params![to_i64(seq), signed, to_i64(now_ms)],
        )?;
        let trusted_hex: Vec<String> = trusted.iter().map(KeyId::to_hex).collect();
        let detail = serde_json::json!({ "new_key": new.key_id.to_hex(), "trusted": trusted_hex, "rotation_seq": seq });
        audit_in(&tx, actor, "key.rotate", &detail.to_string(), now_ms)?;
        tx.commit()?;
        Ok(seq)
    }

    /// The newest key rotation: its sequence number and signed bytes.
    pub fn latest_rotation(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let row = self
            .conn
            .query_row("SELECT seq, signed FROM rotations ORDER BY seq DESC LIMIT 1", [], |row| {
                Ok((to_u64(row.get(0)?), row.get(1)?))
            })
            .optional()?;
        Ok(row)
    }

    // ----- jobs ----------------------------------------------------------------------

    /// Stores a job with a first attempt queued for each target device, and records it
    /// in the audit log, in one transaction.
    pub fn insert_job(&mut self, job: &NewJob, targets: &[DeviceId], actor: &str, now_ms: u64) -> Result<()> {
        let tx = self.immediate()?;
        if let Some(module) = &job.chunked_module {
            tx.execute(
                "INSERT OR IGNORE INTO modules (hash, bytes) VALUES (?1, ?2)",
                params![job.module_hash.to_hex(), module],
            )?;
        }
        tx.execute(
            "INSERT INTO jobs (id, spec, module_hash, module_size, chunked, entry, target, params, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'in_progress', ?9)",
            params![
                job.id.to_hex(),
                job.spec,
                job.module_hash.to_hex(),
                to_i64(job.module_size),
                job.chunked_module.is_some(),
                job.entry,
                serde_json::to_string(&job.target).map_err(corrupt)?,
                serde_json::to_string(&job.params).map_err(corrupt)?,
                to_i64(now_ms)
            ],
        )?;
        for device in targets {
            enqueue_in(&tx, &job.id, device, 1, now_ms)?;
        }
        let detail = serde_json::json!({
            "job": job.id.to_hex(), "target": job.target.to_string(), "devices": targets.len(),
            "module_hash": job.module_hash.to_hex(), "module_size": job.module_size, "params": job.params,
        });
        audit_in(&tx, actor, "job.push", &detail.to_string(), now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Result<Vec<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, rowid DESC");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], |row| Ok(read_job(row)))?;
        rows.map(|row| row?).collect()
    }

    /// One job.
    pub fn job(&self, id: &JobId) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        let row = self.conn.query_row(&sql, [id.to_hex()], |row| Ok(read_job(row))).optional()?;
        row.transpose()
    }

    /// The job whose hex id is `text` or starts with it.
    pub fn resolve_job(&self, text: &str) -> Result<JobId> {
        let prefix = text.trim().to_ascii_lowercase();
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StoreError::NoJob(text.to_string()));
        }
        let mut stmt = self.conn.prepare("SELECT id FROM jobs WHERE substr(id, 1, ?2) = ?1 LIMIT 2")?;
        let ids: Vec<String> = stmt
            .query_map(params![prefix, to_i64(prefix.len() as u64)], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        match ids.as_slice() {
            [one] => one.parse().map_err(corrupt),
            [] => Err(StoreError::NoJob(text.to_string())),
            _ => Err(StoreError::AmbiguousJob(text.to_string())),
        }
    }

    /// The postcard `JobSpec` of a job.
    pub fn job_spec(&self, id: &JobId) -> Result<Vec<u8>> {
        self.conn
            .query_row("SELECT spec FROM jobs WHERE id = ?1", [id.to_hex()], |row| row.get(0))
            .optional()?
            .ok_or_else(|| StoreError::NoJob(id.to_hex()))
    }

    /// A chunked module's bytes.
    pub fn module_bytes(&self, hash: &Digest) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT bytes FROM modules WHERE hash = ?1", [hash.to_hex()], |row| row.get(0))
            .optional()?)
    }

    /// The jobs `serve` must drive: in progress, or with executions not yet ended.
    pub fn jobs_to_drive(&self) -> Result<Vec<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id IN (
                 SELECT id FROM jobs WHERE state = 'in_progress'
                 UNION
                 SELECT job_id FROM executions WHERE state IN ('queued', 'sent', 'accepted', 'running'))
             ORDER BY created_at, rowid"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], |row| Ok(read_job(row)))?;
        rows.map(|row| row?).collect()
    }

    /// Asks `serve` to cancel a job. Returns `false` if the job had already finished.
    pub fn request_cancel(&mut self, id: &JobId, actor: &str, now_ms: u64) -> Result<bool> {
        let tx = self.immediate()?;
        let changed =
            tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'in_progress'", [id.to_hex()])?;
        if changed > 0 {
            audit_in(&tx, actor, "job.cancel", &serde_json::json!({ "job": id.to_hex() }).to_string(), now_ms)?;
        }
        tx.commit()?;
        Ok(changed > 0)
    }

    /// Moves a job to a final state (only from in progress).
    pub fn finish_job(&mut self, id: &JobId, state: JobState, now_ms: u64) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE jobs SET state = ?2, finished_at = ?3 WHERE id = ?1 AND state = 'in_progress'",
            params![id.to_hex(), job_state_str(state), to_i64(now_ms)],
        )?;
        Ok(changed > 0)
    }

    // ----- executions ----------------------------------------------------------------

    /// Every execution of a job, every attempt, in creation order.
    pub fn executions(&self, job: &JobId) -> Result<Vec<ExecutionRow>> {
        let sql = format!("SELECT {EXEC_COLUMNS} FROM executions WHERE job_id = ?1 ORDER BY rowid");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([job.to_hex()], |row| Ok(read_execution(row)))?;
        rows.map(|row| row?).collect()
    }

    /// The rollout engine's view of a job's executions, in creation order. Reads only
    /// the columns the engine needs (not outputs and logs): the controller plans a job
    /// every time its executions change, and a job can have 100,000 of them.
    pub fn exec_views(&self, job: &JobId) -> Result<Vec<ExecView>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT device_id, attempt, state, sent_at, deadline, cancel_sent, transient \
             FROM executions WHERE job_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([job.to_hex()], |row| {
            let device: String = row.get(0)?;
            let state: String = row.get(2)?;
            Ok((device, row.get::<_, u32>(1)?, state, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
        })?;
        rows.map(|row| {
            let (device, attempt, state, sent_at, deadline, cancel_sent, transient): (
                String,
                u32,
                String,
                Option<i64>,
                Option<i64>,
                bool,
                bool,
            ) = row?;
            Ok(ExecView {
                device: DeviceId::new(device).map_err(corrupt)?,
                attempt,
                state: state.parse().map_err(corrupt)?,
                sent_at_ms: sent_at.map(to_u64),
                deadline_ms: deadline.map(to_u64),
                cancel_sent,
                transient,
            })
        })
        .collect()
    }

    /// Creates a queued execution (no-op if it exists).
    pub fn enqueue(&mut self, job: &JobId, device: &DeviceId, attempt: u32, now_ms: u64) -> Result<bool> {
        let tx = self.immediate()?;
        let created = enqueue_in(&tx, job, device, attempt, now_ms)?;
        tx.commit()?;
        Ok(created)
    }

    /// Sends a queued execution: in one transaction, takes the device's next sequence
    /// number, has `sign(seq)` sign the envelope, and stores the bytes with the state
    /// `sent` and the deadline. Returns the signed bytes to publish, or `None` if the
    /// execution was not queued (someone else sent or canceled it).
    pub fn send_execution(
        &mut self,
        job: &JobId,
        device: &DeviceId,
        attempt: u32,
        now_ms: u64,
        deadline_ms: u64,
        sign: impl FnOnce(u64) -> Result<Vec<u8>, String>,
    ) -> Result<Option<PendingEnvelope>> {
        let tx = self.immediate()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM executions WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
                params![job.to_hex(), device.as_str(), attempt],
                |row| row.get(0),
            )
            .optional()?;
        if state.as_deref() != Some(ExecState::Queued.as_str()) {
            return Ok(None);
        }
        let seq = take_seq(&tx, device)?;
        let bytes = sign(seq).map_err(StoreError::Sign)?;
        tx.execute(
            "UPDATE executions SET state = 'sent', envelope_seq = ?4, envelope = ?5, sent_at = ?6, deadline = ?7,
                 updated_at = ?6
             WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
            params![job.to_hex(), device.as_str(), attempt, to_i64(seq), bytes, to_i64(now_ms), to_i64(deadline_ms)],
        )?;
        tx.commit()?;
        Ok(Some(PendingEnvelope { device: device.clone(), seq, bytes }))
    }

    /// Records a cancel order for an in-flight execution, signed by `sign(seq)` with the
    /// device's next sequence number. `None` if it is not in flight or already has one.
    pub fn send_cancel(
        &mut self,
        job: &JobId,
        device: &DeviceId,
        attempt: u32,
        now_ms: u64,
        sign: impl FnOnce(u64) -> Result<Vec<u8>, String>,
    ) -> Result<Option<PendingEnvelope>> {
        let tx = self.immediate()?;
        let row: Option<(String, bool)> = tx
            .query_row(
                "SELECT state, cancel_sent FROM executions WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
                params![job.to_hex(), device.as_str(), attempt],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let in_flight = match &row {
            Some((state, false)) => state.parse::<ExecState>().map_err(corrupt)?.is_in_flight(),
            _ => false,
        };
        if !in_flight {
            return Ok(None);
        }
        let seq = take_seq(&tx, device)?;
        let bytes = sign(seq).map_err(StoreError::Sign)?;
        tx.execute(
            "UPDATE executions SET cancel_sent = 1, cancel_seq = ?4, cancel_envelope = ?5, updated_at = ?6
             WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
            params![job.to_hex(), device.as_str(), attempt, to_i64(seq), bytes, to_i64(now_ms)],
        )?;
        tx.commit()?;
        Ok(Some(PendingEnvelope { device: device.clone(), seq, bytes }))
    }

    /// Marks an in-flight execution timed out. `false` if it was not in flight.
    pub fn time_out(&mut self, job: &JobId, device: &DeviceId, attempt: u32, now_ms: u64) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE executions SET state = 'timed_out', reason = 'no result before the deadline', updated_at = ?4
             WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3 AND state IN ('sent', 'accepted', 'running')",
            params![job.to_hex(), device.as_str(), attempt, to_i64(now_ms)],
        )?;
        Ok(changed > 0)
    }

    /// Marks a queued execution canceled. `false` if it was not queued.
    pub fn cancel_queued(&mut self, job: &JobId, device: &DeviceId, attempt: u32, now_ms: u64) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE executions SET state = 'canceled', reason = 'canceled before it was sent', updated_at = ?4
             WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3 AND state = 'queued'",
            params![job.to_hex(), device.as_str(), attempt, to_i64(now_ms)],
        )?;
        Ok(changed > 0)
    }

    /// The signed envelopes and cancel orders of executions the device has not answered
    /// yet, per device in sequence order: what a restarted `serve` publishes again (the
    /// same bytes, so the agent's sequence check makes a second copy harmless).
    pub fn unanswered_envelopes(&self) -> Result<Vec<PendingEnvelope>> {
        self.unanswered(None)
    }

    /// [`Store::unanswered_envelopes`] of one device.
    pub fn unanswered_envelopes_for(&self, device: &DeviceId) -> Result<Vec<PendingEnvelope>> {
        self.unanswered(Some(device))
    }

    fn unanswered(&self, device: Option<&DeviceId>) -> Result<Vec<PendingEnvelope>> {
        let mut stmt = self.conn.prepare(
            "SELECT device_id, envelope_seq, envelope FROM executions
                 WHERE state = 'sent' AND envelope IS NOT NULL AND envelope_seq IS NOT NULL
                   AND (?1 IS NULL OR device_id = ?1)
             UNION ALL
             SELECT device_id, cancel_seq, cancel_envelope FROM executions
                 WHERE cancel_sent = 1 AND cancel_envelope IS NOT NULL AND cancel_seq IS NOT NULL
                   AND state IN ('sent', 'accepted', 'running')
                   AND (?1 IS NULL OR device_id = ?1)
             ORDER BY 1, 2",
        )?;
        let rows = stmt.query_map([device.map(DeviceId::as_str)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?, row.get::<_, Vec<u8>>(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (device, seq, bytes) = row?;
            out.push(PendingEnvelope {
                device: DeviceId::new(device).map_err(corrupt)?,
                seq: seq.map_or(0, to_u64),
                bytes,
            });
        }
        Ok(out)
    }

    // ----- store resync ---------------------------------------------------------------

    /// Answers the sync request of a device whose store is new (`fleet_schemas::sync`),
    /// in one transaction: the replay floor is the last seq signed for the device, the
    /// event base the highest event seq recorded for it (and its ack moves there: the
    /// events in between died with its store); every execution still in flight is signed
    /// again above the floor (one the operator asked to cancel ends `canceled` instead);
    /// the grant and the incarnation it answers are stored, so the same request gets the
    /// same grant again. A reset (not the device's first start) is counted on the device
    /// and in the audit log.
    pub fn resync_device(
        &mut self,
        device: &DeviceId,
        incarnation: &Incarnation,
        now_ms: u64,
        signer: &mut dyn ResyncSigner,
    ) -> Result<Resync> {
        let tx = self.immediate()?;
        /// The device's incarnation and grant on record, its next seq, its acked seq.
        type SyncRow = (Option<Vec<u8>>, Option<Vec<u8>>, i64, i64);
        let row: Option<SyncRow> = tx
            .query_row(
                "SELECT incarnation, sync_grant, next_seq, acked_event_seq FROM devices WHERE id = ?1",
                [device.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?;
        let Some((known, stored_grant, next_seq, acked)) = row else {
            return Err(StoreError::NoDevice(device.to_string()));
        };
        if let (Some(known), Some(grant)) = (&known, stored_grant)
            && known.as_slice() == incarnation.as_bytes()
        {
            tx.commit()?;
            return Ok(Resync {
                grant,
                envelopes: Vec::new(),
                touched: Vec::new(),
                replay_floor: to_u64(next_seq).saturating_sub(1),
                event_base: to_u64(acked),
                reset: false,
                repeated: true,
            });
        }
        let replay_floor = to_u64(next_seq).saturating_sub(1);
        let max_event: Option<i64> =
            tx.query_row("SELECT MAX(event_seq) FROM events WHERE device_id = ?1", [device.as_str()], |r| r.get(0))?;
        let event_base = to_u64(max_event.unwrap_or(0)).max(to_u64(acked));
        let reset = known.is_some() || event_base > 0;

        /// An execution in flight: job, attempt, deadline, whether it is being
        /// canceled, and the job's stored spec.
        type InFlight = (String, u32, Option<i64>, bool, Vec<u8>);
        let in_flight: Vec<InFlight> = {
            let mut stmt = tx.prepare(
                "SELECT e.job_id, e.attempt, e.deadline, (e.cancel_sent = 1 OR j.cancel_requested = 1), j.spec
                 FROM executions e JOIN jobs j ON j.id = e.job_id
                 WHERE e.device_id = ?1 AND e.state IN ('sent', 'accepted', 'running')
                 ORDER BY e.envelope_seq",
            )?;
            let rows = stmt.query_map([device.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut envelopes = Vec::new();
        let mut touched = Vec::new();
        for (job, attempt, deadline, canceling, spec) in in_flight {
            let job_id: JobId = job.parse().map_err(corrupt)?;
            if canceling {
                tx.execute(
                    "UPDATE executions SET state = 'canceled', updated_at = ?4,
                         reason = 'canceled; the device''s store was reset before it confirmed the cancel'
                     WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
                    params![job, device.as_str(), attempt, to_i64(now_ms)],
                )?;
                touched.push(job_id);
                continue;
            }
            let seq = take_seq(&tx, device)?;
            let deadline_ms = deadline.map_or(now_ms, to_u64);
            let bytes = signer.run(seq, &spec, attempt, deadline_ms).map_err(StoreError::Sign)?;
            tx.execute(
                "UPDATE executions SET envelope_seq = ?4, envelope = ?5, updated_at = ?6
                 WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
                params![job, device.as_str(), attempt, to_i64(seq), bytes, to_i64(now_ms)],
            )?;
            envelopes.push(PendingEnvelope { device: device.clone(), seq, bytes });
        }
        let grant = signer.grant(replay_floor, event_base).map_err(StoreError::Sign)?;
        tx.execute(
            "UPDATE devices SET acked_event_seq = ?2, incarnation = ?3, sync_grant = ?4, synced_at = ?5,
                 store_resets = store_resets + ?6
             WHERE id = ?1",
            params![
                device.as_str(),
                to_i64(event_base),
                incarnation.as_bytes().as_slice(),
                grant,
                to_i64(now_ms),
                i64::from(reset)
            ],
        )?;
        if reset {
            let detail = serde_json::json!({
                "device": device.as_str(), "incarnation": incarnation.to_hex(), "replay_floor": replay_floor,
                "event_base": event_base, "signed_again": envelopes.len(), "canceled": touched.len(),
            });
            audit_in(&tx, "serve", "device.store_reset", &detail.to_string(), now_ms)?;
        }
        tx.commit()?;
        Ok(Resync { grant, envelopes, touched, replay_floor, event_base, reset, repeated: false })
    }

    // ----- events --------------------------------------------------------------------

    /// Records a verified event and applies it to its execution, in one transaction:
    /// a sequence number seen before changes nothing; an event of a kind the execution
    /// already had changes nothing; a terminal execution never changes.
    pub fn record_event(&mut self, event: &ExecutionEvent, now_ms: u64) -> Result<EventOutcome> {
        let tx = self.immediate()?;
        let device = event.key.device_id.as_str();
        let job = event.key.job_id.to_hex();
        let kind = crate::ingest::kind_name(&event.kind);
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO events (device_id, event_seq, job_id, attempt, kind, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![device, to_i64(event.event_seq), job, event.key.attempt, kind, to_i64(now_ms)],
        )?;
        if inserted == 0 {
            let acked = acked_seq(&tx, device)?;
            tx.commit()?;
            return Ok(EventOutcome { duplicate: true, transition: None, known_execution: true, acked_through: acked });
        }
        let current: Option<String> = tx
            .query_row(
                "SELECT state FROM executions WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
                params![job, device, event.key.attempt],
                |row| row.get(0),
            )
            .optional()?;
        let known_execution = current.is_some();
        let mut transition = None;
        if let Some(current) = current {
            let current: ExecState = current.parse().map_err(corrupt)?;
            let seen_kind: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM events WHERE device_id = ?1 AND job_id = ?2 AND attempt = ?3
                     AND kind = ?4 AND event_seq <> ?5)",
                params![device, job, event.key.attempt, kind, to_i64(event.event_seq)],
                |row| row.get(0),
            )?;
            let next = if seen_kind { None } else { crate::ingest::transition(current, &event.kind) };
            if let Some(next) = next {
                apply_event_in(&tx, event, next, now_ms)?;
                transition = Some((current, next));
            }
        }
        let acked = advance_ack(&tx, device)?;
        tx.commit()?;
        Ok(EventOutcome { duplicate: false, transition, known_execution, acked_through: acked })
    }

    /// The highest contiguous event seq recorded for a device.
    pub fn acked_through(&self, device: &DeviceId) -> Result<u64> {
        acked_seq(&self.conn, device.as_str())
    }

    /// How many events of a device are recorded.
    pub fn event_count(&self, device: &DeviceId) -> Result<u64> {
        let n: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM events WHERE device_id = ?1", [device.as_str()], |r| r.get(0))?;
        Ok(to_u64(n))
    }

    // ----- audit, counters, controller ----------------------------------------------

    /// Stores a new API token (its hash) and audits it.
    pub fn insert_token(&mut self, token: &NewToken, actor: &str, now_ms: u64) -> Result<()> {
        let tx = self.immediate()?;
        let taken: Option<i64> =
            tx.query_row("SELECT 1 FROM api_tokens WHERE name = ?1", [&token.name], |row| row.get(0)).optional()?;
        if taken.is_some() {
            return Err(StoreError::TokenExists(token.name.clone()));
        }
        tx.execute(
            "INSERT INTO api_tokens (name, role, hash, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token.name, token.role.as_str(), &token.hash[..], to_i64(now_ms), actor],
        )?;
        audit_in(&tx, actor, "token.create", &format!("{} ({})", token.name, token.role), now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Sets the token `name` to `hash` and `role`, live, whatever it was before: the
    /// local admin token `serve` makes for `fleetctl` on its own machine.
    pub fn set_token(&mut self, token: &NewToken, actor: &str, now_ms: u64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO api_tokens (name, role, hash, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, hash = excluded.hash,
                 created_at = excluded.created_at, created_by = excluded.created_by, revoked_at = NULL",
            params![token.name, token.role.as_str(), &token.hash[..], to_i64(now_ms), actor],
        )?;
        Ok(())
    }

    /// Every token, revoked ones too, by name.
    pub fn tokens(&self) -> Result<Vec<TokenRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, role, created_at, created_by, revoked_at, used_at FROM api_tokens ORDER BY name")?;
        let rows = stmt.query_map([], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The live (not revoked) token whose text hashes to `hash`.
    pub fn token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<TokenRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, role, created_at, created_by, revoked_at, used_at FROM api_tokens
                 WHERE hash = ?1 AND revoked_at IS NULL",
                [&hash[..]],
                token_row,
            )
            .optional()?)
    }

    /// Revokes a token at once (every request with it is refused from now on); false if
    /// it was revoked already.
    pub fn revoke_token(&mut self, name: &str, actor: &str, now_ms: u64) -> Result<bool> {
        let tx = self.immediate()?;
        let revoked: Option<Option<i64>> =
            tx.query_row("SELECT revoked_at FROM api_tokens WHERE name = ?1", [name], |row| row.get(0)).optional()?;
        let Some(revoked) = revoked else { return Err(StoreError::NoToken(name.to_string())) };
        if revoked.is_some() {
            return Ok(false);
        }
        tx.execute("UPDATE api_tokens SET revoked_at = ?2 WHERE name = ?1", params![name, to_i64(now_ms)])?;
        audit_in(&tx, actor, "token.revoke", name, now_ms)?;
        tx.commit()?;
        Ok(true)
    }

    /// Notes that a token was used (the caller does it at most once a minute per token).
    pub fn touch_token(&mut self, name: &str, now_ms: u64) -> Result<()> {
        self.conn.execute("UPDATE api_tokens SET used_at = ?2 WHERE name = ?1", params![name, to_i64(now_ms)])?;
        Ok(())
    }

    /// Changes a device's labels (a continuous job's selector sees the new ones).
    pub fn set_device_labels(&mut self, id: &DeviceId, labels: &Labels, actor: &str, now_ms: u64) -> Result<()> {
        let tx = self.immediate()?;
        let text = crate::model::format_labels(labels);
        let changed = tx.execute(
            "UPDATE devices SET labels = ?2 WHERE id = ?1 AND removed_at IS NULL",
            params![id.as_str(), serde_json::to_string(labels).map_err(corrupt)?],
        )?;
        if changed == 0 {
            return Err(StoreError::NoDevice(id.to_string()));
        }
        audit_in(&tx, actor, "device.labels", &format!("{id} {text}"), now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// What the metrics endpoint reports from the store: devices, executions, jobs by
    /// state; rejections by reason (its first word, so the label stays bounded); events
    /// recorded; envelopes signed.
    pub fn metrics_snapshot(&self) -> Result<MetricsSnapshot> {
        let group = |sql: &str| -> Result<Vec<(String, u64)>> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, to_u64(row.get(1)?))))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        let devices = group(
            "SELECT CASE WHEN removed_at IS NOT NULL THEN 'removed'
                         WHEN status IS NULL THEN 'never seen'
                         ELSE COALESCE(json_extract(status, '$.state'), 'unknown') END AS presence,
                    COUNT(*)
             FROM devices GROUP BY presence ORDER BY presence",
        )?;
        let executions = group("SELECT state, COUNT(*) FROM executions GROUP BY state ORDER BY state")?;
        let jobs = group("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")?;
        let mut rejections: BTreeMap<String, u64> = BTreeMap::new();
        for (reason, n) in
            group("SELECT COALESCE(reason, ''), COUNT(*) FROM executions WHERE state = 'rejected' GROUP BY reason")?
        {
            let word: String = reason
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .find(|w| !w.is_empty())
                .unwrap_or("unknown")
                .chars()
                .take(32)
                .collect();
            *rejections.entry(word).or_default() += n;
        }
        let events = to_u64(self.conn.query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))?);
        let envelopes =
            to_u64(self.conn.query_row("SELECT COALESCE(SUM(next_seq - 1), 0) FROM devices", [], |row| row.get(0))?);
        Ok(MetricsSnapshot {
            devices,
            executions,
            jobs,
            rejections: rejections.into_iter().collect(),
            events,
            envelopes,
        })
    }

    /// Records an operator action.
    pub fn audit(&mut self, actor: &str, action: &str, detail: &str, now_ms: u64) -> Result<()> {
        audit_in(&self.conn, actor, action, detail, now_ms)
    }

    /// The audit log, newest first.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let mut stmt = self.conn.prepare("SELECT at, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit], |row| {
            Ok(AuditEntry { at_ms: to_u64(row.get(0)?), actor: row.get(1)?, action: row.get(2)?, detail: row.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds to named counters.
    pub fn add_counters(&mut self, deltas: &BTreeMap<String, u64>) -> Result<()> {
        let tx = self.immediate()?;
        for (name, delta) in deltas {
            tx.execute(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                params![name, to_i64(*delta)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every counter.
    pub fn counters(&self) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self.conn.prepare("SELECT name, value FROM counters ORDER BY name")?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, to_u64(row.get(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records what the running `serve` says about itself (a heartbeat).
    pub fn set_controller_info(&mut self, info: &str, now_ms: u64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO controller (id, info, heartbeat) VALUES (1, ?1, ?2)
             ON CONFLICT(id) DO UPDATE SET info = excluded.info, heartbeat = excluded.heartbeat",
            params![info, to_i64(now_ms)],
        )?;
        Ok(())
    }

    /// What the last `serve` wrote about itself, and when.
    pub fn controller_info(&self) -> Result<Option<(String, u64)>> {
        Ok(self
            .conn
            .query_row("SELECT info, heartbeat FROM controller WHERE id = 1", [], |row| {
                Ok((row.get(0)?, to_u64(row.get(1)?)))
            })
            .optional()?)
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    // The common case, a database already at this version, is checked without a write
    // lock: every fleetctl command opens the store, and a read (`job status` while
    // `serve` is busy) must not queue behind writers for it.
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if usize::try_from(current).is_ok_and(|current| current == MIGRATIONS.len()) {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(StoreError::TooNew { found: current });
    }
    for script in &MIGRATIONS[current..] {
        tx.execute_batch(script)?;
    }
    if current < MIGRATIONS.len() {
        tx.pragma_update(None, "user_version", to_i64(MIGRATIONS.len() as u64))?;
    }
    tx.commit()?;
    Ok(())
}

fn token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    let role: String = row.get(1)?;
    Ok(TokenRow {
        name: row.get(0)?,
        role: role
            .parse()
            .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into()))?,
        created_at_ms: to_u64(row.get(2)?),
        created_by: row.get(3)?,
        revoked_at_ms: row.get::<_, Option<i64>>(4)?.map(to_u64),
        used_at_ms: row.get::<_, Option<i64>>(5)?.map(to_u64),
    })
}

fn audit_in(conn: &Connection, actor: &str, action: &str, detail: &str, now_ms: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO audit (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        params![to_i64(now_ms), actor, action, detail],
    )?;
    Ok(())
}

fn enqueue_in(conn: &Connection, job: &JobId, device: &DeviceId, attempt: u32, now_ms: u64) -> Result<bool> {
    let created = conn.execute(
        "INSERT OR IGNORE INTO executions (job_id, device_id, attempt, state, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
        params![job.to_hex(), device.as_str(), attempt, to_i64(now_ms)],
    )?;
    Ok(created > 0)
}

fn take_seq(conn: &Connection, device: &DeviceId) -> Result<u64> {
    let seq: Option<i64> = conn
        .query_row(
            "UPDATE devices SET next_seq = next_seq + 1 WHERE id = ?1 RETURNING next_seq - 1",
            [device.as_str()],
            |row| row.get(0),
        )
        .optional()?;
    seq.map(to_u64).ok_or_else(|| StoreError::NoDevice(device.to_string()))
}

fn acked_seq(conn: &Connection, device: &str) -> Result<u64> {
    let seq: Option<i64> =
        conn.query_row("SELECT acked_event_seq FROM devices WHERE id = ?1", [device], |row| row.get(0)).optional()?;
    Ok(seq.map_or(0, to_u64))
}

fn advance_ack(conn: &Connection, device: &str) -> Result<u64> {
    let mut acked = acked_seq(conn, device)?;
    let start = acked;
    loop {
        let next: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM events WHERE device_id = ?1 AND event_seq = ?2)",
            params![device, to_i64(acked + 1)],
            |row| row.get(0),
        )?;
        if !next {
            break;
        }
        acked += 1;
    }
    if acked != start {
        conn.execute("UPDATE devices SET acked_event_seq = ?2 WHERE id = ?1", params![device, to_i64(acked)])?;
    }
    Ok(acked)
}

fn apply_event_in(conn: &Connection, event: &ExecutionEvent, next: ExecState, now_ms: u64) -> Result<()> {
    let key = (event.key.job_id.to_hex(), event.key.device_id.as_str(), event.key.attempt);
    let (report, reason, transient) = match &event.kind {
        EventKind::Succeeded(report) => (Some(report), None, false),
        EventKind::Failed { reason, message, report } => {
            (Some(report), Some(format!("{}: {message}", crate::ingest::fail_reason_name(*reason))), false)
        }
        EventKind::Rejected { reason } => (None, Some(reason.to_string()), rejection_is_transient(reason)),
        EventKind::Canceled => (None, Some("canceled on the device".to_string()), false),
        EventKind::Accepted | EventKind::Started => (None, None, false),
    };
    conn.execute(
        "UPDATE executions SET state = ?4, updated_at = ?5, reason = COALESCE(?6, reason), transient = ?7
         WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
        params![key.0, key.1, key.2, next.as_str(), to_i64(now_ms), reason, transient],
    )?;
    if let Some(report) = report {
        conn.execute(
            "UPDATE executions SET output = ?4, logs = ?5, fuel_used = ?6, duration_ms = ?7
             WHERE job_id = ?1 AND device_id = ?2 AND attempt = ?3",
            params![
                key.0,
                key.1,
                key.2,
                report.output,
                serde_json::to_string(&report.logs).map_err(corrupt)?,
                to_i64(report.fuel_used),
                report.duration_ms
            ],
        )?;
    }
    Ok(())
}

/// Whether a fresh envelope (new sequence number, new signature, new validity window)
/// could cure a rejection, so that a retry makes sense.
pub fn rejection_is_transient(reason: &Rejection) -> bool {
    matches!(
        reason,
        Rejection::Replayed { .. }
            | Rejection::Expired { .. }
            | Rejection::NotYetValid { .. }
            | Rejection::QueueFull { .. }
    )
}

fn role_str(role: KeyRole) -> &'static str {
    match role {
        KeyRole::Root => "root",
        KeyRole::Job => "job",
    }
}

fn public_key_from(bytes: &[u8]) -> Result<PublicKey> {
    <[u8; 32]>::try_from(bytes).map(PublicKey).map_err(|_| corrupt("public key length"))
}

fn read_device(row: &rusqlite::Row<'_>) -> Result<DeviceRow> {
    let id: String = row.get(0)?;
    let kind: String = row.get(1)?;
    let labels: String = row.get(2)?;
    let public_key: Vec<u8> = row.get(3)?;
    let status: Option<String> = row.get(4)?;
    let status_at: Option<i64> = row.get(5)?;
    Ok(DeviceRow {
        id: DeviceId::new(id).map_err(corrupt)?,
        kind: kind.parse().map_err(corrupt)?,
        labels: serde_json::from_str(&labels).map_err(corrupt)?,
        public_key: public_key_from(&public_key)?,
        // A status that no longer parses (written by another version) is shown as none.
        status: status.and_then(|json| serde_json::from_str(&json).ok()),
        status_at_ms: status_at.map(to_u64),
        next_seq: to_u64(row.get(6)?),
        acked_event_seq: to_u64(row.get(7)?),
        created_at_ms: to_u64(row.get(8)?),
        depths: match (row.get::<_, Option<u32>>(9)?, row.get::<_, Option<u32>>(10)?, row.get::<_, Option<i64>>(11)?) {
            (Some(queue), Some(outbox), Some(at)) => Some(Depths { queue, outbox, at_ms: to_u64(at) }),
            _ => None,
        },
        store: DeviceStore {
            incarnation: row
                .get::<_, Option<Vec<u8>>>(12)?
                .map(|bytes| {
                    <[u8; 16]>::try_from(bytes.as_slice()).map(Incarnation).map_err(|_| corrupt("incarnation"))
                })
                .transpose()?,
            synced_at_ms: row.get::<_, Option<i64>>(13)?.map(to_u64),
            resets: to_u64(row.get(14)?),
        },
        removed_at_ms: row.get::<_, Option<i64>>(15)?.map(to_u64),
    })
}

fn read_job(row: &rusqlite::Row<'_>) -> Result<JobRow> {
    let id: String = row.get(0)?;
    let module_hash: String = row.get(1)?;
    let target: String = row.get(5)?;
    let params: String = row.get(6)?;
    let state: String = row.get(7)?;
    Ok(JobRow {
        id: id.parse().map_err(corrupt)?,
        module_hash: module_hash.parse().map_err(corrupt)?,
        module_size: to_u64(row.get(2)?),
        chunked: row.get(3)?,
        entry: row.get(4)?,
        target: serde_json::from_str(&target).map_err(corrupt)?,
        params: serde_json::from_str(&params).map_err(corrupt)?,
        state: parse_job_state(&state).map_err(corrupt)?,
        cancel_requested: row.get(8)?,
        created_at_ms: to_u64(row.get(9)?),
        finished_at_ms: row.get::<_, Option<i64>>(10)?.map(to_u64),
    })
}

fn read_execution(row: &rusqlite::Row<'_>) -> Result<ExecutionRow> {
    let job: String = row.get(0)?;
    let device: String = row.get(1)?;
    let state: String = row.get(3)?;
    let logs: Option<String> = row.get(11)?;
    Ok(ExecutionRow {
        job_id: job.parse().map_err(corrupt)?,
        device_id: DeviceId::new(device).map_err(corrupt)?,
        attempt: row.get(2)?,
        state: state.parse().map_err(corrupt)?,
        created_at_ms: to_u64(row.get(4)?),
        updated_at_ms: to_u64(row.get(5)?),
        envelope_seq: row.get::<_, Option<i64>>(6)?.map(to_u64),
        sent_at_ms: row.get::<_, Option<i64>>(7)?.map(to_u64),
        deadline_ms: row.get::<_, Option<i64>>(8)?.map(to_u64),
        cancel_sent: row.get(9)?,
        output: row.get(10)?,
        logs: match logs {
            Some(json) => serde_json::from_str(&json).map_err(corrupt)?,
            None => Vec::new(),
        },
        fuel_used: row.get::<_, Option<i64>>(12)?.map(to_u64),
        duration_ms: row.get::<_, Option<i64>>(13)?.map(to_u64),
        reason: row.get(14)?,
        transient: row.get(15)?,
    })
}
