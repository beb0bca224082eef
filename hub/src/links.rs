//! Hub links: one QUIC connection with mutual TLS to each peer hub of the configuration, made
//! by this hub's connector for that peer and kept up: reconnected with exponential backoff and
//! jitter (from about a second to about a minute, never giving up), each attempt and failure
//! logged and visible through the admin API (`GET /v1/peers`).
//!
//! Hubs know each other by the pin of their certificate (SHA-256 of its DER, `hub identity`),
//! checked in both directions: the connecting hub accepts only the pinned server certificate;
//! the accepting hub takes a `switchboard-hub/1` connection only from a client certificate whose
//! pin is in its peer table. Then both send `hub-hello` (name, domains served, largest batch),
//! which must agree with the peer table, else the link is closed with `unknown-hub`.
//!
//! Over a link, the connecting hub relays its outbound queue for the peer (`relay_out`) and the
//! accepting hub commits what it receives (`relay_in`), answering `relay-ack` only once it is
//! durable; the sender drops a batch from its queue only after that answer.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use switchboard_protocol::{
    Address, Envelope, ErrorCode, Flags, Frame, HubHello, MessageId, RejectReason, Relay, RelayAck,
    RelayReceipts, RelayRejection, RelayTaken,
};
use tokio::sync::{Notify, watch};

use crate::{
    config::{Config, PeerConfig, domain_matches},
    fanout::{Hub, Stored, decode_entry, encode_message, receipt_request},
    net::{
        framed::{FrameReader, FrameWriter},
        tls::{self, Identity},
    },
    org::{OrgState, Scope},
    personal::HomeRecord,
    server::StartError,
    store::{DeviceId, EnqueueRequest, Outbound, QueueId, Store, StoreError, system_clock_ms},
};

/// Largest `relay` batch this hub takes, announced in its `hub-hello`.
pub const MAX_BATCH: u32 = 1024;
/// First wait after a failed attempt.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How long the other side has for its `hub-hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a QUIC handshake with a peer may take (a peer that is down does not answer at all).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A link that hears nothing for this long is dead (a peer killed without a word, say): the
/// connecting hub's transport settings, which the QUIC idle timeout takes as the smaller of
/// both sides'.
const LINK_IDLE: Duration = Duration::from_secs(10);
/// How often an idle link is pinged, so that only a dead one reaches `LINK_IDLE`.
const LINK_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// How long the peer has to make a relayed batch durable and say so.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest hub-link frame this hub reads.
const MAX_LINK_FRAME: u32 = 16 << 20;

/// Where a link to a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// An attempt is under way.
    Connecting,
    /// The link is up (hellos exchanged).
    Up,
    /// Waiting before the next attempt.
    Backoff,
}

/// What the admin API shows of a peer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PeerStatus {
    /// The peer's name.
    pub name: String,
    /// Its address, `ip:port`.
    #[schema(value_type = String)]
    pub address: std::net::SocketAddr,
    /// The domains it serves.
    pub domains: Vec<String>,
    /// This hub's link to it.
    pub state: LinkState,
    /// Since when, Unix milliseconds.
    pub since_ms: u64,
    /// Connection attempts made.
    pub attempts: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When the next attempt is due (in backoff), Unix milliseconds.
    pub next_attempt_ms: Option<u64>,
    /// Whether the peer's own link to this hub is up.
    pub inbound_up: bool,
    /// Messages and receipts waiting for this peer (counted when the status is asked for).
    pub queued: u64,
    /// How long the oldest message waiting for this peer has waited, milliseconds since this
    /// hub accepted it (none when no message waits).
    pub oldest_age_ms: Option<u64>,
}

/// One peer: its configuration, its link's status, a way to end a backoff, and the outbound
/// queue of what waits for it.
struct Peer {
    config: PeerConfig,
    pin: String,
    status: Mutex<PeerStatus>,
    retry: Notify,
    outbound: OnceLock<Outbound>,
    /// The peer's link to this hub: a peer keeps one, so a new one replaces (closes) the old.
    inbound: Mutex<Option<quinn::Connection>>,
    /// From the configuration (else added at run time, `hub peer add`).
    configured: bool,
    /// Set when the peer is removed: its connector stops.
    stop: watch::Sender<bool>,
    /// A former home hub during a hand-off: its link relays the mailbox up to this sequence
    /// (the `home_changed` notice) and then stops (`u64::MAX`: no limit).
    until: std::sync::atomic::AtomicU64,
    /// A new home hub during a hand-off: the queue of what the old home hub handed over,
    /// relayed before the mailbox.
    handoff: OnceLock<Outbound>,
    /// While the old home hub's part is not complete, the mailbox is held back.
    held: std::sync::atomic::AtomicBool,
    /// Raised when `held` turns false.
    released: Notify,
    /// Raised when progress of devices waits to be reported to this peer (`relay-taken`).
    taken_ready: Notify,
}

/// A former home hub: its link is taken, nothing is sent to it (it has no connector).
fn make_former(config: &PeerConfig) -> Arc<Peer> {
    let peer = make_peer(config, false);
    peer.update(|s| {
        s.last_error = Some("a former home hub: its link is taken, it is sent nothing".into())
    });
    peer
}

fn make_peer(config: &PeerConfig, configured: bool) -> Arc<Peer> {
    Arc::new(Peer {
        config: config.clone(),
        pin: config.pin.to_ascii_lowercase(),
        status: Mutex::new(PeerStatus {
            name: config.name.clone(),
            address: config.address,
            domains: config.domains.clone(),
            state: LinkState::Connecting,
            since_ms: system_clock_ms(),
            attempts: 0,
            last_error: None,
            next_attempt_ms: None,
            inbound_up: false,
            queued: 0,
            oldest_age_ms: None,
        }),
        retry: Notify::new(),
        taken_ready: Notify::new(),
        outbound: OnceLock::new(),
        inbound: Mutex::new(None),
        configured,
        stop: watch::channel(false).0,
        until: std::sync::atomic::AtomicU64::new(u64::MAX),
        handoff: OnceLock::new(),
        held: std::sync::atomic::AtomicBool::new(false),
        released: Notify::new(),
    })
}

/// Why a peer cannot be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The table already has a peer of that name, or the name is this hub's.
    #[error("{0} is already a peer (or this hub's own name)")]
    Exists(String),
    /// Another peer serves that domain.
    #[error("{domain} is served by the peer {by} already")]
    DomainTaken {
        /// The domain.
        domain: String,
        /// The peer that serves it.
        by: String,
    },
    /// A field is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No such peer.
    #[error("no peer {0}")]
    Unknown(String),
    /// The peer comes from the configuration file.
    #[error("{0} is in the configuration file; remove it there")]
    Configured(String),
    /// Messages still wait for the peer.
    #[error("{count} messages still wait for {name}; remove with force to drop them")]
    Queued {
        /// The peer.
        name: String,
        /// How many.
        count: u64,
    },
    /// A hand-off of the user from `from` is in progress: only a move back to `from` is taken.
    #[error("the hand-off from {from} is not complete")]
    Moving {
        /// The home hub the user is moving away from.
        from: String,
    },
    /// No hand-off of the user is in progress.
    #[error("no hand-off of {0} is in progress")]
    NoMove(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS could not be set up for the peer.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The peer is a user's home hub, which only the user's next home record changes.
    #[error("{name} is the home hub of {user}; only a new home record of theirs changes that")]
    HomeHub {
        /// The peer.
        name: String,
        /// Its user.
        user: String,
    },
    /// The peer was a user's home hub and may still relay what it accepted from them.
    #[error(
        "{name} was the home hub of {user} and may still relay their messages; remove with force"
    )]
    FormerHome {
        /// The peer.
        name: String,
        /// Its user.
        user: String,
    },
    /// The hub is not running its links (yet, or any more).
    #[error("the hub's links are not running")]
    NotRunning,
}

/// What the connectors need, once the hub runs.
struct Running {
    hub: std::sync::Weak<Hub>,
    endpoint: quinn::Endpoint,
    identity: Arc<Identity>,
    shutdown: watch::Receiver<bool>,
}

/// The store record of the peers added at run time.
const ADDED_PEERS: &str = "peers:added";

/// The store blob of the users whose home hub is a peer (user -> peer name).
const HOMES: &str = "peers:homes";

/// The store blob of the former home hubs (peer name -> user): they may still relay what they
/// accepted from their user before the move, and are sent nothing.
const FORMERS: &str = "peers:formers";

/// The store blob of the hand-offs in progress on a registration hub (user -> move).
const MOVES: &str = "peers:moves";

/// The store blob of the users who moved away from this hub as their home (user -> moved).
const MOVED: &str = "peers:moved";

/// A hand-off in progress on a registration hub: the user's former home hub relays the mailbox
/// up to the `home_changed` notice at `through`, then hands over what it holds; the new home
/// hub gets that first, then the mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Move {
    from: String,
    through: u64,
    /// When the move was recorded, Unix milliseconds: the mailbox is held back from the new
    /// home hub for at most `[hub] handoff_wait_secs` after it.
    started_ms: u64,
}

/// The hold of [`Peers::hold_home`]: the home hub's link relays the mailbox again when it goes
/// (if that peer is still in the table; a replaced one has stopped).
pub struct HomeHold {
    peer: Option<Arc<Peer>>,
}

impl Drop for HomeHold {
    fn drop(&mut self) {
        if let Some(peer) = self.peer.take() {
            peer.held.store(false, std::sync::atomic::Ordering::Release);
            peer.released.notify_one();
        }
    }
}

/// What the admin API shows of a hand-off in progress.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HandoffStatus {
    /// The user moving.
    pub user: String,
    /// The home hub they are moving away from, whose part is not complete yet.
    pub from: String,
    /// Their new home hub.
    pub to: String,
    /// When the move was recorded, Unix milliseconds.
    pub started_ms: u64,
    /// Whether the new home hub gets the mailbox already (`[hub] handoff_wait_secs` passed).
    pub mailbox_released: bool,
}

