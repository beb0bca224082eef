//! From an accepted `send` to the queues that hold it, and the wake-ups that bring it to the
//! devices reading them.
//!
//! [`Hub`] is the state every session shares: the store, the wake-up table and the settings.
//! A message is committed to its recipient's queue, then (when the sender is another user) to
//! the sender's own queue, so that the sender's other devices show the whole conversation.
//! A queue entry holds the encoded `send` or `receipt` frame; [`Stored`] reads it back.

mod notify;

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use switchboard_protocol::{
    Address, AddressKind, Envelope, Flags, Frame, FrameType, HEADER_LEN, Receipt, ReceiptKind,
    RejectReason,
};
use tokio::sync::Notify;

pub use notify::{Notifier, Watch};

/// What a live session can be told.
#[derive(Default)]
pub struct SessionSignals {
    /// End the session (revoked, deactivated).
    pub kick: Notify,
    /// The queues the device reads changed: reload them.
    pub refresh: Notify,
}

use crate::{
    config::Config,
    org::{
        Actor, Change, Command, Event, Mirror, OrgError, OrgService, OrgState, SendRefusal,
        ServiceError, Status,
    },
    store::{
        DeviceId, DeviceRecord, EnqueueRequest, Enqueued, Pending, QueueId, StartAt, Store,
        StoreError, UserRecord, UserStatus, system_clock_ms,
    },
};

/// What a queue entry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A message.
    Message(Envelope),
    /// A receipt for a message.
    Receipt(Receipt),
}

/// Encodes a message as a queue entry.
pub fn encode_message(envelope: &Envelope) -> Bytes {
    encode_frame(&Frame::Send(switchboard_protocol::Send { envelope: envelope.clone() }))
}

/// Encodes a receipt as a queue entry.
pub fn encode_receipt(receipt: &Receipt) -> Bytes {
    encode_frame(&Frame::Receipt(receipt.clone()))
}

fn encode_frame(frame: &Frame) -> Bytes {
    // Fields were checked when the frame was decoded; a stored entry has no size limit of its
    // own beyond the body limit enforced before it gets here.
    frame.to_bytes(u32::MAX).expect("a decoded frame re-encodes")
}

/// Reads a queue entry back.
pub fn decode_entry(payload: &Bytes) -> Result<Stored, StoreError> {
    let corrupt = || StoreError::Corrupt("queue entry is not a stored frame".into());
    if payload.len() < HEADER_LEN {
        return Err(corrupt());
    }
    let ty = FrameType::from_u8(payload[1]).ok_or_else(corrupt)?;
    match Frame::decode_payload(ty, payload.slice(HEADER_LEN..)).map_err(|_| corrupt())? {
        Frame::Send(send) => Ok(Stored::Message(send.envelope)),
        Frame::Receipt(receipt) => Ok(Stored::Receipt(receipt)),
        _ => Err(corrupt()),
    }
}

/// A refusal of a send: the reason on the wire and a detail for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Reject reason.
    pub reason: RejectReason,
    /// Detail.
    pub detail: String,
}

impl Refusal {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        let reason = match &error {
            StoreError::BacklogFull { .. } => RejectReason::RECIPIENT_BACKLOG_FULL,
            StoreError::DiskFull { .. } => RejectReason::DISK_FULL,
            StoreError::UnknownQueue(_) => RejectReason::UNKNOWN_RECIPIENT,
            _ => RejectReason::INTERNAL,
        };
        Self { reason, detail: error.to_string() }
    }
}

/// The sending side of a session, as the fan-out needs it.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The device's account.
    pub account: Address,
    /// The account's queue.
    pub queue: QueueId,
}

/// State shared by every session of the hub.
pub struct Hub {
    /// The store.
    pub store: Arc<Store>,
    /// Wake-ups for sessions waiting on queues.
    pub notifier: Notifier,
    /// Settings.
    pub config: Config,
    /// Organisations, units (lines) and rights.
    pub org: OrgService,
    kicks: std::sync::Mutex<HashMap<DeviceId, Vec<std::sync::Weak<SessionSignals>>>>,
    /// Every user's and line's queue by address, so that resolving a recipient never reads RocksDB on
    /// a network thread. Loaded at start; users are added through [`Hub::add_user`].
    directory: std::sync::RwLock<HashMap<Box<str>, QueueId>>,
    /// This hub, for work it starts in the background.
    me: std::sync::Weak<Hub>,
    /// QUIC connections open now (handshaking or in a session).
    pub connections: std::sync::atomic::AtomicUsize,
}

