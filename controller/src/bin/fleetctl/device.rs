//! `fleetctl device`: provision a device (its identity, credentials and config file) and
//! inspect the registry.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use fleet_controller::datadir::{create_private_dir, write_secret};
use fleet_controller::model::{DeviceKind, format_labels, parse_labels};
use fleet_controller::operate::{DeviceFilter, DeviceView, ProvisionRequest};
use fleet_controller::store::DeviceStore;
use fleet_controller::unix_ms;
use fleet_schemas::DeviceId;
use fleet_schemas::provision::{DeviceConfig, config_block};

use crate::backend::Backend;
use crate::fmt::{Table, age};
use crate::{Outcome, UsageError};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register a device and write its configuration (identity, keys, credentials).
    Provision {
        /// The device's id: 1 to 64 of A-Z a-z 0-9 _ -, starting with a letter or digit.
        id: String,
        /// Labels, matched by job selectors: k=v,k2=v2.
        #[arg(long, default_value = "")]
        labels: String,
        /// The kind of device.
        #[arg(long, default_value = "linux", value_parser = ["linux", "mcu"])]
        kind: String,
        /// Where to write agent.json (created, mode 0600). Copy it to the device. With
        /// --kind mcu also: config-block.bin (what is flashed at the board's config
        /// partition), fleet-flash.bin (the same, as a QEMU flash image) and flash.sh.
        #[arg(long)]
        out: PathBuf,
        /// The broker address the device connects to, HOST:PORT [default: 127.0.0.1:1883,
        /// with --tls 127.0.0.1:8883].
        #[arg(long)]
        broker: Option<String>,
        /// Connect with MQTT over TLS (serve's --tls-listen port): the agent checks the
        /// broker's certificate against the controller's CA, written beside agent.json as
        /// ca.pem, and never falls back to plain MQTT. Gateways only.
        #[arg(long)]
        tls: bool,
        /// Log in with a client certificate instead of a password (mTLS; implies --tls):
        /// the controller's CA issues one naming the device, written beside agent.json
        /// as device.crt and device.key (0600). Removing or re-provisioning the device
        /// revokes it at once on the embedded broker. Gateways only.
        #[arg(long)]
        cert: bool,
        /// For --kind mcu: the firmware image (ELF) to put beside the config as
        /// firmware.elf, so the directory holds everything flash.sh flashes.
        #[arg(long, value_name = "ELF")]
        firmware: Option<PathBuf>,
        /// The device exists already (reinstalled, replaced, or removed): give it new
        /// credentials and a new key, revoking the old ones at once (a running serve cuts
        /// its connection off), keep its history, and write its config (replacing
        /// --out's files).
        #[arg(long)]
        replace: bool,
    },
    /// Wait until devices are online and synced (ready for jobs): for scripts that start
    /// an agent and then push to it. Exit code 1 if the timeout passes first.
    Wait {
        /// The devices' ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// How long to wait at most.
        #[arg(long, default_value = "60s", value_parser = crate::fmt::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Remove a device: its credentials and key are revoked at once (a running serve
    /// cuts its connection off; it cannot log in again, and nothing it still sends is
    /// recorded), its unfinished executions are canceled, its history is kept.
    Remove {
        /// The device's id.
        id: String,
    },
    /// Change a device's labels (what job selectors match; continuous jobs pick it up).
    Labels {
        /// The device's id.
        id: String,
        /// Its labels from now on: k=v,k2=v2 (empty for none).
        labels: String,
    },
    /// List devices.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only devices with these labels: k=v,k2=v2.
        #[arg(long, value_name = "LABELS")]
        selector: Option<String>,
        /// Only devices in this state.
        #[arg(long, value_parser = ["online", "offline", "never seen", "removed"])]
        state: Option<String>,
    },
    /// Show one device.
    Show {
        /// The device's id.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(backend: impl FnOnce() -> anyhow::Result<Backend>, command: DeviceCommand) -> Outcome {
    match command {
        DeviceCommand::Provision { id, labels, kind, out, broker, tls, cert, firmware, replace } => {
            let tls = tls || cert;
            let broker = broker.unwrap_or_else(|| if tls { "127.0.0.1:8883" } else { "127.0.0.1:1883" }.to_string());
            provision(&backend()?, &id, &labels, &kind, &out, (&broker, tls, cert), firmware.as_deref(), replace)
        }
        DeviceCommand::Remove { id } => remove(&backend()?, &id),
        DeviceCommand::Wait { ids, timeout } => wait(&backend()?, &ids, timeout),
        DeviceCommand::Labels { id, labels } => relabel(&backend()?, &id, &labels),
        DeviceCommand::List { json, selector, state } => {
            list(&backend()?, json, &DeviceFilter { selector, state, ..DeviceFilter::default() })
        }
        DeviceCommand::Show { id, json } => show(&backend()?, &id, json),
    }
}

