//! The organisation rules, one test each, on the pure state machine.

use switchboard_hub::org::*;

const NOW: u64 = 1_000;

fn user(name: &str) -> Actor {
    Actor::User(name.into())
}

/// An organisation of example.org owned by max@example.org, with `seats` seats.
fn org(state: &mut OrgState, seats: u32) -> OrgId {
    let command = Command::CreateOrg {
        name: "Example".into(),
        owner: "max@example.org".into(),
        domain: "example.org".into(),
        line: "main@example.org".into(),
        seat_limit: Some(seats),
    };
    match state.execute(&Actor::Operator, command, NOW).unwrap().change {
        Change::OrgCreated { org, .. } => org.id,
        other => panic!("{other:?}"),
    }
}

/// Registers and approves `name` as a member.
fn member(state: &mut OrgState, org: OrgId, name: &str) {
    state.execute(&user(name), Command::Register { org }, NOW).unwrap();
    let approve = Command::Approve { org, user: name.into() };
    state.execute(&user("max@example.org"), approve, NOW).unwrap();
}

fn refused_by(result: Result<Event, OrgError>) -> &'static str {
    match result {
        Err(OrgError::NotAllowed { rule }) => rule,
        other => panic!("not refused by a rule: {other:?}"),
    }
}

#[test]
fn only_the_operator_creates_organisations_and_the_owner_is_in_an_agreed_domain() {
    let mut state = OrgState::default();
    let command = Command::CreateOrg {
        name: "X".into(),
        owner: "max@example.org".into(),
        domain: "example.org".into(),
        line: "main@example.org".into(),
        seat_limit: Some(1),
    };
    assert!(
        refused_by(state.decide(&user("max@example.org"), command.clone(), NOW))
            .contains("operator")
    );
    let foreign = Command::CreateOrg {
        name: "X".into(),
        owner: "max@gmail.com".into(),
        domain: "example.org".into(),
        line: "main@example.org".into(),
        seat_limit: Some(1),
    };
    assert!(matches!(
        state.decide(&Actor::Operator, foreign, NOW),
        Err(OrgError::DomainNotAgreed { .. })
    ));
    let id = org(&mut state, 1);
    let root = state.org(id).unwrap().root;
    assert_eq!(state.unit(root).unwrap().address, "main@example.org");
    assert_eq!(state.member(id, "max@example.org").unwrap().unit, Some(root));
}

#[test]
fn members_register_only_with_an_address_in_an_agreed_domain() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    assert!(matches!(
        state.decide(&user("max@gmail.com"), Command::Register { org: id }, NOW),
        Err(OrgError::DomainNotAgreed { .. })
    ));
    state.execute(&user("ann@example.org"), Command::Register { org: id }, NOW).unwrap();
    assert_eq!(state.member(id, "ann@example.org").unwrap().status, Status::Pending);
}

#[test]
fn a_claimed_domain_admits_its_addresses_once_proven_and_a_merged_domain_still_does() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let owner = user("max@example.org");
    state
        .execute(&owner, Command::AddDomain { org: id, domain: "example.net".into() }, NOW)
        .unwrap();
    let register = Command::Register { org: id };
    assert!(matches!(
        state.decide(&user("bea@example.net"), register.clone(), NOW),
        Err(OrgError::DomainNotAgreed { .. })
    ));
    let confirm = Command::ConfirmDomain { org: id, domain: "example.net".into() };
    refused_by(state.decide(&owner, confirm.clone(), NOW));
    state.execute(&Actor::Operator, confirm, NOW).unwrap();
    state.execute(&user("bea@example.net"), register, NOW).unwrap();
    let merge =
        Command::MergeDomains { org: id, from: "example.net".into(), into: "example.org".into() };
    state.execute(&owner, merge, NOW).unwrap();
    assert!(!state.org(id).unwrap().domains.contains("example.net"));
    state.execute(&user("cem@example.net"), Command::Register { org: id }, NOW).unwrap();
    // Another organisation cannot take a domain this one holds.
    let other = Command::CreateOrg {
        name: "Other".into(),
        owner: "o@example.org".into(),
        domain: "example.org".into(),
        line: "other@example.org".into(),
        seat_limit: Some(1),
    };
    assert!(matches!(state.decide(&Actor::Operator, other, NOW), Err(OrgError::Taken(_))));
}

