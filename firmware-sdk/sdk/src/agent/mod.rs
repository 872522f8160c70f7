//! The firmware shell around the agent core: the same `fleet-agent-core` state machine
//! as on a Linux gateway, with flash, a UART and wasmi underneath.
//!
//! The core decides; this module only does what it says, in order (the contract in
//! `fleet_agent_core`'s crate docs):
//!
//! ```text
//!  config block ──▶ AgentConfig ─┐
//!  journal replay ─▶ Recovered ──┴▶ AgentCore::new ──▶ Tick (restarts an interrupted run)
//!
//!  loop:  MQTT event ─┬─▶ core.handle(input, now) ──▶ actions, performed in order:
//!         link lost ──┤      Persist     ──▶ journal.append (atomic, durable) before anything after it
//!         1 s tick ───┤      Publish     ──▶ session.publish
//!         job done ───┘      AckDelivery ──▶ session.ack  (the PUBACK, only now)
//!                            Run         ──▶ queued; run after this call's actions are done
//!                            Stop, (Un)Subscribe, Notice
//! ```
//!
//! **One task, the job in slices.** The firmware has one thread, so a `Run` is queued
//! and the job starts once every action of the same `handle` call is performed, the
//! publishes included: the controller has the `Started` event before the job begins.
//! The job then runs in fuel slices (`ExecutorConfig::fuel_slice`, wasmi's resumable
//! calls); between two slices the shell looks at its link without waiting
//! ([`Link::poll_event`]) and feeds the core what arrived, as it does when idle:
//! keep-alive pings go out and their answers come in, so the broker never drops a
//! board for working; a new envelope is verified, stored and acknowledged at once and
//! queued behind the running one; a cancel raises the running job's [`StopSignal`],
//! which ends it before its next slice; the 1 s tick, a lost link and a reconnect are
//! handled too. Where the slices fall changes nothing about the job's result (the same
//! fuel, stopping at the same instruction). A power cut mid-slice is a power cut mid-job:
//! the execution runs again after the restart, its terminal event once.
//!
//! **Two jobs do not fit twice.** A running job holds its Wasm memory and its module;
//! handling an envelope takes several times its size while it is decoded, verified,
//! journaled and queued (about 6.4 times for a 16 KiB module on the mps2-an386). So a
//! message that arrives mid-job is handled at once only if the heap has room for it
//! ([`Console::heap`], estimated by [`handling_cost`]); otherwise it is held, its
//! PUBACK with it, and handled as soon as the heap has room (between later slices, or
//! once no job waits to start): nothing is lost, the broker keeps it unacknowledged
//! meanwhile, and nothing that arrives after it overtakes it. A board whose [`Console`]
//! does not report its heap has every mid-job message held (safe, but a cancel then
//! waits for the job's end). Small messages (acks, cancels, chunk requests)
//! nearly always fit. A job sent while the queue is full is held the same way rather
//! than refused (`QueueFull`): before the board served its link mid-job such a job
//! waited in the broker, and it still waits its turn. Once the heap could not take another packet as large as the
//! session allows, the shell stops reading the link until the job ends: the board
//! then may be dropped by the broker, as before slicing, rather than run out of heap.
//!
//! **Link loss** is noticed by the session (keep-alive, a refused or broken stream); the
//! shell tells the core `LinkDown` and reconnects with exponential backoff (0.5 s to
//! 30 s). The session is persistent, so the broker keeps the subscriptions and the QoS 1
//! messages that arrive meanwhile.
//!
//! **Fatal errors** are only those after which the contract cannot be kept: a `Persist`
//! that fails (the flash), or a journal that cannot be read. [`Agent::run`] returns
//! them; the board resets or stops, and the next boot recovers from what is on flash.

pub mod setup;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use core::fmt;

use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use fleet_agent_core::{Action, AgentCore, DeliveryToken, Input, Notice, Now, Outcome, Publish, RecoverError, StoreOp};
use fleet_executor::{Job, Slice, StopSignal, WasmiExecutor};

use crate::inputs::BoardData;
use fleet_schemas::chunk::module_matches;
use fleet_schemas::provision::DeviceConfig;
use fleet_schemas::{ExecutionKey, FailReason, JobSpec, ModuleSource, RunReport};

