//! Read-only views for those who run an organisation: who the caller is in each organisation
//! (`GET /v1/me`), an organisation at a glance (`GET /v1/org/overview`) and the groups the
//! caller may see (`GET /v1/org/groups`). The console's pages are made from these, so what a
//! page shows is what the API shows the same token.

use serde::Serialize;

use super::{
    Actor, Managed, OrgError, OrgId, OrgState, Right, Role, Scope, Status, UnitId, not_allowed,
};

/// Who a token acts as, and what it is in each organisation it has a part in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standing {
    /// `operator` or `user`.
    pub actor: &'static str,
    /// The user's address (none for the operator).
    pub user: Option<String>,
    /// The organisations: every one for the operator; for a user, those they are a member
    /// (of any status), an admin or a group admin of.
    pub orgs: Vec<OrgStanding>,
}

/// What the caller is in one organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrgStanding {
    /// The organisation.
    pub org: OrgId,
    /// Its name.
    pub name: String,
    /// The role the caller holds now (`owner`, `admin`, `member`, `guest`); none for the
    /// operator, and for a member who is not active.
    pub role: Option<Role>,
    /// The caller's membership status, if a member.
    pub status: Option<Status>,
    /// Whether the caller may see and manage the members (onboard, approve or manage).
    pub manages_members: bool,
    /// Whether the caller reads the organisation's event log.
    pub reads_log: bool,
    /// The units (lines) and groups the caller looks after as a group admin.
    pub group_admin_of: Vec<String>,
}

/// An organisation at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// Its id.
    pub org: OrgId,
    /// Its name.
    pub name: String,
    /// The owner.
    pub owner: String,
    /// Who was asked to take ownership and has not yet accepted.
    pub pending_owner: Option<String>,
    /// Its admins.
    pub admins: Vec<String>,
    /// Seats taken now and the limit.
    pub seats_taken: u32,
    /// The seat limit.
    pub seat_limit: u32,
    /// Domains: agreed (proven) ones and claims waiting for their DNS record.
    pub domains: Vec<DomainView>,
    /// Every unit, the root first, each after its parent.
    pub units: Vec<UnitView>,
    /// Group admins and what each looks after (lines and group addresses).
    pub group_admins: Vec<GroupAdminView>,
}

/// A domain of an [`Overview`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainView {
    /// The domain.
    pub domain: String,
    /// `verified` (agreed), `claimed` (waiting for its TXT record) or `merged` (an alias of
    /// `into`).
    pub state: &'static str,
    /// For a merged domain, the domain that holds it now.
    pub into: Option<String>,
}

/// A unit of an [`Overview`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitView {
    /// Its id.
    pub id: UnitId,
    /// Its parent (none for the root).
    pub parent: Option<UnitId>,
    /// How many units lie above it (0 for the root).
    pub depth: usize,
    /// Its name.
    pub name: String,
    /// Its line.
    pub line: String,
    /// Whether its line reaches its sub-units' members.
    pub include_sub_units: bool,
    /// Rights granted to the unit.
    pub rights: Vec<Right>,
    /// Whether it has a logo, and whether anyone may see it.
    pub logo: bool,
    /// Whether the logo is public.
    pub logo_public: bool,
    /// Active members in the unit itself.
    pub members: usize,
}

/// A group admin of an [`Overview`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupAdminView {
    /// The member.
    pub user: String,
    /// The lines and groups they look after.
    pub manages: Vec<String>,
}

/// A group as the caller may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// `#name`.
    pub address: String,
    /// Its owner.
    pub owner: String,
    /// Its organisation.
    pub org: Option<OrgId>,
    /// Who may address it.
    pub scope: Scope,
    /// Whether members only receive and cannot see each other.
    pub anonymous: bool,
    /// Its members; none when the caller may not see them (an anonymous group the caller does
    /// not manage).
    pub members: Option<Vec<String>>,
    /// Its subgroups.
    pub subgroups: Vec<String>,
    /// Whether the caller manages it (owner, the organisation's group managers, operator).
    pub manages: bool,
    /// Whether the caller is one of its group admins.
    pub group_admin: bool,
}

impl OrgState {
    /// Who `actor` is, and their part in each organisation.
    pub fn standing(&self, actor: &Actor) -> Standing {
        let user = match actor {
            Actor::User(user) => Some(user.clone()),
            _ => None,
        };
        let orgs = self
            .orgs
            .values()
            .filter(|org| match &user {
                None => *actor == Actor::Operator,
                Some(user) => {
                    self.member(org.id, user).is_some()
                        || org.admins.contains(user)
                        || org.owner == *user
                        || org.group_admins.contains_key(user)
                }
            })
            .map(|org| {
                let member = user.as_deref().and_then(|u| self.member(org.id, u));
                let manages_members =
                    [Right::OnboardMembers, Right::ApproveRegistrations, Right::ManageMembers]
                        .into_iter()
                        .any(|right| self.holds(org, actor, right));
                OrgStanding {
                    org: org.id,
                    name: org.name.clone(),
                    role: self.role_of(org, actor),
                    status: member.map(|m| m.status),
                    manages_members,
                    reads_log: self.holds(org, actor, Right::ReadEventLog),
                    group_admin_of: self.managed_by(org.id, actor),
                }
            })
            .collect();
        Standing { actor: if user.is_some() { "user" } else { "operator" }, user, orgs }
    }

