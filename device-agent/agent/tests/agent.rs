//! End to end, one real agent process per test: a real broker on loopback, real SQLite
//! files, real Wasm jobs, and a test controller that signs envelopes and verifies the
//! device's signed events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use fleet_schemas::chunk::split_module;
use fleet_schemas::limits::MAX_CHUNK_DATA;
use fleet_schemas::{EventKind, FailReason, Limits, ModuleSource, Order, Presence, Rejection, SigningKey, Unsupported};
use support::{Options, World, hello, job, unix_now};

/// The happy path: a job runs, its events arrive signed by the device, in order; the
/// outbox keeps them until the controller's ack, and trims them after it.
#[test]
fn a_job_runs_and_its_signed_result_is_trimmed_after_the_ack() {
    let mut world = World::start(Options { auto_ack: false, ..Options::default() });
    let _agent = world.spawn_agent();
    world.wait_online();

    let key = world.push(&hello());
    world.wait_for("the hello job's terminal event", |s| s.finished(key.job_id));

    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        let kinds: Vec<&EventKind> = s.of_job(key.job_id).iter().map(|e| &e.kind).collect();
        assert!(
            matches!(kinds.as_slice(), [EventKind::Accepted, EventKind::Started, EventKind::Succeeded(_)]),
            "{kinds:?}"
        );
        let EventKind::Succeeded(report) = kinds[2] else { unreachable!() };
        let output = String::from_utf8_lossy(&report.output);
        assert!(output.contains("hello from gw-test-1"), "output: {output}");
        // Every event is the device's (the controller verified each signature) and the
        // seqs run 1, 2, 3 with no gap.
        assert_eq!(s.contiguous_through(), 3);
    });

    // Not acknowledged yet: the events stay on disk.
    world.wait_for_store("the three events in the outbox", |r| r.outbox.len() == 3 && r.executions.is_empty());
    world.ack_through(3);
    world.wait_for_store("the outbox trimmed after the ack", |r| r.outbox.is_empty() && r.acked_through == 3);
    // And the device says so in its status.
    world.wait_for("a status with an empty outbox", |s| {
        s.statuses.last().is_some_and(|st| st.state == Presence::Online && st.outbox_depth == 0 && st.queue_depth == 0)
    });
}

