//! The hub's configuration: a TOML file in which every key is optional.
//!
//! [`DEFAULT_TOML`] is the whole default file with a comment on every key (`hub config
//! --default` prints it); a test checks that it parses to exactly [`Config::default`].

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::store::StoreConfig;

/// The default configuration file, with comments. Every value in it is the built-in default.
pub const DEFAULT_TOML: &str = r#"# Switchboard hub configuration.
# Every key is optional: a missing key takes the value shown here, which is the built-in default.

# Where the hub keeps its data: the message store (store/), its TLS certificate and key (tls/)
# and the admin token (admin.token). Empty: $XDG_DATA_HOME/switchboard, else
# ~/.local/share/switchboard, else ./switchboard-data.
data_dir = ""

[quic]
# UDP address devices connect to.
listen = "127.0.0.1:7447"
# Most connections at once; further ones are refused with too-many-connections.
max_connections = 100000
# A connection that sends nothing (not even a ping or a QUIC keep-alive) for this long is closed.
idle_timeout_secs = 30
# A device must finish the handshake (hello, proof) within this time.
handshake_timeout_secs = 10
# Handshakes (TLS, then a device's hello and proof) in progress at once. A new connection past
# it is refused (QUIC CONNECTION_REFUSED) before its TLS handshake, at almost no cost, and the
# device tries again after a pause: when many devices reconnect at once (after a restart) the
# hub works through them a few hundred at a time instead of slowing every handshake until
# devices give up on them and start over.
max_handshakes = 256
# Largest frame payload accepted from a device, in bytes.
max_payload = 1048576
# UDP receive and send buffer size asked of the kernel (bytes). Small buffers drop packets
# when many devices reconnect at once.
udp_buffer_bytes = 4194304
# UDP segmentation offload. Turn off where a loopback or virtual interface fails with it.
segmentation_offload = true
# Ask new clients to prove their address (QUIC retry) before the hub keeps any state for them.
address_validation = true

[delivery]
# deliver frames in flight (unacknowledged) per device session.
window = 256
# send frames a device may have unanswered at once.
send_credit = 256
# Time to live of a message that does not set one (seconds).
default_ttl_secs = 604800
# Longest time to live a message may ask for (seconds); longer ones are cut to this.
max_ttl_secs = 2592000

[limits]
# Sends per second allowed to one device session, and the burst above that rate. Past them a
# send is rejected with rate-limited.
sends_per_second = 20000
send_burst = 40000
# Largest message body accepted (bytes); a larger one is rejected with too-large. It must fit in
# quic.max_payload with the envelope around it.
max_body_bytes = 524288
# Per source address (0: no limit): QUIC connections held at once, and new connections per
# second with the burst above that rate. A connection past them is refused (QUIC
# CONNECTION_REFUSED) before its TLS handshake. Many devices can share one address (a company's
# NAT), so the cap is generous; with quic.address_validation off, a spoofed source could spend
# another address's rate.
connections_per_address = 10000
connections_per_second_per_address = 500
connection_burst_per_address = 5000
# Failed enrolments (a wrong, spent or expired code) within the window, per source address and
# per account: past either, enrolments from that address or for that account are refused
# (enrolment-refused) until the oldest failure is a window old. Each refusal is logged.
enrolment_failures_per_address = 20
enrolment_failures_per_account = 5
enrolment_failure_window_secs = 600

[store]
# Shards: writer threads, each owning part of the queues. 0: one per four cores, at least one
# (a send whose recipient and sender's copy are of one shard is one write, one fsync).
shards = 0
# How long a group commit waits for more work after its first command (microseconds): fewer
# fsyncs per message under load (less CPU), at the cost of that much more latency. 0: none.
commit_linger_us = 0
# Most commands one group commit takes.
max_batch = 8192
# Unconsumed messages one queue may hold; past it senders get recipient-backlog-full.
backlog_limit = 1000000
# Total bytes the store may use on disk; past it new messages get disk-full. 0: no limit.
disk_budget_bytes = 0
# Free bytes on the store's filesystem below which new messages get disk-full (0: not watched).
# The store also keeps a reserve file of reserve_bytes, released when the disk is full so that
# acknowledgements (which free space) keep working; new messages are taken again, with no
# restart, once min_free_bytes + reserve_bytes are free.
min_free_bytes = 268435456
reserve_bytes = 67108864
# How long a message id is remembered to drop a retried duplicate (seconds).
dedupe_window_secs = 604800
# Dedupe records kept in memory (all shards), so a new message id needs no disk lookup; about
# 56 bytes each when full. Older ids are looked up on disk.
dedupe_memory = 1000000
# Newest entries of the queues kept in memory (MiB), read by the devices that keep up (every
# member of a line reads the same entry). 0 keeps none.
tail_cache_mib = 64
# RocksDB memtable size (MiB).
memtable_mib = 64

