//! The native engine: MQTT 3.1.1 sessions and routing, in-process and without I/O.
//!
//! Why our own: behind the front door, rumqttd costs two more open files per client (the
//! loopback link, both ends) and matches every topic it has not seen before against
//! every subscription, which makes a fleet's first job quadratic in its size (see
//! `hil-tests/bench/README.md`). What the fleet needs of a broker is small: sessions by
//! client id with takeover, persistent sessions that keep QoS 1 messages for offline
//! clients and resend unacknowledged ones, retained messages, last-will, QoS 0 and 1
//! out, QoS 0, 1 and 2 in. This is that, as a state machine fed packets and returning
//! what to send to which connection, so every rule is unit-tested without a socket.
//!
//! Routing is an exact-topic map plus the short list of wildcard filters (the
//! controller's `fleet/devices/+/events` and the like): a publish costs one lookup and a
//! pass over the wildcards, whatever the fleet's size. The front door has already
//! authenticated every client and checked every topic against the ACL ([`crate::acl`]).

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use rumqttd::protocol::{LastWill, QoS, SubscribeReasonCode};

/// A connection, as the front door numbers them.
pub(crate) type ConnId = u64;

/// Outgoing QoS 1 messages a session may have unacknowledged at once. Large, because
/// the controller acknowledges events only once it has committed them, in batches: a
/// window of a few hundred left it waiting on the broker between commits (a 10,000
/// device rollout took 40% longer at 256). MQTT's packet ids allow 65,535.
pub(crate) const MAX_INFLIGHT: usize = 16_384;
/// Messages a session keeps beyond its window (an offline device's jobs, a slow
/// controller's events); past this the oldest is dropped and counted.
pub(crate) const MAX_QUEUED: usize = 100_000;

/// A message as it is routed: QoS 0 or 1 (QoS 2 is delivered as 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub topic: Bytes,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
}

/// A packet for a connection, or the order to close it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    ConnAck {
        session_present: bool,
    },
    Publish {
        pkid: u16,
        dup: bool,
        message: Message,
    },
    PubAck(u16),
    PubRec(u16),
    PubComp(u16),
    SubAck {
        pkid: u16,
        codes: Vec<SubscribeReasonCode>,
    },
    UnsubAck(u16),
    PingResp,
    /// Close the connection (a newer one took its session over).
    Close,
}

/// What the router says to do: packets for connections, in order.
pub(crate) type Outbox = Vec<(ConnId, Out)>;

/// A packet from a client, as the router needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum In {
    Publish { pkid: u16, message: Message },
    PubAck(u16),
    PubRel(u16),
    Subscribe { pkid: u16, filters: Vec<(String, u8)> },
    Unsubscribe { pkid: u16, filters: Vec<String> },
    PingReq,
}

#[derive(Debug, Default)]
struct Session {
    conn: Option<ConnId>,
    clean: bool,
    will: Option<LastWill>,
    subs: HashMap<String, u8>,
    /// Sent, awaiting PUBACK, in send order.
    inflight: VecDeque<(u16, Message)>,
    /// The packet ids in `inflight`.
    inflight_ids: HashSet<u16>,
    queue: VecDeque<Message>,
    next_pkid: u16,
    /// QoS 2 packet ids received and not yet released (a resend is not routed again).
    qos2_in: HashSet<u16>,
}

impl Session {
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight_ids.contains(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }
}

/// One shared subscription group on one filter.
#[derive(Debug)]
struct SharedGroup {
    /// The whole `$share/GROUP/FILTER`, as subscribed.
    name: String,
    filter: String,
    /// Members and their granted QoS, in subscription order.
    members: Vec<(String, u8)>,
    /// Where the round robin resumes.
    next: usize,
}

/// `$share/GROUP/FILTER` → (GROUP, FILTER), if well-formed.
fn shared_parts(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, inner) = rest.split_once('/')?;
    (!group.is_empty() && !group.contains(['+', '#']) && valid_filter(inner)).then_some((group, inner))
}

