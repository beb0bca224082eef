//! The `hub` binary: parses the command line and hands over to the library.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use switchboard_hub::{
    admin::{self, AdminClient},
    client::{Client, ClientOptions, DeviceIdentity, Event, client_endpoint},
    config::{Config, DEFAULT_TOML, LogFormat},
    net,
};
use switchboard_protocol::{Address, AddressKind, ReceiptKind};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard hub: holds every message durably until each device of its recipient has taken it.
///
/// With no command, `hub` serves on its embedded defaults (QUIC on 127.0.0.1:7447, admin API on
/// 127.0.0.1:7448, data in ~/.local/share/switchboard).
#[derive(Debug, Parser)]
#[command(name = "hub", version, about, long_about)]
struct Cli {
    /// Configuration file (TOML; every key optional; see `hub config --default`).
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration's `data_dir`).
    #[arg(long, global = true, env = "SWITCHBOARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Turn UDP segmentation offload off (for interfaces where it fails), for the hub and for
    /// the client commands.
    #[arg(long, global = true)]
    no_gso: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve devices until SIGINT or SIGTERM.
    Serve {
        /// QUIC listen address (overrides `quic.listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin API listen address (overrides `admin.listen`).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Print configuration.
    Config {
        /// Print the whole default configuration file, with comments.
        #[arg(long)]
        default: bool,
    },
    /// Users of this hub (talks to the running hub's admin API).
    #[command(subcommand)]
    User(UserCommand),
    /// Devices of this hub's users (talks to the running hub's admin API).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Organisations and their lines, members and admins (talks to the running hub's admin API).
    Org {
        /// Act with this user token (from `hub org token`); default: the operator token.
        #[arg(long, env = "SWITCHBOARD_TOKEN", global = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Enrol this machine as a device with a one-time code and keep its identity in a file.
    Enrol {
        /// The device's address, `user@domain/device`.
        device: String,
        /// The enrolment code from `hub user add`.
        #[arg(long)]
        code: String,
        /// The hub's QUIC address (default: the configuration's `quic.listen`).
        #[arg(long)]
        hub: Option<SocketAddr>,
        /// The hub's certificate, DER (default: `<data_dir>/tls/cert.der`).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Where to keep the identity.
        #[arg(long, env = "SWITCHBOARD_IDENTITY")]
        identity: Option<PathBuf>,
    },
    /// Send a text message and wait until the hub has it durably.
    Send {
        /// Recipient address.
        #[arg(long)]
        to: String,
        /// The text.
        text: String,
        /// The device identity to send as.
        #[arg(long, env = "SWITCHBOARD_IDENTITY")]
        identity: Option<PathBuf>,
    },
    /// Print messages as they arrive and acknowledge them.
    Listen {
        /// The device identity to listen as.
        #[arg(long, env = "SWITCHBOARD_IDENTITY")]
        identity: Option<PathBuf>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user and print a one-time enrolment code, valid 7 days.
    Add {
        /// The user's address, `local@domain`.
        name: String,
        /// Also enrol this machine as the user's device with this name.
        #[arg(long)]
        device: Option<String>,
        /// Where to keep that device's identity.
        #[arg(long, env = "SWITCHBOARD_IDENTITY")]
        identity: Option<PathBuf>,
    },
    /// List the users.
    List,
    /// Print a new enrolment code for a user (to enrol another device, or to send again).
    Code {
        /// The user's address.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Make a token that acts as USER (operator only).
    Token {
        /// The user.
        user: String,
    },
    /// Create an organisation (operator only).
    Create {
        /// Its name.
        name: String,
        /// The owner's address.
        #[arg(long)]
        owner: String,
        /// Its first agreed domain.
        #[arg(long)]
        domain: String,
        /// The main line's address.
        #[arg(long)]
        line: String,
        /// Most members.
        #[arg(long, default_value_t = 1)]
        seats: u32,
    },
    /// Create a department.
    Unit {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The parent unit's id (the root's id for a top-level department).
        #[arg(long)]
        parent: u64,
        /// Its name.
        name: String,
        /// Its line address.
        line: String,
    },
    /// Register the token's user as a member (pending until approved).
    Register {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
    },
    /// Approve a pending member.
    Approve {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The member.
        user: String,
    },
    /// Put a member into a unit.
    Assign {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The unit's id.
        #[arg(long)]
        unit: u64,
        /// The member.
        user: String,
    },
    /// Run any organisation command given as JSON (see the admin API's OpenAPI document).
    Run {
        /// The command, e.g. '{"command":"name_admin","org":1,"user":"eva@example.org"}'.
        json: String,
    },
    /// Print the event log (what the token may read).
    Events {
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Print the lines and colleagues of the token's user.
    Directory,
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// List devices.
    List {
        /// Only this user's devices.
        #[arg(long)]
        user: Option<String>,
    },
    /// Register devices whose ed25519 public keys are known, without enrolment codes. FILE
    /// has one device per line: `user@domain/device <64 hex digits>` (`-` reads stdin).
    Register {
        /// The file of devices and keys.
        file: PathBuf,
        /// Add the users that do not exist yet.
        #[arg(long)]
        add_users: bool,
    },
    /// Revoke a device: it is refused from now on and its live sessions are closed.
    Revoke {
        /// The device's address, `user@domain/device`.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hub: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if cli.no_gso {
        config.quic.segmentation_offload = false;
    }
    Ok(config)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = load_config(&cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        None => runtime.block_on(serve(config)),
        Some(Command::Serve { listen, admin_listen }) => {
            if let Some(listen) = listen {
                config.quic.listen = listen;
            }
            if let Some(listen) = admin_listen {
                config.admin.listen = listen;
            }
            runtime.block_on(serve(config))
        }
        Some(Command::Config { default }) => {
            if default {
                print!("{DEFAULT_TOML}");
            } else {
                println!("data directory: {}", config.data_dir().display());
                println!("QUIC listen: {}", config.quic.listen);
                println!("admin listen: {}", config.admin.listen);
                println!("(`hub config --default` prints the whole default file)");
            }
            Ok(())
        }
        Some(Command::User(command)) => runtime.block_on(user(&config, command)),
        Some(Command::Device(command)) => runtime.block_on(device(&config, command)),
        Some(Command::Org { token, command }) => runtime.block_on(org(&config, token, command)),
        Some(Command::Enrol { device, code, hub, cert, identity }) => runtime.block_on(async {
            let address = parse_device(&device)?;
            let path = identity.unwrap_or_else(default_identity_path);
            enrol(&config, address, &code, hub, cert, &path).await
        }),
        Some(Command::Send { to, text, identity }) => runtime.block_on(async {
            let to = Address::parse(&to).with_context(|| format!("recipient {to}"))?;
            send(&config, &identity.unwrap_or_else(default_identity_path), to, &text).await
        }),
        Some(Command::Listen { identity, count }) => runtime.block_on(listen(
            &config,
            &identity.unwrap_or_else(default_identity_path),
            count,
        )),
    }
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logs(&config);
    let hub = net::start(config).await?;
    eprintln!(
        "hub serving: QUIC {} · admin http://{} · data {}",
        hub.quic_addr,
        hub.admin_addr,
        hub.data_dir.display()
    );
    wait_for_signal().await?;
    tracing::info!("stopping: no new connections; finishing commits in progress");
    hub.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn admin_client(config: &Config) -> anyhow::Result<AdminClient> {
    let data_dir = config.data_dir();
    let path = data_dir.join("admin.token");
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the admin token {} (has the hub been started with this data directory?)",
            path.display()
        )
    })?;
    Ok(AdminClient::new(config.admin.listen, token.trim().to_string()))
}

async fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let admin = admin_client(config)?;
    match command {
        UserCommand::Add { name, device, identity } => {
            let added = admin.add_user(&name).await?;
            println!("added {}", added.user.name);
            match device {
                None => {
                    println!("enrolment code: {}", added.code);
                    println!("valid until:    {}", format_ms(added.code_expires_ms));
                    println!(
                        "enrol a device: hub enrol {}/DEVICE --code {}",
                        added.user.name, added.code
                    );
                }
                Some(device) => {
                    let address = parse_device(&format!("{}/{device}", added.user.name))?;
                    let path = identity.unwrap_or_else(default_identity_path);
                    enrol(config, address, &added.code, None, None, &path).await?;
                }
            }
        }
        UserCommand::List => {
            for user in admin.users().await? {
                println!("{}\t{:?}\tadded {}", user.name, user.status, format_ms(user.created_ms));
            }
        }
        UserCommand::Code { name } => {
            let code = admin.new_code(&name).await?;
            println!("enrolment code for {}: {}", code.user.name, code.code);
            println!("valid until: {}", format_ms(code.code_expires_ms));
        }
    }
    Ok(())
}

async fn device(config: &Config, command: DeviceCommand) -> anyhow::Result<()> {
    let admin = admin_client(config)?;
    match command {
        DeviceCommand::List { user } => {
            for device in admin.devices(user.as_deref()).await? {
                let state = if device.revoked { "revoked" } else { "active" };
                println!(
                    "{}\t{state}\tkey {}…\tenrolled {}",
                    device.name,
                    admin::hex(&device.public_key[..8]),
                    format_ms(device.enrolled_ms)
                );
            }
        }
        DeviceCommand::Register { file, add_users } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?
            };
            let mut devices = Vec::new();
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((name, key)) = line.split_once(char::is_whitespace) else {
                    bail!("line {}: expected `user@domain/device <public key>`", number + 1);
                };
                devices.push(admin::DeviceKey { name: name.into(), public_key: key.trim().into() });
            }
            let (mut registered, mut refused) = (0, 0);
            for chunk in devices.chunks(admin::MAX_REGISTER) {
                let answer = admin.register_devices(chunk, add_users).await?;
                registered += answer.registered;
                for result in answer.results.iter().filter(|r| r.error.is_some()) {
                    refused += 1;
                    eprintln!("{}: {}", result.name, result.error.as_deref().unwrap_or_default());
                }
            }
            println!("registered {registered} devices, refused {refused}");
            if refused > 0 {
                bail!("{refused} devices were not registered");
            }
        }
        DeviceCommand::Revoke { name } => {
            let device = admin.revoke(&name).await?;
            println!("revoked {}", device.name);
        }
    }
    Ok(())
}

