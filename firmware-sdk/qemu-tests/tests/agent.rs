//! The agent image end to end: `fleet-agent-core` on the emulated Cortex-M4, over MQTT
//! 3.1.1 to the fleet's own broker, with a test controller that signs envelopes and
//! verifies the device-signed events.
//!
//! Each test provisions a fresh flash file (config block + empty journal), starts the
//! fleet (broker and controller) and the board, and asserts on what the controller
//! receives, as the real controller would see it.

use std::time::{Duration, Instant};

use fleet_executor::{ExecutorConfig, Job, NoInputs, WasmiExecutor};
use fleet_firmware_qemu_tests::board::{Board, agent_command};
use fleet_firmware_qemu_tests::fleet::{DEVICE_PASSWORD, Fleet, Received, ready};
use fleet_firmware_qemu_tests::provision::{golden_device, write_flash};
use fleet_firmware_qemu_tests::proxy::Proxy;
use fleet_firmware_qemu_tests::{firmware, qemu_command, scratch_dir};
use fleet_schemas::{DeviceId, EventKind, ExecutionEvent, ExecutionKey, JobId, Presence, Rejection};

/// Boot, journal replay, connect (QEMU's chardev connects asynchronously, so the
/// first CONNECT may be lost and retried).
const BOOT: Duration = Duration::from_secs(30);
/// Verify, store, sign, run and report one small job.
const JOB: Duration = Duration::from_secs(60);

fn online(received: &[Received]) -> bool {
    received.iter().any(|r| matches!(r, Received::Status(s) if s.state == Presence::Online))
}

fn terminal(event: &ExecutionEvent) -> bool {
    ends(&event.kind)
}

fn ends(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Succeeded(_) | EventKind::Failed { .. } | EventKind::Rejected { .. } | EventKind::Canceled
    )
}

/// The distinct events (by event seq) of one execution, checking that every copy of
/// a seq is byte for byte the same event (a republished one, not a second one).
fn distinct_events<'f>(fleet: &'f Fleet, key: &ExecutionKey) -> Vec<&'f ExecutionEvent> {
    let mut seen: Vec<(&ExecutionEvent, &Vec<u8>)> = Vec::new();
    for received in &fleet.received {
        if let Received::Event(event, bytes) = received {
            if event.key != *key {
                continue;
            }
            match seen.iter().find(|(e, _)| e.event_seq == event.event_seq) {
                Some((_, first)) => {
                    assert_eq!(*first, bytes, "event seq {} was reported twice, differently", event.event_seq)
                }
                None => seen.push((event, bytes)),
            }
        }
    }
    seen.into_iter().map(|(e, _)| e).collect()
}

fn start_board(fleet: &Fleet, dir: &std::path::Path) -> Board {
    Board::start(agent_command(&firmware("agent"), dir, fleet.port))
}

#[test]
fn runs_a_signed_hello_job_and_reports_device_signed_events() {
    let dir = scratch_dir("agent-hello");
    let mut fleet = Fleet::start();
    write_flash(&dir, &golden_device(DEVICE_PASSWORD, fleet.port));
    let mut board = start_board(&fleet, &dir);
    assert!(fleet.wait_until(BOOT, ready), "the device never said it is online and synced\n{board}");

    let job = Fleet::job(1, fleet_example_jobs::HELLO, &[], 0);
    let envelope = fleet.envelope(job);
    fleet.send_job(envelope);
    let done = |r: &[Received]| r.iter().any(|r| matches!(r, Received::Event(e, _) if terminal(e)));
    assert!(fleet.wait_until(JOB, done), "no terminal event\n{board}");

    assert!(!fleet.received.iter().any(|r| matches!(r, Received::Forged(_))), "an event failed verification");
    let events = fleet.events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Accepted => "accepted",
            EventKind::Started => "started",
            EventKind::Succeeded(_) => "succeeded",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["accepted", "started", "succeeded"], "{events:#?}\n{board}");
    let seqs: Vec<u64> = events.iter().map(|e| e.event_seq).collect();
    assert_eq!(seqs, [1, 2, 3], "event seqs start at 1 and have no gaps");
    let EventKind::Succeeded(report) = &events[2].kind else { unreachable!() };
    let output = String::from_utf8_lossy(&report.output);
    assert!(output.contains("gw-001"), "the job's output names the device: {output:?}");
    assert!(report.fuel_used > 0);

    // The controller has them: the device may now drop them from its outbox.
    fleet.ack(3);
    assert!(board.wait_for("journal: events acked through 3", JOB), "the ack was not stored\n{board}");

    // Power off: the broker publishes the last-will, the retained status goes offline.
    board.kill();
    let offline = |r: &[Received]| matches!(r.last(), Some(Received::Status(s)) if s.state == Presence::Offline);
    assert!(fleet.wait_until(Duration::from_secs(15), offline), "the last-will did not say offline");
    eprintln!("{board}");
}

