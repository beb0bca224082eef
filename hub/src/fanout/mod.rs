//! From a decoded `send` to the queues that hold it, and from those queues to the devices
//! reading them.
//!
//! [`Hub`] is the state every session shares: the store, the organisation service, the
//! [`Directory`] of local recipients, the wake-up table ([`Notifier`]) and the live sessions
//! ([`SessionRegistry`]). Each path has one owner:
//!
//! - [`send`]: rights, resolution, the commits (recipient, then the sender's copy) and their
//!   order, wake-ups; a session hands each `send` to its [`Sends`] and gets one answer.
//! - [`delivery`]: reads, entry decoding, the receipt policy and rule, acks.
//! - `changes`: what an organisation change means for queues and sessions.
//! - [`entry`]: what a queue entry holds.

mod changes;
pub mod delivery;
mod directory;
pub mod entry;
mod notify;
pub mod send;
mod sessions;

use std::sync::{
    Arc, Weak,
    atomic::{AtomicUsize, Ordering},
};

use switchboard_protocol::Address;

pub use delivery::{AckError, Delivery, ReadRequest, ReceiptError, receipt_request};
pub use directory::Directory;
pub use entry::{Stored, decode_entry, encode_message, encode_receipt};
pub use notify::{Notifier, Watch};
pub use send::{Account, SendError, Sends};
pub use sessions::{Raised, SessionRegistry, SessionSignals};

use crate::{
    config::Config,
    org::{OrgService, Status},
    store::{DeviceRecord, QueueId, StartAt, Store, StoreError, UserRecord, UserStatus},
};

/// State shared by every session of the hub.
pub struct Hub {
    store: Arc<Store>,
    /// The settings; a reload swaps in new ones (see [`Hub::reload`]).
    config: arc_swap::ArcSwap<Config>,
    org: OrgService,
    notifier: Notifier,
    directory: Directory,
    sessions: SessionRegistry,
    /// QUIC connections open now (handshaking or in a session).
    connections: AtomicUsize,
    /// Handshakes in progress.
    handshakes: AtomicUsize,
    handshakes_refused: std::sync::atomic::AtomicU64,
    /// Limits per source address and on failed enrolments.
    sources: Arc<crate::net::sources::Sources>,
    /// This hub, for work it starts in the background.
    me: Weak<Hub>,
    /// The peer hubs and the state of their links.
    peers: Arc<crate::links::Peers>,
    /// Key uses logged since the hub started: (key, sender).
    key_uses: std::sync::Mutex<std::collections::HashSet<(u64, String)>>,
    /// The counters the metrics listener shows.
    metrics: Arc<crate::metrics::HubMetrics>,
    /// How the process running the hub takes part in a reload.
    reload_hooks: crate::reload::Hooks,
}

/// A user as the handshake needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login {
    /// The user's queue.
    pub queue: QueueId,
    /// Whether the user is deactivated (in the store, or in any organisation).
    pub deactivated: bool,
}

impl Hub {
    /// A hub over `store`; opens the organisation log. Blocks on RocksDB.
    pub fn new(store: Arc<Store>, config: Config) -> Result<Arc<Self>, StoreError> {
        let org = OrgService::open(store.clone())?;
        let peers = Arc::new(crate::links::Peers::new(&config));
        let sources = Arc::new(crate::net::sources::Sources::new(config.limits.clone()));
        Ok(Arc::new_cyclic(|me| Self {
            peers,
            store,
            config: arc_swap::ArcSwap::from_pointee(config),
            org,
            notifier: Notifier::default(),
            directory: Directory::default(),
            sessions: SessionRegistry::default(),
            connections: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            handshakes_refused: std::sync::atomic::AtomicU64::new(0),
            sources,
            me: me.clone(),
            key_uses: std::sync::Mutex::default(),
            metrics: Arc::default(),
            reload_hooks: Default::default(),
        }))
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The counters the metrics listener shows.
    pub fn metrics(&self) -> &Arc<crate::metrics::HubMetrics> {
        &self.metrics
    }

    pub(crate) fn reload_hooks(&self) -> &crate::reload::Hooks {
        &self.reload_hooks
    }

    /// Puts `config` in force (a reload, which checked what may change).
    pub(crate) fn swap_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }

    /// The settings as they are now (a reload may change some).
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Organisations, units (lines) and rights.
    pub fn org(&self) -> &OrgService {
        &self.org
    }