async fn org(config: &Config, token: Option<String>, command: OrgCommand) -> anyhow::Result<()> {
    use switchboard_hub::org::{Command as Org, OrgId, UnitId};
    let operator = admin_client(config)?;
    let client = match token {
        Some(token) => AdminClient::new(config.admin.listen, token),
        None => operator,
    };
    let command = match command {
        OrgCommand::Token { user } => {
            println!("{}", client.new_token(&user).await?);
            return Ok(());
        }
        OrgCommand::Events { after } => {
            for event in client.org_events(after).await? {
                println!("{event}");
            }
            return Ok(());
        }
        OrgCommand::Directory => {
            println!("{}", serde_json::to_string_pretty(&client.directory().await?)?);
            return Ok(());
        }
        OrgCommand::Create { name, owner, domain, line, seats } => {
            Org::CreateOrg { name, owner, domain, line, seat_limit: seats }
        }
        OrgCommand::Unit { org, parent, name, line } => {
            Org::CreateUnit { org: OrgId(org), parent: UnitId(parent), name, line }
        }
        OrgCommand::Register { org } => Org::Register { org: OrgId(org) },
        OrgCommand::Approve { org, user } => Org::Approve { org: OrgId(org), user },
        OrgCommand::Assign { org, unit, user } => {
            Org::Assign { org: OrgId(org), user, unit: UnitId(unit) }
        }
        OrgCommand::Run { json } => serde_json::from_str(&json).context("the org command")?,
    };
    let event = client.org(&command).await?;
    println!("{}", serde_json::to_string(&event)?);
    Ok(())
}