#[test]
fn registering_past_the_seat_limit_is_refused_and_the_operator_can_raise_it() {
    let mut state = OrgState::default();
    let id = org(&mut state, 2); // the owner takes one seat
    state.execute(&user("ann@example.org"), Command::Register { org: id }, NOW).unwrap();
    assert_eq!(
        state.decide(&user("bob@example.org"), Command::Register { org: id }, NOW),
        Err(OrgError::SeatLimit { limit: 2 })
    );
    let raise = Command::SetSeatLimit { org: id, limit: 3 };
    assert!(
        refused_by(state.decide(&user("max@example.org"), raise.clone(), NOW)).contains("operator")
    );
    state.execute(&Actor::Operator, raise, NOW).unwrap();
    state.execute(&user("bob@example.org"), Command::Register { org: id }, NOW).unwrap();
}

#[test]
fn a_pending_member_becomes_active_only_by_an_admins_approval() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    member(&mut state, id, "ann@example.org");
    state.execute(&user("bob@example.org"), Command::Register { org: id }, NOW).unwrap();
    let approve = Command::Approve { org: id, user: "bob@example.org".into() };
    // A plain member cannot approve.
    assert!(!refused_by(state.decide(&user("ann@example.org"), approve.clone(), NOW)).is_empty());
    // An admin can, even one from outside the organisation's domains.
    let name = Command::NameAdmin { org: id, user: "ext@partner.example".into() };
    state.execute(&user("max@example.org"), name, NOW).unwrap();
    state.execute(&user("ext@partner.example"), approve, NOW).unwrap();
    assert_eq!(state.member(id, "bob@example.org").unwrap().status, Status::Active);
}

#[test]
fn units_have_unique_line_addresses_and_form_a_tree() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let owner = user("max@example.org");
    let root = state.org(id).unwrap().root;
    let sales = Command::CreateUnit {
        org: id,
        parent: root,
        name: "Sales".into(),
        line: "sales@example.org".into(),
    };
    let sales = match state.execute(&owner, sales, NOW).unwrap().change {
        Change::UnitCreated(unit) => unit.id,
        other => panic!("{other:?}"),
    };
    let north = Command::CreateUnit {
        org: id,
        parent: sales,
        name: "North".into(),
        line: "north@example.org".into(),
    };
    state.execute(&owner, north, NOW).unwrap();
    let again = Command::CreateUnit {
        org: id,
        parent: root,
        name: "Dup".into(),
        line: "sales@example.org".into(),
    };
    assert_eq!(state.decide(&owner, again, NOW), Err(OrgError::Taken("sales@example.org".into())));
    let member_cannot = Command::CreateUnit {
        org: id,
        parent: root,
        name: "X".into(),
        line: "x@example.org".into(),
    };
    member(&mut state, id, "ann@example.org");
    refused_by(state.decide(&user("ann@example.org"), member_cannot, NOW));
}

#[test]
fn a_member_belongs_to_exactly_one_unit() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let owner = user("max@example.org");
    let root = state.org(id).unwrap().root;
    member(&mut state, id, "ann@example.org");
    state
        .execute(
            &owner,
            Command::Assign { org: id, user: "ann@example.org".into(), unit: root },
            NOW,
        )
        .unwrap();
    assert_eq!(
        state.decide(
            &owner,
            Command::Assign { org: id, user: "ann@example.org".into(), unit: root },
            NOW
        ),
        Err(OrgError::AlreadyAssigned { user: "ann@example.org".into() })
    );
}

#[test]
fn the_owner_alone_names_admins_and_there_are_at_most_five() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let owner = user("max@example.org");
    for i in 0..5 {
        state
            .execute(&owner, Command::NameAdmin { org: id, user: format!("a{i}@example.org") }, NOW)
            .unwrap();
    }
    let sixth = Command::NameAdmin { org: id, user: "a5@example.org".into() };
    assert_eq!(refused_by(state.decide(&owner, sixth, NOW)), "at most 5 admins");
    // An admin cannot name or remove admins.
    let by_admin = Command::RemoveAdmin { org: id, user: "a1@example.org".into() };
    assert_eq!(
        refused_by(state.decide(&user("a0@example.org"), by_admin, NOW)),
        "only the owner removes admins"
    );
    state
        .execute(&owner, Command::RemoveAdmin { org: id, user: "a1@example.org".into() }, NOW)
        .unwrap();
    state
        .execute(&owner, Command::NameAdmin { org: id, user: "a5@example.org".into() }, NOW)
        .unwrap();
}

