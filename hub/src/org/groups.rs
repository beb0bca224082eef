//! Groups: named recipients with an owner, members and subgroups, a scope saying who may
//! address them, and an anonymous mode in which members only receive.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{Address, AddressKind};

use crate::org::{
    Actor, Command, MAX_ADDRESS, Managed, OrgError, OrgId, OrgState, Right, Role, SendRefusal,
    Status, account, account_in, not_allowed,
};

/// Who may address a group.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Its owner (and those who manage it) only.
    #[default]
    Owner,
    /// Its members.
    Group,
    /// Members of its organisation.
    Account,
    /// Users of every hub the operator runs: this hub and the peers its configuration marks
    /// `provider`.
    Provider,
    /// Every user of this hub.
    Server,
    /// Users of any hub.
    Public,
}

/// Groups outside organisations one user may own (the operator may make more for them).
pub const MAX_OWN_GROUPS: usize = 100;

/// A group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// `#name`, unique on the hub.
    pub address: String,
    /// Its owner.
    pub owner: String,
    /// The organisation it is linked to.
    pub org: Option<OrgId>,
    /// Who may address it.
    pub scope: Scope,
    /// Members receive, cannot send to it and cannot see each other.
    pub anonymous: bool,
    /// Members.
    pub members: BTreeSet<String>,
    /// Subgroups, by address.
    pub subgroups: BTreeSet<String>,
}

fn group_address(field: &str, name: &str) -> Result<String, OrgError> {
    let why = |why: String| OrgError::Field { field: field.into(), why };
    if name.len() > MAX_ADDRESS {
        return Err(why(format!("longer than {MAX_ADDRESS} bytes")));
    }
    match Address::parse(name) {
        Ok(address) if address.kind() == AddressKind::Group => Ok(address.as_str().to_string()),
        _ => Err(why(format!("{name:?} is not a group address (#name)"))),
    }
}

impl OrgState {
    /// A group by address.
    pub fn group(&self, address: &str) -> Option<&Group> {
        self.groups.get(address)
    }

    /// Every group.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Whether `actor` manages `group`: its owner, or one who holds the manage-groups right in
    /// its organisation.
    pub fn manages(&self, group: &Group, actor: &Actor) -> bool {
        match actor {
            Actor::Operator => true,
            Actor::Hub => false,
            Actor::User(user) => {
                &group.owner == user
                    || group
                        .org
                        .and_then(|o| self.orgs.get(&o))
                        .is_some_and(|org| self.holds(org, actor, Right::ManageGroups))
            }
        }
    }

    /// Whether `actor` may put `user` into `group`, or take them out: those who manage it
    /// (anyone with a user address), and the group's group admins (only the active members,
    /// not guests, of the group's organisation).
    fn may_assign(&self, group: &Group, actor: &Actor, user: &str) -> Result<(), OrgError> {
        if self.manages(group, actor) {
            return Ok(());
        }
        let Some(org) = group.org.and_then(|o| self.orgs.get(&o)) else {
            return Err(not_allowed("the group's managers and group admins assign members"));
        };
        if !self.is_group_admin(org, actor, &Managed::Group(group.address.clone())) {
            return Err(not_allowed("the group's managers and group admins assign members"));
        }
        match self.member(org.id, user) {
            Some(m) if m.status == Status::Active && m.role != Role::Guest => Ok(()),
            _ => Err(not_allowed(
                "a group admin assigns only active members of the group's organisation",
            )),
        }
    }

    /// Whether `group` holds a working key to a line of `org` (issued by `org` to the group's
    /// organisation and handed to it).
    fn reached_through_key(&self, org: Option<OrgId>, group: &str, now: u64) -> bool {
        let Some(org) = org else { return false };
        let group_org = self.groups.get(group).and_then(|g| g.org);
        self.keys.values().any(|k| {
            k.org == org
                && Some(k.to_org) == group_org
                && !k.revoked
                && k.expires_ms > now
                && k.groups.contains(group)
        })
    }

