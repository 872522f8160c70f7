//! The shell: one thread that owns the core and the store and performs the core's
//! actions, in order.
//!
//! Why one thread: the core's contract is sequential (perform each call's actions in
//! order; apply a `Persist` before anything after it), and the store is only ever
//! written from here, so the order the core decides is the order things happen on disk
//! and on the wire. Everything else (the MQTT event loop, job threads, the ticker)
//! only sends this thread a [`Wake`].
//!
//! ```text
//!  MQTT event loop ──Wake::{LinkUp,LinkDown,Message}──┐
//!  job threads ──────Wake::Finished───────────────────┼──▶ shell thread ──▶ AgentCore::handle
//!  recv timeout ─────Tick─────────────────────────────┘        │ actions, in order:
//!                                                              ├─ Persist  → SQLite, one transaction
//!                                                              ├─ AckDelivery → PUBACK (same connection only)
//!                                                              ├─ Publish / Subscribe → MQTT request channel
//!                                                              └─ Run / Stop → job threads
//! ```
//!
//! A store error while applying a batch stops the agent: the core has moved on in
//! memory, and only a restart from what is on disk keeps the invariants. Except a store
//! that refuses the write for want of space (a full disk): then the shell *stalls*, in
//! order. The refused batch and every action after it wait; whatever wakes the shell
//! meanwhile (envelopes, finished runs, link changes) waits behind them, unacknowledged
//! (the broker keeps the envelopes); the batch is tried again every tick, and once it is
//! written everything goes on where it stopped. The MQTT link stays up meanwhile.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_agent_core::{Action, AgentCore, DeliveryToken, Input, Notice, Now, Outcome};
use fleet_schemas::chunk::module_matches;
use fleet_schemas::{ExecutionKey, FailReason, JobSpec, ModuleSource};
use tracing::{debug, error, info, warn};

use crate::exec::{Executions, failed};
use crate::link::Link;
use crate::store::{Store, StoreError};

/// Something that happened, for the shell thread.
#[derive(Debug)]
pub enum Wake {
    /// CONNACK received.
    LinkUp,
    /// The connection is gone.
    LinkDown,
    /// A PUBLISH arrived on connection `generation`.
    Message {
        /// The connection it came on (see [`crate::link`]).
        generation: u64,
        /// The message.
        publish: rumqttc::Publish,
    },
    /// An execution ended.
    Finished {
        /// The execution.
        key: ExecutionKey,
        /// How.
        outcome: Outcome,
    },
    /// A chunked module failed its check when loaded.
    ModuleLost(fleet_schemas::Digest),
    /// Stop: publish the offline status, disconnect, return.
    Shutdown,
}

/// The shell's state.
pub struct Shell {
    core: AgentCore,
    store: Store,
    link: Link,
    executions: Executions,
    wake_tx: Sender<Wake>,
    wake: Receiver<Wake>,
    tick: Duration,
    started: Instant,
    /// Deliveries the core has not acknowledged yet: token → (connection, message).
    pending_acks: BTreeMap<u64, (u64, rumqttc::Publish)>,
    next_token: u64,
    /// Set while the store refuses a batch: it and the actions after it, in order.
    stalled: Option<Stalled>,
    /// What woke the shell while it was stalled, handled once it is not.
    backlog: VecDeque<Wake>,
}

/// A batch the store refused for want of space, and the actions after it.
struct Stalled {
    actions: VecDeque<Action>,
    since: Instant,
    logged: Instant,
}

/// How often a stalled shell says again that it is stalled.
const STALL_LOG_EVERY: Duration = Duration::from_secs(60);

impl Shell {
    /// A shell around a core rebuilt from `store`.
    pub fn new(
        core: AgentCore,
        store: Store,
        link: Link,
        executions: Executions,
        wake: (Sender<Wake>, Receiver<Wake>),
        tick: Duration,
    ) -> Self {
        Self {
            core,
            store,
            link,
            executions,
            wake_tx: wake.0,
            wake: wake.1,
            tick,
            started: Instant::now(),
            pending_acks: BTreeMap::new(),
            next_token: 0,
            stalled: None,
            backlog: VecDeque::new(),
        }
    }