fn parse_device(text: &str) -> anyhow::Result<Address> {
    let address = Address::parse(text).with_context(|| format!("device address {text}"))?;
    if address.kind() != AddressKind::Device {
        bail!("{text} is not a device address (user@domain/device)");
    }
    Ok(address)
}

async fn enrol(
    config: &Config,
    address: Address,
    code: &str,
    hub: Option<SocketAddr>,
    cert: Option<PathBuf>,
    path: &Path,
) -> anyhow::Result<()> {
    let cert_path = cert.unwrap_or_else(|| config.data_dir().join("tls/cert.der"));
    let cert = std::fs::read(&cert_path)
        .with_context(|| format!("the hub's certificate {}", cert_path.display()))?;
    let identity = DeviceIdentity::generate(address, hub.unwrap_or(config.quic.listen), cert)?;
    let endpoint = client_endpoint()?;
    let client =
        Client::connect_with(&endpoint, &identity, Some(code), &client_options(config)).await?;
    client.close().await;
    identity.save(path)?;
    println!("enrolled {} · identity kept in {}", identity.address, path.display());
    Ok(())
}

async fn send(config: &Config, path: &Path, to: Address, text: &str) -> anyhow::Result<()> {
    let identity = DeviceIdentity::load(path)?;
    let endpoint = client_endpoint()?;
    let mut client =
        Client::connect_with(&endpoint, &identity, None, &client_options(config)).await?;
    let id = client.send_text(&to, text).await?;
    let account = client.account().clone();
    let mut accepted = false;
    // After `accepted`, wait a moment for this message's copy in the sender's own queue and
    // acknowledge that one entry (this device has the message); anything else is left for
    // `hub listen` to show.
    let linger = std::time::Duration::from_millis(500);
    loop {
        let event = if accepted {
            match tokio::time::timeout(linger, client.next_event()).await {
                Ok(event) => event,
                Err(_) => break,
            }
        } else {
            client.next_event().await
        };
        match event {
            Some(Event::Accepted(done)) if done == id => {
                println!("accepted {id}");
                accepted = true;
                if to == account {
                    break; // a message to oneself has no separate copy
                }
            }
            Some(Event::Rejected(rejected)) if rejected.id == id => {
                bail!("rejected: {}: {}", rejected.reason, rejected.detail);
            }
            Some(Event::Deliver(deliver))
                if deliver.envelope.id == id && deliver.envelope.from == account =>
            {
                client.ack(deliver.queue, 0, vec![deliver.seq]).await?;
                if accepted {
                    break;
                }
            }
            Some(Event::Closed { code, reason }) => {
                bail!("the hub closed the session: {code}: {reason}")
            }
            Some(_) => {}
            None if accepted => break,
            None => bail!("the session ended before an answer"),
        }
    }
    client.close().await;
    Ok(())
}