#[test]
fn a_power_cut_mid_job_ends_in_exactly_one_terminal_event() {
    let dir = scratch_dir("agent-power-cut");
    let mut fleet = Fleet::start();
    write_flash(&dir, &golden_device(DEVICE_PASSWORD, fleet.port));
    let mut board = start_board(&fleet, &dir);
    assert!(fleet.wait_until(BOOT, ready), "the device never said it is online and synced\n{board}");

    // A job that runs for a few seconds on the emulated board, so the power can be cut
    // while it runs.
    let job = Fleet::job(2, fleet_example_jobs::SUM_COMPUTE, &["3000000"], 2_000_000_000);
    let job_id = job.job_id;
    let envelope = fleet.envelope(job);
    fleet.send_job(envelope);
    let started = |r: &[Received]| r.iter().any(|r| matches!(r, Received::Event(e, _) if e.kind == EventKind::Started));
    assert!(fleet.wait_until(JOB, started), "the job never started\n{board}");
    assert!(board.wait_for("job: running", JOB), "{board}");
    board.kill();
    let before = board.console();
    assert!(!before.contains("job: succeeded"), "the job finished before the power cut; make it longer\n{before}");

    // Power back on, same flash: the execution is still queued, runs again, and ends.
    let mut board = start_board(&fleet, &dir);
    let done = |r: &[Received]| r.iter().any(|r| matches!(r, Received::Event(e, _) if terminal(e)));
    assert!(fleet.wait_until(Duration::from_secs(120), done), "no terminal event after the restart\n{board}");
    assert!(board.console().contains("agent: recovered 1 queued"), "{board}");

    let key = ExecutionKey {
        job_id,
        device_id: fleet_schemas::DeviceId::new("gw-001").unwrap_or_else(|e| panic!("{e}")),
        attempt: 1,
    };
    let events = distinct_events(&fleet, &key);
    let count = |kind: fn(&EventKind) -> bool| events.iter().filter(|e| kind(&e.kind)).count();
    assert_eq!(count(|k| *k == EventKind::Accepted), 1, "{events:#?}");
    assert_eq!(count(|k| *k == EventKind::Started), 1, "Started is not written twice: {events:#?}");
    assert_eq!(events.iter().filter(|e| terminal(e)).count(), 1, "exactly one terminal event: {events:#?}");
    let last = events.iter().find(|e| terminal(e)).map(|e| &e.kind);
    assert!(matches!(last, Some(EventKind::Succeeded(_))), "{last:?}\n{board}");

    // Nothing more comes: the terminal event is not doubled by later resends.
    fleet.ack(3);
    assert!(board.wait_for("journal: events acked through 3", JOB), "{board}");
    fleet.wait_until(Duration::from_secs(3), |_| false);
    let events = distinct_events(&fleet, &key);
    assert_eq!(events.iter().filter(|e| terminal(e)).count(), 1);
    assert_eq!(events.len(), 3, "{events:#?}");
    eprintln!("--- before the power cut\n{before}{board}");
}

/// The board's MQTT keep-alive (`Settings::microcontroller`); the broker drops a
/// client that is silent for one and a half of it.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The `ms` of the board's `job: <verdict> <key> in <ms> ms, ...` line for `job`.
fn job_ms(console: &str, job: &JobId) -> Option<u64> {
    let key = format!("{}/gw-001/1 in ", job);
    let line = console.lines().find(|l| l.starts_with("job: ") && l.contains(&key))?;
    line.split(&key).nth(1)?.split(' ').next()?.parse().ok()
}