    /// Runs until [`Wake::Shutdown`] (or every sender is gone); returns early only on a
    /// store error.
    pub fn run(mut self) -> Result<(), StoreError> {
        // Restarts executions interrupted by the last stop.
        self.feed(Input::Tick)?;
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.wake.recv_timeout(wait) {
                Ok(Wake::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(wake) if self.stalled.is_some() => self.backlog.push_back(wake),
                Ok(wake) => self.on_wake(wake)?,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                if self.stalled.is_some() {
                    self.retry_stalled()?;
                } else {
                    self.feed(Input::Tick)?;
                }
                next_tick = Instant::now() + self.tick;
            }
        }
        info!(running = self.executions.running(), "agent stopping; running executions will run again at start");
        self.link.disconnect(self.core.last_will());
        Ok(())
    }

    fn on_wake(&mut self, wake: Wake) -> Result<(), StoreError> {
        match wake {
            Wake::LinkUp => self.feed(Input::LinkUp),
            Wake::LinkDown => {
                // Acks for the dead connection would confuse the next one; the broker
                // redelivers those messages instead.
                self.pending_acks.clear();
                self.feed(Input::LinkDown)
            }
            Wake::Message { generation, publish } => {
                debug!(topic = publish.topic, bytes = publish.payload.len(), pkid = publish.pkid, "message");
                self.next_token += 1;
                let token = self.next_token;
                let now = self.now();
                let actions = self.core.handle(
                    Input::Message { topic: &publish.topic, payload: &publish.payload, delivery: DeliveryToken(token) },
                    now,
                );
                self.pending_acks.insert(token, (generation, publish));
                self.perform(actions)
            }
            Wake::Finished { key, outcome } => {
                self.executions.ended(&key);
                match &outcome {
                    Outcome::Succeeded(report) => {
                        info!(job = %key.job_id, attempt = key.attempt, fuel = report.fuel_used, ms = report.duration_ms, "execution succeeded");
                    }
                    Outcome::Failed { reason, message, .. } => {
                        info!(job = %key.job_id, attempt = key.attempt, ?reason, message, "execution failed");
                    }
                }
                self.feed(Input::ExecutionFinished { key, outcome })
            }
            Wake::ModuleLost(hash) => self.feed(Input::ModuleLost { hash }),
            Wake::Shutdown => Ok(()),
        }
    }

    fn now(&self) -> Now {
        let monotonic_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let unix_secs = SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
        Now::new(monotonic_ms, unix_secs)
    }

    fn feed(&mut self, input: Input<'_>) -> Result<(), StoreError> {
        let now = self.now();
        let actions = self.core.handle(input, now);
        self.perform(actions)
    }