use crate::clock::Clock;
use crate::heap::HeapStats;
use crate::journal::{Journal, JournalError};
use crate::mqtt::{Event, Link, LinkError, QoS, Session, SessionError, Token, Will};
use crate::transport::Transport;

pub use setup::{Settings, SetupError};

/// How often the core gets a [`Input::Tick`].
pub const TICK_MS: u64 = 1_000;
/// The first reconnect delay; it doubles up to [`MAX_BACKOFF_MS`].
pub const MIN_BACKOFF_MS: u64 = 500;
/// The longest reconnect delay.
pub const MAX_BACKOFF_MS: u64 = 30_000;
/// How long the transport must stay quiet before a new CONNECT (stale bytes of the old
/// connection are dropped meanwhile).
const QUIET_MS: u64 = 50;
/// Between two slices of a running job, how long a pause in what the broker sends ends
/// the look at the link (only after bytes came: an idle link costs one register read).
const LINGER_MS: u64 = 5;
/// Heap bytes kept free beyond a message's [`handling_cost`].
const HEAP_MARGIN: usize = 4 * 1024;

/// What handling a message of `len` bytes may take from the heap at its peak: its
/// decoded copy, the journal record, the queued spec and their framing, with room to
/// spare (measured: 6.4 times a 15.8 KB envelope, 5.3 times a 6.5 KB one, 2 KB for a
/// 100 byte ack).
pub fn handling_cost(len: usize) -> usize {
    len.saturating_mul(7).saturating_add(2 * 1024)
}

/// Where the shell's log lines go (semihosting, RTT, a debug UART).
pub trait Console {
    /// Writes one line.
    fn line(&self, args: fmt::Arguments<'_>);

    /// The heap's use, if the board tracks it (logged after each job).
    fn heap(&self) -> Option<HeapStats> {
        None
    }
}

/// Why the agent stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The config block cannot make an agent.
    #[error("config: {0}")]
    Setup(#[from] SetupError),
    /// The stored state cannot rebuild the core.
    #[error("recovery: {0}")]
    Recover(#[from] RecoverError),
    /// The journal failed: the durability contract cannot be kept.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
}

/// The parts a board hands the agent.
pub struct Parts<'a, T: Transport, F: MultiwriteNorFlash, C: Clock, L: Console, I: BoardData> {
    /// The provisioned config.
    pub config: &'a DeviceConfig,
    /// What the board decides.
    pub settings: Settings,
    /// The link to the broker.
    pub transport: T,
    /// The journal, opened on the store partition, and what it replayed.
    pub journal: (Journal<F>, crate::journal::Tables),
    /// The executor (the board gives it its clock).
    pub executor: WasmiExecutor,
    /// The board's data sources, by the names jobs open: a [`crate::inputs::BoardInputs`], or
    /// `fleet_executor::NoInputs` for a board without any (which keeps the input code
    /// out of the image).
    pub inputs: I,
    /// The clock.
    pub clock: &'a C,
    /// The log.
    pub console: &'a L,
}

/// The running agent. See the module docs.
pub struct Agent<'a, T: Transport, F: MultiwriteNorFlash, C: Clock, L: Console, I: BoardData> {
    core: AgentCore,
    link: Link<T>,
    journal: Journal<F>,
    executor: WasmiExecutor,
    inputs: I,
    clock: &'a C,
    console: &'a L,
    /// Executions the core started, to run once the current actions are done.
    runs: VecDeque<(ExecutionKey, Box<JobSpec>)>,
    /// Executions stopped before they ran, to report as finished.
    stopped: VecDeque<ExecutionKey>,
    /// The execution running now, and what stops it.
    running: Option<(ExecutionKey, StopSignal)>,
    /// Messages that arrived mid-job without room on the heap, handled after it.
    held: VecDeque<Held>,
    /// Set when the heap could not take another packet mid-job: the link is left alone
    /// until the job ends.
    link_paused: bool,
    max_packet_bytes: usize,
    queue_capacity: usize,
    next_tick_ms: u64,
    next_connect_ms: u64,
    backoff_ms: u64,
}

