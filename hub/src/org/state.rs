//! The state every organisation rule reads: organisations, units, members, groups and keys,
//! in persistent maps; its look-ups; and [`OrgState::decide`] and [`OrgState::apply`], which
//! hand each command to the file of its topic.

use std::collections::BTreeSet;

use crate::org::{
    Actor, Change, Command, Event, Group, Key, Member, Org, OrgError, OrgId, Unit, UnitId,
};

/// Every organisation on the hub.
#[derive(Debug, Clone, Default)]
pub struct OrgState {
    // Persistent maps: every change publishes a new snapshot, and cloning one of these shares
    // everything it does not change (cloning std maps copied every member of every
    // organisation on each change: measured, most of the hub's time while a 3,000-member
    // organisation was being set up).
    pub(super) orgs: imbl::OrdMap<OrgId, Org>,
    pub(super) units: imbl::OrdMap<UnitId, Unit>,
    /// Members of each organisation, by user.
    pub(super) members: imbl::HashMap<OrgId, imbl::OrdMap<String, Member>>,
    /// The organisations each user is a member of.
    pub(super) by_user: imbl::HashMap<String, BTreeSet<OrgId>>,
    /// Every line address on the hub.
    pub(super) lines: imbl::HashMap<String, UnitId>,
    /// Groups by address (`#name`).
    pub(super) groups: imbl::OrdMap<String, Group>,
    /// Keys to lines, by id.
    pub(super) keys: imbl::OrdMap<u64, Key>,
    pub(super) next_id: u64,
}

impl OrgState {
    /// An organisation.
    pub fn org(&self, id: OrgId) -> Option<&Org> {
        self.orgs.get(&id)
    }

    /// The ids of every organisation.
    pub fn orgs_ids(&self) -> Vec<OrgId> {
        self.orgs.keys().copied().collect()
    }

    /// A unit.
    pub fn unit(&self, id: UnitId) -> Option<&Unit> {
        self.units.get(&id)
    }

    /// A member of `org`.
    pub fn member(&self, org: OrgId, user: &str) -> Option<&Member> {
        self.members.get(&org).and_then(|m| m.get(user))
    }

    pub(super) fn member_mut(&mut self, org: OrgId, user: &str) -> Option<&mut Member> {
        self.members.get_mut(&org).and_then(|m| m.get_mut(user))
    }

    pub(super) fn insert_member(&mut self, member: Member) {
        self.by_user.entry(member.user.clone()).or_default().insert(member.org);
        self.members.entry(member.org).or_default().insert(member.user.clone(), member);
    }

    pub(super) fn remove_member(&mut self, org: OrgId, user: &str) {
        if let Some(members) = self.members.get_mut(&org) {
            members.remove(user);
        }
        if let Some(orgs) = self.by_user.get_mut(user) {
            orgs.remove(&org);
            if orgs.is_empty() {
                self.by_user.remove(user);
            }
        }
    }

    /// The unit whose line address is `address`.
    pub fn line(&self, address: &str) -> Option<&Unit> {
        self.lines.get(address).and_then(|id| self.units.get(id))
    }