/// QoS 1 may deliver an envelope twice: it runs once. Replayed, expired, misdirected and
/// badly signed envelopes are refused with the reason, and the agent keeps running.
#[test]
fn duplicates_run_once_and_bad_envelopes_are_rejected_with_their_reason() {
    let mut world = World::start(Options::default());
    let _agent = world.spawn_agent();
    world.wait_online();

    // The same envelope, twice (a redelivery).
    let (first, bytes) = world.run_envelope(&hello());
    world.push_bytes(bytes.clone());
    world.push_bytes(bytes);

    // Replayed: a different job under an already used seq.
    let replayed = hello();
    let used_seq = 1;
    world.push_bytes(world.envelope_at(used_seq, Order::Run { attempt: 1, job: Box::new(replayed.clone()) }));

    // Expired: its validity ended an hour ago.
    let expired = hello();
    let seq = world.take_seq();
    let now = unix_now();
    let envelope = world.envelope_with(
        world.job_key(),
        &world.device,
        seq,
        Order::Run { attempt: 1, job: Box::new(expired.clone()) },
        now - 7200,
        now - 3600,
    );
    world.push_bytes(envelope);

    // Misdirected: signed for another device, sent on this one's topic.
    let misdirected = hello();
    let seq = world.take_seq();
    let other = fleet_schemas::DeviceId::new("gw-other").unwrap();
    let envelope = world.envelope_with(
        world.job_key(),
        &other,
        seq,
        Order::Run { attempt: 1, job: Box::new(misdirected.clone()) },
        now,
        now + 3600,
    );
    world.push_bytes(envelope);

    // Signed by a key the device does not trust.
    let unknown_key = hello();
    let seq = world.take_seq();
    let stranger = SigningKey::from_bytes(&support::random_seed());
    let envelope = world.envelope_with(
        &stranger,
        &world.device,
        seq,
        Order::Run { attempt: 1, job: Box::new(unknown_key.clone()) },
        now,
        now + 3600,
    );
    world.push_bytes(envelope);

    // A trusted key id, but the signature does not match the bytes.
    let tampered = hello();
    let seq = world.take_seq();
    let mut envelope = world.envelope_with(
        world.job_key(),
        &world.device,
        seq,
        Order::Run { attempt: 1, job: Box::new(tampered) },
        now,
        now + 3600,
    );
    let last = envelope.len() - 1;
    envelope[last] ^= 0x55;
    world.push_bytes(envelope);

    // Not a message at all.
    world.push_bytes(b"garbage".to_vec());

    // And the agent still runs a good job afterwards.
    let last_job = world.push(&hello());
    world.wait_for("the last good job's terminal event", |s| s.finished(last_job.job_id));

    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        // The duplicate ran once: one Accepted, one Started, one Succeeded.
        let kinds: Vec<&EventKind> = s.of_job(first.job_id).iter().map(|e| &e.kind).collect();
        assert!(matches!(kinds.as_slice(), [EventKind::Accepted, EventKind::Started, EventKind::Succeeded(_)]), "{kinds:?}");

        let rejected = |job: &fleet_schemas::JobSpec| -> Vec<Rejection> {
            s.of_job(job.job_id)
                .iter()
                .map(|e| match &e.kind {
                    EventKind::Rejected { reason } => reason.clone(),
                    other => panic!("job {} got {other:?}", job.job_id),
                })
                .collect()
        };
        assert!(matches!(rejected(&replayed).as_slice(), [Rejection::Replayed { seq: 1, .. }]));
        assert!(matches!(rejected(&expired).as_slice(), [Rejection::Expired { .. }]));
        assert!(matches!(rejected(&misdirected).as_slice(), [Rejection::WrongTarget { addressed_to }] if addressed_to.as_str() == "gw-other"));
        assert!(matches!(rejected(&unknown_key).as_slice(), [Rejection::UnknownKey { .. }]));
        let reasons = s.rejections();
        assert!(reasons.iter().any(|r| matches!(r, Rejection::BadSignature)), "{reasons:?}");
        assert!(reasons.iter().any(|r| matches!(r, Rejection::Malformed)), "{reasons:?}");
        assert_eq!(reasons.len(), 6, "{reasons:?}");

        let good: Vec<&EventKind> = s.of_job(last_job.job_id).iter().map(|e| &e.kind).collect();
        assert!(matches!(good.as_slice(), [EventKind::Accepted, EventKind::Started, EventKind::Succeeded(_)]), "{good:?}");
    });
}

/// The link is cut while jobs are pushed and while one runs: the broker keeps the
/// envelopes (persistent session), the agent keeps the results (outbox); after the link
/// is back, everything arrives, in order, each execution exactly once.
#[test]
fn offline_work_syncs_in_order_after_reconnect() {
    let mut world = World::start(Options { proxy: true, ..Options::default() });
    let _agent = world.spawn_agent();
    world.wait_online();

    // A job long enough to still be running when the link goes.
    let slow = world.push(&job(fleet_example_jobs::SUM_COMPUTE, &["80000000"]));
    world.wait_for("the slow job to start", |s| {
        s.of_job(slow.job_id).iter().any(|e| matches!(e.kind, EventKind::Started))
    });
    world.proxy.as_ref().unwrap().cut();
    world.wait_for("the broker to publish the offline last-will", |s| {
        s.statuses.last().is_some_and(|st| st.state == Presence::Offline)
    });

    // Jobs pushed while the device is offline wait at the broker.
    let offline: Vec<_> = (0..4).map(|_| world.push(&hello())).collect();
    // The slow job's result is made while offline: it waits in the outbox.
    world.wait_for_store("the slow job's result in the outbox", |r| {
        r.executions.iter().all(|e| e.key != slow) && !r.outbox.is_empty()
    });
    world.seen(|s| assert!(!s.finished(slow.job_id), "a result crossed a cut link"));

    world.proxy.as_ref().unwrap().restore();
    let last = offline.last().unwrap().job_id;
    world.wait_for("every offline job's terminal event", |s| s.finished(last) && s.finished(slow.job_id));

    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        // No gap in the device's event seqs: nothing lost.
        assert_eq!(s.contiguous_through(), *s.events.keys().last().unwrap());
        // The slow job succeeded once; the offline jobs ran once each, in the order they were sent.
        for key in std::iter::once(&slow).chain(&offline) {
            let terminal = s.terminal(key);
            assert_eq!(terminal.len(), 1, "{key:?}: {terminal:?}");
            assert!(matches!(terminal[0].kind, EventKind::Succeeded(_)), "{:?}", terminal[0]);
        }
        let started: Vec<_> =
            s.events.values().filter(|e| matches!(e.kind, EventKind::Started)).map(|e| e.key.clone()).collect();
        let expected: Vec<_> = std::iter::once(slow.clone()).chain(offline.iter().cloned()).collect();
        assert_eq!(started, expected, "executions started out of order");
        // The device came back online.
        assert!(s.statuses.last().is_some_and(|st| st.state == Presence::Online));
    });
}