impl<'a, T: Transport, F: MultiwriteNorFlash, C: Clock, L: Console, I: BoardData> Agent<'a, T, F, C, L, I> {
    /// Builds the core from the config and the replayed journal.
    pub fn new(parts: Parts<'a, T, F, C, L, I>) -> Result<Self, AgentError> {
        let Parts { config, settings, transport, journal: (journal, tables), executor, inputs, clock, console } = parts;
        let agent_config = setup::agent_config(config, &settings, inputs.names())?;
        let recovered = tables.into_recovered();
        console.line(format_args!(
            "agent: recovered {} queued, {} in outbox, replay seq {}",
            recovered.executions.len(),
            recovered.outbox.len(),
            recovered.replay.last_seq
        ));
        let core = AgentCore::new(agent_config, recovered)?;
        let session = Session::new(setup::session_config(config, &settings));
        let settings_packet = settings.max_packet_bytes;
        let settings_queue = settings.tuning.queue_capacity as usize;
        Ok(Self {
            core,
            link: Link::new(transport, session),
            journal,
            executor,
            inputs,
            clock,
            console,
            runs: VecDeque::new(),
            stopped: VecDeque::new(),
            running: None,
            held: VecDeque::new(),
            link_paused: false,
            max_packet_bytes: settings_packet,
            queue_capacity: settings_queue,
            next_tick_ms: 0,
            next_connect_ms: 0,
            backoff_ms: MIN_BACKOFF_MS,
        })
    }

    /// Runs the agent until a fatal error.
    pub async fn run(mut self) -> Result<core::convert::Infallible, AgentError> {
        // Restarts an execution that was running when the device went down.
        self.handle(Input::Tick).await?;
        self.next_tick_ms = self.clock.now_ms().saturating_add(TICK_MS);
        loop {
            self.step().await?;
        }
    }

    /// One turn of the loop: report, run, connect, or wait for the link or the tick.
    async fn step(&mut self) -> Result<(), AgentError> {
        if self.core.is_link_up() && !self.link.session().is_connected() {
            // The reconnect was scheduled where the loss was seen (or, after a failed
            // write, is due at once).
            self.handle(Input::LinkDown).await?;
        }
        if let Some(key) = self.stopped.pop_front() {
            let outcome = failed(FailReason::Timeout, "stopped by the agent before it ran");
            return self.handle(Input::ExecutionFinished { key, outcome }).await;
        }
        if let Some((key, job)) = self.runs.pop_front() {
            let outcome = self.execute(&key, job).await?;
            return self.handle(Input::ExecutionFinished { key, outcome }).await;
        }
        // Held messages go to the core once no job is waiting to start (a queued job is
        // instantiated first, while the heap still has the block the last one freed) or,
        // if one is, between its slices as soon as the heap has room.
        if let Some(held) = self.held.pop_front() {
            return self.on_message(held).await;
        }
        if self.connect_if_due().await {
            return Ok(());
        }
        let idle = matches!(self.link.session().state(), crate::mqtt::State::Disconnected);
        let until = if idle { self.next_tick_ms.min(self.next_connect_ms) } else { self.next_tick_ms };
        let event = self.link.next_event(self.clock, until).await;
        if let Some(event) = self.link_result(event) {
            self.on_event(event).await?;
        }
        self.tick_if_due().await
    }

