//! Devices reading their mailbox on the registration hub while their home hub is out of reach.
//!
//! A private user's registration hub keeps what is relayed to their home hub in one queue,
//! their mailbox. Every device of the user is a reader of it there, besides the home hub's
//! link, so an entry stays until each device has it (or its time to live ends); a device that
//! connects to the registration hub reads the mailbox after its own cursor, in the mailbox's
//! order, which is the order the home hub got it in.
//!
//! What a device takes at its home hub moves its cursor on the registration hub too: the home
//! hub remembers, for the entries of its users' queues that the registration hub relayed, the
//! sender and id of each ([`TakenLog::relayed`]); when a device acknowledges, the newest such
//! entry at or below its cursor is reported back on the link, one `relay-taken` entry per
//! device, the newest progress only ([`TakenLog::acked`], sent by the link's connector). The
//! registration hub finds that message's sequence in the mailbox by its dedupe record
//! (`taken_in`) and acknowledges the mailbox up to it for the device: every entry before it
//! was relayed before it, so the device has taken each of them at home.
//!
//! Reports are an optimisation of storage, never of correctness: one lost (a crash, the link
//! down) leaves entries in the mailbox that the device took, which it is sent again if it
//! reads the mailbox, and drops by (`from`, `id`). The log is in memory and bounded
//! ([`MAX_RELAYED`] entries per user); after a restart the home hub reports again from the
//! first message relayed to it since.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use switchboard_protocol::{
    Address, MessageId, RejectReason, RelayAck, RelayRejection, RelayTaken, Taken,
};

use crate::{
    fanout::Hub,
    store::{DeviceId, QueueId, StoreError},
};

/// The most relayed entries a home hub remembers per user; older ones are forgotten (a device
/// that far behind is reported once it takes a newer one).
pub const MAX_RELAYED: usize = 16_384;

/// On a home hub: what the registration hubs of its users relayed into their queues, and the
/// progress of each device not yet reported.
#[derive(Default)]
pub struct TakenLog {
    /// Whether any user's queue is logged (the ack path looks no further when not).
    any: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<QueueId, UserLog>,
    /// Per registration hub (peer name), per device: the progress to report.
    pending: HashMap<String, BTreeMap<String, Taken>>,
}

struct UserLog {
    user: String,
    /// The registration hub that relayed them.
    peer: String,
    /// Sequence in the user's queue -> the message's sender and id.
    relayed: BTreeMap<u64, (Address, MessageId)>,
    /// The user's devices, by store id, with their addresses.
    devices: HashMap<DeviceId, Address>,
    /// Per device, the sequence last reported (or queued for report).
    reported: HashMap<DeviceId, u64>,
}

impl TakenLog {
    /// The registration hub `peer` relayed the message (`from`, `id`) into `user`'s queue
    /// `queue`, at `seq`.
    pub fn relayed(
        &self,
        peer: &str,
        user: &str,
        queue: QueueId,
        seq: u64,
        from: Address,
        id: MessageId,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let log = inner.users.entry(queue).or_insert_with(|| UserLog {
            user: user.to_string(),
            peer: peer.to_string(),
            relayed: BTreeMap::new(),
            devices: HashMap::new(),
            reported: HashMap::new(),
        });
        log.peer = peer.to_string();
        log.relayed.insert(seq, (from, id));
        while log.relayed.len() > MAX_RELAYED {
            log.relayed.pop_first();
        }
        self.any.store(true, Ordering::Release);
    }

    /// Whether acks of `queue` may need reporting.
    pub fn logs(&self, queue: QueueId) -> bool {
        self.any.load(Ordering::Acquire)
            && self.inner.lock().unwrap_or_else(|e| e.into_inner()).users.contains_key(&queue)
    }