[admin]
# HTTP address of the admin API (users, devices, health). It answers only requests that carry
# the token in <data_dir>/admin.token; keep it on a loopback or private address.
listen = "127.0.0.1:7448"
# Connections open at once, in all and from one address. Past either, the connection idle the
# longest is closed to make room (one with a request in progress never is); with every one
# busy, a new connection is answered 503. Behind a reverse proxy every client has the proxy's
# address: raise the second.
max_connections = 512
max_connections_per_address = 256
# Seconds a request's headers may take to arrive, and a whole request (body and answer).
header_timeout_secs = 10
request_timeout_secs = 30
# Answers of 401 to one address within a minute after which every request from it without the
# operator token is answered 429 until the oldest is a minute old (0: no back-off).
failed_auth_limit = 10
# Requests per second from one token (a user's or a device's) and from one address, with the
# burst above each rate; past either the answer is 429 with Retry-After. The operator token is
# never held back. 0 turns a limit off. Behind a reverse proxy every client has the proxy's
# address: raise or turn off the address limit.
requests_per_second_per_token = 50
request_burst_per_token = 200
requests_per_second_per_address = 200
request_burst_per_address = 1000

[metrics]
# HTTP address of the Prometheus metrics (GET /metrics) and of the health probes (GET /healthz:
# the process is alive; GET /readyz: 200 once the store is open and the listeners bound, 503
# while starting and while draining). No token is asked: keep it on a loopback or private
# address. Served with the [admin] caps, timeouts and per-address request rates.
listen = "127.0.0.1:7449"
# false: no metrics listener (and no probes).
enabled = true

[backup]
# Where `hub backup` (POST /v1/backups) writes backups, each in a directory of its own. Empty:
# <data_dir>/backups. On the store's filesystem a backup's table files are hard links (instant,
# and small until compaction replaces the live files); copy backups to another machine for
# safety. Under systemd, a directory outside the state directory needs ReadWritePaths=.
dir = ""

[log]
# "human" or "json".
format = "human"
# A tracing filter: a level (error, warn, info, debug, trace) or per-module directives.
# The RUST_LOG environment variable, when set, takes precedence.
level = "info"
"#;

/// The hub's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data directory; empty means the platform default (see [`Config::data_dir`]).
    pub data_dir: PathBuf,
    /// QUIC listener.
    pub quic: QuicConfig,
    /// Delivery flow control and message lifetimes.
    pub delivery: DeliveryConfig,
    /// Per-device limits.
    pub limits: LimitsConfig,
    /// The message store.
    pub store: StoreSection,
    /// The admin API.
    pub admin: AdminConfig,
    /// The metrics and health listener.
    pub metrics: MetricsConfig,
    /// Backups.
    pub backup: BackupConfig,
    /// This hub's identity among hubs.
    pub hub: HubSection,
    /// Other hubs this hub links to.
    pub peers: Vec<PeerConfig>,
    /// Organisations.
    pub org: OrgConfig,
    /// Logging.
    pub log: LogConfig,
    /// The file this configuration was read from (none for the built-in defaults): backups
    /// copy it, a reload reads it again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[hub]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    /// The name peers know this hub by.
    pub name: String,
    /// Domains this hub serves; `*.example.net` serves every domain under `example.net`.
    pub domains: Vec<String>,
    /// As a registration hub: how long a user's new home hub waits for what the old one holds
    /// before it is sent the mailbox anyway (the old hub's part then follows when it comes).
    pub handoff_wait_secs: u64,
}

/// Whether `domain` is named by `pattern`: the same domain (case aside), or for a pattern
/// `*.example.net`, any domain under `example.net` (not `example.net` itself).
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            domain.len() > parent.len() + 1
                && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
                && domain[domain.len() - parent.len()..].eq_ignore_ascii_case(parent)
        }
        None => pattern.eq_ignore_ascii_case(domain),
    }
}

