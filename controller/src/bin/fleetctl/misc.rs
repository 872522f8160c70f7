//! `fleetctl serve`, `watch`, `status`, `key rotate` and `broker acl`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use fleet_controller::acl::{acl_file, mosquitto_hash, passwd_file};
use fleet_controller::api::ApiConfig;
use fleet_controller::datadir::{DataDir, create_private_dir, write_secret};
use fleet_controller::operate::DeviceFilter;
use fleet_controller::server::{self, BrokerChoice, ServeConfig};
use fleet_controller::signer::sign_rotation;
use fleet_controller::tokens::Role;
use fleet_controller::{random_32, unix_ms};
use fleet_schemas::limits::MAX_TRUSTED_KEYS;
use fleet_schemas::{Topics, TrustedKey};

use crate::backend::{Backend, Profile, Remote, write_profile};
use crate::device::devices_table;
use crate::fmt::{age, parse_duration};
use crate::job::jobs_table;
use crate::{Outcome, UsageError, actor};

/// Whether a `serve` runs on the data directory (it holds the directory's lock).
fn serve_is_running(data_dir: &Path) -> bool {
    DataDir::new(data_dir).serving().is_some()
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the embedded broker listens.
    #[arg(long, default_value = "127.0.0.1:1883")]
    listen: SocketAddr,
    /// Use this broker instead of the embedded one: mqtt://HOST:PORT, or
    /// mqtts://HOST:PORT for MQTT over TLS (checked against --broker-ca).
    #[arg(long, value_name = "URL", conflicts_with = "listen")]
    broker: Option<String>,
    /// With --broker mqtts://: the CA (PEM) its certificate chains to [default: the
    /// controller's, DATA/tls/ca.pem, which signs what `fleetctl broker acl --out DIR`
    /// writes for mosquitto].
    #[arg(long, value_name = "FILE", requires = "broker")]
    broker_ca: Option<PathBuf>,
    /// Where the operator API (HTTPS) listens; port 0 picks a free one (fleetctl on
    /// this machine finds it through the data directory).
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
    api_listen: SocketAddr,
    /// Where the embedded broker also serves MQTT over TLS (devices provisioned with
    /// --tls connect there); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8883", value_name = "ADDR", conflicts_with = "broker")]
    tls_listen: SocketAddr,
    /// Serve no MQTT over TLS.
    #[arg(long, conflicts_with = "tls_listen")]
    no_tls: bool,
    /// A host name (or address) devices and clients use to reach this controller, for
    /// its certificates (repeat for more; localhost and the listen addresses are in them).
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    /// The API's certificate chain (PEM) from your own CA, instead of the controller's.
    #[arg(long, value_name = "FILE", requires = "api_key")]
    api_cert: Option<PathBuf>,
    /// The private key (PEM) of --api-cert.
    #[arg(long, value_name = "FILE", requires = "api_cert")]
    api_key: Option<PathBuf>,
    /// Serve no API (fleetctl then works on the data directory's database).
    #[arg(long, conflicts_with_all = ["api_listen", "api_cert"])]
    no_api: bool,
}

