//! What a member sees of their organisations: the directory (lines and colleagues), the groups
//! they read or manage (an anonymous group's members only to those who manage it), and which
//! events of the log they may read.

use serde::Serialize;

use crate::org::{Actor, Event, Member, OrgId, OrgState, Right, Status};

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
    /// The directory `user` sees: for each organisation they are an active member of, its
    /// lines and colleagues; a guest (who lacks the right to read the directory) sees only
    /// whoever invited them, a member or a unit's line.
    pub fn directory_of(&self, user: &str) -> Vec<DirectoryEntry> {
        let mut out = Vec::new();
        let actor = Actor::User(user.to_string());
        for membership in self.memberships(user).filter(|m| m.status == Status::Active) {
            let Some(org) = self.org(membership.org) else { continue };
            let (lines, members) = if self.holds(org, &actor, Right::ReadDirectory) {
                self.colleagues(org.id)
            } else {
                self.inviter_entry(membership)
            };
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

    /// Every unit's line of `org`, and every active member assigned to a unit.
    fn colleagues(&self, org: OrgId) -> (Vec<LineEntry>, Vec<MemberEntry>) {
        let units: Vec<_> = self.units().filter(|u| u.org == org).collect();
        let lines =
            units.iter().map(|u| LineEntry { name: u.name.clone(), line: u.address.clone() });
        let members = units.iter().flat_map(|unit| {
            self.members_of(unit.id)
                .filter(|m| m.status == Status::Active)
                .map(|m| MemberEntry { user: m.user.clone(), unit: unit.address.clone() })
        });
        (lines.collect(), members.collect())
    }

    /// What a guest sees of an organisation: the line or member that invited them.
    fn inviter_entry(&self, guest: &Member) -> (Vec<LineEntry>, Vec<MemberEntry>) {
        let Some(inviter) = guest.invited_by.as_deref() else { return (Vec::new(), Vec::new()) };
        if let Some(unit) = self.line(inviter) {
            return (
                vec![LineEntry { name: unit.name.clone(), line: unit.address.clone() }],
                Vec::new(),
            );
        }
        let member = self.member(guest.org, inviter).filter(|m| m.status == Status::Active);
        let entry = member.map(|m| MemberEntry {
            user: m.user.clone(),
            unit: m.unit.and_then(|u| self.unit(u)).map(|u| u.address.clone()).unwrap_or_default(),
        });
        (Vec::new(), entry.into_iter().collect())
    }

    /// Whether `actor` may read `event` of the log: the operator every event, a user those
    /// that concern an organisation (its own, or one it names in `also`) where they hold the
    /// right to read the log.
    pub fn may_read_event(&self, actor: &Actor, event: &Event) -> bool {
        match actor {
            Actor::Operator => true,
            Actor::Hub => false,
            Actor::User(_) => event
                .org()
                .into_iter()
                .chain(event.also.iter().copied())
                .filter_map(|id| self.org(id))
                .any(|org| self.holds(org, actor, Right::ReadEventLog)),
        }
    }
}
