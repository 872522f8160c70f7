//! The `fleetctl` binary as an operator uses it: provisioning writes a config a device
//! can connect with, a running `fleetctl serve` acts on what other `fleetctl` commands
//! write, exit codes mean what the README says, and a key rotation reaches devices.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::sim::{Mode, Sim, wait_until};
use fleet_schemas::provision::DeviceConfig;
use fleet_schemas::{KeyRing, Order, Trusted};

const FLEETCTL: &str = env!("CARGO_BIN_EXE_fleetctl");

fn fleetctl(data: &Path, args: &[&str]) -> Output {
    Command::new(FLEETCTL).arg("--data-dir").arg(data).args(args).env("USER", "tester").output().unwrap()
}

async fn fleetctl_async(data: &Path, args: &[&str]) -> Output {
    let data = data.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fleetctl(&data, &args)
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// Runs `fleetctl serve` on a free port; returns the child and the broker address.
fn serve(data: &Path) -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(FLEETCTL)
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve exited before listening").unwrap();
        if let Some(rest) = line.split("MQTT on ").nth(1) {
            break rest.split(',').next().unwrap().trim().parse().unwrap();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_provisions_pushes_watches_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet-data");

    // Reading an empty data dir is an input error, with a hint.
    let out = fleetctl(&data, &["job", "list"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("help:"), "{}", stderr(&out));

    // Provisioning writes a private config file the device can use.
    let device_dir = dir.path().join("gw-1");
    let out =
        fleetctl(&data, &["device", "provision", "gw-1", "--labels", "site=a", "--out", device_dir.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let config_path = device_dir.join("agent.json");
    assert_eq!(std::fs::metadata(&config_path).unwrap().permissions().mode() & 0o777, 0o600);
    let config: DeviceConfig = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(config.device_id.as_str(), "gw-1");
    assert_eq!(config.labels.get("site").map(String::as_str), Some("a"));
    let again = dir.path().join("again");
    let out = fleetctl(&data, &["device", "provision", "gw-1", "--out", again.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "a second provision of one id is refused: {}", stderr(&out));
    assert!(!again.join("agent.json").exists());

    // Pushing bad input is refused with exit code 2.
    let module = dir.path().join("hello.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let not_wasm = dir.path().join("hello.txt");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let m = module.to_str().unwrap();
    assert_eq!(code(&fleetctl(&data, &["job", "push", not_wasm.to_str().unwrap(), "--all"])), 2);
    assert_eq!(code(&fleetctl(&data, &["job", "push", m, "--selector", "site=nowhere"])), 2);
    assert_eq!(code(&fleetctl(&data, &["job", "push", m, "--target", "ghost"])), 2);
    assert_eq!(code(&fleetctl(&data, &["job", "status", "ffff"])), 2);
    assert_eq!(code(&fleetctl(&data, &["job", "push", m])), 2, "a target is required");

    // Serve, and a device that connects with exactly what provisioning wrote.
    let (mut child, addr) = serve(&data);
    let ring = KeyRing::new(config.job_keys.iter().map(|k| Trusted::new(&k.public_key).unwrap()).collect()).unwrap();
    let root = Trusted::new(&config.root_key).unwrap();
    let _gw1 =
        Sim::start_with("gw-1", config.device_key.signing_key(), &config.password, addr, ring, Some(root), Mode::Auto)
            .await;

    let out = fleetctl_async(&data, &["job", "push", m, "--selector", "site=a", "--arg", "hi", "--wait"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let job = stdout(&out);
    assert_eq!(job.len(), 32, "push prints the job id: {job:?}");
    let results: serde_json::Value =
        serde_json::from_str(&stdout(&fleetctl(&data, &["job", "results", &job, "--json"]))).unwrap();
    assert_eq!(results[0]["state"], "succeeded");
    assert_eq!(results[0]["output"], "ok from gw-1");

    // Rotate the job key: the running controller publishes the rotation and signs the
    // next job with the new key, which the device accepts.
    let out = fleetctl(&data, &["key", "rotate"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let new_key = stdout(&out);
    let out = fleetctl_async(&data, &["job", "push", m, "--target", "gw-1", "--wait"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let envelopes = _gw1.envelopes();
    let last = envelopes.last().unwrap();
    let signed = fleet_schemas::SignedMessage::from_bytes(&last.1).unwrap();
    let envelope: fleet_schemas::Envelope = signed.decode_body().unwrap();
    assert_eq!(envelope.key_id.to_hex(), new_key);
    assert!(matches!(envelope.order, Order::Run { .. }));

    // Read commands, as JSON.
    let jobs: serde_json::Value = serde_json::from_str(&stdout(&fleetctl(&data, &["job", "list", "--json"]))).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 2);
    assert!(jobs.as_array().unwrap().iter().all(|j| j["state"] == "completed"));
    let devices: serde_json::Value =
        serde_json::from_str(&stdout(&fleetctl(&data, &["device", "list", "--json"]))).unwrap();
    assert_eq!(devices[0]["id"], "gw-1");
    let status: serde_json::Value = serde_json::from_str(&stdout(&fleetctl(&data, &["status", "--json"]))).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["active_job_key"], new_key.as_str());
    let watch = fleetctl(&data, &["watch", "--once"]);
    assert_eq!(code(&watch), 0);
    assert!(stdout(&watch).contains("gw-1"));

    // Cancel a continuous job through the CLI.
    let out = fleetctl(&data, &["job", "push", m, "--all", "--continuous"]);
    let continuous = stdout(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&fleetctl(&data, &["job", "cancel", &continuous[..8]])), 0);
    let store = fleet_controller::datadir::DataDir::new(&data).open().unwrap();
    let id = store.resolve_job(&continuous).unwrap();
    wait_until("the cancel", || store.job(&id).unwrap().unwrap().state == fleet_schemas::JobState::Canceled).await;
    let out = fleetctl(&data, &["job", "status", &continuous, "--wait"]);
    assert_eq!(code(&out), 1, "a canceled job is not a success");

    let audit: serde_json::Value = serde_json::from_str(&stdout(&fleetctl(&data, &["audit", "--json"]))).unwrap();
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["job.cancel", "job.push", "job.push", "key.rotate", "job.push", "device.provision", "init"]);
    // Through the running serve's API: the OS user and the token it acted with.
    assert_eq!(audit[0]["actor"], "tester (token:local)");

    // Files for mosquitto.
    let mq = dir.path().join("mosquitto");
    assert_eq!(code(&fleetctl(&data, &["broker", "acl", "--out", mq.to_str().unwrap()])), 0);
    let passwd = std::fs::read_to_string(mq.join("passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("fleet-controller:$6$")));
    assert!(passwd.lines().any(|l| l.starts_with("gw-1:$6$")));
    let acl = std::fs::read_to_string(mq.join("acl")).unwrap();
    assert!(acl.contains("user gw-1\ntopic write fleet/devices/gw-1/events\n"));
    assert!(acl.contains("user fleet-controller\ntopic readwrite fleet/#\n"));

    // Ctrl-C stops serve cleanly.
    Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn provisioning_a_microcontroller_writes_what_is_flashed_and_the_script_that_flashes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("mcu-1");
    let result = fleetctl(
        &data,
        &["device", "provision", "mcu-1", "--kind", "mcu", "--out", out.to_str().unwrap(), "--broker", "10.0.0.5:1884"],
    );
    assert_eq!(code(&result), 0, "{}", stderr(&result));
    assert!(stderr(&result).contains("flash.sh qemu FIRMWARE_ELF"), "{}", stderr(&result));

    // The block is the one encoder's output for the config agent.json holds.
    let config: DeviceConfig = serde_json::from_str(&std::fs::read_to_string(out.join("agent.json")).unwrap()).unwrap();
    let block = std::fs::read(out.join("config-block.bin")).unwrap();
    assert_eq!(block, fleet_schemas::provision::config_block(&config).unwrap());
    assert_eq!(&block[..4], b"FLTC");
    // The QEMU flash image: the board's 256 KiB, erased, the block in the config page.
    let flash = std::fs::read(out.join("fleet-flash.bin")).unwrap();
    assert_eq!(flash.len(), 64 * 4096);
    assert!(flash.starts_with(&block));
    assert!(flash[block.len()..].iter().all(|&b| b == 0xff));
    // Secrets stay the owner's; the script is executable.
    for (name, mode) in [("config-block.bin", 0o600), ("fleet-flash.bin", 0o600), ("flash.sh", 0o700)] {
        let meta = std::fs::metadata(out.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    // The script knows the broker and refuses to run without a firmware image.
    let script = std::fs::read_to_string(out.join("flash.sh")).unwrap();
    assert!(script.contains("10.0.0.5:1884"), "{script}");
    let usage = Command::new("sh").arg(out.join("flash.sh")).arg("qemu").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage:"));
    let bad = Command::new("sh").arg(out.join("flash.sh")).args(["teleport", "/etc/hostname"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));

    // --firmware puts the image beside the config; flash.sh then needs no argument for it.
    let elf = dir.path().join("agent.elf");
    std::fs::write(&elf, b"\x7fELF\x01\x01\x01 an image").unwrap();
    let out2 = dir.path().join("mcu-2");
    let (out2_s, elf_s) = (out2.to_str().unwrap(), elf.to_str().unwrap());
    let result =
        fleetctl(&data, &["device", "provision", "mcu-2", "--kind", "mcu", "--out", out2_s, "--firmware", elf_s]);
    assert_eq!(code(&result), 0, "{}", stderr(&result));
    assert_eq!(std::fs::read(out2.join("firmware.elf")).unwrap(), std::fs::read(&elf).unwrap());
    // Refused, and nothing registered: an image that is not ELF, or one for a gateway.
    let not_elf = dir.path().join("agent.bin");
    std::fs::write(&not_elf, b"MZ not firmware").unwrap();
    let out3 = dir.path().join("mcu-3");
    let args = ["device", "provision", "mcu-3", "--kind", "mcu", "--out", out3.to_str().unwrap()];
    let result = fleetctl(&data, &[&args[..], &["--firmware", not_elf.to_str().unwrap()]].concat());
    assert_eq!(code(&result), 2, "{}", stderr(&result));
    assert!(stderr(&result).contains("not an ELF image"), "{}", stderr(&result));
    let gw_args = ["device", "provision", "gw-9", "--out", out3.to_str().unwrap(), "--firmware", elf_s];
    assert_eq!(code(&fleetctl(&data, &gw_args)), 2);
    assert!(!out3.join("agent.json").exists());

    // A Linux gateway gets its agent.json only.
    let gw = dir.path().join("gw-1");
    let result = fleetctl(&data, &["device", "provision", "gw-1", "--out", gw.to_str().unwrap()]);
    assert_eq!(code(&result), 0, "{}", stderr(&result));
    assert!(!gw.join("flash.sh").exists());
}

/// Records a status for `id` as if the device had published it: `gpu` or none, and
/// the inference backends it offers.
fn report_status(data: &Path, id: &str, gpu: Option<fleet_schemas::status::GpuInfo>, inference: &[&str]) {
    let mut status = status_of(id);
    status.gpu = gpu;
    status.inference = inference.iter().map(|s| s.to_string()).collect();
    record_status(data, &status);
}

/// An online gateway's status that advertises nothing.
fn status_of(id: &str) -> fleet_schemas::DeviceStatus {
    fleet_schemas::DeviceStatus {
        device_id: fleet_schemas::DeviceId::new(id).unwrap(),
        state: fleet_schemas::Presence::Online,
        runtime: fleet_schemas::RuntimeClass::Gateway,
        agent_version: "test".into(),
        labels: Default::default(),
        queue_depth: 0,
        outbox_depth: 0,
        gpu: None,
        inference: Vec::new(),
        wasi: Vec::new(),
        formats: vec![1],
        ts: 0,
    }
}

/// Stores `status` as the device's last retained status.
fn record_status(data: &Path, status: &fleet_schemas::DeviceStatus) {
    let mut store = fleet_controller::datadir::DataDir::new(data.to_path_buf()).open().unwrap();
    let json = String::from_utf8(fleet_schemas::status::to_json(status)).unwrap();
    assert!(store.set_device_status(&status.device_id, &json, 1).unwrap());
}

#[test]
fn a_job_that_requires_a_gpu_goes_only_to_devices_that_advertise_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for id in ["gw-gpu", "gw-cpu", "gw-silent"] {
        let out = dir.path().join(id);
        assert_eq!(code(&fleetctl(&data, &["device", "provision", id, "--out", out.to_str().unwrap()])), 0);
    }
    let h100 = fleet_schemas::status::GpuInfo { vendor: "nvidia".into(), model: "H100".into(), memory: 80 << 30 };
    report_status(&data, "gw-gpu", Some(h100), &["onnx:cpu", "onnx:cuda"]);
    report_status(&data, "gw-cpu", None, &[]);
    let shown = fleetctl(&data, &["device", "show", "gw-gpu"]);
    assert!(stdout(&shown).contains("gpu          nvidia H100"), "{}", stdout(&shown));
    assert!(stdout(&shown).contains("inference    wasi-nn on onnx:cpu, onnx:cuda"), "{}", stdout(&shown));
    assert!(!stdout(&fleetctl(&data, &["device", "show", "gw-cpu"])).contains("inference"));
    // gw-silent never reported a status: it advertises nothing either.
    let module = dir.path().join("job.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let push = |extra: &[&str]| fleetctl(&data, &[&["job", "push", module.to_str().unwrap()][..], extra].concat());

    let named = push(&["--gpu", "required", "--target", "gw-cpu"]);
    assert_eq!(code(&named), 2, "{}", stderr(&named));
    assert!(stderr(&named).contains("no GPU advertised by: gw-cpu"), "{}", stderr(&named));

    let all = push(&["--gpu", "required", "--all"]);
    assert_eq!(code(&all), 0, "{}", stderr(&all));
    assert!(stderr(&all).contains("skipping 2 device(s) that advertise no GPU: gw-cpu, gw-silent"), "{}", stderr(&all));
    let store = fleet_controller::datadir::DataDir::new(data.to_path_buf()).open().unwrap();
    let job: fleet_schemas::JobId = stdout(&all).parse().unwrap();
    let targeted: Vec<String> = store.executions(&job).unwrap().iter().map(|e| e.device_id.to_string()).collect();
    assert_eq!(targeted, ["gw-gpu"]);
    let spec: fleet_schemas::JobSpec = postcard::from_bytes(&store.job_spec(&job).unwrap()).unwrap();
    assert_eq!(spec.requirements.gpu, fleet_schemas::GpuRequirement::Required);

    let continuous = push(&["--gpu", "required", "--all", "--continuous"]);
    assert_eq!(code(&continuous), 2, "{}", stderr(&continuous));

    // Preferred runs everywhere: on the GPU where there is one.
    let preferred = push(&["--gpu", "preferred", "--all"]);
    assert_eq!(code(&preferred), 0, "{}", stderr(&preferred));
    let job: fleet_schemas::JobId = stdout(&preferred).parse().unwrap();
    assert_eq!(store.executions(&job).unwrap().len(), 3);
}

#[test]
fn a_module_that_uses_wasi_nn_goes_only_to_devices_that_offer_inference() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for id in ["gw-nn", "gw-plain", "gw-silent"] {
        let out = dir.path().join(id);
        assert_eq!(code(&fleetctl(&data, &["device", "provision", id, "--out", out.to_str().unwrap()])), 0);
    }
    report_status(&data, "gw-nn", None, &["onnx:cpu"]);
    report_status(&data, "gw-plain", None, &[]);
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let classify = write("window_classify.wasm", fleet_example_jobs::WINDOW_CLASSIFY);
    let hello = write("hello.wasm", fleet_example_jobs::HELLO);
    let store = || fleet_controller::datadir::DataDir::new(data.to_path_buf()).open().unwrap();
    let targeted = |out: &Output| -> Vec<String> {
        let job: fleet_schemas::JobId = stdout(out).parse().unwrap();
        store().executions(&job).unwrap().iter().map(|e| e.device_id.to_string()).collect()
    };

    let all = fleetctl(&data, &["job", "push", &classify, "--input", "readings", "--all"]);
    assert_eq!(code(&all), 0, "{}", stderr(&all));
    assert!(
        stderr(&all).contains("skipping 2 device(s) that offer no inference (wasi-nn): gw-plain, gw-silent"),
        "{}",
        stderr(&all)
    );
    assert_eq!(targeted(&all), ["gw-nn"]);

    let named = fleetctl(&data, &["job", "push", &classify, "--target", "gw-plain"]);
    assert_eq!(code(&named), 2, "{}", stderr(&named));
    assert!(stderr(&named).contains("no inference (wasi-nn) advertised by: gw-plain"), "{}", stderr(&named));
    assert!(stderr(&named).contains("--onnxruntime"), "{}", stderr(&named));

    let continuous = fleetctl(&data, &["job", "push", &classify, "--all", "--continuous"]);
    assert_eq!(code(&continuous), 2, "{}", stderr(&continuous));

    // A module without wasi-nn goes everywhere, as before.
    let plain = fleetctl(&data, &["job", "push", &hello, "--all"]);
    assert_eq!(code(&plain), 0, "{}", stderr(&plain));
    assert_eq!(targeted(&plain).len(), 3);
}

#[test]
fn a_wasi_module_goes_only_to_devices_that_advertise_wasi_and_the_operator_is_told_which_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fleet = [("gw-a", "linux"), ("gw-old", "linux"), ("mcu-a", "mcu"), ("mcu-old", "mcu"), ("gw-silent", "linux")];
    for (id, kind) in fleet {
        let out = dir.path().join(id);
        let provisioned = fleetctl(&data, &["device", "provision", id, "--kind", kind, "--out", out.to_str().unwrap()]);
        assert_eq!(code(&provisioned), 0, "{}", stderr(&provisioned));
    }
    // Today's agent and firmware list `preview1`; older ones list nothing; gw-silent has
    // never reported a status.
    for (id, runtime, wasi) in [
        ("gw-a", fleet_schemas::RuntimeClass::Gateway, true),
        ("gw-old", fleet_schemas::RuntimeClass::Gateway, false),
        ("mcu-a", fleet_schemas::RuntimeClass::Microcontroller, true),
        ("mcu-old", fleet_schemas::RuntimeClass::Microcontroller, false),
    ] {
        let mut status = status_of(id);
        status.runtime = runtime;
        if wasi {
            status.wasi = vec!["preview1".into()];
        }
        // Today's gateway agent also runs components.
        if id == "gw-a" {
            status.wasi.push("0.2".into());
        }
        record_status(&data, &status);
    }
    let c_job = dir.path().join("hello.wasm");
    std::fs::write(&c_job, fleet_wasi_jobs::HELLO).unwrap();
    let c_job = c_job.to_str().unwrap();
    let store = || fleet_controller::datadir::DataDir::new(data.to_path_buf()).open().unwrap();
    let targeted = |out: &Output| -> Vec<String> {
        let job: fleet_schemas::JobId = stdout(out).parse().unwrap();
        store().executions(&job).unwrap().iter().map(|e| e.device_id.to_string()).collect()
    };

    let all = fleetctl(&data, &["job", "push", c_job, "--all"]);
    assert_eq!(code(&all), 0, "{}", stderr(&all));
    assert!(stderr(&all).contains("skipping 3 device(s) that run no WASI"), "{}", stderr(&all));
    assert!(stderr(&all).contains("gw-old, gw-silent, mcu-old"), "{}", stderr(&all));
    assert_eq!(targeted(&all), ["gw-a", "mcu-a"]);

    let named = fleetctl(&data, &["job", "push", c_job, "--target", "mcu-old"]);
    assert_eq!(code(&named), 2, "{}", stderr(&named));
    assert!(stderr(&named).contains("no WASI preview 1"), "{}", stderr(&named));
    assert!(stderr(&named).contains(": mcu-old"), "{}", stderr(&named));
    assert!(stderr(&named).contains("docs/job-abi.md"), "{}", stderr(&named));
    let board = fleetctl(&data, &["job", "push", c_job, "--target", "mcu-a"]);
    assert_eq!(code(&board), 0, "{}", stderr(&board));
    assert_eq!(targeted(&board), ["mcu-a"]);

    let continuous = fleetctl(&data, &["job", "push", c_job, "--all", "--continuous"]);
    assert_eq!(code(&continuous), 2, "{}", stderr(&continuous));

    // A WASI 0.2 component goes only where `0.2` is listed, and not to a named board.
    let component = dir.path().join("csv-summary.component.wasm");
    std::fs::write(&component, fleet_wasi_jobs::CSV_SUMMARY_COMPONENT).unwrap();
    let component = component.to_str().unwrap();
    let all = fleetctl(&data, &["job", "push", component, "--all"]);
    assert_eq!(code(&all), 0, "{}", stderr(&all));
    assert!(stderr(&all).contains("skipping 4 device(s) that run no WASI 0.2 components"), "{}", stderr(&all));
    assert_eq!(targeted(&all), ["gw-a"]);
    let named = fleetctl(&data, &["job", "push", component, "--target", "mcu-a"]);
    assert_eq!(code(&named), 2, "{}", stderr(&named));
    assert!(stderr(&named).contains("no WASI 0.2 components"), "{}", stderr(&named));
    assert!(stderr(&named).contains("wasm32-wasip1"), "{}", stderr(&named));

    // A fleet-ABI module still goes to every device.
    let hello = dir.path().join("hello-abi.wasm");
    std::fs::write(&hello, fleet_example_jobs::HELLO).unwrap();
    let plain = fleetctl(&data, &["job", "push", hello.to_str().unwrap(), "--all"]);
    assert_eq!(code(&plain), 0, "{}", stderr(&plain));
    assert_eq!(targeted(&plain).len(), 5);
}

/// A stock MQTT tool watches the fleet with the observer login: `mosquitto_sub` sees
/// every device's retained status, and the same login is refused a publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_login_watches_every_status_with_mosquitto_sub_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = common::fleet(dir.path(), &["gw-1", "gw-2", "gw-3"]);
    let data = data.path().to_path_buf();
    let (mut serve, broker) = serve(&data);
    let mut sims = Vec::new();
    for name in ["gw-1", "gw-2", "gw-3"] {
        sims.push(Sim::start(name, broker, keys.clone(), Mode::Manual).await);
    }
    let store = fleet_controller::datadir::DataDir::new(&data).open().unwrap();
    common::wait_all_online(&store).await;

    let made = fleetctl_async(&data, &["broker", "observer"]).await;
    assert_eq!(code(&made), 0, "{}", stderr(&made));
    let password = stdout(&made);
    assert_eq!(password.len(), 64);
    assert!(stderr(&made).contains("mosquitto_sub -h 127.0.0.1 -u fleet-observer"), "{}", stderr(&made));
    // The same password again, not a new one.
    assert_eq!(stdout(&fleetctl_async(&data, &["broker", "observer"]).await), password);

    let (host, port) = (broker.ip().to_string(), broker.port().to_string());
    let watched = tokio::task::spawn_blocking(move || {
        Command::new("mosquitto_sub")
            .args(["-h", &host, "-p", &port, "-u", "fleet-observer", "-P", &password, "-v", "-C", "4", "-W", "20"])
            .args(["-t", "fleet/+/+/status", "-t", "fleet/controller/status"])
            .output()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&watched.stdout).to_string();
    assert!(watched.status.success(), "mosquitto_sub failed: {text}\n{}", String::from_utf8_lossy(&watched.stderr));
    for name in ["gw-1", "gw-2", "gw-3"] {
        assert!(text.contains(&format!("fleet/devices/{name}/status {{")), "{name} missing from:\n{text}");
    }
    assert!(text.contains("fleet/controller/status {"), "{text}");

    // A publish with the observer login closes its connection, and changes nothing.
    let password = stdout(&fleetctl_async(&data, &["broker", "observer"]).await);
    let mut options = rumqttc::MqttOptions::new("watcher-1", broker.ip().to_string(), broker.port());
    options.set_credentials("fleet-observer", password);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    client.publish("fleet/devices/gw-1/status", rumqttc::QoS::AtLeastOnce, true, b"{}".to_vec()).await.unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if eventloop.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the broker did not close the observer's connection after a publish");
    let status = store.device("gw-1").unwrap().unwrap().status.unwrap();
    assert_eq!(status.state, fleet_schemas::Presence::Online, "the observer's publish reached the controller");
    wait_until("the denial counted", || {
        let doc: serde_json::Value =
            serde_json::from_slice(&fleetctl(&data, &["status", "--json"]).stdout).unwrap_or_default();
        doc["controller"]["broker_counters"]["denied_publishes"].as_u64() == Some(1)
    })
    .await;
    let _ = serve.kill();
    let _ = serve.wait();
}

/// `--wait` on a device that was provisioned but never started says what it waits for,
/// in plain lines when its output is not a terminal, and the job list calls the
/// execution sent, not queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_names_the_devices_it_waits_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet-data");
    let out = fleetctl(&data, &["device", "provision", "gw-1", "--out", dir.path().join("gw-1").to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (mut serve, _broker) = serve(&data);
    let module = dir.path().join("job.wasm");
    std::fs::write(&module, common::MODULE).unwrap();
    let mut push = Command::new(FLEETCTL)
        .arg("--data-dir")
        .arg(&data)
        .args(["job", "push", module.to_str().unwrap(), "--all", "--wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(push.stderr.take().unwrap()).lines();
    let seen = tokio::task::spawn_blocking(move || {
        for line in lines {
            let line = line.unwrap();
            // First "queued", then, once serve has sent it, "sent".
            if line.contains("waiting for gw-1 (never seen online since it was provisioned)")
                && line.contains("1 sent (not accepted yet)")
            {
                return line;
            }
        }
        panic!("--wait never said what it waits for");
    });
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), seen).await.unwrap().unwrap();
    assert!(line.contains("0 of 1 finished; 1 sent (not accepted yet); waiting for gw-1"), "{line}");
    assert!(!line.contains('\u{1b}'), "escape codes in a pipe: {line:?}");
    let list = fleetctl_async(&data, &["job", "list"]).await;
    assert!(stdout(&list).contains("1 sent (not accepted yet)"), "{}", stdout(&list));
    let _ = push.kill();
    let _ = push.wait();
    let _ = serve.kill();
    let _ = serve.wait();
}

/// `watch` into a pipe prints plain screens (each again only when it changed), without
/// the escape codes that redraw a terminal.
#[test]
fn watch_into_a_pipe_prints_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet-data");
    let out = fleetctl(&data, &["device", "provision", "gw-1", "--out", dir.path().join("gw-1").to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut watch = Command::new(FLEETCTL)
        .arg("--data-dir")
        .arg(&data)
        .args(["watch", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut text = String::new();
    for line in BufReader::new(watch.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        // One screen: the header, the devices table, the jobs table.
        if line.contains("JOB") {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(!text.contains('\u{1b}'), "escape codes in a pipe: {text:?}");
    assert!(text.contains("gw-1") && text.contains("DEVICE"), "{text}");
}

/// Connects with these credentials; the CONNACK's code (0: accepted).
async fn connack_code(broker: SocketAddr, id: &str, password: &str) -> rumqttc::ConnectReturnCode {
    let mut options = rumqttc::MqttOptions::new(id, broker.ip().to_string(), broker.port());
    options.set_credentials(id, password);
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    // Refused logins from this address slow its next ones down (up to 5 s): wait longer
    // than rumqttc does by default.
    let mut network = eventloop.network_options();
    network.set_connection_timeout(20);
    eventloop.set_network_options(network);
    let polled = tokio::time::timeout(std::time::Duration::from_secs(30), eventloop.poll()).await.unwrap();
    match polled {
        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => ack.code,
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

/// A removed device is cut off at once and cannot log in again, its history kept; the
/// same id re-provisioned with --replace gets new credentials, and the old ones stay
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_is_cut_off_and_a_replaced_one_gets_new_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fleet-data");
    let first_dir = dir.path().join("gw-1");
    let out = fleetctl(&data, &["device", "provision", "gw-1", "--out", first_dir.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let config: DeviceConfig =
        serde_json::from_str(&std::fs::read_to_string(first_dir.join("agent.json")).unwrap()).unwrap();
    let (mut serve, broker) = serve(&data);
    let keys = KeyRing::new(config.job_keys.iter().map(|k| Trusted::new(&k.public_key).unwrap()).collect()).unwrap();
    let sim =
        Sim::start_with("gw-1", config.device_key.signing_key(), &config.password, broker, keys, None, Mode::Auto)
            .await;
    let store = fleet_controller::datadir::DataDir::new(&data).open().unwrap();
    common::wait_all_online(&store).await;

    let removed = fleetctl_async(&data, &["device", "remove", "gw-1"]).await;
    assert_eq!(code(&removed), 0, "{}", stderr(&removed));
    assert!(stderr(&removed).contains("removed gw-1: its credentials and key are revoked"), "{}", stderr(&removed));
    // Cut off now (its connection closed by serve's broker: the device's own reconnects
    // are then refused), and it cannot log in again.
    wait_until("the removed device to be cut off and refused", || {
        let doc: serde_json::Value =
            serde_json::from_slice(&fleetctl(&data, &["status", "--json"]).stdout).unwrap_or_default();
        doc["controller"]["broker_counters"]["failed_logins"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    drop(sim);
    assert_eq!(connack_code(broker, "gw-1", &config.password).await, rumqttc::ConnectReturnCode::BadUserNamePassword);
    let list = fleetctl_async(&data, &["device", "list"]).await;
    assert!(stdout(&list).contains("removed"), "{}", stdout(&list));
    // Nothing can be pushed to it.
    let module = dir.path().join("job.wasm");
    std::fs::write(&module, common::MODULE).unwrap();
    let push = fleetctl_async(&data, &["job", "push", module.to_str().unwrap(), "--target", "gw-1"]).await;
    assert_eq!(code(&push), 2, "{}", stderr(&push));

    // Reinstalled: the same id, new credentials; the old ones stay refused.
    let second_dir = dir.path().join("gw-1-new");
    let again = fleetctl_async(&data, &["device", "provision", "gw-1", "--out", second_dir.to_str().unwrap()]).await;
    assert_eq!(code(&again), 2, "provisioning an existing id without --replace must be refused");
    assert!(stderr(&again).contains("--replace"), "{}", stderr(&again));
    let replaced =
        fleetctl_async(&data, &["device", "provision", "gw-1", "--replace", "--out", second_dir.to_str().unwrap()])
            .await;
    assert_eq!(code(&replaced), 0, "{}", stderr(&replaced));
    let new: DeviceConfig =
        serde_json::from_str(&std::fs::read_to_string(second_dir.join("agent.json")).unwrap()).unwrap();
    assert_ne!(new.password, config.password);
    assert_eq!(connack_code(broker, "gw-1", &new.password).await, rumqttc::ConnectReturnCode::Success);
    assert_eq!(connack_code(broker, "gw-1", &config.password).await, rumqttc::ConnectReturnCode::BadUserNamePassword);
    let audit = stdout(&fleetctl_async(&data, &["audit", "--json"]).await);
    assert!(audit.contains("device.remove") && audit.contains("device.replace"), "{audit}");
    let _ = serve.kill();
    let _ = serve.wait();
}
