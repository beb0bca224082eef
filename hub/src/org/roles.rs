//! Rights and roles: what each role holds, the admins (at most five, named by the owner alone),
//! ownership and its transfer, and whether an actor holds a right (through their role, or
//! through the rights of their unit and the units above it).

use serde::{Deserialize, Serialize};

use crate::org::{
    Change, Command, MAX_ADMINS, Org, OrgError, OrgState, Status, account, not_allowed,
};

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The hub's operator.
    Operator,
    /// A user of the hub, by address.
    User(String),
}

/// A single permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Right {
    /// Send messages.
    Send,
    /// Send as the line of one's unit.
    SendAsLine,
    /// Receive what is sent to one's unit's line.
    ReceiveForLine,
    /// Put already-registered members into units.
    AssignMembers,
    /// Invite new members and guests.
    OnboardMembers,
    /// Approve self-registrations.
    ApproveRegistrations,
    /// Create and change units.
    ManageUnits,
    /// Create and change groups.
    ManageGroups,
    /// Read the event log.
    ReadEventLog,
    /// Issue and revoke keys.
    ManageKeys,
    /// Deactivate and delete members.
    ManageMembers,
    /// Name and remove admins (the owner alone).
    ManageAdmins,
    /// Hand the organisation to another owner (the owner alone).
    TransferOwnership,
    /// Delete the organisation (the owner alone).
    DeleteOrganisation,
}

/// A named set of rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Owner,
    /// Manages members, units, approvals, groups; cannot name admins or delete the organisation.
    Admin,
    /// Assigns already-registered members to their unit or group.
    GroupAdmin,
    /// A member.
    Member,
    /// An invited outsider: receives, answers whoever invited them.
    Guest,
}

impl Role {
    /// The rights this role holds.
    pub fn rights(self) -> &'static [Right] {
        use Right::*;
        match self {
            Role::Owner => &[
                Send,
                SendAsLine,
                ReceiveForLine,
                AssignMembers,
                OnboardMembers,
                ApproveRegistrations,
                ManageUnits,
                ManageGroups,
                ReadEventLog,
                ManageKeys,
                ManageMembers,
                ManageAdmins,
                TransferOwnership,
                DeleteOrganisation,
            ],
            Role::Admin => &[
                Send,
                SendAsLine,
                ReceiveForLine,
                AssignMembers,
                OnboardMembers,
                ApproveRegistrations,
                ManageUnits,
                ManageGroups,
                ReadEventLog,
                ManageKeys,
                ManageMembers,
            ],
            Role::GroupAdmin => &[Send, SendAsLine, ReceiveForLine, AssignMembers],
            Role::Member => &[Send, SendAsLine, ReceiveForLine],
            Role::Guest => &[Send],
        }
    }

    /// Whether the role holds `right`.
    pub fn has(self, right: Right) -> bool {
        self.rights().contains(&right)
    }
}

impl OrgState {
    /// The role `actor` holds in `org`, if any.
    pub fn role_of(&self, org: &Org, actor: &Actor) -> Option<Role> {
        let Actor::User(user) = actor else { return None };
        if &org.owner == user {
            return Some(Role::Owner);
        }
        if org.admins.contains(user) {
            return Some(Role::Admin);
        }
        self.member(org.id, user).filter(|m| m.status == Status::Active).map(|m| m.role)
    }

    pub(super) fn require(
        &self,
        org: &Org,
        actor: &Actor,
        right: Right,
        rule: &'static str,
    ) -> Result<(), OrgError> {
        if self.holds(org, actor, right) { Ok(()) } else { Err(not_allowed(rule)) }
    }

    /// Whether `actor` holds `right` in `org`: through its role, or through the rights of its
    /// unit and of the units above it.
    pub fn holds(&self, org: &Org, actor: &Actor, right: Right) -> bool {
        if self.role_of(org, actor).is_some_and(|role| role.has(right)) {
            return true;
        }
        let Actor::User(user) = actor else { return false };
        let Some(member) = self.member(org.id, user).filter(|m| m.status == Status::Active) else {
            return false;
        };
        let mut unit = member.unit.and_then(|u| self.units.get(&u));
        while let Some(u) = unit {
            if u.rights.contains(&right) {
                return true;
            }
            unit = u.parent.and_then(|p| self.units.get(&p));
        }
        false
    }

    pub(super) fn decide_role(&self, actor: &Actor, command: Command) -> Result<Change, OrgError> {
        match command {
            Command::NameAdmin { org, user } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageAdmins, "only the owner names admins")?;
                account(&user)?;
                if o.admins.len() >= MAX_ADMINS && !o.admins.contains(&user) {
                    return Err(not_allowed("at most 5 admins"));
                }
                Ok(Change::Applied(Command::NameAdmin { org, user }))
            }
            Command::RemoveAdmin { org, user } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageAdmins, "only the owner removes admins")?;
                if !o.admins.contains(&user) {
                    return Err(OrgError::UnknownMember(user));
                }
                Ok(Change::Applied(Command::RemoveAdmin { org, user }))
            }
            Command::TransferOwnership { org, to } => {
                let o = self.org_of(org)?;
                let rule = "only the owner transfers ownership";
                self.require(o, actor, Right::TransferOwnership, rule)?;
                account(&to)?;
                Ok(Change::Applied(Command::TransferOwnership { org, to }))
            }
            Command::AcceptOwnership { org } => {
                let o = self.org_of(org)?;
                match (actor, &o.pending_owner) {
                    (Actor::User(user), Some(pending)) if user == pending => {
                        Ok(Change::Applied(Command::AcceptOwnership { org }))
                    }
                    _ => Err(not_allowed("only the offered new owner confirms a transfer")),
                }
            }
            // `decide` hands only the commands above to this topic.
            other => unreachable!("not a role command: {other:?}"),
        }
    }

    pub(super) fn apply_role(&mut self, command: &Command) {
        match command {
            Command::NameAdmin { org, user } => {
                if let Some(o) = self.orgs.get_mut(org) {
                    o.admins.insert(user.clone());
                }
            }
            Command::RemoveAdmin { org, user } => {
                if let Some(o) = self.orgs.get_mut(org) {
                    o.admins.remove(user);
                }
            }
            Command::TransferOwnership { org, to } => {
                if let Some(o) = self.orgs.get_mut(org) {
                    o.pending_owner = Some(to.clone());
                }
            }
            Command::AcceptOwnership { org } => {
                if let Some(o) = self.orgs.get_mut(org)
                    && let Some(new_owner) = o.pending_owner.take()
                {
                    o.admins.remove(&new_owner);
                    o.owner = new_owner;
                }
            }
            _ => {}
        }
    }
}