/// A user who moved away from this hub as their home: the record that moved them, and the
/// sequence of its notice in their queue here (what is handed over ends there).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Moved {
    record: HomeRecord,
    through: u64,
}

impl Peer {
    fn update(&self, change: impl FnOnce(&mut PeerStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut status);
    }
}

/// The peer hubs of this hub.
pub struct Peers {
    /// Read on every send to another hub: lock-free.
    peers: arc_swap::ArcSwap<Vec<Arc<Peer>>>,
    name: String,
    domains: Vec<String>,
    running: OnceLock<Running>,
    /// Held while the table changes.
    changing: tokio::sync::Mutex<()>,
    /// Users of this hub whose home hub is a peer: their messages and receipts go there.
    homes: arc_swap::ArcSwap<HashMap<String, String>>,
    /// Former home hubs (name -> user): linked to still, relaying what their user sent before
    /// moving, sent nothing.
    formers: arc_swap::ArcSwap<HashMap<String, String>>,
    /// Hand-offs in progress here, as a registration hub.
    moves: arc_swap::ArcSwap<HashMap<String, Move>>,
    /// Users who moved away from this hub as their home.
    moved: arc_swap::ArcSwap<HashMap<String, Moved>>,
    /// As a home hub: what registration hubs relayed, and devices' progress to report to them.
    taken: crate::mailbox::TakenLog,
}

impl Peers {
    /// The peers of `config`, none linked yet.
    pub fn new(config: &Config) -> Self {
        let peers = config.peers.iter().map(|peer| make_peer(peer, true)).collect();
        Self {
            peers: arc_swap::ArcSwap::from_pointee(peers),
            name: config.hub.name.clone(),
            domains: config.hub.domains.clone(),
            running: OnceLock::new(),
            changing: tokio::sync::Mutex::new(()),
            homes: arc_swap::ArcSwap::from_pointee(HashMap::new()),
            formers: arc_swap::ArcSwap::from_pointee(HashMap::new()),
            moves: arc_swap::ArcSwap::from_pointee(HashMap::new()),
            moved: arc_swap::ArcSwap::from_pointee(HashMap::new()),
            taken: crate::mailbox::TakenLog::default(),
        }
    }

    /// As a home hub: what registration hubs relayed here, and what devices took of it.
    pub fn taken(&self) -> &crate::mailbox::TakenLog {
        &self.taken
    }

    /// `device` acknowledged the queue `queue` of a user whose registration hub relays here up
    /// to `up_to`: the registration hub is told on its link.
    pub fn device_took(&self, store: &Store, queue: QueueId, device: DeviceId, up_to: u64) {
        let name_of = |user: &str| {
            let records = store.device_records(Some(user)).ok()?;
            let record = records.into_iter().find(|r| r.device == device)?;
            Address::parse(&record.name).ok()
        };
        if let Some(peer) = self.taken.acked(queue, device, up_to, name_of)
            && let Some(peer) = self.list().iter().find(|p| p.config.name == peer)
        {
            peer.taken_ready.notify_one();
        }
    }

    /// The new home hub of `user`, if they moved away from this hub as their home: their sends
    /// here are refused from then on.
    pub fn moved_to(&self, user: &str) -> Option<String> {
        let moved = self.moved.load();
        if moved.is_empty() {
            return None;
        }
        moved.get(user).map(|m| m.record.hub.clone())
    }

    /// Checks that `hub_name` may become `user`'s home hub (the name checks of
    /// [`Peers::set_home`], made again there under its lock).
    pub fn check_home(&self, user: &str, hub_name: &str) -> Result<(), PeerError> {
        if hub_name == self.name {
            return Err(PeerError::Invalid("the home hub is this hub itself".into()));
        }
        let homes = self.homes.load();
        if let Some((other, _)) = homes.iter().find(|(u, h)| *h == hub_name && *u != user) {
            return Err(PeerError::Invalid(format!(
                "the hub name {hub_name} is the home hub of {other} already"
            )));
        }
        let formers = self.formers.load();
        if let Some(other) = formers.get(hub_name).filter(|u| *u != user) {
            return Err(PeerError::Invalid(format!(
                "the hub name {hub_name} was the home hub of {other}"
            )));
        }
        let is_home = homes.values().any(|h| h == hub_name) || formers.contains_key(hub_name);
        let taken =
            self.list().iter().any(|p| p.config.name == hub_name && (p.configured || !is_home));
        if taken {
            return Err(PeerError::Exists(hub_name.into()));
        }
        // During a hand-off the user may only go back to the hub they are moving away from
        // (which ends the move): a third hub would leave what the second one took behind.
        if let Some(from) = self.moves.load().get(user).map(|m| &m.from).filter(|f| *f != hub_name)
        {
            return Err(PeerError::Moving { from: from.clone() });
        }
        Ok(())
    }

    /// The user `from_peer` is handing over as their former home hub, with the hand-off queue.
    /// A home hub is the home of one user, so the peer names the user: the entries it hands
    /// over may be addressed to anyone (the copies of what the user sent).
    fn handoff_by(&self, from_peer: &str) -> Option<(String, QueueId)> {
        let moves = self.moves.load();
        let (user, _) = moves.iter().find(|(_, m)| m.from == from_peer)?;
        let home = self.homes.load().get(user).cloned()?;
        let peers = self.peers.load();
        let queue = peers.iter().find(|p| p.config.name == home)?.handoff.get()?.queue;
        Some((user.clone(), queue))
    }

    /// The new home hub of `user` gets the mailbox from now on (the old home hub's part is
    /// complete, or was waited for long enough).
    fn release(&self, user: &str) {
        let home = self.homes.load().get(user).cloned();
        let peers = self.list();
        if let Some(peer) = home.and_then(|h| peers.iter().find(|p| p.config.name == h)) {
            peer.held.store(false, std::sync::atomic::Ordering::Release);
            peer.released.notify_one();
        }
    }

    /// Holds back the mailbox of `user` from their current home hub while a new home record is
    /// taken: the old home hub must not get the `home_changed` notice (and hand the user over)
    /// before the move is recorded here. Released when the answer is dropped.
    pub fn hold_home(&self, user: &str) -> HomeHold {
        let home = self.homes.load().get(user).cloned();
        let peers = self.list();
        let peer = home.and_then(|h| peers.iter().find(|p| p.config.name == h).cloned());
        let was_held =
            peer.as_ref().is_some_and(|p| p.held.swap(true, std::sync::atomic::Ordering::AcqRel));
        HomeHold { peer: peer.filter(|_| !was_held) }
    }

    /// The hand-off of `user` in progress here (as their registration hub), if any.
    pub fn handoff_status(&self, user: &str) -> Option<HandoffStatus> {
        let moves = self.moves.load();
        let open = moves.get(user)?;
        let to = self.homes.load().get(user).cloned()?;
        let peers = self.list();
        let held = peers
            .iter()
            .find(|p| p.config.name == to)
            .is_some_and(|p| p.held.load(std::sync::atomic::Ordering::Acquire));
        Some(HandoffStatus {
            user: user.to_string(),
            from: open.from.clone(),
            to,
            started_ms: open.started_ms,
            mailbox_released: !held,
        })
    }

    /// The former home hub handed `user` over completely: the new home hub gets the mailbox.
    async fn finish_move(&self, hub: &Hub, user: &str) -> Result<(), StoreError> {
        let _changing = self.changing.lock().await;
        let mut moves = (**self.moves.load()).clone();
        let Some(done) = moves.remove(user) else { return Ok(()) };
        // The mailbox up to the move reached the new home hub inside the hand-off: its link
        // goes on after it (past it already if the mailbox was released early).
        let mailbox = hub.store().mailbox(user).await?;
        hub.store().ack(mailbox.queue, mailbox.link, done.through, Vec::new()).await?;
        put_json(hub, MOVES, &moves).await?;
        self.moves.store(Arc::new(moves));
        self.end_stand_in(hub, user, &done.from).await?;
        self.release(user);
        tracing::info!(%user, "hand-off complete");
        Ok(())
    }

    /// The former home hub `from` of `user` is sent nothing more: its stand-in connector stops,
    /// a plain former home takes its place, and its reader of the mailbox goes.
    async fn end_stand_in(&self, hub: &Hub, user: &str, from: &str) -> Result<(), StoreError> {
        let peers = self.list();
        if let Some(stand_in) = peers.iter().find(|p| p.config.name == from) {
            let _ = stand_in.stop.send(true);
            if self.formers.load().get(from).is_some_and(|u| u == user) {
                let former = make_former(&stand_in.config);
                let next: Vec<_> = peers
                    .iter()
                    .map(|p| if p.config.name == from { former.clone() } else { p.clone() })
                    .collect();
                self.peers.store(Arc::new(next));
            }
        }
        hub.store().drop_mailbox_stand_in(user).await
    }

    /// Gives up on the part of `user`'s hand-off that their former home hub holds (the hub is
    /// gone for good): the move ends, the new home hub gets the mailbox, and what the former
    /// home hub hands over later is dropped. Answers the hub given up on.
    pub async fn abandon_move(&self, user: &str) -> Result<String, PeerError> {
        let running = self.running.get().ok_or(PeerError::NotRunning)?;
        let hub = running.hub.upgrade().ok_or(PeerError::NotRunning)?;
        let _changing = self.changing.lock().await;
        let mut moves = (**self.moves.load()).clone();
        let done = moves.remove(user).ok_or_else(|| PeerError::NoMove(user.to_string()))?;
        put_json(&hub, MOVES, &moves).await?;
        self.moves.store(Arc::new(moves));
        self.end_stand_in(&hub, user, &done.from).await?;
        self.release(user);
        tracing::warn!(%user, from = %done.from, "hand-off abandoned: what the old home hub holds is given up");
        Ok(done.from)
    }