#[test]
fn ownership_passes_only_when_the_new_owner_confirms() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let owner = user("max@example.org");
    let transfer = Command::TransferOwnership { org: id, to: "eva@example.org".into() };
    refused_by(state.decide(&user("eva@example.org"), transfer.clone(), NOW));
    state.execute(&owner, transfer, NOW).unwrap();
    assert_eq!(state.org(id).unwrap().owner, "max@example.org");
    refused_by(state.decide(
        &user("someone@example.org"),
        Command::AcceptOwnership { org: id },
        NOW,
    ));
    state.execute(&user("eva@example.org"), Command::AcceptOwnership { org: id }, NOW).unwrap();
    assert_eq!(state.org(id).unwrap().owner, "eva@example.org");
    // The old owner has no owner rights left.
    refused_by(state.decide(&owner, Command::DeleteOrg { org: id }, NOW));
}

#[test]
fn only_the_owner_deletes_the_organisation_and_admins_cannot_deactivate_the_owner() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let owner = user("max@example.org");
    state
        .execute(&owner, Command::NameAdmin { org: id, user: "adm@example.org".into() }, NOW)
        .unwrap();
    let admin = user("adm@example.org");
    refused_by(state.decide(&admin, Command::DeleteOrg { org: id }, NOW));
    let deactivate_owner = Command::Deactivate { org: id, user: "max@example.org".into() };
    refused_by(state.decide(&admin, deactivate_owner, NOW));
    state.execute(&owner, Command::DeleteOrg { org: id }, NOW).unwrap();
    assert!(state.org(id).is_none());
}

#[test]
fn only_a_deactivated_member_can_be_deleted() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let owner = user("max@example.org");
    member(&mut state, id, "ann@example.org");
    let delete =
        Command::DeleteMember { org: id, user: "ann@example.org".into(), reassign_to: None };
    assert!(matches!(state.decide(&owner, delete.clone(), NOW), Err(OrgError::WrongStatus { .. })));
    state
        .execute(&owner, Command::Deactivate { org: id, user: "ann@example.org".into() }, NOW)
        .unwrap();
    // A deactivated member holds no rights.
    assert_eq!(state.role_of(state.org(id).unwrap(), &user("ann@example.org")), None);
    state.execute(&owner, delete, NOW).unwrap();
    assert!(state.member(id, "ann@example.org").is_none());
}

#[test]
fn the_rights_of_roles_never_come_from_a_unit_even_from_a_grant_logged_before_the_rule() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let root = state.org(id).unwrap().root;
    member(&mut state, id, "ann@example.org");
    let owner = user("max@example.org");
    let assign = Command::Assign { org: id, user: "ann@example.org".into(), unit: root };
    state.execute(&owner, assign, NOW).unwrap();
    // An old log may hold a grant of a role's right to a unit: it gives nothing.
    let old_grant = Event {
        actor: owner.clone(),
        at_ms: NOW,
        change: Change::Applied(Command::GrantUnitRight {
            org: id,
            unit: root,
            right: Right::OnboardMembers,
        }),
        also: Vec::new(),
    };
    state.apply(&old_grant);
    let o = state.org(id).unwrap().clone();
    assert!(!state.holds(&o, &user("ann@example.org"), Right::OnboardMembers));
    for right in [Right::AssignMembers, Right::ApproveRegistrations, Right::ReadEventLog] {
        assert!(!Role::Member.has(right));
        assert!(!right.unit_grantable());
    }
    assert!(!Role::Admin.has(Right::ManageAdmins));
    assert!(!Role::Admin.has(Right::DeleteOrganisation));
    assert!(Role::Owner.rights().len() > Role::Admin.rights().len());
}

#[test]
fn replaying_the_event_log_rebuilds_the_same_state() {
    let mut state = OrgState::default();
    let mut log = Vec::new();
    let owner = user("max@example.org");
    let create = Command::CreateOrg {
        name: "Example".into(),
        owner: "max@example.org".into(),
        domain: "example.org".into(),
        line: "main@example.org".into(),
        seat_limit: Some(5),
    };
    log.push(state.execute(&Actor::Operator, create, NOW).unwrap());
    let id = state.orgs_ids()[0];
    log.push(state.execute(&user("ann@example.org"), Command::Register { org: id }, NOW).unwrap());
    log.push(
        state
            .execute(&owner, Command::Approve { org: id, user: "ann@example.org".into() }, NOW)
            .unwrap(),
    );
    log.push(
        state
            .execute(&owner, Command::NameAdmin { org: id, user: "ann@example.org".into() }, NOW)
            .unwrap(),
    );
    let mut replayed = OrgState::default();
    for event in &log {
        replayed.apply(event);
    }
    assert_eq!(replayed.org(id), state.org(id));
    assert_eq!(replayed.member(id, "ann@example.org"), state.member(id, "ann@example.org"));
}