    /// Every user who reads `group`: its owner, its members, and its subgroups' (at any depth).
    pub fn group_readers(&self, address: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo = vec![address.to_string()];
        while let Some(next) = todo.pop() {
            if !seen.insert(next.clone()) {
                continue;
            }
            if let Some(group) = self.groups.get(&next) {
                out.insert(group.owner.clone());
                out.extend(group.members.iter().cloned());
                todo.extend(group.subgroups.iter().cloned());
            }
        }
        out
    }

    pub(super) fn decide_group(
        &self,
        actor: &Actor,
        command: &Command,
        now: u64,
    ) -> Result<(), OrgError> {
        let known = |address: &str| {
            self.groups.get(address).ok_or_else(|| OrgError::Invalid(format!("no group {address}")))
        };
        match command {
            Command::CreateGroup { name, owner, org, .. } => {
                let address = group_address("name", name)?;
                if self.groups.contains_key(&address) {
                    return Err(OrgError::Taken(address));
                }
                if owner.is_empty() {
                    return Err(OrgError::Invalid("a group needs an owner".into()));
                }
                account_in("owner", owner)?;
                match org {
                    Some(id) => {
                        let o = self.orgs.get(id).ok_or(OrgError::UnknownOrg(*id))?;
                        if !self.holds(o, actor, Right::ManageGroups) {
                            return Err(OrgError::NotAllowed {
                                rule: "admins create the groups of an organisation",
                            });
                        }
                        // An organisation's group is owned by one of its active members.
                        match self.member(*id, owner) {
                            Some(m) if m.status == Status::Active && m.role != Role::Guest => {}
                            _ => {
                                return Err(OrgError::Invalid(format!(
                                    "{owner} is not an active member of the organisation"
                                )));
                            }
                        }
                    }
                    None => {
                        if *actor != Actor::User(owner.clone()) && *actor != Actor::Operator {
                            return Err(OrgError::NotAllowed {
                                rule: "a user creates groups they own",
                            });
                        }
                        // A quota, so that one user cannot fill the hub with groups (seen: 5,263
                        // in 20 s); the operator is not held to it.
                        let owned = self
                            .groups
                            .values()
                            .filter(|g| g.org.is_none() && g.owner == *owner)
                            .count();
                        if *actor != Actor::Operator && owned >= MAX_OWN_GROUPS {
                            return Err(OrgError::NotAllowed {
                                rule: "a user owns at most 100 groups outside organisations",
                            });
                        }
                    }
                }
                Ok(())
            }
            Command::AddGroupMember { group, user } => {
                let g = known(group)?;
                account(user)?;
                self.may_assign(g, actor, user)
            }
            Command::RemoveGroupMember { group, user } => {
                let g = known(group)?;
                if !g.members.contains(user) {
                    return Err(OrgError::UnknownMember(user.clone()));
                }
                self.may_assign(g, actor, user)
            }
            Command::AddSubgroup { group, sub } => {
                let g = known(group)?;
                let s = known(sub)?;
                // Whoever adds a subgroup reaches its members: it must be a group they manage,
                // of the same organisation (or both of none).
                if !self.manages(s, actor) {
                    return Err(not_allowed("a subgroup must be one the actor manages"));
                }
                if s.org != g.org && !self.reached_through_key(g.org, &s.address, now) {
                    return Err(not_allowed(
                        "a subgroup must be of the group's organisation, or hold a key of it",
                    ));
                }
                // No cycles: `group` must not already be reachable from `sub`.
                let mut seen = BTreeSet::new();
                let mut todo = vec![sub.clone()];
                while let Some(next) = todo.pop() {
                    if &next == group {
                        return Err(OrgError::Invalid("subgroups may not form a cycle".into()));
                    }
                    if seen.insert(next.clone())
                        && let Some(g) = self.groups.get(&next)
                    {
                        todo.extend(g.subgroups.iter().cloned());
                    }
                }
                if self.manages(g, actor) {
                    Ok(())
                } else {
                    Err(OrgError::NotAllowed { rule: "the group's managers add subgroups" })
                }
            }
            Command::SetGroupScope { group, .. } | Command::DeleteGroup { group } => {
                let g = known(group)?;
                if self.manages(g, actor) {
                    Ok(())
                } else {
                    Err(OrgError::NotAllowed {
                        rule: "only the group's owner and managers change it",
                    })
                }
            }
            _ => Ok(()),
        }
    }

