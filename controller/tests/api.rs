//! The operator API of a real `fleetctl serve`, over real TLS: tokens and roles, the
//! errors a client gets, the audit log naming the token, fleetctl as a remote client,
//! and the OpenAPI document against the routes served.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const FLEETCTL: &str = env!("CARGO_BIN_EXE_fleetctl");

fn fleetctl(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(FLEETCTL);
    command.arg("--data-dir").arg(data).args(args).env("USER", "tester").env_remove("FLEET_SERVER");
    command.env_remove("FLEET_TOKEN").env_remove("FLEET_CA");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

struct Serve {
    child: Child,
    url: String,
    ca: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `fleetctl serve` with the API on a free port; its URL from the data directory.
fn serve(data: &Path) -> Serve {
    let child = Command::new(FLEETCTL)
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut serve = Serve { child, url: String::new(), ca: data.join("tls/ca.pem") };
    let started = Instant::now();
    loop {
        if let Some(url) = fleet_controller::datadir::DataDir::new(data).serving().and_then(|s| s.api) {
            serve.url = url;
            return serve;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "serve did not advertise its API");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(ca: &Path) -> reqwest::blocking::Client {
    let cert = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::blocking::Client::builder().tls_built_in_root_certs(false).add_root_certificate(cert).build().unwrap()
}

/// A request with `token`: (status, JSON body).
fn call(
    http: &reqwest::blocking::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let body = response.json::<Value>().unwrap_or(Value::Null);
    (status, body)
}

fn create_token(data: &Path, name: &str, role: &str) -> String {
    let out = fleetctl(data, &["token", "create", name, "--role", role], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn tokens_and_roles_decide_what_a_client_may_do_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = fleetctl(&data, &["device", "provision", "gw-1", "--labels", "site=a", "--out"], &[]);
    assert_eq!(out.status.code(), Some(2), "--out needs a value");
    let out_dir = dir.path().join("gw-1");
    let out = fleetctl(
        &data,
        &["device", "provision", "gw-1", "--labels", "site=a", "--out", out_dir.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let serve = serve(&data);
    let http = client(&serve.ca);
    let url = |path: &str| format!("{}{path}", serve.url);

    // TLS for real: a client that does not trust the controller's CA gets no answer.
    let stranger = reqwest::blocking::Client::builder().tls_built_in_root_certs(false).build().unwrap();
    assert!(stranger.get(url("/v1/status")).send().is_err(), "a client without the CA was answered");

    // No token, a malformed one, an unknown one: 401, with what to do.
    for token in [None, Some("hunter2"), Some("fleet_0000000000000000000000000000000000000000000000000000000000000000")]
    {
        let (status, body) = call(&http, "GET", &url("/v1/devices"), token, None);
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body["error"]["help"].as_str().unwrap().contains("fleetctl token create"), "{body}");
    }

    let viewer = create_token(&data, "dash", "viewer");
    let operator = create_token(&data, "ci-push", "operator");
    assert!(viewer.starts_with("fleet_") && viewer != operator);

    // A viewer reads, and may not push.
    let (status, page) = call(&http, "GET", &url("/v1/devices?selector=site=a"), Some(&viewer), None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["id"], "gw-1");
    assert!(page["next"].is_null());
    let (status, page) = call(&http, "GET", &url("/v1/devices?selector=site=b"), Some(&viewer), None);
    assert_eq!((status, page["items"].as_array().unwrap().len()), (200, 0));
    let module = base64_of(fleet_example_jobs::HELLO);
    let push = json!({"target": {"devices": ["gw-1"]}, "module": module});
    let (status, body) = call(&http, "POST", &url("/v1/jobs"), Some(&viewer), Some(push.clone()));
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("needs operator"), "{body}");

    // An operator pushes; the audit log names its token.
    let (status, pushed) = call(&http, "POST", &url("/v1/jobs"), Some(&operator), Some(push));
    assert_eq!(status, 201, "{pushed}");
    assert_eq!(pushed["devices"], 1);
    let job = pushed["job"].as_str().unwrap().to_string();
    let (status, detail) = call(&http, "GET", &url(&format!("/v1/jobs/{}", &job[..8])), Some(&viewer), None);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["job"]["id"], job.as_str());
    assert_eq!(detail["executions"][0]["device"], "gw-1");
    let (_, audit) = call(&http, "GET", &url("/v1/audit?limit=1"), Some(&viewer), None);
    assert_eq!(audit[0]["action"], "job.push");
    assert_eq!(audit[0]["actor"], "token:ci-push");

    // Prometheus metrics, for a viewer: gauges from the store, counters.
    let metrics = http.get(url("/metrics")).bearer_auth(&viewer).send().unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let metrics = metrics.text().unwrap();
    for line in [
        "# TYPE fleet_devices gauge",
        "fleet_devices{state=\"never seen\"} 1",
        "fleet_jobs{state=\"in_progress\"} 1",
        "# TYPE fleet_events_recorded_total counter",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in\n{metrics}");
    }
    assert!(
        metrics.contains("fleet_executions{state=\"sent\"} 1")
            || metrics.contains("fleet_executions{state=\"queued\"} 1"),
        "{metrics}"
    );
    // The store's commit latency, a histogram: the push above committed at least once.
    assert!(metrics.lines().any(|l| l == "# TYPE fleet_store_commit_duration_seconds histogram"), "{metrics}");
    let commits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fleet_store_commit_duration_seconds_count "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(commits >= 1, "no commit counted:\n{metrics}");
    let infinite = format!("fleet_store_commit_duration_seconds_bucket{{le=\"+Inf\"}} {commits}");
    assert!(metrics.lines().any(|l| l == infinite), "the +Inf bucket is not the count:\n{metrics}");
    assert_eq!(http.get(url("/metrics")).send().unwrap().status().as_u16(), 401);

    // Bad input is a 400 that says why, not a crash.
    let (status, body) = call(
        &http,
        "POST",
        &url("/v1/jobs"),
        Some(&operator),
        Some(json!({"target": "all", "module": base64_of(b"not wasm")})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not WebAssembly"), "{body}");
    let (status, _) =
        call(&http, "POST", &url("/v1/jobs"), Some(&operator), Some(json!({"target": "all", "module": "%%%"})));
    assert_eq!(status, 400);
    // A body that is not JSON, one that is too large, a token in the wrong header: each a
    // clear 4xx, and nothing written.
    let jobs_before = call(&http, "GET", &url("/v1/jobs"), Some(&viewer), None).1["items"].as_array().unwrap().len();
    let response = http
        .post(url("/v1/jobs"))
        .bearer_auth(&operator)
        .header("content-type", "application/json")
        .body("{\"target\": ")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().unwrap();
    assert!(body["error"]["help"].is_string(), "{body}");
    let huge = vec![b'A'; fleet_controller::api::MAX_BODY_BYTES + 1];
    let response = http
        .post(url("/v1/jobs"))
        .bearer_auth(&operator)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    for (header, value) in [("x-fleet-token", operator.clone()), ("authorization", format!("Token {operator}"))] {
        let response = http.get(url("/v1/jobs")).header(header, value).send().unwrap();
        assert_eq!(response.status().as_u16(), 401, "{header}");
    }
    let jobs_after = call(&http, "GET", &url("/v1/jobs"), Some(&viewer), None).1["items"].as_array().unwrap().len();
    assert_eq!(jobs_before, jobs_after);
    let (status, body) = call(&http, "GET", &url("/v1/devices/no-such-device"), Some(&viewer), None);
    assert_eq!(status, 404, "{body}");
    let (status, _) = call(&http, "POST", &url("/v1/jobs/ffff/cancel"), Some(&operator), Some(json!({})));
    assert_eq!(status, 404);

    // Only an admin manages devices and tokens.
    let (status, _) =
        call(&http, "PATCH", &url("/v1/devices/gw-1"), Some(&operator), Some(json!({"labels": {"site": "b"}})));
    assert_eq!(status, 403);
    let admin = create_token(&data, "ops-admin", "admin");
    let (status, device) =
        call(&http, "PATCH", &url("/v1/devices/gw-1"), Some(&admin), Some(json!({"labels": {"site": "b"}})));
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["labels"]["site"], "b");
    let (status, tokens) = call(&http, "GET", &url("/v1/tokens"), Some(&admin), None);
    assert_eq!(status, 200);
    let names: Vec<&str> = tokens.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ci-push", "dash", "local", "ops-admin"]);
    assert!(!tokens.to_string().contains(&operator), "a token's text is never returned again");

    // A revoked token is refused at once.
    let (status, _) = call(&http, "DELETE", &url("/v1/tokens/ci-push"), Some(&admin), None);
    assert_eq!(status, 200);
    let (status, body) = call(&http, "GET", &url("/v1/jobs"), Some(&operator), None);
    assert_eq!(status, 401, "{body}");

    // Decommission: the device is removed, its history kept.
    let (status, done) = call(&http, "DELETE", &url("/v1/devices/gw-1"), Some(&admin), None);
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["removed"], true);
    assert_eq!(done["canceled_jobs"][0], job.as_str());
    let (_, device) = call(&http, "GET", &url("/v1/devices/gw-1"), Some(&viewer), None);
    assert_eq!(device["state"], "removed");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn repeated_failures_from_one_address_are_slowed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = serve(&data);
    let http = client(&serve.ca);
    for _ in 0..8 {
        let (status, _) = call(&http, "GET", &format!("{}/v1/status", serve.url), Some("fleet_nope"), None);
        assert_eq!(status, 401);
    }
    // The counters reach the store within a few seconds; fleetctl reads them (through
    // the API, with the local token, which the failures did not slow down).
    let started = Instant::now();
    loop {
        let out = fleetctl(&data, &["status", "--json"], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        if status["counters"]["api.unauthorized"] == 8 {
            assert_eq!(status["counters"]["api.slowed_auth"], 4, "{status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "counters never showed: {status}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn fleetctl_is_the_apis_client_remotely_and_on_the_controllers_machine() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out_dir = dir.path().join("gw-1");
    assert!(
        fleetctl(&data, &["device", "provision", "gw-1", "--out", out_dir.to_str().unwrap()], &[]).status.success()
    );
    let serve = serve(&data);
    let viewer = create_token(&data, "remote-viewer", "viewer");
    let elsewhere = dir.path().join("elsewhere"); // a machine without the data directory
    let ca = serve.ca.to_str().unwrap().to_string();
    let remote = [("FLEET_SERVER", serve.url.as_str()), ("FLEET_TOKEN", viewer.as_str()), ("FLEET_CA", ca.as_str())];

    let out = fleetctl(&elsewhere, &["device", "list", "--json"], &remote);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let devices: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(devices[0]["id"], "gw-1");
    assert!(!elsewhere.exists(), "a remote command wrote a data directory");

    // A role too low: exit 2 with what to do.
    let module = dir.path().join("hello.wasm");
    std::fs::write(&module, fleet_example_jobs::HELLO).unwrap();
    let out = fleetctl(&elsewhere, &["job", "push", module.to_str().unwrap(), "--all"], &remote);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs operator"), "{}", text(&out.stderr));

    // A bad token: exit 2, and the hint names the way to get one.
    let bad = [("FLEET_SERVER", serve.url.as_str()), ("FLEET_TOKEN", "fleet_bad"), ("FLEET_CA", ca.as_str())];
    let out = fleetctl(&elsewhere, &["status"], &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("fleetctl token create"), "{}", text(&out.stderr));

    // `login` stores a profile; later commands use it with no flags.
    let config = dir.path().join("config");
    let profile_env = [("FLEET_CONFIG_DIR", config.to_str().unwrap())];
    let out = fleetctl(
        &elsewhere,
        &["login", &serve.url, "--token", &create_token(&data, "laptop", "operator"), "--ca", &ca],
        &profile_env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = fleetctl(&elsewhere, &["job", "push", module.to_str().unwrap(), "--all"], &profile_env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = fleetctl(&elsewhere, &["audit", "--limit", "1", "--json"], &profile_env);
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(audit[0]["actor"], "token:laptop");

    // On the controller's machine, no flags: the local serve's API.
    let out = fleetctl(&data, &["job", "list", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let jobs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1);
}

#[test]
fn the_openapi_document_names_every_route_the_api_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = serve(&data);
    let http = client(&serve.ca);
    let (status, doc) = call(&http, "GET", &format!("{}/v1/openapi.json", serve.url), None, None);
    assert_eq!(status, 200);
    assert_eq!(doc, fleet_controller::api::openapi());
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().unwrap() {
            operations += 1;
            let concrete = path.replace("{id}", "x").replace("{name}", "x");
            let body = matches!(method.as_str(), "post" | "patch").then(|| json!({}));
            let (status, answer) = call(&http, &method.to_uppercase(), &format!("{}{concrete}", serve.url), None, body);
            // Served (not the fallback's 404): refused for want of a token, or open.
            let expected = if operation.get("security").is_some() { 401 } else { 200 };
            assert_eq!(status, expected, "{method} {path}: {answer}");
        }
    }
    assert_eq!(operations, fleet_controller::api::routes().len());
    let (status, body) = call(&http, "GET", &format!("{}/v1/nothing-here", serve.url), None, None);
    assert_eq!(status, 404, "{body}");
}

#[test]
fn the_live_stream_sends_every_device_then_each_change() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out_dir = dir.path().join("gw-1");
    assert!(
        fleetctl(&data, &["device", "provision", "gw-1", "--out", out_dir.to_str().unwrap()], &[]).status.success()
    );
    let serve = serve(&data);
    let viewer = create_token(&data, "live", "viewer");
    let cert = reqwest::Certificate::from_pem(&std::fs::read(&serve.ca).unwrap()).unwrap();
    let streaming = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .timeout(None)
        .build()
        .unwrap();
    let response = streaming.get(format!("{}/v1/events", serve.url)).bearer_auth(&viewer).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut lines = std::io::BufReader::new(response).lines();
    // Reads events until `want` says stop: (event name, data).
    let mut next_event = || -> (String, String) {
        let (mut event, mut data) = (String::new(), String::new());
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.is_empty() && !data.is_empty() {
                return (event, data);
            }
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(text) = line.strip_prefix("data:") {
                data.push_str(text.trim_start());
            }
        }
        panic!("the stream ended");
    };
    let (event, body) = next_event();
    assert_eq!(event, "device");
    let device: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(device["id"], "gw-1");
    assert_eq!(next_event().0, "sync");

    // A change made elsewhere (an admin relabels the device) arrives as an event.
    let out = fleetctl(&data, &["device", "labels", "gw-1", "site=moved"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (event, body) = next_event();
    assert_eq!(event, "device", "{body}");
    let device: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(device["labels"]["site"], "moved");
    drop(serve);
}

/// `watch` with a serve running follows its live stream: plain screens in a pipe, drawn
/// when the controller says something changed.
#[test]
fn watch_follows_the_live_stream() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out_dir = dir.path().join("gw-1");
    assert!(
        fleetctl(&data, &["device", "provision", "gw-1", "--out", out_dir.to_str().unwrap()], &[]).status.success()
    );
    let _serve = serve(&data);
    let mut watch =
        Command::new(FLEETCTL).arg("--data-dir").arg(&data).arg("watch").stdout(Stdio::piped()).spawn().unwrap();
    let mut screen = String::new();
    for line in std::io::BufReader::new(watch.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        screen.push_str(&line);
        screen.push('\n');
        if line.contains("JOB") {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(screen.contains("(live)") && screen.contains("gw-1"), "{screen}");
    assert!(!screen.contains('\u{1b}'), "escape codes in a pipe: {screen:?}");
}
