//! The data directory: the database and the secrets, laid out so that a backup is one
//! `cp -a` and a leak is one `chmod` away from being impossible.
//!
//! ```text
//! fleet-data/                 0700
//!   fleet.db (+ -wal, -shm)   the store
//!   root.key                  0600  root key seed (hex): signs key rotations only
//!   keys/job-<key id>.key     0600  job-signing key seeds (hex): envelopes and acks
//!   controller.password       0600  the controller's MQTT password
//!   observer.password         0600  the read-only observer login's (`broker observer`)
//!   serve.lock                0600  held (flock) by the one `fleetctl serve` running on
//!                                   the directory; says who it is (pid, addresses)
//! ```
//!
//! Secrets are files, not rows, so that the database can be copied for inspection
//! without copying keys, and so that the root key can be moved offline. The first
//! command that needs the directory initialises it; the SQLite write lock serialises two
//! processes that try at once (see [`Store::init_keys`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fleet_schemas::{KeyId, SigningKey, signed::public_key_of};

use crate::store::{KeyRole, KeyRow, Store, StoreError};

/// The database file name.
pub const DB_FILE: &str = "fleet.db";
/// The root key file name.
pub const ROOT_KEY_FILE: &str = "root.key";
/// The folder of job-signing key files.
pub const JOB_KEY_DIR: &str = "keys";
/// The controller's MQTT password file name.
pub const CONTROLLER_PASSWORD_FILE: &str = "controller.password";
/// The password of the read-only observer login (`fleetctl broker observer`).
pub const OBSERVER_PASSWORD_FILE: &str = "observer.password";
/// The lock file of the running `serve`.
pub const SERVE_LOCK_FILE: &str = "serve.lock";
/// Space `serve` keeps in reserve, to be able to start on a full disk.
pub const RESERVE_FILE: &str = "space.reserve";
/// The reserve's size: enough for SQLite's shared-memory index and first WAL pages.
const RESERVE_BYTES: usize = 1024 * 1024;
/// The reserve is made again only while this much is free besides it.
const RESERVE_MIN_FREE: u64 = 16 * 1024 * 1024;

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no fleet yet.
    #[error(
        "{0} holds no fleet data yet; run `fleetctl serve` or `fleetctl device provision` first, or pass --data-dir"
    )]
    NotInitialised(PathBuf),
    /// A key file is missing or does not hold a key.
    #[error("key file {0} is missing or corrupt; restore it from a backup")]
    BadKey(PathBuf),
    /// The database refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operating system's random generator failed.
    #[error("no randomness from the operating system: {0}")]
    Random(getrandom::Error),
    /// Another `fleetctl serve` runs on this directory.
    #[error("another fleetctl serve is running on {dir} ({holder})")]
    AlreadyServed {
        /// The directory.
        dir: PathBuf,
        /// Who holds it, as it wrote itself into the lock file.
        holder: String,
    },
}

/// Who serves a data directory, as the running `serve` writes it into its lock file
/// (also how it says that its store cannot be written).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServeInfo {
    /// Its process id.
    pub pid: u32,
    /// Where its MQTT broker listens (or the external broker it uses).
    pub mqtt: String,
    /// When it started, Unix ms.
    pub started_at_ms: u64,
    /// When it last wrote this, Unix ms.
    #[serde(default)]
    pub updated_at_ms: u64,
    /// Why the store cannot be written now (a full disk), if it cannot: `serve` stays
    /// up, its broker serving, and acknowledges nothing until it can again.
    #[serde(default)]
    pub store_unwritable: Option<StoreUnwritable>,
    /// Where its embedded broker serves MQTT over TLS, if it does.
    #[serde(default)]
    pub mqtt_tls: Option<String>,
    /// Where its operator API listens (`https://HOST:PORT`), if it serves one: how
    /// `fleetctl` on this machine finds it with no flags.
    #[serde(default)]
    pub api: Option<String>,
}

/// The store refuses writes: what and since when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreUnwritable {
    /// The error, as SQLite or the OS said it.
    pub error: String,
    /// Since when, Unix ms.
    pub since_ms: u64,
}

impl std::fmt::Display for ServeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}, MQTT on {}", self.pid, self.mqtt)
    }
}

/// The running `serve`'s hold on its data directory: an exclusive lock on
/// [`SERVE_LOCK_FILE`], released when dropped (or by the kernel when the process dies,
/// SIGKILL included).
#[derive(Debug)]
pub struct ServeLock {
    file: fs::File,
    path: PathBuf,
}

/// The lock file's fixed size: who holds it is written in place, padded with spaces, so
/// updating it needs no new space on a full disk (serve reports a full disk through it).
const SERVE_LOCK_BYTES: usize = 4096;

