//! A full disk under the real `fleetctl serve`: its data directory on a small tmpfs the
//! test mounts and fills. serve must stay up, its embedded broker serving (devices stay
//! connected, new ones get in), acknowledge nothing it cannot store (so the device keeps
//! its events), say why (its log and `fleetctl status`), and resume by itself, recording
//! what it held, once space is back.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::sim::{GUARD, Mode, Sim, wait_until};
use common::*;
use fleet_schemas::{EventKind, JobId, RunReport};

const FLEETCTL: &str = env!("CARGO_BIN_EXE_fleetctl");

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "this test mounts a small tmpfs (as root, as CI runs): `mount` failed");
        SmallDisk { path, _dir: dir }
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        let path = self.path.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn fleetctl(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(FLEETCTL).arg("--data-dir").arg(data).args(args).env("USER", "tester").output().unwrap()
}

fn status_json(data: &Path) -> serde_json::Value {
    serde_json::from_slice(&fleetctl(data, &["status", "--json"]).stdout).unwrap_or_default()
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_serve_and_its_broker_up_and_it_resumes_by_itself() {
    let disk = SmallDisk::mount(16);
    let (data, keys) = fleet(&disk.path, &["gw-1", "gw-2"]);
    let data = data.path().to_path_buf();
    let log_path = disk.path.with_extension("serve.log");
    let child = Command::new(FLEETCTL)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut serve = Serve(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut mqtt = None;
    wait_until("serve to listen", || {
        mqtt = log().split("MQTT on ").nth(1).and_then(|r| r.split(',').next()).and_then(|a| a.trim().parse().ok());
        mqtt.is_some()
    })
    .await;
    let mqtt = mqtt.unwrap();

    let mut gw1 = Sim::start("gw-1", mqtt, keys.clone(), Mode::Manual).await;
    let module = disk.path.with_extension("wasm");
    std::fs::write(&module, MODULE).unwrap();
    let pushed = fleetctl(&data, &["job", "push", module.to_str().unwrap(), "--target", "gw-1"]);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    let job: JobId = String::from_utf8_lossy(&pushed.stdout).trim().parse().unwrap();
    wait_until("the envelope at the device", || !gw1.envelopes().is_empty()).await;

    // The disk fills up; the device reports its run meanwhile.
    let filler = disk.fill();
    gw1.send(job, 1, EventKind::Accepted).await;
    gw1.send(job, 1, EventKind::Started).await;
    gw1.send(job, 1, EventKind::Succeeded(RunReport { output: b"42".to_vec(), ..RunReport::default() })).await;
    wait_until("fleetctl status to say the store is not writable", || {
        !status_json(&data)["serve"]["store_unwritable"].is_null()
    })
    .await;
    let text = String::from_utf8_lossy(&fleetctl(&data, &["status"]).stdout).to_string();
    assert!(text.contains("store       NOT WRITABLE"), "{text}");
    assert!(log().contains("the store cannot be written"), "{}", log());
    // A push meanwhile is refused with the reason, not accepted and lost.
    let refused = fleetctl(&data, &["job", "push", module.to_str().unwrap(), "--target", "gw-1"]);
    let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success(), "a push was accepted while the store refuses writes");
    assert!(stderr.contains("refuses writes"), "{stderr}");
    // Still up, and its broker still serving: nothing acknowledged to the device, and
    // another device gets in.
    assert!(serve.0.try_wait().unwrap().is_none(), "serve exited on a full disk:\n{}", log());
    assert_eq!(*gw1.acked.borrow(), 0, "an event was acknowledged that could not be stored");
    let gw2 = Sim::start("gw-2", mqtt, keys.clone(), Mode::Manual).await;
    let mut ready = gw2.ready.clone();
    tokio::time::timeout(GUARD, ready.wait_for(|r| *r)).await.unwrap().unwrap();

    // Space back: serve records what it held, acknowledges it, and the job completes.
    std::fs::remove_file(filler).unwrap();
    gw1.wait_acked(3).await;
    wait_until("the job to complete", || {
        let doc: serde_json::Value =
            serde_json::from_slice(&fleetctl(&data, &["job", "status", &job.to_hex(), "--json"]).stdout)
                .unwrap_or_default();
        doc["job"]["state"] == "completed" && doc["executions"][0]["state"] == "succeeded"
    })
    .await;
    assert!(log().contains("the store takes writes again"), "{}", log());
    let jobs: serde_json::Value = serde_json::from_slice(&fleetctl(&data, &["job", "list", "--json"]).stdout).unwrap();
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "the refused push left a job: {jobs}");
    assert!(status_json(&data)["serve"]["store_unwritable"].is_null());
}
