//! Who a connection is, and the hook that decides it.
//!
//! Why a trait: the broker does not know where credentials live (the controller keeps
//! them in SQLite, a test keeps them in a map). The broker asks once per CONNECT and
//! binds the answer to the connection; everything after that (the ACL) depends only on
//! the [`Identity`].

use fleet_schemas::DeviceId;

/// Who is on the other end of a connection, as the [`Authenticator`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The controller (or one of its workers): may publish and subscribe anything under
    /// the fleet's prefix.
    Controller,
    /// One device: may speak only for itself (see [`crate::acl`]).
    Device(DeviceId),
    /// A watcher (an operator's `mosquitto_sub`, a dashboard): may read the retained
    /// status documents and nothing else, and publishes nothing.
    Observer,
}

/// Checks the credentials of a CONNECT.
///
/// Called once per connection attempt, on tokio's blocking pool, so an implementation
/// may hash passwords or read a database without stalling other connections.
pub trait Authenticator: Send + Sync + 'static {
    /// `None` refuses the connection (CONNACK "bad username or password").
    ///
    /// `password` is the CONNECT's password field. A CONNECT without username and
    /// password never reaches this method: it is refused before.
    fn authenticate(&self, client_id: &str, username: &str, password: &[u8]) -> Option<Identity>;

    /// Who holds this client certificate (its DER bytes), or `None` to refuse the
    /// connection. Called instead of [`Authenticator::authenticate`] for a CONNECT on a
    /// TLS connection whose client presented a certificate that the listener's
    /// verifier accepted (it chains to a CA the listener trusts, and is in date): the
    /// certificate is the credential, and the CONNECT's username and password are not
    /// consulted. The default refuses every certificate.
    fn authenticate_certificate(&self, client_id: &str, certificate: &[u8]) -> Option<Identity> {
        let _ = (client_id, certificate);
        None
    }
}
