//! Scenario 11: An inference job runs where the data is, on the gateways that offer it.
//!
//! A mixed fleet whose Linux agents are started with ONNX Runtime (`onnxruntime` in
//! their agent.toml) and each hold their own sensor file as the data input `readings`:
//! some rising, some falling, some steady. `window-classify` (an ONNX model inside a
//! Wasm module, run through wasi-nn) is pushed to `--all` with `--gpu preferred`, as an
//! operator would. `fleetctl` sends it only to the devices whose retained status offers
//! inference (`onnx:cpu`), so the boards get nothing and nothing fails; every gateway
//! classifies its own data correctly, on the CPU (no GPU here), and its report says so.

use fleet_hil::report::Row;
use fleet_hil::{DeviceKind, JobRequest, Result};
use fleet_schemas::JobState;

use crate::{Bench, retained_devices_online, retained_job_status};

/// The sensor file a gateway holds, and the class its last 16 readings are.
fn readings(n: usize) -> (String, &'static str) {
    let (slope, class) = match n % 3 {
        0 => (0.0, "steady"),
        1 => (0.4, "rising"),
        _ => (-0.6, "falling"),
    };
    let csv = (0..32).map(|i| format!("{},{:.2}\n", 1_700_000_000 + i, 20.0 + slope * f64::from(i))).collect();
    (csv, class)
}

pub fn run(bench: &Bench) -> Result<Row> {
    let library = std::env::var("ORT_DYLIB_PATH").expect(
        "ORT_DYLIB_PATH is not set: this scenario needs ONNX Runtime's shared library \
         (`bash .ci/run` installs the onnxruntime wheel and sets it)",
    );
    let mut fleet = bench.fleet("s11", 8)?;
    let gateways = fleet.ids_of(DeviceKind::Linux);
    let boards = fleet.ids_of(DeviceKind::Mcu);
    let mut expected = Vec::new();
    for (n, id) in gateways.iter().enumerate() {
        let dir = fleet.device_dir(id);
        let (csv, class) = readings(n);
        std::fs::write(dir.join("readings.csv"), csv).expect("sensor file");
        let toml = dir.join("agent.toml");
        let mut local = std::fs::read_to_string(&toml).expect("agent.toml");
        local.push_str(&format!("onnxruntime = {library:?}\n[data]\nreadings = \"readings.csv\"\n"));
        std::fs::write(&toml, local).expect("agent.toml");
        expected.push((id.clone(), class));
    }
    fleet.start()?;
    let online = retained_devices_online(&mut fleet)?;
    for id in &gateways {
        assert_eq!(online[id].inference, ["onnx:cpu"], "{id} offers inference on the CPU");
    }
    for id in &boards {
        assert!(online[id].inference.is_empty(), "{id}: a board offers no inference");
    }

    // The wall-clock bound counts compiling the module: six gateways compiling it at once
    // with the debug build's Cranelift on CI's two cores take most of the default 10 s.
    let request = JobRequest::new("window-classify", fleet_example_jobs::WINDOW_CLASSIFY)
        .flag("--input", "readings")
        .flag("--gpu", "preferred")
        .flag("--timeout", "60s");
    let job = fleet.push(&request)?;
    let record = fleet.wait_job(&job)?;
    assert_eq!(record.job.state, "completed", "{}", record.outcome_line());
    assert_eq!(record.job.total as usize, gateways.len(), "only the gateways get it: {}", record.outcome_line());
    assert_eq!(record.job.counts.succeeded as usize, gateways.len(), "{}", record.outcome_line());
    for (id, class) in &expected {
        let rows = record.executions_of(id);
        assert_eq!(rows.len(), 1, "{id}: one execution");
        let output = rows[0].output.as_deref().unwrap_or_default();
        assert!(output.starts_with(&format!("class={class} ")), "{id} holds {class} data and said {output:?}");
        assert!(
            rows[0].logs.iter().any(|l| l.starts_with("fleet: wasi-nn: model 0 runs on cpu")),
            "{id}: where the model ran: {:?}",
            rows[0].logs
        );
    }
    for id in &boards {
        assert!(record.executions_of(id).is_empty(), "{id}: a board is not sent an inference job");
    }
    let status = retained_job_status(&mut fleet, &job, |s| s.state == JobState::Completed)?;
    assert_eq!(status.counts.succeeded as usize, gateways.len());

    fleet.done();
    Ok(Row {
        devices: bench.describe(&fleet),
        faults: "none; each gateway holds different sensor data".into(),
        expected: format!("{} succeeded with their own class, boards skipped", gateways.len()),
        recorded: record.outcome_line(),
        ..Row::default()
    })
}
