//! `fleetctl device`: provision a device (its identity, credentials and config file) and
//! inspect the registry.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use fleet_controller::acl::mosquitto_hash;
use fleet_controller::auth::password_hash;
use fleet_controller::datadir::{DataDir, create_private_dir, write_secret};
use fleet_controller::model::{DeviceKind, format_labels, parse_labels};
use fleet_controller::store::{DeviceRow, NewDevice};
use fleet_controller::{random_32, unix_ms};
use fleet_schemas::provision::{BrokerEndpoint, CONFIG_VERSION, DeviceConfig, SecretSeed};
use fleet_schemas::signed::public_key_of;
use fleet_schemas::topics::DEFAULT_PREFIX;
use fleet_schemas::{DeviceId, Digest, Presence, SigningKey, TrustedKey};
use serde::Serialize;

use crate::fmt::{Table, age};
use crate::{Outcome, UsageError, actor};

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register a device and write its configuration (identity, keys, credentials).
    Provision {
        /// The device's id: 1 to 64 of A-Z a-z 0-9 _ - .
        id: String,
        /// Labels, matched by job selectors: k=v,k2=v2.
        #[arg(long, default_value = "")]
        labels: String,
        /// The kind of device.
        #[arg(long, default_value = "linux", value_parser = ["linux", "mcu"])]
        kind: String,
        /// Where to write agent.json (created, mode 0600). Copy it to the device.
        #[arg(long)]
        out: PathBuf,
        /// The broker address the device connects to, HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
    },
    /// List devices.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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

pub fn run(data_dir: &Path, command: DeviceCommand) -> Outcome {
    match command {
        DeviceCommand::Provision { id, labels, kind, out, broker } => {
            provision(data_dir, &id, &labels, &kind, &out, &broker)
        }
        DeviceCommand::List { json } => list(data_dir, json),
        DeviceCommand::Show { id, json } => show(data_dir, &id, json),
    }
}

fn provision(data_dir: &Path, id: &str, labels: &str, kind: &str, out: &Path, broker: &str) -> Outcome {
    let id = DeviceId::new(id).map_err(|e| UsageError::plain(format!("`{id}` is not a valid device id: {e}")))?;
    let labels =
        parse_labels(labels).map_err(|e| UsageError::new(e.0, "labels look like --labels site=plant-3,role=gw"))?;
    let kind: DeviceKind = kind.parse().map_err(|e: fleet_controller::model::ParseError| UsageError::plain(e.0))?;
    let (host, port) = broker
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
        .filter(|(host, _)| !host.is_empty())
        .ok_or_else(|| UsageError::new(format!("`{broker}` is not HOST:PORT"), "for example --broker 10.0.0.5:1883"))?;
    let config_path = out.join("agent.json");
    if config_path.exists() {
        return Err(UsageError::new(
            format!("{} already exists", config_path.display()),
            "choose another --out directory, or remove the old file if that device is gone",
        )
        .into());
    }

    let data = DataDir::new(data_dir);
    let mut store = data.open_or_init()?;
    if store.device(id.as_str())?.is_some() {
        return Err(UsageError::new(
            format!("device {id} is already provisioned"),
            format!("pick another id, or see it with `fleetctl device show {id}`"),
        )
        .into());
    }
    let device_seed = random_32()?;
    let device_key = SigningKey::from_bytes(&device_seed);
    let password = hex::encode(random_32()?);
    let salt = &random_32()?[..12];
    let root = store.root_key()?.context("the data directory has no root key")?;
    let job_keys: Vec<TrustedKey> =
        store.trusted_job_keys()?.iter().map(|k| TrustedKey { key_id: k.key_id, public_key: k.public_key }).collect();
    let config = DeviceConfig {
        version: CONFIG_VERSION,
        device_id: id.clone(),
        device_key: SecretSeed(Digest(device_seed)),
        root_key: root.public_key,
        job_keys,
        broker: BrokerEndpoint { host, port, tls: false },
        username: id.to_string(),
        password: password.clone(),
        topic_prefix: DEFAULT_PREFIX.to_string(),
        runtime: kind.runtime(),
        labels: labels.clone(),
    };

    // The file first: if registering fails, the file goes; a registered device without
    // its file could never connect.
    create_private_dir(out)?;
    let json = serde_json::to_string_pretty(&config)?;
    write_secret(&config_path, &json)?;
    let mut written = vec![config_path.clone()];
    if kind == DeviceKind::Mcu {
        let postcard_path = out.join("agent.postcard");
        let bytes = postcard::to_allocvec(&config)?;
        std::fs::write(&postcard_path, &bytes)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&postcard_path, std::fs::Permissions::from_mode(0o600))
            })
            .with_context(|| format!("writing {}", postcard_path.display()))?;
        written.push(postcard_path);
    }
    let device = NewDevice {
        id: id.clone(),
        kind,
        labels,
        public_key: public_key_of(&device_key).1,
        password_hash: password_hash(password.as_bytes()),
        mosquitto_hash: mosquitto_hash(&password, salt),
    };
    if let Err(error) = store.insert_device(&device, &actor(), unix_ms()) {
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
        return Err(error.into());
    }
    for path in &written {
        eprintln!("wrote {}", path.display());
    }
    eprintln!("provisioned {id} ({kind}); copy {} to the device (it holds its secret key)", config_path.display());
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// A device as `--json` prints it.
#[derive(Serialize)]
struct DeviceView {
    id: String,
    kind: DeviceKind,
    labels: fleet_controller::model::Labels,
    state: &'static str,
    public_key: String,
    status: Option<fleet_schemas::DeviceStatus>,
    status_at_ms: Option<u64>,
    next_envelope_seq: u64,
    acked_event_seq: u64,
    created_at_ms: u64,
}