/// Counters the router keeps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouterCounts {
    /// Messages dropped because a session's queue was full.
    pub dropped: u64,
}

/// Every session, subscription and retained message of the broker.
#[derive(Debug, Default)]
pub(crate) struct Router {
    sessions: HashMap<String, Session>,
    /// Exact topic → client → granted QoS.
    exact: HashMap<String, HashMap<String, u8>>,
    /// Wildcard filters: (filter, client, granted QoS).
    wild: Vec<(String, String, u8)>,
    /// Shared subscriptions (`$share/GROUP/FILTER`): each message to one member.
    shared: Vec<SharedGroup>,
    retained: HashMap<Bytes, Message>,
    counts: RouterCounts,
}

/// Whether `filter` is a valid MQTT topic filter.
fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == levels.len() - 1,
        "+" => true,
        other => !other.contains('#') && !other.contains('+'),
    })
}

/// Whether `topic` matches `filter` (MQTT 3.1.1 section 4.7; `$` topics are not
/// matched by a leading wildcard).
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

fn is_wildcard(filter: &str) -> bool {
    filter.contains('+') || filter.contains('#')
}

impl Router {
    /// An empty broker.
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sessions (connected or kept for an offline client).
    #[cfg(test)]
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// A client connected on `conn` (CONNECT already admitted by the front door).
    /// Takes an existing session over (the old connection is closed, its will
    /// dropped), or starts one; a persistent session resumes: unacknowledged messages
    /// are sent again (DUP), then what queued while it was away.
    pub fn connect(&mut self, conn: ConnId, client_id: &str, clean: bool, will: Option<LastWill>) -> Outbox {
        let mut out = Outbox::new();
        if let Some(old) = self.sessions.get(client_id).and_then(|s| s.conn) {
            out.push((old, Out::Close));
        }
        let resume = !clean && self.sessions.get(client_id).is_some_and(|s| !s.clean);
        if !resume {
            self.drop_session(client_id);
        }
        let session = self.sessions.entry(client_id.to_string()).or_default();
        session.conn = Some(conn);
        session.clean = clean;
        session.will = will;
        session.qos2_in.clear();
        out.push((conn, Out::ConnAck { session_present: resume }));
        if resume {
            for (pkid, message) in &session.inflight {
                out.push((conn, Out::Publish { pkid: *pkid, dup: true, message: message.clone() }));
            }
            Self::fill_window(session, conn, &mut out);
        }
        out
    }

    /// Connection `conn` of `client_id` ended: `clean` after a DISCONNECT. An unclean
    /// end publishes the will; a clean session is forgotten. An end of a connection that
    /// was taken over changes nothing.
    pub fn disconnected(&mut self, conn: ConnId, client_id: &str, clean: bool) -> Outbox {
        let mut out = Outbox::new();
        let Some(session) = self.sessions.get_mut(client_id) else { return out };
        if session.conn != Some(conn) {
            return out;
        }
        session.conn = None;
        let will = session.will.take();
        let forget = session.clean;
        if forget {
            self.drop_session(client_id);
        }
        if let (false, Some(will)) = (clean, will) {
            let message = Message {
                topic: will.topic,
                payload: will.message,
                qos: qos_num(will.qos).min(1),
                retain: will.retain,
            };
            self.route(&message, &mut out);
        }
        out
    }