    /// The outbound queue of the home hub of `to`, when `to` is a user of this hub whose home
    /// hub is a peer (this hub is their registration hub).
    pub fn home_for(&self, to: &str) -> Option<QueueId> {
        let homes = self.homes.load();
        if homes.is_empty() {
            return None;
        }
        let name = homes.get(to)?;
        let peers = self.peers.load();
        peers.iter().find(|p| &p.config.name == name)?.outbound.get().map(|out| out.queue)
    }

    /// The name of the home hub of `user`, when `user` is a user of this hub whose home hub is
    /// a peer.
    pub fn home_hub(&self, user: &str) -> Option<String> {
        let homes = self.homes.load();
        if homes.is_empty() {
            return None;
        }
        homes.get(user).cloned()
    }

    /// Whether the peer `peer` is, or was, the home hub of the account of `address`: its
    /// relays may carry that user's messages and receipts.
    fn is_home_of(&self, peer: &str, address: &Address) -> bool {
        let Some(account) = address.account() else { return false };
        let homes = self.homes.load();
        if !homes.is_empty() && homes.get(account.as_str()).is_some_and(|p| p == peer) {
            return true;
        }
        let formers = self.formers.load();
        !formers.is_empty() && formers.get(peer).is_some_and(|user| user == account.as_str())
    }

    /// Makes the hub `hub_name` at `address` with certificate `pin` the home hub of `user`:
    /// a peer of that name takes the place of the user's previous home hub (if any), and the
    /// user's messages and receipts go to it from now on. What waits for the user is one queue,
    /// their mailbox (`mailbox:<user>`), which the link to whichever hub is their home relays
    /// from where the previous link stopped. A personal hub is the home of one user. Kept in
    /// the store.
    pub async fn set_home(
        &self,
        user: &str,
        hub_name: &str,
        address: std::net::SocketAddr,
        pin: &str,
        handoff_through: Option<u64>,
    ) -> Result<(), PeerError> {
        let running = self.running.get().ok_or(PeerError::NotRunning)?;
        let hub = running.hub.upgrade().ok_or(PeerError::NotRunning)?;
        if hub_name == self.name {
            return Err(PeerError::Invalid("the home hub is this hub itself".into()));
        }
        let _changing = self.changing.lock().await;
        self.check_home(user, hub_name)?;
        let peers = self.list();
        let homes_now = self.homes.load_full();
        let formers_now = self.formers.load_full();
        // Back to the hub the user was moving away from: the move ends. What that hub handed
        // over is still there (it holds its queue until its devices take it), so the copies
        // handed over are dropped, and nothing is handed over by the hub left (the mailbox was
        // held back from it; it has copies at most).
        let aborting = self.moves.load().get(user).is_some_and(|m| m.from == hub_name);
        if aborting {
            let mut moves = (**self.moves.load()).clone();
            moves.remove(user);
            put_json(&hub, MOVES, &moves).await?;
            self.moves.store(Arc::new(moves));
            drain(&hub, hub.store().handoff_queue(user).await?).await?;
            tracing::info!(%user, back_to = %hub_name, "hand-off ended: the user went back");
        }
        let handoff_through = handoff_through.filter(|_| !aborting);
        let old = homes_now
            .get(user)
            .and_then(|name| peers.iter().find(|p| &p.config.name == name))
            .cloned();
        let same = old.as_ref().is_some_and(|p| {
            p.config.name == hub_name && p.pin == pin && p.config.address == address
        });
        if !same {
            let config = PeerConfig {
                name: hub_name.to_string(),
                address,
                pin: pin.to_string(),
                domains: Vec::new(),
                provider: false,
                forwards: false,
            };
            let peer = make_peer(&config, false);
            let _ = peer.outbound.set(hub.store().mailbox(user).await?);
            // The previous home hub, under another name, stays a peer as a former home: its
            // link is still taken, to relay what it accepted from the user before the move,
            // and nothing is sent to it. The same name is simply replaced.
            let former = old
                .as_ref()
                .filter(|o| o.config.name != hub_name)
                .map(|o| (o.config.name.clone(), make_former(&o.config)));
            // A hand-off: the former home relays the mailbox up to the notice and then hands
            // over what it holds; the new home gets that first and the mailbox after.
            let handing = former.as_ref().zip(handoff_through);
            if let Some(((_, stand_in), through)) = handing {
                let _ = stand_in.outbound.set(hub.store().mailbox_stand_in(user).await?);
                stand_in.until.store(through, std::sync::atomic::Ordering::Release);
                stand_in.update(|s| s.last_error = None);
                let _ = peer.handoff.set(hub.store().handoff_queue(user).await?);
                peer.held.store(true, std::sync::atomic::Ordering::Release);
            }
            let mut next: Vec<_> = peers
                .iter()
                .filter(|p| p.config.name != hub_name)
                .map(|p| match &former {
                    Some((name, stand_in)) if &p.config.name == name => stand_in.clone(),
                    _ => p.clone(),
                })
                .collect();
            next.push(peer.clone());
            let mut formers = (*formers_now).clone();
            formers.remove(hub_name);
            if let Some((name, _)) = &former {
                formers.insert(name.clone(), user.to_string());
            }
            put_json(&hub, FORMERS, &formers).await?;
            if let Some(((name, _), through)) = handing {
                let mut moves = (**self.moves.load()).clone();
                let started_ms = system_clock_ms();
                moves.insert(user.to_string(), Move { from: name.clone(), through, started_ms });
                put_json(&hub, MOVES, &moves).await?;
                self.moves.store(Arc::new(moves));
                tokio::spawn(release_later(hub.clone(), user.to_string(), started_ms));
            }
            save_added(&hub, &next).await?;
            self.peers.store(Arc::new(next));
            self.formers.store(Arc::new(formers));
            if let Some(old) = old {
                // Its connector stops; its own link to this hub, if up, goes on.
                let _ = old.stop.send(true);
            }
            // A former home of the same name (a move back) is replaced: its connector, if it
            // had one for a hand-off, stops too.
            for replaced in peers.iter().filter(|p| p.config.name == hub_name) {
                let _ = replaced.stop.send(true);
            }
            if aborting {
                // Its home link reads the mailbox from where the new home hub's stopped (what it
                // got through its stand-in comes again and falls to its dedupe).
                hub.store().drop_mailbox_stand_in(user).await?;
            }
            if let Some(((_, stand_in), _)) = handing {
                spawn_connector(&hub, running, stand_in.clone())?;
            }
            spawn_connector(&hub, running, peer)?;
            tracing::info!(%user, peer = %hub_name, %address, "home hub set");
        }
        let mut homes = (*homes_now).clone();
        homes.insert(user.to_string(), hub_name.to_string());
        put_json(&hub, HOMES, &homes).await?;
        self.homes.store(Arc::new(homes));
        Ok(())
    }

    fn list(&self) -> Arc<Vec<Arc<Peer>>> {
        self.peers.load_full()
    }