#[allow(clippy::too_many_arguments)]
fn provision(
    backend: &Backend,
    id: &str,
    labels: &str,
    kind: &str,
    out: &Path,
    (broker, tls, certificate): (&str, bool, bool),
    firmware: Option<&Path>,
    replace: bool,
) -> Outcome {
    let id = DeviceId::new(id).map_err(|e| UsageError::plain(format!("`{id}` is not a valid device id: {e}")))?;
    let labels =
        parse_labels(labels).map_err(|e| UsageError::new(e.0, "labels look like --labels site=plant-3,role=gw"))?;
    let kind: DeviceKind = kind.parse().map_err(|e: fleet_controller::model::ParseError| UsageError::plain(e.0))?;
    let (host, port) = broker
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
        .filter(|(host, _)| !host.is_empty())
        .ok_or_else(|| UsageError::new(format!("`{broker}` is not HOST:PORT"), "for example --broker 10.0.0.5:1883"))?;
    let firmware = match firmware {
        Some(_) if kind != DeviceKind::Mcu => {
            return Err(UsageError::plain("--firmware is for --kind mcu (a gateway runs fleet-agent)").into());
        }
        Some(path) => {
            let image = std::fs::read(path).map_err(|e| {
                UsageError::new(format!("cannot read {}: {e}", path.display()), "give the path of the firmware's ELF")
            })?;
            if !image.starts_with(b"\x7fELF") {
                return Err(UsageError::new(
                    format!("{} is not an ELF image", path.display()),
                    "firmware-sdk builds it: cargo build --release --target thumbv7em-none-eabihf -p fleet-board-mps2-an386",
                )
                .into());
            }
            Some(image)
        }
        None => None,
    };
    let config_path = out.join("agent.json");
    if config_path.exists() && !replace {
        return Err(UsageError::new(
            format!("{} already exists", config_path.display()),
            format!("choose another --out directory, or re-provision that device with `fleetctl device provision {id} --replace --out {}`", out.display()),
        )
        .into());
    }

    let request = ProvisionRequest {
        id: id.clone(),
        labels,
        kind,
        broker_host: host.clone(),
        broker_port: port,
        tls,
        certificate,
        replace,
    };
    // Registered first (the controller makes the keys and keeps only the public one and a
    // password hash); if the files cannot be written after, `--replace` gives the device
    // new credentials.
    let provisioned = backend.provision(&request)?;
    let config = &provisioned.config;
    if replace {
        for name in [
            "agent.json",
            "agent.postcard",
            "config-block.bin",
            QEMU_FLASH_FILE,
            "flash.sh",
            FIRMWARE_FILE,
            "ca.pem",
            DEVICE_CERT_FILE,
            DEVICE_KEY_FILE,
        ] {
            let _ = std::fs::remove_file(out.join(name));
        }
    }
    let written = write_device_files(out, config, &provisioned, firmware, (&host, port)).with_context(|| {
        format!("{id} is provisioned, but its files could not be written; fix that and run again with --replace")
    })?;
    for path in &written {
        eprintln!("wrote {}", path.display());
    }
    if replace {
        eprintln!(
            "{id}: new credentials and key; the old ones are revoked{}",
            if backend.is_remote() { " (the running serve cuts off its connection)" } else { "" }
        );
    }
    if kind == DeviceKind::Mcu {
        eprintln!(
            "provisioned {id} ({kind}); flash it with {}/flash.sh qemu FIRMWARE_ELF, or flash.sh probe-rs FIRMWARE_ELF \
             CHIP CONFIG_ADDRESS for a board on a probe (the files hold its secret key)",
            out.display()
        );
    } else {
        eprintln!("provisioned {id} ({kind}); copy {} to the device (it holds its secret key)", config_path.display());
    }
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// The device's client certificate beside `agent.json` (`--cert`), as `fleet-agent` looks for it.
const DEVICE_CERT_FILE: &str = "device.crt";
/// Its private key.
const DEVICE_KEY_FILE: &str = "device.key";

/// Writes what a device needs into `out`: `agent.json` (0600), with TLS its `ca.pem`
/// (and with a certificate `device.crt`, `device.key` 0600), and for a microcontroller
/// what is flashed (the config block, a QEMU flash image, `flash.sh`, and the firmware
/// when given). Returns the files written.
fn write_device_files(
    out: &Path,
    config: &DeviceConfig,
    provisioned: &fleet_controller::operate::Provisioned,
    firmware: Option<Vec<u8>>,
    (host, port): (&str, u16),
) -> anyhow::Result<Vec<PathBuf>> {
    create_private_dir(out)?;
    let config_path = out.join("agent.json");
    write_secret(&config_path, &serde_json::to_string_pretty(config)?)?;
    let mut written = vec![config_path];
    if let Some(ca) = &provisioned.ca_pem {
        let path = out.join("ca.pem");
        std::fs::write(&path, ca).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    if let (Some(cert), Some(key)) = (&provisioned.cert_pem, &provisioned.key_pem) {
        let path = out.join(DEVICE_CERT_FILE);
        std::fs::write(&path, cert).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
        let path = out.join(DEVICE_KEY_FILE);
        write_secret(&path, key.trim_end())?;
        written.push(path);
    }
    if config.runtime == DeviceKind::Mcu.runtime() {
        let block = config_block(config).context("encoding the config block")?;
        let mut flash = vec![0xffu8; QEMU_FLASH_BYTES];
        let page = flash.get_mut(..block.len()).context("the config block does not fit the flash")?;
        page.copy_from_slice(&block);
        let files: [(&str, Vec<u8>, u32); 4] = [
            ("agent.postcard", postcard::to_allocvec(config)?, 0o600),
            ("config-block.bin", block, 0o600),
            (QEMU_FLASH_FILE, flash, 0o600),
            ("flash.sh", flash_script(&config.device_id, host, port).into_bytes(), 0o700),
        ];
        let image = firmware.map(|image| (FIRMWARE_FILE, image, 0o644));
        for (name, bytes, mode) in files.into_iter().chain(image) {
            let path = out.join(name);
            write_with_mode(&path, &bytes, mode).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The board's flash: the config page and 63 store pages. QEMU has no flash at that
/// address, so the firmware keeps it in a host file through semihosting.
const QEMU_FLASH_BYTES: usize = 64 * 4096;
/// The flash file's name, as the firmware opens it (in QEMU's working directory).
const QEMU_FLASH_FILE: &str = "fleet-flash.bin";
/// The firmware image's name in the directory, with --firmware.
const FIRMWARE_FILE: &str = "firmware.elf";

/// Writes `bytes` to `path`, created with `mode` (the config holds the device's secrets).
fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The script that flashes a provisioned microcontroller: onto QEMU's `mps2-an386`
/// (its flash file is this directory's `fleet-flash.bin`), or onto a real board
/// through probe-rs.
fn flash_script(id: &DeviceId, host: &str, port: u16) -> String {
    format!(
        r#"#!/bin/sh
# Flashes device {id}. Written by `fleetctl device provision {id} --kind mcu`, beside
# config-block.bin (its identity, keys and broker credentials: keep it secret) and
# {flash} (the same block in an erased flash image, for QEMU).
#
# FIRMWARE_ELF defaults to firmware.elf here (fleetctl's --firmware puts it there).
#
#   ./flash.sh qemu [FIRMWARE_ELF]
#       Boots the firmware on QEMU mps2-an386 with this device's flash ({flash},
#       kept here: run it again for a power cycle). Its UART is wired to the broker,
#       {host}:{port}, or FLEET_BROKER=HOST:PORT.
#   ./flash.sh probe-rs FIRMWARE_ELF|- CHIP CONFIG_ADDRESS   (- for firmware.elf)
#       Writes config-block.bin at CONFIG_ADDRESS (the start of the board's config
#       partition), then flashes and runs the firmware, through a debug probe.
#
# The firmware image comes from firmware-sdk:
#   cargo build --release --target thumbv7em-none-eabihf -p fleet-board-mps2-an386
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
usage() {{
  echo "usage: $0 qemu [FIRMWARE_ELF] | $0 probe-rs FIRMWARE_ELF|- CHIP CONFIG_ADDRESS (see the top of this file)" >&2
  exit 2
}}
mode="${{1:-}}"
firmware="${{2:--}}"
[ "$firmware" = "-" ] && firmware="$here/{image}"
[ -f "$firmware" ] || usage
case "$mode" in
  qemu)
    broker="${{FLEET_BROKER:-{host}:{port}}}"
    cd "$here"
    exec qemu-system-arm -M mps2-an386 -display none -monitor none       -semihosting-config enable=on,target=native       -serial "tcp:$broker,reconnect=1" -kernel "$firmware"
    ;;
  probe-rs)
    chip="${{3:-}}"
    address="${{4:-}}"
    [ -n "$chip" ] && [ -n "$address" ] || usage
    probe-rs download --chip "$chip" --binary-format bin --base-address "$address" "$here/config-block.bin"
    exec probe-rs run --chip "$chip" "$firmware"
    ;;
  *) usage ;;
esac
"#,
        flash = QEMU_FLASH_FILE,
        image = FIRMWARE_FILE,
    )
}

/// `device wait`: until every device is online and its store synced.
fn wait(backend: &Backend, ids: &[String], timeout: std::time::Duration) -> Outcome {
    for id in ids {
        backend.device(id)?;
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for id in ids {
            if !backend.device(id)?.ready() {
                waiting.push(id.as_str());
            }
        }
        if waiting.is_empty() {
            eprintln!("online and synced: {}", ids.join(", "));
            return Ok(ExitCode::SUCCESS);
        }
        if std::time::Instant::now() >= deadline {
            eprintln!("still not online after {:?}: {}", timeout, waiting.join(", "));
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `device remove`.
fn remove(backend: &Backend, id: &str) -> Outcome {
    let done = backend.remove_device(id)?;
    if !done.removed {
        eprintln!("{id} was removed already");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "removed {id}: its credentials and key are revoked{}, its history is kept; {} job(s) had executions on it, canceled",
        if backend.is_remote() { " (the running serve cuts off its connection)" } else { "" },
        done.canceled_jobs.len()
    );
    eprintln!("with an external broker, regenerate its files: `fleetctl broker acl --out DIR`, and reload it");
    Ok(ExitCode::SUCCESS)
}

/// `device labels`.
fn relabel(backend: &Backend, id: &str, labels: &str) -> Outcome {
    let labels = parse_labels(labels).map_err(|e| UsageError::new(e.0, "labels look like site=plant-3,role=gw"))?;
    let device = backend.relabel(id, &labels)?;
    eprintln!(
        "{}: labels {}",
        device.id,
        if labels.is_empty() { "(none)".to_string() } else { format_labels(&labels) }
    );
    Ok(ExitCode::SUCCESS)
}

/// A depth as the table shows it: the number, and how old it is once it is no longer
/// fresh (a device reports its depths when its queue changes, on connect and every few
/// minutes, and an offline device not at all).
fn depth(value: u32, depths: &fleet_controller::store::Depths, now: u64) -> String {
    if now.saturating_sub(depths.at_ms) < FRESH_DEPTHS_MS {
        value.to_string()
    } else {
        format!("{value} ({})", age(Some(depths.at_ms), now))
    }
}

/// Depths reported within this long are shown without their age.
const FRESH_DEPTHS_MS: u64 = 10_000;

/// The devices table (also used by `watch`). QUEUE and OUTBOX are what the device last
/// reported while online (with their age once they are older than a few seconds).
pub fn devices_table(devices: &[DeviceView], now: u64) -> Table {
    let mut table = Table::new(&["DEVICE", "KIND", "STATE", "QUEUE", "OUTBOX", "LAST SEEN", "LABELS"]);
    for device in devices {
        let depths = device.depths.as_ref();
        table.row(vec![
            device.id.clone(),
            device.kind.to_string(),
            device.state.clone(),
            depths.map_or("-".into(), |d| depth(d.queue, d, now)),
            depths.map_or("-".into(), |d| depth(d.outbox, d, now)),
            age(device.status_at_ms, now),
            format_labels(&device.labels),
        ]);
    }
    table
}

fn list(backend: &Backend, json: bool, filter: &DeviceFilter) -> Outcome {
    let devices = backend.devices(filter)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
    } else if devices.is_empty() {
        eprintln!("no devices yet; add one with `fleetctl device provision ID --out DIR`");
    } else {
        print!("{}", devices_table(&devices, unix_ms()).render());
    }
    Ok(ExitCode::SUCCESS)
}

fn show(backend: &Backend, id: &str, json: bool) -> Outcome {
    let device = backend.device(id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&device)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = unix_ms();
    println!("device       {}", device.id);
    println!("kind         {}", device.kind);
    println!("labels       {}", format_labels(&device.labels));
    println!("state        {} (status {})", device.state, age(device.status_at_ms, now));
    if let Some(status) = &device.status {
        println!("agent        {} ({:?})", status.agent_version, status.runtime);
        if let Some(depths) = &device.depths {
            println!(
                "queue        {} waiting or running, {} events not yet acknowledged (reported {})",
                depths.queue,
                depths.outbox,
                age(Some(depths.at_ms), now)
            );
        }
        if let Some(gpu) = &status.gpu {
            println!("gpu          {} {}", gpu.vendor, gpu.model);
        }
        if !status.inference.is_empty() {
            println!("inference    wasi-nn on {}", status.inference.join(", "));
        }
    }
    match device.store {
        DeviceStore { incarnation: Some(incarnation), synced_at_ms, resets } => println!(
            "store        incarnation {incarnation}, synced {}{}",
            age(synced_at_ms, now),
            match resets {
                0 => String::new(),
                n => format!(
                    "; reset {n} time(s): events it had not delivered were lost with it, executions in flight were sent to it again"
                ),
            }
        ),
        _ => println!("store        not synced yet (never connected since provisioning)"),
    }
    println!("public key   {}", device.public_key);
    println!("envelopes    next seq {}", device.next_envelope_seq);
    println!("events       recorded through seq {}", device.acked_event_seq);
    println!("provisioned  {}", age(Some(device.created_at_ms), now));
    Ok(ExitCode::SUCCESS)
}