/// A send whose commit to the recipient's queue is under way.
pub struct Submission {
    /// The recipient's queue.
    pub recipient: QueueId,
    /// The commit to the recipient's queue.
    pub commit: Pending<Enqueued>,
    /// The copy for the sender's own queue, to commit once the first is durable.
    pub copy: Option<(QueueId, EnqueueRequest)>,
}

impl Hub {
    /// A hub over `store`; opens the organisation log. Blocks on RocksDB.
    pub fn new(store: Arc<Store>, config: Config) -> Result<Arc<Self>, StoreError> {
        let org = OrgService::open(store.clone())?;
        Ok(Arc::new_cyclic(|me| Self {
            store,
            notifier: Notifier::default(),
            config,
            org,
            kicks: Default::default(),
            directory: Default::default(),
            me: me.clone(),
            connections: Default::default(),
        }))
    }

    /// Loads every user and line into the directory, creating line queues a crash left
    /// missing, and subscribes the devices of assigned members to their lines (idempotent).
    /// Blocks on RocksDB.
    pub fn load_directory(&self) -> Result<usize, StoreError> {
        let users = self.store.users()?;
        {
            let mut directory = self.directory.write().unwrap_or_else(|e| e.into_inner());
            for user in users.iter().filter(|u| u.status == UserStatus::Active) {
                directory.insert(user.name.as_str().into(), user.queue);
            }
        }
        let snapshot = self.org.snapshot();
        for unit in snapshot.units() {
            let queue = self.store.create_queue(&unit.address).wait()?;
            self.directory
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(unit.address.as_str().into(), queue);
            for member in snapshot.readers_of_line(unit.id) {
                for device in self.store.device_records(Some(&member.user))? {
                    if !device.revoked {
                        self.store.subscribe(device.device, queue, StartAt::Next).wait()?;
                    }
                }
            }
        }
        for group in snapshot.groups() {
            let queue = self.store.create_queue(&group.address).wait()?;
            self.directory
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(group.address.as_str().into(), queue);
            for user in snapshot.group_readers(&group.address) {
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
        self.directory
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.name.as_str().into(), user.queue);
        Ok(user)
    }

    /// Registers devices whose ed25519 public keys the operator already holds, with no
    /// enrolment code: provisioning many devices at once. Each device's user must exist, or is
    /// added first when `add_users`. All the writes are submitted together, so that the shard
    /// writers commit them in a few group commits. Answers one result per device, in order;
    /// one device's error (an unknown user, a name enrolled already) harms none of the others.
    pub async fn register_devices(
        &self,
        devices: &[(Address, [u8; 32])],
        add_users: bool,
    ) -> Vec<Result<DeviceRecord, StoreError>> {
        let mut users: Vec<&str> = devices.iter().map(|(address, _)| account_of(address)).collect();
        users.sort_unstable();
        users.dedup();
        let found = self.users_named(&users).await;
        let mut accounts: HashMap<&str, Result<QueueId, StoreError>> = HashMap::new();
        let mut missing = Vec::new();
        for (user, found) in users.into_iter().zip(found) {
            match found {
                Ok(Some(record)) => {
                    accounts.insert(user, Ok(record.queue));
                }
                Ok(None) if add_users => missing.push(user),
                Ok(None) => {
                    accounts.insert(user, Err(StoreError::UnknownUser(user.into())));
                }
                Err(error) => {
                    accounts.insert(user, Err(error));
                }
            }
        }
        let added = futures_util::future::join_all(missing.iter().map(|u| self.add_user(u))).await;
        // A user another call added meanwhile is taken as found.
        let mut raced = Vec::new();
        for (user, result) in missing.into_iter().zip(added) {
            if matches!(result, Err(StoreError::Exists(_))) {
                raced.push(user);
            }
            accounts.insert(user, result.map(|record| record.queue));
        }
        if !raced.is_empty() {
            let found = self.users_named(&raced).await;
            for (user, found) in raced.into_iter().zip(found) {
                if let Ok(Some(record)) = found {
                    accounts.insert(user, Ok(record.queue));
                }
            }
        }
        let pending: Vec<_> = devices
            .iter()
            .map(|(address, key)| match &accounts[account_of(address)] {
                Ok(queue) => Ok(self.store.register_device(*queue, address.as_str(), *key)),
                Err(error) => Err(error.clone()),
            })
            .collect();
        let mut results = Vec::with_capacity(pending.len());
        for item in pending {
            results.push(match item {
                Ok(pending) => pending.await,
                Err(error) => Err(error),
            });
        }
        let subscribed = results.iter().flatten().map(|record| async move {
            if let Err(error) = self.on_enrolled(record).await {
                tracing::warn!(device = %record.name, %error, "subscribing a registered device");
            }
        });
        futures_util::future::join_all(subscribed).await;
        results
    }

    /// The user record of each name, read on a blocking thread (thousands of point reads stay
    /// off the async threads); one answer per name, in order.
    async fn users_named(&self, names: &[&str]) -> Vec<Result<Option<UserRecord>, StoreError>> {
        let store = self.store.clone();
        let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        tokio::task::spawn_blocking(move || owned.iter().map(|name| store.user(name)).collect())
            .await
            .unwrap_or_else(|e| {
                let error = StoreError::Storage(format!("user lookups failed: {e}"));
                vec![Err(error); names.len()]
            })
    }

    /// Registers a live session of `device` so that [`Hub::kick`] can end it and
    /// [`Hub::refresh`] can tell it to reload the queues it reads.
    pub fn register_session(&self, device: DeviceId) -> Arc<SessionSignals> {
        let signals = Arc::new(SessionSignals::default());
        let mut kicks = self.kicks.lock().unwrap_or_else(|e| e.into_inner());
        let list = kicks.entry(device).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&signals));
        signals
    }

    fn signals(&self, device: DeviceId) -> Vec<Arc<SessionSignals>> {
        let kicks = self.kicks.lock().unwrap_or_else(|e| e.into_inner());
        kicks.get(&device).into_iter().flatten().filter_map(|w| w.upgrade()).collect()
    }

    /// Ends every live session of `device` (after a revocation or deactivation).
    pub fn kick(&self, device: DeviceId) {
        for signals in self.signals(device) {
            signals.kick.notify_one();
        }
    }

    /// Tells every live session of `device` that the queues it reads changed.
    pub fn refresh(&self, device: DeviceId) {
        for signals in self.signals(device) {
            signals.refresh.notify_one();
        }
    }

    /// Runs an organisation command by `actor`, then does what the change means for queues
    /// and sessions: a new unit gets its line queue; an assigned member's devices read the
    /// line; a deactivated member's sessions are closed.
    pub async fn org_execute(
        &self,
        actor: &Actor,
        command: Command,
    ) -> Result<Event, ServiceError> {
        if let Command::CreateUnit { line, .. } | Command::CreateOrg { line, .. } = &command {
            let taken = self
                .directory
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(line.as_str());
            if taken {
                return Err(OrgError::Taken(line.clone()).into());
            }
        }
        let before = self.org.snapshot();
        let event = self.org.execute(actor, command).await?;
        if let Change::Applied(
            Command::CreateGroup { .. }
            | Command::AddGroupMember { .. }
            | Command::RemoveGroupMember { .. }
            | Command::AddSubgroup { .. }
            | Command::DeleteGroup { .. }
            | Command::DeleteMember { .. },
        ) = &event.change
        {
            self.sync_groups(&before, &self.org.snapshot()).await?;
        }
        match &event.change {
            Change::OrgCreated { root, org } => {
                let queue = self.add_line(&root.address).await?;
                // The owner belongs to the root unit.
                self.subscribe_user(&org.owner, queue).await?;
            }
            Change::UnitCreated(unit) => {
                self.add_line(&unit.address).await?;
            }
            Change::Applied(Command::Assign { org, user, .. }) => {
                let snapshot = self.org.snapshot();
                for unit in snapshot.lines_of(*org, user) {
                    let queue = self.add_line(&unit.address).await?;
                    self.subscribe_user(user, queue).await?;
                }
            }
            Change::Applied(Command::SetIncludeSubUnits { unit, include, .. }) => {
                let snapshot = self.org.snapshot();
                if let Some(line) = snapshot.unit(*unit) {
                    let queue = self.add_line(&line.address).await?;
                    if *include {
                        for member in snapshot.readers_of_line(*unit) {
                            self.subscribe_user(&member.user, queue).await?;
                        }
                    } else {
                        // Members below the unit stop reading its line; its own members stay.
                        let below: Vec<String> = snapshot
                            .units()
                            .filter(|u| u.id != *unit && snapshot.is_within(u.id, *unit))
                            .flat_map(|u| snapshot.members_of(u.id).map(|m| m.user.clone()))
                            .collect();
                        for user in below {
                            self.unsubscribe_user(&user, queue).await?;
                        }
                    }
                }
            }
            Change::Applied(Command::DeleteMember { user, reassign_to: None, .. }) => {
                // Without an heir, the member's devices go with them: revoked, reading nothing.
                let devices = self.devices_of(user).await?;
                for device in devices.iter().filter(|d| !d.revoked) {
                    self.store.revoke_device(&device.name).await?;
                    self.kick(device.device);
                }
                // And their personal queue: closed, its waiting messages deleted, the address
                // no longer a recipient.
                match self.store.close_account(user).await {
                    Ok(_) | Err(StoreError::UnknownUser(_)) => {}
                    Err(error) => return Err(error.into()),
                }
                self.directory.write().unwrap_or_else(|e| e.into_inner()).remove(user.as_str());
            }
            Change::Applied(Command::DeleteMember { reassign_to: Some(heir), org, .. }) => {
                // The heir may have taken over a unit: their devices read its lines.
                let snapshot = self.org.snapshot();
                for unit in snapshot.lines_of(*org, heir) {
                    let queue = self.add_line(&unit.address).await?;
                    self.subscribe_user(heir, queue).await?;
                }
            }
            Change::Applied(Command::Deactivate { user, .. }) => {
                let devices = self.devices_of(user).await?;
                for device in devices {
                    self.kick(device.device);
                }
            }
            _ => {}
        }
        Ok(event)
    }

    /// Creates a line's queue (idempotent) and puts it in the directory.
    async fn add_line(&self, address: &str) -> Result<QueueId, StoreError> {
        let queue = self.store.create_queue(address).await?;
        self.directory.write().unwrap_or_else(|e| e.into_inner()).insert(address.into(), queue);
        Ok(queue)
    }

    /// Every device record of `user`, read off the network threads.
    async fn devices_of(&self, user: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        let store = self.store.clone();
        let name = user.to_string();
        tokio::task::spawn_blocking(move || store.device_records(Some(&name)))
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?
    }

    /// Makes every device of `user` read `queue` from now on, and tells their live sessions.
    async fn subscribe_user(&self, user: &str, queue: QueueId) -> Result<(), StoreError> {
        let devices = self.devices_of(user).await?;
        for device in devices.iter().filter(|d| !d.revoked) {
            self.store.subscribe(device.device, queue, StartAt::Next).await?;
            self.refresh(device.device);
        }
        Ok(())
    }

    /// Makes group queues' readers follow a change: who reads a group now and did not
    /// before is subscribed (from the next message), who no longer does is unsubscribed.
    async fn sync_groups(&self, before: &OrgState, after: &OrgState) -> Result<(), StoreError> {
        let mut addresses: Vec<String> = before.groups().map(|g| g.address.clone()).collect();
        addresses.extend(after.groups().map(|g| g.address.clone()));
        addresses.sort();
        addresses.dedup();
        for address in addresses {
            let old = before.group_readers(&address);
            let new = after.group_readers(&address);
            if old == new && after.group(&address).is_some() {
                continue;
            }
            let queue = self.add_line(&address).await?;
            for user in new.difference(&old) {
                self.subscribe_user(user, queue).await?;
            }
            for user in old.difference(&new) {
                self.unsubscribe_user(user, queue).await?;
            }
        }
        Ok(())
    }

    /// Stops every device of `user` reading `queue`.
    async fn unsubscribe_user(&self, user: &str, queue: QueueId) -> Result<(), StoreError> {
        let devices = self.devices_of(user).await?;
        for device in devices.iter().filter(|d| !d.revoked) {
            self.store.unsubscribe(device.device, queue).await?;
            self.refresh(device.device);
        }
        Ok(())
    }

    /// After a device enrolled: it reads the lines of the units its user belongs to.
    pub async fn on_enrolled(&self, device: &DeviceRecord) -> Result<(), StoreError> {
        let user = device.name.split('/').next().unwrap_or_default().to_string();
        let snapshot = self.org.snapshot();
        let mut lines: Vec<String> = snapshot
            .memberships(&user)
            .flat_map(|m| snapshot.lines_of(m.org, &user))
            .map(|u| u.address.clone())
            .collect();
        lines.extend(
            snapshot
                .groups()
                .filter(|g| snapshot.group_readers(&g.address).contains(&user))
                .map(|g| g.address.clone()),
        );
        for line in lines {
            let queue = self.store.create_queue(&line).await?;
            self.store.subscribe(device.device, queue, StartAt::Next).await?;
        }
        Ok(())
    }

    /// Whether `user` is deactivated in any organisation (then it may not connect).
    pub fn is_deactivated(&self, user: &str) -> bool {
        self.org.snapshot().memberships(user).any(|m| m.status == Status::Deactivated)
    }

    /// The queue of a local recipient address.
    pub fn resolve(&self, to: &Address) -> Result<QueueId, Refusal> {
        match to.kind() {
            AddressKind::Account | AddressKind::Group => {}
            AddressKind::Device => {
                return Err(Refusal::new(
                    RejectReason::INVALID_ENVELOPE,
                    "send to the account, not to one of its devices",
                ));
            }
            _ => {
                return Err(Refusal::new(
                    RejectReason::UNKNOWN_RECIPIENT,
                    format!(
                        "{to}: organisation addresses (@domain) are not served by this hub yet"
                    ),
                ));
            }
        }
        let directory = self.directory.read().unwrap_or_else(|e| e.into_inner());
        match directory.get(to.as_str()) {
            Some(&queue) => Ok(queue),
            None => {
                Err(Refusal::new(RejectReason::UNKNOWN_RECIPIENT, format!("no user or line {to}")))
            }
        }
    }

    /// Starts committing `envelope` from `sender` to its recipient's queue. The commit is
    /// submitted before this returns, so sends submitted in order are appended in order. Once
    /// it is durable, the caller commits [`Submission::copy`] (the sender's own queue, for the
    /// sender's other devices) with [`Hub::commit_copy`], and answers `accepted` after that.
    pub fn submit(&self, sender: &Sender, mut envelope: Envelope) -> Result<Submission, Refusal> {
        let snapshot = self.org.snapshot();
        let as_line = envelope.flags.contains(Flags::AS_LINE);
        let mirror = match snapshot.check_send(
            sender.account.as_str(),
            envelope.from.as_str(),
            envelope.to.as_str(),
            as_line,
        ) {
            Ok(Mirror::Sender) => Some(sender.queue),
            Ok(Mirror::Line(line)) => {
                let directory = self.directory.read().unwrap_or_else(|e| e.into_inner());
                let queue = directory.get(line).copied().ok_or_else(|| {
                    Refusal::new(RejectReason::INTERNAL, format!("the line {line} has no queue"))
                })?;
                Some(queue)
            }
            Ok(Mirror::None) => None,
            Err(SendRefusal::Invalid(detail)) => {
                return Err(Refusal::new(RejectReason::INVALID_ENVELOPE, detail));
            }
            Err(SendRefusal::NotAllowed(detail)) => {
                return Err(Refusal::new(RejectReason::NOT_ALLOWED, detail));
            }
            Err(SendRefusal::KeyRefused { key, why }) => {
                self.log_key_refusal(key, sender.account.as_str(), &why);
                return Err(Refusal::new(
                    RejectReason::NOT_ALLOWED,
                    format!("rule: a key opens a line only while it works: {why}"),
                ));
            }
        };
        if envelope.body.len() > self.config.limits.max_body_bytes {
            return Err(Refusal::new(
                RejectReason::TOO_LARGE,
                format!(
                    "body of {} bytes; this hub takes at most {}",
                    envelope.body.len(),
                    self.config.limits.max_body_bytes
                ),
            ));
        }
        let recipient = self.resolve(&envelope.to)?;
        let delivery = &self.config.delivery;
        let ttl = match envelope.ttl_secs {
            0 => delivery.default_ttl_secs,
            ttl => ttl.min(delivery.max_ttl_secs),
        };
        envelope.ttl_secs = ttl;
        let request = EnqueueRequest {
            id: envelope.id.0,
            sender: Bytes::copy_from_slice(envelope.from.as_str().as_bytes()),
            expires_ms: system_clock_ms().saturating_add(u64::from(ttl) * 1000),
            payload: encode_message(&envelope),
        };
        let copy = mirror.filter(|&m| m != recipient).map(|m| (m, request.clone()));
        Ok(Submission { recipient, commit: self.store.enqueue(recipient, request), copy })
    }

    /// Records a refused key use in the event log, off the send path.
    fn log_key_refusal(&self, key: u64, by: &str, why: &str) {
        let Some(hub) = self.me.upgrade() else { return };
        let Some(org) = self.org.snapshot().key(key).map(|k| k.org) else { return };
        let change = Change::KeyUseRefused { key, org, by: by.to_string(), why: why.to_string() };
        let actor = Actor::User(by.to_string());
        tokio::spawn(async move {
            if let Err(error) = hub.org.record(actor, change).await {
                tracing::warn!(%error, key, "a refused key use could not be logged");
            }
        });
    }

    /// Commits the sender's copy of a message whose first commit is durable. A retry of a
    /// message whose copy failed before writes the copy then; dedupe drops a second one.
    pub fn commit_copy(&self, copy: (QueueId, EnqueueRequest)) -> Pending<Enqueued> {
        self.store.enqueue(copy.0, copy.1)
    }

    /// Records a receipt for the message `receipt.id` from `receipt.message_from`, into that
    /// sender's queue when it is a user of this hub. `dedupe` names who made it, so that the
    /// same receipt made twice (two devices of one recipient) is stored once.
    /// With `colleagues` (a line), the receipt is also stored in the line's queue, so the other
    /// members see that someone has read or answered (the shared receipt).
    pub async fn store_receipt(
        &self,
        receipt: Receipt,
        colleagues: Option<Address>,
    ) -> Result<(), Refusal> {
        let queue = self.resolve(&receipt.message_from)?;
        let kind = match receipt.kind {
            ReceiptKind::Delivered => "delivered",
            ReceiptKind::Read => "read",
            ReceiptKind::Answered => "answered",
        };
        let request = EnqueueRequest {
            id: receipt.id.0,
            sender: Bytes::from(format!("receipt:{kind}:{}", receipt.by)),
            expires_ms: system_clock_ms()
                .saturating_add(u64::from(self.config.delivery.default_ttl_secs) * 1000),
            payload: encode_receipt(&receipt),
        };
        let line = match &colleagues {
            Some(line) => Some(self.resolve(line)?),
            None => None,
        };
        let copy =
            line.filter(|&l| l != queue).map(|l| (l, self.store.enqueue(l, request.clone())));
        self.store.enqueue(queue, request).await?;
        self.notifier.wake(queue);
        if let Some((line, pending)) = copy {
            pending.await?;
            self.notifier.wake(line);
        }
        Ok(())
    }
}