    /// A packet from `client_id` on `conn`.
    pub fn packet(&mut self, conn: ConnId, client_id: &str, packet: In) -> Outbox {
        let mut out = Outbox::new();
        match packet {
            In::Publish { pkid, message } => {
                let qos = message.qos;
                let fresh = match qos {
                    2 => self.sessions.get_mut(client_id).is_some_and(|s| s.qos2_in.insert(pkid)),
                    _ => true,
                };
                if fresh {
                    let routed = Message { qos: qos.min(1), ..message };
                    self.route(&routed, &mut out);
                }
                match qos {
                    1 => out.push((conn, Out::PubAck(pkid))),
                    2 => out.push((conn, Out::PubRec(pkid))),
                    _ => {}
                }
            }
            In::PubRel(pkid) => {
                if let Some(session) = self.sessions.get_mut(client_id) {
                    session.qos2_in.remove(&pkid);
                }
                out.push((conn, Out::PubComp(pkid)));
            }
            In::PubAck(pkid) => {
                if let Some(session) = self.sessions.get_mut(client_id)
                    && session.inflight_ids.remove(&pkid)
                    && let Some(at) = session.inflight.iter().position(|(p, _)| *p == pkid)
                {
                    session.inflight.remove(at);
                    if let Some(conn) = session.conn {
                        Self::fill_window(session, conn, &mut out);
                    }
                }
            }
            In::Subscribe { pkid, filters } => self.subscribe(conn, client_id, pkid, filters, &mut out),
            In::Unsubscribe { pkid, filters } => {
                for filter in &filters {
                    self.unsubscribe(client_id, filter);
                }
                out.push((conn, Out::UnsubAck(pkid)));
            }
            In::PingReq => out.push((conn, Out::PingResp)),
        }
        out
    }