    /// Between two slices of a running job: everything the link has brought, a
    /// reconnect or a tick if one is due, without waiting for anything (see the module
    /// docs). A `Run` the core emits meanwhile is queued behind the running job.
    async fn between_slices(&mut self) -> Result<(), AgentError> {
        if self.core.is_link_up() && !self.link.session().is_connected() {
            self.handle(Input::LinkDown).await?;
        }
        while self.held.front().is_some_and(|m| self.has_room_for(m)) {
            if let Some(held) = self.held.pop_front() {
                self.on_message(held).await?;
            }
        }
        if !self.link_paused && !self.connect_if_due().await {
            loop {
                let event = self.link.poll_event(self.clock, LINGER_MS).await;
                match self.link_result(event) {
                    Some(Event::Message { topic, payload, token, .. }) => {
                        let message = Held { topic, payload, token };
                        // In order: nothing overtakes a held message.
                        if self.held.is_empty() && self.has_room_for(&message) {
                            self.on_message(message).await?;
                            continue;
                        }
                        self.console.line(format_args!(
                            "agent: held a {} byte message until there is room for it",
                            message.payload.len()
                        ));
                        self.held.push_back(message);
                        let free = self.console.heap().map_or(0, |h| h.size.saturating_sub(h.used));
                        if free < self.max_packet_bytes.saturating_add(HEAP_MARGIN) {
                            self.console.line(format_args!("agent: link paused until the job ends"));
                            self.link_paused = true;
                            break;
                        }
                    }
                    Some(event) => self.on_event(event).await?,
                    None => break,
                }
            }
        }
        self.tick_if_due().await
    }

    /// Whether `message` can be handled mid-job: the heap has room for it, and it is not
    /// a job for a queue that is full (the core would refuse it as `QueueFull`, where
    /// the job can simply wait its turn; read unverified, only to decide when).
    fn has_room_for(&self, message: &Held) -> bool {
        let free = self.console.heap().map(|h| h.size.saturating_sub(h.used));
        let fits = free.is_some_and(|free| free >= handling_cost(message.payload.len()).saturating_add(HEAP_MARGIN));
        let queue_full = self.core.queue_depth() >= self.queue_capacity;
        fits && !(queue_full && fleet_schemas::verify::claimed_execution(&message.payload).1 > 0)
    }

    /// Sends CONNECT if the link is down and the reconnect is due; whether it did.
    async fn connect_if_due(&mut self) -> bool {
        let idle = matches!(self.link.session().state(), crate::mqtt::State::Disconnected);
        if !idle || self.clock.now_ms() < self.next_connect_ms {
            return false;
        }
        let will = to_will(self.core.last_will());
        self.link.session().set_will(Some(will));
        if let Err(error) = self.link.connect(self.clock, QUIET_MS).await {
            self.console.line(format_args!("mqtt: cannot connect: {error}"));
            self.schedule_reconnect();
        }
        true
    }

    /// The event a link call returned, if any; a failure is logged and schedules the
    /// reconnect.
    fn link_result(&mut self, result: Result<Option<Event>, LinkError>) -> Option<Event> {
        match result {
            Ok(event) => event,
            Err(error) => {
                self.console.line(format_args!("mqtt: link lost: {error}"));
                self.schedule_reconnect();
                None
            }
        }
    }

    async fn tick_if_due(&mut self) -> Result<(), AgentError> {
        if self.clock.now_ms() >= self.next_tick_ms {
            self.next_tick_ms = self.clock.now_ms().saturating_add(TICK_MS);
            self.handle(Input::Tick).await?;
        }
        Ok(())
    }

    async fn on_event(&mut self, event: Event) -> Result<(), AgentError> {
        match event {
            Event::Connected { session_present } => {
                self.console.line(format_args!("mqtt: connected (session present: {session_present})"));
                self.backoff_ms = MIN_BACKOFF_MS;
                self.handle(Input::LinkUp).await
            }
            Event::Message { topic, payload, token, .. } => self.on_message(Held { topic, payload, token }).await,
            Event::Skipped { topic, len } => {
                self.console.line(format_args!("mqtt: dropped a {len} byte message on {topic}: over the packet limit"));
                Ok(())
            }
            Event::Subscribed { granted: false, .. } => {
                self.console.line(format_args!("mqtt: a subscription was refused"));
                Ok(())
            }
            Event::Published { .. } | Event::Subscribed { .. } | Event::Unsubscribed { .. } => Ok(()),
        }
    }

    async fn on_message(&mut self, message: Held) -> Result<(), AgentError> {
        let Held { topic, payload, token } = message;
        // QoS 0 messages have no token; 0 names none (session tokens are never 0).
        let delivery = DeliveryToken(token.map_or(0, |t| t.0));
        let started = self.clock.now_ms();
        self.handle(Input::Message { topic: &topic, payload: &payload, delivery }).await?;
        let took = self.clock.now_ms().saturating_sub(started);
        self.console.line(format_args!("agent: {} byte message on {topic} handled in {took} ms", payload.len()));
        Ok(())
    }

