//! Rights and roles: what each role holds, the admins (at most five, named by the owner alone),
//! group admins (named by admins, each for given units and groups), ownership and its transfer,
//! and whether an actor holds a right.
//!
//! Two rules keep rights from leaking. Status comes before role: a member who is pending,
//! deactivated or deleted holds no right at all, whatever list they are still on. And a unit
//! holds only member rights ([`Right::unit_grantable`]): the rights of roles (onboarding,
//! approvals, units, groups, keys, the event log, admins) come from a role and nowhere else.

use serde::{Deserialize, Serialize};

use crate::org::{
    Change, Command, MAX_ADMINS, Org, OrgError, OrgId, OrgState, Status, UnitId, account,
    account_in, not_allowed,
};

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The hub's operator.
    Operator,
    /// A user of the hub, by address.
    User(String),
    /// The hub itself, for what it has checked on its own (a domain's DNS record). No token
    /// acts as the hub.
    Hub,
}

/// A single permission.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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
    /// See the organisation's directory of lines and colleagues.
    ReadDirectory,
}

impl Right {
    /// Whether a unit may hold this right (and pass it to its members): member rights only.
    /// Every other right belongs to roles.
    pub fn unit_grantable(self) -> bool {
        matches!(
            self,
            Right::Send | Right::SendAsLine | Right::ReceiveForLine | Right::ReadDirectory
        )
    }
}

/// What a group admin looks after: a unit or a group of the organisation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Managed {
    /// A unit, by id.
    Unit(UnitId),
    /// A group, by address.
    Group(String),
}

impl Managed {
    fn parts(self) -> (Option<UnitId>, Option<String>) {
        match self {
            Managed::Unit(unit) => (Some(unit), None),
            Managed::Group(group) => (None, Some(group)),
        }
    }

    fn from_parts(unit: Option<UnitId>, group: Option<String>) -> Option<Self> {
        match (unit, group) {
            (Some(unit), None) => Some(Managed::Unit(unit)),
            (None, Some(group)) => Some(Managed::Group(group)),
            _ => None,
        }
    }
}

/// A named set of rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Owner,
    /// Manages members, units, approvals, groups; cannot name admins or delete the organisation.
    Admin,
    /// A member named group admin for some units or groups: assigns the organisation's active
    /// members to those, and nothing else. (Kept for event logs written before group admins were
    /// named per unit or group; a member's role is never set to it now.)
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
                ReadDirectory,
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
                ReadDirectory,
            ],
            Role::GroupAdmin | Role::Member => &[Send, SendAsLine, ReceiveForLine, ReadDirectory],
            Role::Guest => &[Send],
        }
    }

    /// Whether the role holds `right`.
    pub fn has(self, right: Right) -> bool {
        self.rights().contains(&right)
    }
}

impl OrgState {
    /// The role `actor` holds in `org`, if any. Status before role: a member who is not
    /// active has none, even if a list (of admins, say) still names them.
    pub fn role_of(&self, org: &Org, actor: &Actor) -> Option<Role> {
        let Actor::User(user) = actor else { return None };
        let membership = self.member(org.id, user);
        if membership.is_some_and(|m| m.status != Status::Active) {
            return None;
        }
        if &org.owner == user {
            return Some(Role::Owner);
        }
        if org.admins.contains(user) {
            return Some(Role::Admin);
        }
        membership.map(|m| if m.role == Role::GroupAdmin { Role::Member } else { m.role })
    }

