//! Organisations: created by the operator with an owner, a first agreed domain and a main line;
//! seat limits (the operator's); agreed domains added and merged; deletion by the owner.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use switchboard_protocol::Address;

use crate::org::{
    Actor, Change, Command, Invitation, Member, OrgError, OrgId, OrgState, Right, Role, Status,
    Unit, UnitId, account, line, not_allowed,
};

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

impl OrgState {
    /// Members of `org` that take a seat (pending and active ones).
    pub fn seats_taken(&self, org: OrgId) -> u32 {
        self.members
            .get(&org)
            .into_iter()
            .flat_map(|members| members.values())
            .filter(|m| m.status != Status::Deactivated && m.role != Role::Guest)
            .count() as u32
    }

    pub(super) fn agreed_domain(&self, org: &Org, address: &Address) -> Option<String> {
        let domain = address.domain()?;
        if org.domains.contains(domain) {
            return Some(domain.to_string());
        }
        org.merged.get(domain).cloned()
    }

    pub(super) fn decide_org(&self, actor: &Actor, command: Command) -> Result<Change, OrgError> {
        match command {
            Command::CreateOrg { name, owner, domain, line, seat_limit } => {
                self.decide_create_org(actor, name, owner, domain, line, seat_limit)
            }
            Command::SetSeatLimit { org, limit } => {
                self.org_of(org)?;
                if *actor != Actor::Operator {
                    return Err(not_allowed("only the hub operator sets seat limits"));
                }
                if limit == 0 {
                    return Err(OrgError::Invalid("a seat limit of at least 1".into()));
                }
                Ok(Change::Applied(Command::SetSeatLimit { org, limit }))
            }
            Command::AddDomain { org, domain } => self.decide_add_domain(actor, org, domain),
            Command::MergeDomains { org, from, into } => {
                let o = self.org_of(org)?;
                self.require(o, actor, Right::ManageUnits, "admins merge domains")?;
                if from == into || !o.domains.contains(&from) || !o.domains.contains(&into) {
                    return Err(OrgError::Invalid(
                        "merge two different domains the organisation holds".into(),
                    ));
                }
                Ok(Change::Applied(Command::MergeDomains { org, from, into }))
            }
            Command::DeleteOrg { org } => {
                let o = self.org_of(org)?;
                let rule = "only the owner deletes the organisation";
                self.require(o, actor, Right::DeleteOrganisation, rule)?;
                Ok(Change::Applied(Command::DeleteOrg { org }))
            }
            // `decide` hands only the commands above to this topic.
            other => unreachable!("not an organisation command: {other:?}"),
        }
    }

    fn decide_create_org(
        &self,
        actor: &Actor,
        name: String,
        owner: String,
        domain: String,
        root_line: String,
        seat_limit: u32,
    ) -> Result<Change, OrgError> {
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
        Ok(Change::OrgCreated { org, root: unit })
    }

    fn decide_add_domain(
        &self,
        actor: &Actor,
        org: OrgId,
        domain: String,
    ) -> Result<Change, OrgError> {
        let o = self.org_of(org)?;
        self.require(o, actor, Right::ManageUnits, "admins add domains")?;
        let domain = domain.to_ascii_lowercase();
        if Address::parse(&format!("@{domain}")).is_err() {
            return Err(OrgError::Invalid(format!("{domain} is not a domain")));
        }
        if self.orgs.values().any(|o| o.domains.contains(&domain) || o.merged.contains_key(&domain))
        {
            return Err(OrgError::Taken(domain));
        }
        Ok(Change::Applied(Command::AddDomain { org, domain }))
    }

    pub(super) fn apply_org_created(&mut self, org: &Org, root: &Unit) {
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

    pub(super) fn apply_org(&mut self, command: &Command) {
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
            Command::DeleteOrg { org } => self.apply_delete_org(*org),
            _ => {}
        }
    }

    fn apply_delete_org(&mut self, org: OrgId) {
        self.orgs.remove(&org);
        let gone: Vec<UnitId> =
            self.units.values().filter(|u| u.org == org).map(|u| u.id).collect();
        for unit in gone {
            if let Some(unit) = self.units.remove(&unit) {
                self.lines.remove(&unit.address);
            }
        }
        let users: Vec<String> = self
            .members
            .remove(&org)
            .into_iter()
            .flat_map(|m| m.keys().cloned().collect::<Vec<_>>())
            .collect();
        for user in users {
            self.remove_member(org, &user);
        }
    }
}