#[test]
fn a_long_job_keeps_the_board_online_and_what_is_sent_meanwhile_is_acknowledged_and_run_after() {
    let dir = scratch_dir("agent-stays-online");
    let mut fleet = Fleet::start();
    write_flash(&dir, &golden_device(DEVICE_PASSWORD, fleet.port));
    let mut board = start_board(&fleet, &dir);
    assert!(fleet.wait_until(BOOT, ready), "the device never said it is online and synced\n{board}");
    let connects = board.count("mqtt: connected");

    // Runs for about three keep-alive periods on the emulated board: twice what the
    // broker waits on a silent client before it drops it and publishes the last-will.
    let long = Fleet::job(5, fleet_example_jobs::SUM_COMPUTE, &["25000000"], 2_000_000_000);
    let (long_id, long_spec) = (long.job_id, long.clone());
    let envelope = fleet.envelope(long);
    fleet.send_job(envelope);
    assert!(board.wait_for("job: running", JOB), "the long job never started\n{board}");
    let running = Instant::now();

    // A job sent while it runs: verified, stored and acknowledged at once (its
    // Accepted event), run after.
    fleet.wait_until(KEEP_ALIVE, |_| false);
    let hello = Fleet::job(6, fleet_example_jobs::HELLO, &[], 0);
    let hello_id = hello.job_id;
    let envelope = fleet.envelope(hello);
    let sent = Instant::now();
    fleet.send_job(envelope);
    let of = |job: JobId, kind: fn(&EventKind) -> bool| {
        move |r: &[Received]| {
            r.iter().any(|r| matches!(r, Received::Event(e, _) if e.key.job_id == job && kind(&e.kind)))
        }
    };
    assert!(
        fleet.wait_until(Duration::from_secs(5), of(hello_id, |k| *k == EventKind::Accepted)),
        "the envelope sent during the job was not accepted while it ran\n{board}"
    );
    let accepted_after = sent.elapsed();
    assert!(!of(long_id, ends)(&fleet.received), "the long job ended before the second envelope came; make it longer");
    // The controller has the three events so far (the device sends a few ahead of acks).
    fleet.ack(3);

    // One as large as they come: its module is the long job's, and the heap cannot
    // hold both jobs while it handles it. It is held, unacknowledged, until the long
    // job ends, and then accepted and run.
    let large = Fleet::job(7, fleet_example_jobs::SUM_COMPUTE, &["1000"], 0);
    let large_id = large.job_id;
    let envelope = fleet.envelope(large);
    fleet.send_job(envelope);
    assert!(board.wait_for("held a 15819 byte message until there is room", JOB), "{board}");
    assert!(fleet.wait_until(Duration::from_secs(120), of(long_id, ends)), "the long job never ended\n{board}");
    assert!(fleet.wait_until(JOB, of(large_id, |k| *k == EventKind::Accepted)), "the held envelope was lost\n{board}");
    fleet.ack(5);
    let all_ended = move |r: &[Received]| of(hello_id, ends)(r) && of(large_id, ends)(r);
    assert!(fleet.wait_until(JOB, all_ended), "the jobs sent meanwhile never ended\n{board}");
    assert!(!board.console().contains("panicked"), "{board}");
    let console = board.console();
    let long_ms = job_ms(&console, &long_id).unwrap_or_else(|| panic!("no end line for the long job\n{board}"));
    assert!(
        long_ms > KEEP_ALIVE.as_millis() as u64 * 2,
        "the long job ran {long_ms} ms, not past two keep-alive periods; make it longer\n{board}"
    );

    // Never offline, never reconnected.
    let offline = fleet.received.iter().any(|r| matches!(r, Received::Status(s) if s.state == Presence::Offline));
    assert!(!offline, "the board went offline while it worked\n{board}");
    assert_eq!(board.count("mqtt: connected"), connects, "the board reconnected while it worked\n{board}");

    // In order: hello accepted during the long job, the large one after it; both run
    // after it, and succeed.
    let events = fleet.events();
    let at = |job: JobId, kind: fn(&EventKind) -> bool| {
        events.iter().position(|e| e.key.job_id == job && kind(&e.kind)).unwrap_or_else(|| panic!("{events:#?}"))
    };
    assert!(at(hello_id, |k| *k == EventKind::Accepted) < at(long_id, ends), "{events:#?}");
    assert!(at(long_id, ends) < at(large_id, |k| *k == EventKind::Accepted), "{events:#?}");
    assert!(at(long_id, ends) < at(hello_id, |k| *k == EventKind::Started), "{events:#?}");
    for job in [hello_id, large_id] {
        assert!(matches!(events[at(job, ends)].kind, EventKind::Succeeded(_)), "{events:#?}");
        let terminals = events.iter().filter(|e| e.key.job_id == job && ends(&e.kind)).count();
        assert_eq!(terminals, 1, "{events:#?}");
    }

    // The same output and fuel as the job run at once, unsliced, by the same wasmi.
    let EventKind::Succeeded(report) = &events[at(long_id, ends)].kind else {
        panic!("the long job failed: {events:#?}\n{board}");
    };
    let device = DeviceId::new("gw-001").unwrap_or_else(|e| panic!("{e}"));
    let mut host =
        WasmiExecutor::new(ExecutorConfig::microcontroller(device)).unwrap_or_else(|e| panic!("{e}")).without_clock();
    let fleet_schemas::ModuleSource::Inline(module) = &long_spec.module else { unreachable!() };
    let unsliced = host
        .run(&Job::from_spec(&long_spec, module), NoInputs)
        .unwrap_or_else(|f| panic!("the job fails on the host: {f}"));
    assert_eq!(report.output, unsliced.output);
    assert_eq!(report.fuel_used, unsliced.fuel_used, "the sliced run used other fuel than the unsliced one");
    let end = console.lines().find(|l| l.contains(&format!("{long_id}/gw-001/1 in "))).unwrap_or_default();
    eprintln!(
        "{end}\nlong job: {:.1} s on the board; envelope sent meanwhile accepted in {} ms\n{board}",
        running.elapsed().as_secs_f64(),
        accepted_after.as_millis()
    );
}