    /// The lines and groups `actor` looks after as a group admin of `org` (none unless an
    /// active member).
    fn managed_by(&self, org: OrgId, actor: &Actor) -> Vec<String> {
        let (Some(o), Actor::User(user)) = (self.orgs.get(&org), actor) else { return Vec::new() };
        o.group_admins
            .get(user)
            .into_iter()
            .flatten()
            .filter(|what| self.is_group_admin(o, actor, what))
            .map(|what| self.managed_name(what))
            .collect()
    }

    /// `org` at a glance, for its owner, admins and group admins, and the operator.
    pub fn overview(&self, actor: &Actor, org: OrgId, now: u64) -> Result<Overview, OrgError> {
        let o = self.org_of(org)?;
        let admin = *actor == Actor::Operator
            || matches!(self.role_of(o, actor), Some(Role::Owner | Role::Admin));
        if !admin && self.managed_by(org, actor).is_empty() {
            return Err(not_allowed("the owner, admins and group admins see the organisation"));
        }
        let mut domains: Vec<DomainView> = o
            .domains
            .iter()
            .map(|d| DomainView { domain: d.clone(), state: "verified", into: None })
            .collect();
        domains.extend(o.claims.keys().map(|d| DomainView {
            domain: d.clone(),
            state: "claimed",
            into: None,
        }));
        domains.extend(o.merged.iter().map(|(from, into)| DomainView {
            domain: from.clone(),
            state: "merged",
            into: Some(into.clone()),
        }));
        let mut units = Vec::new();
        let mut todo = vec![(o.root, 0)];
        while let Some((id, depth)) = todo.pop() {
            let Some(unit) = self.units.get(&id) else { continue };
            let members =
                self.members_of(id).filter(|m| m.org == org && m.status == Status::Active).count();
            units.push(UnitView {
                id,
                parent: unit.parent,
                depth,
                name: unit.name.clone(),
                line: unit.address.clone(),
                include_sub_units: unit.include_sub_units,
                rights: unit.rights.iter().copied().collect(),
                logo: unit.logo.is_some(),
                logo_public: unit.logo_public,
                members,
            });
            let mut children: Vec<_> =
                self.units.values().filter(|u| u.parent == Some(id)).collect();
            // Popped last first: push in reverse so that siblings come out by name.
            children.sort_by(|a, b| b.name.cmp(&a.name));
            todo.extend(children.into_iter().map(|u| (u.id, depth + 1)));
        }
        let group_admins = o
            .group_admins
            .iter()
            .map(|(user, managed)| GroupAdminView {
                user: user.clone(),
                manages: managed.iter().map(|m| self.managed_name(m)).collect(),
            })
            .collect();
        Ok(Overview {
            org,
            name: o.name.clone(),
            owner: o.owner.clone(),
            pending_owner: o.pending_owner.clone(),
            admins: o.admins.iter().cloned().collect(),
            seats_taken: self.seats_taken(org, now),
            seat_limit: o.seat_limit,
            domains,
            units,
            group_admins,
        })
    }

    /// The groups `actor` may see: every group for the operator; for a user, those they
    /// manage, look after as a group admin, own or belong to. An anonymous group's members are
    /// shown only to those who manage it.
    pub fn groups_seen_by(&self, actor: &Actor) -> Vec<GroupView> {
        self.groups()
            .filter_map(|group| {
                let manages = self.manages(group, actor);
                let group_admin = group.org.and_then(|o| self.orgs.get(&o)).is_some_and(|org| {
                    self.is_group_admin(org, actor, &Managed::Group(group.address.clone()))
                });
                let member = matches!(actor, Actor::User(u) if group.members.contains(u));
                if !(manages || group_admin || member) {
                    return None;
                }
                let members =
                    (!group.anonymous || manages).then(|| group.members.iter().cloned().collect());
                Some(GroupView {
                    address: group.address.clone(),
                    owner: group.owner.clone(),
                    org: group.org,
                    scope: group.scope,
                    anonymous: group.anonymous,
                    members,
                    subgroups: group.subgroups.iter().cloned().collect(),
                    manages,
                    group_admin,
                })
            })
            .collect()
    }
}
