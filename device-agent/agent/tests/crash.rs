//! Crash safety, in the manner of SQLite's crash tests: the real `fleet-agent` binary is
//! SIGKILLed (a power cut, as far as the process can tell) at random points while it
//! receives envelopes, runs jobs and syncs events, and restarted on the same state
//! directory each time. At the end, the test controller (deduplicating by event seq, as
//! the real controller does) must hold, for every job pushed:
//!
//! * exactly one `Accepted` and exactly one terminal event: none lost, none doubled;
//! * at most one `Started` (an execution may run again after a crash, but says so once);
//!
//! and for the device as a whole: event seqs from 1 with no gap (no stored event was
//! lost) and never two different events under one seq (an event is stored before it is
//! published, so a seq is never reused for another event after a crash).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use fleet_schemas::{EventKind, ExecutionKey};
use support::{Options, World, hello, job};

/// How many times the agent is killed.
const KILLS: usize = 55;

#[test]
fn sigkill_anywhere_loses_and_doubles_nothing() {
    let mut world =
        World::start(Options { local: "concurrency = 2\nqueue_capacity = 256".into(), ..Options::default() });
    let mut agent = world.spawn_agent();
    // The first run creates the persistent session and its subscriptions; from then on
    // the broker keeps envelopes for the device while it is down.
    world.wait_online();

    let mut pushed: Vec<ExecutionKey> = Vec::new();
    for kill in 0..KILLS {
        // A few jobs per round, pushed while the agent starts, runs or is about to die:
        // mostly quick ones, some that run long enough to be killed mid-execution.
        for _ in 0..fastrand::usize(0..=2) {
            let spec =
                if fastrand::u8(0..4) == 0 { job(fleet_example_jobs::SUM_COMPUTE, &["3000000"]) } else { hello() };
            pushed.push(world.push(&spec));
        }
        // Kill points spread over start-up (store recovery, connect), receiving,
        // executing and syncing.
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..350)));
        agent.kill();
        if kill % 10 == 0 {
            // Sometimes envelopes pile up at the broker while the device is down.
            pushed.push(world.push(&hello()));
        }
        agent = world.spawn_agent();
    }

    // The last agent lives: everything must settle.
    world.wait_for("a terminal event for every job pushed", |s| pushed.iter().all(|k| s.finished(k.job_id)));
    drop(agent);

    // Where the kills landed, read from the agent's own log (informational).
    let log = std::fs::read_to_string(world.dir.path().join("agent.log")).unwrap_or_default();
    let starts = log.lines().filter(|l| l.contains("execution started")).count();
    let recovered_busy = log
        .lines()
        .filter(|l| l.contains("store recovered") && !(l.contains("queued=0") && l.contains("outbox=0")))
        .count();
    eprintln!(
        "{starts} execution starts for {} jobs (the surplus ran again after a kill mid-run); \
         {recovered_busy} restarts found queued work or unacknowledged events",
        pushed.len()
    );

    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        let last = *s.events.keys().last().unwrap();
        assert_eq!(s.contiguous_through(), last, "a gap in the device's event seqs: an event was lost");
        for key in &pushed {
            let events: Vec<&EventKind> = s.events.values().filter(|e| e.key == *key).map(|e| &e.kind).collect();
            let count = |f: fn(&EventKind) -> bool| events.iter().filter(|k| f(k)).count();
            assert_eq!(count(|k| matches!(k, EventKind::Accepted)), 1, "{key:?}: {events:?}");
            assert_eq!(count(|k| k.is_terminal()), 1, "{key:?}: {events:?}");
            assert!(count(|k| matches!(k, EventKind::Started)) <= 1, "{key:?}: {events:?}");
            assert!(matches!(events.last(), Some(EventKind::Succeeded(_))), "{key:?}: {events:?}");
        }
        // Nothing the controller did not send.
        assert!(s.events.values().all(|e| pushed.contains(&e.key)), "an event for an execution never pushed");
        eprintln!(
            "{KILLS} kills, {} jobs, {} distinct events, {} arrivals (duplicates are republishes after restarts)",
            pushed.len(),
            s.events.len(),
            s.arrivals.len()
        );
    });
}