/// WASI preview 1 on the board: a C program built with Debian's clang and wasi-libc
/// (`device-agent/wasi-jobs`) runs with its arguments as argv, stdout as its output and
/// stderr as its logs, the same as on the host's wasmi; one that calls what the fleet does
/// not offer (`sleep`, which is `poll_oneoff`) is refused before it runs, the call named;
/// `clocks` finds the board's timer as its monotonic clock, and no wall clock or
/// randomness; csv-summary in AssemblyScript reads the board's `readings` input (a host
/// file standing in for a sensor on QEMU) as `/inputs/readings` and prints what the
/// fleet-ABI job prints on the same data.
#[test]
fn a_c_program_runs_on_the_board_as_a_wasi_job_and_an_unoffered_call_is_refused_by_name() {
    let dir = scratch_dir("agent-wasi");
    let mut fleet = Fleet::start();
    write_flash(&dir, &golden_device(DEVICE_PASSWORD, fleet.port));
    let readings = b"# timestamp,value\n1,10\n2,20\n3,30\n";
    std::fs::write(dir.join("fleet-readings.csv"), readings).unwrap_or_else(|e| panic!("{e}"));
    let board = start_board(&fleet, &dir);
    assert!(fleet.wait_until(BOOT, ready), "the device never said it is online and synced\n{board}");
    let status = fleet.last_status().unwrap_or_else(|| panic!("no status\n{board}"));
    assert_eq!(status.wasi, ["preview1"], "the board's status does not say it runs WASI: {status:?}");

    let hello = Fleet::job(1, fleet_wasi_jobs::HELLO, &["on", "mps2-an386"], 0);
    let hello_spec = hello.clone();
    let envelope = fleet.envelope(hello);
    fleet.send_job(envelope);
    let sleepy = Fleet::job(2, fleet_wasi_jobs::SLEEPY, &[], 0);
    let envelope = fleet.envelope(sleepy.clone());
    fleet.send_job(envelope);
    let (hello_id, sleepy_id) = (hello_spec.job_id, sleepy.job_id);
    let both_ended = move |r: &[Received]| {
        let ended =
            |job: JobId| r.iter().any(|r| matches!(r, Received::Event(e, _) if e.key.job_id == job && terminal(e)));
        ended(hello_id) && ended(sleepy_id)
    };
    let hello_ended = move |r: &[Received]| {
        r.iter().any(|r| matches!(r, Received::Event(e, _) if e.key.job_id == hello_id && terminal(e)))
    };
    assert!(fleet.wait_until(JOB, hello_ended), "hello in C did not end\n{board}");
    // The device publishes a few events ahead of acks; take hello's three.
    fleet.ack(3);
    assert!(fleet.wait_until(JOB, both_ended), "the two jobs did not both end\n{board}");
    assert!(!board.console().contains("panicked"), "{board}");

    let events = fleet.events();
    let end_of = |job: JobId| {
        events
            .iter()
            .find(|e| e.key.job_id == job && terminal(e))
            .unwrap_or_else(|| panic!("no end for {job}: {events:#?}"))
    };
    let EventKind::Succeeded(report) = &end_of(hello_spec.job_id).kind else {
        panic!("hello in C failed on the board: {events:#?}\n{board}");
    };
    assert_eq!(String::from_utf8_lossy(&report.output), "hello from C on mps2-an386\n");
    assert_eq!(report.logs, ["hello job in C running with 2 argument(s)"]);
    // The same output and fuel as the host's wasmi with the board's settings.
    let device = DeviceId::new("gw-001").unwrap_or_else(|e| panic!("{e}"));
    let mut config = ExecutorConfig::microcontroller(device);
    config.default_limits.memory_pages = 1;
    config.max_limits.memory_pages = 1;
    let mut host = WasmiExecutor::new(config).unwrap_or_else(|e| panic!("{e}")).without_clock();
    let fleet_schemas::ModuleSource::Inline(module) = &hello_spec.module else { unreachable!() };
    let on_host = host.run(&Job::from_spec(&hello_spec, module), NoInputs).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(report.output, on_host.output);
    assert_eq!(report.fuel_used, on_host.fuel_used);

    let sleepy = events.iter().find(|e| e.key.job_id == sleepy_id && terminal(e));
    let Some(ExecutionEvent { kind: EventKind::Failed { reason, message, report }, .. }) = sleepy else {
        panic!("sleepy was not refused: {events:#?}\n{board}");
    };
    assert_eq!(*reason, fleet_schemas::FailReason::Unsupported, "{message}");
    assert!(message.contains("wasi_snapshot_preview1.poll_oneoff"), "{message}");
    assert_eq!(report.fuel_used, 0, "something of it ran: {report:?}");
    let hello_fuel = report_fuel(&end_of(hello_spec.job_id).kind);
    let refused = message.clone();
    let through = events.iter().map(|e| e.event_seq).max().unwrap_or(0);

    // The clocks a job sees on a board.
    fleet.ack(through);
    let clocks = Fleet::job(3, fleet_wasi_jobs::CLOCKS, &[], 0);
    let clocks_id = clocks.job_id;
    let envelope = fleet.envelope(clocks);
    fleet.send_job(envelope);
    let clocks_ended = move |r: &[Received]| {
        r.iter().any(|r| matches!(r, Received::Event(e, _) if e.key.job_id == clocks_id && terminal(e)))
    };
    assert!(fleet.wait_until(JOB, clocks_ended), "clocks did not end\n{board}");
    let events = fleet.events();
    let clocks = events.iter().find(|e| e.key.job_id == clocks_id && terminal(e));
    let Some(ExecutionEvent { kind: EventKind::Succeeded(report), .. }) = clocks else {
        panic!("clocks failed on the board: {events:#?}\n{board}");
    };
    assert_eq!(
        String::from_utf8_lossy(&report.output),
        "monotonic: ok\nrealtime: unsupported\nrandom: unsupported\n",
        "{board}"
    );

    // csv-summary in AssemblyScript (14 KB) on the board's data input.
    let through = events.iter().map(|e| e.event_seq).max().unwrap_or(0);
    fleet.ack(through);
    let mut summary = Fleet::job(4, fleet_wasi_jobs::CSV_SUMMARY_AS, &[], 0);
    summary.inputs = vec!["readings".into()];
    let summary_id = summary.job_id;
    let envelope = fleet.envelope(summary);
    fleet.send_job(envelope);
    let summary_ended = move |r: &[Received]| {
        r.iter().any(|r| matches!(r, Received::Event(e, _) if e.key.job_id == summary_id && terminal(e)))
    };
    assert!(fleet.wait_until(JOB, summary_ended), "csv-summary did not end\n{board}");
    let events = fleet.events();
    let summary = events.iter().find(|e| e.key.job_id == summary_id && terminal(e));
    let Some(ExecutionEvent { kind: EventKind::Succeeded(report), .. }) = summary else {
        panic!("csv-summary in AssemblyScript failed on the board: {events:#?}\n{board}");
    };
    assert_eq!(String::from_utf8_lossy(&report.output), "count=3 min=10 max=30 mean=20.000 skipped=0");
    assert_eq!(report.logs, ["read 3 readings, skipped 0 lines"]);
    let listed = ["readings".to_string()];
    let data = fleet_executor::MemoryInputs::new().with("readings", &readings[..]);
    let abi = host.run(&Job::new(fleet_example_jobs::CSV_SUMMARY).with_inputs(&listed), data);
    assert_eq!(abi.map(|r| r.output).unwrap_or_default(), report.output, "the fleet-ABI job prints otherwise");
    eprintln!(
        "hello in C ({} B module): {hello_fuel} fuel on the board; sleepy refused: {refused}\n{board}",
        fleet_wasi_jobs::HELLO.len(),
    );
}