    /// Every peer's status, in configuration order.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        self.list()
            .iter()
            .map(|p| p.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// The outbound queue of the peer `name`, once the hub has opened it.
    pub fn outbound_of(&self, name: &str) -> Option<Outbound> {
        self.list().iter().find(|p| p.config.name == name)?.outbound.get().copied()
    }

    /// Ends the backoff of the link to `name` now; `false` if there is no such peer.
    pub fn retry(&self, name: &str) -> bool {
        match self.list().iter().find(|p| p.config.name == name) {
            Some(peer) => {
                peer.retry.notify_one();
                true
            }
            None => false,
        }
    }

    /// The outbound queue for the hub that serves `to`'s domain, if a peer does; else that of
    /// the first peer that forwards (a personal hub's registration hub: its default route).
    pub fn outbound_for(&self, to: &Address) -> Option<QueueId> {
        let domain = to.domain()?;
        let peers = self.peers.load();
        let peer = peers
            .iter()
            .find(|p| p.config.domains.iter().any(|d| domain_matches(d, domain)))
            .or_else(|| peers.iter().find(|p| p.config.forwards))?;
        peer.outbound.get().map(|out| out.queue)
    }

    /// For a relay from `from_peer`, the outbound queue of the peer serving `to`, when this hub
    /// forwards for `from_peer`: it is the home hub of one of this hub's users (this hub is
    /// their registration hub, their way to every other hub). Never back to `from_peer`.
    fn forward_for(&self, from_peer: &str, to: &Address) -> Option<QueueId> {
        let homes = self.homes.load();
        if !homes.values().any(|p| p == from_peer) {
            return None;
        }
        let domain = to.domain()?;
        let peers = self.peers.load();
        let peer = peers.iter().find(|p| {
            p.config.name != from_peer && p.config.domains.iter().any(|d| domain_matches(d, domain))
        })?;
        peer.outbound.get().map(|out| out.queue)
    }

    /// Adds a peer at run time: kept in the store (it comes back after a restart) and linked
    /// at once.
    pub async fn add(&self, config: PeerConfig) -> Result<(), PeerError> {
        let running = self.running.get().ok_or(PeerError::NotRunning)?;
        let hub = running.hub.upgrade().ok_or(PeerError::NotRunning)?;
        check_peer(&config)?;
        let _changing = self.changing.lock().await;
        let peers = self.list();
        if config.name == self.name || peers.iter().any(|p| p.config.name == config.name) {
            return Err(PeerError::Exists(config.name));
        }
        for domain in &config.domains {
            if let Some(by) = peers.iter().find(|p| p.config.domains.contains(domain)) {
                let by = by.config.name.clone();
                return Err(PeerError::DomainTaken { domain: domain.clone(), by });
            }
        }
        let peer = make_peer(&config, false);
        let _ = peer.outbound.set(hub.store().outbound(&config.name).await?);
        let mut next = (*peers).clone();
        next.push(peer.clone());
        save_added(&hub, &next).await?;
        self.peers.store(Arc::new(next));
        spawn_connector(&hub, running, peer)?;
        tracing::info!(peer = %config.name, "peer added");
        Ok(())
    }

    /// Removes a peer added at run time; refused while messages wait for it, unless `force`
    /// (which drops them).
    pub async fn remove(&self, name: &str, force: bool) -> Result<(), PeerError> {
        let running = self.running.get().ok_or(PeerError::NotRunning)?;
        let hub = running.hub.upgrade().ok_or(PeerError::NotRunning)?;
        let _changing = self.changing.lock().await;
        let peers = self.list();
        let peer = peers
            .iter()
            .find(|p| p.config.name == name)
            .cloned()
            .ok_or_else(|| PeerError::Unknown(name.into()))?;
        if peer.configured {
            return Err(PeerError::Configured(name.into()));
        }
        // A home hub holds its user's mailbox: only the user's next home record moves it.
        if let Some((user, _)) = self.homes.load().iter().find(|(_, h)| h.as_str() == name) {
            return Err(PeerError::HomeHub { name: name.into(), user: user.clone() });
        }
        // A former home hub may still have its user's messages to relay: only with force.
        let formers = self.formers.load_full();
        if let Some(user) = formers.get(name) {
            if !force {
                return Err(PeerError::FormerHome { name: name.into(), user: user.clone() });
            }
            let mut rest = (*formers).clone();
            rest.remove(name);
            put_json(&hub, FORMERS, &rest).await?;
            self.formers.store(Arc::new(rest));
        }
        if let Some(out) = peer.outbound.get().copied() {
            let store = hub.store().clone();
            let count = hub
                .store()
                .blocking(move |_| {
                    let stats = store.stats(out.queue)?;
                    Ok(stats.last_seq.saturating_sub(store.cursor(out.queue, out.link)?.acked))
                })
                .await?;
            if count > 0 && !force {
                return Err(PeerError::Queued { name: name.into(), count });
            }
        }
        let next: Vec<_> = peers.iter().filter(|p| p.config.name != name).cloned().collect();
        save_added(&hub, &next).await?;
        self.peers.store(Arc::new(next));
        let _ = peer.stop.send(true);
        if let Some(inbound) = peer.inbound.lock().unwrap_or_else(|e| e.into_inner()).take() {
            inbound.close(ErrorCode::UNKNOWN_HUB.0.into(), b"removed from the peer table");
        }
        tracing::info!(peer = %name, "peer removed");
        Ok(())
    }

    fn hello(&self) -> Frame {
        let domains = self.domains.iter().filter_map(|d| Address::parse(&format!("@{d}")).ok());
        Frame::HubHello(HubHello {
            hub: self.name.clone(),
            domains: domains.collect(),
            max_batch: MAX_BATCH,
        })
    }
}

/// Checks a peer's `hub-hello` against its entry in the peer table.
fn check_hello(peer: &PeerConfig, frame: Option<Frame>) -> Result<HubHello, String> {
    let hello = match frame {
        Some(Frame::HubHello(hello)) => hello,
        Some(other) => {
            return Err(format!("expected hub-hello, got {}", other.frame_type().name()));
        }
        None => return Err("the stream ended before hub-hello".into()),
    };
    if hello.hub != peer.name {
        return Err(format!("the peer says it is {:?}, the peer table {:?}", hello.hub, peer.name));
    }
    for domain in &hello.domains {
        let domain = domain.domain().unwrap_or_default();
        if !peer.domains.iter().any(|d| domain_matches(d, domain)) {
            return Err(format!(
                "{} claims {domain}, which the peer table does not give it",
                peer.name
            ));
        }
    }
    Ok(hello)
}

/// Opens each peer's outbound queue and starts one connector per peer; they run until
/// `shutdown`.
pub(crate) async fn start(
    hub: Arc<Hub>,
    endpoint: quinn::Endpoint,
    identity: &Identity,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let peers = hub.peers().clone();
    // Peers added at run time before the last stop, unless the configuration names them now.
    let added: Vec<PeerConfig> = match hub.store().blocking(|store| store.blob(ADDED_PEERS)).await?
    {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| StartError::from(StoreError::Corrupt(format!("the added peers: {e}"))))?,
        None => Vec::new(),
    };
    peers.homes.store(Arc::new(get_json(&hub, HOMES).await?));
    peers.formers.store(Arc::new(get_json(&hub, FORMERS).await?));
    peers.moves.store(Arc::new(get_json(&hub, MOVES).await?));
    peers.moved.store(Arc::new(get_json(&hub, MOVED).await?));
    let mut list = (*peers.list()).clone();
    let formers = peers.formers.load_full();
    for config in added {
        if !list.iter().any(|p| p.config.name == config.name) {
            list.push(match formers.contains_key(&config.name) {
                true => make_former(&config),
                false => make_peer(&config, false),
            });
        }
    }
    let moves = peers.moves.load_full();
    let homes = peers.homes.load_full();
    for peer in &list {
        // A hand-off in progress: the former home relays the mailbox up to the notice; the new
        // home holds the mailbox back until the former home's part is complete.
        if let Some((user, mv)) = moves.iter().find(|(_, m)| m.from == peer.config.name) {
            let _ = peer.outbound.set(hub.store().mailbox_stand_in(user).await?);
            peer.until.store(mv.through, std::sync::atomic::Ordering::Release);
            continue;
        }
        let moving_to =
            homes.iter().find(|(u, h)| **h == peer.config.name && moves.contains_key(*u));
        if let Some((user, _)) = moving_to {
            let _ = peer.handoff.set(hub.store().handoff_queue(user).await?);
            peer.held.store(true, std::sync::atomic::Ordering::Release);
            tokio::spawn(release_later(hub.clone(), user.clone(), moves[user].started_ms));
        }
        if formers.contains_key(&peer.config.name) {
            continue; // a former home hub is sent nothing
        }
        // A home hub's link relays its user's mailbox; any other peer's, its own queue.
        let home_of = peers
            .homes
            .load()
            .iter()
            .find(|(_, h)| **h == peer.config.name)
            .map(|(u, _)| u.clone());
        let outbound = match home_of {
            Some(user) => hub.store().mailbox(&user).await?,
            None => hub.store().outbound(&peer.config.name).await?,
        };
        let _ = peer.outbound.set(outbound);
    }
    peers.peers.store(Arc::new(list.clone()));
    let identity =
        Arc::new(Identity { cert: identity.cert.clone(), key: identity.key.clone_key() });
    let running = Running { hub: Arc::downgrade(&hub), endpoint, identity, shutdown };
    let running = peers.running.get_or_init(|| running);
    let moving = |p: &Arc<Peer>| moves.values().any(|m| m.from == p.config.name);
    for peer in list.into_iter().filter(|p| !formers.contains_key(&p.config.name) || moving(p)) {
        spawn_connector(&hub, running, peer)?;
    }
    // Devices of users whose home hub is another read their mailbox here (a record taken by
    // a hub that stopped before it subscribed them, or by an older version of this hub).
    for user in homes.keys() {
        if let Err(error) = hub.mailbox_readers(user).await {
            tracing::warn!(%user, %error, "making the user's devices readers of their mailbox");
        }
    }
    // Users who moved away from this hub: what is handed over is sent again (the registration
    // hub drops what it holds already), in case the last run stopped half-way.
    for (user, moved) in peers.moved.load().iter() {
        tokio::spawn(hand_over(hub.clone(), user.clone(), moved.record.clone(), moved.through));
    }
    Ok(())
}

/// Releases the mailbox of `user` to their new home hub once `[hub] handoff_wait_secs` passed
/// since the move started at `started_ms`, if the old home hub's part has not come by then.
/// What it holds still goes to the new home hub when it comes, after what the mailbox gave.
async fn release_later(hub: Arc<Hub>, user: String, started_ms: u64) {
    let wait_ms = hub.config().hub.handoff_wait_secs.saturating_mul(1000);
    let due = started_ms.saturating_add(wait_ms);
    tokio::time::sleep(Duration::from_millis(due.saturating_sub(system_clock_ms()))).await;
    let peers = hub.peers();
    if peers.moves.load().get(&user).is_some_and(|m| m.started_ms == started_ms) {
        tracing::warn!(%user, waited_secs = wait_ms / 1000, "the old home hub's part of the hand-off has not come; the new home hub gets the mailbox now");
        peers.release(&user);
    }
}

/// The id of the marker that ends a hand-off of `user` at `epoch`: the same each time, so a
/// hand-off sent again marks its end once.
fn handoff_done_id(user: &str, record: &HomeRecord) -> MessageId {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"handoff_done")
        .chain_update(user.as_bytes())
        .chain_update(record.epoch.to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    MessageId::from_parts(record.signed_ms, u128::from_be_bytes(bytes))
}

/// On the user's former home hub: hands over to the registration hub every entry of the user's
/// queue that some device has not acknowledged, up to the `home_changed` notice at `through`,
/// then a marker that the hand-off is complete. The user's sends here are refused from the
/// moment the move is recorded; their devices find the `home_changed` notice in their queue
/// here. Sent again whole after a restart; the registration hub keeps each entry once.
async fn hand_over(hub: Arc<Hub>, user: String, record: HomeRecord, through: u64) {
    if let Err(why) = hand_over_once(&hub, &user, &record, through).await {
        tracing::error!(%user, %why, "the hand-off could not be sent; it is tried again at the next start");
    }
}

