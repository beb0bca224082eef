//! The send path: everything between a decoded `send` frame and its `accepted` or `rejected`.
//!
//! In order: the organisation's rules ([`crate::org::OrgState::check_send`]) say whether the
//! sender may address the recipient and where the sender's side is mirrored; the body limit
//! and the time to live are applied; the [`Directory`](super::Directory) resolves the
//! recipient to its queue; the message is committed to that queue and to the mirror (the
//! sender's own queue, or the line it was sent as), so that the sender's other devices show the
//! conversation. When both queues are of one shard, both appends are one write with one fsync
//! ([`crate::store::Store::enqueue_with_copy`]; the copy only if the first append is taken);
//! else the copy is committed once the first commit is durable. Either way a refused message
//! never shows on the sender's other devices. Each commit wakes the sessions reading its
//! queue. `accepted` follows both commits.
//!
//! A session owns one [`Sends`]: first commits complete in the order the sends arrived, so
//! the copies are appended in that order too, whichever shards the recipients live on (a copy
//! is written with its first commit only while no earlier send's copy is still to be
//! written). Both commits are deduplicated by (from, id): a retry after a lost answer or a
//! crash stores nothing twice, and a retry whose first attempt died between the commits writes
//! the copy.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::{
    StreamExt,
    stream::{FuturesOrdered, FuturesUnordered},
};
use switchboard_protocol::{Address, AddressKind, Envelope, Flags, MessageId, RejectReason};

use crate::{
    fanout::{Hub, entry::encode_message},
    org::{Actor, Change, Mirror, SendRefusal},
    store::{EnqueueRequest, Enqueued, QueueId, StoreError, system_clock_ms},
};

/// Why a send (or a receipt) was not accepted; [`SendError::code`] is the reason on the wire,
/// the text the detail for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The envelope is inconsistent (a device address as recipient, a forged `from`).
    #[error("{0}")]
    Invalid(String),
    /// A rule refused it; the text names the rule.
    #[error("{0}")]
    NotAllowed(String),
    /// The body is over the hub's limit.
    #[error("body of {size} bytes; this hub takes at most {limit}")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Nobody by that address is served here.
    #[error("{0}")]
    UnknownRecipient(String),
    /// The session sent more than its rate allows.
    #[error("more than {0} sends per second")]
    RateLimited(u32),
    /// A line known to the rules has no queue (a crash between its creation and its queue's;
    /// repaired at the next start).
    #[error("the line {0} has no queue")]
    LineWithoutQueue(String),
    /// The store refused or failed the commit.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SendError {
    /// The reject reason on the wire.
    pub fn code(&self) -> RejectReason {
        match self {
            Self::Invalid(_) => RejectReason::INVALID_ENVELOPE,
            Self::NotAllowed(_) => RejectReason::NOT_ALLOWED,
            Self::TooLarge { .. } => RejectReason::TOO_LARGE,
            Self::UnknownRecipient(_) | Self::Store(StoreError::UnknownQueue(_)) => {
                RejectReason::UNKNOWN_RECIPIENT
            }
            Self::RateLimited(_) => RejectReason::RATE_LIMITED,
            Self::Store(StoreError::BacklogFull { .. }) => RejectReason::RECIPIENT_BACKLOG_FULL,
            Self::Store(StoreError::DiskFull { .. } | StoreError::NoSpace { .. }) => {
                RejectReason::DISK_FULL
            }
            Self::LineWithoutQueue(_) | Self::Store(_) => RejectReason::INTERNAL,
        }
    }
}

/// A device's user as the send and delivery paths need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user's address.
    pub address: Address,
    /// The user's queue.
    pub queue: QueueId,
}

/// The answer to one send: its id, and whether it was accepted.
pub type Answer = (MessageId, Result<(), SendError>);

type FirstCommit = Pin<Box<dyn Future<Output = FirstDone> + Send>>;

/// A first commit's outcome: the message's id, its commit, its plan, and for a copy
/// committed in the same write, the copy's queue and commit.
type FirstDone = (
    MessageId,
    Result<Enqueued, StoreError>,
    Plan,
    Option<(QueueId, Result<Enqueued, StoreError>)>,
);
type Copy = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// Where a send goes once its rules passed.
struct Plan {
    /// The recipient's queue.
    recipient: QueueId,
    /// The mirror's queue and its request, committed after the first.
    copy: Option<(QueueId, EnqueueRequest)>,
}

/// One session's sends in flight, answered as their commits complete.
pub struct Sends {
    hub: Arc<Hub>,
    sender: Account,
    first: FuturesOrdered<FirstCommit>,
    copies: FuturesUnordered<Copy>,
    /// Sends in flight whose copy is committed after their first commit (another shard):
    /// while there are any, no copy is written with its first commit, so the copies keep the
    /// order of the sends.
    copies_after: usize,
}