fn report_fuel(kind: &EventKind) -> u64 {
    match kind {
        EventKind::Succeeded(report) | EventKind::Failed { report, .. } => report.fuel_used,
        _ => 0,
    }
}

#[test]
fn after_the_link_drops_the_device_logs_in_again_and_runs_what_was_queued_meanwhile() {
    let dir = scratch_dir("agent-link-loss");
    let mut fleet = Fleet::start();
    let proxy = Proxy::start(fleet.port);
    write_flash(&dir, &golden_device(DEVICE_PASSWORD, proxy.port));
    let mut board = Board::start(agent_command(&firmware("agent"), &dir, proxy.port));
    assert!(fleet.wait_until(BOOT, ready), "the device never said it is online and synced\n{board}");

    proxy.cut();
    let offline = |r: &[Received]| matches!(r.last(), Some(Received::Status(s)) if s.state == Presence::Offline);
    assert!(fleet.wait_until(Duration::from_secs(15), offline), "the broker did not publish the last-will\n{board}");
    // Sent while the device is away: the broker keeps it for the persistent session.
    let envelope = fleet.envelope(Fleet::job(3, fleet_example_jobs::HELLO, &[], 0));
    fleet.send_job(envelope);

    assert!(board.wait_for("mqtt: link lost", Duration::from_secs(30)), "the firmware never noticed\n{board}");
    let back = |r: &[Received]| matches!(r.last(), Some(Received::Status(s)) if s.state == Presence::Online);
    assert!(fleet.wait_until(Duration::from_secs(60), back), "the device did not come back online\n{board}");
    let done = |r: &[Received]| r.iter().any(|r| matches!(r, Received::Event(e, _) if terminal(e)));
    assert!(fleet.wait_until(JOB, done), "the job queued meanwhile did not run\n{board}");
    assert!(board.console().contains("session present: true"), "{board}");
    let kinds: Vec<bool> = fleet.events().iter().map(|e| matches!(e.kind, EventKind::Succeeded(_))).collect();
    assert_eq!(kinds, [false, false, true], "Accepted, Started, Succeeded\n{board}");
    eprintln!("{board}");
}