async fn hand_over_once(
    hub: &Arc<Hub>,
    user: &str,
    record: &HomeRecord,
    through: u64,
) -> Result<(), String> {
    let account = Address::parse(user).map_err(|e| e.to_string())?;
    let queue = hub.directory().queue(user).ok_or("no such user here")?;
    let route = hub.peers().outbound_for(&account).ok_or("no route to the registration hub")?;
    let lookup = user.to_string();
    let devices = hub
        .store()
        .blocking(move |store| store.device_records(Some(&lookup)))
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<_> = devices.iter().filter(|d| !d.revoked).map(|d| d.device).collect();
    let from = hub
        .store()
        .blocking(move |store| {
            let mut low = through;
            for device in ids {
                if let Ok(cursor) = store.cursor(queue, device) {
                    low = low.min(cursor.acked);
                }
            }
            Ok(low)
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut after = from;
    let mut handed = 0usize;
    while after < through {
        let entries = hub
            .store()
            .blocking(move |store| store.read_after(queue, after, 256))
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = entries.last().map(|e| e.seq) else { break };
        // Committed in queue order (the store keeps the order enqueues are made in).
        let mut pending = Vec::new();
        for entry in entries.into_iter().filter(|e| e.seq <= through) {
            let left = entry.expires_ms.saturating_sub(system_clock_ms()).div_ceil(1000);
            if left == 0 {
                continue;
            }
            let mut envelope = match decode_entry(&entry.payload) {
                Ok(Stored::Message(envelope)) => envelope,
                // A receipt for a message the user sent goes to the registration hub as a
                // receipt, which puts it in the hand-off queue for the new home hub.
                Ok(Stored::Receipt(receipt)) => {
                    let ttl = u32::try_from(left).unwrap_or(u32::MAX);
                    pending.push(hub.store().enqueue(route, receipt_request(&receipt, ttl)));
                    continue;
                }
                Err(_) => continue,
            };
            envelope.flags = envelope.flags | Flags::HANDOFF;
            envelope.ttl_secs = u32::try_from(left).unwrap_or(u32::MAX);
            let request = EnqueueRequest {
                id: envelope.id.0,
                // A scope of its own: the user's own messages are in the route's dedupe already.
                sender: Bytes::from(format!("handoff:{}", envelope.from)),
                expires_ms: entry.expires_ms,
                payload: encode_message(&envelope),
            };
            pending.push(hub.store().enqueue(route, request));
        }
        for commit in pending {
            commit.await.map_err(|e| e.to_string())?;
            handed += 1;
        }
        after = last;
    }
    let done = Envelope {
        id: handoff_done_id(user, record),
        from: account.clone(),
        to: account,
        created_ms: system_clock_ms(),
        ttl_secs: hub.config().delivery.max_ttl_secs,
        flags: Flags::NOTICE | Flags::HANDOFF,
        body: Bytes::from(
            serde_json::json!({ "notice": "handoff_done", "epoch": record.epoch }).to_string(),
        ),
    };
    let request = EnqueueRequest {
        id: done.id.0,
        sender: Bytes::from(format!("handoff:{user}")),
        expires_ms: system_clock_ms().saturating_add(u64::from(done.ttl_secs) * 1000),
        payload: encode_message(&done),
    };
    hub.store().enqueue(route, request).await.map_err(|e| e.to_string())?;
    hub.notifier().wake(route);
    tracing::info!(%user, handed, to = %record.hub, "hand-off sent to the registration hub");
    Ok(())
}

/// On a home hub, a `home_changed` notice relayed in from the registration hub of one of its
/// users: the record it carries (whether it is news is asked when it is acted on, see
/// [`is_news`]). The record was checked by the registration hub; it is checked again
/// here when the signing device is enrolled here too (a record that does not verify is
/// ignored, and logged).
async fn move_notice(hub: &Hub, envelope: &Envelope) -> Option<HomeRecord> {
    if envelope.from != envelope.to {
        return None;
    }
    let body: serde_json::Value = serde_json::from_slice(&envelope.body).ok()?;
    if body["notice"] != "home_changed" {
        return None;
    }
    let record: HomeRecord = serde_json::from_value(body["record"].clone()).ok()?;
    let user = envelope.to.as_str();
    if record.user != user || hub.directory().queue(user).is_none() {
        return None;
    }
    let lookup = user.to_string();
    let devices =
        hub.store().blocking(move |store| store.device_records(Some(&lookup))).await.ok()?;
    match devices.iter().find(|d| d.name == record.device && !d.revoked) {
        Some(device) => {
            if let Err(error) = record.verify(&device.public_key) {
                tracing::warn!(%user, %error, "a home_changed notice whose record does not verify");
                return None;
            }
        }
        None => tracing::info!(
            %user, device = %record.device,
            "a home_changed notice signed by a device not enrolled here; taken on the registration hub's check"
        ),
    }
    Some(record)
}

/// Whether `record` changes where its user lives as this hub knows it: a move away newer than
/// the last one seen, or a move back here after one. Asked again when the notice is acted on,
/// as a relayed batch may carry several notices of one user (a hub that was down learns of a
/// move away and back at once).
fn is_news(hub: &Hub, record: &HomeRecord) -> bool {
    let last = hub.peers().moved.load().get(&record.user).map(|m| m.record.epoch);
    let here = record.hub == hub.peers().name;
    !(last.is_some_and(|epoch| epoch >= record.epoch) || (here && last.is_none()))
}

/// A notice naming this hub again after the user moved away: they are back, and their sends
/// are taken again.
async fn moving_back_in(hub: &Hub, user: &str, record: HomeRecord) -> Result<(), StoreError> {
    let peers = hub.peers();
    let _changing = peers.changing.lock().await;
    let mut moved = (**peers.moved.load()).clone();
    if moved.remove(user).is_none() {
        return Ok(());
    }
    put_json(hub, MOVED, &moved).await?;
    peers.moved.store(Arc::new(moved));
    tracing::info!(%user, epoch = record.epoch, "the user is back on this home hub");
    Ok(())
}

/// Records that `user` moved away from this hub (their sends are refused from now on) and
/// starts the hand-off of what is held for them, up to the notice at `through`.
async fn begin_moving_out(
    hub: &Hub,
    user: &str,
    record: HomeRecord,
    through: u64,
) -> Result<(), StoreError> {
    let peers = hub.peers();
    let _changing = peers.changing.lock().await;
    let mut moved = (**peers.moved.load()).clone();
    moved.insert(user.to_string(), Moved { record: record.clone(), through });
    put_json(hub, MOVED, &moved).await?;
    peers.moved.store(Arc::new(moved));
    tracing::info!(%user, to = %record.hub, epoch = record.epoch, "the user moved to another home hub");
    if let Some(hub) = peers.running.get().and_then(|r| r.hub.upgrade()) {
        tokio::spawn(hand_over(hub, user.to_string(), record, through));
    }
    Ok(())
}

fn spawn_connector(
    hub: &Arc<Hub>,
    running: &Running,
    peer: Arc<Peer>,
) -> Result<(), tls::TlsError> {
    let crypto = tls::hub_client_crypto(&running.identity, &peer.pin)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(crate::net::endpoint::transport(
        LINK_IDLE,
        Some(LINK_KEEP_ALIVE),
        true,
    ));
    let stopped = peer.stop.subscribe();
    tokio::spawn(connector(
        hub.clone(),
        peer,
        running.endpoint.clone(),
        client,
        running.shutdown.clone(),
        stopped,
    ));
    Ok(())
}

/// Checks a peer's fields.
fn check_peer(config: &PeerConfig) -> Result<(), PeerError> {
    let name_ok = !config.name.trim().is_empty() && config.name.len() <= 253;
    if !name_ok || config.name.chars().any(char::is_control) {
        return Err(PeerError::Invalid("name: 1 to 253 characters".into()));
    }
    if config.pin.len() != 64 || !config.pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PeerError::Invalid("pin: 64 hex digits (`hub identity` on that hub)".into()));
    }
    if config.domains.is_empty() {
        return Err(PeerError::Invalid("domains: at least one".into()));
    }
    for domain in &config.domains {
        let domain = domain.strip_prefix("*.").unwrap_or(domain);
        if Address::parse(&format!("@{domain}")).is_err() {
            return Err(PeerError::Invalid(format!("domains: {domain:?} is not a domain")));
        }
    }
    Ok(())
}

/// Drops everything in `outbound` (acknowledges it up to its last entry).
async fn drain(hub: &Hub, outbound: Outbound) -> Result<(), StoreError> {
    loop {
        let entries = hub
            .store()
            .blocking(move |store| store.read(outbound.queue, outbound.link, 1024))
            .await?;
        let Some(last) = entries.last() else { return Ok(()) };
        hub.store().ack(outbound.queue, outbound.link, last.seq, Vec::new()).await?;
    }
}

/// Keeps a map of the peer table's as a store blob.
async fn put_json<T: Serialize>(hub: &Hub, name: &'static str, map: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(map)
        .map_err(|e| StoreError::Encode { what: name, why: e.to_string() })?;
    hub.store().put_blob(name, bytes).await
}

/// Reads a map of the peer table's from its store blob.
async fn get_json<T: serde::de::DeserializeOwned + Default>(
    hub: &Hub,
    name: &'static str,
) -> Result<T, StoreError> {
    match hub.store().blocking(move |store| store.blob(name)).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("the peer table's {name}: {e}"))),
        None => Ok(T::default()),
    }
}

/// Keeps the record of the peers added at run time.
async fn save_added(hub: &Hub, peers: &[Arc<Peer>]) -> Result<(), StoreError> {
    let added: Vec<&PeerConfig> =
        peers.iter().filter(|p| !p.configured).map(|p| &p.config).collect();
    let bytes = serde_json::to_vec(&added)
        .map_err(|e| StoreError::Encode { what: "the added peers", why: e.to_string() })?;
    hub.store().put_blob(ADDED_PEERS, bytes).await
}

