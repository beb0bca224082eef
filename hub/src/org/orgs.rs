//! Organisations: created by the operator with an owner, a first agreed domain and a main line;
//! seat limits (the operator's); agreed domains added and merged; deletion by the owner.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use switchboard_protocol::Address;

use crate::org::{
    Actor, Change, Command, Invitation, MAX_NAME, Managed, Member, OrgError, OrgId, OrgState,
    Right, Role, Status, Unit, UnitId, account_in, line, not_allowed, text,
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
    /// Agreed domains: proven to be the organisation's (by the operator, or by a DNS record).
    pub domains: BTreeSet<String>,
    /// Domains an admin claimed and nobody has proven yet: they admit nobody, and block no
    /// other organisation. By domain, when it was claimed (Unix milliseconds).
    #[serde(default)]
    pub claims: BTreeMap<String, u64>,
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
    /// Group admins: each active member named, with the units and groups they look after.
    #[serde(default)]
    pub group_admins: BTreeMap<String, BTreeSet<Managed>>,
}

impl OrgState {
    /// Seats taken in `org` at `now`: active members, and both kinds of pending ones (a
    /// self-registration awaiting approval, and an invitation to join as a member that is
    /// neither accepted nor expired). Guests and deactivated members take none.
    pub fn seats_taken(&self, org: OrgId, now: u64) -> u32 {
        let members = self
            .members
            .get(&org)
            .into_iter()
            .flat_map(|members| members.values())
            .filter(|m| m.status != Status::Deactivated && m.role != Role::Guest)
            .count();
        let invited = self.orgs.get(&org).into_iter().flat_map(|o| o.invitations.values());
        let invited = invited.filter(|i| !i.guest && i.expires_ms > now).count();
        (members + invited) as u32
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
            Command::ConfirmDomain { org, domain } => {
                self.decide_confirm_domain(actor, org, domain)
            }
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
        seat_limit: Option<u32>,
    ) -> Result<Change, OrgError> {
        if *actor != Actor::Operator {
            return Err(not_allowed("only the hub operator creates organisations"));
        }
        let owner_address = account_in("owner", &owner)?;
        let domain = domain_name(&domain)?;
        if owner_address.domain() != Some(domain.as_str()) {
            return Err(OrgError::DomainNotAgreed { address: owner });
        }
        if self.domain_holder(&domain).is_some() {
            return Err(OrgError::Taken(domain));
        }
        let root_line = line("line", &root_line)?;
        if account_in("line", &root_line)?.domain() != Some(domain.as_str()) {
            return Err(OrgError::DomainNotAgreed { address: root_line });
        }
        if self.lines.contains_key(&root_line) {
            return Err(OrgError::Taken(root_line));
        }
        let name = text("name", &name, MAX_NAME)?;
        // The hub fills in its default before deciding; a log replays what was decided.
        let Some(seat_limit) = seat_limit.filter(|&limit| limit > 0) else {
            return Err(OrgError::Field { field: "seat_limit".into(), why: "at least 1".into() });
        };
        let id = OrgId(self.next_id + 1);
        let root = UnitId(self.next_id + 2);
        let org = Org {
            id,
            name,
            owner: owner_address.as_str().to_string(),
            pending_owner: None,
            domains: BTreeSet::from([domain]),
            claims: BTreeMap::new(),
            merged: BTreeMap::new(),
            seat_limit,
            admins: BTreeSet::new(),
            root,
            invitations: BTreeMap::new(),
            group_admins: BTreeMap::new(),
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
            logo_public: false,
        };
        Ok(Change::OrgCreated { org: Box::new(org), root: unit })
    }

    fn decide_add_domain(
        &self,
        actor: &Actor,
        org: OrgId,
        domain: String,
    ) -> Result<Change, OrgError> {
        let o = self.org_of(org)?;
        self.require(o, actor, Right::ManageUnits, "admins add domains")?;
        let domain = domain_name(&domain)?;
        if self.domain_holder(&domain).is_some() {
            return Err(OrgError::Taken(domain));
        }
        if o.claims.contains_key(&domain) {
            return Err(OrgError::Invalid(format!(
                "{domain} is claimed already; prove it with the DNS record, or ask the operator"
            )));
        }
        Ok(Change::Applied(Command::AddDomain { org, domain }))
    }