impl Default for HubSection {
    fn default() -> Self {
        Self { name: "localhost".into(), domains: Vec::new(), handoff_wait_secs: 3600 }
    }
}

/// One `[[peers]]` table: another hub.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its `[hub] name`.
    pub name: String,
    /// Its QUIC address, `ip:port`.
    #[schema(value_type = String)]
    pub address: SocketAddr,
    /// Its certificate's pin (SHA-256 of the DER, hex).
    pub pin: String,
    /// The domains it serves; `*.example.net` names every domain under `example.net`.
    pub domains: Vec<String>,
    /// Whether it is one of this operator's own hubs: groups of scope `provider` take messages
    /// from its users.
    #[serde(default)]
    pub provider: bool,
    /// Whether it forwards messages and receipts of other hubs' users to this hub: the
    /// registration hub of a personal hub's user (see docs/architecture.md, "Personal hubs").
    /// Its relays may carry any `from`.
    #[serde(default)]
    pub forwards: bool,
}

/// `[org]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrgConfig {
    /// Seats of a new organisation when the operator names no number.
    pub default_seats: u32,
    /// Domains no organisation may take.
    pub public_mail_domains: Vec<String>,
    /// DNS servers for domain verification; empty: the system's resolver.
    pub dns_servers: Vec<SocketAddr>,
}

/// The built-in list of public mail domains (see `[org] public_mail_domains`).
pub const PUBLIC_MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "ymail.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.net",
    "gmx.de",
    "web.de",
    "mail.com",
    "yandex.com",
    "yandex.ru",
    "mail.ru",
    "zoho.com",
    "fastmail.com",
    "tutanota.com",
    "qq.com",
    "163.com",
];

impl Default for OrgConfig {
    fn default() -> Self {
        Self {
            default_seats: 10,
            public_mail_domains: PUBLIC_MAIL_DOMAINS.iter().map(|d| d.to_string()).collect(),
            dns_servers: Vec::new(),
        }
    }
}

impl OrgConfig {
    /// Whether `domain` is a public mail domain (or below one).
    pub fn is_public_mail_domain(&self, domain: &str) -> bool {
        let domain = domain.trim().to_ascii_lowercase();
        self.public_mail_domains
            .iter()
            .any(|public| domain == *public || domain.ends_with(&format!(".{public}")))
    }
}

/// `[quic]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Most connections at once.
    pub max_connections: usize,
    /// Idle timeout, seconds.
    pub idle_timeout_secs: u64,
    /// Handshake deadline, seconds.
    pub handshake_timeout_secs: u64,
    /// Handshakes in progress at once; past it new connections are refused.
    pub max_handshakes: usize,
    /// Largest payload accepted from a device.
    pub max_payload: u32,
    /// UDP socket buffer size.
    pub udp_buffer_bytes: usize,
    /// UDP segmentation offload.
    pub segmentation_offload: bool,
    /// QUIC retry before keeping state for a new client.
    pub address_validation: bool,
}

/// `[delivery]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Deliveries in flight per device session.
    pub window: u32,
    /// Unanswered sends per device session.
    pub send_credit: u32,
    /// Default time to live, seconds.
    pub default_ttl_secs: u32,
    /// Longest time to live, seconds.
    pub max_ttl_secs: u32,
}

