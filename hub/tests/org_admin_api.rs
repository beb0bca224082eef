//! The organisation rules of the second pass, each tried through the admin API of a running hub
//! the way an owner, an admin, a group admin, a member, a guest or an outsider would, and over
//! QUIC where a message is involved. Each test is named after the rule it guards.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchboard_hub::{
    client::{Client, Event, admin::AdminClient, admin::AdminError},
    org::{Change, Command, OrgId, UnitId},
};
use switchboard_protocol::{Address, RejectReason};

const OWNER: &str = "max@example.org";

struct Org {
    id: OrgId,
    root: UnitId,
    sales: UnitId,
    max: AdminClient,
}

/// example.org, owned by max, with `seats` seats and a Sales department (sales@example.org).
async fn create_org(hub: &HubProcess, seats: u32) -> Org {
    let _ = hub.admin_client().add_user(OWNER).await;
    let created = hub
        .admin_client()
        .org(&Command::CreateOrg {
            name: "Example".into(),
            owner: OWNER.into(),
            domain: "example.org".into(),
            line: "main@example.org".into(),
            seat_limit: Some(seats),
        })
        .await
        .unwrap();
    let Change::OrgCreated { org, .. } = created.change else { panic!("{created:?}") };
    let max = hub.as_user(OWNER).await;
    let sales = max
        .org(&Command::CreateUnit {
            org: org.id,
            parent: org.root,
            name: "Sales".into(),
            line: "sales@example.org".into(),
        })
        .await
        .unwrap();
    let Change::UnitCreated(sales) = sales.change else { panic!() };
    Org { id: org.id, root: org.root, sales: sales.id, max }
}

/// Another organisation made by the operator: `name`, owned by `owner` (added to the hub),
/// its first domain `domain`, its main line `main@<domain>`.
async fn other_org(
    hub: &HubProcess,
    name: &str,
    owner: &str,
    domain: &str,
    seats: u32,
) -> switchboard_hub::org::Org {
    let _ = hub.admin_client().add_user(owner).await;
    let created = hub
        .admin_client()
        .org(&Command::CreateOrg {
            name: name.into(),
            owner: owner.into(),
            domain: domain.into(),
            line: format!("main@{domain}"),
            seat_limit: Some(seats),
        })
        .await
        .unwrap();
    let Change::OrgCreated { org, .. } = created.change else { panic!("{created:?}") };
    *org
}

/// partner.example, owned by pia, with pat as an active member and a group #partners (owned by
/// pia, not yet with members); answers it with pia's and pat's clients.
async fn partner_with_member(
    hub: &HubProcess,
) -> (switchboard_hub::org::Org, AdminClient, AdminClient) {
    let partner = other_org(hub, "Partner", "pia@partner.example", "partner.example", 5).await;
    let pia = hub.as_user("pia@partner.example").await;
    let pat = hub.as_user("pat@partner.example").await;
    pat.org(&Command::Register { org: partner.id }).await.unwrap();
    pia.org(&Command::Approve { org: partner.id, user: "pat@partner.example".into() })
        .await
        .unwrap();
    let create: Command = serde_json::from_value(json!({
        "command": "create_group", "name": "#partners", "owner": "pia@partner.example",
        "org": partner.id,
    }))
    .unwrap();
    pia.org(&create).await.unwrap();
    (partner, pia, pat)
}

/// Adds `user` to the hub, registers them with `org` and has the owner approve them.
async fn member(hub: &HubProcess, org: &Org, user: &str) -> AdminClient {
    let client = hub.as_user(user).await;
    client.org(&Command::Register { org: org.id }).await.unwrap();
    org.max.org(&Command::Approve { org: org.id, user: user.into() }).await.unwrap();
    client
}

/// `member`, then assigned to Sales.
async fn sales_member(hub: &HubProcess, org: &Org, user: &str) -> AdminClient {
    let client = member(hub, org, user).await;
    let assign = Command::Assign { org: org.id, user: user.into(), unit: org.sales };
    org.max.org(&assign).await.unwrap();
    client
}

/// Sends `text` to `to` and waits for the hub's answer: `Err` with the reason if refused.
/// Deliveries that arrive meanwhile are acknowledged and dropped.
async fn send(client: &mut Client, to: &str, text: &str) -> Result<(), RejectReason> {
    let id = client.send_text(&Address::parse(to).unwrap(), text).await.unwrap();
    loop {
        match next(client, 20).await {
            Event::Accepted(accepted) if accepted == id => return Ok(()),
            Event::Rejected(rejected) if rejected.id == id => return Err(rejected.reason),
            Event::Deliver(deliver) => {
                client.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
            }
            Event::Receipt(receipt) => {
                client.ack(receipt.queue, receipt.seq, vec![]).await.unwrap();
            }
            _ => {}
        }
    }
}

/// The HTTP status of a result (200 for success) and the hub's message.
fn status<T: std::fmt::Debug>(result: Result<T, AdminError>) -> (u16, String) {
    match result {
        Ok(value) => (200, format!("{value:?}")),
        Err(AdminError::Api { status, message }) => (status, message),
        Err(other) => panic!("{other}"),
    }
}

/// Asserts `result` was refused with `code` and a message containing `text`.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, AdminError>, code: u16, text: &str) {
    let (got, message) = status(result);
    assert_eq!(got, code, "{message}");
    assert!(message.contains(text), "{message:?} does not say {text:?}");
}

/// The `kind`s of the events `client` reads.
async fn event_kinds(client: &AdminClient) -> Vec<String> {
    let events = client.org_events(0).await.unwrap();
    events.iter().map(|e| e["event"]["change"]["kind"].as_str().unwrap().to_string()).collect()
}

/// The events `client` reads, as JSON.
async fn events(client: &AdminClient) -> Vec<Value> {
    client.org_events(0).await.unwrap().into_iter().map(|e| e["event"].clone()).collect()
}

async fn roster(client: &AdminClient, org: &Org) -> Value {
    client.request("GET", &format!("/v1/org/members?org={}", org.id.0), None).await.unwrap()
}

