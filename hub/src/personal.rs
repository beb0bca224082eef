//! Personal hubs: where a private user's home hub is, as a record only the user's own devices
//! can change.
//!
//! A private user's *registration hub* (the hub holding the account, e.g. a provider's for
//! `alice@home.example`) keeps one [`HomeRecord`] per user: the home hub's name, address and
//! certificate pin, and an epoch that grows by one with every change. A record is taken only
//! when it is signed by one of the user's enrolled, unrevoked devices and its epoch is exactly
//! one above the stored one: the registration hub's operator cannot move a user's messages
//! elsewhere without a device key of the user, and a device key added by the operator shows in
//! the user's device list. Every change is also told to every device of the user, as a
//! `home_changed` notice in the user's queue, so a change no device made is seen.
//!
//! The signed bytes ([`HomeRecord::signing_bytes`]) are text, one `field=value` line per field
//! in a fixed order after a version line; docs/protocol.md ("Home records") gives them exactly.

use std::net::SocketAddr;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{Address, MessageId};

use crate::{
    fanout::Hub,
    links::PeerError,
    store::{DeviceRecord, StartAt, StoreError},
};

/// The first line of the signed bytes; a later format changes it.
pub const SIGNING_VERSION: &str = "switchboard-home-record-v1";

/// Where a private user's home hub is, signed by one of the user's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HomeRecord {
    /// The user, `local@domain`.
    pub user: String,
    /// The home hub's name (its `[hub] name`).
    pub hub: String,
    /// The home hub's QUIC address, `ip:port`.
    #[schema(value_type = String)]
    pub address: SocketAddr,
    /// The pin of the home hub's certificate (64 hex digits, `hub identity`).
    pub pin: String,
    /// 1 for the first record, one more for each change.
    pub epoch: u64,
    /// The signing device, `local@domain/device`, one of the user's.
    pub device: String,
    /// When the device signed it, Unix milliseconds.
    pub signed_ms: u64,
    /// The ed25519 signature of [`HomeRecord::signing_bytes`] by the device's key, hex.
    pub signature: String,
}

/// Why a home record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HomeError {
    /// A field is malformed; the text names it.
    #[error("{0}")]
    Field(String),
    /// The user is no account of this hub.
    #[error("{0} is no user of this hub")]
    UnknownUser(String),
    /// The signing device is not one of the user's enrolled devices.
    #[error("{device} is no device of {user}")]
    UnknownDevice {
        /// The device named.
        device: String,
        /// The user.
        user: String,
    },
    /// The signing device is revoked.
    #[error("{0} is revoked")]
    Revoked(String),
    /// The signature does not verify with the device's key.
    #[error("the signature does not verify with the key of {0}")]
    BadSignature(String),
    /// A hand-off from another home hub is still in progress: only a record naming that hub
    /// (which ends the move) is taken until it completes.
    #[error("the hand-off from {from} is not complete; a record naming {from} ends it")]
    HandOff {
        /// The home hub the user is moving away from.
        from: String,
    },
    /// The epoch is not one above the stored record's (a replay, or a change raced by another).
    #[error("epoch {given}: the next epoch is {next}")]
    StaleEpoch {
        /// The epoch of the record given.
        given: u64,
        /// The only epoch taken now.
        next: u64,
    },
}

impl HomeError {
    /// A short stable name for the API's answers.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Field(_) => "malformed",
            Self::UnknownUser(_) => "unknown-user",
            Self::UnknownDevice { .. } => "unknown-device",
            Self::Revoked(_) => "revoked-device",
            Self::BadSignature(_) => "bad-signature",
            Self::StaleEpoch { .. } => "stale-epoch",
            Self::HandOff { .. } => "hand-off-in-progress",
        }
    }
}

impl HomeRecord {
    /// The bytes a device signs: the version line, then `user`, `hub`, `address`, `pin`,
    /// `epoch`, `device` and `signed_ms`, each as `name=value` and a newline.
    pub fn signing_bytes(&self) -> Vec<u8> {
        format!(
            "{SIGNING_VERSION}\nuser={}\nhub={}\naddress={}\npin={}\nepoch={}\ndevice={}\nsigned_ms={}\n",
            self.user, self.hub, self.address, self.pin, self.epoch, self.device, self.signed_ms
        )
        .into_bytes()
    }

    /// Signs the record with a device's ed25519 secret key (sets `signature`).
    pub fn sign(&mut self, secret_key: &[u8; 32]) {
        let key = SigningKey::from_bytes(secret_key);
        self.signature = crate::admin::hex(&key.sign(&self.signing_bytes()).to_bytes());
    }

