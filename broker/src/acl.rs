//! The topic ACL, as one pure function: `(topics, identity, action) -> Decision`.
//!
//! Why a pure function: this is the rule that keeps "a device can only speak for itself"
//! true (see `docs/protocol.md`, section 2, "ACL"). Nothing here touches a socket, a clock
//! or a lock, so every rule is a plain table test and a property test, and the I/O shell
//! ([`crate::frontdoor`]) cannot bend it: the shell asks, and obeys.
//!
//! The rules, for `{prefix}` the fleet's topic prefix:
//!
//! - `Device(id)`:
//!   - connects only with client id `id` (else it could take over another device's
//!     session and kick that device off);
//!   - publishes only `{prefix}/devices/{id}/events` and `{prefix}/devices/{id}/status`,
//!     and its last-will only on the status topic;
//!   - subscribes only to `{prefix}/devices/{id}/jobs`, `{prefix}/devices/{id}/acks`,
//!     `{prefix}/keys`, `{prefix}/controller/status` (read-only, per `docs/protocol.md`)
//!     and module chunks: `{prefix}/modules/{hash}/chunks/{index}`, or all chunks of ONE
//!     module with `{prefix}/modules/{hash}/chunks/+` or `/#`. No other wildcard.
//! - `Observer`:
//!   - connects with any client id the engine can route (no `+ # / $`);
//!   - publishes nothing (nor a last-will);
//!   - subscribes only to status documents: `{prefix}/devices/{id or +}/status`,
//!     `{prefix}/jobs/{id or +}/status`, `{prefix}/+/+/status` (both at once) and
//!     `{prefix}/controller/status`. Every topic such a filter matches is a retained
//!     status document, so a watcher never reads envelopes, events or acks.
//! - `Controller`:
//!   - connects with any client id the engine can route (no `+ # / $`);
//!   - publishes (and wills) any topic name under `{prefix}/`;
//!   - subscribes to any valid filter under `{prefix}/`, also as a shared subscription
//!     `$share/{group}/{filter}` so several controller workers can split the load.
//!
//! Names are checked for MQTT validity first (no wildcard in a topic name, wildcards
//! only as whole levels in a filter, no NUL), so a lenient parse further down can never
//! let a wildcard through.

use fleet_schemas::{Digest, Topic, Topics};

use crate::auth::Identity;

/// Something a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Connect with this MQTT client id.
    Connect {
        /// The client id from the CONNECT packet.
        client_id: &'a str,
    },
    /// Publish to this topic name.
    Publish(&'a str),
    /// Register this topic name as the connection's last-will (checked at CONNECT).
    Will(&'a str),
    /// Subscribe to this topic filter.
    Subscribe(&'a str),
}

/// The ACL's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, and why (for the log).
    Deny(Denial),
}

impl Decision {
    /// Whether the action is allowed.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// Why the ACL refused an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// A device connected with a client id other than its device id (that would let it
    /// take over another device's session).
    #[error("a device's client id must be its device id")]
    ClientIdNotDeviceId,
    /// A client id holding a character the engine cannot route (`+ # / $`).
    #[error("a client id may not hold '+', '#', '/' or '$'")]
    ClientIdInvalid,
    /// Not a valid MQTT topic name (empty, a wildcard, or a NUL).
    #[error("not a valid MQTT topic name")]
    InvalidTopic,
    /// Not a valid MQTT topic filter (empty, a misplaced wildcard, or a NUL).
    #[error("not a valid MQTT topic filter")]
    InvalidFilter,
    /// A name outside the fleet's prefix.
    #[error("outside the fleet's topic prefix")]
    OutsidePrefix,
    /// A device publishing anything but its own events or status.
    #[error("a device may publish only its own events and status")]
    NotOwnPublishTopic,
    /// A device registering a last-will anywhere but its own status topic.
    #[error("a device's last-will must be its own status topic")]
    WillNotOwnStatus,
    /// A device subscribing to something it may not read.
    #[error("a device may subscribe only to its own jobs and acks, the keys, the controller status and module chunks")]
    NotReadableByDevice,
    /// An observer publishing (or registering a last-will).
    #[error("an observer publishes nothing")]
    ObserverPublishes,
    /// An observer subscribing to anything but status documents.
    #[error("an observer may subscribe only to status documents (.../+/+/status, .../controller/status)")]
    NotAStatusFilter,
}

/// Decides whether `identity` may do `action` in the fleet named by `topics`.
pub fn check(topics: &Topics, identity: &Identity, action: Action<'_>) -> Decision {
    match check_inner(topics, identity, action) {
        Ok(()) => Decision::Allow,
        Err(denial) => Decision::Deny(denial),
    }
}

fn check_inner(topics: &Topics, identity: &Identity, action: Action<'_>) -> Result<(), Denial> {
    match (identity, action) {
        (Identity::Device(id), Action::Connect { client_id }) => {
            if client_id == id.as_str() {
                Ok(())
            } else {
                Err(Denial::ClientIdNotDeviceId)
            }
        }
        (Identity::Controller | Identity::Observer, Action::Connect { client_id }) => {
            if client_id.contains(['+', '#', '/', '$']) { Err(Denial::ClientIdInvalid) } else { Ok(()) }
        }
        (Identity::Device(id), Action::Publish(topic)) => {
            valid_topic_name(topic)?;
            match topics.parse(topic) {
                Some(Topic::DeviceEvents(owner) | Topic::DeviceStatus(owner)) if owner == id.as_str() => Ok(()),
                _ => Err(Denial::NotOwnPublishTopic),
            }
        }
        (Identity::Device(id), Action::Will(topic)) => {
            valid_topic_name(topic)?;
            match topics.parse(topic) {
                Some(Topic::DeviceStatus(owner)) if owner == id.as_str() => Ok(()),
                _ => Err(Denial::WillNotOwnStatus),
            }
        }
        (Identity::Controller, Action::Publish(topic) | Action::Will(topic)) => {
            valid_topic_name(topic)?;
            under_prefix(topics, topic).map(|_| ())
        }
        (Identity::Device(id), Action::Subscribe(filter)) => {
            valid_filter(filter)?;
            match topics.parse(filter) {
                Some(Topic::DeviceJobs(owner) | Topic::DeviceAcks(owner)) if owner == id.as_str() => return Ok(()),
                Some(Topic::Keys | Topic::ControllerStatus | Topic::ModuleChunk { .. }) => return Ok(()),
                _ => {}
            }
            // All chunks of one module: `{prefix}/modules/{hash}/chunks/+` or `/#`.
            let rest = under_prefix(topics, filter).map_err(|_| Denial::NotReadableByDevice)?;
            let mut levels = rest.split('/');
            match (levels.next(), levels.next(), levels.next(), levels.next(), levels.next()) {
                (Some("modules"), Some(hash), Some("chunks"), Some("+" | "#"), None)
                    if hash.parse::<Digest>().is_ok() =>
                {
                    Ok(())
                }
                _ => Err(Denial::NotReadableByDevice),
            }
        }
        (Identity::Observer, Action::Publish(_) | Action::Will(_)) => Err(Denial::ObserverPublishes),
        (Identity::Observer, Action::Subscribe(filter)) => {
            valid_filter(filter)?;
            let rest = under_prefix(topics, filter).map_err(|_| Denial::NotAStatusFilter)?;
            let mut levels = rest.split('/');
            let ok = match (levels.next(), levels.next(), levels.next(), levels.next()) {
                (Some("controller"), Some("status"), None, None) => true,
                // `+` at the first level matches `devices` and `jobs` (every 3-level
                // topic of the fleet ending in `status` is one of those two).
                (Some("devices" | "jobs" | "+"), Some(id), Some("status"), None) => id != "#",
                _ => false,
            };
            if ok { Ok(()) } else { Err(Denial::NotAStatusFilter) }
        }
        (Identity::Controller, Action::Subscribe(filter)) => {
            valid_filter(filter)?;
            let filter = strip_shared_group(filter)?;
            under_prefix(topics, filter).map(|_| ())
        }
    }
}

/// What follows `{prefix}/` in `name`, or [`Denial::OutsidePrefix`]. The prefix holds no
/// wildcard (`Topics::new` checks), so a literal match is the right test for filters too.
fn under_prefix<'a>(topics: &Topics, name: &'a str) -> Result<&'a str, Denial> {
    name.strip_prefix(topics.prefix()).and_then(|rest| rest.strip_prefix('/')).ok_or(Denial::OutsidePrefix)
}

