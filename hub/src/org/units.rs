//! Units: the root (main line) and departments in a tree, each with a line address unique on
//! the hub; whether a line reaches the sub-units; rights granted to a unit (never owner
//! rights); logos; and who reads which line.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::org::{
    Actor, Change, Command, Logo, MAX_NAME, Member, Org, OrgError, OrgId, OrgState, Right, Status,
    UnitId, account, line, logo, not_allowed, text,
};

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
    /// Whether any user of the hub may see the logo (else only the organisation's members).
    #[serde(default)]
    pub logo_public: bool,
}

impl OrgState {
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

    /// Whether `actor` may see `unit`'s logo: the operator, the organisation's active members
    /// (guests included), and everyone when the organisation made it public.
    pub fn may_see_logo(&self, actor: &Actor, unit: &Unit) -> bool {
        match actor {
            Actor::Operator => true,
            Actor::Hub => false,
            Actor::User(user) => {
                unit.logo_public
                    || self.member(unit.org, user).is_some_and(|m| m.status == Status::Active)
            }
        }
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

    /// Every line and group address `user` reads: the lines of their units (and of the units
    /// above whose lines reach sub-units), and every group they read. The one answer to which
    /// queues a user's devices are subscribed to besides the user's own.
    pub fn lines_read_by(&self, user: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .memberships(user)
            .flat_map(|m| self.lines_of(m.org, user))
            .map(|u| u.address.clone())
            .collect();
        lines.extend(self.groups.keys().filter(|g| self.group_readers(g).contains(user)).cloned());
        lines
    }

    /// For every line and group, who reads it: [`OrgState::lines_read_by`] for every user at
    /// once, as a hub needs it at start.
    pub fn readers_by_line(&self) -> Vec<(String, BTreeSet<String>)> {
        let units = self.units.values().map(|unit| {
            let readers = self.readers_of_line(unit.id).into_iter().map(|m| m.user.clone());
            (unit.address.clone(), readers.collect())
        });
        let groups = self.groups.keys().map(|g| (g.clone(), self.group_readers(g)));
        units.chain(groups).collect()
    }

    pub(super) fn decide_unit(&self, actor: &Actor, command: Command) -> Result<Change, OrgError> {
        let org = command.org().ok_or_else(|| OrgError::Invalid("no organisation named".into()))?;
        let o = self.org_of(org)?;
        self.require(o, actor, Right::ManageUnits, "admins manage units")?;
        match command {
            Command::CreateUnit { parent, name, line, .. } => {
                self.decide_create_unit(o, parent, name, line)
            }
            Command::SetLogo { org, unit, logo } => {
                self.unit_of(org, unit)?;
                if logo.width < logo::MIN_LOGO_SIDE || logo.height < logo::MIN_LOGO_SIDE {
                    return Err(OrgError::Invalid("a logo needs at least 512 x 512 pixels".into()));
                }
                Ok(Change::Applied(Command::SetLogo { org, unit, logo }))
            }
            Command::SetIncludeSubUnits { org, unit, include } => {
                self.unit_of(org, unit)?;
                Ok(Change::Applied(Command::SetIncludeSubUnits { org, unit, include }))
            }
            Command::SetLogoPublic { org, unit, public } => {
                self.unit_of(org, unit)?;
                Ok(Change::Applied(Command::SetLogoPublic { org, unit, public }))
            }
            command @ (Command::GrantUnitRight { org, unit, right }
            | Command::RevokeUnitRight { org, unit, right }) => {
                self.unit_of(org, unit)?;
                // Revoking stays possible for any right, so that a grant logged before this
                // rule can be taken back.
                if matches!(command, Command::GrantUnitRight { .. }) && !right.unit_grantable() {
                    return Err(not_allowed(
                        "a unit holds member rights only; the rights of roles come from roles",
                    ));
                }
                Ok(Change::Applied(command))
            }
            // `decide` hands only the commands above to this topic.
            other => unreachable!("not a unit command: {other:?}"),
        }
    }

    fn decide_create_unit(
        &self,
        o: &Org,
        parent: UnitId,
        name: String,
        unit_line: String,
    ) -> Result<Change, OrgError> {
        let org = o.id;
        match self.units.get(&parent) {
            Some(unit) if unit.org == org => {}
            _ => return Err(OrgError::UnknownUnit(parent)),
        }
        let name = text("name", &name, MAX_NAME)?;
        let unit_line = line("line", &unit_line)?;
        if self.agreed_domain(o, &account(&unit_line)?).is_none() {
            return Err(OrgError::DomainNotAgreed { address: unit_line });
        }
        if self.lines.contains_key(&unit_line) {
            return Err(OrgError::Taken(unit_line));
        }
        Ok(Change::UnitCreated(Unit {
            id: UnitId(self.next_id + 1),
            org,
            parent: Some(parent),
            name,
            address: unit_line,
            include_sub_units: false,
            rights: BTreeSet::new(),
            logo: None,
            logo_public: false,
        }))
    }

    pub(super) fn apply_unit_created(&mut self, unit: &Unit) {
        self.next_id = self.next_id.max(unit.id.0);
        self.lines.insert(unit.address.clone(), unit.id);
        self.units.insert(unit.id, unit.clone());
    }

    pub(super) fn apply_unit(&mut self, command: &Command) {
        match command {
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
            Command::SetLogoPublic { unit, public, .. } => {
                if let Some(u) = self.units.get_mut(unit) {
                    u.logo_public = *public;
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
            _ => {}
        }
    }
}
