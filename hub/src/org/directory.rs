//! What a member sees of their organisations: the directory (lines and colleagues), the groups
//! they read or manage (an anonymous group's members only to those who manage it), and which
//! events of the log they may read.

use serde::Serialize;

use crate::org::{Actor, Event, OrgId, OrgState, Right, Status};

/// One entry of a member's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum DirectoryEntry {
    /// An organisation the user is an active member of.
    Org {
        /// Its id.
        org: OrgId,
        /// Its name.
        name: String,
        /// Every unit's line.
        lines: Vec<LineEntry>,
        /// Every active member assigned to a unit.
        members: Vec<MemberEntry>,
    },
    /// A group the user reads or manages.
    Group {
        /// Its address.
        group: String,
        /// Whether its members are hidden from each other.
        anonymous: bool,
        /// Its members (none shown for an anonymous group the user does not manage).
        members: Vec<String>,
    },
}

/// A unit's line in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineEntry {
    /// The unit's name.
    pub name: String,
    /// Its line address.
    pub line: String,
}

/// A colleague in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberEntry {
    /// Their address.
    pub user: String,
    /// Their unit's line.
    pub unit: String,
}

impl OrgState {
    /// The directory `user` sees.
    pub fn directory_of(&self, user: &str) -> Vec<DirectoryEntry> {
        let mut out = Vec::new();
        for membership in self.memberships(user).filter(|m| m.status == Status::Active) {
            let Some(org) = self.org(membership.org) else { continue };
            let units: Vec<_> = self.units().filter(|u| u.org == org.id).collect();
            let lines = units
                .iter()
                .map(|u| LineEntry { name: u.name.clone(), line: u.address.clone() })
                .collect();
            let members = units
                .iter()
                .flat_map(|unit| {
                    self.members_of(unit.id)
                        .filter(|m| m.status == Status::Active)
                        .map(|m| MemberEntry { user: m.user.clone(), unit: unit.address.clone() })
                })
                .collect();
            out.push(DirectoryEntry::Org { org: org.id, name: org.name.clone(), lines, members });
        }
        let actor = Actor::User(user.to_string());
        for group in self.groups() {
            let manages = self.manages(group, &actor);
            if !manages && !self.group_readers(&group.address).contains(user) {
                continue;
            }
            let members = if group.anonymous && !manages {
                Vec::new()
            } else {
                group.members.iter().cloned().collect()
            };
            out.push(DirectoryEntry::Group {
                group: group.address.clone(),
                anonymous: group.anonymous,
                members,
            });
        }
        out
    }

    /// Whether `actor` may read `event` of the log: the operator every event, a user those of
    /// the organisations where they hold the right to read the log.
    pub fn may_read_event(&self, actor: &Actor, event: &Event) -> bool {
        match actor {
            Actor::Operator => true,
            Actor::User(_) => event
                .org()
                .and_then(|id| self.org(id))
                .is_some_and(|org| self.holds(org, actor, Right::ReadEventLog)),
        }
    }
}