    fn subscribe(&mut self, conn: ConnId, client_id: &str, pkid: u16, filters: Vec<(String, u8)>, out: &mut Outbox) {
        let mut codes = Vec::with_capacity(filters.len());
        let mut granted_filters = Vec::new();
        for (filter, qos) in filters {
            let shared = filter.starts_with("$share/");
            if (shared && shared_parts(&filter).is_none()) || (!shared && !valid_filter(&filter)) {
                codes.push(SubscribeReasonCode::Failure);
                continue;
            }
            let granted = qos.min(1);
            codes.push(SubscribeReasonCode::Success(if granted == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }));
            self.unsubscribe(client_id, &filter);
            self.index(client_id, &filter, granted);
            if let Some(session) = self.sessions.get_mut(client_id) {
                session.subs.insert(filter.clone(), granted);
            }
            // No retained messages for a shared subscription (as MQTT 5 says).
            if !shared {
                granted_filters.push((filter, granted));
            }
        }
        out.push((conn, Out::SubAck { pkid, codes }));
        // Retained messages for the new subscriptions, flagged as retained.
        for (filter, granted) in granted_filters {
            let retained: Vec<Message> = if is_wildcard(&filter) {
                self.retained
                    .values()
                    .filter(|m| std::str::from_utf8(&m.topic).is_ok_and(|t| matches(&filter, t)))
                    .cloned()
                    .collect()
            } else {
                self.retained.get(filter.as_bytes()).cloned().into_iter().collect()
            };
            for message in retained {
                let message = Message { qos: message.qos.min(granted), retain: true, ..message };
                self.deliver(client_id, message, out);
            }
        }
    }

    fn unsubscribe(&mut self, client_id: &str, filter: &str) {
        self.unindex(client_id, filter);
        if let Some(session) = self.sessions.get_mut(client_id) {
            session.subs.remove(filter);
        }
    }

    /// Adds `client_id`'s subscription to `filter` (already checked) to the routing
    /// indexes.
    fn index(&mut self, client_id: &str, filter: &str, granted: u8) {
        if let Some((_, inner)) = shared_parts(filter) {
            match self.shared.iter_mut().find(|g| g.name == filter) {
                Some(group) => group.members.push((client_id.to_string(), granted)),
                None => self.shared.push(SharedGroup {
                    name: filter.to_string(),
                    filter: inner.to_string(),
                    members: vec![(client_id.to_string(), granted)],
                    next: 0,
                }),
            }
        } else if is_wildcard(filter) {
            self.wild.push((filter.to_string(), client_id.to_string(), granted));
        } else {
            self.exact.entry(filter.to_string()).or_default().insert(client_id.to_string(), granted);
        }
    }

    /// Removes `client_id`'s subscription to `filter` from the routing indexes.
    fn unindex(&mut self, client_id: &str, filter: &str) {
        if filter.starts_with("$share/") {
            for group in self.shared.iter_mut().filter(|g| g.name == filter) {
                group.members.retain(|(c, _)| c != client_id);
            }
            self.shared.retain(|g| !g.members.is_empty());
        } else if is_wildcard(filter) {
            self.wild.retain(|(f, c, _)| !(f == filter && c == client_id));
        } else if let Some(clients) = self.exact.get_mut(filter) {
            clients.remove(client_id);
            if clients.is_empty() {
                self.exact.remove(filter);
            }
        }
    }

    /// Forgets a session and its subscriptions.
    fn drop_session(&mut self, client_id: &str) {
        if let Some(session) = self.sessions.remove(client_id) {
            for filter in session.subs.keys() {
                self.unindex(client_id, filter);
            }
        }
    }

    /// Stores or clears a retained message and delivers `message` to every subscriber.
    fn route(&mut self, message: &Message, out: &mut Outbox) {
        if message.retain {
            if message.payload.is_empty() {
                self.retained.remove(&message.topic);
            } else {
                self.retained.insert(message.topic.clone(), message.clone());
            }
        }
        let Ok(topic) = std::str::from_utf8(&message.topic) else { return };
        // Each subscriber once, at the highest QoS any of its matching filters grants.
        // Almost every publish has one or two subscribers: a short list beats a map.
        let mut targets: Vec<(String, u8)> = Vec::new();
        let mut add = |client: &str, qos: u8| match targets.iter_mut().find(|(c, _)| c == client) {
            Some(entry) => entry.1 = entry.1.max(qos),
            None => targets.push((client.to_string(), qos)),
        };
        if let Some(clients) = self.exact.get(topic) {
            for (client, qos) in clients {
                add(client, *qos);
            }
        }
        for (filter, client, qos) in &self.wild {
            if matches(filter, topic) {
                add(client, *qos);
            }
        }
        for group in self.shared.iter_mut().filter(|g| matches(&g.filter, topic)) {
            // Round robin, preferring a member that is connected.
            let n = group.members.len();
            let online = |c: &str| self.sessions.get(c).is_some_and(|s| s.conn.is_some());
            let pick =
                (0..n).map(|i| (group.next + i) % n).find(|&i| online(&group.members[i].0)).unwrap_or(group.next % n);
            group.next = (pick + 1) % n;
            targets.push(group.members[pick].clone());
        }
        for (client, granted) in targets {
            // A message matching an established subscription goes out with RETAIN 0.
            let delivered = Message { qos: message.qos.min(granted), retain: false, ..message.clone() };
            self.deliver(&client, delivered, out);
        }
    }

    /// Sends `message` to `client_id` now, or keeps it for later (QoS 1 past the window
    /// or while offline); QoS 0 to an offline client is dropped.
    fn deliver(&mut self, client_id: &str, message: Message, out: &mut Outbox) {
        let Some(session) = self.sessions.get_mut(client_id) else { return };
        match (message.qos, session.conn) {
            (0, Some(conn)) => out.push((conn, Out::Publish { pkid: 0, dup: false, message })),
            (0, None) => {}
            (_, conn) => {
                if session.queue.len() >= MAX_QUEUED {
                    session.queue.pop_front();
                    self.counts.dropped += 1;
                    if self.counts.dropped.is_power_of_two() {
                        tracing::warn!(
                            client_id,
                            dropped = self.counts.dropped,
                            "a session's queue is full ({MAX_QUEUED} messages): dropping its oldest"
                        );
                    }
                }
                session.queue.push_back(message);
                if let Some(conn) = conn {
                    Self::fill_window(session, conn, out);
                }
            }
        }
    }

    /// Moves queued messages into the window and sends them.
    fn fill_window(session: &mut Session, conn: ConnId, out: &mut Outbox) {
        while session.inflight.len() < MAX_INFLIGHT {
            let Some(message) = session.queue.pop_front() else { break };
            let pkid = session.pkid();
            session.inflight_ids.insert(pkid);
            session.inflight.push_back((pkid, message.clone()));
            out.push((conn, Out::Publish { pkid, dup: false, message }));
        }
    }
}