    /// Wake-ups for sessions waiting on queues.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// The local recipients.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The live sessions, to end or refresh them.
    pub fn sessions(&self) -> &SessionRegistry {
        &self.sessions
    }

    /// The limits per source address and on failed enrolments.
    pub fn sources(&self) -> &Arc<crate::net::sources::Sources> {
        &self.sources
    }

    /// How many QUIC connections are open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// How many handshakes are in progress now.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// New connections refused since the hub started because `quic.max_handshakes` were in
    /// progress.
    pub fn handshakes_refused(&self) -> u64 {
        self.handshakes_refused.load(Ordering::Relaxed)
    }

    /// Takes a handshake slot if fewer than `max` are in progress: the slot is held until the
    /// guard is dropped. Counts a refusal otherwise.
    pub fn start_handshake(self: &Arc<Self>, max: usize) -> Option<HandshakeSlot> {
        let taken = self
            .handshakes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match taken {
            Ok(_) => Some(HandshakeSlot(self.clone())),
            Err(_) => {
                self.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Counts a connection for as long as the returned guard lives.
    pub fn count_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Loads every user and line into the directory, creating line queues a crash left
    /// missing, and subscribes the devices of every reader of a line or group to it
    /// (idempotent). Blocks on RocksDB.
    pub fn load_directory(&self) -> Result<usize, StoreError> {
        let users = self.store.users()?;
        for user in users.iter().filter(|u| u.status == UserStatus::Active) {
            self.directory.insert(&user.name, user.queue);
        }
        for (line, readers) in self.org.snapshot().readers_by_line() {
            let queue = self.store.create_queue(&line).wait()?;
            self.directory.insert(&line, queue);
            for user in readers {
                for device in self.store.device_records(Some(&user))? {
                    if !device.revoked {
                        self.store.subscribe(device.device, queue, StartAt::Next).wait()?;
                    }
                }
            }
        }
        Ok(users.len())
    }

    /// Adds a user durably, then to the directory.
    pub async fn add_user(&self, name: &str) -> Result<UserRecord, StoreError> {
        if self.org.snapshot().line(name).is_some() {
            return Err(StoreError::Exists(format!("{name} (a line)")));
        }
        let user = self.store.create_user(name).await?;
        self.directory.insert(&user.name, user.queue);
        Ok(user)
    }

    /// The user `account` as a handshake needs it, or `None` if there is no such user.
    pub async fn login(&self, account: &Address) -> Result<Option<Login>, StoreError> {
        let name = account.as_str().to_string();
        let Some(user) = self.store.blocking(move |store| store.user(&name)).await? else {
            return Ok(None);
        };
        let deactivated = user.status == UserStatus::Deactivated || self.is_deactivated(&user.name);
        Ok(Some(Login { queue: user.queue, deactivated }))
    }

    /// After a device enrolled: it reads the lines and groups its user reads.
    pub async fn on_enrolled(&self, device: &DeviceRecord) -> Result<(), StoreError> {
        let user = device.name.split('/').next().unwrap_or_default();
        for line in self.org.snapshot().lines_read_by(user) {
            let queue = self.store.create_queue(&line).await?;
            self.store.subscribe(device.device, queue, StartAt::Next).await?;
        }
        // On the registration hub of a user whose home hub is another: the mailbox.
        self.mailbox_reader(user, device).await
    }

    /// The peer hubs and their links.
    pub fn peers(&self) -> &Arc<crate::links::Peers> {
        &self.peers
    }

    /// Whether this is the first use of `key` by `by` since the hub started.
    pub(crate) fn first_key_use(&self, key: u64, by: &str) -> bool {
        let mut uses = self.key_uses.lock().unwrap_or_else(|e| e.into_inner());
        uses.insert((key, by.to_string()))
    }

    /// Whether `user` is deactivated in any organisation (then it may not connect).
    pub fn is_deactivated(&self, user: &str) -> bool {
        self.org.snapshot().memberships(user).any(|m| m.status == Status::Deactivated)
    }
}

/// Keeps a connection counted in [`Hub::connections`] until dropped.
pub struct ConnectionGuard(Arc<Hub>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A handshake in progress, counted against `quic.max_handshakes` until dropped.
pub struct HandshakeSlot(Arc<Hub>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}