    /// Whether `actor` is a group admin of `org` for `what` (and an active member).
    pub fn is_group_admin(&self, org: &Org, actor: &Actor, what: &Managed) -> bool {
        let Actor::User(user) = actor else { return false };
        self.member(org.id, user)
            .is_some_and(|m| m.status == Status::Active && m.role != Role::Guest)
            && org.group_admins.get(user).is_some_and(|managed| managed.contains(what))
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

    /// Whether `actor` holds `right` in `org`: through its role, or, for a member right,
    /// through the rights of its unit and of the units above it.
    pub fn holds(&self, org: &Org, actor: &Actor, right: Right) -> bool {
        if self.role_of(org, actor).is_some_and(|role| role.has(right)) {
            return true;
        }
        // A right of roles never comes from a unit (not even from a grant logged before the
        // rule existed).
        if !right.unit_grantable() {
            return false;
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
                let user = account(&user)?.as_str().to_string();
                self.require_eligible(org, &user)?;
                if o.admins.len() >= MAX_ADMINS && !o.admins.contains(&user) {
                    return Err(not_allowed("at most 5 admins"));
                }
                Ok(Change::Applied(Command::NameAdmin { org, user }))
            }
            Command::NameGroupAdmin { org, user, unit, group } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageMembers, "admins name group admins")?;
                let what = self.managed(org, unit, group.as_deref())?;
                match self.member(org, &user) {
                    Some(m) if m.status == Status::Active && m.role != Role::Guest => {}
                    _ => {
                        return Err(OrgError::Invalid(format!(
                            "{user} is not an active member of the organisation"
                        )));
                    }
                }
                let (unit, group) = what.parts();
                Ok(Change::Applied(Command::NameGroupAdmin { org, user, unit, group }))
            }
            Command::RemoveGroupAdmin { org, user, unit, group } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageMembers, "admins remove group admins")?;
                let what = self.managed(org, unit, group.as_deref())?;
                if !o.group_admins.get(&user).is_some_and(|m| m.contains(&what)) {
                    return Err(OrgError::UnknownMember(user));
                }
                let (unit, group) = what.parts();
                Ok(Change::Applied(Command::RemoveGroupAdmin { org, user, unit, group }))
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
                let to = account_in("to", &to)?.as_str().to_string();
                self.require_eligible(org, &to)?;
                Ok(Change::Applied(Command::TransferOwnership { org, to }))
            }
            Command::AcceptOwnership { org } => {
                let o = self.org_of(org)?;
                match (actor, &o.pending_owner) {
                    (Actor::User(user), Some(pending))
                        if user == pending && self.require_eligible(org, user).is_ok() =>
                    {
                        Ok(Change::Applied(Command::AcceptOwnership { org }))
                    }
                    _ => Err(not_allowed("only the offered new owner confirms a transfer")),
                }
            }
            // `decide` hands only the commands above to this topic.
            other => unreachable!("not a role command: {other:?}"),
        }
    }

    /// Whether `user` may be given an organisation's powers: an active member who is not a
    /// guest, or a user from outside the organisation (never a pending, deactivated or guest
    /// member).
    fn require_eligible(&self, org: OrgId, user: &str) -> Result<(), OrgError> {
        match self.member(org, user) {
            Some(m) if m.status != Status::Active => {
                Err(OrgError::WrongStatus { user: user.into(), status: m.status })
            }
            Some(m) if m.role == Role::Guest => Err(not_allowed("a guest holds no powers")),
            _ => Ok(()),
        }
    }

    /// The unit or group of `org` a group admin command names (exactly one of the two).
    fn managed(
        &self,
        org: OrgId,
        unit: Option<UnitId>,
        group: Option<&str>,
    ) -> Result<Managed, OrgError> {
        match (unit, group) {
            (Some(unit), None) => {
                self.unit_of(org, unit)?;
                Ok(Managed::Unit(unit))
            }
            (None, Some(group)) => match self.group(group) {
                Some(g) if g.org == Some(org) => Ok(Managed::Group(g.address.clone())),
                _ => Err(OrgError::Invalid(format!("{group} is not a group of the organisation"))),
            },
            _ => Err(OrgError::Invalid("name exactly one of unit and group".into())),
        }
    }

    pub(super) fn apply_role(&mut self, command: &Command) {
        match command {
            Command::NameGroupAdmin { org, user, unit, group } => {
                if let (Some(o), Some(what)) =
                    (self.orgs.get_mut(org), Managed::from_parts(*unit, group.clone()))
                {
                    o.group_admins.entry(user.clone()).or_default().insert(what);
                }
            }
            Command::RemoveGroupAdmin { org, user, unit, group } => {
                if let (Some(o), Some(what)) =
                    (self.orgs.get_mut(org), Managed::from_parts(*unit, group.clone()))
                    && let Some(managed) = o.group_admins.get_mut(user)
                {
                    managed.remove(&what);
                    if managed.is_empty() {
                        o.group_admins.remove(user);
                    }
                }
            }
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