    /// Feeds one input to the core and performs its actions, in order.
    async fn handle(&mut self, input: Input<'_>) -> Result<(), AgentError> {
        let now = Now::new(self.clock.now_ms(), self.clock.unix_time());
        let actions = self.core.handle(input, now);
        for action in actions {
            self.perform(action).await?;
        }
        if self.link.flush().await.is_err() {
            self.console.line(format_args!("mqtt: link lost while writing"));
        }
        Ok(())
    }

    async fn perform(&mut self, action: Action) -> Result<(), AgentError> {
        let session = self.link.session();
        let result = match action {
            Action::Persist(ops) => {
                self.journal.append(&ops).await?;
                for op in &ops {
                    if let StoreOp::AckEvents { through_seq } = op {
                        self.console.line(format_args!("journal: events acked through {through_seq}"));
                    }
                }
                Ok(())
            }
            Action::Publish(Publish { topic, payload, qos, retain }) => {
                session.publish(&topic, &payload, qos_of(qos), retain).map(drop)
            }
            Action::AckDelivery(DeliveryToken(token)) => {
                session.ack(Token(token));
                Ok(())
            }
            Action::Run { key, job } => {
                self.console.line(format_args!("job: queued {}", Key(&key)));
                self.runs.push_back((key, job));
                Ok(())
            }
            Action::Stop { key } => {
                if let Some(at) = self.runs.iter().position(|(k, _)| *k == key) {
                    self.runs.remove(at);
                    self.stopped.push_back(key);
                } else if let Some((_, stop)) = self.running.as_ref().filter(|(k, _)| *k == key) {
                    // Ends before its next slice; the core records the cancel itself.
                    stop.stop();
                }
                Ok(())
            }
            Action::Subscribe { topic, qos } => session.subscribe(&topic, qos_of(qos)).map(drop),
            Action::Unsubscribe { topic } => session.unsubscribe(&topic).map(drop),
            Action::Notice(notice) => {
                self.console.line(format_args!("agent: {}", NoticeText(&notice)));
                Ok(())
            }
        };
        match result {
            // The core republishes and resubscribes after the next LinkUp.
            Ok(()) | Err(SessionError::NotConnected) => Ok(()),
            Err(error) => {
                self.console.line(format_args!("mqtt: {error}"));
                Ok(())
            }
        }
    }

    /// Runs one execution to its end.
    async fn execute(&mut self, key: &ExecutionKey, mut job: Box<JobSpec>) -> Result<Outcome, AgentError> {
        let module = match &mut job.module {
            // Taken out of the spec: once the job is instantiated nothing needs the bytes,
            // and a job running in slices leaves the heap to what arrives meanwhile.
            ModuleSource::Inline(bytes) => core::mem::take(bytes),
            ModuleSource::Chunked(spec) => match self.journal.load_module(spec.hash).await? {
                Some(bytes) if module_matches(&bytes, spec) => bytes,
                _ => {
                    self.handle(Input::ModuleLost { hash: spec.hash }).await?;
                    return Ok(failed(FailReason::ModuleUnavailable, "the stored module is gone or damaged"));
                }
            },
        };
        self.console.line(format_args!("job: running {}", Key(key)));
        let started = self.clock.now_ms();
        let stop = StopSignal::new();
        let mut run = self.executor.start(&Job::from_spec(&job, &module).with_stop(stop.clone()), self.inputs.clone());
        drop(module);
        self.running = Some((key.clone(), stop));
        // What the slicing costs, for the log: slices, the longest one, time spent on
        // the link in between.
        let (mut slices, mut longest_ms, mut between_ms) = (1u32, 0, 0);
        let mut slice_started = started;
        let result = loop {
            match self.executor.resume(run) {
                Slice::Finished(result) => break result,
                Slice::Paused(paused) => {
                    run = paused;
                    let paused_at = self.clock.now_ms();
                    longest_ms = longest_ms.max(paused_at.saturating_sub(slice_started));
                    if let Err(error) = self.between_slices().await {
                        self.running = None;
                        self.link_paused = false;
                        return Err(error);
                    }
                    slice_started = self.clock.now_ms();
                    between_ms += slice_started.saturating_sub(paused_at);
                    slices += 1;
                }
            }
        };
        self.running = None;
        self.link_paused = false;
        longest_ms = longest_ms.max(self.clock.now_ms().saturating_sub(slice_started));
        let outcome = match result {
            Ok(report) => Outcome::Succeeded(report),
            Err(failure) => {
                Outcome::Failed { reason: failure.reason, message: failure.message, report: failure.report }
            }
        };
        let (verdict, fuel) = match &outcome {
            Outcome::Succeeded(report) => ("succeeded", report.fuel_used),
            Outcome::Failed { report, .. } => ("failed", report.fuel_used),
        };
        self.console.line(format_args!(
            "job: {verdict} {} in {} ms, {fuel} fuel, {slices} slices, longest {longest_ms} ms, link {between_ms} ms",
            Key(key),
            self.clock.now_ms().saturating_sub(started)
        ));
        if let Some(heap) = self.console.heap() {
            self.console.line(format_args!("heap: peak {} of {} bytes (in use {})", heap.peak, heap.size, heap.used));
        }
        Ok(outcome)
    }

