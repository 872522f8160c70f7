//! Who gets a socket, and how fast an address that keeps failing may try again.
//!
//! Why: every accepted socket costs the process a file descriptor, and a connection
//! costs one before it has proved anything. Without a gate, one client that opens idle
//! sockets (no CONNECT, or CONNECT after CONNECT with wrong passwords) can take every
//! descriptor the process has, and then no device, not even the controller, gets in.
//! The gate keeps three rules, all decided here without I/O:
//!
//! - **A ceiling the process can hold.** At most `total` connections, which
//!   [`crate::start`] derives from the open-file limit (`ulimit -n`) so the broker never
//!   reaches `EMFILE` and `accept` keeps working.
//! - **Unauthenticated connections are bounded, per address and in all.** A connection
//!   is *pending* from accept until its CONNECT is admitted. An address may hold at most
//!   `per_address` pending connections, and all pending ones together at most
//!   `pending_max`, which is below `total`: the difference is a reserve that only
//!   admitted connections use, so a flood of idle sockets never takes the slots of the
//!   devices already in. A full pool makes room by closing its *oldest* pending
//!   connection, if that one has had at least [`EVICT_AFTER`] to send its CONNECT (a
//!   device that is really there sends it in milliseconds); otherwise the newcomer is
//!   refused. So idle sockets cannot keep a real device out for longer than it takes
//!   to try again.
//! - **Failed logins slow an address down.** Each refused CONNECT from an address
//!   counts against it; past [`FREE_FAILURES`], its next CONNECT waits before the
//!   credentials are even checked, twice as long per further failure up to
//!   [`MAX_LOGIN_DELAY`], and the count halves every [`FAILURE_HALF_LIFE`]. Together with
//!   the per-address cap this bounds the password guesses one address can make.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a pending connection is safe from eviction: time enough to send a CONNECT.
pub(crate) const EVICT_AFTER: Duration = Duration::from_secs(1);
/// Failed logins from one address before its CONNECTs start to wait.
pub(crate) const FREE_FAILURES: u32 = 5;
/// The first wait once an address is past [`FREE_FAILURES`].
const FIRST_LOGIN_DELAY: Duration = Duration::from_millis(100);
/// The longest a CONNECT waits for its address's failures.
pub(crate) const MAX_LOGIN_DELAY: Duration = Duration::from_secs(5);
/// An address's failure count halves this often.
const FAILURE_HALF_LIFE: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at most (the oldest is forgotten first), so
/// the table costs bounded memory whoever connects.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// The gate's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections held at once, pending and admitted.
    pub total: usize,
    /// Pending (not yet admitted) connections held at once.
    pub pending_max: usize,
    /// Pending connections one address may hold at once.
    pub per_address: usize,
}

impl Limits {
    /// Limits for `total` connections: a reserve of one sixteenth (at least one, at
    /// most 1,024) kept for admitted connections.
    pub fn new(total: usize, per_address: usize) -> Self {
        let total = total.max(1);
        let reserve = (total / 16).clamp(1, 1024).min(total.saturating_sub(1));
        Self { total, pending_max: (total - reserve).max(1), per_address: per_address.max(1) }
    }
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its address already holds its share of pending connections, none old enough to
    /// give way.
    PerAddress,
    /// The broker holds all the connections it can.
    Capacity,
}

/// What [`Gate::enter`] did besides letting a connection in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Entered {
    /// A pending connection was closed to make room.
    pub evicted: bool,
}

struct PendingEntry {
    ip: IpAddr,
    since: Instant,
    evict: CancellationToken,
}

#[derive(Default)]
struct State {
    /// Pending connections by ticket, oldest first (tickets rise).
    pending: BTreeMap<u64, PendingEntry>,
    per_address: HashMap<IpAddr, usize>,
    admitted: usize,
    next_ticket: u64,
    failures: HashMap<IpAddr, Failures>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// The count as of `now`, halved once per half-life since the last failure.
    fn decayed(self, now: Instant) -> u32 {
        let halvings = now.saturating_duration_since(self.last).as_secs() / FAILURE_HALF_LIFE.as_secs().max(1);
        self.count.checked_shr(u32::try_from(halvings).unwrap_or(u32::MAX)).unwrap_or(0)
    }
}