/// Creates a unit under `parent` and returns its id.
fn unit(state: &mut OrgState, org: OrgId, parent: UnitId, line: &str) -> UnitId {
    let command = Command::CreateUnit { org, parent, name: line.into(), line: line.into() };
    match state.execute(&user("max@example.org"), command, NOW).unwrap().change {
        Change::UnitCreated(unit) => unit.id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_unit_holds_member_rights_only() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let root = state.org(id).unwrap().root;
    let office = unit(&mut state, id, root, "office@example.org");
    let owner = user("max@example.org");
    for right in [
        Right::AssignMembers,
        Right::OnboardMembers,
        Right::ApproveRegistrations,
        Right::ManageUnits,
        Right::ManageGroups,
        Right::ManageKeys,
        Right::ReadEventLog,
        Right::ManageMembers,
        Right::ManageAdmins,
        Right::TransferOwnership,
        Right::DeleteOrganisation,
    ] {
        let grant = Command::GrantUnitRight { org: id, unit: office, right };
        assert_eq!(
            refused_by(state.decide(&owner, grant, NOW)),
            "a unit holds member rights only; the rights of roles come from roles",
            "{right:?}"
        );
    }
    for right in [Right::Send, Right::SendAsLine, Right::ReceiveForLine, Right::ReadDirectory] {
        state
            .execute(&owner, Command::GrantUnitRight { org: id, unit: office, right }, NOW)
            .unwrap();
        assert!(state.unit(office).unwrap().rights.contains(&right));
        state
            .execute(&owner, Command::RevokeUnitRight { org: id, unit: office, right }, NOW)
            .unwrap();
    }
}

#[test]
fn a_line_reaches_its_sub_units_only_when_set_to() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let root = state.org(id).unwrap().root;
    let sales = unit(&mut state, id, root, "sales@example.org");
    let north = unit(&mut state, id, sales, "north@example.org");
    member(&mut state, id, "ann@example.org");
    member(&mut state, id, "bob@example.org");
    let owner = user("max@example.org");
    state
        .execute(
            &owner,
            Command::Assign { org: id, user: "ann@example.org".into(), unit: sales },
            NOW,
        )
        .unwrap();
    state
        .execute(
            &owner,
            Command::Assign { org: id, user: "bob@example.org".into(), unit: north },
            NOW,
        )
        .unwrap();
    let readers = |state: &OrgState| -> Vec<String> {
        let mut users: Vec<String> =
            state.readers_of_line(sales).iter().map(|m| m.user.clone()).collect();
        users.sort();
        users
    };
    assert_eq!(readers(&state), ["ann@example.org"]);
    let lines: Vec<&str> =
        state.lines_of(id, "bob@example.org").iter().map(|u| u.address.as_str()).collect();
    assert_eq!(lines, ["north@example.org"]);
    state
        .execute(&owner, Command::SetIncludeSubUnits { org: id, unit: sales, include: true }, NOW)
        .unwrap();
    assert_eq!(readers(&state), ["ann@example.org", "bob@example.org"]);
    let lines: Vec<&str> =
        state.lines_of(id, "bob@example.org").iter().map(|u| u.address.as_str()).collect();
    assert_eq!(lines, ["north@example.org", "sales@example.org"]);
}

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn invite(
    state: &mut OrgState,
    org: OrgId,
    who: &str,
    guest: bool,
    hash: &str,
) -> Result<Event, OrgError> {
    let command = Command::Invite {
        org,
        user: who.into(),
        guest,
        unit: None,
        code_hash: hash.into(),
        expires_ms: NOW + 7 * 24 * 3_600_000,
    };
    state.execute(&user("max@example.org"), command, NOW)
}

#[test]
fn an_invited_member_joins_with_the_code_without_approval_and_a_new_code_replaces_the_old() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    invite(&mut state, id, "ann@example.org", false, HASH_A).unwrap();
    // Sent again: the first code no longer works.
    invite(&mut state, id, "ann@example.org", false, HASH_B).unwrap();
    let old = Command::AcceptInvitation { org: id, code_hash: HASH_A.into() };
    refused_by(state.decide(&user("ann@example.org"), old, NOW));
    // Someone else cannot use Ann's code.
    let theft = Command::AcceptInvitation { org: id, code_hash: HASH_B.into() };
    refused_by(state.decide(&user("eve@example.org"), theft.clone(), NOW));
    state.execute(&user("ann@example.org"), theft, NOW).unwrap();
    let ann = state.member(id, "ann@example.org").unwrap();
    assert_eq!((ann.status, ann.role), (Status::Active, Role::Member));
    assert_eq!(ann.invited_by.as_deref(), Some("max@example.org"));
}