/// A module too large for an envelope travels as retained chunks: the agent fetches
/// them, stores the module, checks it against the signed hash and runs it; the job
/// reads a data input that the device's agent.toml maps to a local file. A job naming
/// an input the device lacks is refused. A stored module that no longer matches its
/// hash is reported and fetched again.
#[test]
fn a_chunked_module_runs_with_a_data_input_and_is_fetched_again_when_it_rots() {
    let mut world = World::start(Options { local: "[data]\nreadings = \"readings.csv\"".into(), ..Options::default() });
    std::fs::write(world.dir.path().join("readings.csv"), "# timestamp,value\n1,10\n2,20\n3,30\n").unwrap();
    let agent = world.spawn_agent();
    world.wait_online();

    let module = fleet_example_jobs::CSV_SUMMARY;
    let (spec, chunks) = split_module(module, MAX_CHUNK_DATA as u32).unwrap();
    assert!(chunks.len() > 1, "the module should need several chunks");
    for chunk in &chunks {
        world.publish_retained(world.topics.module_chunk(&spec.chain_head, chunk.index), chunk.encode());
    }
    let mut summary = job(&[], &[]);
    summary.module = ModuleSource::Chunked(spec);
    summary.inputs = vec!["readings".into()];
    let key = world.push(&summary);

    let mut wants_missing_input = hello();
    wants_missing_input.inputs = vec!["camera".into()];
    let refused = world.push(&wants_missing_input);

    world.wait_for("the chunked job's terminal event", |s| s.finished(key.job_id) && s.finished(refused.job_id));
    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        let terminal = s.terminal(&key);
        let [event] = terminal.as_slice() else { panic!("{terminal:?}") };
        let EventKind::Succeeded(report) = &event.kind else { panic!("{event:?}") };
        let output = String::from_utf8_lossy(&report.output);
        assert!(output.starts_with("count=3 min=10"), "output: {output}");
        assert!(matches!(
            s.terminal(&refused).as_slice(),
            [e] if matches!(&e.kind, EventKind::Rejected { reason: Rejection::Unsupported(Unsupported::DataInput) })
        ));
    });
    world.wait_for_store("the module kept for later runs", |r| r.modules == vec![spec.hash] && r.assemblies.is_empty());
    drop(agent);

    // The stored module rots on disk: the next run finds it no longer matches its
    // signed hash, fails as `ModuleUnavailable`, and the module is fetched again for
    // the run after.
    let db = rusqlite::Connection::open(world.state_dir().join(fleet_agent::store::DB_FILE)).unwrap();
    let rotted = db.execute("UPDATE module_chunks SET data = zeroblob(length(data)) WHERE offset = 0", []).unwrap();
    assert_eq!(rotted, 1);
    drop(db);
    let _agent = world.spawn_agent();
    world.wait_online();
    let again = fleet_schemas::JobSpec { job_id: fleet_schemas::JobId([0xa1; 16]), ..summary.clone() };
    let rotten = world.push(&again);
    world.wait_for("the run on the rotten module", |s| s.finished(rotten.job_id));
    let refetched = world.push(&fleet_schemas::JobSpec { job_id: fleet_schemas::JobId([0xa2; 16]), ..summary });
    world.wait_for("the run on the refetched module", |s| s.finished(refetched.job_id));
    world.seen(|s| {
        assert!(
            matches!(
                s.terminal(&rotten).as_slice(),
                [e] if matches!(&e.kind, EventKind::Failed { reason: FailReason::ModuleUnavailable, .. })
            ),
            "{:?}",
            s.terminal(&rotten)
        );
        assert!(matches!(s.terminal(&refetched).as_slice(), [e] if matches!(e.kind, EventKind::Succeeded(_))));
    });
}

