//! Members and their life cycle: self-registration (pending until approved), invitations
//! (members skip approval; guests answer only whoever invited them), approval, assignment to
//! one unit, deactivation, and deletion with an optional heir.

use serde::{Deserialize, Serialize};

use crate::org::{
    Actor, Change, Command, Managed, Org, OrgError, OrgId, OrgState, Right, Role, UnitId, account,
    not_allowed,
};

/// A member's life-cycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Registered, waiting for an admin's approval.
    Pending,
    /// A member.
    Active,
    /// Cannot connect; may be deleted.
    Deactivated,
}

/// A member of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user's address.
    pub user: String,
    /// The organisation.
    pub org: OrgId,
    /// The one unit the member belongs to (none until assigned).
    pub unit: Option<UnitId>,
    /// Life-cycle status.
    pub status: Status,
    /// Role within the organisation.
    pub role: Role,
    /// For an invited member or guest: the member (address) or unit (line address) that
    /// invited them. A guest may answer only them.
    #[serde(default)]
    pub invited_by: Option<String>,
}

/// An open invitation (to become a member or a guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// SHA-256 of the code, hex; the code itself is never logged.
    pub code_hash: String,
    /// When the code stops working, Unix milliseconds.
    pub expires_ms: u64,
    /// A guest rather than a member.
    pub guest: bool,
    /// Who invited: a member's address or a unit's line address.
    pub invited_by: String,
}

/// The hash under which an invitation code is logged (SHA-256 of the trimmed code, hex): the
/// code itself never is.
pub fn code_hash(code: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(code.trim().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// An organisation's members as its admins see them (`GET /v1/org/members`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Roster {
    /// Seats taken now (active members, registrations awaiting approval, open invitations
    /// to join as a member).
    pub seats_taken: u32,
    /// The seat limit.
    pub seat_limit: u32,
    /// Every member, pending ones included.
    pub members: Vec<RosterEntry>,
    /// Invitations not yet accepted.
    pub invitations: Vec<RosterInvitation>,
}

/// One member in a [`Roster`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RosterEntry {
    /// The member's address.
    pub user: String,
    /// `pending` (awaiting approval), `active` or `deactivated`.
    pub status: Status,
    /// `member` or `guest` (the owner and admins are members).
    pub role: Role,
    /// Whether they are the owner.
    pub owner: bool,
    /// Whether they are an admin.
    pub admin: bool,
    /// Their unit's line, if they are in one.
    pub unit: Option<String>,
    /// The units (lines) and groups they look after as a group admin.
    pub group_admin_of: Vec<String>,
}

/// An open invitation in a [`Roster`]: a pending member whose address is not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RosterInvitation {
    /// The invited address.
    pub user: String,
    /// As a guest.
    pub guest: bool,
    /// Who invited: a member's address or a unit's line.
    pub invited_by: String,
    /// When the code stops working, Unix milliseconds.
    pub expires_ms: u64,
}

impl OrgState {
    /// The roster of `org` for `actor`: those who onboard, approve or manage members.
    pub fn roster(&self, actor: &Actor, org: OrgId, now: u64) -> Result<Roster, OrgError> {
        let o = self.org_of(org)?;
        let may = [Right::OnboardMembers, Right::ApproveRegistrations, Right::ManageMembers]
            .into_iter()
            .any(|right| self.holds(o, actor, right));
        if !may {
            return Err(not_allowed("admins see the organisation's members"));
        }
        let members = self
            .members
            .get(&org)
            .into_iter()
            .flat_map(|m| m.values())
            .map(|m| RosterEntry {
                user: m.user.clone(),
                status: m.status,
                role: if m.role == Role::Guest { Role::Guest } else { Role::Member },
                owner: o.owner == m.user,
                admin: o.admins.contains(&m.user),
                unit: m.unit.and_then(|u| self.units.get(&u)).map(|u| u.address.clone()),
                group_admin_of: o
                    .group_admins
                    .get(&m.user)
                    .into_iter()
                    .flatten()
                    .map(|managed| self.managed_name(managed))
                    .collect(),
            })
            .collect();
        let invitations = o
            .invitations
            .iter()
            .filter(|(_, i)| i.expires_ms > now)
            .map(|(user, i)| RosterInvitation {
                user: user.clone(),
                guest: i.guest,
                invited_by: i.invited_by.clone(),
                expires_ms: i.expires_ms,
            })
            .collect();
        Ok(Roster {
            seats_taken: self.seats_taken(org, now),
            seat_limit: o.seat_limit,
            members,
            invitations,
        })
    }

