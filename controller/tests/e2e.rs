//! End to end: a real controller, a real broker on loopback, real SQLite files, and the
//! test playing the devices with rumqttc and fleet-schemas (verifying envelopes and acks,
//! signing events with each device's key). No mocks.
//!
//! Every wait is "until this is true", with a generous limit that only guards against a
//! hang; nothing asserts on how long anything took.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::sim::{GUARD, Mode, Sim, signed_event, wait_until};
use common::*;

use fleet_controller::auth::StoreAuthenticator;
use fleet_controller::datadir::DataDir;
use fleet_controller::model::{ExecState, RolloutParams, Target};
use fleet_controller::server::{self, BrokerChoice, RunningController, ServeConfig};
use fleet_controller::store::Store;
use fleet_schemas::{EventKind, JobId, JobState, Order, RunReport};
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, MqttOptions, QoS};

async fn start_embedded(data: &DataDir) -> RunningController {
    let config = ServeConfig::new(data.path(), BrokerChoice::Embedded { listen: ([127, 0, 0, 1], 0).into() });
    server::start(config).await.unwrap()
}

fn job_state(store: &Store, job: &JobId) -> JobState {
    store.job(job).unwrap().unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_every_device_and_redelivery_and_garbage_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["gw-1", "gw-2", "gw-3", "gw-4", "gw-5"];
    let (data, keys) = fleet(dir.path(), &names);
    let controller = start_embedded(&data).await;
    let broker = controller.broker_addr();
    let mut sims = Vec::new();
    for name in names {
        sims.push(Sim::start(name, broker, keys.clone(), Mode::Auto).await);
    }

    // The CLI's side: another connection to the same database.
    let mut cli = data.open().unwrap();
    // Online first (see the mosquitto test: the helper below counts envelope copies).
    wait_all_online(&cli).await;
    let job = add_job(&mut cli, 1, Target::All, &names, RolloutParams::default());
    assert_every_device_succeeded(&cli, &job, &mut sims).await;

    // Redelivery: gw-1 publishes its Succeeded event again (same bytes, same seq), then
    // garbage, then a fresh event. The fresh event's ack proves the two before it were
    // processed (one connection, in order), and neither changed anything.
    let sim = &mut sims[0];
    let redelivered = signed_event(
        &sim.key,
        &sim.id,
        job,
        1,
        3,
        EventKind::Succeeded(RunReport {
            output: b"a different result".to_vec(),
            logs: vec![],
            fuel_used: 0,
            duration_ms: 0,
        }),
    );
    sim.publish_raw(redelivered).await;
    sim.publish_raw(b"not an event at all".to_vec()).await;
    sim.publish_raw(vec![0xff; fleet_schemas::limits::MAX_EVENT_BYTES + 10]).await;
    sim.send(job, 1, EventKind::Started).await;
    let last = sim.last_event();
    sim.wait_acked(last).await;
    assert_eq!(last, 4);

    let row = cli.executions(&job).unwrap().into_iter().find(|r| r.device_id.as_str() == "gw-1").unwrap();
    assert_eq!(row.state, ExecState::Succeeded);
    assert_eq!(row.output.as_deref(), Some(&b"ok from gw-1"[..]), "a redelivered event changes nothing");
    let (_, counts) = fleet_controller::rollout::counts(&cli.exec_views(&job).unwrap());
    assert_eq!(counts.succeeded, 5, "nothing is counted twice");
    wait_until("the malformed counter", || cli.counters().unwrap().get("events.malformed") == Some(&2)).await;

    // A wrong password, an unknown device and a borrowed client id are refused.
    for (client_id, user, pass) in
        [("gw-1", "gw-1", "wrong"), ("ghost", "ghost", "pw-ghost"), ("gw-2", "gw-1", password("gw-1").as_str())]
    {
        let mut options = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        options.set_credentials(user, pass);
        let (_client, mut eventloop) = AsyncClient::new(options, 10);
        let first = tokio::time::timeout(GUARD, eventloop.poll()).await.expect("hang guard: connect");
        match first {
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword
                | ConnectReturnCode::NotAuthorized
                | ConnectReturnCode::BadClientId,
            )) => {}
            other => panic!("{user} as {client_id} with {pass:?} was not refused: {other:?}"),
        }
    }

    // The controller is still up: a second job runs through.
    let second = add_job(&mut cli, 2, Target::Devices(vec![device_id("gw-2")]), &["gw-2"], RolloutParams::default());
    wait_until("the second job", || job_state(&cli, &second) == JobState::Completed).await;
    assert_eq!(cli.executions(&second).unwrap()[0].envelope_seq, Some(2), "per-device sequence numbers rise");

    controller.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_resumes_without_signing_anything_again() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["gw-1", "gw-2", "gw-3"];
    let (data, keys) = fleet(dir.path(), &names);
    // The broker outlives the controller, as an external broker would.
    let auth = Arc::new(StoreAuthenticator::new(&data).unwrap());
    let broker = fleet_broker::start(fleet_broker::BrokerConfig::new(([127, 0, 0, 1], 0).into()), auth).await.unwrap();
    let addr = broker.local_addr();
    let external = BrokerChoice::External { host: addr.ip().to_string(), port: addr.port() };

    let controller = server::start(ServeConfig::new(data.path(), external.clone())).await.unwrap();
    let mut sims = Vec::new();
    for name in names {
        sims.push(Sim::start(name, addr, keys.clone(), Mode::Manual).await);
    }
    let mut cli = data.open().unwrap();
    let params = RolloutParams { batch_size: Some(2), ..RolloutParams::default() };
    let job = add_job(&mut cli, 7, Target::All, &names, params);
    wait_until("the first batch to be sent", || {
        cli.executions(&job).unwrap().iter().filter(|r| r.state == ExecState::Sent).count() == 2
    })
    .await;
    wait_until("the first batch to arrive", || sims[0].envelopes().len() + sims[1].envelopes().len() == 2).await;
    assert!(sims[2].envelopes().is_empty(), "gw-3 is in the second batch");

    // Crash. While the controller is down, gw-1 finishes; its events wait at the broker
    // in the controller's persistent session.
    controller.kill().await;
    sims[0].send(job, 1, EventKind::Accepted).await;
    sims[0].send(job, 1, EventKind::Succeeded(RunReport::default())).await;

    let controller = server::start(ServeConfig::new(data.path(), external)).await.unwrap();
    sims[0].wait_acked(2).await;
    sims[1].send(job, 1, EventKind::Succeeded(RunReport::default())).await;
    sims[1].wait_acked(1).await;
    // The first batch is done: the second batch (gw-3) is sent by the new controller.
    wait_until("the second batch", || !sims[2].envelopes().is_empty()).await;
    sims[2].send(job, 1, EventKind::Succeeded(RunReport::default())).await;
    wait_until("the job to complete", || job_state(&cli, &job) == JobState::Completed).await;

    for (sim, name) in sims.iter().zip(names) {
        let envelopes = sim.envelopes();
        assert!(!envelopes.is_empty());
        // Any copy a device saw twice is the same signed bytes with the same number.
        assert!(envelopes.iter().all(|(seq, bytes, _)| *seq == 1 && *bytes == envelopes[0].1), "{name}: {envelopes:?}");
        assert_eq!(cli.device(name).unwrap().unwrap().next_seq, 2, "{name}: no second sequence number was taken");
    }
    for row in cli.executions(&job).unwrap() {
        assert_eq!((row.attempt, row.state), (1, ExecState::Succeeded));
    }

    controller.shutdown().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_devices_and_continuous_jobs_reach_new_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = fleet(dir.path(), &["gw-1"]);
    let controller = start_embedded(&data).await;
    let broker = controller.broker_addr();
    let mut cli = data.open().unwrap();

    // A continuous job over site=a: gw-1 now, gw-2 once it is provisioned.
    let gw1 = Sim::start("gw-1", broker, keys.clone(), Mode::Manual).await;
    let params = RolloutParams { continuous: true, ..RolloutParams::default() };
    let job = add_job(&mut cli, 3, Target::Selector(labels("site=a")), &["gw-1"], params);
    wait_until("gw-1's envelope", || !gw1.envelopes().is_empty()).await;
    gw1.send(job, 1, EventKind::Accepted).await;

    add_device(&mut cli, "gw-2", "site=a");
    let gw2 = Sim::start("gw-2", broker, keys.clone(), Mode::Manual).await;
    wait_until("gw-2 to be picked up", || !gw2.envelopes().is_empty()).await;

    // Cancel: both are in flight, so both get a signed Cancel with a new sequence number.
    assert!(cli.request_cancel(&job, "test", 1).unwrap());
    wait_until("cancel orders", || {
        [&gw1, &gw2].iter().all(|sim| sim.envelopes().iter().any(|(_, _, order)| matches!(order, Order::Cancel { .. })))
    })
    .await;
    assert_eq!(job_state(&cli, &job), JobState::Canceled);
    let cancel = gw1.envelopes().into_iter().find(|(_, _, o)| matches!(o, Order::Cancel { .. })).unwrap();
    assert_eq!(cancel.0, 2, "a cancel is a new envelope with the next sequence number");
    gw1.send(job, 1, EventKind::Canceled).await;
    gw2.send(job, 1, EventKind::Canceled).await;
    wait_until("both executions canceled", || {
        cli.executions(&job).unwrap().iter().all(|r| r.state == ExecState::Canceled)
    })
    .await;

    controller.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_too_large_for_an_envelope_travels_in_retained_chunks() {
    use fleet_controller::signer::prepare_module;
    use fleet_schemas::ModuleSource;
    use fleet_schemas::chunk::{ChunkAssembler, ChunkProgress, ModuleChunk, module_matches};

    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = fleet(dir.path(), &["gw-1"]);
    let controller = start_embedded(&data).await;
    let gw1 = Sim::start("gw-1", controller.broker_addr(), keys, Mode::Manual).await;

    // 100 KB: over the 64 KiB envelope limit.
    let module: Vec<u8> = b"\0asm\x01\0\0\0".iter().copied().chain((0..100_000u32).map(|i| (i % 251) as u8)).collect();
    let job = job_id(5);
    let spec = bare_spec(job);
    let prepared = prepare_module(spec, &module).unwrap();
    assert!(prepared.chunks.is_some());
    let mut cli = data.open().unwrap();
    let new_job = fleet_controller::store::NewJob {
        id: job,
        spec: postcard::to_allocvec(&prepared.spec).unwrap(),
        module_hash: fleet_schemas::digest::sha256(&module),
        chunked_module: Some(module.clone()),
        module_size: module.len() as u64,
        entry: "run".into(),
        target: Target::All,
        params: RolloutParams::default(),
    };
    cli.insert_job(&new_job, &[device_id("gw-1")], "test", 1).unwrap();

    wait_until("the envelope", || !gw1.envelopes().is_empty()).await;
    let Order::Run { job: spec, .. } = gw1.envelopes()[0].2.clone() else { panic!("not a run") };
    let ModuleSource::Chunked(described) = spec.module else { panic!("the module should travel in chunks") };
    // The device fetches the retained chunks after reading the signed envelope.
    let filter = format!("fleet/modules/{}/chunks/+", described.chain_head);
    gw1.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let total = described.size.div_ceil(described.chunk_size) as usize;
    wait_until("every chunk", || gw1.chunks.lock().unwrap().len() >= total).await;

    let mut received: Vec<ModuleChunk> =
        gw1.chunks.lock().unwrap().iter().map(|bytes| ModuleChunk::decode(bytes).unwrap()).collect();
    received.sort_by_key(|chunk| chunk.index);
    let mut assembler = ChunkAssembler::new(described).unwrap();
    let mut rebuilt = Vec::new();
    let mut progress = None;
    for chunk in &received {
        progress = Some(assembler.accept(chunk).unwrap());
        rebuilt.extend_from_slice(&chunk.data);
    }
    assert_eq!(progress, Some(ChunkProgress::Complete));
    assert!(module_matches(&rebuilt, &described));
    assert_eq!(rebuilt, module);

    controller.shutdown().await.unwrap();
}

/// More envelopes than the MQTT client keeps in flight (rumqttc's default window is
/// 100), while every device answers at once: the PUBACKs for the devices' events must
/// not queue behind envelopes that wait for the broker, or the broker stops delivering
/// events and the rollout stalls (it did, at 300 devices, before the controller kept
/// its own publish window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_wider_than_the_in_flight_window_completes() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..600).map(|n| format!("wide-{n:03}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (data, keys) = fleet(dir.path(), &names);
    let controller = start_embedded(&data).await;
    let broker = controller.broker_addr();
    let mut sims = Vec::new();
    for name in &names {
        sims.push(Sim::start(name, broker, keys.clone(), Mode::Auto).await);
    }
    let mut cli = data.open().unwrap();
    wait_all_online(&cli).await;
    let job = add_job(&mut cli, 1, Target::All, &names, RolloutParams::default());
    assert_every_device_succeeded(&cli, &job, &mut sims).await;
    controller.shutdown().await.unwrap();
}