/// A plain C program compiled for WASI (wasi-libc's `fopen`, `printf`, `fprintf(stderr)`)
/// runs on the real agent: its data input is the file `/inputs/readings`, its stdout
/// the output, its stderr the logs, its exit code the outcome.
#[test]
fn a_c_program_runs_as_a_wasi_job_with_its_data_input_as_a_file() {
    let mut world = World::start(Options { local: "[data]\nreadings = \"readings.csv\"".into(), ..Options::default() });
    std::fs::write(world.dir.path().join("readings.csv"), "# timestamp,value\n1,10\n2,20\n3,30\n").unwrap();
    let _agent = world.spawn_agent();
    world.wait_online();

    let mut summary = job(fleet_wasi_jobs::CSV_SUMMARY, &[]);
    summary.inputs = vec!["readings".into()];
    let key = world.push(&summary);
    let without_input = world.push(&job(fleet_wasi_jobs::CSV_SUMMARY, &[]));
    let mut in_assemblyscript = job(fleet_wasi_jobs::CSV_SUMMARY_AS, &[]);
    in_assemblyscript.inputs = vec!["readings".into()];
    let as_key = world.push(&in_assemblyscript);
    world.wait_for("the WASI jobs' terminal events", |s| {
        s.finished(key.job_id) && s.finished(without_input.job_id) && s.finished(as_key.job_id)
    });
    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        let terminal = s.terminal(&key);
        let [event] = terminal.as_slice() else { panic!("{terminal:?}") };
        let EventKind::Succeeded(report) = &event.kind else { panic!("{event:?}") };
        assert_eq!(String::from_utf8_lossy(&report.output), "count=3 min=10 max=30 mean=20.000 skipped=0");
        assert_eq!(report.logs, ["read 3 readings, skipped 0 lines"]);
        let terminal = s.terminal(&without_input);
        let [event] = terminal.as_slice() else { panic!("{terminal:?}") };
        let EventKind::Failed { reason, message, .. } = &event.kind else { panic!("{event:?}") };
        assert_eq!((*reason, message.as_str()), (FailReason::Trap, "exited with code 2"));
        let terminal = s.terminal(&as_key);
        let [event] = terminal.as_slice() else { panic!("{terminal:?}") };
        let EventKind::Succeeded(report) = &event.kind else { panic!("{event:?}") };
        assert_eq!(
            String::from_utf8_lossy(&report.output),
            "count=3 min=10 max=30 mean=20.000 skipped=0",
            "AssemblyScript"
        );
        assert_eq!(report.logs, ["read 3 readings, skipped 0 lines"], "AssemblyScript");
    });
}

/// WASI 0.2 components run on the real agent from chunks with their data input under
/// `/inputs`: the std Rust csv-summary built for `wasm32-wasip2` (110 KB) and the
/// JavaScript one (12 MB: the SpiderMonkey engine, in some 800 chunks). The agent's
/// status says it runs components.
#[test]
fn wasi_components_in_rust_and_javascript_run_on_the_agent_from_chunks_with_their_data_input() {
    let mut world = World::start(Options { local: "[data]\nreadings = \"readings.csv\"".into(), ..Options::default() });
    std::fs::write(world.dir.path().join("readings.csv"), "# timestamp,value\n1,10\n2,20\n3,30\n").unwrap();
    let _agent = world.spawn_agent();
    world.wait_online();

    let mut keys = Vec::new();
    for (language, module) in
        [("Rust", fleet_wasi_jobs::CSV_SUMMARY_COMPONENT), ("JavaScript", fleet_wasi_jobs::CSV_SUMMARY_JS)]
    {
        let (spec, chunks) = split_module(module, MAX_CHUNK_DATA as u32).unwrap();
        for chunk in &chunks {
            world.publish_retained(world.topics.module_chunk(&spec.chain_head, chunk.index), chunk.encode());
        }
        let mut summary = job(&[], &[]);
        summary.module = ModuleSource::Chunked(spec);
        summary.inputs = vec!["readings".into()];
        // The JavaScript engine's snapshot is 145 pages of memory.
        summary.limits = Limits { fuel: 1_000_000_000, memory_pages: 256, timeout_ms: 60_000 };
        keys.push((language, world.push(&summary)));
    }
    // A debug-built agent takes tens of seconds to compile the JavaScript engine.
    world.wait_for_within("the components' terminal events", std::time::Duration::from_secs(600), |s| {
        keys.iter().all(|(_, key)| s.finished(key.job_id))
    });
    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        for (language, key) in &keys {
            let terminal = s.terminal(key);
            let [event] = terminal.as_slice() else { panic!("{language}: {terminal:?}") };
            let EventKind::Succeeded(report) = &event.kind else { panic!("{language}: {event:?}") };
            assert_eq!(
                String::from_utf8_lossy(&report.output),
                "count=3 min=10 max=30 mean=20.000 skipped=0",
                "{language}"
            );
            assert_eq!(report.logs, ["read 3 readings, skipped 0 lines"], "{language}");
        }
        let status = s.statuses.last().expect("a status");
        assert_eq!(status.wasi, ["preview1", "0.2"], "{status:?}");
    });
}