    fn schedule_reconnect(&mut self) {
        self.next_connect_ms = self.clock.now_ms().saturating_add(self.backoff_ms);
        self.backoff_ms = self.backoff_ms.saturating_mul(2).min(MAX_BACKOFF_MS);
    }
}

/// A message taken off the link, not yet handed to the core.
struct Held {
    topic: String,
    payload: alloc::vec::Vec<u8>,
    token: Option<Token>,
}

fn qos_of(qos: fleet_agent_core::QoS) -> QoS {
    match qos {
        fleet_agent_core::QoS::AtMostOnce => QoS::AtMostOnce,
        fleet_agent_core::QoS::AtLeastOnce => QoS::AtLeastOnce,
    }
}

fn to_will(will: Publish) -> Will {
    Will { topic: will.topic, payload: will.payload, qos: qos_of(will.qos), retain: will.retain }
}

fn failed(reason: FailReason, message: &str) -> Outcome {
    Outcome::Failed { reason, message: String::from(message), report: RunReport::default() }
}

/// A notice as a log line. Written out instead of `Debug`: the derived formatting of
/// every type a notice can carry costs flash the board does not have to spare.
struct NoticeText<'n>(&'n Notice);

impl fmt::Display for NoticeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Notice::IgnoredTopic => f.write_str("a message on a topic the agent does not read"),
            Notice::EnvelopeRejected(reason) => write!(f, "envelope rejected: {reason}"),
            Notice::RejectionNotReported => f.write_str("the outbox is full: a rejection was not reported"),
            Notice::AckRefused(reason) => write!(f, "event ack refused: {reason}"),
            Notice::RotationRefused(reason) => write!(f, "key rotation refused: {reason}"),
            Notice::RotationApplied { rotation_seq } => write!(f, "key rotation {rotation_seq} applied"),
            Notice::ChunkRefused(error) => write!(f, "module chunk refused: {error}"),
            Notice::UnexpectedChunk => f.write_str("a module chunk nobody asked for"),
            Notice::UnknownExecution(key) => write!(f, "finished execution {} is unknown", Key(key)),
            Notice::EventNotEncoded => f.write_str("an event could not be encoded"),
            Notice::EnvelopeBeforeSync => f.write_str("envelope dropped: the store is new and not yet synced"),
            Notice::SyncRequested => f.write_str("the store is new: sync requested from the controller"),
            Notice::Synced { replay_floor, event_base } => {
                write!(f, "store synced: replay floor {replay_floor}, event base {event_base}")
            }
            Notice::SyncRefused(reason) => write!(f, "sync grant refused: {reason}"),
            Notice::SyncForAnotherIncarnation => f.write_str("a sync grant for another incarnation ignored"),
        }
    }
}

/// An execution key as one log word: `job/device/attempt`.
struct Key<'k>(&'k ExecutionKey);

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.0.job_id, self.0.device_id, self.0.attempt)
    }
}