/// Keeps the link to `peer` up, and relays what waits for it, until shutdown.
async fn connector(
    hub: Arc<Hub>,
    peer: Arc<Peer>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    mut shutdown: watch::Receiver<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut delay = BACKOFF_START;
    while !*shutdown.borrow() && !*stopped.borrow() {
        peer.update(|s| {
            s.state = LinkState::Connecting;
            s.attempts += 1;
            s.next_attempt_ms = None;
        });
        match link_once(hub.peers(), &peer, &endpoint, client.clone()).await {
            Ok(link) => {
                delay = BACKOFF_START;
                let now = system_clock_ms();
                peer.update(|s| {
                    s.state = LinkState::Up;
                    s.since_ms = now;
                    s.last_error = None;
                });
                tracing::info!(peer = %peer.config.name, "hub link up");
                let connection = link.connection.clone();
                let why = tokio::select! {
                    why = relay_out(&hub, &peer, link) => why,
                    _ = shutdown.changed() => {
                        connection.close(ErrorCode::SHUTTING_DOWN.0.into(), b"the hub is stopping");
                        return;
                    }
                    _ = stopped.changed() => {
                        connection.close(ErrorCode::NORMAL.0.into(), b"removed from the peer table");
                        return;
                    }
                };
                connection.close(ErrorCode::NORMAL.0.into(), why.as_bytes());
                tracing::warn!(peer = %peer.config.name, %why, "hub link down");
                peer.update(|s| s.last_error = Some(why));
                if *stopped.borrow() {
                    // A former home hub whose part of a hand-off is relayed: no more attempts.
                    return;
                }
            }
            Err(why) => {
                tracing::warn!(peer = %peer.config.name, %why, "hub link attempt failed");
                peer.update(|s| s.last_error = Some(why));
            }
        }
        // Exponential backoff with jitter (half to one and a half times the delay).
        let wait = delay.mul_f64(0.5 + rand::random::<f64>());
        delay = (delay * 2).min(BACKOFF_CAP);
        let now = system_clock_ms();
        peer.update(|s| {
            s.state = LinkState::Backoff;
            s.since_ms = now;
            s.next_attempt_ms = Some(now + wait.as_millis() as u64);
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = peer.retry.notified() => delay = BACKOFF_START,
            _ = shutdown.changed() => return,
            _ = stopped.changed() => return,
        }
    }
}

/// A link that is up: its connection, its stream, and the peer's largest batch.
struct Link {
    connection: quinn::Connection,
    writer: FrameWriter,
    reader: FrameReader,
    max_batch: u32,
}

/// One attempt: connects and exchanges hellos.
async fn link_once(
    peers: &Peers,
    peer: &Peer,
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
) -> Result<Link, String> {
    let connecting = endpoint
        .connect_with(client, peer.config.address, "switchboard-hub")
        .map_err(|e| format!("cannot connect: {e}"))?;
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    // When the peer closes the link, its reason says why (an unknown hub, say).
    let failed = |what: &str, error: String| match connection.close_reason() {
        Some(reason) => format!("{what}: {reason}"),
        None => format!("{what}: {error}"),
    };
    let (send, recv) = connection.open_bi().await.map_err(|e| failed("stream", e.to_string()))?;
    let mut writer = FrameWriter::new(send, MAX_LINK_FRAME);
    let mut reader = FrameReader::new(recv, MAX_LINK_FRAME);
    writer.send(&peers.hello()).await.map_err(|e| failed("sending hub-hello", e.to_string()))?;
    let answer = tokio::time::timeout(HELLO_TIMEOUT, reader.next())
        .await
        .map_err(|_| "no hub-hello in time".to_string())?
        .map_err(|e| failed("reading hub-hello", e.to_string()))?;
    match check_hello(&peer.config, answer) {
        Ok(hello) => {
            let max_batch = hello.max_batch.clamp(1, MAX_BATCH);
            Ok(Link { connection, writer, reader, max_batch })
        }
        Err(why) => {
            connection.close(ErrorCode::UNKNOWN_HUB.0.into(), why.as_bytes());
            Err(why)
        }
    }
}

/// Relays the outbound queue of `peer` over `link`, in order, a batch at a time: a batch leaves
/// the queue only after the peer's `relay-ack`, which it sends once the batch is durable there.
/// Answers why the link ended.
async fn relay_out(hub: &Hub, peer: &Peer, mut link: Link) -> String {
    let Some(&mailbox) = peer.outbound.get() else { return "no outbound queue".into() };
    let handoff = peer.handoff.get().copied();
    let mut watched = vec![mailbox.queue];
    watched.extend(handoff.map(|h| h.queue));
    let watch = hub.notifier().watch(&watched);
    let mut batch = 0u64;
    loop {
        let max = link.max_batch as usize;
        // What the user's devices took here, for their registration hub's copy of the mailbox.
        let taken = hub.peers().taken().waiting(&peer.config.name, max);
        if !taken.is_empty() {
            batch += 1;
            let frame = Frame::RelayTaken(RelayTaken { batch, taken: taken.clone() });
            let ack = match send_and_wait(&mut link, frame, batch).await {
                Ok(ack) => ack,
                Err(why) => return why,
            };
            for rejection in &ack.rejected {
                let device = taken.get(usize::from(rejection.index)).map(|t| t.device.clone());
                tracing::warn!(peer = %peer.config.name, ?device, reason = %rejection.reason, "the registration hub refused a device's progress");
            }
            hub.peers().taken().sent(&peer.config.name, &taken);
            continue;
        }
        let read = |source: Outbound| {
            hub.store().blocking(move |store| store.read(source.queue, source.link, max))
        };
        // A new home hub gets what the old one handed over first; the mailbox only after the
        // old one's part is complete.
        let mut outbound = mailbox;
        let mut entries = Vec::new();
        if let Some(handoff) = handoff {
            entries = match read(handoff).await {
                Ok(entries) => entries,
                Err(error) => return format!("reading the hand-off queue: {error}"),
            };
            outbound = handoff;
        }
        let held = peer.held.load(std::sync::atomic::Ordering::Acquire);
        if entries.is_empty() && !held {
            outbound = mailbox;
            entries = match read(mailbox).await {
                Ok(entries) => entries,
                Err(error) => return format!("reading the outbound queue: {error}"),
            };
        }
        // A former home hub in a hand-off: the mailbox up to the notice, then the link ends.
        let until = peer.until.load(std::sync::atomic::Ordering::Acquire);
        if until != u64::MAX {
            entries.retain(|e| e.seq <= until);
            if entries.is_empty() {
                let done = hub
                    .store()
                    .blocking(move |store| store.cursor(mailbox.queue, mailbox.link))
                    .await;
                if done.is_ok_and(|cursor| cursor.acked >= until) {
                    let _ = peer.stop.send(true);
                    return "a former home hub: the mailbox up to the move is relayed to it; \
                            it is sent nothing more"
                        .into();
                }
            }
        }
        if entries.is_empty() {
            tokio::select! {
                () = watch.woken() => {
                    watch.take_changed();
                }
                () = peer.released.notified(), if held => {}
                () = peer.taken_ready.notified() => {}
                error = link.connection.closed() => return error.to_string(),
            }
            continue;
        }
        // One batch is one run of the same kind, in queue order: messages go as a `relay`,
        // receipts as a `relay-receipts`.
        let mut last = 0;
        let mut envelopes = Vec::new();
        let mut receipts = Vec::new();
        let now = system_clock_ms();
        for entry in &entries {
            match decode_entry(&entry.payload) {
                Ok(Stored::Message(mut envelope)) if receipts.is_empty() => {
                    // The time to live counts across hops: the peer gets what remains of it.
                    let left = entry.expires_ms.saturating_sub(now).div_ceil(1000).max(1);
                    envelope.ttl_secs = u32::try_from(left).unwrap_or(u32::MAX);
                    envelopes.push(envelope);
                }
                Ok(Stored::Receipt(receipt)) if envelopes.is_empty() => receipts.push(receipt),
                Ok(_) => break,
                Err(error) => tracing::error!(peer = %peer.config.name, %error, "unreadable entry"),
            }
            last = entry.seq;
        }
        if !receipts.is_empty() {
            batch += 1;
            let count = receipts.len() as u64;
            let frame = Frame::RelayReceipts(RelayReceipts { batch, receipts });
            if let Err(why) = send_and_wait(&mut link, frame, batch).await {
                return why;
            }
            let label = crate::metrics::label("peer", peer.config.name.clone());
            hub.metrics().relayed_out.get_or_create(&label).inc_by(count);
            if let Err(error) =
                hub.store().ack(outbound.queue, outbound.link, last, Vec::new()).await
            {
                return format!("acknowledging the outbound queue: {error}");
            }
            continue;
        }
        batch += 1;
        if !envelopes.is_empty() {
            let sent = envelopes.len();
            // What a refusal needs to reach the sender: who sent what to whom.
            let heads: Vec<(Address, Address, MessageId, bool)> = envelopes
                .iter()
                .map(|e| (e.from.clone(), e.to.clone(), e.id, e.flags.contains(Flags::HANDOFF)))
                .collect();
            let frame = Frame::Relay(Relay { batch, envelopes });
            let ack = match send_and_wait(&mut link, frame, batch).await {
                Ok(ack) => ack,
                Err(why) => return why,
            };
            let label = crate::metrics::label("peer", peer.config.name.clone());
            let taken_there = sent.saturating_sub(ack.rejected.len()) as u64;
            hub.metrics().relayed_out.get_or_create(&label).inc_by(taken_there);
            for rejection in &ack.rejected {
                let Some((from, to, id, handed)) = heads.get(usize::from(rejection.index)) else {
                    return format!(
                        "relay-ack {batch} refuses position {} of {sent}",
                        rejection.index
                    );
                };
                tracing::info!(
                    peer = %peer.config.name,
                    %from,
                    %to,
                    reason = %rejection.reason,
                    "the peer refused a relayed message"
                );
                if *handed {
                    // A hand-off the registration hub refused: the message was delivered here
                    // and stays in the user's queue here; its sender is not told.
                    tracing::error!(peer = %peer.config.name, %to, "the registration hub refused a hand-off");
                    continue;
                }
                // Never a silent drop: the sender's devices are told, where they are (here, at
                // their home hub, or for a message this hub forwarded, at the sender's hub).
                let queue = hub
                    .peers()
                    .home_for(from.as_str())
                    .or_else(|| hub.directory().queue(from.as_str()))
                    .or_else(|| hub.peers().outbound_for(from));
                if let Some(queue) = queue {
                    let body = serde_json::json!({
                        "notice": "delivery_failed",
                        "id": id.to_string(),
                        "to": to.as_str(),
                        "reason": rejection.reason.to_string(),
                    });
                    // The notice's id comes from the message's: a batch sent again after a
                    // crash tells the sender once.
                    let notice = failure_notice_id(*id);
                    let written = hub.write_notice(queue, notice, to.clone(), from.clone(), body);
                    if let Err(error) = written.await {
                        return format!("telling {from} of a refused message: {error}");
                    }
                }
            }
        }
        if let Err(error) = hub.store().ack(outbound.queue, outbound.link, last, Vec::new()).await {
            return format!("acknowledging the outbound queue: {error}");
        }
    }
}

/// Stores relayed receipts in the queues of the local senders they are for; answers the
/// `relay-ack` once they are durable. A receipt made outside the peer's domains, or for a
/// sender who is not a user of this hub, is refused.
async fn receipts_in(hub: &Hub, peer: &Peer, batch: RelayReceipts) -> Result<RelayAck, String> {
    let mut rejected = Vec::new();
    let mut pending = Vec::new();
    for (index, receipt) in batch.receipts.into_iter().enumerate() {
        let index = u16::try_from(index).unwrap_or(u16::MAX);
        let by_peer = peer.config.forwards
            || receipt
                .by
                .domain()
                .is_some_and(|d| peer.config.domains.iter().any(|p| domain_matches(p, d)))
            || hub.peers().is_home_of(&peer.config.name, &receipt.by);
        // A former home hub handing its user over: the receipts that waited there for them go
        // into the hand-off queue (in a dedupe scope of their own: the mailbox had them once).
        let handing = hub.peers().handoff_by(&peer.config.name);
        if let Some((_, queue)) = handing.filter(|(u, _)| u == receipt.message_from.as_str()) {
            let ttl = hub.config().delivery.default_ttl_secs;
            let mut request = receipt_request(&receipt, ttl);
            request.sender = Bytes::from([&b"handoff:"[..], &request.sender].concat());
            pending.push((index, queue, hub.store().enqueue(queue, request)));
            continue;
        }
        if !by_peer {
            tracing::warn!(peer = %peer.config.name, by = %receipt.by, "a receipt by a user the peer does not serve");
            rejected.push(RelayRejection { index, reason: RejectReason::NOT_ALLOWED });
            continue;
        }
        let home = hub.peers().home_for(receipt.message_from.as_str());
        let local = || hub.directory().resolve(&receipt.message_from);
        let forward = || hub.peers().forward_for(&peer.config.name, &receipt.message_from);
        let queue = match home.map_or_else(local, Ok).or_else(|e| forward().ok_or(e)) {
            Ok(queue) => queue,
            Err(error) => {
                rejected.push(RelayRejection { index, reason: error.code() });
                continue;
            }
        };
        let ttl = hub.config().delivery.default_ttl_secs;
        pending.push((index, queue, hub.store().enqueue(queue, receipt_request(&receipt, ttl))));
    }
    for (index, queue, commit) in pending {
        match commit.await {
            Ok(_) => hub.notifier().wake(queue),
            Err(StoreError::BacklogFull { .. }) => {
                rejected
                    .push(RelayRejection { index, reason: RejectReason::RECIPIENT_BACKLOG_FULL });
            }
            Err(error) => return Err(format!("committing a relayed receipt: {error}")),
        }
    }
    rejected.sort_by_key(|r| r.index);
    Ok(RelayAck { batch: batch.batch, rejected })
}

/// Sends a batch and waits for its `relay-ack`.
async fn send_and_wait(link: &mut Link, frame: Frame, batch: u64) -> Result<RelayAck, String> {
    if let Err(error) = link.writer.send(&frame).await {
        return Err(format!("sending batch {batch}: {error}"));
    }
    match tokio::time::timeout(ACK_TIMEOUT, link.reader.next()).await {
        Ok(Ok(Some(Frame::RelayAck(ack)))) if ack.batch == batch => Ok(ack),
        Ok(Ok(Some(other))) => Err(format!("expected relay-ack {batch}, got {other:?}")),
        Ok(Ok(None)) => Err("the peer ended the stream".into()),
        Ok(Err(error)) => Err(format!("reading relay-ack: {error}")),
        Err(_) => Err(format!("no relay-ack for batch {batch} in time")),
    }
}

/// Whether a group takes a message from a user of the peer hub: its scope decides (`public`:
/// any hub; `provider`: the hubs the peer table marks as the same provider's; `server`: this
/// hub's users only). Other scopes and addresses are the organisation rules' to decide.
fn group_takes_from_peer(state: &OrgState, peer: &Peer, target: &str) -> bool {
    match state.group(target).map(|g| g.scope) {
        Some(Scope::Server) => false,
        Some(Scope::Provider) => peer.config.provider,
        _ => true,
    }
}

/// The id of the notice that a relayed message `id` failed: derived from it, so that telling
/// the sender twice writes one notice.
fn failure_notice_id(id: MessageId) -> MessageId {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"delivery_failed")
        .chain_update(id.0.to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    MessageId(u128::from_be_bytes(bytes))
}

/// Takes a `switchboard-hub/1` connection: only from a peer of the table (by pin), after a
/// matching `hub-hello`; then commits what it relays, answering each batch once it is durable.
pub(crate) async fn accept(
    hub: Arc<Hub>,
    connection: quinn::Connection,
    mut shutdown: watch::Receiver<bool>,
) {
    let peers = hub.peers().clone();
    let remote = connection.remote_address();
    let pin = connection
        .peer_identity()
        .and_then(|identity| {
            identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()
        })
        .and_then(|certs| certs.first().map(|cert| tls::pin(cert.as_ref())));
    let Some(peer) = pin.and_then(|pin| peers.list().iter().find(|p| p.pin == pin).cloned()) else {
        tracing::warn!(%remote, "hub link refused: the certificate is no known peer's");
        connection.close(ErrorCode::UNKNOWN_HUB.0.into(), b"unknown hub");
        return;
    };
    let answered = async {
        let (send, recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi())
            .await
            .map_err(|_| "no stream in time".to_string())?
            .map_err(|e| e.to_string())?;
        let mut reader = FrameReader::new(recv, MAX_LINK_FRAME);
        let mut writer = FrameWriter::new(send, MAX_LINK_FRAME);
        let hello = tokio::time::timeout(HELLO_TIMEOUT, reader.next())
            .await
            .map_err(|_| "no hub-hello in time".to_string())?
            .map_err(|e| e.to_string())?;
        check_hello(&peer.config, hello)?;
        writer.send(&peers.hello()).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((reader, writer))
    };
    let (mut reader, mut writer) = match answered.await {
        Ok(streams) => streams,
        Err(why) => {
            tracing::warn!(peer = %peer.config.name, %remote, %why, "hub link refused");
            connection.close(ErrorCode::UNKNOWN_HUB.0.into(), why.as_bytes());
            return;
        }
    };
    let replaced =
        peer.inbound.lock().unwrap_or_else(|e| e.into_inner()).replace(connection.clone());
    if let Some(old) = replaced {
        // The peer came back (after a crash, say) before this hub saw its old link die.
        old.close(ErrorCode::NORMAL.0.into(), b"replaced by a new link");
    }
    peer.update(|s| s.inbound_up = true);
    // The peer is evidently up again: the link towards it need not wait out its backoff.
    if peer.status.lock().unwrap_or_else(|e| e.into_inner()).state == LinkState::Backoff {
        peer.retry.notify_one();
    }
    tracing::info!(peer = %peer.config.name, %remote, "hub link accepted");
    let why = loop {
        // A batch read is committed and answered before the hub stops; none is read after.
        let next = tokio::select! {
            next = reader.next() => next,
            _ = shutdown.wait_for(|stopping| *stopping) => {
                connection.close(ErrorCode::SHUTTING_DOWN.0.into(), b"the hub is stopping");
                break "this hub is stopping".to_string();
            }
        };
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => break "the peer ended the stream".to_string(),
            Err(crate::net::framed::ReadError::Decode(error)) => {
                let why = format!("a malformed frame: {error}");
                connection.close(error.code().0.into(), why.as_bytes());
                break why;
            }
            Err(error) => break error.to_string(),
        };
        let size = match &frame {
            Frame::Relay(relay) => relay.envelopes.len(),
            Frame::RelayReceipts(receipts) => receipts.receipts.len(),
            Frame::RelayTaken(taken) => taken.taken.len(),
            other => {
                let why = format!("unexpected {} on a hub link", other.frame_type().name());
                connection.close(ErrorCode::UNEXPECTED_FRAME.0.into(), why.as_bytes());
                break why;
            }
        };
        if size > MAX_BATCH as usize {
            let why = format!("a batch of {size}, more than {MAX_BATCH}");
            connection.close(ErrorCode::FLOW_CONTROL.0.into(), why.as_bytes());
            break why;
        }
        let items = match &frame {
            Frame::Relay(relay) => relay.envelopes.len(),
            Frame::RelayReceipts(receipts) => receipts.receipts.len(),
            _ => 0,
        };
        let answered = match frame {
            Frame::Relay(relay) => relay_in(&hub, &peer, relay).await,
            Frame::RelayReceipts(receipts) => receipts_in(&hub, &peer, receipts).await,
            Frame::RelayTaken(taken) => {
                let is_home = |user: &Address| hub.peers().is_home_of(&peer.config.name, user);
                crate::mailbox::taken_in(&hub, &peer.config.name, is_home, taken).await
            }
            _ => unreachable!("only relays pass the check above"),
        };
        match answered {
            Ok(ack) => {
                let metrics = hub.metrics();
                let label = crate::metrics::label("peer", peer.config.name.clone());
                let refused = ack.rejected.len();
                metrics
                    .relayed_in
                    .get_or_create(&label)
                    .inc_by(items.saturating_sub(refused) as u64);
                if refused > 0 {
                    metrics.relay_refusals.get_or_create(&label).inc_by(refused as u64);
                }
                if let Err(error) = writer.send(&Frame::RelayAck(ack)).await {
                    break error.to_string();
                }
            }
            // Not durable: no ack, so the peer sends the batch again on its next link.
            Err(why) => {
                connection.close(ErrorCode::INTERNAL.0.into(), why.as_bytes());
                break why;
            }
        }
    };
    {
        let mut inbound = peer.inbound.lock().unwrap_or_else(|e| e.into_inner());
        if inbound.as_ref().is_some_and(|c| c.stable_id() == connection.stable_id()) {
            *inbound = None;
            peer.update(|s| s.inbound_up = false);
        }
    }
    tracing::info!(peer = %peer.config.name, %why, "inbound hub link closed");
}

