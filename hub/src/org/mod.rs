//! Organisations and rights: who may do what, as pure logic over a state.
//!
//! [`OrgState::decide`] checks a [`Command`] by an [`Actor`] against the rules and, if it is
//! allowed, returns the [`Event`] that records it; [`OrgState::apply`] folds an event into the
//! state. The state is therefore the fold of its event log, which is what admins read. Nothing
//! here does I/O; persistence of the log and the lock-free snapshot on the send path build on
//! this.
//!
//! This first part covers organisations, agreed domains, seat limits, the unit tree, members
//! and their life cycle, and the owner and admin roles. Groups, scopes and keys follow.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use switchboard_protocol::{Address, AddressKind};

mod groups;
mod keys;
mod logo;
mod service;

pub use groups::{Group, Scope};
pub use keys::Key;
pub use logo::{Logo, LogoError, MAX_LOGO_BYTES, MIN_LOGO_SIDE, check_logo};
pub use service::{OrgService, ServiceError};

/// Most admins an organisation may have.
pub const MAX_ADMINS: usize = 5;

/// An organisation's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgId(pub u64);

/// A unit's id (the root or a department).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnitId(pub u64);

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

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The hub's operator.
    Operator,
    /// A user of the hub, by address.
    User(String),
}

/// An organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    /// Its id.
    pub id: OrgId,
    /// Its name.
    pub name: String,
    /// The owner's address.
    pub owner: String,
    /// An ownership transfer waiting for the new owner's confirmation.
    pub pending_owner: Option<String>,
    /// Agreed domains.
    pub domains: BTreeSet<String>,
    /// Domains merged into another: alias to the domain that holds it now.
    pub merged: BTreeMap<String, String>,
    /// Most members.
    pub seat_limit: u32,
    /// Admins (members or external users of the hub).
    pub admins: BTreeSet<String>,
    /// The root unit (the main line).
    pub root: UnitId,
    /// Open invitations, by invited address.
    #[serde(default)]
    pub invitations: BTreeMap<String, Invitation>,
}

/// A unit: the root or a department.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Its id.
    pub id: UnitId,
    /// Its organisation.
    pub org: OrgId,
    /// Its parent (none for the root).
    pub parent: Option<UnitId>,
    /// Its name.
    pub name: String,
    /// Its line address, unique on the hub.
    pub address: String,
    /// Whether a message to the line also reaches the members of its sub-units.
    pub include_sub_units: bool,
    /// Rights the unit holds; they pass to its members and to its sub-units' members.
    #[serde(default)]
    pub rights: BTreeSet<Right>,
    /// Its logo, if it has one.
    #[serde(default)]
    pub logo: Option<Logo>,
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

