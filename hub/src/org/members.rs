//! Members and their life cycle: self-registration (pending until approved), invitations
//! (members skip approval; guests answer only whoever invited them), approval, assignment to
//! one unit, deactivation, and deletion with an optional heir.

use serde::{Deserialize, Serialize};

use crate::org::{
    Actor, Change, Command, OrgError, OrgId, OrgState, Right, Role, UnitId, account, not_allowed,
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

impl OrgState {
    pub(super) fn decide_member(
        &self,
        actor: &Actor,
        command: Command,
        now: u64,
    ) -> Result<Change, OrgError> {
        match command {
            Command::Register { org } => self.decide_register(actor, org),
            Command::Invite { org, user, guest, unit, code_hash, expires_ms } => {
                let invite = Command::Invite { org, user, guest, unit, code_hash, expires_ms };
                self.decide_invite(actor, invite, now)
            }
            Command::AcceptInvitation { org, code_hash } => {
                self.decide_accept_invitation(actor, org, code_hash, now)
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
                Ok(Change::Applied(Command::Deactivate { org, user }))
            }
            Command::DeleteMember { org, user, reassign_to } => {
                self.decide_delete_member(actor, org, user, reassign_to)
            }
            // `decide` hands only the commands above to this topic.
            other => unreachable!("not a member command: {other:?}"),
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

    fn decide_register(&self, actor: &Actor, org: OrgId) -> Result<Change, OrgError> {
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
        if self.seats_taken(org) >= o.seat_limit {
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
        if !invitation.guest && self.seats_taken(org) >= o.seat_limit {
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
        let rule = "group admins and admins assign members";
        self.require(o, actor, Right::AssignMembers, rule)?;
        match self.units.get(&unit) {
            Some(u) if u.org == org => {}
            _ => return Err(OrgError::UnknownUnit(unit)),
        }
        let member = self.require_status(org, &user, |s| s == Status::Active)?;
        if member.unit.is_some() {
            return Err(OrgError::AlreadyAssigned { user });
        }
        Ok(Change::Applied(Command::Assign { org, user, unit }))
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
        if let Some(heir) = &reassign_to {
            let active = self.member(org, heir).is_some_and(|m| m.status == Status::Active);
            if !active || heir == &user {
                return Err(OrgError::Invalid(format!(
                    "{heir} is not another active member to reassign to"
                )));
            }
        }
        Ok(Change::Applied(Command::DeleteMember { org, user, reassign_to }))
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
            Command::Deactivate { org, user } => {
                if let Some(member) = self.member_mut(*org, user) {
                    member.status = Status::Deactivated;
                }
            }
            Command::Assign { org, user, unit } => {
                if let Some(member) = self.member_mut(*org, user) {
                    member.unit = Some(*unit);
                }
            }
            Command::Invite { .. } => self.apply_invite(actor, command),
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
            (None, Actor::Operator) => String::new(),
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

    fn apply_delete_member(&mut self, org: OrgId, user: &str, heir: Option<&str>) {
        let unit = self.member(org, user).and_then(|m| m.unit);
        self.remove_member(org, user);
        match heir {
            Some(heir) => {
                self.update_groups(|g| g.owner == user, |g| g.owner = heir.to_string());
                self.update_groups(
                    |g| g.members.contains(user),
                    |g| {
                        g.members.remove(user);
                    },
                );
                if let Some(member) = self.member_mut(org, heir)
                    && member.unit.is_none()
                {
                    member.unit = unit;
                }
            }
            None => self.forget_group_owner(user, Some(org)),
        }
    }
}
