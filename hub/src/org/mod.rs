//! Organisations and rights: who may do what, as pure logic over a state.
//!
//! [`OrgState::decide`] checks a [`Command`] by an [`Actor`] against the rules and, if it is
//! allowed, returns the [`Event`] that records it; [`OrgState::apply`] folds an event into the
//! state. The state is therefore the fold of its event log, which is what admins read. Nothing
//! here does I/O; [`OrgService`] persists the log and publishes a lock-free snapshot for the send
//! path.
//!
//! One file per topic, each with its rules' decisions and their application side by side:
//! - `commands.rs`: the commands, events and errors (the log's vocabulary);
//! - `state.rs`: the state, its look-ups, and `decide`/`apply`, which hand each command to its
//!   topic;
//! - `orgs.rs`: organisations, seats and agreed domains;
//! - `units.rs`: the unit tree, lines, unit rights and logos, and who reads which line;
//! - `members.rs`: registration, invitations, approval, assignment, deactivation, deletion;
//! - `roles.rs`: rights and roles, admins and ownership;
//! - `groups.rs`, `keys.rs`: groups with scopes, keys between organisations;
//! - `send.rs`: the send check and the shared-line receipt rule;
//! - `directory.rs`: what a member sees (directory, groups) and which events they may read.

mod commands;
mod directory;
mod groups;
mod keys;
mod logo;
mod members;
mod orgs;
mod roles;
mod send;
mod service;
mod state;
mod units;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{Address, AddressKind};

pub use commands::{Change, Command, Event, OrgError};
pub use directory::{DirectoryEntry, LineEntry, MemberEntry};
pub use groups::{Group, Scope};
pub use keys::Key;
pub use logo::{Logo, LogoError, MAX_LOGO_BYTES, MIN_LOGO_SIDE, check_logo};
pub use members::code_hash;
pub use members::{Invitation, Member, Status};
pub use orgs::Org;
pub use roles::{Actor, Right, Role};
pub use send::{Mirror, SendRefusal};
pub use service::{OrgService, ServiceError};
pub use state::OrgState;
pub use units::Unit;

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

pub(crate) fn not_allowed(rule: &'static str) -> OrgError {
    OrgError::NotAllowed { rule }
}

pub(crate) fn account(text: &str) -> Result<Address, OrgError> {
    match Address::parse(text) {
        Ok(address) if address.kind() == AddressKind::Account => Ok(address),
        _ => Err(OrgError::Invalid(format!("{text} is not a user address"))),
    }
}

pub(crate) fn line(text: &str) -> Result<String, OrgError> {
    match Address::parse(text) {
        Ok(address) if address.kind() == AddressKind::Account => Ok(address.as_str().to_string()),
        _ => Err(OrgError::Invalid(format!("{text} is not a line address (name@domain)"))),
    }
}