/// A request to change the organisations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// The operator creates an organisation for `owner` with one agreed domain.
    CreateOrg {
        /// Name.
        name: String,
        /// The owner's address (in `domain`).
        owner: String,
        /// The first agreed domain.
        domain: String,
        /// The root unit's line address.
        line: String,
        /// Most members.
        seat_limit: u32,
    },
    /// The operator sets the seat limit.
    SetSeatLimit {
        /// The organisation.
        org: OrgId,
        /// New limit.
        limit: u32,
    },
    /// Adds an agreed domain.
    AddDomain {
        /// The organisation.
        org: OrgId,
        /// The domain.
        domain: String,
    },
    /// Merges one agreed domain into another: addresses in `from` resolve to `into`.
    MergeDomains {
        /// The organisation.
        org: OrgId,
        /// The domain that goes.
        from: String,
        /// The domain that stays.
        into: String,
    },
    /// Creates a department under `parent`.
    CreateUnit {
        /// The organisation.
        org: OrgId,
        /// Parent unit.
        parent: UnitId,
        /// Name.
        name: String,
        /// Line address, unique on the hub.
        line: String,
    },
    /// Sets whether a message to the unit's line also reaches its sub-units' members.
    SetIncludeSubUnits {
        /// The organisation.
        org: OrgId,
        /// The unit.
        unit: UnitId,
        /// Reach the sub-units too.
        include: bool,
    },
    /// Sets a unit's logo (checked and stored by the admin API, which fills this in).
    SetLogo {
        /// The organisation.
        org: OrgId,
        /// The unit.
        unit: UnitId,
        /// The logo.
        logo: Logo,
    },
    /// Gives a unit a right; its members and its sub-units' members hold it.
    GrantUnitRight {
        /// The organisation.
        org: OrgId,
        /// The unit.
        unit: UnitId,
        /// The right.
        right: Right,
    },
    /// Takes a right from a unit.
    RevokeUnitRight {
        /// The organisation.
        org: OrgId,
        /// The unit.
        unit: UnitId,
        /// The right.
        right: Right,
    },
    /// A user registers with an address in an agreed domain; pending until approved.
    Register {
        /// The organisation.
        org: OrgId,
    },
    /// Invites `user` as a member (skipping approval) or as a guest, with a one-time code of
    /// which only the hash travels here; inviting again replaces the code (sends it again).
    Invite {
        /// The organisation.
        org: OrgId,
        /// The invited address.
        user: String,
        /// As a guest.
        guest: bool,
        /// Invite on behalf of this unit (the guest answers its line); else of the inviter.
        unit: Option<UnitId>,
        /// SHA-256 of the code, hex.
        code_hash: String,
        /// Expiry, Unix milliseconds (7 days after the invitation by default).
        expires_ms: u64,
    },
    /// The invited user accepts with the code's hash.
    AcceptInvitation {
        /// The organisation.
        org: OrgId,
        /// SHA-256 of the code, hex.
        code_hash: String,
    },
    /// An admin approves a pending registration.
    Approve {
        /// The organisation.
        org: OrgId,
        /// The user.
        user: String,
    },
    /// Puts an active member into a unit (the root or a department).
    Assign {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
        /// The unit.
        unit: UnitId,
    },
    /// The owner names an admin.
    NameAdmin {
        /// The organisation.
        org: OrgId,
        /// The new admin.
        user: String,
    },
    /// The owner removes an admin.
    RemoveAdmin {
        /// The organisation.
        org: OrgId,
        /// The admin.
        user: String,
    },
    /// The owner offers the organisation to `to`.
    TransferOwnership {
        /// The organisation.
        org: OrgId,
        /// The new owner.
        to: String,
    },
    /// The offered new owner accepts.
    AcceptOwnership {
        /// The organisation.
        org: OrgId,
    },
    /// Deactivates a member: they cannot connect.
    Deactivate {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
    },
    /// Deletes a deactivated member. With `reassign_to` (an active member), what the member
    /// held passes to them: the groups they owned, and their unit (line duties) when the
    /// chosen member has none yet. Without, their unlinked groups go with them and their
    /// devices are revoked.
    DeleteMember {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
        /// Who takes over what the member held.
        #[serde(default)]
        reassign_to: Option<String>,
    },
    /// Creates a group (name unique on the hub) with an owner.
    CreateGroup {
        /// `#name`.
        name: String,
        /// The owner (must be set).
        owner: String,
        /// The organisation it belongs to, if any: its admins manage it, and it outlives its
        /// owner.
        org: Option<OrgId>,
        /// Who may address it.
        scope: Scope,
        /// Members receive but cannot send, and cannot see each other.
        anonymous: bool,
    },
    /// Adds a member to a group.
    AddGroupMember {
        /// `#name`.
        group: String,
        /// The user.
        user: String,
    },
    /// Removes a member from a group.
    RemoveGroupMember {
        /// `#name`.
        group: String,
        /// The user.
        user: String,
    },
    /// Makes `sub` a subgroup of `group`: its members receive what is sent to `group`.
    AddSubgroup {
        /// `#name`.
        group: String,
        /// `#name` of the subgroup.
        sub: String,
    },
    /// Changes who may address a group.
    SetGroupScope {
        /// `#name`.
        group: String,
        /// The new scope.
        scope: Scope,
    },
    /// Deletes a group.
    DeleteGroup {
        /// `#name`.
        group: String,
    },
    /// Issues a key for the line of `unit` to the organisation `to_org`.
    IssueKey {
        /// The line's organisation.
        org: OrgId,
        /// The line's unit.
        unit: UnitId,
        /// The organisation that receives the key.
        to_org: OrgId,
        /// Expiry, Unix milliseconds.
        expires_ms: u64,
    },
    /// Hands a key to a group of the organisation that received it.
    HandKey {
        /// The key.
        key: u64,
        /// `#name` of the group.
        group: String,
    },
    /// Revokes a key.
    RevokeKey {
        /// The key.
        key: u64,
    },
    /// The owner deletes the organisation.
    DeleteOrg {
        /// The organisation.
        org: OrgId,
    },
}