#[test]
fn an_invitation_expires_after_its_time() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    invite(&mut state, id, "ann@example.org", false, HASH_A).unwrap();
    let accept = Command::AcceptInvitation { org: id, code_hash: HASH_A.into() };
    let late = NOW + 7 * 24 * 3_600_000;
    refused_by(state.decide(&user("ann@example.org"), accept, late));
}

#[test]
fn group_admins_and_members_cannot_invite() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    member(&mut state, id, "ann@example.org");
    let command = Command::Invite {
        org: id,
        user: "new@example.org".into(),
        guest: false,
        unit: None,
        code_hash: HASH_A.into(),
        expires_ms: NOW + 1,
    };
    assert_eq!(
        refused_by(state.decide(&user("ann@example.org"), command, NOW)),
        "admins invite members and guests"
    );
}

#[test]
fn a_guest_takes_no_seat_and_answers_only_whoever_invited_them() {
    let mut state = OrgState::default();
    let id = org(&mut state, 1); // the owner's seat is the only one
    invite(&mut state, id, "gus@outside.example", true, HASH_A).unwrap();
    let accept = Command::AcceptInvitation { org: id, code_hash: HASH_A.into() };
    state.execute(&user("gus@outside.example"), accept, NOW).unwrap();
    assert_eq!(state.member(id, "gus@outside.example").unwrap().role, Role::Guest);
    assert_eq!(state.seats_taken(id, NOW), 1);
    let gus = "gus@outside.example";
    assert!(state.check_send(gus, gus, "max@example.org", false).is_ok());
    assert!(matches!(
        state.check_send(gus, gus, "stranger@elsewhere.example", false),
        Err(SendRefusal::NotAllowed(rule)) if rule.contains("guest")
    ));
    // A member outside the domains needs to be a guest: inviting as a member is refused.
    assert!(matches!(
        invite(&mut state, id, "x@outside.example", false, HASH_B),
        Err(OrgError::DomainNotAgreed { .. })
    ));
}

fn group(
    state: &mut OrgState,
    name: &str,
    owner: &str,
    org: Option<OrgId>,
    scope: Scope,
    anonymous: bool,
) {
    let command =
        Command::CreateGroup { name: name.into(), owner: owner.into(), org, scope, anonymous };
    let actor = if org.is_some() { user("max@example.org") } else { user(owner) };
    state.execute(&actor, command, NOW).unwrap();
}

#[test]
fn a_group_name_is_unique_on_the_hub_and_needs_an_owner() {
    let mut state = OrgState::default();
    group(&mut state, "#team", "ann@example.org", None, Scope::Owner, false);
    let again = Command::CreateGroup {
        name: "#team".into(),
        owner: "bob@example.org".into(),
        org: None,
        scope: Scope::Owner,
        anonymous: false,
    };
    assert!(matches!(state.decide(&user("bob@example.org"), again, NOW), Err(OrgError::Taken(_))));
    let ownerless = Command::CreateGroup {
        name: "#nobody".into(),
        owner: String::new(),
        org: None,
        scope: Scope::Owner,
        anonymous: false,
    };
    assert!(matches!(state.decide(&Actor::Operator, ownerless, NOW), Err(OrgError::Invalid(_))));
    // Someone cannot create a group in another's name.
    let forged = Command::CreateGroup {
        name: "#forged".into(),
        owner: "ann@example.org".into(),
        org: None,
        scope: Scope::Owner,
        anonymous: false,
    };
    refused_by(state.decide(&user("eve@example.org"), forged, NOW));
}

#[test]
fn scope_says_who_may_address_a_group_and_defaults_to_the_owner() {
    assert_eq!(Scope::default(), Scope::Owner);
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    member(&mut state, id, "ann@example.org");
    group(&mut state, "#g", "ann@example.org", None, Scope::Owner, false);
    let add = Command::AddGroupMember { group: "#g".into(), user: "bob@example.org".into() };
    state.execute(&user("ann@example.org"), add, NOW).unwrap();
    let may = |state: &OrgState, who: &str| state.check_send(who, who, "#g", false).is_ok();
    assert!(may(&state, "ann@example.org"));
    assert!(!may(&state, "bob@example.org"), "scope owner: a member may not send");
    let scope = |state: &mut OrgState, scope| {
        let command = Command::SetGroupScope { group: "#g".into(), scope };
        state.execute(&user("ann@example.org"), command, NOW).unwrap();
    };
    scope(&mut state, Scope::Group);
    assert!(may(&state, "bob@example.org"));
    assert!(!may(&state, "max@example.org"), "scope group: a non-member may not send");
    scope(&mut state, Scope::Server);
    assert!(may(&state, "max@example.org"));
}