/// Commits a relayed batch into its recipients' queues; answers the `relay-ack` once every
/// accepted envelope is durable. The receiving hub decides: a `from` outside the peer's
/// domains, an unknown recipient, or a rule of the recipient's organisation refuses one
/// envelope, never the batch. A store failure fails the batch (it is not acknowledged).
async fn relay_in(hub: &Hub, peer: &Peer, relay: Relay) -> Result<RelayAck, String> {
    let snapshot = hub.org().snapshot();
    let now = system_clock_ms();
    let mut rejected = Vec::new();
    let mut pending = Vec::new();
    // A user's former home hub handing them over ends with a marker: the move completes once
    // everything before it is durable here.
    let mut completes = None;
    // A home hub (this one) learning that its user moved: after the notice is durable here.
    let mut moves = Vec::new();
    for (index, mut envelope) in relay.envelopes.into_iter().enumerate() {
        let index = u16::try_from(index).unwrap_or(u16::MAX);
        let refuse = |reason| RelayRejection { index, reason };
        if envelope.flags.contains(Flags::HANDOFF) {
            match handoff_in(hub, peer, &envelope) {
                HandoffIn::Keep { user, queue } => {
                    if is_handoff_done(&envelope) {
                        completes = Some(user);
                        continue;
                    }
                    let request = EnqueueRequest {
                        id: envelope.id.0,
                        // A scope of its own: what the sender sent is in the mailbox's dedupe.
                        sender: Bytes::from(format!("handoff:{}", envelope.from)),
                        expires_ms: now.saturating_add(u64::from(envelope.ttl_secs.max(1)) * 1000),
                        payload: encode_message(&envelope),
                    };
                    pending.push((index, queue, hub.store().enqueue(queue, request), None, None));
                }
                HandoffIn::Take { queue } => {
                    // The user's own dedupe scope: what also came through the mailbox (the
                    // mailbox released before the old hub's part came) is kept once.
                    envelope.flags = envelope.flags.without(Flags::HANDOFF);
                    let request = EnqueueRequest {
                        id: envelope.id.0,
                        sender: Bytes::copy_from_slice(envelope.from.as_str().as_bytes()),
                        expires_ms: now.saturating_add(u64::from(envelope.ttl_secs.max(1)) * 1000),
                        payload: encode_message(&envelope),
                    };
                    // A message to the user (not a copy of one they sent) was in their mailbox.
                    let logged =
                        (hub.directory().queue(envelope.to.as_str()) == Some(queue)).then(|| {
                            (envelope.to.as_str().to_string(), envelope.from.clone(), envelope.id)
                        });
                    pending.push((index, queue, hub.store().enqueue(queue, request), None, logged));
                }
                HandoffIn::Replayed => {
                    tracing::debug!(peer = %peer.config.name, "a hand-off sent again after it completed; dropped");
                }
                HandoffIn::Refused => {
                    tracing::warn!(peer = %peer.config.name, to = %envelope.to, "a hand-off from a hub that is not handing anyone over to or through this hub; refused");
                    rejected.push(refuse(RejectReason::NOT_ALLOWED));
                }
            }
            continue;
        }
        let from_peer = peer.config.forwards
            || envelope
                .from
                .domain()
                .is_some_and(|d| peer.config.domains.iter().any(|p| domain_matches(p, d)))
            || hub.peers().is_home_of(&peer.config.name, &envelope.from);
        if !from_peer {
            tracing::warn!(peer = %peer.config.name, from = %envelope.from, "relay from a domain the peer does not serve");
            rejected.push(refuse(RejectReason::NOT_ALLOWED));
            continue;
        }
        let target = hub.local_form(&envelope.to);
        // A user whose home hub is another: this hub is their registration hub and forwards.
        let home = hub.peers().home_for(target.as_str());
        let queue = match home.map_or_else(|| hub.directory().resolve(&target), Ok) {
            Ok(queue) => queue,
            Err(error) => match hub.peers().forward_for(&peer.config.name, &target) {
                Some(queue) => queue,
                None => {
                    rejected.push(refuse(error.code()));
                    continue;
                }
            },
        };
        let from = envelope.from.as_str();
        if snapshot.check_send_at(from, from, target.as_str(), false, now).is_err()
            || !group_takes_from_peer(&snapshot, peer, target.as_str())
        {
            rejected.push(refuse(RejectReason::NOT_ALLOWED));
            continue;
        }
        let ttl = hub.config().delivery.effective_ttl_secs(envelope.ttl_secs);
        // A home_changed notice from the user's registration hub moving them away from here
        // (or back): acted on once it is durable.
        let moving = if envelope.flags.contains(Flags::NOTICE) && serves(peer, &envelope.to) {
            move_notice(hub, &envelope).await
        } else {
            None
        };
        let request = EnqueueRequest {
            id: envelope.id.0,
            sender: Bytes::copy_from_slice(from.as_bytes()),
            expires_ms: now.saturating_add(u64::from(ttl) * 1000),
            payload: encode_message(&envelope),
        };
        // A user of this hub whose registration hub is the peer: it keeps the message in the
        // user's mailbox too, until it learns that each device took it here.
        let logged = (home.is_none()
            && target.kind() == switchboard_protocol::AddressKind::Account
            && serves(peer, &target))
        .then(|| (target.as_str().to_string(), envelope.from.clone(), envelope.id));
        pending.push((index, queue, hub.store().enqueue(queue, request), moving, logged));
    }
    for (index, queue, commit, moving, logged) in pending {
        match commit.await {
            Ok(enqueued) => {
                hub.notifier().wake(queue);
                if let Some((user, from, id)) = logged {
                    let peer = &peer.config.name;
                    hub.peers().taken().relayed(peer, &user, queue, enqueued.seq, from, id);
                }
                if let Some(record) = moving {
                    moves.push((record, enqueued.seq));
                }
            }
            Err(StoreError::BacklogFull { .. }) => {
                rejected
                    .push(RelayRejection { index, reason: RejectReason::RECIPIENT_BACKLOG_FULL });
            }
            Err(StoreError::UnknownQueue(_)) => {
                rejected.push(RelayRejection { index, reason: RejectReason::UNKNOWN_RECIPIENT });
            }
            Err(error) => return Err(format!("committing a relayed message: {error}")),
        }
    }
    for (record, seq) in moves {
        if !is_news(hub, &record) {
            continue;
        }
        let user = record.user.clone();
        let done = if record.hub == hub.peers().name {
            moving_back_in(hub, &user, record).await
        } else {
            begin_moving_out(hub, &user, record, seq).await
        };
        done.map_err(|error| format!("recording that {user} moved: {error}"))?;
    }
    if let Some(user) = completes {
        hub.peers()
            .finish_move(hub, &user)
            .await
            .map_err(|error| format!("completing the hand-off of {user}: {error}"))?;
    }
    rejected.sort_by_key(|r| r.index);
    Ok(RelayAck { batch: relay.batch, rejected })
}