#[test]
fn a_wrong_password_is_refused_and_the_device_stays_offline() {
    let dir = scratch_dir("agent-refused");
    let mut fleet = Fleet::start();
    write_flash(&dir, &golden_device("not-the-password", fleet.port));
    let mut board = start_board(&fleet, &dir);
    assert!(board.wait_for("bad username or password", BOOT), "{board}");
    assert!(!fleet.wait_until(Duration::from_secs(1), online), "a refused device must not be online");
    // It keeps trying (credentials can be fixed at the broker), with backoff.
    assert!(board.wait_for_count("bad username or password", 2, BOOT), "{board}");
}

#[test]
fn an_unprovisioned_board_says_so() {
    let dir = scratch_dir("agent-unprovisioned");
    let mut board = Board::start(qemu_command(&firmware("agent"), &dir, "null"));
    assert_eq!(board.wait_exit(BOOT), Some(1), "{board}");
    assert!(board.console().contains("not provisioned"), "{board}");
}

/// The heap in use printed after each job (`heap: peak P of S bytes (in use U)`).
fn heap_in_use(console: &str) -> Vec<usize> {
    console
        .lines()
        .filter_map(|line| line.strip_prefix("heap: ")?.split("(in use ").nth(1)?.strip_suffix(')')?.parse().ok())
        .collect()
}