/// The connection gate, shared by the accept loop and every connection task.
pub(crate) struct Gate {
    limits: Limits,
    state: Mutex<State>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// A connection's place at the gate: pending until [`Ticket::admit`], released when
/// dropped.
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    ip: IpAddr,
    admitted: bool,
    evict: CancellationToken,
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, state: Mutex::new(State::default()) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a new connection from `ip` in as pending, making room by evicting the
    /// oldest pending connection (of its address when that is what is full) if it is
    /// old enough; or says why not.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<(Ticket, Entered), Refused> {
        let mut state = self.state();
        let mut entered = Entered::default();
        if state.per_address.get(&ip).copied().unwrap_or(0) >= self.limits.per_address {
            let oldest = state.pending.iter().find(|(_, entry)| entry.ip == ip).map(|(id, entry)| (*id, entry.since));
            match oldest {
                Some((id, since)) if now.saturating_duration_since(since) >= EVICT_AFTER => {
                    state.evict(id);
                    entered.evicted = true;
                }
                _ => return Err(Refused::PerAddress),
            }
        }
        let full =
            state.pending.len() >= self.limits.pending_max || state.pending.len() + state.admitted >= self.limits.total;
        if full {
            let oldest = state.pending.iter().next().map(|(id, entry)| (*id, entry.since));
            match oldest {
                Some((id, since)) if now.saturating_duration_since(since) >= EVICT_AFTER => {
                    state.evict(id);
                    entered.evicted = true;
                }
                _ => return Err(Refused::Capacity),
            }
        }
        let id = state.next_ticket;
        state.next_ticket += 1;
        let evict = CancellationToken::new();
        state.pending.insert(id, PendingEntry { ip, since: now, evict: evict.clone() });
        *state.per_address.entry(ip).or_default() += 1;
        Ok((Ticket { gate: self.clone(), id, ip, admitted: false, evict }, entered))
    }

    /// How long a CONNECT from `ip` waits before its credentials are checked.
    pub fn login_delay(&self, ip: IpAddr, now: Instant) -> Duration {
        let count = self.state().failures.get(&ip).map_or(0, |f| f.decayed(now));
        if count < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (count - FREE_FAILURES).min(16);
        FIRST_LOGIN_DELAY.saturating_mul(1 << doublings).min(MAX_LOGIN_DELAY)
    }

    /// Counts a refused CONNECT against `ip`.
    pub fn login_failed(&self, ip: IpAddr, now: Instant) {
        let mut state = self.state();
        if !state.failures.contains_key(&ip) && state.failures.len() >= MAX_TRACKED_ADDRESSES {
            let stalest = state.failures.iter().min_by_key(|(_, f)| f.last).map(|(ip, _)| *ip);
            if let Some(stalest) = stalest {
                state.failures.remove(&stalest);
            }
        }
        let failures = state.failures.entry(ip).or_insert(Failures { count: 0, last: now });
        failures.count = failures.decayed(now).saturating_add(1);
        failures.last = now;
    }

    /// Connections held now: (pending, admitted).
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        let state = self.state();
        (state.pending.len(), state.admitted)
    }
}

impl State {
    fn evict(&mut self, id: u64) {
        if let Some(entry) = self.pending.remove(&id) {
            entry.evict.cancel();
            self.release_address(entry.ip);
        }
    }

    fn release_address(&mut self, ip: IpAddr) {
        if let Some(count) = self.per_address.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_address.remove(&ip);
            }
        }
    }
}

impl Ticket {
    /// Cancelled when the gate closes this pending connection to make room.
    pub fn eviction(&self) -> CancellationToken {
        self.evict.clone()
    }