    pub(super) fn apply_group(&mut self, command: &Command) {
        match command {
            Command::CreateGroup { name, owner, org, scope, anonymous } => {
                if let Ok(address) = group_address("name", name) {
                    let group = Group {
                        address: address.clone(),
                        owner: owner.clone(),
                        org: *org,
                        scope: *scope,
                        anonymous: *anonymous,
                        members: BTreeSet::new(),
                        subgroups: BTreeSet::new(),
                    };
                    self.groups.insert(address, group);
                }
            }
            Command::AddGroupMember { group, user } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.members.insert(user.clone());
                }
            }
            Command::RemoveGroupMember { group, user } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.members.remove(user);
                }
            }
            Command::AddSubgroup { group, sub } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.subgroups.insert(sub.clone());
                }
            }
            Command::SetGroupScope { group, scope } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.scope = *scope;
                }
            }
            Command::DeleteGroup { group } => {
                self.groups.remove(group);
                self.update_groups(
                    |g| g.subgroups.contains(group),
                    |g| {
                        g.subgroups.remove(group);
                    },
                );
            }
            _ => {}
        }
    }

    /// A deleted member's groups: those linked to an organisation pass to its owner; the
    /// others are deleted with their owner.
    pub(super) fn forget_group_owner(&mut self, user: &str, _org: Option<OrgId>) {
        let owned: Vec<String> =
            self.groups.values().filter(|g| g.owner == user).map(|g| g.address.clone()).collect();
        for address in owned {
            let linked_owner = self.groups[&address]
                .org
                .and_then(|o| self.orgs.get(&o))
                .map(|org| org.owner.clone());
            match linked_owner {
                Some(owner) => {
                    if let Some(g) = self.groups.get_mut(&address) {
                        g.owner = owner;
                    }
                }
                None => self.apply_group(&Command::DeleteGroup { group: address }),
            }
        }
        self.update_groups(
            |g| g.members.contains(user),
            |g| {
                g.members.remove(user);
            },
        );
    }

    /// Changes the groups that `select` picks. Only those are copied: the others stay shared
    /// with earlier snapshots.
    pub(super) fn update_groups(
        &mut self,
        select: impl Fn(&Group) -> bool,
        mut change: impl FnMut(&mut Group),
    ) {
        let picked: Vec<String> =
            self.groups.values().filter(|g| select(g)).map(|g| g.address.clone()).collect();
        for address in picked {
            if let Some(group) = self.groups.get_mut(&address) {
                change(group);
            }
        }
    }

    /// The rule for a send by `sender` to the group `to`.
    pub(super) fn check_group_send(&self, sender: &str, group: &Group) -> Result<(), SendRefusal> {
        let actor = Actor::User(sender.to_string());
        if self.manages(group, &actor) {
            return Ok(());
        }
        let refuse = |rule: &str| Err(SendRefusal::NotAllowed(format!("rule: {rule}")));
        let reads = self.group_readers(&group.address).contains(sender);
        if group.anonymous && reads {
            return refuse("an anonymous group is read-only for its members");
        }
        match group.scope {
            Scope::Owner => refuse("this group takes messages from its owner only"),
            Scope::Group if reads => Ok(()),
            Scope::Group => refuse("this group takes messages from its members only"),
            Scope::Account => {
                let in_org = group.org.is_some_and(|o| {
                    self.member(o, sender).is_some_and(|m| m.status == Status::Active)
                });
                if in_org || reads {
                    Ok(())
                } else {
                    refuse("this group takes messages from its organisation's members only")
                }
            }
            Scope::Provider | Scope::Server | Scope::Public => Ok(()),
        }
    }
}
