//! The `hub` binary: parses the command line and hands over to the library.

mod cli;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard_hub::config::{Config, DEFAULT_TOML};
use switchboard_protocol::Address;

use crate::cli::{
    default_identity_path,
    devices::{device, parse_device},
    messages::{enrol, listen, send},
    org::org,
    serve::serve,
    users::user,
};

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
        /// Metrics and health listen address (overrides `metrics.listen`).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
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
    /// Print this hub's certificate pin (other hubs put it in their peer tables), making the
    /// certificate if the data directory has none yet.
    Identity,
    /// Take a consistent backup of the running hub, without stopping it, into a new directory
    /// under `[backup] dir` (talks to the running hub's admin API).
    Backup {
        /// The backup's directory name (default: the UTC time, `20261205T083000Z`).
        name: Option<String>,
    },
    /// Exit 0 if the running hub answers ready (`GET /readyz` on the metrics listener), 1 if
    /// not: a health check for containers and scripts.
    Ready {
        /// The metrics listener (default: the configuration's `metrics.listen`, with an
        /// unspecified address read as loopback).
        #[arg(long)]
        at: Option<SocketAddr>,
    },
    /// Make the running hub read its configuration file again and apply what can change
    /// live; prints what was applied and what needs a restart (talks to the admin API; SIGHUP
    /// does the same).
    Reload,
    /// Restore a backup into this data directory, which must hold no store (the hub must not
    /// be running on it).
    Restore {
        /// The backup's directory (as `hub backup` printed it).
        backup: PathBuf,
    },
    /// Print the admin API's OpenAPI document (what `GET /v1/openapi.json` serves).
    Openapi,
    /// Peer hubs and their links (talks to the running hub's admin API).
    #[command(subcommand)]
    Peer(PeerCommand),
    /// A private user's home hub, kept by their registration hub (talks to that hub's admin
    /// API with the user's token).
    #[command(subcommand)]
    Personal(PersonalCommand),
    /// The address book of the token's user: contacts with categories, and colleagues.
    Contacts {
        /// The user's token (from `hub org token`).
        #[arg(long, env = "SWITCHBOARD_TOKEN")]
        token: String,
        #[command(subcommand)]
        command: ContactsCommand,
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
enum PeerCommand {
    /// Each peer and the state of its link.
    List,
    /// Add a peer hub now (kept across restarts; peers of the configuration file stay there).
    Add {
        /// Its `[hub] name`.
        name: String,
        /// Its QUIC address.
        #[arg(long)]
        address: std::net::SocketAddr,
        /// Its certificate's pin (`hub identity` on that hub).
        #[arg(long)]
        pin: String,
        /// A domain it serves (repeat for more).
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// It is one of this operator's own hubs (groups of scope provider take its users).
        #[arg(long)]
        provider: bool,
    },
    /// Remove a peer added with `hub peer add`.
    Remove {
        /// The peer's name.
        name: String,
        /// Even if messages still wait for it (they are dropped).
        #[arg(long)]
        force: bool,
    },
    /// End the backoff of the link to a peer and try at once.
    Retry {
        /// The peer's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum PersonalCommand {
    /// Make this hub the home hub of a device's user: signs a home record with the device's
    /// key (its identity file, from `hub enrol` at the registration hub) naming this hub's name,
    /// address and certificate, with the next epoch, and gives it to the registration hub.
    Home {
        /// The registration hub's admin API address.
        #[arg(long)]
        registration: std::net::SocketAddr,
        /// The user's token at the registration hub.
        #[arg(long)]
        token: String,
        /// The signing device's identity file (default: the usual identity file).
        #[arg(long)]
        identity: Option<std::path::PathBuf>,
        /// The address other hubs reach this hub at (default: the configuration's
        /// `quic.listen`).
        #[arg(long)]
        address: Option<std::net::SocketAddr>,
    },
    /// Print a user's home record at their registration hub.
    Show {
        /// The user, `local@domain`.
        user: String,
        /// The registration hub's admin API address.
        #[arg(long)]
        registration: std::net::SocketAddr,
        /// The user's token there.
        #[arg(long)]
        token: String,
    },
    /// Give up on what the old home hub of an unfinished hand-off still holds (it is gone for
    /// good): the move ends and the new home hub gets everything else. What the old hub hands
    /// over later is dropped.
    AbandonHandoff {
        /// The user, `local@domain`.
        user: String,
        /// The registration hub's admin API address.
        #[arg(long)]
        registration: std::net::SocketAddr,
        /// The user's token there (or the operator's).
        #[arg(long)]
        token: String,
    },
}

#[derive(Debug, Subcommand)]
enum ContactsCommand {
    /// Print the contacts, then the colleagues.
    List,
    /// Add a contact (any user of this or another hub), or set its categories.
    Add {
        /// The contact's address.
        address: String,
        /// A category of yours for them (repeat for more).
        #[arg(long = "category")]
        categories: Vec<String>,
    },
    /// Remove a contact.
    Remove {
        /// The contact's address.
        address: String,
    },
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Make a token that acts as USER (an existing, active user): by the operator, the user,
    /// or an onboarding admin of the user's organisation.
    Token {
        /// The user.
        user: String,
        /// Stop working after this many days (default: never).
        #[arg(long)]
        days: Option<u64>,
        /// A label, to recognise the token in lists.
        #[arg(long)]
        label: Option<String>,
    },
    /// List the tokens the caller may see (ids and owners, never the tokens).
    Tokens {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id.
    RevokeToken {
        /// The token's id (from `hub org tokens`).
        id: String,
    },
    /// Add a member's account in an agreed domain and print its first enrolment code (an
    /// onboarding admin of the organisation, or the operator).
    AddMember {
        /// The member's address.
        user: String,
    },
    /// Print a new enrolment code for a member (retires the previous code).
    Code {
        /// The member's address.
        user: String,
    },
    /// Invite a member or a guest; prints the one-time code and link.
    Invite {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// As a guest.
        #[arg(long)]
        guest: bool,
        /// On behalf of this unit (the guest answers its line).
        #[arg(long)]
        unit: Option<u64>,
        /// The invited address.
        user: String,
    },
    /// Accept an invitation as the token's user.
    Accept {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The code.
        code: String,
    },
    /// Claim a domain for the organisation (the operator's word proves it at once); prints
    /// the TXT record that proves an admin's claim.
    AddDomain {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The domain.
        domain: String,
    },
    /// Prove a claimed domain by its TXT record at `_switchboard.<domain>`.
    VerifyDomain {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The domain.
        domain: String,
    },
    /// The organisation's domains and claims, with the TXT record each claim needs.
    Domains {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
    },
    /// The organisation's members, invitations and seats (admins).
    Members {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
    },
    /// Name an admin (the owner; at most five).
    NameAdmin {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The member.
        user: String,
    },
    /// Name a group admin for a unit or a group (admins).
    NameGroupAdmin {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The unit they look after.
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        unit: Option<u64>,
        /// The group (`#name`) they look after.
        #[arg(long)]
        group: Option<String>,
        /// The member.
        user: String,
    },
    /// Take a unit or group from a group admin.
    RemoveGroupAdmin {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The unit.
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        unit: Option<u64>,
        /// The group.
        #[arg(long)]
        group: Option<String>,
        /// The member.
        user: String,
    },
    /// Move a member to another unit (the root unit: back to the main line).
    Move {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The unit's id.
        #[arg(long)]
        unit: u64,
        /// The member.
        user: String,
    },
    /// Make a member a guest, or a guest a member.
    MemberType {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// `guest` or `member`.
        #[arg(value_parser = ["guest", "member"])]
        kind: String,
        /// The member.
        user: String,
    },
    /// Deactivate a member: their sessions close and they cannot log in.
    Deactivate {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The member.
        user: String,
    },
    /// Reactivate a deactivated member.
    Reactivate {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// The member.
        user: String,
    },
    /// Delete a deactivated member and close their account.
    Delete {
        /// The organisation's id.
        #[arg(long)]
        org: u64,
        /// Who takes over what the member held (an active member).
        #[arg(long)]
        reassign_to: Option<String>,
        /// The member.
        user: String,
    },
    /// Issue a key to the line of a unit for another organisation.
    IssueKey {
        /// The line's organisation.
        #[arg(long)]
        org: u64,
        /// The line's unit.
        #[arg(long)]
        unit: u64,
        /// The organisation that receives the key.
        #[arg(long)]
        to_org: u64,
        /// Days it works (default: five years).
        #[arg(long)]
        days: Option<u64>,
    },
    /// Hand a key to a group of the organisation it was issued to.
    HandKey {
        /// The key's id.
        #[arg(long)]
        key: u64,
        /// The group.
        group: String,
    },
    /// Revoke a key.
    RevokeKey {
        /// The key's id.
        key: u64,
    },
    /// The keys issued by or to the caller's organisations.
    Keys,
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
        /// Most members (default: the hub's `[org] default_seats`).
        #[arg(long)]
        seats: Option<u32>,
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
    /// Print the event log (what the token may read), one event per line, oldest first.
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
    /// has one device per line: `user@domain/device <64 hex digits> [kind]` (`-` reads
    /// stdin; kind: desktop, laptop, mobile or server).
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
    /// Say what kind of machine a device is (a private user's first desktop is their
    /// preferred device).
    Kind {
        /// The device's address, `user@domain/device`.
        name: String,
        /// Its kind.
        #[arg(value_enum)]
        kind: switchboard_hub::store::DeviceKind,
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
    cli_overrides(cli, None, None, None)(&mut config);
    Ok(config)
}

/// The first line of the body `GET /readyz` answers at `at` (within 5 s).
fn ready(at: SocketAddr) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let mut stream = std::net::TcpStream::connect_timeout(&at, timeout)
        .map_err(|e| anyhow::anyhow!("no metrics listener at {at}: {e}"))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET /readyz HTTP/1.0\r\nHost: {at}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(body.lines().next().unwrap_or("").to_string())
}

/// The command line's settings over the file's, as a function a reload applies again.
fn cli_overrides(
    cli: &Cli,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
) -> Box<dyn Fn(&mut Config) + Send + Sync> {
    let (data_dir, no_gso) = (cli.data_dir.clone(), cli.no_gso);
    Box::new(move |config: &mut Config| {
        if let Some(dir) = &data_dir {
            config.data_dir = dir.clone();
        }
        if no_gso {
            config.quic.segmentation_offload = false;
        }
        if let Some(listen) = listen {
            config.quic.listen = listen;
        }
        if let Some(listen) = admin_listen {
            config.admin.listen = listen;
        }
        if let Some(listen) = metrics_listen {
            config.metrics.listen = listen;
        }
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = load_config(&cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        None => {
            let overrides = cli_overrides(&cli, None, None, None);
            runtime.block_on(serve(config, overrides))
        }
        Some(Command::Serve { listen, admin_listen, metrics_listen }) => {
            let overrides = cli_overrides(&cli, listen, admin_listen, metrics_listen);
            overrides(&mut config);
            runtime.block_on(serve(config, overrides))
        }
        Some(Command::Config { default }) => {
            if default {
                print!("{DEFAULT_TOML}");
            } else {
                println!("data directory: {}", config.data_dir().display());
                println!("QUIC listen: {}", config.quic.listen);
                println!("admin listen: {}", config.admin.listen);
                match config.metrics.enabled {
                    true => println!("metrics listen: {}", config.metrics.listen),
                    false => println!("metrics listen: off"),
                }
                println!("(`hub config --default` prints the whole default file)");
            }
            Ok(())
        }
        Some(Command::User(command)) => runtime.block_on(user(&config, command)),
        Some(Command::Device(command)) => runtime.block_on(device(&config, command)),
        Some(Command::Org { token, command }) => runtime.block_on(org(&config, token, command)),
        Some(Command::Identity) => {
            let identity = switchboard_hub::net::tls::load_or_create_for(&config)?;
            println!("name: {}", config.hub.name);
            println!("pin:  {}", switchboard_hub::net::tls::pin(identity.cert.as_ref()));
            Ok(())
        }
        Some(Command::Backup { name }) => runtime.block_on(async {
            let report = cli::admin_client(&config)?.backup(name.as_deref()).await?;
            println!("backup: {}", report.dir);
            println!("store:  {} bytes, taken in {} ms", report.store_bytes, report.took_ms);
            if !report.config {
                println!("(the hub was started without --config: no configuration file copied)");
            }
            Ok(())
        }),
        Some(Command::Ready { at }) => {
            let mut at = at.unwrap_or(config.metrics.listen);
            if at.ip().is_unspecified() {
                at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let answer = ready(at)?;
            println!("{answer}");
            anyhow::ensure!(answer == "ready", "the hub at {at} is not ready");
            Ok(())
        }
        Some(Command::Reload) => runtime.block_on(async {
            let report = cli::admin_client(&config)?.reload().await?;
            println!("reloaded {}", report.file);
            for applied in &report.applied {
                println!("applied:       {applied}");
            }
            for restart in &report.needs_restart {
                println!("needs restart: {restart}");
            }
            for refused in &report.refused {
                println!("refused:       {refused}");
            }
            if report.applied.is_empty()
                && report.needs_restart.is_empty()
                && report.refused.is_empty()
            {
                println!("nothing changed");
            }
            Ok(())
        }),
        Some(Command::Restore { backup }) => {
            let data_dir = config.data_dir();
            let restored = switchboard_hub::backup::restore(&backup, &data_dir)?;
            println!(
                "restored {} into {}: {} users",
                backup.display(),
                data_dir.display(),
                restored.users
            );
            if let Some(config) = restored.config {
                println!(
                    "the backup's configuration file is {}: put it in place",
                    config.display()
                );
            }
            Ok(())
        }
        Some(Command::Openapi) => {
            println!("{}", switchboard_hub::admin::openapi().to_pretty_json()?);
            Ok(())
        }
        Some(Command::Peer(command)) => runtime.block_on(cli::peers::peer(&config, command)),
        Some(Command::Personal(command)) => {
            runtime.block_on(cli::personal::personal(&config, command))
        }
        Some(Command::Contacts { token, command }) => {
            runtime.block_on(cli::contacts::contacts(&config, token, command))
        }
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