pub fn serve(data_dir: &Path, args: ServeArgs) -> Outcome {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (broker, broker_tls) = match &args.broker {
        Some(url) => BrokerChoice::parse_url_tls(url)
            .map_err(|e| UsageError::new(e, "for example --broker mqtt://10.0.0.5:1883 or mqtts://broker.lan:8883"))?,
        None => (BrokerChoice::Embedded { listen: args.listen }, false),
    };
    if matches!(broker, BrokerChoice::Embedded { .. }) {
        raise_open_file_limit();
    }
    let mut config = ServeConfig::new(data_dir, broker);
    config.names = args.names.clone();
    if broker_tls {
        let ca = match &args.broker_ca {
            Some(ca) => ca.clone(),
            None => fleet_controller::tls::ensure_ca(&data_dir.join("tls"))?,
        };
        config.broker_tls = Some(ca);
    } else if args.broker_ca.is_some() {
        return Err(UsageError::plain("--broker-ca is for --broker mqtts://").into());
    }
    if args.broker.is_none() && !args.no_tls {
        config.mqtt_tls = Some(args.tls_listen);
    }
    if !args.no_api {
        let mut api = ApiConfig::new(args.api_listen);
        api.names = args.names.clone();
        api.cert = args.api_cert.clone().zip(args.api_key.clone());
        config.api = Some(api);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let running = server::start(config).await?;
        eprintln!("fleetctl serve: MQTT on {}, data in {} (Ctrl-C to stop)", running.broker_addr(), data_dir.display());
        if let Some(tls) = running.broker_tls_addr() {
            eprintln!("fleetctl serve: MQTT over TLS on {tls} (devices provisioned with --tls)");
        }
        if let Some((url, ca)) = running.api() {
            eprintln!("fleetctl serve: operator API on {url} (CA {}; fleetctl on this machine uses it as is)", ca.display());
        }
        if let Some(capacity) = running.broker_capacity() {
            tracing::info!(
                max_connections = capacity,
                "the embedded broker holds up to {capacity} device connections (the open-file limit, ulimit -n, sets it)"
            );
        }
        running
            .run_until(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// How often to refresh.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Print once and exit.
    #[arg(long)]
    once: bool,
}

/// A live view: on a terminal the screen is redrawn in place; into a pipe or a file it
/// is printed again, as plain text without escape codes, only when it changed.
pub fn watch(backend: &Backend, args: WatchArgs) -> Outcome {
    if let (Backend::Remote(remote), false) = (backend, args.once) {
        return watch_live(backend, remote);
    }
    use std::io::IsTerminal as _;
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let now = unix_ms();
        let mut screen = String::new();
        let status = backend.status()?;
        let controller = if status.running { "running" } else { "NOT running" };
        screen.push_str(&format!("fleet in {}: controller {controller}\n\n", backend.describe()));
        let devices = backend.devices(&DeviceFilter::default())?;
        screen.push_str(&devices_table(&devices, now).render());
        screen.push('\n');
        let jobs: Vec<_> = backend.jobs()?.into_iter().take(20).collect();
        screen.push_str(&jobs_table(&jobs, now).render());
        let malformed: u64 = status.counters.iter().filter(|(k, _)| k.ends_with(".malformed")).map(|(_, v)| v).sum();
        if malformed > 0 {
            screen.push_str(&format!("\n{malformed} malformed message(s) dropped; see `fleetctl status`\n"));
        }
        if args.once {
            print!("{screen}");
            return Ok(ExitCode::SUCCESS);
        }
        if terminal {
            // Clear the screen and home the cursor, then draw.
            print!("\x1b[2J\x1b[H{screen}");
        } else if screen != last {
            println!("--- {} s since the epoch", now / 1000);
            print!("{screen}");
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            last = screen;
        }
        std::thread::sleep(args.interval);
    }
}

/// `watch` on the API's live stream: the screen is drawn again after each batch of
/// changes the controller sends, not on a timer.
fn watch_live(backend: &Backend, remote: &Remote) -> Outcome {
    use std::io::IsTerminal as _;
    let terminal = std::io::stdout().is_terminal();
    let controller = if backend.status()?.running { "running" } else { "NOT running" };
    let mut devices: std::collections::BTreeMap<String, fleet_controller::operate::DeviceView> = Default::default();
    let mut jobs: std::collections::HashMap<String, fleet_controller::operate::JobView> = Default::default();
    remote.follow(|event| {
        match event.event.as_str() {
            "device" => {
                let device: fleet_controller::operate::DeviceView = serde_json::from_str(&event.data)?;
                devices.insert(device.id.clone(), device);
            }
            "job" => {
                let job: fleet_controller::operate::JobView = serde_json::from_str(&event.data)?;
                jobs.insert(job.id.clone(), job);
            }
            "sync" => {
                let now = unix_ms();
                let mut newest: Vec<_> = jobs.values().cloned().collect();
                newest.sort_by_key(|job| std::cmp::Reverse(job.created_at_ms));
                newest.truncate(20);
                let devices: Vec<_> = devices.values().cloned().collect();
                let screen = format!(
                    "fleet in {}: controller {controller} (live)\n\n{}\n{}",
                    backend.describe(),
                    devices_table(&devices, now).render(),
                    jobs_table(&newest, now).render()
                );
                if terminal {
                    print!("\x1b[2J\x1b[H{screen}");
                } else {
                    println!("--- {} s since the epoch", now / 1000);
                    print!("{screen}");
                }
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }
            _ => {}
        }
        Ok(true)
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn status(backend: &Backend, json: bool) -> Outcome {
    let status = backend.status()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = unix_ms();
    match (&status.serve, status.heartbeat_ms) {
        (Some(serve), _) => println!(
            "controller  running ({serve}, up {}, heartbeat {})",
            age(Some(serve.started_at_ms), now).trim_end_matches(" ago"),
            age(Some(serve.updated_at_ms.max(serve.started_at_ms)), now)
        ),
        (None, Some(at)) => {
            println!("controller  not running (last heartbeat {}); run `fleetctl serve`", age(Some(at), now))
        }
        (None, None) => println!("controller  never started; run `fleetctl serve`"),
    }
    if let Some(api) = status.serve.as_ref().and_then(|s| s.api.as_ref()) {
        println!("api         {api}");
    }
    if let Some(unwritable) = status.serve.as_ref().and_then(|s| s.store_unwritable.as_ref()) {
        println!(
            "store       NOT WRITABLE since {}: {}; nothing is acknowledged until it is (free space in the data directory)",
            age(Some(unwritable.since_ms), now),
            unwritable.error,
        );
    }
    if let Some(broker) = status
        .controller
        .as_ref()
        .and_then(|info| info.get("broker_counters").cloned())
        .and_then(|counters| serde_json::from_value::<std::collections::BTreeMap<String, u64>>(counters).ok())
    {
        let line: Vec<String> = broker.iter().map(|(name, value)| format!("{name}={value}")).collect();
        println!("broker      {}", line.join(" "));
    }
    println!("devices     {}", status.devices);
    println!("jobs        {} ({} in progress)", status.jobs, status.jobs_in_progress);
    if let Some(key) = &status.active_job_key {
        println!("job key     {key} (signs envelopes and acks)");
    }
    if status.counters.is_empty() {
        println!("counters    none");
    }
    for (name, value) in &status.counters {
        println!("counter     {name} = {value}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries to show.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn audit(backend: &Backend, args: AuditArgs) -> Outcome {
    let entries = backend.audit(args.limit)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = unix_ms();
    let mut table = crate::fmt::Table::new(&["WHEN", "WHO", "ACTION", "DETAIL"]);
    for entry in entries {
        table.row(vec![age(Some(entry.at_ms), now), entry.actor, entry.action, entry.detail]);
    }
    print!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a new job-signing key and publish a root-signed rotation to the fleet.
    Rotate,
}

pub fn key(data_dir: &Path, command: KeyCommand) -> Outcome {
    let KeyCommand::Rotate = command;
    let data = DataDir::new(data_dir);
    let mut store = data.open()?;
    let root = data.root_key(&store)?;
    let now = unix_ms();
    let previous = store.active_job_key()?;
    let (new_row, _) = data.generate_job_key(true, now)?;
    // Devices trust the new key and the one before it, so envelopes already signed and
    // in flight still verify.
    let mut trusted = vec![new_row.clone()];
    if let Some(previous) = previous {
        trusted.push(previous);
    }
    trusted.truncate(MAX_TRUSTED_KEYS);
    let trusted_keys: Vec<TrustedKey> =
        trusted.iter().map(|k| TrustedKey { key_id: k.key_id, public_key: k.public_key }).collect();
    let ids: Vec<_> = trusted.iter().map(|k| k.key_id).collect();
    let seq = store.rotate_keys(&new_row, &ids, &actor(), now, |seq| {
        sign_rotation(&root, seq, now / 1000, trusted_keys).map_err(|e| e.to_string())
    })?;
    eprintln!("new job key {} (rotation {seq}); devices now trust {} key(s)", new_row.key_id, ids.len());
    if serve_is_running(data_dir) {
        eprintln!(
            "the running `fleetctl serve` publishes the rotation on {} and signs with the new key",
            Topics::default().keys()
        );
    } else {
        eprintln!("note: no `fleetctl serve` is running; it publishes the rotation when it starts");
    }
    println!("{}", new_row.key_id);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Write a mosquitto `passwd` file and `acl` file from the registry (the controller,
    /// the read-only observer and every device).
    Acl {
        /// The directory to write `passwd` and `acl` into (and, for MQTT over TLS,
        /// `mosquitto.crt`, `mosquitto.key` and `ca.pem`).
        #[arg(long)]
        out: PathBuf,
        /// A host name (or address) devices use to reach the broker, for its TLS
        /// certificate (repeat for more; localhost and the loopback addresses are in it).
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
    },
    /// Print the password of the read-only observer login (username `fleet-observer`),
    /// made on first use: it may subscribe to every status document
    /// (`fleet/+/+/status`, `fleet/controller/status`) and publish nothing. For
    /// `mosquitto_sub` or a dashboard; the embedded broker takes it at once.
    Observer,
}

pub fn broker(data_dir: &Path, command: BrokerCommand) -> Outcome {
    let (out, names) = match command {
        BrokerCommand::Acl { out, names } => (out, names),
        BrokerCommand::Observer => return observer(data_dir),
    };
    let data = DataDir::new(data_dir);
    let store = data.open()?;
    let devices = store.mosquitto_entries()?;
    let salt = &random_32()?[..12];
    let controller = mosquitto_hash(&data.controller_password()?, salt);
    let observer = mosquitto_hash(&data.observer_password_or_make()?, &random_32()?[..12]);
    create_private_dir(&out)?;
    let passwd_path = out.join("passwd");
    let acl_path = out.join("acl");
    write_secret(&passwd_path, passwd_file(&controller, &observer, &devices).trim_end())?;
    let ids: Vec<_> = devices.iter().map(|(id, _)| id.clone()).collect();
    std::fs::write(&acl_path, acl_file(&Topics::default(), &ids))
        .with_context(|| format!("writing {}", acl_path.display()))?;
    eprintln!(
        "wrote {} and {} for {} device(s), the controller and the observer",
        passwd_path.display(),
        acl_path.display(),
        ids.len()
    );
    // A certificate from the controller's CA, so devices provisioned with --tls (and
    // `serve --broker mqtts://`) trust mosquitto as they trust the embedded broker.
    let (cert, key) = (out.join("mosquitto.crt"), out.join("mosquitto.key"));
    let mut all_names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    all_names.extend(names);
    fleet_controller::tls::write_server_files(&data_dir.join("tls"), &all_names, &cert, &key)?;
    std::fs::copy(data_dir.join("tls/ca.pem"), out.join("ca.pem")).context("copying the CA")?;
    eprintln!(
        "mosquitto.conf: `allow_anonymous false`, `password_file {}`, `acl_file {}`, `message_size_limit 262144`; then `fleetctl serve --broker mqtt://HOST:1883`",
        passwd_path.display(),
        acl_path.display()
    );
    eprintln!(
        "for MQTT over TLS also: `listener 8883`, `certfile {}`, `keyfile {}`; then `fleetctl serve --broker mqtts://HOST:8883`",
        cert.display(),
        key.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `broker observer`: the observer's password on stdout (for `-P "$(...)"`), how to
/// use it on stderr.
fn observer(data_dir: &Path) -> Outcome {
    let data = DataDir::new(data_dir);
    if !data.is_initialised() {
        return Err(fleet_controller::datadir::DataDirError::NotInitialised(data_dir.to_path_buf()).into());
    }
    let password = data.observer_password_or_make()?;
    let topics = Topics::default();
    eprintln!(
        "observer login: user {user}, this password; it reads every status document and publishes nothing:\n  \
         mosquitto_sub -h 127.0.0.1 -u {user} -P \"$(fleetctl broker observer)\" -t '{p}/+/+/status' -t '{c}' -v",
        user = fleet_controller::OBSERVER_USERNAME,
        p = topics.prefix(),
        c = topics.controller_status(),
    );
    println!("{password}");
    Ok(ExitCode::SUCCESS)
}

/// The embedded broker holds one socket per connected device: raise the soft open-file
/// limit to the hard one (a distribution's default soft limit, 1,024, would refuse the
/// 1,000th device), and say what the fleet can reach.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = match (limit.current, limit.maximum) {
        (Some(current), maximum) if maximum.is_none_or(|m| m > current) => {
            setrlimit(Resource::Nofile, Rlimit { current: maximum, maximum }).is_ok()
        }
        _ => false,
    };
    let now = getrlimit(Resource::Nofile).current;
    tracing::debug!(open_files = ?now, raised, "open-file limit (the hard limit needs root to raise)");
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an API token; its text is printed once (only its hash is kept).
    Create {
        /// Its name, as the audit log shows it (token:NAME).
        name: String,
        /// What it may do: viewer (read), operator (also push and cancel), admin (also
        /// devices, keys and tokens).
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["viewer", "operator", "admin"]))]
        role: String,
    },
    /// List tokens (names, roles, last use; never their text).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: every request with it is refused from now on.
    Revoke {
        /// Its name.
        name: String,
    },
}

pub fn token(backend: &Backend, command: TokenCommand) -> Outcome {
    match command {
        TokenCommand::Create { name, role } => {
            let role: Role = role.parse().map_err(UsageError::plain)?;
            let created = backend.create_token(&name, role)?;
            eprintln!(
                "token {} ({}); shown once, keep it: FLEET_TOKEN=... or `fleetctl login URL --token ...`",
                created.name, created.role
            );
            println!("{}", created.token);
        }
        TokenCommand::List { json } => {
            let tokens = backend.tokens()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(ExitCode::SUCCESS);
            }
            let now = unix_ms();
            let mut table = crate::fmt::Table::new(&["NAME", "ROLE", "STATE", "CREATED", "BY", "LAST USED"]);
            for token in tokens {
                table.row(vec![
                    token.name,
                    token.role.to_string(),
                    if token.revoked_at_ms.is_some() { "revoked".into() } else { "live".into() },
                    age(Some(token.created_at_ms), now),
                    token.created_by,
                    age(token.used_at_ms, now),
                ]);
            }
            print!("{}", table.render());
        }
        TokenCommand::Revoke { name } => {
            let revoked = backend.revoke_token(&name)?;
            if revoked.revoked {
                eprintln!("token {name} revoked: every request with it is refused from now on");
            } else {
                eprintln!("token {name} was revoked already");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The controller's API: https://HOST:PORT.
    url: String,
    /// The token (`fleetctl token create` printed it).
    #[arg(long, env = "FLEET_TOKEN", hide_env_values = true)]
    token: String,
}

/// `fleetctl login`: checks the token against the API, then stores the profile.
pub fn login(args: LoginArgs, ca: Option<PathBuf>) -> Outcome {
    let ca = ca.as_ref().map(|ca| std::fs::canonicalize(ca).unwrap_or_else(|_| ca.clone()));
    let remote = Remote::new(&args.url, args.token.clone(), ca.as_deref(), None)?;
    let backend = Backend::Remote(remote);
    let status = backend.status()?;
    let path = write_profile(&Profile { server: args.url.clone(), token: args.token, ca })?;
    eprintln!(
        "logged in to {} ({} devices, {} jobs); profile in {}",
        args.url,
        status.devices,
        status.jobs,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
