//! What the agents cost the device: `fleet-agent`'s binary and memory, measured on a
//! real `fleet-agent` process, and the firmware's flash and RAM, measured by the
//! firmware's own size report on QEMU.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fleet_hil::bins;

use crate::fleet::{BenchFleet, BrokerKind};
use crate::table::{self, Table};

/// Jobs the busy figure runs through the agent.
const BUSY_JOBS: usize = 100;

/// `fleet-agent`'s size and resident memory (idle after start, peak while busy), and,
/// unless `quick`, the firmware's flash and RAM.
pub async fn footprint(quick: bool, table: &mut Table) -> anyhow::Result<()> {
    let agent = bins::binary(bins::FLEET_AGENT)?;
    let size = std::fs::metadata(&agent)?.len();
    table.add(table::alone(
        "fleet-agent binary",
        table::size(size),
        format!("{} build, wasmtime + SQLite + MQTT, not stripped, x86_64", profile_of(&agent)),
    ));

    // Without ONNX Runtime (whatever ORT_DYLIB_PATH says), as most gateways run it.
    let (idle, busy) = agent_memory(&agent, None, BUSY_JOBS).await?;
    table.add(table::alone(
        "fleet-agent memory, idle",
        format!("{} RSS", table::size(idle.rss_kib * 1024)),
        "connected and online, one second after start; no ONNX Runtime",
    ));
    table.add(table::alone(
        "fleet-agent memory, busy",
        format!("{} peak RSS", table::size(busy.peak_kib * 1024)),
        format!(
            "after {BUSY_JOBS} `hello` jobs (RSS now {}): wasmtime engine, compiled-module cache, SQLite",
            table::size(busy.rss_kib * 1024)
        ),
    ));
    match std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        Some(library) => {
            let (idle, _) = agent_memory(&agent, Some(std::path::Path::new(&library)), 0).await?;
            table.add(table::alone(
                "fleet-agent memory, idle, offering inference",
                format!("{} RSS", table::size(idle.rss_kib * 1024)),
                "as above, started with --onnxruntime: ONNX Runtime's library loaded for wasi-nn",
            ));
        }
        None => table.add(table::alone(
            "fleet-agent memory, idle, offering inference",
            "not measured",
            "ORT_DYLIB_PATH is not set",
        )),
    }

    if quick {
        table.add(table::alone("firmware flash and RAM", "not measured in --quick", "run the full bench"));
    } else {
        firmware(table)?;
    }
    Ok(())
}