    /// Proves a claimed domain: the operator confirms it, or the hub has found the DNS record.
    fn decide_confirm_domain(
        &self,
        actor: &Actor,
        org: OrgId,
        domain: String,
    ) -> Result<Change, OrgError> {
        let o = self.org_of(org)?;
        if !matches!(actor, Actor::Operator | Actor::Hub) {
            return Err(not_allowed(
                "a domain is proven by its DNS record (POST /v1/org/domains/verify) or by the operator",
            ));
        }
        let domain = domain_name(&domain)?;
        if let Some(holder) = self.domain_holder(&domain) {
            return Err(if holder == org {
                OrgError::Invalid(format!("{domain} is proven already"))
            } else {
                OrgError::Taken(domain)
            });
        }
        if !o.claims.contains_key(&domain) {
            return Err(OrgError::Invalid(format!("{domain} is not claimed by the organisation")));
        }
        Ok(Change::Applied(Command::ConfirmDomain { org, domain }))
    }

    /// The main line of the organisation that holds `domain`.
    pub fn main_line_of(&self, domain: &str) -> Option<String> {
        let org = self.orgs.get(&self.domain_holder(&domain.to_ascii_lowercase())?)?;
        self.units.get(&org.root).map(|u| u.address.clone())
    }

    /// The organisation that holds `domain` (proven, or merged into another of its domains).
    pub fn domain_holder(&self, domain: &str) -> Option<OrgId> {
        self.orgs
            .values()
            .find(|o| o.domains.contains(domain) || o.merged.contains_key(domain))
            .map(|o| o.id)
    }

    /// The text `org` must publish in a TXT record at `_switchboard.<domain>` to prove the
    /// domain. Derived from both, so one organisation's record never proves the domain for
    /// another.
    pub fn domain_token(org: OrgId, domain: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("switchboard-domain:{}:{domain}", org.0));
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("switchboard-verification={hex}")
    }

    /// Makes `domain` proven for `org` and drops every other organisation's unproven claim.
    fn prove_domain(&mut self, org: OrgId, domain: &str) {
        let claimants: Vec<OrgId> =
            self.orgs.values().filter(|o| o.claims.contains_key(domain)).map(|o| o.id).collect();
        for id in claimants {
            if let Some(o) = self.orgs.get_mut(&id) {
                o.claims.remove(domain);
            }
        }
        if let Some(o) = self.orgs.get_mut(&org) {
            o.domains.insert(domain.to_string());
        }
    }

    pub(super) fn apply_org_created(&mut self, org: &Org, root: &Unit) {
        self.next_id = self.next_id.max(root.id.0).max(org.id.0);
        self.lines.insert(root.address.clone(), root.id);
        self.units.insert(root.id, root.clone());
        self.orgs.insert(org.id, org.clone());
        // The operator's word proves the first domain: other organisations' claims go.
        for domain in &org.domains {
            self.prove_domain(org.id, domain);
        }
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

    pub(super) fn apply_org(&mut self, actor: &Actor, command: &Command, at_ms: u64) {
        match command {
            Command::SetSeatLimit { org, limit } => {
                if let Some(o) = self.orgs.get_mut(org) {
                    o.seat_limit = *limit;
                }
            }
            // The operator's word proves a domain; an admin's only claims it.
            Command::AddDomain { org, domain } => match actor {
                Actor::Operator => self.prove_domain(*org, domain),
                _ => {
                    if let Some(o) = self.orgs.get_mut(org) {
                        o.claims.insert(domain.clone(), at_ms);
                    }
                }
            },
            Command::ConfirmDomain { org, domain } => self.prove_domain(*org, domain),
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

/// A domain name as given: lower-cased, at most 253 bytes, a valid address domain.
fn domain_name(text: &str) -> Result<String, OrgError> {
    let domain = text.trim().to_ascii_lowercase();
    let bad = |why: &str| OrgError::Field { field: "domain".into(), why: why.into() };
    if domain.len() > 253 {
        return Err(bad("longer than 253 bytes"));
    }
    if !domain.contains('.') || Address::parse(&format!("x@{domain}")).is_err() {
        return Err(bad("not a domain name"));
    }
    Ok(domain)
}