impl ServeLock {
    /// Writes who holds the lock into the lock file, in place, for a second `serve` (or
    /// `fleetctl`) to read.
    pub fn record(&mut self, info: &ServeInfo) -> Result<()> {
        use std::io::Seek as _;
        let mut text = serde_json::to_vec(info).unwrap_or_default();
        text.truncate(SERVE_LOCK_BYTES);
        text.resize(SERVE_LOCK_BYTES, b' ');
        self.file.rewind().map_err(io_err(&self.path))?;
        self.file.write_all(&text).map_err(io_err(&self.path))?;
        Ok(())
    }
}

type Result<T, E = DataDirError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_path_buf(), source }
}

/// A fleet's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root` (nothing is touched yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The database's path.
    pub fn db_path(&self) -> PathBuf {
        self.root.join(DB_FILE)
    }

    /// Whether a fleet has been initialised here.
    pub fn is_initialised(&self) -> bool {
        self.db_path().is_file() && self.root.join(ROOT_KEY_FILE).is_file()
    }

    /// Takes the directory for one `serve`: an exclusive lock on [`SERVE_LOCK_FILE`],
    /// or [`DataDirError::AlreadyServed`] naming the `serve` that holds it. Two
    /// controllers on one directory would each sign and send through their own broker,
    /// and every push made through the wrong one would wait forever.
    pub fn lock_for_serve(&self) -> Result<ServeLock> {
        create_private_dir(&self.root)?;
        let path = self.root.join(SERVE_LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        // `serving` takes the lock for an instant to probe it: try a few times before
        // calling the directory taken.
        for attempt in 0..5 {
            match file.try_lock() {
                Ok(()) => {
                    let mut lock = ServeLock { file, path };
                    let starting = ServeInfo {
                        pid: std::process::id(),
                        mqtt: "starting".into(),
                        started_at_ms: crate::unix_ms(),
                        ..ServeInfo::default()
                    };
                    if let Err(error) = lock.record(&starting) {
                        // Only a first start on a full disk gets here (the file keeps its
                        // size from then on): the lock holds, only who holds it is unsaid.
                        tracing::warn!(%error, "cannot write who holds the data directory's lock");
                    }
                    return Ok(lock);
                }
                Err(fs::TryLockError::WouldBlock) if attempt < 4 => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(fs::TryLockError::WouldBlock) => break,
                Err(fs::TryLockError::Error(source)) => return Err(DataDirError::Io { path, source }),
            }
        }
        let holder = fs::read_to_string(&path).ok().and_then(|text| serde_json::from_str::<ServeInfo>(&text).ok());
        Err(DataDirError::AlreadyServed {
            dir: self.root.clone(),
            holder: holder.map_or_else(|| "it did not say who it is".to_string(), |info| info.to_string()),
        })
    }

    /// Keeps [`RESERVE_BYTES`] of disk in [`RESERVE_FILE`], if it is missing and the
    /// disk has room to spare. Opening the database needs a little new space (SQLite's
    /// shared-memory index, deleted at every clean stop): on a full disk, `serve` frees
    /// the reserve to start ([`DataDir::release_reserve`]) instead of refusing to.
    pub fn keep_reserve(&self) {
        let path = self.root.join(RESERVE_FILE);
        if path.is_file() {
            return;
        }
        let free = rustix::fs::statvfs(&self.root).map(|s| s.f_bavail.saturating_mul(s.f_frsize)).unwrap_or(0);
        if free < RESERVE_MIN_FREE + RESERVE_BYTES as u64 {
            return;
        }
        let written = fs::File::create(&path).and_then(|mut f| {
            f.write_all(&vec![0u8; RESERVE_BYTES])?;
            f.sync_all()
        });
        if written.is_err() {
            let _ = fs::remove_file(&path);
        }
    }

    /// Frees the reserve; whether there was one.
    pub fn release_reserve(&self) -> bool {
        fs::remove_file(self.root.join(RESERVE_FILE)).is_ok()
    }

    /// The `serve` running on this directory now, if one is (it holds the lock).
    pub fn serving(&self) -> Option<ServeInfo> {
        let path = self.root.join(SERVE_LOCK_FILE);
        let file = fs::File::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(fs::TryLockError::WouldBlock) => {
                let text = fs::read_to_string(&path).ok()?;
                serde_json::from_str(&text).ok()
            }
            Err(fs::TryLockError::Error(_)) => None,
        }
    }

    /// Opens the store of an initialised directory.
    pub fn open(&self) -> Result<Store> {
        if !self.is_initialised() {
            return Err(DataDirError::NotInitialised(self.root.clone()));
        }
        Ok(Store::open(&self.db_path())?)
    }

    /// Opens the store, initialising the directory first if it holds no fleet: the
    /// root key, the first job-signing key and the controller's password.
    pub fn open_or_init(&self) -> Result<Store> {
        create_private_dir(&self.root)?;
        create_private_dir(&self.root.join(JOB_KEY_DIR))?;
        let mut store = Store::open(&self.db_path())?;
        let mut failure = None;
        let result = store.init_keys(crate::unix_ms(), || {
            self.generate_initial_keys().map_err(|error| {
                let message = error.to_string();
                failure = Some(error);
                message
            })
        });
        if let Err(error) = result {
            return Err(failure.unwrap_or(DataDirError::Store(error)));
        }
        Ok(store)
    }

    fn generate_initial_keys(&self) -> Result<Vec<KeyRow>> {
        let now = crate::unix_ms();
        let root = new_signing_key()?;
        write_secret(&self.root.join(ROOT_KEY_FILE), &hex::encode(root.to_bytes()))?;
        let password = hex::encode(crate::random_32().map_err(DataDirError::Random)?);
        write_secret(&self.root.join(CONTROLLER_PASSWORD_FILE), &password)?;
        let (job_row, _) = self.generate_job_key(true, now)?;
        let (root_id, root_public) = public_key_of(&root);
        Ok(vec![
            KeyRow {
                key_id: root_id,
                role: KeyRole::Root,
                public_key: root_public,
                active: false,
                trusted: false,
                created_at_ms: now,
            },
            job_row,
        ])
    }

    /// Makes a new job-signing key, writes its file and returns its row (not yet stored).
    pub fn generate_job_key(&self, active: bool, now_ms: u64) -> Result<(KeyRow, SigningKey)> {
        create_private_dir(&self.root.join(JOB_KEY_DIR))?;
        let key = new_signing_key()?;
        let (key_id, public_key) = public_key_of(&key);
        write_secret(&self.job_key_path(&key_id), &hex::encode(key.to_bytes()))?;
        let row = KeyRow { key_id, role: KeyRole::Job, public_key, active, trusted: true, created_at_ms: now_ms };
        Ok((row, key))
    }

    fn job_key_path(&self, key_id: &KeyId) -> PathBuf {
        self.root.join(JOB_KEY_DIR).join(format!("job-{key_id}.key"))
    }

    /// The job-signing key that signs now.
    pub fn active_job_key(&self, store: &Store) -> Result<SigningKey> {
        let row = store.active_job_key()?.ok_or_else(|| DataDirError::BadKey(self.root.join(JOB_KEY_DIR)))?;
        let path = self.job_key_path(&row.key_id);
        let key = read_secret_key(&path)?;
        if public_key_of(&key).1 != row.public_key {
            return Err(DataDirError::BadKey(path));
        }
        Ok(key)
    }

    /// The root key.
    pub fn root_key(&self, store: &Store) -> Result<SigningKey> {
        let path = self.root.join(ROOT_KEY_FILE);
        let key = read_secret_key(&path)?;
        match store.root_key()? {
            Some(row) if row.public_key == public_key_of(&key).1 => Ok(key),
            _ => Err(DataDirError::BadKey(path)),
        }
    }

    /// The observer login's password, if one was made.
    pub fn observer_password(&self) -> Result<Option<String>> {
        let path = self.root.join(OBSERVER_PASSWORD_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The observer login's password, made (0600) if there is none yet.
    pub fn observer_password_or_make(&self) -> Result<String> {
        if let Some(password) = self.observer_password()? {
            return Ok(password);
        }
        let password = hex::encode(crate::random_32().map_err(DataDirError::Random)?);
        write_secret(&self.root.join(OBSERVER_PASSWORD_FILE), &password)?;
        Ok(password)
    }

    /// The controller's MQTT password.
    pub fn controller_password(&self) -> Result<String> {
        let path = self.root.join(CONTROLLER_PASSWORD_FILE);
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(text.trim().to_string())
    }
}

fn new_signing_key() -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&crate::random_32().map_err(DataDirError::Random)?))
}

/// Creates a directory (and its parents) readable by the owner only.
pub fn create_private_dir(path: &Path) -> Result<()> {
    if !path.is_dir() {
        fs::create_dir_all(path).map_err(io_err(path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_err(path))?;
    }
    Ok(())
}

/// Writes a secret file with mode 0600, atomically (temporary file, fsync, rename), so
/// a crash leaves either the old file or the new one, never half of one.
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io_err(&tmp))?;
    // `mode` applies only when the file is created; a stale temporary keeps its mode.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err(&tmp))?;
    file.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    file.write_all(b"\n").map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

fn read_secret_key(path: &Path) -> Result<SigningKey> {
    let text = fs::read_to_string(path).map_err(|_| DataDirError::BadKey(path.to_path_buf()))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| DataDirError::BadKey(path.to_path_buf()))?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "key file is readable by others; run `chmod 600` on it");
    }
    Ok(SigningKey::from_bytes(&seed))
}