    /// The connection's CONNECT was admitted: it leaves the pending pool for good.
    /// `false` if it was evicted first (the connection must close).
    pub fn admit(&mut self) -> bool {
        if self.admitted {
            return true;
        }
        let mut state = self.gate.state();
        if state.pending.remove(&self.id).is_none() {
            return false;
        }
        state.release_address(self.ip);
        state.admitted += 1;
        self.admitted = true;
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.gate.state();
        if self.admitted {
            state.admitted = state.admitted.saturating_sub(1);
        } else if state.pending.remove(&self.id).is_some() {
            state.release_address(self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_pending_connections() {
        let gate = Gate::new(Limits { total: 100, pending_max: 90, per_address: 3 });
        let t0 = Instant::now();
        let held: Vec<_> = (0..3).map(|_| gate.enter(ip(1), t0).unwrap()).collect();
        assert_eq!(gate.enter(ip(1), t0).err(), Some(Refused::PerAddress));
        // Another address is not affected.
        let other = gate.enter(ip(2), t0).unwrap();
        // Once the oldest has had its second, a newcomer from the same address takes its place.
        let (newcomer, entered) = gate.enter(ip(1), t0 + EVICT_AFTER).unwrap();
        assert!(entered.evicted);
        assert!(held[0].0.evict.is_cancelled());
        assert!(!held[1].0.evict.is_cancelled());
        assert_eq!(gate.held(), (4, 0));
        drop((held, other, newcomer));
        assert_eq!(gate.held(), (0, 0));
    }

    #[test]
    fn pending_connections_never_take_the_reserve() {
        let limits = Limits::new(32, 100);
        assert_eq!((limits.total, limits.pending_max), (32, 30));
        let gate = Gate::new(limits);
        let t0 = Instant::now();
        // 20 devices in.
        let mut devices: Vec<_> = (0..20).map(|i| gate.enter(ip(i), t0).unwrap().0).collect();
        for device in &mut devices {
            assert!(device.admit());
        }
        // A flood of idle sockets fills what is left below the ceiling...
        let flood: Vec<_> = (0..12).map(|_| gate.enter(ip(200), t0).unwrap().0).collect();
        assert_eq!(gate.held(), (12, 20));
        assert_eq!(gate.enter(ip(201), t0).err(), Some(Refused::Capacity));
        // ... and gives way to a newcomer once its oldest socket has idled a second.
        let (mut device, entered) = gate.enter(ip(42), t0 + EVICT_AFTER).unwrap();
        assert!(entered.evicted && flood[0].evict.is_cancelled());
        assert!(device.admit());
        assert_eq!(gate.held(), (11, 21));
    }

    #[test]
    fn an_evicted_connection_cannot_be_admitted() {
        let gate = Gate::new(Limits { total: 10, pending_max: 1, per_address: 10 });
        let t0 = Instant::now();
        let (mut first, _) = gate.enter(ip(1), t0).unwrap();
        let (_second, entered) = gate.enter(ip(2), t0 + EVICT_AFTER).unwrap();
        assert!(entered.evicted);
        assert!(!first.admit());
        drop(first);
        assert_eq!(gate.held(), (1, 0));
    }

    #[test]
    fn failed_logins_slow_an_address_down_and_the_count_decays() {
        let gate = Gate::new(Limits::new(100, 10));
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(gate.login_delay(ip(1), t0), Duration::ZERO);
            gate.login_failed(ip(1), t0);
        }
        assert_eq!(gate.login_delay(ip(1), t0), FIRST_LOGIN_DELAY);
        gate.login_failed(ip(1), t0);
        assert_eq!(gate.login_delay(ip(1), t0), FIRST_LOGIN_DELAY * 2);
        for _ in 0..40 {
            gate.login_failed(ip(1), t0);
        }
        assert_eq!(gate.login_delay(ip(1), t0), MAX_LOGIN_DELAY);
        // Other addresses are not slowed.
        assert_eq!(gate.login_delay(ip(2), t0), Duration::ZERO);
        // Quiet for long enough, the address is free again.
        assert_eq!(gate.login_delay(ip(1), t0 + FAILURE_HALF_LIFE * 6), Duration::ZERO);
    }
}