#[test]
fn an_anonymous_group_is_read_only_for_its_members() {
    let mut state = OrgState::default();
    group(&mut state, "#news", "ann@example.org", None, Scope::Server, true);
    let add = Command::AddGroupMember { group: "#news".into(), user: "bob@example.org".into() };
    state.execute(&user("ann@example.org"), add, NOW).unwrap();
    assert!(state.check_send("ann@example.org", "ann@example.org", "#news", false).is_ok());
    assert!(matches!(
        state.check_send("bob@example.org", "bob@example.org", "#news", false),
        Err(SendRefusal::NotAllowed(rule)) if rule.contains("read-only")
    ));
    // Anyone else on the hub may still write to it (scope server).
    assert!(state.check_send("cy@example.org", "cy@example.org", "#news", false).is_ok());
}

#[test]
fn subgroup_members_receive_and_subgroups_cannot_form_a_cycle() {
    let mut state = OrgState::default();
    group(&mut state, "#all", "ann@example.org", None, Scope::Owner, false);
    group(&mut state, "#part", "ann@example.org", None, Scope::Owner, false);
    let ann = user("ann@example.org");
    state
        .execute(
            &ann,
            Command::AddGroupMember { group: "#part".into(), user: "bob@example.org".into() },
            NOW,
        )
        .unwrap();
    state
        .execute(&ann, Command::AddSubgroup { group: "#all".into(), sub: "#part".into() }, NOW)
        .unwrap();
    assert!(state.group_readers("#all").contains("bob@example.org"));
    let cycle = Command::AddSubgroup { group: "#part".into(), sub: "#all".into() };
    assert!(matches!(state.decide(&ann, cycle, NOW), Err(OrgError::Invalid(_))));
}

#[test]
fn deleting_the_owner_deletes_a_group_unless_it_is_linked_to_an_organisation() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    member(&mut state, id, "ann@example.org");
    group(&mut state, "#private", "ann@example.org", None, Scope::Owner, false);
    group(&mut state, "#linked", "ann@example.org", Some(id), Scope::Account, false);
    let owner = user("max@example.org");
    state
        .execute(&owner, Command::Deactivate { org: id, user: "ann@example.org".into() }, NOW)
        .unwrap();
    state
        .execute(
            &owner,
            Command::DeleteMember { org: id, user: "ann@example.org".into(), reassign_to: None },
            NOW,
        )
        .unwrap();
    assert!(state.group("#private").is_none());
    assert_eq!(state.group("#linked").unwrap().owner, "max@example.org");
}

#[test]
fn group_admins_assign_active_members_of_their_organisation_only_to_what_they_look_after() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    member(&mut state, id, "ann@example.org");
    member(&mut state, id, "gabi@example.org");
    group(&mut state, "#linked", "max@example.org", Some(id), Scope::Account, false);
    group(&mut state, "#board", "max@example.org", Some(id), Scope::Owner, false);
    let add = |who: &str, to: &str| Command::AddGroupMember { group: to.into(), user: who.into() };
    let gabi = user("gabi@example.org");
    refused_by(state.decide(&gabi, add("ann@example.org", "#linked"), NOW));
    let owner = user("max@example.org");
    let name = Command::NameGroupAdmin {
        org: id,
        user: "gabi@example.org".into(),
        unit: None,
        group: Some("#linked".into()),
    };
    // Only admins name group admins.
    refused_by(state.decide(&user("ann@example.org"), name.clone(), NOW));
    state.execute(&owner, name, NOW).unwrap();
    state.execute(&gabi, add("ann@example.org", "#linked"), NOW).unwrap();
    assert!(state.group("#linked").unwrap().members.contains("ann@example.org"));
    // Not an outsider, not a group she does not look after, not an invitation.
    assert_eq!(
        refused_by(state.decide(&gabi, add("zoe@gmail.com", "#linked"), NOW)),
        "a group admin assigns only active members of the group's organisation"
    );
    refused_by(state.decide(&gabi, add("gabi@example.org", "#board"), NOW));
    let invite = Command::Invite {
        org: id,
        user: "new@example.org".into(),
        guest: false,
        unit: None,
        code_hash: "0".repeat(64),
        expires_ms: NOW + 1_000,
    };
    refused_by(state.decide(&gabi, invite, NOW));
    // Deactivated, she looks after nothing.
    state
        .execute(&owner, Command::Deactivate { org: id, user: "gabi@example.org".into() }, NOW)
        .unwrap();
    assert!(state.org(id).unwrap().group_admins.is_empty());
}

