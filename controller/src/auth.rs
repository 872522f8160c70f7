//! Who may connect to the embedded broker: the controller with the password kept in the
//! data directory, each device with the password `fleetctl device provision` gave it,
//! checked against the SHA-256 kept in the registry, and the read-only observer with the
//! password `fleetctl broker observer` made.
//!
//! Passwords are 32 random bytes (hex), so a plain SHA-256 is enough: there is nothing
//! to brute-force, and no salt or slow hash is needed. Comparisons are constant-time.
//! A device provisioned with `--cert` logs in with its client certificate instead (mTLS
//! on the TLS port; see [`crate::tls::issue_device_certificate`]), looked up by the
//! certificate's SHA-256. A device must also connect with its id as client id, so that one device's
//! credentials can never open (and read) another device's persistent session.

use std::sync::Mutex;

use fleet_broker::logs::Bounded;
use fleet_schemas::DeviceId;
use sha2::{Digest as _, Sha256};

use crate::datadir::{DataDir, DataDirError};
use crate::store::Store;
use crate::{CONTROLLER_CLIENT_ID, OBSERVER_USERNAME};

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The controller.
    Controller,
    /// One device.
    Device(DeviceId),
    /// A read-only watcher of the status documents.
    Observer,
}

/// SHA-256 of a password, as the registry keeps it.
pub fn password_hash(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks credentials against the registry (its own read-only database connection).
pub struct StoreAuthenticator {
    db: Mutex<Store>,
    controller_hash: [u8; 32],
    /// Where the observer's password is (read at each observer login, so one made while
    /// serve runs works at once).
    data_dir: DataDir,
}

impl std::fmt::Debug for StoreAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreAuthenticator").finish_non_exhaustive()
    }
}

impl StoreAuthenticator {
    /// An authenticator for the fleet in `data_dir` (which must be initialised).
    pub fn new(data_dir: &DataDir) -> Result<Self, DataDirError> {
        let password = data_dir.controller_password()?;
        let db = Store::open_read_only(&data_dir.db_path())?;
        Ok(Self { db: Mutex::new(db), controller_hash: password_hash(password.as_bytes()), data_dir: data_dir.clone() })
    }

    /// Who these credentials belong to, or `None` to refuse the connection.
    pub fn check(&self, client_id: &str, username: &str, password: &[u8]) -> Option<Principal> {
        let presented = password_hash(password);
        if username == CONTROLLER_CLIENT_ID {
            return constant_time_eq(&presented, &self.controller_hash).then_some(Principal::Controller);
        }
        if username == OBSERVER_USERNAME {
            let stored = self.data_dir.observer_password().ok().flatten()?;
            return constant_time_eq(&presented, &password_hash(stored.as_bytes())).then_some(Principal::Observer);
        }
        // Refusals are logged at debug only: the broker logs each refused CONNECT itself,
        // bounded and rate-limited (anyone can cause them).
        let device = DeviceId::new(username).ok()?;
        if client_id != device.as_str() {
            tracing::debug!(%device, client_id = %Bounded(client_id), "refused: a device must use its id as MQTT client id");
            return None;
        }
        let stored = {
            let db = self.db.lock().ok()?;
            db.device_password_hash(device.as_str())
        };
        match stored {
            Ok(Some(stored)) if constant_time_eq(&presented, &stored) => Some(Principal::Device(device)),
            Ok(_) => {
                tracing::debug!(%device, "refused: unknown device or wrong password");
                None
            }
            Err(error) => {
                tracing::error!(%device, %error, "refused: the registry could not be read");
                None
            }
        }
    }
}

impl StoreAuthenticator {
    /// The device that holds this client certificate (its DER; the TLS listener has
    /// already checked that it chains to the controller's CA), or `None`. The registry
    /// keeps each certificate's SHA-256: one the registry no longer holds (the device
    /// removed, or provisioned again) is refused however valid its signature.
    pub fn check_certificate(&self, client_id: &str, certificate: &[u8]) -> Option<Principal> {
        let sha256: [u8; 32] = Sha256::digest(certificate).into();
        let found = {
            let db = self.db.lock().ok()?;
            db.device_by_certificate(&sha256)
        };
        match found {
            Ok(Some(device)) if device.as_str() == client_id => Some(Principal::Device(device)),
            Ok(Some(device)) => {
                tracing::debug!(%device, client_id = %Bounded(client_id), "refused: a device must use its id as MQTT client id");
                None
            }
            Ok(None) => {
                tracing::debug!(sha256 = %hex::encode(sha256), "refused: no active device holds this certificate");
                None
            }
            Err(error) => {
                tracing::error!(%error, "refused: the registry could not be read");
                None
            }
        }
    }
}

fn identity(principal: Principal) -> fleet_broker::Identity {
    match principal {
        Principal::Controller => fleet_broker::Identity::Controller,
        Principal::Device(id) => fleet_broker::Identity::Device(id),
        Principal::Observer => fleet_broker::Identity::Observer,
    }
}

impl fleet_broker::Authenticator for StoreAuthenticator {
    fn authenticate(&self, client_id: &str, username: &str, password: &[u8]) -> Option<fleet_broker::Identity> {
        self.check(client_id, username, password).map(identity)
    }

    fn authenticate_certificate(&self, client_id: &str, certificate: &[u8]) -> Option<fleet_broker::Identity> {
        self.check_certificate(client_id, certificate).map(identity)
    }
}
