//! Provisioning: registering many devices whose ed25519 public keys the operator already
//! holds, with no enrolment code (`POST /v1/devices`).

use std::collections::HashMap;

use switchboard_protocol::Address;

use crate::{
    fanout::Hub,
    store::{DeviceRecord, QueueId, StoreError, UserRecord},
};

/// Registers devices on a hub.
pub struct Provisioning<'a> {
    hub: &'a Hub,
}

impl<'a> Provisioning<'a> {
    /// Provisioning on `hub`.
    pub fn new(hub: &'a Hub) -> Self {
        Self { hub }
    }

    /// Registers `devices`. Each device's user must exist, or is added first when
    /// `add_users`. All the writes are submitted together, so that the shard writers commit
    /// them in a few group commits. Answers one result per device, in order; one device's
    /// error (an unknown user, a name enrolled already) harms none of the others.
    pub async fn register_devices(
        &self,
        devices: &[(Address, [u8; 32])],
        add_users: bool,
    ) -> Vec<Result<DeviceRecord, StoreError>> {
        let accounts = self.accounts(devices, add_users).await;
        let store = self.hub.store();
        let pending: Vec<_> = devices
            .iter()
            .map(|(address, key)| match &accounts[account_of(address)] {
                Ok(queue) => Ok(store.register_device(*queue, address.as_str(), *key)),
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
            if let Err(error) = self.hub.on_enrolled(record).await {
                tracing::warn!(device = %record.name, %error, "subscribing a registered device");
            }
        });
        futures_util::future::join_all(subscribed).await;
        results
    }

    /// The queue of each device's user, added when missing and `add_users`.
    async fn accounts<'d>(
        &self,
        devices: &'d [(Address, [u8; 32])],
        add_users: bool,
    ) -> HashMap<&'d str, Result<QueueId, StoreError>> {
        let mut users: Vec<&str> = devices.iter().map(|(address, _)| account_of(address)).collect();
        users.sort_unstable();
        users.dedup();
        let found = self.users_named(&users).await;
        let mut accounts = HashMap::new();
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
        let added =
            futures_util::future::join_all(missing.iter().map(|u| self.hub.add_user(u))).await;
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
        accounts
    }

    /// The user record of each name, read on a blocking thread (thousands of point reads stay
    /// off the async threads); one answer per name, in order.
    async fn users_named(&self, names: &[&str]) -> Vec<Result<Option<UserRecord>, StoreError>> {
        let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let found = self
            .hub
            .store()
            .blocking(move |store| Ok(owned.iter().map(|name| store.user(name)).collect()))
            .await;
        found.unwrap_or_else(|error| vec![Err(error); names.len()])
    }
}

/// The account (`user@domain`) part of a device address (`user@domain/device`).
fn account_of(device: &Address) -> &str {
    device.as_str().split_once('/').map_or(device.as_str(), |(account, _)| account)
}