    pub(super) fn decide_member(
        &self,
        actor: &Actor,
        command: Command,
        now: u64,
    ) -> Result<Change, OrgError> {
        match command {
            Command::Register { org } => self.decide_register(actor, org, now),
            Command::Invite { org, user, guest, unit, code_hash, expires_ms } => {
                let invite = Command::Invite { org, user, guest, unit, code_hash, expires_ms };
                self.decide_invite(actor, invite, now)
            }
            Command::AcceptInvitation { org, code_hash } => {
                self.decide_accept_invitation(actor, org, code_hash, now)
            }
            Command::AddMember { org, user } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::OnboardMembers, "admins onboard members")?;
                let address = account(&user)?;
                if self.agreed_domain(o, &address).is_none() {
                    return Err(OrgError::DomainNotAgreed { address: user });
                }
                if self.member(org, address.as_str()).is_some() {
                    return Err(OrgError::Taken(user));
                }
                if self.seats_taken(org, now) >= o.seat_limit {
                    return Err(OrgError::SeatLimit { limit: o.seat_limit });
                }
                let user = address.as_str().to_string();
                Ok(Change::Applied(Command::AddMember { org, user }))
            }
            Command::Approve { org, user } => {
                let o = self.org_of(org)?;
                let rule = "admins approve registrations";
                self.require(o, actor, Right::ApproveRegistrations, rule)?;
                self.require_status(org, &user, |s| s == Status::Pending)?;
                Ok(Change::Applied(Command::Approve { org, user }))
            }
            Command::Assign { org, user, unit } => self.decide_assign(actor, org, user, unit),
            Command::Deactivate { org, user } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageMembers, "admins deactivate members")?;
                if user == o.owner {
                    return Err(not_allowed("the owner's account cannot be deactivated"));
                }
                self.require_status(org, &user, |s| s != Status::Deactivated)?;
                let dropped = self.duties_of(o, &user);
                Ok(Change::MemberDeactivated { org, user, dropped })
            }
            Command::Reactivate { org, user } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageMembers, "admins reactivate members")?;
                let member = self.require_status(org, &user, |s| s == Status::Deactivated)?;
                if member.role != Role::Guest && self.seats_taken(org, now) >= o.seat_limit {
                    return Err(OrgError::SeatLimit { limit: o.seat_limit });
                }
                Ok(Change::Applied(Command::Reactivate { org, user }))
            }
            Command::ChangeMemberType { org, user, guest } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageMembers, "admins change a member's type")?;
                if user == o.owner || o.admins.contains(&user) {
                    return Err(not_allowed("the owner and admins are always members"));
                }
                let member = self.require_status(org, &user, |s| s == Status::Active)?;
                if (member.role == Role::Guest) == guest {
                    return Err(OrgError::Invalid(format!(
                        "{user} is already a {}",
                        if guest { "guest" } else { "member" }
                    )));
                }
                if !guest {
                    if self.agreed_domain(o, &account(&user)?).is_none() {
                        return Err(OrgError::DomainNotAgreed { address: user });
                    }
                    if self.seats_taken(org, now) >= o.seat_limit {
                        return Err(OrgError::SeatLimit { limit: o.seat_limit });
                    }
                }
                Ok(Change::Applied(Command::ChangeMemberType { org, user, guest }))
            }
            Command::MoveMember { org, user, unit } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::AssignMembers, "admins move members")?;
                self.unit_of(org, unit)?;
                let member = self.require_status(org, &user, |s| s == Status::Active)?;
                if member.role == Role::Guest {
                    return Err(OrgError::Invalid(format!("{user} is a guest, not in a unit")));
                }
                if member.unit == Some(unit) {
                    return Err(OrgError::Invalid(format!("{user} is in that unit already")));
                }
                Ok(Change::Applied(Command::MoveMember { org, user, unit }))
            }
            Command::DeleteMember { org, user, reassign_to } => {
                self.decide_delete_member(actor, org, user, reassign_to)
            }
            // `decide` hands only the commands above to this topic.
            other => unreachable!("not a member command: {other:?}"),
        }
    }

    /// The organisation in which `actor` may onboard `address`: one where they hold the
    /// onboarding right and whose agreed domains hold the address.
    pub fn onboarding_org(&self, actor: &Actor, address: &str) -> Option<OrgId> {
        let address = account(address).ok()?;
        self.orgs
            .values()
            .filter(|o| self.agreed_domain(o, &address).is_some())
            .find(|o| self.holds(o, actor, Right::OnboardMembers))
            .map(|o| o.id)
    }

    /// Whether `actor` looks after the account of `user` (makes tokens and enrolment codes for
    /// it): the user themself, the operator, or one who holds the onboarding right in an
    /// organisation `user` is a member (not a guest) of, with an address in its agreed domains.
    pub fn looks_after(&self, actor: &Actor, user: &str) -> bool {
        match actor {
            Actor::Operator => true,
            Actor::Hub => false,
            Actor::User(me) if me == user => true,
            // Only for the organisation's own people: a guest (from elsewhere) or an address
            // outside its agreed domains stays out of its admins' reach.
            Actor::User(_) => {
                let Ok(address) = account(user) else { return false };
                self.memberships(user).filter(|m| m.role != Role::Guest).any(|m| {
                    self.orgs.get(&m.org).is_some_and(|o| {
                        self.agreed_domain(o, &address).is_some()
                            && self.holds(o, actor, Right::OnboardMembers)
                    })
                })
            }
        }
    }

    /// The member `user` of `org`, if its status passes `allowed`.
    fn require_status(
        &self,
        org: OrgId,
        user: &str,
        allowed: impl Fn(Status) -> bool,
    ) -> Result<&Member, OrgError> {
        let member = self.member(org, user).ok_or_else(|| OrgError::UnknownMember(user.into()))?;
        if !allowed(member.status) {
            return Err(OrgError::WrongStatus { user: user.into(), status: member.status });
        }
        Ok(member)
    }

    fn decide_register(&self, actor: &Actor, org: OrgId, now: u64) -> Result<Change, OrgError> {
        let o = self.org_of(org)?;
        let Actor::User(user) = actor else {
            return Err(not_allowed("a user registers themselves"));
        };
        let address = account(user)?;
        if self.agreed_domain(o, &address).is_none() {
            return Err(OrgError::DomainNotAgreed { address: user.clone() });
        }
        if self.member(org, user).is_some() {
            return Err(OrgError::Taken(user.clone()));
        }
        if self.seats_taken(org, now) >= o.seat_limit {
            return Err(OrgError::SeatLimit { limit: o.seat_limit });
        }
        Ok(Change::Registered { org, user: address.as_str().to_string() })
    }

    fn decide_invite(&self, actor: &Actor, invite: Command, now: u64) -> Result<Change, OrgError> {
        let Command::Invite { org, user, guest, unit, code_hash, expires_ms } = invite else {
            return Err(OrgError::Invalid("not an invitation".into()));
        };
        let o = self.org_of(org)?;
        self.require(o, actor, Right::OnboardMembers, "admins invite members and guests")?;
        let address = account(&user)?;
        if !guest && self.agreed_domain(o, &address).is_none() {
            return Err(OrgError::DomainNotAgreed { address: user });
        }
        if self.member(org, address.as_str()).is_some() {
            return Err(OrgError::Taken(user));
        }
        if let Some(unit) = unit {
            self.unit_of(org, unit)?;
        }
        // An invitation to join as a member holds a seat while it is open; inviting the same
        // address again replaces it, and takes no second seat.
        let replaces =
            o.invitations.get(address.as_str()).is_some_and(|i| !i.guest && i.expires_ms > now);
        if !guest && !replaces && self.seats_taken(org, now) >= o.seat_limit {
            return Err(OrgError::SeatLimit { limit: o.seat_limit });
        }
        if code_hash.len() != 64 || expires_ms <= now {
            return Err(OrgError::Invalid(
                "an invitation needs a code hash and a future expiry".into(),
            ));
        }
        let user = address.as_str().to_string();
        Ok(Change::Applied(Command::Invite { org, user, guest, unit, code_hash, expires_ms }))
    }

    fn decide_accept_invitation(
        &self,
        actor: &Actor,
        org: OrgId,
        code_hash: String,
        now: u64,
    ) -> Result<Change, OrgError> {
        let o = self.org_of(org)?;
        let Actor::User(user) = actor else {
            return Err(not_allowed("the invited user accepts an invitation"));
        };
        let refused = || not_allowed("the invitation code is unknown, spent or expired");
        let invitation = o.invitations.get(user).ok_or_else(refused)?;
        if invitation.code_hash != code_hash || invitation.expires_ms <= now {
            return Err(refused());
        }
        // The invitation held its seat until now; accepting takes that same seat.
        if !invitation.guest && self.seats_taken(org, now) > o.seat_limit {
            return Err(OrgError::SeatLimit { limit: o.seat_limit });
        }
        Ok(Change::Applied(Command::AcceptInvitation { org, code_hash }))
    }

    fn decide_assign(
        &self,
        actor: &Actor,
        org: OrgId,
        user: String,
        unit: UnitId,
    ) -> Result<Change, OrgError> {
        let o = self.org_of(org)?;
        self.unit_of(org, unit)?;
        if !self.holds(o, actor, Right::AssignMembers)
            && !self.is_group_admin(o, actor, &Managed::Unit(unit))
        {
            return Err(not_allowed(
                "admins, and the unit's group admins, assign members to a unit",
            ));
        }
        let member = self.require_status(org, &user, |s| s == Status::Active)?;
        if member.role == Role::Guest {
            return Err(OrgError::Invalid(format!("{user} is a guest, not in a unit")));
        }
        if member.unit.is_some() {
            return Err(OrgError::AlreadyAssigned { user });
        }
        Ok(Change::Applied(Command::Assign { org, user, unit }))
    }

    /// The duties `user` holds in `org` beyond membership, in words: what ends when they are
    /// deactivated.
    fn duties_of(&self, org: &Org, user: &str) -> Vec<String> {
        let mut duties = Vec::new();
        if org.admins.contains(user) {
            duties.push("admin".to_string());
        }
        for managed in org.group_admins.get(user).into_iter().flatten() {
            duties.push(format!("group admin of {}", self.managed_name(managed)));
        }
        duties
    }

    pub(super) fn managed_name(&self, managed: &Managed) -> String {
        match managed {
            Managed::Unit(unit) => {
                self.units.get(unit).map_or(format!("unit {}", unit.0), |u| u.address.clone())
            }
            Managed::Group(group) => group.clone(),
        }
    }

    fn decide_delete_member(
        &self,
        actor: &Actor,
        org: OrgId,
        user: String,
        reassign_to: Option<String>,
    ) -> Result<Change, OrgError> {
        let o = self.org_of(org)?;
        self.require(o, actor, Right::ManageMembers, "admins delete members")?;
        self.require_status(org, &user, |s| s == Status::Deactivated)?;
        let moved = match &reassign_to {
            Some(heir) => {
                let fit = self
                    .member(org, heir)
                    .is_some_and(|m| m.status == Status::Active && m.role != Role::Guest);
                if !fit || heir == &user {
                    return Err(OrgError::Invalid(format!(
                        "{heir} is not another active member (not a guest) to reassign to"
                    )));
                }
                self.held_by(o, &user, heir)
            }
            None => {
                let mut moved = Vec::new();
                for group in self.groups.values().filter(|g| g.owner == user) {
                    moved.push(match group.org.and_then(|id| self.orgs.get(&id)) {
                        Some(linked) => format!("owner of {} to {}", group.address, linked.owner),
                        None => format!("{} deleted with its owner", group.address),
                    });
                }
                moved
            }
        };
        Ok(Change::MemberDeleted { org, user, reassign_to, moved })
    }

    /// What passes from `user` to `heir` when `user` is deleted, in words.
    fn held_by(&self, org: &Org, user: &str, heir: &str) -> Vec<String> {
        let mut moved = Vec::new();
        for group in self.groups.values() {
            if group.owner == user {
                moved.push(format!("owner of {}", group.address));
            }
            if group.members.contains(user) && group.org == Some(org.id) {
                moved.push(format!("member of {}", group.address));
            }
        }
        let unit = self.member(org.id, user).and_then(|m| m.unit);
        let heir_unit = self.member(org.id, heir).and_then(|m| m.unit);
        if let (Some(unit), None) = (unit.and_then(|u| self.units.get(&u)), heir_unit) {
            moved.push(format!("unit {}", unit.address));
        }
        for managed in org.group_admins.get(user).into_iter().flatten() {
            moved.push(format!("group admin of {}", self.managed_name(managed)));
        }
        let guests = self.members.get(&org.id).into_iter().flat_map(|m| m.values());
        for guest in guests.filter(|m| m.invited_by.as_deref() == Some(user)) {
            moved.push(format!("inviter of {}", guest.user));
        }
        moved
    }

    pub(super) fn apply_registered(&mut self, org: OrgId, user: &str) {
        self.insert_member(Member {
            user: user.to_string(),
            org,
            unit: None,
            status: Status::Pending,
            role: Role::Member,
            invited_by: None,
        });
    }

    pub(super) fn apply_member(&mut self, actor: &Actor, command: &Command) {
        match command {
            Command::Approve { org, user } => {
                if let Some(member) = self.member_mut(*org, user) {
                    member.status = Status::Active;
                }
            }
            Command::Deactivate { org, user } => self.apply_deactivated(*org, user),
            Command::Reactivate { org, user } => {
                if let Some(member) = self.member_mut(*org, user) {
                    member.status = Status::Active;
                }
            }
            Command::ChangeMemberType { org, user, guest } => {
                let inviter = match actor {
                    Actor::User(user) => Some(user.clone()),
                    Actor::Operator | Actor::Hub => None,
                };
                if *guest {
                    self.drop_group_admin(*org, user);
                }
                if let Some(member) = self.member_mut(*org, user) {
                    if *guest {
                        member.role = Role::Guest;
                        member.unit = None;
                        member.invited_by = inviter;
                    } else {
                        member.role = Role::Member;
                    }
                }
            }
            Command::MoveMember { org, user, unit } => {
                if let Some(member) = self.member_mut(*org, user) {
                    member.unit = Some(*unit);
                }
            }
            Command::Assign { org, user, unit } => {
                if let Some(member) = self.member_mut(*org, user) {
                    member.unit = Some(*unit);
                }
            }
            Command::Invite { .. } => self.apply_invite(actor, command),
            Command::AddMember { org, user } => self.insert_member(Member {
                user: user.clone(),
                org: *org,
                unit: None,
                status: Status::Active,
                role: Role::Member,
                invited_by: None,
            }),
            Command::AcceptInvitation { org, .. } => self.apply_accept_invitation(actor, *org),
            Command::DeleteMember { org, user, reassign_to } => {
                self.apply_delete_member(*org, user, reassign_to.as_deref());
            }
            _ => {}
        }
    }

    fn apply_invite(&mut self, actor: &Actor, command: &Command) {
        let Command::Invite { org, user, guest, unit, code_hash, expires_ms } = command else {
            return;
        };
        let invited_by = match (unit.and_then(|u| self.units.get(&u)), actor) {
            (Some(unit), _) => unit.address.clone(),
            (None, Actor::User(inviter)) => inviter.clone(),
            (None, Actor::Operator | Actor::Hub) => String::new(),
        };
        if let Some(o) = self.orgs.get_mut(org) {
            let invitation = Invitation {
                code_hash: code_hash.clone(),
                expires_ms: *expires_ms,
                guest: *guest,
                invited_by,
            };
            o.invitations.insert(user.clone(), invitation);
        }
    }

    fn apply_accept_invitation(&mut self, actor: &Actor, org: OrgId) {
        let Actor::User(user) = actor else { return };
        let Some(invitation) = self.orgs.get_mut(&org).and_then(|o| o.invitations.remove(user))
        else {
            return;
        };
        self.insert_member(Member {
            user: user.clone(),
            org,
            unit: None,
            status: Status::Active,
            role: if invitation.guest { Role::Guest } else { Role::Member },
            invited_by: Some(invitation.invited_by),
        });
    }

    /// A deactivated member holds nothing: they leave the admins and the group admins.
    pub(super) fn apply_deactivated(&mut self, org: OrgId, user: &str) {
        if let Some(member) = self.member_mut(org, user) {
            member.status = Status::Deactivated;
        }
        if let Some(o) = self.orgs.get_mut(&org) {
            o.admins.remove(user);
        }
        self.drop_group_admin(org, user);
    }

    fn drop_group_admin(&mut self, org: OrgId, user: &str) {
        if let Some(o) = self.orgs.get_mut(&org) {
            o.group_admins.remove(user);
        }
    }

    pub(super) fn apply_delete_member(&mut self, org: OrgId, user: &str, heir: Option<&str>) {
        let unit = self.member(org, user).and_then(|m| m.unit);
        let managed = self.orgs.get(&org).and_then(|o| o.group_admins.get(user).cloned());
        self.remove_member(org, user);
        if let Some(o) = self.orgs.get_mut(&org) {
            o.admins.remove(user);
            o.group_admins.remove(user);
        }
        match heir {
            Some(heir) => {
                self.update_groups(|g| g.owner == user, |g| g.owner = heir.to_string());
                // The heir takes the member's place in the organisation's own groups only: a
                // group of someone else's is not the organisation's to hand on.
                self.update_groups(
                    |g| g.members.contains(user),
                    |g| {
                        g.members.remove(user);
                        if g.org == Some(org) {
                            g.members.insert(heir.to_string());
                        }
                    },
                );
                if let Some(member) = self.member_mut(org, heir)
                    && member.unit.is_none()
                {
                    member.unit = unit;
                }
                if let (Some(o), Some(managed)) = (self.orgs.get_mut(&org), managed) {
                    o.group_admins.entry(heir.to_string()).or_default().extend(managed);
                }
                let guests: Vec<String> = self
                    .members
                    .get(&org)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter(|m| m.invited_by.as_deref() == Some(user))
                    .map(|m| m.user.clone())
                    .collect();
                for guest in guests {
                    if let Some(member) = self.member_mut(org, &guest) {
                        member.invited_by = Some(heir.to_string());
                    }
                }
            }
            None => self.forget_group_owner(user, Some(org)),
        }
    }
}