impl DeliveryConfig {
    /// How long a message whose envelope says `ttl_secs` is kept, in seconds: 0 means the
    /// default, and no message is kept longer than the maximum. The envelope itself is
    /// delivered as it was sent.
    pub fn effective_ttl_secs(&self, ttl_secs: u32) -> u32 {
        match ttl_secs {
            0 => self.default_ttl_secs.min(self.max_ttl_secs),
            ttl => ttl.min(self.max_ttl_secs),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained sends per second per session.
    pub sends_per_second: u32,
    /// Burst of sends above the rate.
    pub send_burst: u32,
    /// Largest message body.
    pub max_body_bytes: usize,
    /// QUIC connections one address may hold at once (0: no limit).
    pub connections_per_address: u32,
    /// New QUIC connections per second from one address (0: no limit).
    pub connections_per_second_per_address: u32,
    /// New connections from one address at once above that rate.
    pub connection_burst_per_address: u32,
    /// Failed enrolments from one address within the window before it must wait (0: none).
    pub enrolment_failures_per_address: u32,
    /// Failed enrolments for one account within the window before it must wait (0: none).
    pub enrolment_failures_per_account: u32,
    /// The window of failed enrolments, seconds.
    pub enrolment_failure_window_secs: u64,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Shard writer threads; 0: one per four cores, at least one.
    pub shards: usize,
    /// Microseconds a group commit waits for more work after its first command.
    pub commit_linger_us: u64,
    /// Most commands per group commit.
    pub max_batch: usize,
    /// Unconsumed messages per queue.
    pub backlog_limit: u64,
    /// Disk budget in bytes, 0 for none.
    pub disk_budget_bytes: u64,
    /// Free bytes on the filesystem below which new messages are refused, 0 for none.
    pub min_free_bytes: u64,
    /// Bytes of the reserve file released when the disk is full, 0 for none.
    pub reserve_bytes: u64,
    /// Dedupe window, seconds.
    pub dedupe_window_secs: u64,
    /// Dedupe records kept in memory.
    pub dedupe_memory: usize,
    /// Newest queue entries kept in memory, MiB.
    pub tail_cache_mib: usize,
    /// Memtable size, MiB.
    pub memtable_mib: usize,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Connections open at once; past it the longest-idle one is closed to make room.
    pub max_connections: usize,
    /// Connections open at once from one address, likewise.
    pub max_connections_per_address: usize,
    /// Seconds a request's headers may take to arrive (a new or idle kept-alive connection).
    pub header_timeout_secs: u64,
    /// Seconds a whole request (body and answer) may take; past it the answer is 408.
    pub request_timeout_secs: u64,
    /// Answers of 401 to one address within a minute that hold it back (0: none do).
    pub failed_auth_limit: usize,
    /// Requests per second one token other than the operator's may make (0: no limit).
    pub requests_per_second_per_token: u32,
    /// Requests one token may make at once above its rate.
    pub request_burst_per_token: u32,
    /// Requests per second one address may make without the operator token (0: no limit).
    pub requests_per_second_per_address: u32,
    /// Requests one address may make at once above its rate.
    pub request_burst_per_address: u32,
}

/// `[backup]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Where backups are written; empty: `<data_dir>/backups`.
    pub dir: PathBuf,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// HTTP listen address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Whether the listener runs.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 7449)), enabled: true }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Filter directives.
    pub level: String,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Human,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::new(),
            quic: QuicConfig::default(),
            delivery: DeliveryConfig::default(),
            limits: LimitsConfig::default(),
            store: StoreSection::default(),
            admin: AdminConfig::default(),
            metrics: MetricsConfig::default(),
            backup: BackupConfig::default(),
            source: None,
            hub: HubSection::default(),
            peers: Vec::new(),
            org: OrgConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7447)),
            max_connections: 100_000,
            idle_timeout_secs: 30,
            handshake_timeout_secs: 10,
            max_handshakes: 256,
            max_payload: 1 << 20,
            udp_buffer_bytes: 4 << 20,
            segmentation_offload: true,
            address_validation: true,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self { window: 256, send_credit: 256, default_ttl_secs: 604_800, max_ttl_secs: 2_592_000 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sends_per_second: 20_000,
            send_burst: 40_000,
            max_body_bytes: 512 << 10,
            connections_per_address: 10_000,
            connections_per_second_per_address: 500,
            connection_burst_per_address: 5_000,
            enrolment_failures_per_address: 20,
            enrolment_failures_per_account: 5,
            enrolment_failure_window_secs: 600,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            shards: 0,
            commit_linger_us: 0,
            max_batch: 8192,
            backlog_limit: 1_000_000,
            disk_budget_bytes: 0,
            min_free_bytes: 256 << 20,
            reserve_bytes: 64 << 20,
            dedupe_window_secs: 604_800,
            dedupe_memory: 1_000_000,
            tail_cache_mib: 64,
            memtable_mib: 64,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7448)),
            max_connections: 512,
            max_connections_per_address: 256,
            header_timeout_secs: 10,
            request_timeout_secs: 30,
            failed_auth_limit: 10,
            requests_per_second_per_token: 50,
            request_burst_per_token: 200,
            requests_per_second_per_address: 200,
            request_burst_per_address: 1000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration (unknown key, wrong type...).
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is out of its range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: path.into(), source },
            other => other,
        })?;
        config.source = Some(std::path::absolute(path).unwrap_or_else(|_| path.into()));
        Ok(config)
    }

    /// Parses and checks a configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::new(), source: Box::new(e) })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_string()));
        if self.delivery.window == 0 {
            return bad("delivery.window must be at least 1");
        }
        if self.delivery.send_credit == 0 {
            return bad("delivery.send_credit must be at least 1");
        }
        if self.quic.max_handshakes == 0 {
            return bad("quic.max_handshakes must be at least 1");
        }
        if self.quic.max_payload < 1024 {
            return bad("quic.max_payload must be at least 1024 bytes");
        }
        if self.store.shards > 256 {
            return bad("store.shards must be 256 or fewer (0: one per four cores)");
        }
        if self.store.commit_linger_us > 100_000 {
            return bad("store.commit_linger_us must be at most 100000 (a tenth of a second)");
        }
        if self.admin.max_connections == 0 || self.admin.max_connections_per_address == 0 {
            return bad("admin connection limits must be at least 1");
        }
        if self.admin.header_timeout_secs == 0 || self.admin.request_timeout_secs == 0 {
            return bad("admin timeouts must be at least 1 second");
        }
        if self.quic.idle_timeout_secs == 0 || self.quic.handshake_timeout_secs == 0 {
            return bad("quic timeouts must be at least 1 second");
        }
        if self.limits.max_body_bytes + 4096 > switchboard_protocol::DEFAULT_MAX_PAYLOAD as usize {
            return bad("limits.max_body_bytes must leave 4 KiB of a 1 MiB frame for the envelope");
        }
        if self.limits.max_body_bytes + 4096 > self.quic.max_payload as usize {
            return bad(
                "limits.max_body_bytes must leave 4 KiB of quic.max_payload for the envelope",
            );
        }
        if self.limits.sends_per_second == 0 {
            return bad("limits.sends_per_second must be at least 1");
        }
        if self.org.default_seats == 0 {
            return bad("org.default_seats must be at least 1");
        }
        if self.hub.name.trim().is_empty() || self.hub.name.len() > 253 {
            return bad("hub.name must be 1 to 253 characters");
        }
        let valid = |domain: &str| {
            let domain = domain.strip_prefix("*.").unwrap_or(domain);
            switchboard_protocol::Address::parse(&format!("@{domain}")).is_ok()
        };
        if let Some(domain) = self.hub.domains.iter().find(|d| !valid(d)) {
            return bad(&format!("hub.domains: {domain:?} is not a domain (nor *.domain)"));
        }
        let mut served: std::collections::BTreeMap<String, &str> =
            self.hub.domains.iter().map(|d| (d.to_ascii_lowercase(), "this hub")).collect();
        let mut names = std::collections::BTreeSet::new();
        for peer in &self.peers {
            if peer.domains.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "peers: {} serves no domain (domains = [...])",
                    peer.name
                )));
            }
            for domain in &peer.domains {
                if !valid(domain) {
                    return Err(ConfigError::Invalid(format!(
                        "peers: {domain:?} of {} is not a domain (nor *.domain)",
                        peer.name
                    )));
                }
                if let Some(by) = served.insert(domain.to_ascii_lowercase(), &peer.name) {
                    return Err(ConfigError::Invalid(format!(
                        "peers: {domain} of {} is also served by {by}",
                        peer.name
                    )));
                }
            }
            if !names.insert(peer.name.as_str()) || peer.name == self.hub.name {
                return Err(ConfigError::Invalid(format!(
                    "peers: {} is named twice (or is this hub's own name)",
                    peer.name
                )));
            }
            let hex = peer.pin.len() == 64 && peer.pin.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err(ConfigError::Invalid(format!(
                    "peers: the pin of {} must be 64 hex digits (`hub identity` on that hub)",
                    peer.name
                )));
            }
        }
        Ok(())
    }

    /// The data directory: the configured one, else the platform default.
    pub fn data_dir(&self) -> PathBuf {
        if !self.data_dir.as_os_str().is_empty() {
            return self.data_dir.clone();
        }
        default_data_dir()
    }

    /// The store's settings under `data_dir`.
    pub fn store_config(&self, data_dir: &Path) -> StoreConfig {
        let mut store = StoreConfig::new(data_dir.join("store"));
        store.shards = match self.store.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1)),
            shards => shards,
        };
        store.commit_linger = Duration::from_micros(self.store.commit_linger_us);
        store.max_batch = self.store.max_batch.max(1);
        store.backlog_limit = self.store.backlog_limit;
        store.disk_budget =
            (self.store.disk_budget_bytes > 0).then_some(self.store.disk_budget_bytes);
        store.min_free_bytes = self.store.min_free_bytes;
        store.reserve_bytes = self.store.reserve_bytes;
        store.dedupe_window = Duration::from_secs(self.store.dedupe_window_secs);
        store.dedupe_memory = self.store.dedupe_memory;
        store.tail_cache_bytes = self.store.tail_cache_mib << 20;
        store.memtable_bytes = self.store.memtable_mib.max(1) << 20;
        store
    }
}