fn roster_entry<'a>(roster: &'a Value, user: &str) -> &'a Value {
    roster["members"].as_array().unwrap().iter().find(|m| m["user"] == user).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_right_granted_to_a_unit_never_carries_admin_powers() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    let ann = sales_member(&hub, &org, "ann@example.org").await;
    for right in ["onboard_members", "approve_registrations", "manage_units", "read_event_log"] {
        let grant: Command = serde_json::from_value(
            json!({ "command": "grant_unit_right", "org": org.id, "unit": org.sales, "right": right }),
        )
        .unwrap();
        refused(org.max.org(&grant).await, 403, "a unit holds member rights only");
    }
    // So a plain member of the department can neither invite nor read the log.
    refused(ann.invite(org.id, "zed@example.org", false).await, 403, "admins invite");
    assert!(event_kinds(&ann).await.is_empty());
    // Member rights may be granted.
    let grant: Command = serde_json::from_value(
        json!({ "command": "grant_unit_right", "org": org.id, "unit": org.sales, "right": "send_as_line" }),
    )
    .unwrap();
    org.max.org(&grant).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_comes_before_role_a_deactivated_admin_holds_nothing_and_leaves_the_admin_list() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    let ann = member(&hub, &org, "ann@example.org").await;
    org.max.org(&Command::NameAdmin { org: org.id, user: "ann@example.org".into() }).await.unwrap();
    // As an admin, ann approves a registration.
    let bob = hub.as_user("bob@example.org").await;
    bob.org(&Command::Register { org: org.id }).await.unwrap();
    ann.org(&Command::Approve { org: org.id, user: "bob@example.org".into() }).await.unwrap();
    assert_eq!(roster_entry(&roster(&org.max, &org).await, "ann@example.org")["admin"], true);

    org.max
        .org(&Command::Deactivate { org: org.id, user: "ann@example.org".into() })
        .await
        .unwrap();
    // Her token stops at once: nothing she asks is even looked at.
    let cy = hub.as_user("cy@example.org").await;
    cy.org(&Command::Register { org: org.id }).await.unwrap();
    let approve = Command::Approve { org: org.id, user: "cy@example.org".into() };
    refused(ann.org(&approve).await, 401, "deactivated or deleted");
    let create = Command::CreateUnit {
        org: org.id,
        parent: org.root,
        name: "Annex".into(),
        line: "annex@example.org".into(),
    };
    refused(ann.org(&create).await, 401, "deactivated or deleted");
    // She left the admin list, and the owner reads why in the log.
    let roster = roster(&org.max, &org).await;
    assert_eq!(roster_entry(&roster, "ann@example.org")["admin"], false);
    assert_eq!(roster_entry(&roster, "ann@example.org")["status"], "deactivated");
    let deactivated = events(&org.max)
        .await
        .into_iter()
        .find(|e| e["change"]["kind"] == "member_deactivated")
        .unwrap();
    assert_eq!(deactivated["change"]["data"]["dropped"], json!(["admin"]));

    // Reactivated, she is a member again, not an admin: she approves nobody.
    org.max
        .org(&Command::Reactivate { org: org.id, user: "ann@example.org".into() })
        .await
        .unwrap();
    refused(ann.org(&approve).await, 403, "admins approve registrations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_admins_are_named_by_admins_and_assign_only_active_members_to_what_they_look_after() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    let gabi = member(&hub, &org, "gabi@example.org").await;
    member(&hub, &org, "ann@example.org").await;
    let _ = hub.admin_client().add_user("zoe@gmail.com").await;
    for (name, scope) in [("#team", "group"), ("#board", "owner")] {
        let create: Command = serde_json::from_value(json!({
            "command": "create_group", "name": name, "owner": OWNER, "org": org.id, "scope": scope,
        }))
        .unwrap();
        org.max.org(&create).await.unwrap();
    }
    let add = |user: &str, group: &str| Command::AddGroupMember {
        group: group.into(),
        user: user.into(),
    };
    let name_for =
        |user: &str, unit: Option<UnitId>, group: Option<&str>| Command::NameGroupAdmin {
            org: org.id,
            user: user.into(),
            unit,
            group: group.map(str::to_string),
        };
    // A member cannot name group admins, nor name herself.
    refused(gabi.org(&name_for("gabi@example.org", None, Some("#team"))).await, 403, "admins name");
    org.max.org(&name_for("gabi@example.org", None, Some("#team"))).await.unwrap();
    org.max.org(&name_for("gabi@example.org", Some(org.sales), None)).await.unwrap();
    // A guest or an outsider cannot be made one.
    refused(
        org.max.org(&name_for("zoe@gmail.com", None, Some("#team"))).await,
        400,
        "not an active member",
    );

    gabi.org(&add("ann@example.org", "#team")).await.unwrap();
    refused(gabi.org(&add("zoe@gmail.com", "#team")).await, 403, "only active members");
    refused(gabi.org(&add("gabi@example.org", "#board")).await, 403, "managers and group admins");
    let assign = Command::Assign { org: org.id, user: "ann@example.org".into(), unit: org.sales };
    gabi.org(&assign).await.unwrap();
    // Still no onboarding.
    refused(gabi.invite(org.id, "new@example.org", false).await, 403, "admins invite");
    refused(gabi.add_user("new@example.org").await, 403, "onboarding admins");

    org.max
        .org(&Command::RemoveGroupAdmin {
            org: org.id,
            user: "gabi@example.org".into(),
            unit: None,
            group: Some("#team".into()),
        })
        .await
        .unwrap();
    refused(gabi.org(&add("owen@example.org", "#team")).await, 403, "managers and group admins");
    let roster = roster(&org.max, &org).await;
    assert_eq!(
        roster_entry(&roster, "gabi@example.org")["group_admin_of"],
        json!(["sales@example.org"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reaches_only_members_of_the_organisation_it_was_issued_to() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let pat_phone = hub.enrol("pat@partner.example", "phone").await;
    let oscar_phone = hub.enrol("oscar@outside.example", "phone").await;
    let org = create_org(&hub, 10).await;
    sales_member(&hub, &org, "ann@example.org").await;
    let (partner, pia, _pat) = partner_with_member(&hub).await;
    for user in ["pat@partner.example", "oscar@outside.example"] {
        let add = Command::AddGroupMember { group: "#partners".into(), user: user.into() };
        pia.org(&add).await.unwrap();
    }
    // No expiry given: five years.
    let issue =
        Command::IssueKey { org: org.id, unit: org.sales, to_org: partner.id, expires_ms: None };
    let Change::KeyIssued(key) = org.max.org(&issue).await.unwrap().change else { panic!() };
    let five_years = switchboard_hub::org::DEFAULT_KEY_VALIDITY_MS;
    let now = switchboard_hub::store::system_clock_ms();
    assert!(key.expires_ms > now + five_years - 60_000 && key.expires_ms <= now + five_years);
    pia.org(&Command::HandKey { key: key.id, group: "#partners".into() }).await.unwrap();
    // The receiving organisation's managers list the keys issued to them.
    let keys = pia.request("GET", "/v1/org/keys", None).await.unwrap();
    assert_eq!(keys[0]["id"], key.id);

    let sales = "sales@example.org";
    let mut ann = connect(&ann_phone).await;
    let mut pat = connect(&pat_phone).await;
    send(&mut pat, sales, "from a partner member").await.unwrap();
    assert_eq!(receive(&mut ann, 1).await, vec!["from a partner member".to_string()]);
    let mut oscar = connect(&oscar_phone).await;
    let refusal = send(&mut oscar, sales, "from an outsider in the group").await;
    assert_eq!(refusal, Err(RejectReason::NOT_ALLOWED));
    // The outsider's message never reached the line: the next one ann gets is pat's.
    send(&mut pat, sales, "second").await.unwrap();
    assert_eq!(receive(&mut ann, 1).await, vec!["second".to_string()]);
    for client in [ann, pat, oscar] {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_life_cycle_moves_changes_type_and_reactivates_each_with_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let max_phone = hub.enrol(OWNER, "desk").await;
    let org = create_org(&hub, 10).await;
    sales_member(&hub, &org, "ann@example.org").await;
    let bob = member(&hub, &org, "bob@example.org").await;
    let support = org
        .max
        .org(&Command::CreateUnit {
            org: org.id,
            parent: org.root,
            name: "Support".into(),
            line: "support@example.org".into(),
        })
        .await
        .unwrap();
    let Change::UnitCreated(support) = support.change else { panic!() };

    // Moved from Sales to Support, ann reads Support's line and no longer Sales'.
    let mv = Command::MoveMember { org: org.id, user: "ann@example.org".into(), unit: support.id };
    org.max.org(&mv).await.unwrap();
    let mut ann = connect(&ann_phone).await;
    let mut max = connect(&max_phone).await;
    send(&mut max, "sales@example.org", "to sales").await.unwrap();
    send(&mut max, "support@example.org", "to support").await.unwrap();
    assert_eq!(receive(&mut ann, 1).await, vec!["to support".to_string()]);
    // And back to the main line.
    let back = Command::MoveMember { org: org.id, user: "ann@example.org".into(), unit: org.root };
    org.max.org(&back).await.unwrap();
    send(&mut max, "main@example.org", "to main").await.unwrap();
    assert_eq!(receive(&mut ann, 1).await, vec!["to main".to_string()]);

    // bob becomes a guest (answering max) and a member again; never the owner or an admin.
    let to_guest =
        Command::ChangeMemberType { org: org.id, user: "bob@example.org".into(), guest: true };
    org.max.org(&to_guest).await.unwrap();
    assert_eq!(roster_entry(&roster(&org.max, &org).await, "bob@example.org")["role"], "guest");
    let directory = bob.directory().await.unwrap();
    assert_eq!(directory[0]["members"], json!([{ "user": OWNER, "unit": "main@example.org" }]));
    let to_member =
        Command::ChangeMemberType { org: org.id, user: "bob@example.org".into(), guest: false };
    org.max.org(&to_member).await.unwrap();
    let owner_to_guest = Command::ChangeMemberType { org: org.id, user: OWNER.into(), guest: true };
    refused(org.max.org(&owner_to_guest).await, 403, "always members");

    // Deactivated, then reactivated, ann connects again.
    ann.close().await;
    org.max
        .org(&Command::Deactivate { org: org.id, user: "ann@example.org".into() })
        .await
        .unwrap();
    let endpoint = switchboard_hub::client::client_endpoint().unwrap();
    assert!(Client::connect(&endpoint, &ann_phone, None).await.is_err());
    org.max
        .org(&Command::Reactivate { org: org.id, user: "ann@example.org".into() })
        .await
        .unwrap();
    let ann = connect(&ann_phone).await;
    ann.close().await;
    max.close().await;

    let kinds = event_kinds(&org.max).await;
    assert!(kinds.iter().any(|k| k == "member_deactivated"), "{kinds:?}");
    let commands: Vec<String> = events(&org.max)
        .await
        .iter()
        .filter_map(|e| e["change"]["data"]["command"].as_str().map(str::to_string))
        .collect();
    for command in ["move_member", "change_member_type", "reactivate"] {
        assert!(commands.iter().any(|c| c == command), "{commands:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_member_closes_the_account_even_when_an_heir_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let max_phone = hub.enrol(OWNER, "desk").await;
    let org = create_org(&hub, 10).await;
    let ann = sales_member(&hub, &org, "ann@example.org").await;
    member(&hub, &org, "bob@example.org").await;
    let create: Command = serde_json::from_value(json!({
        "command": "create_group", "name": "#anns", "owner": "ann@example.org", "org": org.id,
    }))
    .unwrap();
    org.max.org(&create).await.unwrap();
    org.max
        .org(&Command::Deactivate { org: org.id, user: "ann@example.org".into() })
        .await
        .unwrap();
    let delete = Command::DeleteMember {
        org: org.id,
        user: "ann@example.org".into(),
        reassign_to: Some("bob@example.org".into()),
    };
    let event = org.max.org(&delete).await.unwrap();
    let Change::MemberDeleted { moved, .. } = event.change else { panic!("{event:?}") };
    assert!(moved.contains(&"owner of #anns".to_string()), "{moved:?}");
    assert!(moved.contains(&"unit sales@example.org".to_string()), "{moved:?}");

    // The account is closed: no login, no token, no messages to the address.
    let endpoint = switchboard_hub::client::client_endpoint().unwrap();
    assert!(Client::connect(&endpoint, &ann_phone, None).await.is_err());
    refused(ann.directory().await, 401, "deactivated or deleted");
    let devices = hub.admin_client().devices(Some("ann@example.org")).await.unwrap();
    assert!(devices.iter().all(|d| d.revoked), "{devices:?}");
    let mut max = connect(&max_phone).await;
    assert!(send(&mut max, "ann@example.org", "still there?").await.is_err());
    // The heir reads the department's line now.
    let mut bob = connect(&bob_phone).await;
    send(&mut max, "sales@example.org", "to sales").await.unwrap();
    assert_eq!(receive(&mut bob, 1).await, vec!["to sales".to_string()]);
    max.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_registrations_and_open_invitations_take_seats() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 3).await;
    // The owner, a registration awaiting approval, an invitation not yet accepted.
    hub.as_user("bob@example.org").await.org(&Command::Register { org: org.id }).await.unwrap();
    org.max.invite(org.id, "carl@example.org", false).await.unwrap();
    let roster = roster(&org.max, &org).await;
    assert_eq!(roster["seats_taken"], 3);
    assert_eq!(roster_entry(&roster, "bob@example.org")["status"], "pending");
    assert_eq!(roster["invitations"][0]["user"], "carl@example.org");
    refused(org.max.invite(org.id, "dave@example.org", false).await, 403, "all 3 seats taken");
    let eve = hub.as_user("eve@example.org").await;
    refused(eve.org(&Command::Register { org: org.id }).await, 403, "all 3 seats taken");
    // Inviting carl again sends a new code and takes no second seat; a guest takes none.
    org.max.invite(org.id, "carl@example.org", false).await.unwrap();
    org.max.invite(org.id, "gus@outside.example", true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_admins_onboard_their_members_without_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    let ann = member(&hub, &org, "ann@example.org").await;
    // The owner adds a member's account in the organisation's domain, with a code.
    let nina = org.max.add_user("nina@example.org").await.unwrap();
    assert_eq!(roster_entry(&roster(&org.max, &org).await, "nina@example.org")["status"], "active");
    refused(org.max.add_user("nina@other.example").await, 403, "onboarding admins");
    refused(ann.add_user("otto@example.org").await, 403, "onboarding admins");
    // A new code retires the first; the device enrols with the new one only.
    let second = org.max.new_code("nina@example.org").await.unwrap();
    let address = Address::parse("nina@example.org/phone").unwrap();
    let identity =
        switchboard_hub::client::DeviceIdentity::generate(address, hub.quic, hub.cert.clone())
            .unwrap();
    let endpoint = switchboard_hub::client::client_endpoint().unwrap();
    assert!(Client::connect(&endpoint, &identity, Some(&nina.code)).await.is_err());
    let client = Client::connect(&endpoint, &identity, Some(&second.code)).await.unwrap();
    client.close().await;
    // Tokens for the members: by the owner; not by a plain member for a colleague.
    let token = org.max.new_token("nina@example.org").await.unwrap();
    let nina_client = AdminClient::new(hub.admin, token);
    assert!(!nina_client.directory().await.unwrap().is_empty());
    refused(ann.new_token("nina@example.org").await, 403, "look after");
    refused(ann.new_code("nina@example.org").await, 403, "look after");
    // And invite.
    org.max.invite(org.id, "olga@example.org", false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_made_for_active_users_only_listed_given_an_expiry_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let operator = hub.admin_client();
    // No token for a user the hub does not know.
    refused(operator.new_token("ghost@example.org").await, 404, "unknown user");
    let org = create_org(&hub, 10).await;
    let ann = member(&hub, &org, "ann@example.org").await;
    let bob = member(&hub, &org, "bob@example.org").await;
    // A token with an expiry, and a list that shows ids, never tokens.
    let soon = switchboard_hub::store::system_clock_ms() + 1_500;
    let body = json!({ "user": "ann@example.org", "expires_ms": soon, "label": "laptop" });
    let short = ann.request("POST", "/v1/tokens", Some(body)).await.unwrap();
    let listed = ann.request("GET", "/v1/tokens", None).await.unwrap();
    let listed = listed.as_array().unwrap();
    assert!(listed.iter().all(|t| t["user"] == "ann@example.org" && t.get("token").is_none()));
    assert!(listed.iter().any(|t| t["id"] == short["id"] && t["label"] == "laptop"));
    // bob sees none of ann's; the owner (her org's admin) sees them.
    let bobs_view = bob.request("GET", "/v1/tokens?user=ann@example.org", None).await.unwrap();
    assert_eq!(bobs_view, json!([]));
    let owners_view =
        org.max.request("GET", "/v1/tokens?user=ann@example.org", None).await.unwrap();
    assert!(!owners_view.as_array().unwrap().is_empty());
    let expiring = AdminClient::new(hub.admin, short["token"].as_str().unwrap().to_string());
    expiring.directory().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    refused(expiring.directory().await, 401, "expired");
    // Revoked by its user; bob cannot revoke it (he is told it does not exist).
    let second = ann
        .request("POST", "/v1/tokens", Some(json!({ "user": "ann@example.org" })))
        .await
        .unwrap();
    let revoke = json!({ "id": second["id"] });
    refused(bob.request("POST", "/v1/tokens/revoke", Some(revoke.clone())).await, 404, "no token");
    ann.request("POST", "/v1/tokens/revoke", Some(revoke)).await.unwrap();
    let revoked = AdminClient::new(hub.admin, second["token"].as_str().unwrap().to_string());
    refused(revoked.directory().await, 401, "unknown token");
    // A guest from elsewhere is no account of the organisation's: its admins make no token or
    // code for them.
    let invited = org.max.invite(org.id, "gus@outside.example", true).await.unwrap();
    hub.as_user("gus@outside.example").await.accept(org.id, &invited).await.unwrap();
    refused(org.max.new_token("gus@outside.example").await, 403, "look after");
    refused(org.max.new_code("gus@outside.example").await, 403, "look after");
    // Deactivated, ann's remaining token stops at once; deactivated users get no new ones.
    org.max
        .org(&Command::Deactivate { org: org.id, user: "ann@example.org".into() })
        .await
        .unwrap();
    refused(ann.directory().await, 401, "deactivated or deleted");
    refused(operator.new_token("ann@example.org").await, 409, "deactivated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_is_an_organisations_only_once_proven_by_dns_or_by_the_operator() {
    use switchboard_hub::org::OrgState;
    let dir = tempfile::tempdir().unwrap();
    let config = "[org]\ndns_servers = [\"127.0.0.32:53\"]\n";
    let hub = HubProcess::start_configured(dir.path(), config);
    let org = create_org(&hub, 10).await;
    let claim = |org: OrgId, domain: &str| Command::AddDomain { org, domain: domain.into() };

    // Public mail domains are refused outright, to the operator too.
    refused(org.max.org(&claim(org.id, "gmail.com")).await, 400, "public mail domain");
    refused(hub.admin_client().org(&claim(org.id, "mail.yahoo.com")).await, 400, "public mail");

    // An admin's claim admits nobody and blocks nobody.
    org.max.org(&claim(org.id, "bigbank.example")).await.unwrap();
    let intruder = hub.as_user("ceo@bigbank.example").await;
    refused(intruder.org(&Command::Register { org: org.id }).await, 400, "not in an agreed domain");
    let _ = hub.admin_client().add_user("ceo@bigbank.example").await;
    let bigbank = hub
        .admin_client()
        .org(&Command::CreateOrg {
            name: "BigBank".into(),
            owner: "ceo@bigbank.example".into(),
            domain: "bigbank.example".into(),
            line: "main@bigbank.example".into(),
            seat_limit: None,
        })
        .await
        .unwrap();
    let Change::OrgCreated { org: bigbank, .. } = bigbank.change else { panic!() };
    // No seat number given: the hub's default.
    assert_eq!(bigbank.seat_limit, 10);
    let domains = |client: &AdminClient, org: OrgId| {
        let client = client.clone();
        async move {
            client.request("GET", &format!("/v1/org/domains?org={}", org.0), None).await.unwrap()
        }
    };
    assert_eq!(domains(&org.max, org.id).await["claims"], json!([]), "the unproven claim went");

    // A claim proven by its DNS record.
    let other = other_org(&hub, "Other", "olaf@other.example", "other.example", 5).await;
    // The DNS server holds Other's text for newco.example, not example.org's.
    let newco_for_other = OrgState::domain_token(other.id, "newco.example");
    let newco_for_example = OrgState::domain_token(org.id, "newco.example");
    let dns = Dns::start([127, 0, 0, 32], &[("_switchboard.newco.example", &newco_for_other)]);
    let olaf = hub.as_user("olaf@other.example").await;
    org.max.org(&claim(org.id, "newco.example")).await.unwrap();
    olaf.org(&claim(other.id, "newco.example")).await.unwrap();
    let listed = domains(&org.max, org.id).await;
    assert_eq!(listed["claims"][0]["txt"], newco_for_example.as_str());
    assert_eq!(listed["claims"][0]["record"], "_switchboard.newco.example");
    let verify = |org: OrgId| json!({ "org": org, "domain": "newco.example" });
    refused(
        org.max.request("POST", "/v1/org/domains/verify", Some(verify(org.id))).await,
        409,
        "does not hold",
    );
    // Nobody proves a domain by a command of their own.
    let confirm = Command::ConfirmDomain { org: org.id, domain: "newco.example".into() };
    refused(org.max.org(&confirm).await, 403, "proven by its DNS record");
    olaf.request("POST", "/v1/org/domains/verify", Some(verify(other.id))).await.unwrap();
    assert_eq!(
        domains(&olaf, other.id).await["domains"],
        json!(["newco.example", "other.example"])
    );
    assert_eq!(domains(&org.max, org.id).await["claims"], json!([]), "the loser's claim went");
    refused(org.max.org(&claim(org.id, "newco.example")).await, 409, "already in use");

    // The operator's word proves a claim; a merged-away domain stays with its organisation.
    org.max.org(&claim(org.id, "example.net")).await.unwrap();
    let confirm = Command::ConfirmDomain { org: org.id, domain: "example.net".into() };
    hub.admin_client().org(&confirm).await.unwrap();
    let merge = Command::MergeDomains {
        org: org.id,
        from: "example.net".into(),
        into: "example.org".into(),
    };
    org.max.org(&merge).await.unwrap();
    refused(olaf.org(&claim(other.id, "example.net")).await, 409, "already in use");
    drop(dns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_units_line_must_be_in_an_agreed_domain() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    let unit = |line: &str| Command::CreateUnit {
        org: org.id,
        parent: org.root,
        name: "Helpdesk".into(),
        line: line.into(),
    };
    refused(org.max.org(&unit("helpdesk@gmail.com")).await, 400, "not in an agreed domain");
    // The main line too, from the start.
    let _ = hub.admin_client().add_user("olaf@other.example").await;
    let create = Command::CreateOrg {
        name: "Other".into(),
        owner: "olaf@other.example".into(),
        domain: "other.example".into(),
        line: "main@elsewhere.example".into(),
        seat_limit: None,
    };
    refused(hub.admin_client().org(&create).await, 400, "not in an agreed domain");
    // A claimed, unproven domain is no agreed domain either.
    org.max.org(&Command::AddDomain { org: org.id, domain: "example.com".into() }).await.unwrap();
    refused(org.max.org(&unit("helpdesk@example.com")).await, 400, "not in an agreed domain");
    org.max.org(&unit("helpdesk@example.org")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_shows_each_organisation_every_change_that_concerns_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let pat_phone = hub.enrol("pat@partner.example", "phone").await;
    let org = create_org(&hub, 10).await;
    let (partner, pia, pat) = partner_with_member(&hub).await;
    pia.org(&Command::AddGroupMember {
        group: "#partners".into(),
        user: "pat@partner.example".into(),
    })
    .await
    .unwrap();
    let issue =
        Command::IssueKey { org: org.id, unit: org.sales, to_org: partner.id, expires_ms: None };
    let Change::KeyIssued(key) = org.max.org(&issue).await.unwrap().change else { panic!() };
    pia.org(&Command::HandKey { key: key.id, group: "#partners".into() }).await.unwrap();
    let mut pat_client = connect(&pat_phone).await;
    send(&mut pat_client, "sales@example.org", "through the key").await.unwrap();
    org.max.org(&Command::RevokeKey { key: key.id }).await.unwrap();
    assert_eq!(
        send(&mut pat_client, "sales@example.org", "after the revocation").await,
        Err(RejectReason::NOT_ALLOWED)
    );
    pat_client.close().await;
    // Logged off the send path: wait for the refusal to reach the log.
    let mut issuer = Vec::new();
    for _ in 0..50 {
        issuer = events(&org.max).await;
        if issuer.iter().any(|e| e["change"]["kind"] == "key_use_refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receiver = events(&pia).await;
    let seen = |log: &[Value], kind: &str, command: Option<&str>| {
        log.iter().any(|e| {
            e["change"]["kind"] == kind
                && command.is_none_or(|c| e["change"]["data"]["command"] == c)
        })
    };
    for log in [&issuer, &receiver] {
        assert!(seen(log, "key_issued", None));
        assert!(seen(log, "applied", Some("hand_key")));
        assert!(seen(log, "key_used", None));
        assert!(seen(log, "applied", Some("revoke_key")));
        assert!(seen(log, "key_use_refused", None));
    }
    // Group commands are the group's organisation's to read, and no one else's.
    assert!(seen(&receiver, "applied", Some("add_group_member")));
    assert!(!seen(&issuer, "applied", Some("add_group_member")));
    // A member without the right reads nothing.
    let pat_log = events(&pat).await;
    assert!(pat_log.is_empty(), "{pat_log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sees_only_whoever_invited_them_not_the_employee_directory() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    let ann = sales_member(&hub, &org, "ann@example.org").await;
    member(&hub, &org, "bob@example.org").await;
    let body =
        json!({ "org": org.id, "user": "gus@outside.example", "guest": true, "unit": org.sales });
    let invited = org.max.request("POST", "/v1/org/invite", Some(body)).await.unwrap();
    let gus = hub.as_user("gus@outside.example").await;
    gus.accept(org.id, invited["code"].as_str().unwrap()).await.unwrap();
    let seen = gus.directory().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["lines"], json!([{ "name": "Sales", "line": "sales@example.org" }]));
    assert_eq!(seen[0]["members"], json!([]));
    // A guest invited by a member sees that member alone.
    let vera = ann
        .request(
            "POST",
            "/v1/org/invite",
            Some(json!({ "org": org.id, "user": "vera@outside.example", "guest": true })),
        )
        .await;
    refused(vera.map(|_| ()), 403, "admins invite");
    let invited = org.max.invite(org.id, "vera@outside.example", true).await.unwrap();
    let vera = hub.as_user("vera@outside.example").await;
    vera.accept(org.id, &invited).await.unwrap();
    let seen = vera.directory().await.unwrap();
    assert_eq!(seen[0]["members"], json!([{ "user": OWNER, "unit": "main@example.org" }]));
    assert_eq!(seen[0]["lines"], json!([]));
    // A member sees everyone.
    let seen = ann.directory().await.unwrap();
    assert_eq!(seen[0]["members"].as_array().unwrap().len(), 2, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_keeps_contacts_of_their_own_and_sees_colleagues_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    let ann = sales_member(&hub, &org, "ann@example.org").await;
    let bob = member(&hub, &org, "bob@example.org").await;
    let contact =
        json!({ "address": "lena@elsewhere.example", "categories": ["friends", "tennis"] });
    ann.request("POST", "/v1/contacts", Some(contact)).await.unwrap();
    let book = ann.request("GET", "/v1/contacts", None).await.unwrap();
    assert_eq!(
        book["contacts"],
        json!([{ "address": "lena@elsewhere.example", "categories": ["friends", "tennis"] }])
    );
    let colleagues: Vec<&str> = book["colleagues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(colleagues, vec![OWNER]);
    assert!(
        book["colleagues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["categories"] == json!(["colleagues"]))
    );
    // bob's book is his own.
    assert_eq!(bob.request("GET", "/v1/contacts", None).await.unwrap()["contacts"], json!([]));
    // Bad entries are refused with the field named.
    let bad = json!({ "address": "not an address", "categories": [] });
    refused(ann.request("POST", "/v1/contacts", Some(bad)).await, 400, "address");
    let bad = json!({ "address": "lena@elsewhere.example", "categories": ["x".repeat(65)] });
    refused(ann.request("POST", "/v1/contacts", Some(bad)).await, 400, "categories");
    let remove = json!({ "address": "lena@elsewhere.example" });
    ann.request("POST", "/v1/contacts/remove", Some(remove.clone())).await.unwrap();
    refused(ann.request("POST", "/v1/contacts/remove", Some(remove)).await, 404, "not a contact");
    refused(hub.admin_client().request("GET", "/v1/contacts", None).await, 400, "user token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_scope_defaults_to_its_owner_and_its_owner_must_be_an_active_user() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    let ann = member(&hub, &org, "ann@example.org").await;
    let create = |name: &str, owner: &str| -> Command {
        serde_json::from_value(json!({ "command": "create_group", "name": name, "owner": owner }))
            .unwrap()
    };
    let event = ann.org(&create("#anns", "ann@example.org")).await.unwrap();
    let Change::Applied(Command::CreateGroup { scope, anonymous, .. }) = event.change else {
        panic!()
    };
    assert_eq!(scope, switchboard_hub::org::Scope::Owner);
    assert!(!anonymous);
    let operator = hub.admin_client();
    refused(
        operator.org(&create("#ghosts", "nobody@example.org")).await,
        400,
        "not an active user",
    );
    refused(operator.org(&create("#bad", "nobody")).await, 400, "owner");
    org.max
        .org(&Command::Deactivate { org: org.id, user: "ann@example.org".into() })
        .await
        .unwrap();
    refused(operator.org(&create("#former", "ann@example.org")).await, 400, "not an active user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subgroup_must_be_one_the_actor_manages_of_the_same_organisation() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let pat_phone = hub.enrol("pat@partner.example", "phone").await;
    let cem_phone = hub.enrol("cem@example.org", "phone").await;
    let org = create_org(&hub, 10).await;
    let ann = member(&hub, &org, "ann@example.org").await;
    member(&hub, &org, "cem@example.org").await;
    let partner = other_org(&hub, "Partner", "pia@partner.example", "partner.example", 5).await;
    let pia = hub.as_user("pia@partner.example").await;
    let group = |name: &str, owner: &str, org: Option<OrgId>, anonymous: bool| -> Command {
        serde_json::from_value(json!({
            "command": "create_group", "name": name, "owner": owner, "org": org,
            "anonymous": anonymous, "scope": "group",
        }))
        .unwrap()
    };
    pia.org(&group("#bsecret", "pia@partner.example", Some(partner.id), true)).await.unwrap();
    pia.org(&Command::AddGroupMember {
        group: "#bsecret".into(),
        user: "pat@partner.example".into(),
    })
    .await
    .unwrap();
    ann.org(&group("#annsgroup", "ann@example.org", None, false)).await.unwrap();
    ann.org(&group("#annsfriends", "ann@example.org", None, false)).await.unwrap();
    ann.org(&Command::AddGroupMember {
        group: "#annsfriends".into(),
        user: "cem@example.org".into(),
    })
    .await
    .unwrap();
    let sub = |sub: &str| Command::AddSubgroup { group: "#annsgroup".into(), sub: sub.into() };
    refused(ann.org(&sub("#bsecret")).await, 403, "a subgroup must be one the actor manages");
    // Even one who manages both (the operator) needs the same organisation, or a key of it
    // held by the subgroup.
    let linked: Command = serde_json::from_value(json!({
        "command": "create_group", "name": "#staff", "owner": OWNER, "org": org.id,
    }))
    .unwrap();
    org.max.org(&linked).await.unwrap();
    let operator = hub.admin_client();
    let staff_sub = Command::AddSubgroup { group: "#staff".into(), sub: "#bsecret".into() };
    refused(operator.org(&staff_sub).await, 403, "or hold a key of it");
    let issue =
        Command::IssueKey { org: org.id, unit: org.sales, to_org: partner.id, expires_ms: None };
    let Change::KeyIssued(key) = org.max.org(&issue).await.unwrap().change else { panic!() };
    pia.org(&Command::HandKey { key: key.id, group: "#bsecret".into() }).await.unwrap();
    operator.org(&staff_sub).await.unwrap();
    // Her own group is fine.
    ann.org(&sub("#annsfriends")).await.unwrap();
    // Over QUIC: a message to ann's group reaches cem (through her subgroup), never pat.
    let mut ann_client = connect(&ann_phone).await;
    let mut cem = connect(&cem_phone).await;
    let mut pat = connect(&pat_phone).await;
    send(&mut ann_client, "#annsgroup", "for my group").await.unwrap();
    // Each was told of the group they were added to first.
    let got = receive(&mut cem, 2).await;
    assert!(got[0].contains("\"group\":\"#annsfriends\""), "{got:?}");
    assert_eq!(got[1], "for my group");
    // pat reads only what is sent to #bsecret: after the invitation, the next thing is that.
    let mut pia_phone = connect(&hub.enrol("pia@partner.example", "desk").await).await;
    send(&mut pia_phone, "#bsecret", "for the partners").await.unwrap();
    let got = receive(&mut pat, 2).await;
    assert!(got[0].contains("\"group\":\"#bsecret\""), "{got:?}");
    assert_eq!(got[1], "for the partners");
    for client in [ann_client, cem, pat, pia_phone] {
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_cursor_walks_past_other_organisations_events_to_the_callers_own() {
    let dir = tempfile::tempdir().unwrap();
    // One user makes 1,100 changes as fast as the hub takes them: no request rates.
    let hub = HubProcess::start_configured(
        dir.path(),
        "[admin]\nrequests_per_second_per_token = 0\nrequests_per_second_per_address = 0\n",
    );
    let org = create_org(&hub, 10).await;
    let seen = org.max.org_events(0).await.unwrap();
    let last = seen.last().unwrap()["seq"].as_u64().unwrap();
    // 1,100 events of another organisation.
    let other = other_org(&hub, "Other", "olaf@other.example", "other.example", 5).await;
    let olaf = hub.as_user("olaf@other.example").await;
    let toggles = (0..1_100).map(|i| {
        let olaf = olaf.clone();
        let (id, root) = (other.id, other.root);
        async move {
            let set = Command::SetIncludeSubUnits { org: id, unit: root, include: i % 2 == 0 };
            olaf.org(&set).await.unwrap();
        }
    });
    // 32 at a time, as a well-behaved client does (the admin API answers 503 to connections
    // past its cap when every one is busy).
    use futures_util::StreamExt;
    futures_util::stream::iter(toggles).buffer_unordered(32).collect::<Vec<()>>().await;
    let support = Command::CreateUnit {
        org: org.id,
        parent: org.root,
        name: "Support".into(),
        line: "support@example.org".into(),
    };
    org.max.org(&support).await.unwrap();
    // One page may come back empty, but its cursor moves on; following it finds the event.
    let mut after = last;
    let mut found = Vec::new();
    for _ in 0..10 {
        let page = org.max.org_events_page(after, 100).await.unwrap();
        assert!(page.next_after >= after);
        found.extend(page.events);
        after = page.next_after;
        if !page.more {
            break;
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["event"]["change"]["kind"], "unit_created");
    refused(org.max.request("GET", "/v1/org/events?limit=0", None).await, 400, "limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_and_address_field_is_checked_with_a_400_that_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    let unit = |name: String, line: &str| Command::CreateUnit {
        org: org.id,
        parent: org.root,
        name,
        line: line.into(),
    };
    refused(
        org.max.org(&unit("x".repeat(1_900_000), "big@example.org")).await,
        400,
        "name: longer than 200",
    );
    refused(
        org.max.org(&unit(String::new(), "empty@example.org")).await,
        400,
        "name: must not be empty",
    );
    refused(
        org.max.org(&unit("Tab\tname".into(), "tab@example.org")).await,
        400,
        "name: contains control",
    );
    refused(
        org.max.org(&unit("Long line".into(), &format!("{}@example.org", "l".repeat(250)))).await,
        400,
        "line",
    );
    refused(org.max.org(&unit("Bad line".into(), "not a line")).await, 400, "line");
    let create: Command = serde_json::from_value(
        json!({ "command": "create_group", "name": "#team", "owner": OWNER, "org": org.id }),
    )
    .unwrap();
    org.max.org(&create).await.unwrap();
    for bad in ["", "not an address", "<script>"] {
        let add = Command::AddGroupMember { group: "#team".into(), user: bad.into() };
        refused(org.max.org(&add).await, 400, "user");
    }
    let bad_group: Command = serde_json::from_value(
        json!({ "command": "create_group", "name": "team", "owner": OWNER }),
    )
    .unwrap();
    refused(org.max.org(&bad_group).await, 400, "name");
    refused(hub.admin_client().add_user("no at sign").await, 400, "name");
    let bad_domain = Command::AddDomain { org: org.id, domain: "-".into() };
    refused(org.max.org(&bad_domain).await, 400, "domain");
}

/// A PNG header of `width` x `height` (enough for the hub's check).
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    bytes
}

/// A raw HTTP call (the logo routes carry bytes, not JSON).
async fn http(hub: &HubProcess, method: &str, path: &str, token: &str, body: Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(hub.admin).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: hub\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    std::str::from_utf8(&answer[9..12]).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_units_logo_is_seen_by_its_organisation_and_by_others_only_once_made_public() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = create_org(&hub, 10).await;
    member(&hub, &org, "ann@example.org").await;
    let max = hub.token(OWNER).await;
    let ann = hub.token("ann@example.org").await;
    let outsider = hub.token("oscar@outside.example").await;
    let put = format!("/v1/org/logo?org={}&unit={}", org.id.0, org.sales.0);
    assert_eq!(http(&hub, "PUT", &put, &max, png(512, 512)).await, 200);
    let get = format!("/v1/org/logo?unit={}", org.sales.0);
    assert_eq!(http(&hub, "GET", &get, &ann, Vec::new()).await, 200);
    assert_eq!(http(&hub, "GET", &get, &outsider, Vec::new()).await, 404);
    let public = Command::SetLogoPublic { org: org.id, unit: org.sales, public: true };
    org.max.org(&public).await.unwrap();
    assert_eq!(http(&hub, "GET", &get, &outsider, Vec::new()).await, 200);
}

#[test]
fn hub_org_works_with_a_user_token_alone_and_create_needs_no_seat_number() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let org = runtime.block_on(create_org(&hub, 10));
    let token = runtime.block_on(hub.token(OWNER));
    // A data directory with no operator token in it, and a configuration naming the API.
    let elsewhere = tempfile::tempdir().unwrap();
    let config = elsewhere.path().join("hub.toml");
    std::fs::write(&config, format!("[admin]\nlisten = \"{}\"\n", hub.admin)).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["--config", config.to_str().unwrap()])
        .args(["--data-dir", elsewhere.path().to_str().unwrap()])
        .args(["org", "--token", &token])
        .args(["members", "--org", &org.id.0.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let roster: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(roster["seat_limit"], 10);
    // `create` without --seats takes the hub's default.
    runtime.block_on(hub.admin_client().add_user("olaf@other.example")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["--config", config.to_str().unwrap()])
        .args(["--data-dir", hub.data_dir.to_str().unwrap()])
        .args(["org"])
        .args(["create", "Other", "--owner", "olaf@other.example", "--domain", "other.example"])
        .args(["--line", "main@other.example"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let event: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(event["change"]["data"]["org"]["seat_limit"], 10);
}

/// The shell block of "Run an organisation" in docs/operations.md.
fn walkthrough() -> String {
    let doc = include_str!("../../docs/operations.md");
    let section = doc.split("#### Run an organisation").nth(1).expect("the walkthrough section");
    let block = section.split("```sh\n").nth(1).expect("its shell block");
    block.split("\n```").next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_walkthrough_runs_as_written() {
    use switchboard_hub::org::OrgState;
    let dir = tempfile::tempdir().unwrap();
    // The walkthrough proves example.com for organisation 1 by its DNS record.
    let text = OrgState::domain_token(OrgId(1), "example.com");
    let _dns = Dns::start([127, 0, 0, 31], &[("_switchboard.example.com", &text)]);
    let hub =
        HubProcess::start_configured(dir.path(), "[org]\ndns_servers = [\"127.0.0.31:53\"]\n");
    let config = dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!("[admin]\nlisten = \"{}\"\n[quic]\nlisten = \"{}\"\n", hub.admin, hub.quic),
    )
    .unwrap();
    let script = format!(
        "set -euo pipefail\nhub() {{ \"$HUB_BIN\" --config \"$HUB_CONFIG\" --data-dir \"$HUB_DATA\" \"$@\"; }}\n{}",
        walkthrough()
    );
    // The hub is another process: blocking this test's thread harms nothing.
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("HUB_BIN", env!("CARGO_BIN_EXE_hub"))
        .env("HUB_CONFIG", &config)
        .env("HUB_DATA", dir.path())
        .env_remove("SWITCHBOARD_TOKEN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the walkthrough failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // What the walkthrough did is there.
    let max = hub.as_user(OWNER).await;
    let org = Org { id: OrgId(1), root: UnitId(2), sales: UnitId(3), max };
    let roster = roster(&org.max, &org).await;
    assert_eq!(roster_entry(&roster, "eva@example.org")["admin"], true);
    assert_eq!(
        roster_entry(&roster, "ann@example.org")["group_admin_of"],
        json!(["sales@example.org"])
    );
    assert_eq!(roster_entry(&roster, "cy@example.org")["role"], "member");
    assert!(roster["members"].as_array().unwrap().iter().all(|m| m["user"] != "bob@example.com"));
    assert_eq!(roster["invitations"][0]["user"], "gus@partner.example");
    let domains = org.max.request("GET", "/v1/org/domains?org=1", None).await.unwrap();
    assert_eq!(domains["domains"], json!(["example.com", "example.org"]));
    let keys = org.max.request("GET", "/v1/org/keys", None).await.unwrap();
    assert_eq!(keys[0]["id"], 7);
    assert_eq!(keys[0]["revoked"], true);
    let tokens = org.max.request("GET", "/v1/tokens", None).await.unwrap();
    assert!(tokens.as_array().unwrap().iter().all(|t| t["label"] != "temporary"), "{tokens}");
    let ann = hub.as_user("ann@example.org").await;
    let book = ann.request("GET", "/v1/contacts", None).await.unwrap();
    assert_eq!(book["contacts"][0]["address"], "lena@elsewhere.example");
    let _ = org.root;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_to_a_group_is_invited_in_the_owners_name() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let org = create_org(&hub, 10).await;
    let gabi = member(&hub, &org, "gabi@example.org").await;
    member(&hub, &org, "ann@example.org").await;
    let create: Command = serde_json::from_value(json!({
        "command": "create_group", "name": "#team", "owner": OWNER, "org": org.id,
    }))
    .unwrap();
    org.max.org(&create).await.unwrap();
    let name = Command::NameGroupAdmin {
        org: org.id,
        user: "gabi@example.org".into(),
        unit: None,
        group: Some("#team".into()),
    };
    org.max.org(&name).await.unwrap();
    // The group admin adds ann; the invitation comes from the group's owner.
    gabi.org(&Command::AddGroupMember { group: "#team".into(), user: "ann@example.org".into() })
        .await
        .unwrap();
    let mut ann = connect(&ann_phone).await;
    let Event::Deliver(deliver) = next(&mut ann, 20).await else { panic!("no delivery") };
    assert_eq!(deliver.envelope.from.as_str(), OWNER);
    assert!(deliver.envelope.flags.contains(switchboard_protocol::Flags::NOTICE));
    let body: Value = serde_json::from_slice(&deliver.envelope.body).unwrap();
    assert_eq!(
        body,
        json!({
            "notice": "group_invitation", "group": "#team", "owner": OWNER,
            "added_by": "gabi@example.org",
        })
    );
    ann.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
    // A device cannot write a notice of its own.
    let mut envelope = ann.envelope(
        &Address::parse(OWNER).unwrap(),
        bytes::Bytes::from_static(b"{}"),
        switchboard_protocol::Flags::NOTICE,
    );
    envelope.from = Address::parse("ann@example.org").unwrap();
    let id = envelope.id;
    ann.send(envelope).await.unwrap();
    loop {
        match next(&mut ann, 20).await {
            Event::Rejected(rejected) if rejected.id == id => {
                assert_eq!(rejected.reason, RejectReason::NOT_ALLOWED);
                break;
            }
            Event::Accepted(accepted) if accepted == id => panic!("a device wrote a notice"),
            _ => {}
        }
    }
    ann.close().await;
}