/// A QoS as its number.
pub(crate) fn qos_num(qos: QoS) -> u8 {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn msg(topic: &str, payload: &str, qos: u8, retain: bool) -> Message {
        Message { topic: Bytes::from(topic.to_string()), payload: Bytes::from(payload.to_string()), qos, retain }
    }

    fn publish(pkid: u16, topic: &str, payload: &str, qos: u8, retain: bool) -> In {
        In::Publish { pkid, message: msg(topic, payload, qos, retain) }
    }

    fn sub(pkid: u16, filters: &[(&str, u8)]) -> In {
        In::Subscribe { pkid, filters: filters.iter().map(|(f, q)| (f.to_string(), *q)).collect() }
    }

    /// The publishes in `out` for `conn`: (pkid, dup, topic, payload, qos, retain).
    fn publishes(out: &Outbox, conn: ConnId) -> Vec<(u16, bool, String, String, u8, bool)> {
        out.iter()
            .filter(|(c, _)| *c == conn)
            .filter_map(|(_, o)| match o {
                Out::Publish { pkid, dup, message } => Some((
                    *pkid,
                    *dup,
                    String::from_utf8_lossy(&message.topic).into_owned(),
                    String::from_utf8_lossy(&message.payload).into_owned(),
                    message.qos,
                    message.retain,
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn topic_filters_match_as_mqtt_says() {
        assert!(matches("fleet/devices/+/events", "fleet/devices/d1/events"));
        assert!(!matches("fleet/devices/+/events", "fleet/devices/d1/status"));
        assert!(!matches("fleet/devices/+/events", "fleet/devices/d1/events/x"));
        assert!(matches("fleet/#", "fleet/devices/d1/events"));
        assert!(matches("fleet/#", "fleet"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("a/+", "a/"));
        assert!(!matches("a/b", "a"));
        assert!(valid_filter("a/+/c/#"));
        assert!(!valid_filter("a/#/c"));
        assert!(!valid_filter("a/b#"));
        assert!(!valid_filter(""));
    }

    #[test]
    fn qos1_is_delivered_once_per_subscriber_and_acknowledged() {
        let mut r = Router::new();
        r.connect(1, "controller", true, None);
        r.connect(2, "d1", false, None);
        let out = r.packet(1, "controller", sub(1, &[("fleet/devices/+/events", 1), ("fleet/devices/d1/events", 1)]));
        assert!(matches!(&out[..], [(1, Out::SubAck { pkid: 1, codes })] if codes.len() == 2));
        let out = r.packet(2, "d1", publish(7, "fleet/devices/d1/events", "e1", 1, false));
        assert_eq!(publishes(&out, 1), [(1, false, "fleet/devices/d1/events".into(), "e1".into(), 1, false)]);
        assert_eq!(out.last(), Some(&(2, Out::PubAck(7))));
    }

    #[test]
    fn a_persistent_session_keeps_messages_while_offline_and_resends_the_unacknowledged() {
        let mut r = Router::new();
        r.connect(1, "d1", false, None);
        r.packet(1, "d1", sub(1, &[("fleet/devices/d1/jobs", 1)]));
        r.connect(2, "controller", true, None);
        let out = r.packet(2, "controller", publish(1, "fleet/devices/d1/jobs", "job-a", 1, false));
        assert_eq!(publishes(&out, 1).len(), 1, "sent while online");
        // The device drops without acknowledging, then a second job arrives.
        r.disconnected(1, "d1", false);
        let out = r.packet(2, "controller", publish(2, "fleet/devices/d1/jobs", "job-b", 1, false));
        assert!(publishes(&out, 1).is_empty());
        // Back: job-a again with DUP, then job-b, and the session was present.
        let out = r.connect(3, "d1", false, None);
        assert_eq!(out[0], (3, Out::ConnAck { session_present: true }));
        let sent = publishes(&out, 3);
        assert_eq!(sent.len(), 2);
        assert!(sent[0].1 && sent[0].3 == "job-a", "{sent:?}");
        assert!(!sent[1].1 && sent[1].3 == "job-b", "{sent:?}");
        // Acknowledged: nothing more on the next reconnect.
        r.packet(3, "d1", In::PubAck(sent[0].0));
        r.packet(3, "d1", In::PubAck(sent[1].0));
        r.disconnected(3, "d1", false);
        let out = r.connect(4, "d1", false, None);
        assert!(publishes(&out, 4).is_empty());
    }

    #[test]
    fn a_clean_session_forgets_and_qos0_to_an_offline_client_is_dropped() {
        let mut r = Router::new();
        r.connect(1, "obs", true, None);
        r.packet(1, "obs", sub(1, &[("t", 1)]));
        r.disconnected(1, "obs", true);
        assert_eq!(r.sessions(), 0);
        r.connect(2, "pub", true, None);
        let out = r.packet(2, "pub", publish(1, "t", "x", 1, false));
        assert_eq!(out, [(2, Out::PubAck(1))]);
        let out = r.connect(3, "obs", false, None);
        assert_eq!(out, [(3, Out::ConnAck { session_present: false })]);
    }

    #[test]
    fn retained_messages_reach_later_subscribers_flagged_and_an_empty_one_clears() {
        let mut r = Router::new();
        r.connect(1, "d1", true, None);
        r.packet(1, "d1", publish(1, "fleet/devices/d1/status", "online", 1, true));
        r.packet(1, "d1", publish(2, "fleet/devices/d2/status", "x", 0, true));
        r.connect(2, "obs", true, None);
        let out = r.packet(2, "obs", sub(1, &[("fleet/devices/+/status", 1)]));
        let mut got = publishes(&out, 2);
        got.sort_by(|a, b| a.2.cmp(&b.2));
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|p| p.5), "retained flag set on a new subscription");
        assert_eq!((got[0].4, got[1].4), (1, 0), "QoS is the lower of the two");
        r.packet(1, "d1", publish(3, "fleet/devices/d2/status", "", 0, true));
        r.connect(3, "obs2", true, None);
        let out = r.packet(3, "obs2", sub(1, &[("fleet/devices/d2/status", 1)]));
        assert!(publishes(&out, 3).is_empty());
    }

    #[test]
    fn the_will_goes_out_on_an_unclean_end_only_and_not_on_takeover() {
        let will = |payload: &'static str| LastWill {
            topic: Bytes::from_static(b"fleet/devices/d1/status"),
            message: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: true,
        };
        let mut r = Router::new();
        r.connect(1, "obs", true, None);
        r.packet(1, "obs", sub(1, &[("fleet/devices/+/status", 1)]));
        r.connect(2, "d1", false, Some(will("offline")));
        // Taken over: the old connection is closed, no will.
        let out = r.connect(3, "d1", false, Some(will("offline")));
        assert_eq!(out[0], (2, Out::Close));
        assert!(publishes(&out, 1).is_empty());
        assert!(publishes(&r.disconnected(2, "d1", false), 1).is_empty(), "the old connection's end is stale");
        // A clean DISCONNECT: no will.
        assert!(publishes(&r.disconnected(3, "d1", true), 1).is_empty());
        // An unclean end: the will, retained.
        r.connect(4, "d1", false, Some(will("offline")));
        let out = r.disconnected(4, "d1", false);
        assert_eq!(publishes(&out, 1)[0].3, "offline");
        r.connect(5, "late", true, None);
        let out = r.packet(5, "late", sub(1, &[("fleet/devices/d1/status", 1)]));
        assert_eq!(publishes(&out, 5)[0].3, "offline");
    }

    #[test]
    fn the_window_holds_at_most_max_inflight_and_acks_release_more() {
        let mut r = Router::new();
        r.connect(1, "c", false, None);
        r.packet(1, "c", sub(1, &[("t", 1)]));
        r.connect(2, "p", true, None);
        let mut sent = Vec::new();
        for i in 0..MAX_INFLIGHT + 10 {
            sent.extend(publishes(&r.packet(2, "p", publish(1, "t", &i.to_string(), 1, false)), 1));
        }
        assert_eq!(sent.len(), MAX_INFLIGHT);
        let out = r.packet(1, "c", In::PubAck(sent[0].0));
        let more = publishes(&out, 1);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].3, MAX_INFLIGHT.to_string(), "in order");
        let ids: HashSet<u16> = sent.iter().map(|p| p.0).chain([more[0].0]).collect();
        assert_eq!(ids.len(), MAX_INFLIGHT + 1, "packet ids in flight are distinct");
    }

    #[test]
    fn qos2_in_is_routed_once_and_completed() {
        let mut r = Router::new();
        r.connect(1, "c", true, None);
        r.packet(1, "c", sub(1, &[("t", 2)]));
        r.connect(2, "p", true, None);
        let first = r.packet(2, "p", publish(9, "t", "x", 2, false));
        assert_eq!(publishes(&first, 1).len(), 1);
        assert_eq!(publishes(&first, 1)[0].4, 1, "delivered at QoS 1");
        assert_eq!(first.last(), Some(&(2, Out::PubRec(9))));
        let resent = r.packet(2, "p", publish(9, "t", "x", 2, false));
        assert!(publishes(&resent, 1).is_empty(), "a resend before PUBREL is not routed again");
        assert_eq!(r.packet(2, "p", In::PubRel(9)), [(2, Out::PubComp(9))]);
    }

    #[test]
    fn a_shared_subscription_gives_each_message_to_one_connected_member_in_turn() {
        let mut r = Router::new();
        for (conn, id) in [(1, "w1"), (2, "w2"), (3, "w3")] {
            r.connect(conn, id, false, None);
            r.packet(conn, id, sub(1, &[("$share/ingest/fleet/devices/+/events", 1)]));
        }
        r.disconnected(3, "w3", false);
        r.connect(9, "d1", true, None);
        let mut got = Vec::new();
        for i in 0..4 {
            let out = r.packet(9, "d1", publish(i + 1, "fleet/devices/d1/events", "e", 1, false));
            let to: Vec<ConnId> =
                out.iter().filter(|(_, o)| matches!(o, Out::Publish { .. })).map(|(c, _)| *c).collect();
            assert_eq!(to.len(), 1, "one member per message: {out:?}");
            got.push(to[0]);
        }
        assert_eq!(got, [1, 2, 1, 2], "alternating between the connected members");
        r.packet(1, "w1", In::Unsubscribe { pkid: 2, filters: vec!["$share/ingest/fleet/devices/+/events".into()] });
        let out = r.packet(9, "d1", publish(9, "fleet/devices/d1/events", "e", 1, false));
        assert_eq!(publishes(&out, 2).len(), 1);
    }

    #[test]
    fn bad_filters_are_refused_and_unsubscribe_stops_delivery() {
        let mut r = Router::new();
        r.connect(1, "c", true, None);
        let out = r.packet(1, "c", sub(1, &[("a/#/b", 1), ("$share//t", 1), ("t", 0)]));
        let Out::SubAck { codes, .. } = &out[0].1 else { panic!("{out:?}") };
        assert_eq!(
            codes,
            &[
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtMostOnce)
            ]
        );
        r.connect(2, "p", true, None);
        assert_eq!(publishes(&r.packet(2, "p", publish(0, "t", "x", 0, false)), 1).len(), 1);
        assert_eq!(r.packet(1, "c", In::Unsubscribe { pkid: 4, filters: vec!["t".into()] }), [(1, Out::UnsubAck(4))]);
        assert!(publishes(&r.packet(2, "p", publish(0, "t", "x", 0, false)), 1).is_empty());
    }
}
