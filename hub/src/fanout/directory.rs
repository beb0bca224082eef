//! Who is served here: every local user's and line's queue by address, in memory, so that
//! resolving a recipient never reads RocksDB on a network thread. Which lines and groups a
//! user reads is the organisation's answer ([`crate::org::OrgState::lines_read_by`]); the
//! directory only maps addresses to queues.

use std::{collections::HashMap, sync::RwLock};

use switchboard_protocol::{Address, AddressKind};

use crate::{fanout::SendError, store::QueueId};

/// Local recipients (users, lines, groups) by address.
#[derive(Default)]
pub struct Directory {
    queues: RwLock<HashMap<Box<str>, QueueId>>,
}

impl Directory {
    /// The queue of a local recipient address, or why there is none.
    pub fn resolve(&self, to: &Address) -> Result<QueueId, SendError> {
        match to.kind() {
            AddressKind::Account | AddressKind::Group => {}
            AddressKind::Device => {
                return Err(SendError::Invalid(
                    "send to the account, not to one of its devices".into(),
                ));
            }
            _ => {
                return Err(SendError::UnknownRecipient(format!(
                    "{to}: no organisation holds this domain here, and no peer hub serves it"
                )));
            }
        }
        self.queue(to.as_str()).ok_or_else(|| {
            SendError::UnknownRecipient(format!(
                "no user, line or group {to} here, and no peer hub serves its domain"
            ))
        })
    }

    /// The queue named `address`, if it is served here.
    pub fn queue(&self, address: &str) -> Option<QueueId> {
        self.queues.read().unwrap_or_else(|e| e.into_inner()).get(address).copied()
    }

    /// Whether `address` is a local recipient.
    pub fn contains(&self, address: &str) -> bool {
        self.queue(address).is_some()
    }

    /// Serves `address` from `queue`.
    pub fn insert(&self, address: &str, queue: QueueId) {
        self.queues.write().unwrap_or_else(|e| e.into_inner()).insert(address.into(), queue);
    }

    /// Stops serving `address`.
    pub fn remove(&self, address: &str) {
        self.queues.write().unwrap_or_else(|e| e.into_inner()).remove(address);
    }
}
