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
mod views;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{Address, AddressKind};

pub use commands::{Change, Command, Event, OrgError};
pub use directory::{DirectoryEntry, LineEntry, MemberEntry};
pub use groups::{Group, MAX_OWN_GROUPS, Scope};
pub use keys::{DEFAULT_KEY_VALIDITY_MS, Key};
pub use logo::{Logo, LogoError, MAX_LOGO_BYTES, MIN_LOGO_SIDE, check_logo};
pub use members::code_hash;
pub use members::{Invitation, Member, Roster, RosterEntry, RosterInvitation, Status};
pub use orgs::Org;
pub use roles::{Actor, Managed, Right, Role};
pub use send::{Mirror, SendRefusal};
pub use service::{OrgService, ServiceError};
pub use state::OrgState;
pub use units::Unit;
pub use views::{DomainView, GroupAdminView, GroupView, OrgStanding, Overview, Standing, UnitView};

/// Most admins an organisation may have.
pub const MAX_ADMINS: usize = 5;

/// An organisation's id.
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
#[serde(transparent)]
pub struct OrgId(pub u64);

/// A unit's id (the root or a department).
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
#[serde(transparent)]
pub struct UnitId(pub u64);

/// Longest name (of an organisation, a unit), in characters.
pub const MAX_NAME: usize = 200;
/// Longest address (a user, a line, a group), in bytes.
pub const MAX_ADDRESS: usize = 254;

/// A name or text field: trimmed, not empty, at most `max` characters, no control characters.
/// The error names the field.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, OrgError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(OrgError::Field { field: field.into(), why: "must not be empty".into() });
    }
    if value.chars().count() > max {
        return Err(OrgError::Field {
            field: field.into(),
            why: format!("longer than {max} characters"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(OrgError::Field {
            field: field.into(),
            why: "contains control characters".into(),
        });
    }
    Ok(value.to_string())
}

pub(crate) fn not_allowed(rule: &'static str) -> OrgError {
    OrgError::NotAllowed { rule }
}

/// The user address in `field`: `local@domain`, at most [`MAX_ADDRESS`] bytes.
pub fn account_in(field: &str, text: &str) -> Result<Address, OrgError> {
    let why = |why: String| OrgError::Field { field: field.into(), why };
    if text.len() > MAX_ADDRESS {
        return Err(why(format!("longer than {MAX_ADDRESS} bytes")));
    }
    match Address::parse(text) {
        Ok(address) if address.kind() == AddressKind::Account => Ok(address),
        _ => Err(why(format!("{text:?} is not a user address (local@domain)"))),
    }
}

/// [`account_in`] for the field `user`.
pub(crate) fn account(text: &str) -> Result<Address, OrgError> {
    account_in("user", text)
}

/// The line address in `field` (`name@domain`).
pub(crate) fn line(field: &str, text: &str) -> Result<String, OrgError> {
    account_in(field, text).map(|address| address.as_str().to_string())
}