async fn listen(config: &Config, path: &Path, count: Option<u64>) -> anyhow::Result<()> {
    let identity = DeviceIdentity::load(path)?;
    let endpoint = client_endpoint()?;
    let mut client =
        Client::connect_with(&endpoint, &identity, None, &client_options(config)).await?;
    eprintln!("listening as {}", identity.address);
    let mut seen = 0;
    while let Some(event) = client.next_event().await {
        match event {
            Event::Deliver(deliver) => {
                let envelope = &deliver.envelope;
                println!(
                    "{} {} -> {}: {}",
                    format_ms(envelope.created_ms),
                    envelope.from,
                    envelope.to,
                    String::from_utf8_lossy(&envelope.body)
                );
                client.ack(deliver.queue, deliver.seq, vec![]).await?;
                seen += 1;
            }
            Event::Receipt(receipt) => {
                let kind = match receipt.receipt.kind {
                    ReceiptKind::Delivered => "delivered",
                    ReceiptKind::Read => "read",
                    ReceiptKind::Answered => "answered",
                };
                println!("receipt: {} {kind} to {}", receipt.receipt.id, receipt.receipt.by);
                client.ack(receipt.queue, receipt.seq, vec![]).await?;
            }
            Event::Error(error) => eprintln!("hub error: {}: {}", error.code, error.text),
            Event::Closed { code, reason } => bail!("the hub closed the session: {code}: {reason}"),
            Event::Accepted(_) | Event::Rejected(_) => {}
        }
        if count.is_some_and(|count| seen >= count) {
            client.close().await;
            return Ok(());
        }
    }
    Ok(())
}

fn client_options(config: &Config) -> ClientOptions {
    ClientOptions {
        segmentation_offload: config.quic.segmentation_offload,
        ..ClientOptions::default()
    }
}

fn default_identity_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("switchboard/identity.toml")
}

/// Unix milliseconds as UTC `YYYY-MM-DD hh:mm:ss`.
fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