/// The account (`user@domain`) part of a device address (`user@domain/device`).
fn account_of(device: &Address) -> &str {
    device.as_str().split_once('/').map_or(device.as_str(), |(account, _)| account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::MessageId;

    #[test]
    fn entries_round_trip_and_other_bytes_are_corrupt() {
        let envelope = Envelope {
            id: MessageId(7),
            from: Address::parse("alice@example.org").unwrap(),
            to: Address::parse("bob@example.org").unwrap(),
            created_ms: 1,
            ttl_secs: 2,
            flags: Flags::WANT_RECEIPTS,
            body: Bytes::from_static(b"hi"),
        };
        let stored = decode_entry(&encode_message(&envelope)).unwrap();
        assert_eq!(stored, Stored::Message(envelope));
        let receipt = Receipt {
            id: MessageId(7),
            kind: ReceiptKind::Read,
            message_from: Address::parse("alice@example.org").unwrap(),
            by: Address::parse("bob@example.org").unwrap(),
            at_ms: 3,
        };
        assert_eq!(decode_entry(&encode_receipt(&receipt)).unwrap(), Stored::Receipt(receipt));
        assert!(decode_entry(&Bytes::from_static(b"\x01\x10\0\0\0\x01x")).is_err());
        assert!(decode_entry(&Bytes::from_static(b"ab")).is_err());
    }
}