    /// Checks every field's form: canonical addresses, the device one of the user's, a pin of
    /// 64 hex digits, a hub name without line breaks, an epoch of at least 1.
    pub fn check_fields(&self) -> Result<(), HomeError> {
        let field = |text: &str| Err(HomeError::Field(text.to_string()));
        let user = match Address::parse(&self.user) {
            Ok(user) if user.kind() == switchboard_protocol::AddressKind::Account => user,
            _ => return field("user: an account address, local@domain"),
        };
        if user.as_str() != self.user {
            return field("user: in its canonical (lower-case) form");
        }
        match Address::parse(&self.device) {
            Ok(device) if device.as_str() == self.device && device.account() == Some(user) => {}
            _ => return field("device: one of the user's devices, local@domain/device"),
        }
        let name_ok = !self.hub.trim().is_empty() && self.hub.len() <= 253;
        if !name_ok || self.hub.chars().any(char::is_control) {
            return field("hub: 1 to 253 characters, no control characters");
        }
        if self.pin.len() != 64 || !self.pin.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return field("pin: 64 lower-case hex digits (`hub identity` on the home hub)");
        }
        if self.epoch == 0 {
            return field("epoch: 1 or more");
        }
        Ok(())
    }

    /// Verifies the signature with the device's public key.
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<(), HomeError> {
        let bad = || HomeError::BadSignature(self.device.clone());
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| bad())?;
        let bytes = crate::client::unhex(&self.signature).ok_or_else(bad)?;
        let signature = Signature::from_slice(&bytes).map_err(|_| bad())?;
        key.verify(&self.signing_bytes(), &signature).map_err(|_| bad())
    }
}

/// The store blob holding `user`'s record.
fn blob_name(user: &str) -> String {
    format!("home:{user}")
}