impl Command {
    /// The organisation the command concerns (none for creating one).
    pub fn org(&self) -> Option<OrgId> {
        match self {
            Command::CreateOrg { .. } => None,
            Command::SetSeatLimit { org, .. }
            | Command::AddDomain { org, .. }
            | Command::MergeDomains { org, .. }
            | Command::CreateUnit { org, .. }
            | Command::SetIncludeSubUnits { org, .. }
            | Command::SetLogo { org, .. }
            | Command::GrantUnitRight { org, .. }
            | Command::RevokeUnitRight { org, .. }
            | Command::Register { org }
            | Command::Invite { org, .. }
            | Command::AcceptInvitation { org, .. }
            | Command::Approve { org, .. }
            | Command::Assign { org, .. }
            | Command::NameAdmin { org, .. }
            | Command::RemoveAdmin { org, .. }
            | Command::TransferOwnership { org, .. }
            | Command::AcceptOwnership { org }
            | Command::Deactivate { org, .. }
            | Command::DeleteMember { org, .. }
            | Command::DeleteOrg { org } => Some(*org),
            Command::CreateGroup { org, .. } => *org,
            Command::IssueKey { org, .. } => Some(*org),
            Command::HandKey { .. } | Command::RevokeKey { .. } => None,
            Command::AddGroupMember { .. }
            | Command::RemoveGroupMember { .. }
            | Command::AddSubgroup { .. }
            | Command::SetGroupScope { .. }
            | Command::DeleteGroup { .. } => None,
        }
    }
}

impl Event {
    /// The organisation the event concerns.
    pub fn org(&self) -> Option<OrgId> {
        match &self.change {
            Change::OrgCreated { org, .. } => Some(org.id),
            Change::UnitCreated(unit) => Some(unit.org),
            Change::Registered { org, .. } => Some(*org),
            Change::KeyIssued(key) => Some(key.org),
            Change::KeyUseRefused { org, .. } => Some(*org),
            Change::Applied(command) => command.org(),
        }
    }
}

/// A change that happened, as the event log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Who made it.
    pub actor: Actor,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// What, with every id it allocated.
    pub change: Change,
}

/// The change an event records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Change {
    /// An organisation was created with its root unit.
    OrgCreated {
        /// The organisation as created.
        org: Org,
        /// Its root unit.
        root: Unit,
    },
    /// A command applied as given (ids were already known).
    Applied(Command),
    /// A unit was created.
    UnitCreated(Unit),
    /// A key was issued.
    KeyIssued(Key),
    /// A send through a key was refused (the key expired, was revoked, or its organisation
    /// left). Recorded, changes nothing.
    KeyUseRefused {
        /// The key.
        key: u64,
        /// The line's organisation.
        org: OrgId,
        /// The sender.
        by: String,
        /// Why.
        why: String,
    },
    /// A user registered.
    Registered {
        /// The organisation.
        org: OrgId,
        /// The user.
        user: String,
    },
}

/// Why a command was refused. Each names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    /// The actor lacks a right; `rule` names the rule that refused.
    #[error("not allowed: {rule}")]
    NotAllowed {
        /// The rule.
        rule: &'static str,
    },
    /// No such organisation.
    #[error("unknown organisation {0:?}")]
    UnknownOrg(OrgId),
    /// No such unit in this organisation.
    #[error("unknown unit {0:?}")]
    UnknownUnit(UnitId),
    /// No such member.
    #[error("{0} is not a member")]
    UnknownMember(String),
    /// An address is not in one of the organisation's agreed domains.
    #[error("{address} is not in an agreed domain of the organisation")]
    DomainNotAgreed {
        /// The address.
        address: String,
    },
    /// The seat limit is reached.
    #[error("the organisation has all {limit} seats taken")]
    SeatLimit {
        /// The limit.
        limit: u32,
    },
    /// A line address or domain is taken.
    #[error("{0} is already in use")]
    Taken(String),
    /// The member already belongs to a unit.
    #[error("{user} already belongs to a unit; a member belongs to exactly one")]
    AlreadyAssigned {
        /// The member.
        user: String,
    },
    /// The member's status does not allow this.
    #[error("{user} is {status:?}")]
    WrongStatus {
        /// The member.
        user: String,
        /// Its status.
        status: Status,
    },
    /// Invalid input (bad address, empty name...).
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Where the sender's side of a message is mirrored, so the sender's other devices (or
/// colleagues, for a line) show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirror<'a> {
    /// The sender's own queue.
    Sender,
    /// The queue of the line the message was sent as.
    Line(&'a str),
    /// Nowhere: the sender reads the recipient line itself.
    None,
}

/// Why a send is refused by the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefusal {
    /// The envelope is inconsistent (`from` neither the sender nor a line).
    Invalid(String),
    /// A rule refused it; the text names the rule.
    NotAllowed(String),
    /// The sender holds a key for the line that no longer works; the refusal is logged.
    KeyRefused {
        /// The key.
        key: u64,
        /// Why it no longer works.
        why: String,
    },
}