/// A cancel stops a running job (the executor's stop signal), which frees its slot:
/// with one slot, the next job can only run once the stopped one has really ended.
#[test]
fn a_canceled_job_is_stopped_mid_run_and_the_next_one_runs() {
    let mut world = World::start(Options::default());
    let _agent = world.spawn_agent();
    world.wait_online();

    // Would spin for far longer than the hang guard if nothing stopped it.
    let mut spinning = job(fleet_example_jobs::INFINITE_LOOP, &[]);
    spinning.limits = Limits { fuel: 1_000_000_000_000, memory_pages: 0, timeout_ms: 600_000 };
    let key = world.push(&spinning);
    world.wait_for("the spinning job to start", |s| {
        s.of_job(key.job_id).iter().any(|e| matches!(e.kind, EventKind::Started))
    });
    let seq = world.take_seq();
    world.push_bytes(world.envelope_at(seq, Order::Cancel { job_id: key.job_id }));
    let next = world.push(&hello());

    world.wait_for("the job after the canceled one", |s| s.finished(next.job_id));
    world.seen(|s| {
        let kinds: Vec<&EventKind> = s.of_job(key.job_id).iter().map(|e| &e.kind).collect();
        assert!(
            matches!(kinds.as_slice(), [EventKind::Accepted, EventKind::Started, EventKind::Canceled]),
            "{kinds:?}"
        );
        assert!(matches!(s.terminal(&next).as_slice(), [e] if matches!(e.kind, EventKind::Succeeded(_))));
    });
}

/// SIGTERM: the agent publishes its offline status itself (a clean DISCONNECT would
/// suppress the last-will) and exits successfully.
#[test]
fn sigterm_leaves_an_offline_status_and_exits_cleanly() {
    let world = World::start(Options::default());
    let agent = world.spawn_agent();
    world.wait_online();
    assert!(agent.terminate(), "the agent did not exit successfully:\n{}", world.agent_log());
    world.wait_for("the offline status", |s| s.statuses.last().is_some_and(|st| st.state == Presence::Offline));
}

/// Two agents on one state directory would both answer as the same device: the second
/// refuses to start.
#[test]
fn a_second_agent_on_the_same_state_dir_refuses_to_start() {
    let world = World::start(Options::default());
    let _first = world.spawn_agent();
    world.wait_online();
    let mut second = world.spawn_agent();
    let status = second.wait_exit();
    assert!(!status.success());
    assert!(world.agent_log().contains("another fleet-agent is running"), "{}", world.agent_log());
}

/// ONNX Runtime's shared library, from the `onnxruntime` wheel `.ci/run` installs.
fn onnxruntime() -> String {
    std::env::var("ORT_DYLIB_PATH").expect(
        "ORT_DYLIB_PATH is not set: this test needs ONNX Runtime's shared library \
         (`bash .ci/run` installs the onnxruntime wheel and sets it)",
    )
}