impl Sends {
    /// The send path for the sessions of `sender`.
    pub fn new(hub: Arc<Hub>, sender: Account) -> Self {
        Self {
            hub,
            sender,
            first: FuturesOrdered::new(),
            copies: FuturesUnordered::new(),
            copies_after: 0,
        }
    }

    /// Starts `envelope` on its way, or refuses it now. The first commit is submitted before
    /// this returns, so sends submitted in order are appended in order.
    pub fn submit(&mut self, envelope: Envelope) -> Result<(), SendError> {
        let id = envelope.id;
        let (mut plan, request) = self.hub.plan(&self.sender, envelope)?;
        let store = &self.hub.store;
        match plan.copy.take() {
            // The recipient's queue and the copy in one write: one fsync for the send.
            Some(copy) if self.copies_after == 0 && store.same_shard(plan.recipient, copy.0) => {
                let copy_queue = copy.0;
                let commit = store.enqueue_with_copy(plan.recipient, request, copy);
                self.first.push_back(Box::pin(async move {
                    match commit.await {
                        Ok((first, copied)) => (id, Ok(first), plan, Some((copy_queue, copied))),
                        Err(error) => (id, Err(error), plan, None),
                    }
                }));
            }
            copy => {
                plan.copy = copy;
                if plan.copy.is_some() {
                    self.copies_after += 1;
                }
                let commit = store.enqueue(plan.recipient, request);
                self.first.push_back(Box::pin(async move { (id, commit.await, plan, None) }));
            }
        }
        Ok(())
    }

    /// Whether no send is waiting for its answer.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.copies.is_empty()
    }

    /// The next answer; `None` once every send is answered. Cancel-safe.
    pub async fn next(&mut self) -> Option<Answer> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Answer>> {
        while let Poll::Ready(Some((id, result, plan, copied))) = self.first.poll_next_unpin(cx) {
            if plan.copy.is_some() {
                self.copies_after -= 1;
            }
            match result {
                Ok(_) => {
                    self.hub.notifier.wake(plan.recipient);
                    if let Some((queue, copied)) = copied {
                        match copied {
                            Ok(_) => self.hub.notifier.wake(queue),
                            Err(error) => tracing::warn!(
                                %error, "a sent message was not copied to the sender's own queue"
                            ),
                        }
                        return Poll::Ready(Some((id, Ok(()))));
                    }
                    self.copies.push(self.copy(id, plan.copy));
                }
                Err(error) => return Poll::Ready(Some((id, Err(error.into())))),
            }
        }
        match self.copies.poll_next_unpin(cx) {
            Poll::Ready(None) if !self.first.is_empty() => Poll::Pending,
            other => other,
        }
    }

    /// Commits the mirror of a message whose first commit is durable, then answers. A retry of
    /// a message whose copy failed before writes the copy then; dedupe drops a second one.
    fn copy(&self, id: MessageId, copy: Option<(QueueId, EnqueueRequest)>) -> Copy {
        let hub = self.hub.clone();
        let pending = copy.map(|(queue, request)| (queue, hub.store.enqueue(queue, request)));
        Box::pin(async move {
            if let Some((queue, pending)) = pending {
                match pending.await {
                    Ok(_) => hub.notifier.wake(queue),
                    // The message is durable for its recipient; the copy only mirrors it to
                    // the sender's other devices.
                    Err(error) => tracing::warn!(
                        %error, "a sent message was not copied to the sender's own queue"
                    ),
                }
            }
            (id, Ok(()))
        })
    }
}