/// A second organisation, partner.example, owned by pia, with a group #partners holding
/// pat@partner.example.
fn partner(state: &mut OrgState) -> OrgId {
    let create = Command::CreateOrg {
        name: "Partner".into(),
        owner: "pia@partner.example".into(),
        domain: "partner.example".into(),
        line: "main@partner.example".into(),
        seat_limit: Some(10),
    };
    let Change::OrgCreated { org, .. } =
        state.execute(&Actor::Operator, create, NOW).unwrap().change
    else {
        panic!()
    };
    let pia = user("pia@partner.example");
    // pat is a member of the partner organisation: a key reaches only its members.
    state.execute(&user("pat@partner.example"), Command::Register { org: org.id }, NOW).unwrap();
    let approve = Command::Approve { org: org.id, user: "pat@partner.example".into() };
    state.execute(&pia, approve, NOW).unwrap();
    let group = Command::CreateGroup {
        name: "#partners".into(),
        owner: "pia@partner.example".into(),
        org: Some(org.id),
        scope: Scope::Owner,
        anonymous: false,
    };
    state.execute(&pia, group, NOW).unwrap();
    let add =
        Command::AddGroupMember { group: "#partners".into(), user: "pat@partner.example".into() };
    state.execute(&pia, add, NOW).unwrap();
    org.id
}

#[test]
fn a_key_lets_another_organisations_group_reach_a_line_until_it_expires_or_is_revoked() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let root = state.org(id).unwrap().root;
    let sales = unit(&mut state, id, root, "sales@example.org");
    let other = partner(&mut state);
    fn reach(state: &OrgState, at: u64) -> Result<(), SendRefusal> {
        let pat = "pat@partner.example";
        state.check_send_at(pat, pat, "sales@example.org", false, at).map(|_| ())
    }
    assert!(matches!(reach(&state, NOW), Err(SendRefusal::NotAllowed(_))));

    let expires = NOW + 1_000_000;
    let issue =
        Command::IssueKey { org: id, unit: sales, to_org: other, expires_ms: Some(expires) };
    // Only the line's key managers issue keys.
    refused_by(state.decide(&user("pia@partner.example"), issue.clone(), NOW));
    let Change::KeyIssued(key) =
        state.execute(&user("max@example.org"), issue, NOW).unwrap().change
    else {
        panic!()
    };
    // Issued but not handed to a group: still closed.
    assert!(reach(&state, NOW).is_err());
    let hand = Command::HandKey { key: key.id, group: "#partners".into() };
    refused_by(state.decide(&user("max@example.org"), hand.clone(), NOW));
    state.execute(&user("pia@partner.example"), hand, NOW).unwrap();
    assert!(reach(&state, NOW).is_ok());
    // Expired: refused, and the refusal names the key so it can be logged.
    assert!(
        matches!(reach(&state, expires), Err(SendRefusal::KeyRefused { key: k, .. }) if k == key.id)
    );
    // Revoked.
    state.execute(&user("max@example.org"), Command::RevokeKey { key: key.id }, NOW).unwrap();
    assert!(matches!(reach(&state, NOW), Err(SendRefusal::KeyRefused { .. })));
}

#[test]
fn a_key_works_only_for_an_organisation_known_on_the_hub() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let root = state.org(id).unwrap().root;
    let sales = unit(&mut state, id, root, "sales@example.org");
    let unknown =
        Command::IssueKey { org: id, unit: sales, to_org: OrgId(9_999), expires_ms: Some(NOW + 1) };
    assert!(matches!(
        state.decide(&user("max@example.org"), unknown, NOW),
        Err(OrgError::UnknownOrg(_))
    ));
    let other = partner(&mut state);
    let issue =
        Command::IssueKey { org: id, unit: sales, to_org: other, expires_ms: Some(NOW + 1_000) };
    let Change::KeyIssued(key) =
        state.execute(&user("max@example.org"), issue, NOW).unwrap().change
    else {
        panic!()
    };
    state
        .execute(
            &user("pia@partner.example"),
            Command::HandKey { key: key.id, group: "#partners".into() },
            NOW,
        )
        .unwrap();
    // The partner organisation leaves the hub: its key stops working.
    state.execute(&user("pia@partner.example"), Command::DeleteOrg { org: other }, NOW).unwrap();
    let pat = "pat@partner.example";
    assert!(state.check_send_at(pat, pat, "sales@example.org", false, NOW).is_err());
}