/// Every organisation on the hub.
#[derive(Debug, Clone, Default)]
pub struct OrgState {
    // Persistent maps: every change publishes a new snapshot, and cloning one of these shares
    // everything it does not change (cloning std maps copied every member of every
    // organisation on each change: measured, most of the hub's time while a 3,000-member
    // organisation was being set up).
    orgs: imbl::OrdMap<OrgId, Org>,
    units: imbl::OrdMap<UnitId, Unit>,
    /// Members of each organisation, by user.
    members: imbl::HashMap<OrgId, imbl::OrdMap<String, Member>>,
    /// The organisations each user is a member of.
    by_user: imbl::HashMap<String, BTreeSet<OrgId>>,
    /// Every line address on the hub.
    lines: imbl::HashMap<String, UnitId>,
    /// Groups by address (`#name`).
    groups: imbl::OrdMap<String, Group>,
    /// Keys to lines, by id.
    keys: imbl::OrdMap<u64, Key>,
    next_id: u64,
}

fn not_allowed(rule: &'static str) -> OrgError {
    OrgError::NotAllowed { rule }
}

fn account(text: &str) -> Result<Address, OrgError> {
    match Address::parse(text) {
        Ok(address) if address.kind() == AddressKind::Account => Ok(address),
        _ => Err(OrgError::Invalid(format!("{text} is not a user address"))),
    }
}