/// `$XDG_DATA_HOME/switchboard`, else `~/.local/share/switchboard`, else `./switchboard-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("switchboard");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/switchboard");
    }
    PathBuf::from("switchboard-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_exactly_the_built_in_defaults() {
        assert_eq!(Config::parse(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn an_empty_file_is_the_defaults_and_a_partial_file_keeps_the_rest() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let config = Config::parse("[delivery]\nwindow = 8\n").unwrap();
        assert_eq!(config.delivery.window, 8);
        assert_eq!(config.delivery.send_credit, DeliveryConfig::default().send_credit);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(matches!(
            Config::parse("[quic]\nlisten_port = 1\n"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(Config::parse("[delivery]\nwindow = 0\n"), Err(ConfigError::Invalid(_))));
        assert!(matches!(
            Config::parse("[log]\nformat = \"xml\"\n"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn zero_shards_is_one_per_four_cores_and_the_commit_linger_reaches_the_store() {
        let config = Config::default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let store = config.store_config(Path::new("/nonexistent"));
        assert_eq!(store.shards, (cores / 4).max(1));
        assert_eq!(store.commit_linger, Duration::ZERO);
        let config = Config::parse("[store]\nshards = 3\ncommit_linger_us = 250\n").unwrap();
        let store = config.store_config(Path::new("/nonexistent"));
        assert_eq!((store.shards, store.commit_linger), (3, Duration::from_micros(250)));
        assert!(Config::parse("[store]\nshards = 257\n").is_err());
        assert!(Config::parse("[store]\ncommit_linger_us = 100001\n").is_err());
    }

    #[test]
    fn a_wildcard_domain_names_every_domain_under_it_and_not_itself() {
        assert!(domain_matches("*.example.net", "acme.example.net"));
        assert!(domain_matches("*.example.net", "a.b.EXAMPLE.net"));
        assert!(!domain_matches("*.example.net", "example.net"));
        assert!(!domain_matches("*.example.net", "badexample.net"));
        assert!(!domain_matches("*.example.net", ".example.net"));
        assert!(domain_matches("Example.net", "example.NET"));
        assert!(!domain_matches("example.net", "a.example.net"));
    }

    #[test]
    fn peers_must_serve_valid_domains_that_nobody_else_serves() {
        let peer = |name: &str, domains: &str| {
            format!(
                "[[peers]]\nname = \"{name}\"\naddress = \"127.0.0.2:7447\"\npin = \"{}\"\ndomains = [{domains}]\n",
                "ab".repeat(32)
            )
        };
        let hub = "[hub]\nname = \"a\"\ndomains = [\"a.example\", \"*.a.example\"]\n";
        let ok = format!("{hub}{}", peer("b", "\"b.example\", \"*.b.example\""));
        assert!(Config::parse(&ok).is_ok());
        for bad in [
            format!("{hub}{}", peer("b", "")),
            format!("{hub}{}", peer("b", "\"b example\"")),
            format!("{hub}{}", peer("b", "\"*.a.example\"")),
            format!("{hub}{}{}", peer("b", "\"b.example\""), peer("c", "\"B.example\"")),
            "[hub]\ndomains = [\"not a domain\"]\n".to_string(),
        ] {
            assert!(matches!(Config::parse(&bad), Err(ConfigError::Invalid(_))), "{bad}");
        }
    }
}