    /// Performs one call's actions in order. A failed `Persist` returns at once: nothing
    /// after it may happen. If the store refused it for want of space, it and the actions
    /// after it wait (the shell stalls, see the module docs); any other failure stops the
    /// agent.
    fn perform(&mut self, actions: impl IntoIterator<Item = Action>) -> Result<(), StoreError> {
        let mut actions: VecDeque<Action> = actions.into_iter().collect();
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Persist(batch) => {
                    if let Err(e) = self.store.apply(&batch) {
                        if e.is_unwritable() {
                            if self.stalled.is_none() {
                                error!(
                                    error = %e,
                                    "cannot write the store (is the disk full?): taking nothing new until it can; \
                                     envelopes stay unacknowledged at the broker, nothing stored is lost"
                                );
                            }
                            actions.push_front(Action::Persist(batch));
                            let now = Instant::now();
                            let (since, logged) = self.stalled.as_ref().map_or((now, now), |s| (s.since, s.logged));
                            self.stalled = Some(Stalled { actions, since, logged });
                            return Ok(());
                        }
                        error!(error = %e, ops = batch.len(), "cannot persist a batch; stopping");
                        return Err(e);
                    }
                }
                Action::Publish(publish) => self.link.publish(publish),
                Action::AckDelivery(DeliveryToken(token)) => match self.pending_acks.remove(&token) {
                    Some((generation, publish)) => self.link.ack(generation, &publish),
                    None => debug!(token, "ack for a delivery of a connection that is gone"),
                },
                Action::Run { key, job } => self.start(key, job)?,
                Action::Stop { key } => self.executions.stop(&key),
                Action::Subscribe { topic, qos } => self.link.subscribe(topic, qos),
                Action::Unsubscribe { topic } => self.link.unsubscribe(topic),
                Action::Notice(notice) => log_notice(&notice),
            }
        }
        Ok(())
    }

    /// Tries the refused batch again; once it is written, performs what followed it and
    /// then what woke the shell meanwhile, in order.
    fn retry_stalled(&mut self) -> Result<(), StoreError> {
        let Some(stalled) = self.stalled.take() else { return Ok(()) };
        let (since, logged) = (stalled.since, stalled.logged);
        self.perform(stalled.actions)?;
        if let Some(still) = &mut self.stalled {
            // `perform` stalled again on the same batch.
            if logged.elapsed() >= STALL_LOG_EVERY {
                still.logged = Instant::now();
                warn!(
                    for_s = since.elapsed().as_secs(),
                    waiting = self.backlog.len(),
                    "the store still cannot be written"
                );
            }
            return Ok(());
        }
        info!(after_s = since.elapsed().as_secs(), waiting = self.backlog.len(), "the store takes writes again");
        while self.stalled.is_none() {
            let Some(wake) = self.backlog.pop_front() else { break };
            self.on_wake(wake)?;
        }
        Ok(())
    }

    /// Starts a run. A chunked module is loaded from the store and checked against the
    /// signed spec; if it does not match, the core hears `ModuleLost` and a failure
    /// (through the wake channel, after this call's remaining actions).
    fn start(&mut self, key: ExecutionKey, job: Box<JobSpec>) -> Result<(), StoreError> {
        let module: Arc<[u8]> = match &job.module {
            ModuleSource::Inline(bytes) => Arc::from(bytes.as_slice()),
            ModuleSource::Chunked(spec) => match self.store.load_module(&spec.hash)? {
                Some(bytes) if module_matches(&bytes, spec) => Arc::from(bytes),
                _ => {
                    warn!(module = %spec.hash, job = %key.job_id, "stored module is missing or does not match its hash");
                    let _ = self.wake_tx.send(Wake::ModuleLost(spec.hash));
                    let outcome = failed(
                        FailReason::ModuleUnavailable,
                        "the stored module is missing or no longer matches its signed hash",
                    );
                    let _ = self.wake_tx.send(Wake::Finished { key, outcome });
                    return Ok(());
                }
            },
        };
        self.executions.start(key, job, module);
        Ok(())
    }
}

fn log_notice(notice: &Notice) {
    match notice {
        Notice::EnvelopeRejected(reason) => warn!(%reason, "envelope rejected"),
        Notice::RejectionNotReported => {
            warn!("outbox over its soft limit: rejection of an unverified envelope not reported")
        }
        Notice::AckRefused(reason) => warn!(%reason, "event ack refused"),
        Notice::RotationRefused(reason) => warn!(%reason, "key rotation refused"),
        Notice::RotationApplied { rotation_seq } => info!(rotation_seq, "key rotation applied"),
        Notice::ChunkRefused(reason) => warn!(?reason, "module chunk refused"),
        Notice::UnexpectedChunk => debug!("unexpected module chunk ignored"),
        Notice::UnknownExecution(key) => debug!(job = %key.job_id, "finished execution unknown to the core"),
        Notice::IgnoredTopic => debug!("message on an unknown topic ignored"),
        Notice::EventNotEncoded => error!("an event could not be encoded and was not stored"),
        Notice::EnvelopeBeforeSync => {
            info!("envelope dropped: the store is new and not yet synced (the controller sends it again)")
        }
        Notice::SyncRequested => {
            info!("the store is new: asked the controller where it stands; nothing runs until it answers")
        }
        Notice::Synced { replay_floor, event_base } => warn!(
            replay_floor,
            event_base,
            "store synced with the controller: envelopes up to the floor are refused, events numbered after the base"
        ),
        Notice::SyncRefused(reason) => warn!(%reason, "sync grant refused"),
        Notice::SyncForAnotherIncarnation => debug!("sync grant for another incarnation of this store ignored"),
    }
}