/// Runs a real `fleet-agent` against a one-device fleet on the embedded broker, with
/// ONNX Runtime from `onnxruntime` or none; its memory one second after it is online,
/// and after `jobs` `hello` jobs one at a time.
async fn agent_memory(
    agent: &std::path::Path,
    onnxruntime: Option<&std::path::Path>,
    jobs: usize,
) -> anyhow::Result<(Memory, Memory)> {
    let mut fleet = BenchFleet::start(BrokerKind::Embedded, 1, "gw").await?;
    let device = fleet.devices()[0].clone();
    let dir = tempfile::Builder::new().prefix("fleet-bench-agent-").tempdir()?;
    let config = dir.path().join("agent.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&fleet.device_config(&device))?)?;
    let log = std::fs::File::create(dir.path().join("agent.log"))?;
    let mut command = Command::new(agent);
    command.arg("--config").arg(&config).env("RUST_LOG", "warn").env_remove("ORT_DYLIB_PATH");
    if let Some(library) = onnxruntime {
        command.arg("--onnxruntime").arg(library);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", agent.display()))?;
    let measured = async {
        fleet.wait_online(Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = memory(child.id())?;
        let target = [device.id.clone()];
        // One at a time: the figure is an agent doing work, not an agent holding a queue.
        for _ in 0..jobs {
            let job = fleet.push(fleet_example_jobs::HELLO, &target)?;
            fleet.wait_succeeded(&job, 1, Duration::from_millis(2), Duration::from_secs(30)).await?;
        }
        let busy = memory(child.id())?;
        anyhow::Ok((idle, busy))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    fleet.stop().await?;
    measured.with_context(|| {
        let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        format!("fleet-agent's log ends:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    })
}

pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

/// VmRSS and VmHWM of a process.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone (did fleet-agent exit?)"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory { rss_kib: field("VmRSS:")?, peak_kib: field("VmHWM:")? })
}

fn profile_of(binary: &std::path::Path) -> String {
    binary.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The firmware's size report (its `sizes` test on QEMU), the agent image's line.
fn firmware(table: &mut Table) -> anyhow::Result<()> {
    let dir: PathBuf = bins::workspace_dir().join("firmware-sdk");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let mut command = Command::new(cargo);
    // The firmware is its own workspace with its own target directory: a
    // CARGO_TARGET_DIR meant for this workspace would rebuild it from scratch there.
    match std::env::var_os("FLEET_FIRMWARE_TARGET_DIR") {
        Some(dir) => command.env("CARGO_TARGET_DIR", dir),
        None => command.env_remove("CARGO_TARGET_DIR"),
    };
    let output = command
        .current_dir(&dir)
        .args(["test", "-p", "fleet-firmware-qemu-tests", "--test", "sizes", "--", "--nocapture"])
        .output()
        .context("cannot run cargo for the firmware's size report")?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("the firmware's size report failed ({}):\n{text}", output.status);
    }
    let Some(line) = text.lines().find(|l| l.starts_with("agent ")) else {
        bail!("no `agent` line in the firmware's size report:\n{text}");
    };
    // agent  642796 B ( 98.1% of 640 KiB)   123456 B ( 47.1% of 256 KiB)  heap: peak 12345 B
    let numbers: Vec<&str> = line.split_whitespace().collect();
    let flash = numbers.get(1).copied().unwrap_or("?");
    let ram_at = numbers.iter().position(|w| *w == "KiB)").map(|i| i + 1);
    let ram = ram_at.and_then(|i| numbers.get(i)).copied().unwrap_or("?");
    let heap = line.split("  ").last().unwrap_or("?").trim();
    table.add(table::alone(
        "firmware flash (agent image)",
        format!("{flash} B"),
        "text + rodata + data of the mps2-an386 agent; budget 640 KiB",
    ));
    // slicing: sum-compute 600000 iterations, 17402570 fuel: unsliced 431 ms
    // slicing: sliced every 1000000 fuel: 431 ms in 18 slices (0 bytes waiting)
    let slicing: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("slicing: ")).collect();
    let millions =
        |line: &str, after: &str| -> Option<f64> { line.split(after).nth(1)?.split(' ').next()?.parse().ok() };
    match slicing.as_slice() {
        [unsliced, sliced, fine, ..] => {
            let base = millions(unsliced, "unsliced ");
            let at = |line: &str| millions(line, "fuel: ");
            let cost = |line: &str| match (base, at(line)) {
                (Some(b), Some(s)) if b > 0.0 => format!("{:+.1} %", 100.0 * (s - b) / b),
                _ => "?".into(),
            };
            table.add(table::alone(
                "firmware: a job run in slices",
                format!("{} (default slice), {} (100x smaller)", cost(sliced), cost(fine)),
                format!(
                    "instructions against the same job run at once, QEMU -icount; sum-compute {unsliced}; {}; {}; \
                     same output and fuel",
                    sliced.trim_start_matches("sliced "),
                    fine.trim_start_matches("sliced ")
                ),
            ));
        }
        _ => table.add(table::alone("firmware: a job run in slices", "?", "no slicing lines in the size report")),
    }
    table.add(table::alone(
        "firmware RAM (agent image)",
        format!("{ram} B static; heap peak {heap}"),
        format!(
            "static = data + bss, the heap arena included; heap peak while running `hello`; budget 256 KiB; the \
             report took {:.0} s",
            started.elapsed().as_secs_f64()
        ),
    ));
    Ok(())
}