    /// `device` acknowledged `queue` up to `up_to`: answers the registration hub to tell, if
    /// there is news for it. `name_of` finds the address of a device not seen before.
    pub fn acked(
        &self,
        queue: QueueId,
        device: DeviceId,
        up_to: u64,
        name_of: impl FnOnce(&str) -> Option<Address>,
    ) -> Option<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let log = inner.users.get_mut(&queue)?;
        let (&seq, (from, id)) = log.relayed.range(..=up_to).next_back()?;
        if log.reported.get(&device).is_some_and(|&done| done >= seq) {
            return None;
        }
        let address = match log.devices.get(&device) {
            Some(address) => address.clone(),
            None => {
                let address = name_of(&log.user)?;
                log.devices.insert(device, address.clone());
                address
            }
        };
        let taken = Taken { device: address.clone(), from: from.clone(), id: *id };
        log.reported.insert(device, seq);
        // Entries below every device's report are not needed again.
        if log.reported.len() == log.devices.len() {
            let low = log.reported.values().copied().min().unwrap_or(0);
            while log.relayed.first_key_value().is_some_and(|(&s, _)| s < low) {
                log.relayed.pop_first();
            }
        }
        let peer = log.peer.clone();
        inner.pending.entry(peer.clone()).or_default().insert(address.as_str().to_string(), taken);
        Some(peer)
    }

    /// Up to `max` reports waiting for the registration hub `peer`.
    pub fn waiting(&self, peer: &str, max: usize) -> Vec<Taken> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.pending.get(peer).map_or_else(Vec::new, |p| p.values().take(max).cloned().collect())
    }

    /// `sent` reached `peer`: each is forgotten unless a newer report replaced it meanwhile.
    pub fn sent(&self, peer: &str, sent: &[Taken]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pending) = inner.pending.get_mut(peer) {
            for taken in sent {
                if pending.get(taken.device.as_str()) == Some(taken) {
                    pending.remove(taken.device.as_str());
                }
            }
        }
    }
}

/// On a registration hub: a home hub's report of what devices took there. For each entry, the
/// peer must be (or have been) the home hub of the device's user and the device one of the
/// user's, unrevoked; else it is refused (`not-allowed`, `unknown-recipient`) and logged. A
/// message the mailbox does not know (not relayed through it, or past the dedupe window)
/// changes nothing. Answers once every acknowledgement is written.
pub(crate) async fn taken_in(
    hub: &Hub,
    peer: &str,
    is_home_of: impl Fn(&Address) -> bool,
    frame: RelayTaken,
) -> Result<RelayAck, String> {
    let mut rejected = Vec::new();
    for (index, taken) in frame.taken.into_iter().enumerate() {
        let index = u16::try_from(index).unwrap_or(u16::MAX);
        let Some(user) = taken.device.account() else { continue };
        if !is_home_of(&user) {
            tracing::warn!(%peer, device = %taken.device, "relay-taken for a user whose home hub the peer is not; refused");
            rejected.push(RelayRejection { index, reason: RejectReason::NOT_ALLOWED });
            continue;
        }
        match taken_one(hub, user.as_str(), &taken).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%peer, device = %taken.device, "relay-taken for a device that is not an unrevoked device of its user here; refused");
                rejected.push(RelayRejection { index, reason: RejectReason::UNKNOWN_RECIPIENT });
            }
            Err(error) => return Err(format!("acknowledging the mailbox: {error}")),
        }
    }
    Ok(RelayAck { batch: frame.batch, rejected })
}

/// Acknowledges `user`'s mailbox for the device of `taken` up to its message; false when the
/// device is not one of the user's, unrevoked.
async fn taken_one(hub: &Hub, user: &str, taken: &Taken) -> Result<bool, StoreError> {
    let name = taken.device.as_str().to_string();
    let record = hub.store().blocking(move |store| store.device_record(&name)).await?;
    let Some(record) = record.filter(|r| !r.revoked) else { return Ok(false) };
    if hub.directory().queue(user) != Some(record.account) {
        return Ok(false);
    }
    let mailbox = hub.store().mailbox(user).await?;
    let (from, id, queue, device) = (taken.from.clone(), taken.id, mailbox.queue, record.device);
    let found = hub
        .store()
        .blocking(move |store| {
            let Some(seq) = store.dedupe_seq(queue, from.as_str().as_bytes(), id.0)? else {
                return Ok(None);
            };
            let readers = store.readers(queue)?;
            let cursor = match readers.contains(&device) {
                true => Some(store.cursor(queue, device)?),
                false => None,
            };
            Ok(Some((seq, cursor)))
        })
        .await?;
    match found {
        Some((seq, Some(cursor))) if seq > cursor.acked => {
            hub.store().ack(queue, device, seq, Vec::new()).await?;
        }
        _ => {}
    }
    Ok(true)
}