#[test]
fn many_jobs_in_a_row_do_not_grow_the_heap() {
    const JOBS: u8 = 12;
    /// Room for the allocator's fragmentation and the core's bounded history.
    const SLACK: usize = 4 * 1024;
    let dir = scratch_dir("agent-heap");
    let mut fleet = Fleet::start();
    write_flash(&dir, &golden_device(DEVICE_PASSWORD, fleet.port));
    let mut board = start_board(&fleet, &dir);
    assert!(fleet.wait_until(BOOT, ready), "the device never said it is online and synced\n{board}");

    for n in 1..=JOBS {
        let job = Fleet::job(100 + n, fleet_example_jobs::HELLO, &[], 0);
        let job_id = job.job_id;
        let envelope = fleet.envelope(job);
        fleet.send_job(envelope);
        let done = |r: &[Received]| {
            r.iter().any(|r| matches!(r, Received::Event(e, _) if e.key.job_id == job_id && terminal(e)))
        };
        assert!(fleet.wait_until(JOB, done), "job {n}: no terminal event\n{board}");
        let last = fleet.events().iter().find(|e| e.key.job_id == job_id && terminal(e)).cloned();
        let last = last.unwrap_or_else(|| unreachable!()).clone();
        assert!(matches!(last.kind, EventKind::Succeeded(_)), "job {n}: {last:?}\n{board}");
        // Acked, so the outbox drains and only leaks are left to grow.
        let through = fleet.events().iter().map(|e| e.event_seq).max().unwrap_or(0);
        fleet.ack(through);
        let stored = format!("journal: events acked through {through}");
        assert!(board.wait_for(&stored, JOB), "job {n}: the ack was not stored\n{board}");
    }

    let used = heap_in_use(&board.console());
    eprintln!("heap in use after each job: {used:?}");
    assert_eq!(used.len(), usize::from(JOBS), "one heap line per job\n{board}");
    assert!(used[used.len() - 1] <= used[1] + SLACK, "the heap grows with every job: {used:?}\n{board}");
    board.kill();
}

#[test]
fn an_erased_store_syncs_refuses_the_envelope_it_ran_and_reports_past_the_old_events() {
    let dir = scratch_dir("agent-erased");
    let mut fleet = Fleet::start();
    let config = golden_device(DEVICE_PASSWORD, fleet.port);
    write_flash(&dir, &config);
    let mut board = start_board(&fleet, &dir);
    assert!(fleet.wait_until(BOOT, ready), "the device never said it is online and synced\n{board}");
    let ran = fleet.envelope(Fleet::job(7, fleet_example_jobs::HELLO, &[], 0));
    fleet.send_job(ran.clone());
    let done = |r: &[Received]| r.iter().any(|r| matches!(r, Received::Event(e, _) if terminal(e)));
    assert!(fleet.wait_until(JOB, done), "no terminal event\n{board}");
    fleet.ack(3);
    assert!(board.wait_for("journal: events acked through 3", JOB), "{board}");
    board.kill();

    // The store partition erased (the config block kept): the board boots as new.
    write_flash(&dir, &config);
    let mut board = start_board(&fleet, &dir);
    let synced_twice = |r: &[Received]| r.iter().filter(|r| matches!(r, Received::Synced { .. })).count() == 2;
    assert!(fleet.wait_until(BOOT, synced_twice), "the erased board did not sync\n{board}");
    let mut second = fleet.received.iter().filter_map(|r| match r {
        Received::Synced { replay_floor, event_base } => Some((*replay_floor, *event_base)),
        _ => None,
    });
    assert_eq!(second.next_back(), Some((1, 3)), "the grant: floor = the seq it ran, base = its events");
    assert!(board.wait_for("store synced: replay floor 1, event base 3", BOOT), "{board}");

    // The envelope it ran before the erase, still valid, is a replay now; a new job's
    // events are numbered after the old ones, so the controller records them.
    fleet.send_job(ran);
    let next = Fleet::job(8, fleet_example_jobs::HELLO, &[], 0);
    let next_id = next.job_id;
    let envelope = fleet.envelope(next);
    fleet.send_job(envelope);
    let finished =
        |r: &[Received]| r.iter().any(|r| matches!(r, Received::Event(e, _) if e.key.job_id == next_id && terminal(e)));
    assert!(fleet.wait_until(JOB, finished), "the new job did not finish\n{board}");
    let events = fleet.events();
    let replayed = events.iter().find(|e| {
        e.event_seq > 3 && matches!(e.kind, EventKind::Rejected { reason: Rejection::Replayed { seq: 1, .. } })
    });
    assert!(replayed.is_some(), "the old envelope was not refused as a replay: {events:#?}");
    let succeeded = events.iter().find(|e| e.key.job_id == next_id && matches!(e.kind, EventKind::Succeeded(_)));
    assert!(succeeded.is_some_and(|e| e.event_seq > 3), "{events:#?}");
    board.kill();
}
