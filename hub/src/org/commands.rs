//! The organisation log's vocabulary: commands (what is asked), events and their changes (what
//! happened, with every id allocated), and the errors that name the rule that refused.

use serde::{Deserialize, Serialize};

use crate::org::{Actor, Key, Logo, Org, OrgId, Right, Scope, Status, Unit, UnitId};

/// A request to change the organisations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
        /// Most members; the hub's `[org] default_seats` when not given.
        #[serde(default)]
        seat_limit: Option<u32>,
    },
    /// The operator sets the seat limit.
    SetSeatLimit {
        /// The organisation.
        org: OrgId,
        /// New limit.
        limit: u32,
    },
    /// Adds an agreed domain: from the operator, at once; from an organisation's admin, as a
    /// claim that admits nobody until it is proven ([`Command::ConfirmDomain`]).
    AddDomain {
        /// The organisation.
        org: OrgId,
        /// The domain.
        domain: String,
    },
    /// Proves a claimed domain: by the operator, or by the hub once it has found the
    /// organisation's TXT record at `_switchboard.<domain>`. Other organisations' unproven
    /// claims on it are dropped.
    ConfirmDomain {
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
    /// Makes a unit's logo visible to every user of the hub, or again only to the
    /// organisation's members.
    SetLogoPublic {
        /// The organisation.
        org: OrgId,
        /// The unit.
        unit: UnitId,
        /// Visible to everyone.
        public: bool,
    },
    /// Gives a unit a member right (see [`Right::unit_grantable`]); its members and its
    /// sub-units' members hold it.
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
    /// An onboarding admin adds a user of an agreed domain as an active member (the admin API
    /// sends this when an org admin creates a member's account).
    AddMember {
        /// The organisation.
        org: OrgId,
        /// The user.
        user: String,
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
    /// An admin names `user`, an active member, group admin for one unit or one group of the
    /// organisation (name exactly one): they may then assign the organisation's active members
    /// to it.
    NameGroupAdmin {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
        /// The unit they look after.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<UnitId>,
        /// The group (`#name`) they look after.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// An admin takes a unit or group from a group admin.
    RemoveGroupAdmin {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
        /// The unit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<UnitId>,
        /// The group (`#name`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
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
    /// Reactivates a deactivated member (seat permitting).
    Reactivate {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
    },
    /// Turns a member into a guest or a guest into a member (never the owner or an admin). A
    /// new guest leaves their unit and group-admin duties and answers whoever made the change;
    /// a new member needs an address in an agreed domain and a free seat.
    ChangeMemberType {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
        /// Guest (true) or member (false).
        guest: bool,
    },
    /// Moves an active member to another unit of the organisation; the root unit takes them
    /// back to the main line.
    MoveMember {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
        /// The unit they move to.
        unit: UnitId,
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
        /// Who may address it; the owner alone when not given.
        #[serde(default)]
        scope: Scope,
        /// Members receive but cannot send, and cannot see each other.
        #[serde(default)]
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
        /// Expiry, Unix milliseconds; five years from issue when not given.
        #[serde(default)]
        expires_ms: Option<u64>,
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
            | Command::ConfirmDomain { org, .. }
            | Command::MergeDomains { org, .. }
            | Command::CreateUnit { org, .. }
            | Command::SetIncludeSubUnits { org, .. }
            | Command::SetLogo { org, .. }
            | Command::SetLogoPublic { org, .. }
            | Command::GrantUnitRight { org, .. }
            | Command::RevokeUnitRight { org, .. }
            | Command::Register { org }
            | Command::Invite { org, .. }
            | Command::AcceptInvitation { org, .. }
            | Command::AddMember { org, .. }
            | Command::Approve { org, .. }
            | Command::Assign { org, .. }
            | Command::NameAdmin { org, .. }
            | Command::RemoveAdmin { org, .. }
            | Command::NameGroupAdmin { org, .. }
            | Command::RemoveGroupAdmin { org, .. }
            | Command::TransferOwnership { org, .. }
            | Command::AcceptOwnership { org }
            | Command::Deactivate { org, .. }
            | Command::Reactivate { org, .. }
            | Command::ChangeMemberType { org, .. }
            | Command::MoveMember { org, .. }
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
            Change::MemberDeactivated { org, .. } | Change::MemberDeleted { org, .. } => Some(*org),
            Change::KeyIssued(key) => Some(key.org),
            Change::KeyUseRefused { org, .. } | Change::KeyUsed { org, .. } => Some(*org),
            Change::Applied(command) => command.org(),
        }
    }
}

/// A change that happened, as the event log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Who made it.
    pub actor: Actor,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// What, with every id it allocated: `{"kind", "data"}`, `kind` one of `org_created`,
    /// `applied` (`data` the command), `unit_created`, `key_issued`, `key_use_refused`,
    /// `member_deactivated`, `member_deleted`, `key_used`, `registered`.
    #[schema(value_type = Object)]
    pub change: Change,
    /// Other organisations the change concerns, whose log readers see it too (the issuer and
    /// the receiver of a key, a group's organisation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<OrgId>,
}

/// The change an event records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Change {
    /// An organisation was created with its root unit.
    OrgCreated {
        /// The organisation as created (boxed: it is much larger than the other changes).
        org: Box<Org>,
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
    /// A member was deactivated; `dropped` names the duties that ended with it (an admin is
    /// no longer one, a group admin no longer looks after anything).
    MemberDeactivated {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
        /// What ended, in words.
        dropped: Vec<String>,
    },
    /// A deactivated member was deleted and their account closed; `moved` says what passed to
    /// the heir (or, without one, where their groups went).
    MemberDeleted {
        /// The organisation.
        org: OrgId,
        /// The member.
        user: String,
        /// Who took over.
        reassign_to: Option<String>,
        /// What moved, in words.
        moved: Vec<String>,
    },
    /// A key opened a line to a sender for the first time since the hub started. Recorded,
    /// changes nothing.
    KeyUsed {
        /// The key.
        key: u64,
        /// The line's organisation.
        org: OrgId,
        /// The sender.
        by: String,
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
    #[error("unknown organisation {}", .0.0)]
    UnknownOrg(OrgId),
    /// No such unit in this organisation.
    #[error("unknown unit {}", .0.0)]
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
    /// A field of the command is malformed: too long, empty, or of the wrong syntax.
    #[error("{field}: {why}")]
    Field {
        /// The field, as named in the command.
        field: String,
        /// What is wrong with it.
        why: String,
    },
}
