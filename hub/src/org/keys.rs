//! Keys: a line's organisation lets another organisation's groups address the line.
//!
//! Those who hold the manage-keys right in the line's organisation issue a key for one line to
//! another organisation known on the hub, with an expiry. That organisation's key managers hand
//! it to their groups; members of those groups may then address the line until the key expires
//! or is revoked. Issue, hand-out, revocation and every refused use are events in the log.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::org::{Actor, Change, Command, OrgError, OrgId, OrgState, Right, Role, Status, UnitId};

/// How long a key works when its issuer names no expiry: five years.
pub const DEFAULT_KEY_VALIDITY_MS: u64 = 5 * 365 * 24 * 3600 * 1000;

/// A key to a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// Its id.
    pub id: u64,
    /// The organisation of the line.
    pub org: OrgId,
    /// The line's unit.
    pub unit: UnitId,
    /// The organisation it was issued to.
    pub to_org: OrgId,
    /// When it stops working, Unix milliseconds.
    pub expires_ms: u64,
    /// Revoked by the line's organisation.
    pub revoked: bool,
    /// Groups of `to_org` it was handed to.
    pub groups: BTreeSet<String>,
}

/// What a key check found.
pub(super) enum KeyCheck {
    /// A working key lets the sender through.
    Open,
    /// The sender holds a key for the line that no longer works.
    Refused { key: u64, why: &'static str },
    /// The sender holds no key for the line.
    None,
}

impl OrgState {
    /// A key.
    pub fn key(&self, id: u64) -> Option<&Key> {
        self.keys.get(&id)
    }

    /// Whether any key was ever issued on the hub.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The keys `actor` may see: those issued by, or to, an organisation where they hold the
    /// manage-keys right.
    pub fn keys_seen_by(&self, actor: &Actor) -> Vec<&Key> {
        let manages = |org: OrgId| {
            self.orgs.get(&org).is_some_and(|o| self.holds(o, actor, Right::ManageKeys))
        };
        self.keys.values().filter(|k| manages(k.org) || manages(k.to_org)).collect()
    }

    /// Decides a key command and makes its change: an issued key gets its id here.
    pub(super) fn decide_key_change(
        &self,
        actor: &Actor,
        command: Command,
        now: u64,
    ) -> Result<Change, OrgError> {
        self.decide_key(actor, &command, now)?;
        match command {
            Command::IssueKey { org, unit, to_org, expires_ms } => Ok(Change::KeyIssued(Key {
                id: self.next_id + 1,
                org,
                unit,
                to_org,
                expires_ms: expires_ms.unwrap_or(now + DEFAULT_KEY_VALIDITY_MS),
                revoked: false,
                groups: BTreeSet::new(),
            })),
            command => Ok(Change::Applied(command)),
        }
    }

    pub(super) fn apply_key_issued(&mut self, key: &Key) {
        self.next_id = self.next_id.max(key.id);
        self.keys.insert(key.id, key.clone());
    }

    pub(super) fn apply_key(&mut self, command: &Command) {
        match command {
            Command::HandKey { key, group } => {
                if let Some(k) = self.keys.get_mut(key) {
                    k.groups.insert(group.clone());
                }
            }
            Command::RevokeKey { key } => {
                if let Some(k) = self.keys.get_mut(key) {
                    k.revoked = true;
                }
            }
            _ => {}
        }
    }

    fn decide_key(&self, actor: &Actor, command: &Command, now: u64) -> Result<(), OrgError> {
        match command {
            Command::IssueKey { org, unit, to_org, expires_ms } => {
                let o = self.orgs.get(org).ok_or(OrgError::UnknownOrg(*org))?;
                if !self.holds(o, actor, Right::ManageKeys) {
                    return Err(OrgError::NotAllowed {
                        rule: "the line's key managers issue its keys",
                    });
                }
                self.unit_of(*org, *unit)?;
                if !self.orgs.contains_key(to_org) || to_org == org {
                    return Err(OrgError::UnknownOrg(*to_org));
                }
                if expires_ms.is_some_and(|expires| expires <= now) {
                    return Err(OrgError::Invalid("a key needs an expiry in the future".into()));
                }
                Ok(())
            }
            Command::HandKey { key, group } => {
                let k =
                    self.keys.get(key).ok_or_else(|| OrgError::Invalid(format!("no key {key}")))?;
                let o = self.orgs.get(&k.to_org).ok_or(OrgError::UnknownOrg(k.to_org))?;
                if !self.holds(o, actor, Right::ManageKeys) {
                    return Err(OrgError::NotAllowed {
                        rule: "the receiving organisation's key managers hand keys to its groups",
                    });
                }
                match self.group(group) {
                    Some(g) if g.org == Some(k.to_org) => Ok(()),
                    _ => Err(OrgError::Invalid(format!(
                        "{group} is not a group of the organisation the key was issued to"
                    ))),
                }
            }
            Command::RevokeKey { key } => {
                let k =
                    self.keys.get(key).ok_or_else(|| OrgError::Invalid(format!("no key {key}")))?;
                let o = self.orgs.get(&k.org).ok_or(OrgError::UnknownOrg(k.org))?;
                if self.holds(o, actor, Right::ManageKeys) {
                    Ok(())
                } else {
                    Err(OrgError::NotAllowed { rule: "the line's key managers revoke its keys" })
                }
            }
            _ => Ok(()),
        }
    }

    /// The key through which `sender` reaches the line `to` at `now`, if a key is what lets
    /// them (they are not an active member of the line's organisation).
    pub fn key_opening(&self, sender: &str, to: &str, now: u64) -> Option<u64> {
        let unit = self.line(to)?;
        let member = self.member(unit.org, sender).is_some_and(|m| m.status == Status::Active);
        if member {
            return None;
        }
        self.keys
            .values()
            .filter(|k| k.unit == unit.id && !k.revoked && k.expires_ms > now)
            .filter(|k| {
                self.member(k.to_org, sender)
                    .is_some_and(|m| m.status == Status::Active && m.role != Role::Guest)
            })
            .find(|k| k.groups.iter().any(|g| self.group_readers(g).contains(sender)))
            .map(|k| k.id)
    }

    /// Whether `sender` reaches the line of `unit` through a key, at `now`.
    pub(super) fn check_key(&self, sender: &str, unit: UnitId, now: u64) -> KeyCheck {
        let mut refused = None;
        for key in self.keys.values().filter(|k| k.unit == unit) {
            // A key is the receiving organisation's: only its active members (not its guests,
            // nor outsiders in its groups) reach the line through it.
            let in_org = self
                .member(key.to_org, sender)
                .is_some_and(|m| m.status == Status::Active && m.role != Role::Guest);
            let holds = in_org && key.groups.iter().any(|g| self.group_readers(g).contains(sender));
            if !holds {
                continue;
            }
            let why = if key.revoked {
                Some("the key was revoked")
            } else if key.expires_ms <= now {
                Some("the key has expired")
            } else if !self.orgs.contains_key(&key.to_org) {
                Some("the key's organisation is no longer on the hub")
            } else {
                None
            };
            match why {
                None => return KeyCheck::Open,
                Some(why) => refused = Some(KeyCheck::Refused { key: key.id, why }),
            }
        }
        refused.unwrap_or(KeyCheck::None)
    }
}