fn presence(device: &DeviceRow) -> &'static str {
    match device.status.as_ref().map(|s| s.state) {
        Some(Presence::Online) => "online",
        Some(Presence::Offline) => "offline",
        None => "never seen",
    }
}

fn view(device: DeviceRow) -> DeviceView {
    DeviceView {
        state: presence(&device),
        id: device.id.to_string(),
        kind: device.kind,
        labels: device.labels,
        public_key: device.public_key.to_hex(),
        status: device.status,
        status_at_ms: device.status_at_ms,
        next_envelope_seq: device.next_seq,
        acked_event_seq: device.acked_event_seq,
        created_at_ms: device.created_at_ms,
    }
}

/// The devices table (also used by `watch`).
pub fn devices_table(devices: &[DeviceRow], now: u64) -> Table {
    let mut table = Table::new(&["DEVICE", "KIND", "STATE", "QUEUE", "OUTBOX", "LAST SEEN", "LABELS"]);
    for device in devices {
        let status = device.status.as_ref();
        table.row(vec![
            device.id.to_string(),
            device.kind.to_string(),
            presence(device).to_string(),
            status.map_or("-".into(), |s| s.queue_depth.to_string()),
            status.map_or("-".into(), |s| s.outbox_depth.to_string()),
            age(device.status_at_ms, now),
            format_labels(&device.labels),
        ]);
    }
    table
}

fn list(data_dir: &Path, json: bool) -> Outcome {
    let store = DataDir::new(data_dir).open()?;
    let devices = store.devices()?;
    if json {
        let views: Vec<DeviceView> = devices.into_iter().map(view).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else if devices.is_empty() {
        eprintln!("no devices yet; add one with `fleetctl device provision ID --out DIR`");
    } else {
        print!("{}", devices_table(&devices, unix_ms()).render());
    }
    Ok(ExitCode::SUCCESS)
}

fn show(data_dir: &Path, id: &str, json: bool) -> Outcome {
    let store = DataDir::new(data_dir).open()?;
    let device = store.device(id)?.ok_or_else(|| {
        UsageError::new(format!("no device named `{id}`"), "run `fleetctl device list` to see device ids")
    })?;
    let device = view(device);
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
        println!(
            "queue        {} waiting or running, {} events not yet acknowledged",
            status.queue_depth, status.outbox_depth
        );
        if let Some(gpu) = &status.gpu {
            println!("gpu          {} {}", gpu.vendor, gpu.model);
        }
    }
    println!("public key   {}", device.public_key);
    println!("envelopes    next seq {}", device.next_envelope_seq);
    println!("events       recorded through seq {}", device.acked_event_seq);
    println!("provisioned  {}", age(Some(device.created_at_ms), now));
    Ok(ExitCode::SUCCESS)
}