/// Whether `envelope` is the marker that ends a hand-off: a notice from and to the user whose
/// body is `handoff_done` (the user's own notices, `home_changed` among them, are handed over
/// with the same flags).
fn is_handoff_done(envelope: &Envelope) -> bool {
    #[derive(Deserialize)]
    struct Body<'a> {
        notice: &'a str,
    }
    envelope.flags.contains(Flags::NOTICE)
        && envelope.from == envelope.to
        && serde_json::from_slice::<Body<'_>>(&envelope.body)
            .is_ok_and(|b| b.notice == "handoff_done")
}

/// What a hub does with a hand-off entry relayed in.
enum HandoffIn {
    /// This hub is the user's registration hub and the peer their former home hub: the entry
    /// goes, still flagged, into the hand-off queue for the new home hub.
    Keep { user: String, queue: QueueId },
    /// This hub is the user's new home hub and the peer their registration hub: the entry goes
    /// into the user's queue here.
    Take { queue: QueueId },
    /// The peer was the user's home hub and sends its part again after the move completed.
    Replayed,
    /// Anything else.
    Refused,
}

fn handoff_in(hub: &Hub, peer: &Peer, envelope: &Envelope) -> HandoffIn {
    if let Some((user, queue)) = hub.peers().handoff_by(&peer.config.name) {
        let marker = is_handoff_done(envelope);
        if !marker || envelope.to.as_str() == user {
            return HandoffIn::Keep { user, queue };
        }
        return HandoffIn::Refused;
    }
    // The moving user is the recipient of what was sent to them, the sender of their copies.
    for address in [&envelope.to, &envelope.from] {
        let here = serves(peer, address) && hub.peers().moved_to(address.as_str()).is_none();
        if let Some(queue) = hub.directory().queue(address.as_str()).filter(|_| here) {
            return HandoffIn::Take { queue };
        }
    }
    let peers = hub.peers();
    if peers.is_home_of(&peer.config.name, &envelope.to)
        || peers.is_home_of(&peer.config.name, &envelope.from)
    {
        return HandoffIn::Replayed;
    }
    HandoffIn::Refused
}

/// Whether `peer` serves the domain of `address` (it is that user's registration hub).
fn serves(peer: &Peer, address: &Address) -> bool {
    address.domain().is_some_and(|d| peer.config.domains.iter().any(|p| domain_matches(p, d)))
}