/// An inference job through wasi-nn on the agent the operator runs: the device
/// advertises `onnx:cpu` in its retained status, a job that prefers a GPU runs on what
/// is there (the CPU here) and its report says so, and a job that requires a GPU is
/// refused with the typed reason on a device without one.
#[test]
fn an_inference_job_runs_on_the_cpu_and_its_report_says_where() {
    let local = format!("onnxruntime = {:?}\n[data]\nreadings = \"readings.csv\"", onnxruntime());
    let mut world = World::start(Options { local, ..Options::default() });
    let rising: String = (0..24).map(|i| format!("{},{}\n", 1_700_000_000 + i, 40.0 + 0.8 * f64::from(i))).collect();
    std::fs::write(world.dir.path().join("readings.csv"), rising).unwrap();
    let _agent = world.spawn_agent();
    world.wait_online();
    world.seen(|s| {
        let status = s.statuses.last().unwrap();
        assert_eq!(status.inference, vec!["onnx:cpu".to_string()], "{status:?}");
    });

    let mut classify = job(fleet_example_jobs::WINDOW_CLASSIFY, &[]);
    classify.inputs = vec!["readings".into()];
    classify.requirements.gpu = fleet_schemas::GpuRequirement::Preferred;
    let key = world.push(&classify);
    let mut gpu_only = classify.clone();
    gpu_only.job_id = job(&[], &[]).job_id;
    gpu_only.requirements.gpu = fleet_schemas::GpuRequirement::Required;
    let refused = world.push(&gpu_only);

    world.wait_for("both inference jobs' terminal events", |s| s.finished(key.job_id) && s.finished(refused.job_id));
    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        let terminal = s.terminal(&key);
        let [event] = terminal.as_slice() else { panic!("{terminal:?}") };
        let EventKind::Succeeded(report) = &event.kind else { panic!("{event:?}\nagent log:\n{}", world.agent_log()) };
        let output = String::from_utf8_lossy(&report.output);
        assert!(output.starts_with("class=rising scores="), "output: {output}");
        assert!(output.ends_with("samples=24"), "output: {output}");
        assert!(
            report.logs.iter().any(|l| l.starts_with("fleet: wasi-nn: model 0 runs on cpu (ONNX Runtime")),
            "{:?}",
            report.logs
        );
        assert!(matches!(
            s.terminal(&refused).as_slice(),
            [e] if matches!(&e.kind, EventKind::Rejected { reason: Rejection::Unsupported(Unsupported::GpuRequired) })
        ));
    });
}

/// A library the operator configured that cannot be loaded stops the agent with the
/// reason, before it connects: they asked for inference and would not get it. Neither a
/// missing file nor a file that is not ONNX Runtime takes the agent down with a panic.
#[test]
fn a_configured_onnx_runtime_that_does_not_load_stops_the_agent_with_the_reason() {
    let world = World::start(Options::default());
    let not_a_library = world.dir.path().join("libonnxruntime.so.1.22.1");
    std::fs::write(&not_a_library, "not a shared library").unwrap();
    let cases = [
        (world.dir.path().join("no/such/libonnxruntime.so"), "no ONNX Runtime library at"),
        (not_a_library, "as ONNX Runtime:"),
    ];
    for (library, expected) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
            .arg("--config")
            .arg(world.config_path())
            .arg("--onnxruntime")
            .arg(&library)
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected) && stderr.contains(&*library.to_string_lossy()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    world.seen(|s| assert!(s.statuses.iter().all(|st| st.state != Presence::Online)));
}

/// A config that asks for TLS without the CA to check the broker against is never
/// honoured by falling back to plain TCP (which would send the device's password in
/// clear): the agent stops, says why, and never connects. (TLS itself, and a wrong CA:
/// `hil-tests/tests/tls.rs`.)
#[test]
fn a_config_asking_for_tls_without_a_ca_stops_the_agent() {
    let world = World::start(Options::default());
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(world.config_path()).unwrap()).unwrap();
    config["broker"]["tls"] = serde_json::Value::Bool(true);
    let path = world.dir.path().join("tls.json");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_fleet-agent")).arg("--config").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broker.tls = true") && stderr.contains("ca.pem"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    world.seen(|s| assert!(s.statuses.iter().all(|st| st.state != Presence::Online)));
}