impl Hub {
    /// Checks a send against the rules and limits and resolves where it goes.
    fn plan(
        &self,
        sender: &Account,
        envelope: Envelope,
    ) -> Result<(Plan, EnqueueRequest), SendError> {
        if envelope.flags.contains(Flags::NOTICE) || envelope.flags.contains(Flags::HANDOFF) {
            return Err(SendError::NotAllowed("rule: only a hub writes notices".into()));
        }
        if let Some(home) = self.peers.moved_to(sender.address.as_str()) {
            return Err(SendError::NotAllowed(format!(
                "rule: {} moved to the home hub {home}; connect there",
                sender.address
            )));
        }
        // A user whose home hub is another sends there: the copy for their other devices is
        // made there. This hub (their registration hub) only lets them read their mailbox.
        if let Some(home) = self.peers.home_hub(sender.address.as_str()) {
            return Err(SendError::NotAllowed(format!(
                "rule: the home hub of {} is {home}; send there",
                sender.address
            )));
        }
        // The rules and the directory see the local form: `@domain` is the main line of the
        // organisation holding the domain, `#name@<a domain served here>` is `#name`.
        let target = self.local_form(&envelope.to);
        let mirror = self.mirror_of(sender, &envelope, &target)?;
        let limit = self.config().limits.max_body_bytes;
        if envelope.body.len() > limit {
            return Err(SendError::TooLarge { size: envelope.body.len(), limit });
        }
        // A recipient of another hub goes to that hub's outbound queue; its hub decides.
        // A user whose home hub is another (this hub their registration hub) is there.
        let recipient = match self.peers.home_for(target.as_str()) {
            Some(queue) => queue,
            None => match self.directory.resolve(&target) {
                Ok(queue) => queue,
                Err(refusal) => match self.peers.outbound_for(&envelope.to) {
                    Some(queue) => queue,
                    None => return Err(refusal),
                },
            },
        };
        // The envelope is stored as sent; its ttl decides only how long it is kept.
        let ttl = self.config().delivery.effective_ttl_secs(envelope.ttl_secs);
        let request = EnqueueRequest {
            id: envelope.id.0,
            sender: Bytes::copy_from_slice(envelope.from.as_str().as_bytes()),
            expires_ms: system_clock_ms().saturating_add(u64::from(ttl) * 1000),
            payload: encode_message(&envelope),
        };
        let copy = mirror.filter(|&m| m != recipient).map(|m| (m, request.clone()));
        Ok((Plan { recipient, copy }, request))
    }

    /// The organisation's verdict on a send: refused, or where its sender's side is mirrored.
    fn mirror_of(
        &self,
        sender: &Account,
        envelope: &Envelope,
        target: &Address,
    ) -> Result<Option<QueueId>, SendError> {
        let snapshot = self.org.snapshot();
        let verdict = snapshot.check_send(
            sender.address.as_str(),
            envelope.from.as_str(),
            target.as_str(),
            envelope.flags.contains(Flags::AS_LINE),
        );
        if verdict.is_ok() && snapshot.has_keys() {
            let now = system_clock_ms();
            if let Some(key) = snapshot.key_opening(sender.address.as_str(), target.as_str(), now) {
                self.log_key_use(key, sender.address.as_str());
            }
        }
        match verdict {
            Ok(Mirror::Sender) => Ok(Some(sender.queue)),
            Ok(Mirror::Line(line)) => self
                .directory
                .queue(line)
                .map(Some)
                .ok_or_else(|| SendError::LineWithoutQueue(line.to_string())),
            Ok(Mirror::None) => Ok(None),
            Err(SendRefusal::Invalid(detail)) => Err(SendError::Invalid(detail)),
            Err(SendRefusal::NotAllowed(detail)) => Err(SendError::NotAllowed(detail)),
            Err(SendRefusal::KeyRefused { key, why }) => {
                self.log_key_refusal(key, sender.address.as_str(), &why);
                Err(SendError::NotAllowed(format!(
                    "rule: a key opens a line only while it works: {why}"
                )))
            }
        }
    }

    /// The local form of `to`: `@domain` becomes the main line of the organisation that holds
    /// the domain here; `#name@domain` becomes `#name` when this hub serves the domain; any other
    /// address is itself.
    pub fn local_form<'a>(&self, to: &'a Address) -> std::borrow::Cow<'a, Address> {
        let local = match to.kind() {
            AddressKind::OrgLine => {
                let snapshot = self.org.snapshot();
                to.domain()
                    .and_then(|domain| snapshot.main_line_of(domain))
                    .and_then(|line| Address::parse(&line).ok())
            }
            AddressKind::Group => match (to.domain(), to.local()) {
                (Some(domain), Some(name)) if self.serves(domain) => {
                    Address::parse(&format!("#{name}")).ok()
                }
                _ => None,
            },
            // The usual case, on every send: no copy.
            _ => return std::borrow::Cow::Borrowed(to),
        };
        local.map_or(std::borrow::Cow::Borrowed(to), std::borrow::Cow::Owned)
    }

    /// Whether this hub serves `domain`: its configured domains and its organisations' domains.
    pub fn serves(&self, domain: &str) -> bool {
        self.config().hub.domains.iter().any(|d| crate::config::domain_matches(d, domain))
            || self.org.snapshot().domain_holder(&domain.to_ascii_lowercase()).is_some()
    }

    /// Records the first use of a key by each sender since the hub started, off the send path.
    fn log_key_use(&self, key: u64, by: &str) {
        if !self.first_key_use(key, by) {
            return;
        }
        let Some(hub) = self.me.upgrade() else { return };
        let Some(org) = self.org.snapshot().key(key).map(|k| k.org) else { return };
        let change = Change::KeyUsed { key, org, by: by.to_string() };
        let actor = Actor::User(by.to_string());
        tokio::spawn(async move {
            if let Err(error) = hub.org.record(actor, change).await {
                tracing::warn!(%error, key, "a key use could not be logged");
            }
        });
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
}