#[test]
fn deleting_a_member_can_hand_their_groups_and_unit_to_a_chosen_active_member() {
    let mut state = OrgState::default();
    let id = org(&mut state, 10);
    let root = state.org(id).unwrap().root;
    let sales = unit(&mut state, id, root, "sales@example.org");
    member(&mut state, id, "ann@example.org");
    member(&mut state, id, "bob@example.org");
    let owner = user("max@example.org");
    state
        .execute(
            &owner,
            Command::Assign { org: id, user: "ann@example.org".into(), unit: sales },
            NOW,
        )
        .unwrap();
    group(&mut state, "#anns", "ann@example.org", None, Scope::Owner, false);
    state
        .execute(&owner, Command::Deactivate { org: id, user: "ann@example.org".into() }, NOW)
        .unwrap();
    // The heir must be another active member.
    let bad = Command::DeleteMember {
        org: id,
        user: "ann@example.org".into(),
        reassign_to: Some("nobody@example.org".into()),
    };
    assert!(matches!(state.decide(&owner, bad, NOW), Err(OrgError::Invalid(_))));
    let delete = Command::DeleteMember {
        org: id,
        user: "ann@example.org".into(),
        reassign_to: Some("bob@example.org".into()),
    };
    // ann was in the organisation's #staff and in cy's own #friends.
    group(&mut state, "#staff", "max@example.org", Some(id), Scope::Group, false);
    group(&mut state, "#friends", "cy@else.example", None, Scope::Group, false);
    for g in ["#staff", "#friends"] {
        let add = Command::AddGroupMember { group: g.into(), user: "ann@example.org".into() };
        state.apply(&Event {
            actor: Actor::Operator,
            at_ms: NOW,
            change: Change::Applied(add),
            also: Vec::new(),
        });
    }
    let event = state.execute(&owner, delete, NOW).unwrap();
    let Change::MemberDeleted { moved, .. } = event.change else { panic!() };
    assert!(moved.contains(&"member of #staff".to_string()), "{moved:?}");
    assert!(!moved.iter().any(|m| m.contains("#friends")), "{moved:?}");
    assert!(state.group("#staff").unwrap().members.contains("bob@example.org"));
    // A group of someone else's is not the organisation's to hand on.
    assert!(state.group("#friends").unwrap().members.is_empty());
    assert_eq!(state.group("#anns").unwrap().owner, "bob@example.org");
    assert_eq!(state.member(id, "bob@example.org").unwrap().unit, Some(sales));
    assert!(state.member(id, "ann@example.org").is_none());
}

#[test]
fn a_user_owns_at_most_a_hundred_groups_of_their_own_and_the_operator_is_not_held_to_it() {
    let mut state = OrgState::default();
    for i in 0..MAX_OWN_GROUPS {
        group(&mut state, &format!("#g{i}"), "ann@example.org", None, Scope::Owner, false);
    }
    let one_more = |name: &str| Command::CreateGroup {
        name: name.into(),
        owner: "ann@example.org".into(),
        org: None,
        scope: Scope::Owner,
        anonymous: false,
    };
    let refused = state.execute(&user("ann@example.org"), one_more("#g-more"), NOW);
    assert_eq!(refused_by(refused), "a user owns at most 100 groups outside organisations");
    // Another user is not affected, and the operator may make more for ann.
    group(&mut state, "#bobs", "bob@example.org", None, Scope::Owner, false);
    state.execute(&Actor::Operator, one_more("#by-operator"), NOW).unwrap();
    // The operator's counts too: ann now owns 101. Deleting two makes room for one.
    let ann = user("ann@example.org");
    state.execute(&ann, Command::DeleteGroup { group: "#g0".into() }, NOW).unwrap();
    refused_by(state.execute(&ann, one_more("#g-again"), NOW));
    state.execute(&ann, Command::DeleteGroup { group: "#g1".into() }, NOW).unwrap();
    state.execute(&ann, one_more("#g-again"), NOW).unwrap();
}