/// A gateway whose state directory is wiped (a reinstall, a new SD card) comes back as
/// a new store: it syncs with the controller before it runs anything, then refuses the
/// envelope it already ran as a replay, and its next result is numbered after every
/// event the controller has, so it is recorded, not dropped as a duplicate.
#[test]
fn a_wiped_state_directory_syncs_refuses_what_it_ran_and_loses_no_result() {
    let mut world = World::start(Options::default());
    let agent = world.spawn_agent();
    world.wait_online();
    let (first, ran) = world.run_envelope(&hello());
    world.push_bytes(ran.clone());
    world.wait_for("the first job's events, acknowledged", |s| s.finished(first.job_id) && s.acked_through == 3);
    assert!(agent.terminate());

    std::fs::remove_dir_all(world.state_dir()).unwrap();
    let _agent = world.spawn_agent();
    world.wait_online();
    assert!(world.agent_log().contains("the store is new"), "{}", world.agent_log());
    world.seen(|s| assert_eq!((s.grants, s.base), (2, 3), "one grant per new store; base = the events recorded"));

    // The envelope it ran before the wipe, still valid: a replay now.
    world.push_bytes(ran);
    let second = world.push(&hello());
    world.wait_for("the second job's result", |s| s.finished(second.job_id));
    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        let refused: Vec<_> = s.events.values().filter(|e| e.event_seq > 3 && e.key.job_id == first.job_id).collect();
        assert!(
            matches!(refused.as_slice(), [e] if matches!(e.kind, EventKind::Rejected { reason: Rejection::Replayed { .. } })),
            "{refused:?}"
        );
        let terminal = s.terminal(&second);
        assert!(matches!(terminal.as_slice(), [e] if matches!(e.kind, EventKind::Succeeded(_)) && e.event_seq > 3));
        // Every event from 1 on arrived exactly once and was acknowledged.
        assert_eq!(s.contiguous_through(), 7);
    });
}

/// A tmpfs mounted over a directory for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: std::path::PathBuf, megabytes: u32) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "this test mounts a small tmpfs (as root, as CI runs): `mount` failed");
        SmallDisk(path)
    }

    /// Writes a file until the disk is full; returns it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        while file.write_all(&[0u8; 64 * 1024]).is_ok() {}
        while file.write_all(&[0u8; 512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A full disk under the agent's store: it takes no new envelope (nothing acknowledged,
/// nothing run, the broker keeps it), keeps what it has, stays up and connected, and
/// goes on where it stopped once there is space again.
#[test]
fn on_a_full_disk_the_agent_takes_nothing_new_and_goes_on_when_space_is_back() {
    let mut world = World::start(Options::default());
    let disk = SmallDisk::mount(world.state_dir(), 8);
    let mut agent = world.spawn_agent();
    world.wait_online();
    let first = world.push(&hello());
    world.wait_for("the first job's events, acknowledged", |s| s.finished(first.job_id) && s.acked_through == 3);

    let filler = disk.fill();
    let second = world.push(&hello());
    world.wait_for_log("cannot write the store");
    assert!(agent.is_running(), "the agent exited on a full disk:\n{}", world.agent_log());
    world.seen(|s| assert!(s.of_job(second.job_id).is_empty(), "an envelope was taken that could not be stored"));

    std::fs::remove_file(filler).unwrap();
    world.wait_for("the second job's result", |s| s.finished(second.job_id));
    world.seen(|s| {
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        let kinds: Vec<&EventKind> = s.of_job(second.job_id).iter().map(|e| &e.kind).collect();
        assert!(
            matches!(kinds.as_slice(), [EventKind::Accepted, EventKind::Started, EventKind::Succeeded(_)]),
            "{kinds:?}"
        );
        assert_eq!(s.contiguous_through(), 6);
    });
    assert!(world.agent_log().contains("the store takes writes again"), "{}", world.agent_log());
    assert!(agent.is_running());
    drop(agent);
}

/// A data input whose file is not there is said at start, not only in each job's
/// failure.
#[test]
fn a_data_input_that_does_not_exist_is_warned_about_at_start() {
    let world = World::start(Options::default());
    let log = world.dir.path().join("missing-input.log");
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
        .arg("--config")
        .arg(world.config_path())
        .args(["--data", "readings=/no/such/file"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("data input readings: /no/such/file does not exist") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no warning about the missing input:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = agent.kill();
    let _ = agent.wait();
}