/// Held while a record is checked against the stored one and replaced.
static CHANGING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why a record could not be taken: refused, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum SetHomeError {
    /// Refused by a rule.
    #[error(transparent)]
    Refused(#[from] HomeError),
    /// The store failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Hub {
    /// `user`'s home record, if one was set.
    pub async fn home_of(&self, user: &str) -> Result<Option<HomeRecord>, StoreError> {
        let name = blob_name(user);
        let bytes = self.store().blocking(move |store| store.blob(&name)).await?;
        Ok(bytes.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Takes a new home record for one of this hub's users: its fields well formed, signed by
    /// one of the user's unrevoked devices, its epoch exactly one above the stored record's.
    /// Durable when this answers; every device of the user is then told by a `home_changed`
    /// notice, written where the devices were (the old home hub, or this hub) and where they
    /// will be (the new home hub).
    pub async fn set_home(&self, record: HomeRecord) -> Result<HomeRecord, SetHomeError> {
        record.check_fields()?;
        let Some(queue) = self.directory().queue(&record.user) else {
            return Err(HomeError::UnknownUser(record.user).into());
        };
        let user = record.user.clone();
        let devices = self.store().blocking(move |store| store.device_records(Some(&user))).await?;
        let device = devices.iter().find(|d| d.name == record.device).ok_or_else(|| {
            HomeError::UnknownDevice { device: record.device.clone(), user: record.user.clone() }
        })?;
        if device.revoked {
            return Err(HomeError::Revoked(record.device).into());
        }
        record.verify(&device.public_key)?;
        let _changing = CHANGING.lock().await;
        let next = self.home_of(&record.user).await?.map_or(1, |old| old.epoch + 1);
        if record.epoch != next {
            return Err(HomeError::StaleEpoch { given: record.epoch, next }.into());
        }
        let refused = |error| match error {
            PeerError::Store(error) => SetHomeError::Store(error),
            PeerError::Moving { from } => SetHomeError::Refused(HomeError::HandOff { from }),
            other => SetHomeError::Refused(HomeError::Field(format!("hub: {other}"))),
        };
        self.peers().check_home(&record.user, &record.hub).map_err(refused)?;
        let account = Address::parse(&record.user).map_err(|e| HomeError::Field(e.to_string()))?;
        let body = serde_json::json!({
            "notice": "home_changed",
            "hub": record.hub,
            "address": record.address.to_string(),
            "pin": record.pin,
            "epoch": record.epoch,
            "device": record.device,
            "record": record,
        });
        // The same record gives the same notice: a retry after a crash writes it once.
        let id = home_notice_id(&record);
        // Where the user's devices are now (the old home hub through the mailbox, or this hub):
        // the notice goes there first. In the mailbox it is where the old home hub's part ends:
        // the old hub gets what is before it, hands back what it holds up to it, and the new
        // home hub gets that and then what follows it (see `Peers::set_home`).
        let before = self.peers().home_for(&record.user).unwrap_or(queue);
        // The old home hub gets the notice only once the move is recorded below.
        let hold = self.peers().hold_home(&record.user);
        let seq =
            self.write_notice(before, id, account.clone(), account.clone(), body.clone()).await?;
        // From now on the user's messages and receipts go to the home hub; then the record.
        // A crash between the two leaves the old epoch stored, so the device's retry of the
        // same record is taken.
        self.peers()
            .set_home(&record.user, &record.hub, record.address, &record.pin, Some(seq))
            .await
            .map_err(refused)?;
        drop(hold);
        // The user's devices read the mailbox here while their home hub is out of reach.
        self.mailbox_readers(&record.user).await?;
        let bytes = serde_json::to_vec(&record).expect("a home record serialises");
        self.store().put_blob(&blob_name(&record.user), bytes).await?;
        tracing::info!(
            user = %record.user, hub = %record.hub, address = %record.address,
            epoch = record.epoch, device = %record.device, "home hub changed"
        );
        let after = self.peers().home_for(&record.user).unwrap_or(queue);
        if after != before {
            self.write_notice(after, id, account.clone(), account, body).await?;
        }
        Ok(record)
    }
}

impl Hub {
    /// Makes every unrevoked device of `user` a reader of the user's mailbox here, when their
    /// home hub is another: a device may read it on this hub while the home hub is out of
    /// reach. Each starts at the oldest entry the mailbox holds and keeps its cursor from then
    /// on; the home hub reports what each took there (`relay-taken`), which moves it too.
    pub(crate) async fn mailbox_readers(&self, user: &str) -> Result<(), StoreError> {
        if self.peers().home_for(user).is_none() {
            return Ok(());
        }
        let name = user.to_string();
        let devices = self.store().blocking(move |store| store.device_records(Some(&name))).await?;
        for device in devices.iter().filter(|d| !d.revoked) {
            self.mailbox_reader(user, device).await?;
        }
        Ok(())
    }

    /// Makes `device`, of `user` whose home hub is another, a reader of the user's mailbox (a
    /// device that reads it already keeps its cursor).
    pub(crate) async fn mailbox_reader(
        &self,
        user: &str,
        device: &DeviceRecord,
    ) -> Result<(), StoreError> {
        if self.peers().home_for(user).is_none() {
            return Ok(());
        }
        let mailbox = self.store().mailbox(user).await?;
        let id = device.device;
        let reads = self.store().blocking(move |store| store.subscriptions(id)).await?;
        if !reads.contains(&mailbox.queue) {
            self.store().subscribe(id, mailbox.queue, StartAt::Oldest).await?;
            self.sessions().refresh(id);
        }
        Ok(())
    }
}

/// The id of the `home_changed` notice of `record`: the same for the same user and epoch.
fn home_notice_id(record: &HomeRecord) -> MessageId {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"home_changed")
        .chain_update(record.user.as_bytes())
        .chain_update(record.epoch.to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    MessageId::from_parts(record.signed_ms, u128::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> HomeRecord {
        HomeRecord {
            user: "alice@home.example".into(),
            hub: "alice-desk".into(),
            address: "127.0.0.2:7447".parse().unwrap(),
            pin: "ab".repeat(32),
            epoch: 1,
            device: "alice@home.example/desk".into(),
            signed_ms: 1_700_000_000_000,
            signature: String::new(),
        }
    }

    #[test]
    fn a_signed_record_verifies_and_any_changed_field_does_not() {
        let secret = [7u8; 32];
        let public = SigningKey::from_bytes(&secret).verifying_key().to_bytes();
        let mut signed = record();
        signed.sign(&secret);
        assert_eq!(signed.verify(&public), Ok(()));
        let changes: [fn(&mut HomeRecord); 6] = [
            |r| r.hub.push('x'),
            |r| r.address = "127.0.0.3:7447".parse().unwrap(),
            |r| r.pin = "cd".repeat(32),
            |r| r.epoch += 1,
            |r| r.device = "alice@home.example/laptop".into(),
            |r| r.signed_ms += 1,
        ];
        for change in changes {
            let mut changed = signed.clone();
            change(&mut changed);
            assert!(matches!(changed.verify(&public), Err(HomeError::BadSignature(_))));
        }
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key().to_bytes();
        assert!(signed.verify(&other).is_err());
    }

    #[test]
    fn the_signed_bytes_are_the_documented_text() {
        let text = String::from_utf8(record().signing_bytes()).unwrap();
        assert_eq!(
            text,
            format!(
                "switchboard-home-record-v1\nuser=alice@home.example\nhub=alice-desk\naddress=127.0.0.2:7447\npin={}\nepoch=1\ndevice=alice@home.example/desk\nsigned_ms=1700000000000\n",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn malformed_fields_are_named() {
        type Change = fn(&mut HomeRecord);
        let cases: [(Change, &str); 6] = [
            (|r| r.user = "Alice@home.example".into(), "user"),
            (|r| r.user = "#group".into(), "user"),
            (|r| r.device = "bob@home.example/desk".into(), "device"),
            (|r| r.hub = "two\nlines".into(), "hub"),
            (|r| r.pin = "AB".repeat(32), "pin"),
            (|r| r.epoch = 0, "epoch"),
        ];
        for (change, name) in cases {
            let mut bad = record();
            change(&mut bad);
            match bad.check_fields() {
                Err(HomeError::Field(text)) => assert!(text.starts_with(name), "{text}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(record().check_fields(), Ok(()));
    }
}