fn line(text: &str) -> Result<String, OrgError> {
    match Address::parse(text) {
        Ok(address) if address.kind() == AddressKind::Account => Ok(address.as_str().to_string()),
        _ => Err(OrgError::Invalid(format!("{text} is not a line address (name@domain)"))),
    }
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

    fn member_mut(&mut self, org: OrgId, user: &str) -> Option<&mut Member> {
        self.members.get_mut(&org).and_then(|m| m.get_mut(user))
    }

    fn insert_member(&mut self, member: Member) {
        self.by_user.entry(member.user.clone()).or_default().insert(member.org);
        self.members.entry(member.org).or_default().insert(member.user.clone(), member);
    }

    fn remove_member(&mut self, org: OrgId, user: &str) {
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

    /// Members of `org` that take a seat (pending and active ones).
    pub fn seats_taken(&self, org: OrgId) -> u32 {
        self.members
            .get(&org)
            .into_iter()
            .flat_map(|members| members.values())
            .filter(|m| m.status != Status::Deactivated && m.role != Role::Guest)
            .count() as u32
    }

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

    fn require(
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

    /// The units whose lines `user`, a member of `org`, reads: their own unit, and every unit
    /// above it whose line reaches its sub-units.
    pub fn lines_of(&self, org: OrgId, user: &str) -> Vec<&Unit> {
        let mut out = Vec::new();
        let Some(member) = self.member(org, user) else { return out };
        if member.status != Status::Active || !member.role.has(Right::ReceiveForLine) {
            return out;
        }
        let Some(own) = member.unit.and_then(|u| self.units.get(&u)) else { return out };
        out.push(own);
        let mut parent = own.parent.and_then(|p| self.units.get(&p));
        while let Some(unit) = parent {
            if unit.include_sub_units {
                out.push(unit);
            }
            parent = unit.parent.and_then(|p| self.units.get(&p));
        }
        out
    }

    /// Whether `unit` is `ancestor` or below it.
    pub fn is_within(&self, unit: UnitId, ancestor: UnitId) -> bool {
        let mut current = Some(unit);
        while let Some(id) = current {
            if id == ancestor {
                return true;
            }
            current = self.units.get(&id).and_then(|u| u.parent);
        }
        false
    }

    /// Every member that reads `unit`'s line (its own members, and those of its sub-units when
    /// its line reaches them).
    pub fn readers_of_line(&self, unit: UnitId) -> Vec<&Member> {
        let Some(line) = self.units.get(&unit) else { return Vec::new() };
        let members = self.members.get(&line.org).into_iter().flat_map(|m| m.values());
        members
            .filter(|m| m.status == Status::Active && m.role.has(Right::ReceiveForLine))
            .filter(|m| match m.unit {
                Some(own) if own == unit => true,
                Some(own) => line.include_sub_units && self.is_within(own, unit),
                None => false,
            })
            .collect()
    }

    fn org_of(&self, id: OrgId) -> Result<&Org, OrgError> {
        self.orgs.get(&id).ok_or(OrgError::UnknownOrg(id))
    }

    fn unit_of(&self, org: OrgId, unit: UnitId) -> Result<&Unit, OrgError> {
        match self.units.get(&unit) {
            Some(u) if u.org == org => Ok(u),
            _ => Err(OrgError::UnknownUnit(unit)),
        }
    }

    /// The agreed domain an address of `org` belongs to (after merges), if any.
    fn agreed_domain(&self, org: &Org, address: &Address) -> Option<String> {
        let domain = address.domain()?;
        if org.domains.contains(domain) {
            return Some(domain.to_string());
        }
        org.merged.get(domain).cloned()
    }

    /// Checks `command` by `actor` at `now`; returns the event that records it.
    pub fn decide(&self, actor: &Actor, command: Command, now: u64) -> Result<Event, OrgError> {
        let event = |change| Ok(Event { actor: actor.clone(), at_ms: now, change });
        match command {
            Command::CreateOrg { name, owner, domain, line: root_line, seat_limit } => {
                if *actor != Actor::Operator {
                    return Err(not_allowed("only the hub operator creates organisations"));
                }
                let owner_address = account(&owner)?;
                let domain = domain.to_ascii_lowercase();
                if owner_address.domain() != Some(domain.as_str()) {
                    return Err(OrgError::DomainNotAgreed { address: owner });
                }
                if self.orgs.values().any(|o| o.domains.contains(&domain)) {
                    return Err(OrgError::Taken(domain));
                }
                let root_line = line(&root_line)?;
                if self.lines.contains_key(&root_line) {
                    return Err(OrgError::Taken(root_line));
                }
                if name.trim().is_empty() || seat_limit == 0 {
                    return Err(OrgError::Invalid("a name and a seat limit of at least 1".into()));
                }
                let id = OrgId(self.next_id + 1);
                let root = UnitId(self.next_id + 2);
                let org = Org {
                    id,
                    name,
                    owner: owner_address.as_str().to_string(),
                    pending_owner: None,
                    domains: BTreeSet::from([domain]),
                    merged: BTreeMap::new(),
                    seat_limit,
                    admins: BTreeSet::new(),
                    root,
                    invitations: BTreeMap::new(),
                };
                let unit = Unit {
                    id: root,
                    org: id,
                    parent: None,
                    name: "main".into(),
                    address: root_line,
                    include_sub_units: false,
                    rights: BTreeSet::new(),
                    logo: None,
                };
                event(Change::OrgCreated { org, root: unit })
            }
            Command::SetSeatLimit { org, limit } => {
                self.org_of(org)?;
                if *actor != Actor::Operator {
                    return Err(not_allowed("only the hub operator sets seat limits"));
                }
                if limit == 0 {
                    return Err(OrgError::Invalid("a seat limit of at least 1".into()));
                }
                event(Change::Applied(Command::SetSeatLimit { org, limit }))
            }
            Command::AddDomain { org, domain } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageUnits, "admins add domains")?;
                let domain = domain.to_ascii_lowercase();
                if Address::parse(&format!("@{domain}")).is_err() {
                    return Err(OrgError::Invalid(format!("{domain} is not a domain")));
                }
                if self
                    .orgs
                    .values()
                    .any(|o| o.domains.contains(&domain) || o.merged.contains_key(&domain))
                {
                    return Err(OrgError::Taken(domain));
                }
                event(Change::Applied(Command::AddDomain { org, domain }))
            }
            Command::MergeDomains { org, from, into } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageUnits, "admins merge domains")?;
                if from == into || !o.domains.contains(&from) || !o.domains.contains(&into) {
                    return Err(OrgError::Invalid(
                        "merge two different domains the organisation holds".into(),
                    ));
                }
                event(Change::Applied(Command::MergeDomains { org, from, into }))
            }
            Command::CreateUnit { org, parent, name, line: unit_line } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageUnits, "admins manage units")?;
                match self.units.get(&parent) {
                    Some(unit) if unit.org == org => {}
                    _ => return Err(OrgError::UnknownUnit(parent)),
                }
                let unit_line = line(&unit_line)?;
                if self.lines.contains_key(&unit_line) {
                    return Err(OrgError::Taken(unit_line));
                }
                let unit = Unit {
                    id: UnitId(self.next_id + 1),
                    org,
                    parent: Some(parent),
                    name,
                    address: unit_line,
                    include_sub_units: false,
                    rights: BTreeSet::new(),
                    logo: None,
                };
                event(Change::UnitCreated(unit))
            }
            Command::SetLogo { org, unit, logo } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageUnits, "admins manage units")?;
                self.unit_of(org, unit)?;
                if logo.width < logo::MIN_LOGO_SIDE || logo.height < logo::MIN_LOGO_SIDE {
                    return Err(OrgError::Invalid("a logo needs at least 512 x 512 pixels".into()));
                }
                event(Change::Applied(Command::SetLogo { org, unit, logo }))
            }
            Command::SetIncludeSubUnits { org, unit, include } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageUnits, "admins manage units")?;
                self.unit_of(org, unit)?;
                event(Change::Applied(Command::SetIncludeSubUnits { org, unit, include }))
            }
            Command::GrantUnitRight { org, unit, right }
            | Command::RevokeUnitRight { org, unit, right } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageUnits, "admins manage units")?;
                self.unit_of(org, unit)?;
                if matches!(
                    right,
                    Right::ManageAdmins | Right::TransferOwnership | Right::DeleteOrganisation
                ) {
                    return Err(not_allowed("owner rights cannot be given to a unit"));
                }
                let grant = matches!(command, Command::GrantUnitRight { .. });
                let command = if grant {
                    Command::GrantUnitRight { org, unit, right }
                } else {
                    Command::RevokeUnitRight { org, unit, right }
                };
                event(Change::Applied(command))
            }
            Command::Register { org } => {
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
                event(Change::Registered { org, user: address.as_str().to_string() })
            }
            Command::Invite { org, user, guest, unit, code_hash, expires_ms } => {
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
                event(Change::Applied(Command::Invite {
                    org,
                    user,
                    guest,
                    unit,
                    code_hash,
                    expires_ms,
                }))
            }
            Command::AcceptInvitation { org, code_hash } => {
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
                event(Change::Applied(Command::AcceptInvitation { org, code_hash }))
            }
            Command::Approve { org, user } => {
                let o = self.org_of(org)?;
                self.require(
                    o,
                    actor,
                    Right::ApproveRegistrations,
                    "admins approve registrations",
                )?;
                let member =
                    self.member(org, &user).ok_or_else(|| OrgError::UnknownMember(user.clone()))?;
                if member.status != Status::Pending {
                    return Err(OrgError::WrongStatus { user, status: member.status });
                }
                event(Change::Applied(Command::Approve { org, user }))
            }
            Command::Assign { org, user, unit } => {
                let o = self.org_of(org)?;
                self.require(
                    o,
                    actor,
                    Right::AssignMembers,
                    "group admins and admins assign members",
                )?;
                match self.units.get(&unit) {
                    Some(u) if u.org == org => {}
                    _ => return Err(OrgError::UnknownUnit(unit)),
                }
                let member =
                    self.member(org, &user).ok_or_else(|| OrgError::UnknownMember(user.clone()))?;
                if member.status != Status::Active {
                    return Err(OrgError::WrongStatus { user, status: member.status });
                }
                if member.unit.is_some() {
                    return Err(OrgError::AlreadyAssigned { user });
                }
                event(Change::Applied(Command::Assign { org, user, unit }))
            }
            Command::NameAdmin { org, user } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageAdmins, "only the owner names admins")?;
                account(&user)?;
                if o.admins.len() >= MAX_ADMINS && !o.admins.contains(&user) {
                    return Err(not_allowed("at most 5 admins"));
                }
                event(Change::Applied(Command::NameAdmin { org, user }))
            }
            Command::RemoveAdmin { org, user } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageAdmins, "only the owner removes admins")?;
                if !o.admins.contains(&user) {
                    return Err(OrgError::UnknownMember(user));
                }
                event(Change::Applied(Command::RemoveAdmin { org, user }))
            }
            Command::TransferOwnership { org, to } => {
                let o = self.org_of(org)?;
                self.require(
                    o,
                    actor,
                    Right::TransferOwnership,
                    "only the owner transfers ownership",
                )?;
                account(&to)?;
                event(Change::Applied(Command::TransferOwnership { org, to }))
            }
            Command::AcceptOwnership { org } => {
                let o = self.org_of(org)?;
                match (actor, &o.pending_owner) {
                    (Actor::User(user), Some(pending)) if user == pending => {
                        event(Change::Applied(Command::AcceptOwnership { org }))
                    }
                    _ => Err(not_allowed("only the offered new owner confirms a transfer")),
                }
            }
            Command::Deactivate { org, user } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageMembers, "admins deactivate members")?;
                if user == o.owner {
                    return Err(not_allowed("the owner's account cannot be deactivated"));
                }
                let member =
                    self.member(org, &user).ok_or_else(|| OrgError::UnknownMember(user.clone()))?;
                if member.status == Status::Deactivated {
                    return Err(OrgError::WrongStatus { user, status: member.status });
                }
                event(Change::Applied(Command::Deactivate { org, user }))
            }
            Command::DeleteMember { org, user, reassign_to } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageMembers, "admins delete members")?;
                let member =
                    self.member(org, &user).ok_or_else(|| OrgError::UnknownMember(user.clone()))?;
                if member.status != Status::Deactivated {
                    return Err(OrgError::WrongStatus { user, status: member.status });
                }
                if let Some(heir) = &reassign_to {
                    let active = self.member(org, heir).is_some_and(|m| m.status == Status::Active);
                    if !active || heir == &user {
                        return Err(OrgError::Invalid(format!(
                            "{heir} is not another active member to reassign to"
                        )));
                    }
                }
                event(Change::Applied(Command::DeleteMember { org, user, reassign_to }))
            }
            Command::IssueKey { org, unit, to_org, expires_ms } => {
                let command = Command::IssueKey { org, unit, to_org, expires_ms };
                self.decide_key(actor, &command, now)?;
                let key = Key {
                    id: self.next_id + 1,
                    org,
                    unit,
                    to_org,
                    expires_ms,
                    revoked: false,
                    groups: BTreeSet::new(),
                };
                event(Change::KeyIssued(key))
            }
            command @ (Command::HandKey { .. } | Command::RevokeKey { .. }) => {
                self.decide_key(actor, &command, now)?;
                event(Change::Applied(command))
            }
            command @ (Command::CreateGroup { .. }
            | Command::AddGroupMember { .. }
            | Command::RemoveGroupMember { .. }
            | Command::AddSubgroup { .. }
            | Command::SetGroupScope { .. }
            | Command::DeleteGroup { .. }) => {
                self.decide_group(actor, &command)?;
                event(Change::Applied(command))
            }
            Command::DeleteOrg { org } => {
                let o = self.org_of(org)?;
                self.require(
                    o,
                    actor,
                    Right::DeleteOrganisation,
                    "only the owner deletes the organisation",
                )?;
                event(Change::Applied(Command::DeleteOrg { org }))
            }
        }
    }

    /// Folds an event (from [`OrgState::decide`], or read back from the log) into the state.
    pub fn apply(&mut self, event: &Event) {
        match &event.change {
            Change::OrgCreated { org, root } => {
                self.next_id = self.next_id.max(root.id.0).max(org.id.0);
                self.lines.insert(root.address.clone(), root.id);
                self.units.insert(root.id, root.clone());
                self.orgs.insert(org.id, org.clone());
                // The owner is a member of the root unit.
                self.insert_member(Member {
                    user: org.owner.clone(),
                    org: org.id,
                    unit: Some(root.id),
                    status: Status::Active,
                    role: Role::Member,
                    invited_by: None,
                });
            }
            Change::UnitCreated(unit) => {
                self.next_id = self.next_id.max(unit.id.0);
                self.lines.insert(unit.address.clone(), unit.id);
                self.units.insert(unit.id, unit.clone());
            }
            Change::KeyIssued(key) => {
                self.next_id = self.next_id.max(key.id);
                self.keys.insert(key.id, key.clone());
            }
            Change::KeyUseRefused { .. } => {}
            Change::Registered { org, user } => {
                self.insert_member(Member {
                    user: user.clone(),
                    org: *org,
                    unit: None,
                    status: Status::Pending,
                    role: Role::Member,
                    invited_by: None,
                });
            }
            Change::Applied(command) => self.apply_command(&event.actor, command),
        }
    }

    fn apply_command(&mut self, actor: &Actor, command: &Command) {
        match command {
            Command::SetSeatLimit { org, limit } => {
                if let Some(o) = self.orgs.get_mut(org) {
                    o.seat_limit = *limit;
                }
            }
            Command::AddDomain { org, domain } => {
                if let Some(o) = self.orgs.get_mut(org) {
                    o.domains.insert(domain.clone());
                }
            }
            Command::MergeDomains { org, from, into } => {
                if let Some(o) = self.orgs.get_mut(org) {
                    o.domains.remove(from);
                    o.merged.insert(from.clone(), into.clone());
                }
            }
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
            Command::Invite { org, user, guest, unit, code_hash, expires_ms } => {
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
            Command::AcceptInvitation { org, .. } => {
                let Actor::User(user) = actor else { return };
                let Some(invitation) =
                    self.orgs.get_mut(org).and_then(|o| o.invitations.remove(user))
                else {
                    return;
                };
                self.insert_member(Member {
                    user: user.clone(),
                    org: *org,
                    unit: None,
                    status: Status::Active,
                    role: if invitation.guest { Role::Guest } else { Role::Member },
                    invited_by: Some(invitation.invited_by),
                });
            }
            Command::SetIncludeSubUnits { unit, include, .. } => {
                if let Some(u) = self.units.get_mut(unit) {
                    u.include_sub_units = *include;
                }
            }
            Command::SetLogo { unit, logo, .. } => {
                if let Some(u) = self.units.get_mut(unit) {
                    u.logo = Some(logo.clone());
                }
            }
            Command::GrantUnitRight { unit, right, .. } => {
                if let Some(u) = self.units.get_mut(unit) {
                    u.rights.insert(*right);
                }
            }
            Command::RevokeUnitRight { unit, right, .. } => {
                if let Some(u) = self.units.get_mut(unit) {
                    u.rights.remove(right);
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
            Command::DeleteMember { org, user, reassign_to } => {
                let unit = self.member(*org, user).and_then(|m| m.unit);
                self.remove_member(*org, user);
                match reassign_to {
                    Some(heir) => {
                        self.update_groups(|g| &g.owner == user, |g| g.owner = heir.clone());
                        self.update_groups(
                            |g| g.members.contains(user),
                            |g| {
                                g.members.remove(user);
                            },
                        );
                        if let Some(member) = self.member_mut(*org, heir)
                            && member.unit.is_none()
                        {
                            member.unit = unit;
                        }
                    }
                    None => self.forget_group_owner(user, Some(*org)),
                }
            }
            Command::CreateGroup { .. }
            | Command::AddGroupMember { .. }
            | Command::RemoveGroupMember { .. }
            | Command::AddSubgroup { .. }
            | Command::SetGroupScope { .. }
            | Command::DeleteGroup { .. } => self.apply_group(command),
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
            Command::IssueKey { .. } => {}
            Command::DeleteOrg { org } => {
                self.orgs.remove(org);
                let gone: Vec<UnitId> =
                    self.units.values().filter(|u| u.org == *org).map(|u| u.id).collect();
                for unit in gone {
                    if let Some(unit) = self.units.remove(&unit) {
                        self.lines.remove(&unit.address);
                    }
                }
                let users: Vec<String> = self
                    .members
                    .remove(org)
                    .into_iter()
                    .flat_map(|m| m.keys().cloned().collect::<Vec<_>>())
                    .collect();
                for user in users {
                    self.remove_member(*org, &user);
                }
            }
            // Handled as their own changes.
            Command::CreateOrg { .. } | Command::CreateUnit { .. } | Command::Register { .. } => {}
        }
    }

    /// Checks a send by `sender` (an account) with `from` and `to`, `as_line` when the envelope
    /// has the AS_LINE flag. Lock-free on a snapshot and allocation-free when allowed.
    pub fn check_send<'a>(
        &'a self,
        sender: &str,
        from: &'a str,
        to: &str,
        as_line: bool,
    ) -> Result<Mirror<'a>, SendRefusal> {
        self.check_send_at(sender, from, to, as_line, crate::store::system_clock_ms())
    }

    /// [`OrgState::check_send`] at the time `now` (Unix milliseconds; keys expire).
    pub fn check_send_at<'a>(
        &'a self,
        sender: &str,
        from: &'a str,
        to: &str,
        as_line: bool,
        now: u64,
    ) -> Result<Mirror<'a>, SendRefusal> {
        let mut mirror = Mirror::Sender;
        if as_line {
            let Some(unit) = self.line(from) else {
                return Err(SendRefusal::Invalid(format!(
                    "{from} is not a line; AS_LINE needs a line in from"
                )));
            };
            let allowed = self.member(unit.org, sender).is_some_and(|m| {
                m.status == Status::Active
                    && m.unit == Some(unit.id)
                    && m.role.has(Right::SendAsLine)
            });
            if !allowed {
                return Err(SendRefusal::NotAllowed(format!(
                    "rule: only active members of {} send as its line",
                    unit.address
                )));
            }
            mirror = Mirror::Line(from);
        } else if from != sender {
            return Err(SendRefusal::Invalid(format!(
                "from is {from}, but this device belongs to {sender}"
            )));
        }
        // Someone who is only a guest (of one or more organisations) answers only whoever
        // invited them.
        if let Some(orgs) = self.by_user.get(sender) {
            let (mut any, mut only_guest, mut invited_by_target) = (false, true, false);
            for member in orgs.iter().filter_map(|o| self.member(*o, sender)) {
                any = true;
                if member.role != Role::Guest && member.status == Status::Active {
                    only_guest = false;
                    break;
                }
                invited_by_target |= member.invited_by.as_deref() == Some(to);
            }
            if any && only_guest && !invited_by_target {
                return Err(SendRefusal::NotAllowed(
                    "rule: a guest answers only the member or unit that invited them".into(),
                ));
            }
        }
        if let Some(group) = self.groups.get(to) {
            self.check_group_send(sender, group)?;
            // A reader of the group gets it from the group's queue.
            if !as_line && self.group_readers(to).contains(sender) {
                mirror = Mirror::None;
            }
            return Ok(mirror);
        }
        if let Some(unit) = self.line(to) {
            let member = self
                .member(unit.org, sender)
                .filter(|m| m.status == Status::Active && m.role.has(Right::Send));
            let is_main_line = self.orgs.get(&unit.org).is_some_and(|o| o.root == unit.id);
            if member.is_none() && !is_main_line {
                match self.check_key(sender, unit.id, now) {
                    keys::KeyCheck::Open => return Ok(mirror),
                    keys::KeyCheck::Refused { key, why } => {
                        return Err(SendRefusal::KeyRefused { key, why: why.to_string() });
                    }
                    keys::KeyCheck::None => {}
                }
                return Err(SendRefusal::NotAllowed(format!(
                    "rule: the department line {} takes messages from members of its organisation",
                    unit.address
                )));
            }
            // A member of the line's unit reads the line: no separate copy.
            if !as_line && member.is_some_and(|m| m.unit == Some(unit.id)) {
                mirror = Mirror::None;
            }
        }
        Ok(mirror)
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