/// `$share/{group}/{filter}` -> `{filter}`; any other filter as it is.
fn strip_shared_group(filter: &str) -> Result<&str, Denial> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(filter);
    };
    match rest.split_once('/') {
        Some((group, inner)) if !group.is_empty() && !group.contains(['+', '#']) && !inner.is_empty() => Ok(inner),
        _ => Err(Denial::InvalidFilter),
    }
}

/// MQTT 3.1.1 section 4.7: a topic name is non-empty and holds no wildcard (and, as
/// every MQTT string, no NUL).
pub fn valid_topic_name(topic: &str) -> Result<(), Denial> {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) { Err(Denial::InvalidTopic) } else { Ok(()) }
}

/// MQTT 3.1.1 section 4.7: a filter is non-empty, `+` fills a whole level, `#` fills the
/// last level, and no NUL.
pub fn valid_filter(filter: &str) -> Result<(), Denial> {
    if filter.is_empty() || filter.contains('\0') {
        return Err(Denial::InvalidFilter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        let ok = match level {
            "+" => true,
            "#" => is_last,
            other => !other.contains(['+', '#']),
        };
        if !ok {
            return Err(Denial::InvalidFilter);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_syntax() {
        for ok in ["a", "a/b", "+", "#", "a/+/b", "a/#", "+/+", "/", "a//b", "$share/g/a"] {
            assert_eq!(valid_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a+", "a/#/b", "a/b#", "##", "a/++", "#/", "a\0b"] {
            assert_eq!(valid_filter(bad), Err(Denial::InvalidFilter), "{bad:?}");
        }
    }

    #[test]
    fn topic_syntax() {
        for ok in ["a", "a/b", "/", "a//b"] {
            assert_eq!(valid_topic_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "+", "a/#", "a+b", "a\0"] {
            assert_eq!(valid_topic_name(bad), Err(Denial::InvalidTopic), "{bad:?}");
        }
    }

    #[test]
    fn shared_group() {
        assert_eq!(strip_shared_group("$share/g/fleet/x"), Ok("fleet/x"));
        assert_eq!(strip_shared_group("fleet/x"), Ok("fleet/x"));
        assert_eq!(strip_shared_group("$share//fleet/x"), Err(Denial::InvalidFilter));
        assert_eq!(strip_shared_group("$share/g"), Err(Denial::InvalidFilter));
        assert_eq!(strip_shared_group("$share/+/fleet/x"), Err(Denial::InvalidFilter));
    }
}