    /// Every unit (for reconciling line queues).
    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        self.units.values()
    }

    /// Every membership of `user`, in any organisation.
    pub fn memberships<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.by_user.get(user).into_iter().flatten().filter_map(move |org| self.member(*org, user))
    }

    /// Every member assigned to `unit`.
    pub fn members_of(&self, unit: UnitId) -> impl Iterator<Item = &Member> {
        let org = self.units.get(&unit).map(|u| u.org);
        org.and_then(|org| self.members.get(&org))
            .into_iter()
            .flat_map(|members| members.values())
            .filter(move |m| m.unit == Some(unit))
    }

    pub(super) fn org_of(&self, id: OrgId) -> Result<&Org, OrgError> {
        self.orgs.get(&id).ok_or(OrgError::UnknownOrg(id))
    }

    pub(super) fn unit_of(&self, org: OrgId, unit: UnitId) -> Result<&Unit, OrgError> {
        match self.units.get(&unit) {
            Some(u) if u.org == org => Ok(u),
            _ => Err(OrgError::UnknownUnit(unit)),
        }
    }

    /// The agreed domain an address of `org` belongs to (after merges), if any.
    /// Checks `command` by `actor` at `now`; returns the event that records it.
    pub fn decide(&self, actor: &Actor, command: Command, now: u64) -> Result<Event, OrgError> {
        let change = match command {
            command @ (Command::CreateOrg { .. }
            | Command::SetSeatLimit { .. }
            | Command::AddDomain { .. }
            | Command::ConfirmDomain { .. }
            | Command::MergeDomains { .. }
            | Command::DeleteOrg { .. }) => self.decide_org(actor, command)?,
            command @ (Command::CreateUnit { .. }
            | Command::SetLogo { .. }
            | Command::SetLogoPublic { .. }
            | Command::SetIncludeSubUnits { .. }
            | Command::GrantUnitRight { .. }
            | Command::RevokeUnitRight { .. }) => self.decide_unit(actor, command)?,
            command @ (Command::Register { .. }
            | Command::Invite { .. }
            | Command::AcceptInvitation { .. }
            | Command::AddMember { .. }
            | Command::Approve { .. }
            | Command::Assign { .. }
            | Command::Deactivate { .. }
            | Command::Reactivate { .. }
            | Command::ChangeMemberType { .. }
            | Command::MoveMember { .. }
            | Command::DeleteMember { .. }) => self.decide_member(actor, command, now)?,
            command @ (Command::NameAdmin { .. }
            | Command::RemoveAdmin { .. }
            | Command::NameGroupAdmin { .. }
            | Command::RemoveGroupAdmin { .. }
            | Command::TransferOwnership { .. }
            | Command::AcceptOwnership { .. }) => self.decide_role(actor, command)?,
            command @ (Command::IssueKey { .. }
            | Command::HandKey { .. }
            | Command::RevokeKey { .. }) => self.decide_key_change(actor, command, now)?,
            command @ (Command::CreateGroup { .. }
            | Command::AddGroupMember { .. }
            | Command::RemoveGroupMember { .. }
            | Command::AddSubgroup { .. }
            | Command::SetGroupScope { .. }
            | Command::DeleteGroup { .. }) => {
                self.decide_group(actor, &command, now)?;
                Change::Applied(command)
            }
        };
        let also = self.also_concerned(&change);
        Ok(Event { actor: actor.clone(), at_ms: now, change, also })
    }

    /// The organisations besides its own that a change concerns: both sides of a key, the
    /// organisation of a group.
    pub fn also_concerned(&self, change: &Change) -> Vec<OrgId> {
        let key_orgs = |key: u64| self.keys.get(&key).map(|k| vec![k.org, k.to_org]);
        let group_org = |group: &str| self.groups.get(group).and_then(|g| g.org);
        let mut also = match change {
            Change::KeyIssued(key) => vec![key.to_org],
            Change::KeyUseRefused { key, .. } | Change::KeyUsed { key, .. } => {
                key_orgs(*key).unwrap_or_default()
            }
            Change::Applied(command) => match command {
                Command::HandKey { key, .. } | Command::RevokeKey { key } => {
                    key_orgs(*key).unwrap_or_default()
                }
                Command::CreateGroup { org, .. } => org.iter().copied().collect(),
                Command::AddGroupMember { group, .. }
                | Command::RemoveGroupMember { group, .. }
                | Command::SetGroupScope { group, .. }
                | Command::DeleteGroup { group } => group_org(group).into_iter().collect(),
                Command::AddSubgroup { group, sub } => {
                    group_org(group).into_iter().chain(group_org(sub)).collect()
                }
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        also.sort();
        also.dedup();
        also
    }

    /// Folds an event (from [`OrgState::decide`], or read back from the log) into the state.
    pub fn apply(&mut self, event: &Event) {
        match &event.change {
            Change::OrgCreated { org, root } => self.apply_org_created(org, root),
            Change::UnitCreated(unit) => self.apply_unit_created(unit),
            Change::KeyIssued(key) => self.apply_key_issued(key),
            Change::KeyUseRefused { .. } | Change::KeyUsed { .. } => {}
            Change::Registered { org, user } => self.apply_registered(*org, user),
            Change::MemberDeactivated { org, user, .. } => self.apply_deactivated(*org, user),
            Change::MemberDeleted { org, user, reassign_to, .. } => {
                self.apply_delete_member(*org, user, reassign_to.as_deref());
            }
            Change::Applied(command) => self.apply_command(&event.actor, command, event.at_ms),
        }
    }

    fn apply_command(&mut self, actor: &Actor, command: &Command, at_ms: u64) {
        match command {
            Command::SetSeatLimit { .. }
            | Command::AddDomain { .. }
            | Command::ConfirmDomain { .. }
            | Command::MergeDomains { .. }
            | Command::DeleteOrg { .. } => self.apply_org(actor, command, at_ms),
            Command::SetLogo { .. }
            | Command::SetLogoPublic { .. }
            | Command::SetIncludeSubUnits { .. }
            | Command::GrantUnitRight { .. }
            | Command::RevokeUnitRight { .. } => self.apply_unit(command),
            Command::Invite { .. }
            | Command::AcceptInvitation { .. }
            | Command::AddMember { .. }
            | Command::Approve { .. }
            | Command::Assign { .. }
            | Command::Deactivate { .. }
            | Command::Reactivate { .. }
            | Command::ChangeMemberType { .. }
            | Command::MoveMember { .. }
            | Command::DeleteMember { .. } => self.apply_member(actor, command),
            Command::NameAdmin { .. }
            | Command::RemoveAdmin { .. }
            | Command::NameGroupAdmin { .. }
            | Command::RemoveGroupAdmin { .. }
            | Command::TransferOwnership { .. }
            | Command::AcceptOwnership { .. } => self.apply_role(command),
            Command::HandKey { .. } | Command::RevokeKey { .. } => self.apply_key(command),
            Command::CreateGroup { .. }
            | Command::AddGroupMember { .. }
            | Command::RemoveGroupMember { .. }
            | Command::AddSubgroup { .. }
            | Command::SetGroupScope { .. }
            | Command::DeleteGroup { .. } => self.apply_group(command),
            // Recorded as changes of their own (with the ids they allocated).
            Command::CreateOrg { .. }
            | Command::CreateUnit { .. }
            | Command::Register { .. }
            | Command::IssueKey { .. } => {}
        }
    }

    /// Decides and applies in one step (for tests and the single-writer admin path).
    pub fn execute(
        &mut self,
        actor: &Actor,
        command: Command,
        now: u64,
    ) -> Result<Event, OrgError> {
        let event = self.decide(actor, command, now)?;
        self.apply(&event);
        Ok(event)
    }
}
