//! Department lines over real QUIC: an organisation set up through the admin API, messages to a
//! line reaching every member's devices, sending as the line, and the rule for outsiders.

mod common;

use std::time::Duration;

use common::*;
use switchboard_hub::{
    client::Event,
    client::admin::AdminClient,
    org::{Change, Command, OrgId, UnitId},
};
use switchboard_protocol::{Address, Flags, RejectReason};

struct Org {
    id: OrgId,
    sales: UnitId,
}

/// example.org, owned by max, with a sales department whose members are ann and bob.
async fn set_up(hub: &HubProcess) -> Org {
    let operator = hub.admin_client();
    let event = operator
        .org(&Command::CreateOrg {
            name: "Example".into(),
            owner: "max@example.org".into(),
            domain: "example.org".into(),
            line: "main@example.org".into(),
            seat_limit: Some(10),
        })
        .await
        .unwrap();
    let Change::OrgCreated { org, .. } = event.change else { panic!("{event:?}") };
    let as_user = |user: &str| {
        let operator = hub.admin_client();
        let user = user.to_string();
        let admin = hub.admin;
        async move {
            let _ = operator.add_user(&user).await;
            AdminClient::new(admin, operator.new_token(&user).await.unwrap())
        }
    };
    let max = as_user("max@example.org").await;
    let root = org.root;
    let sales = max
        .org(&Command::CreateUnit {
            org: org.id,
            parent: root,
            name: "Sales".into(),
            line: "sales@example.org".into(),
        })
        .await
        .unwrap();
    let Change::UnitCreated(sales) = sales.change else { panic!() };
    for user in ["ann@example.org", "bob@example.org"] {
        as_user(user).await.org(&Command::Register { org: org.id }).await.unwrap();
        max.org(&Command::Approve { org: org.id, user: user.into() }).await.unwrap();
    }
    Org { id: org.id, sales: sales.id }
}

/// A second organisation, partner.example, owned by pia, with a group #partners holding
/// pat@partner.example; returns it and pia's admin client.
async fn partner_with_group(hub: &HubProcess) -> (switchboard_hub::org::Org, AdminClient) {
    let operator = hub.admin_client();
    let Change::OrgCreated { org: partner, .. } = operator
        .org(&Command::CreateOrg {
            name: "Partner".into(),
            owner: "pia@partner.example".into(),
            domain: "partner.example".into(),
            line: "main@partner.example".into(),
            seat_limit: Some(5),
        })
        .await
        .unwrap()
        .change
    else {
        panic!()
    };
    let pia = AdminClient::new(hub.admin, hub.token("pia@partner.example").await);
    // pat is a member of the partner organisation: a key reaches only its members.
    let pat = hub.as_user("pat@partner.example").await;
    pat.org(&Command::Register { org: partner.id }).await.unwrap();
    pia.org(&Command::Approve { org: partner.id, user: "pat@partner.example".into() })
        .await
        .unwrap();
    pia.org(&Command::CreateGroup {
        name: "#partners".into(),
        owner: "pia@partner.example".into(),
        org: Some(partner.id),
        scope: switchboard_hub::org::Scope::Owner,
        anonymous: false,
    })
    .await
    .unwrap();
    pia.org(&Command::AddGroupMember {
        group: "#partners".into(),
        user: "pat@partner.example".into(),
    })
    .await
    .unwrap();
    (*partner, pia)
}

async fn assign(hub: &HubProcess, org: &Org, user: &str) {
    let token = hub.token("max@example.org").await;
    let max = AdminClient::new(hub.admin, token);
    max.org(&Command::Assign { org: org.id, user: user.into(), unit: org.sales }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_department_line_reaches_every_members_devices() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let ann_laptop = hub.enrol("ann@example.org", "laptop").await;
    let max_phone = hub.enrol("max@example.org", "phone").await;
    let org = set_up(&hub).await;
    // Ann's phone is online when she joins the line; her laptop enrolled before and is offline.
    let mut ann_phone_client = connect(&ann_phone).await;
    assign(&hub, &org, "ann@example.org").await;
    assign(&hub, &org, "bob@example.org").await;
    // Bob enrols a device after joining: it reads the line from then on.
    let bob_phone = hub.enrol("bob@example.org", "phone").await;

    let mut max = connect(&max_phone).await;
    let sales = Address::parse("sales@example.org").unwrap();
    send_all(&mut max, &sales, &["to sales 1".into(), "to sales 2".into()]).await;

    assert_eq!(receive(&mut ann_phone_client, 2).await, ["to sales 1", "to sales 2"]);
    let mut ann_laptop_client = connect(&ann_laptop).await;
    assert_eq!(receive(&mut ann_laptop_client, 2).await, ["to sales 1", "to sales 2"]);
    let mut bob = connect(&bob_phone).await;
    assert_eq!(receive(&mut bob, 2).await, ["to sales 1", "to sales 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sends_as_the_line_and_colleagues_see_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let customer = hub.enrol("cy@customer.example", "phone").await;
    let org = set_up(&hub).await;
    assign(&hub, &org, "ann@example.org").await;
    assign(&hub, &org, "bob@example.org").await;

    let mut ann = connect(&ann_phone).await;
    let mut envelope = ann.envelope(
        &customer.account(),
        bytes::Bytes::from_static(b"offer attached"),
        Flags::AS_LINE,
    );
    envelope.from = Address::parse("sales@example.org").unwrap();
    let id = envelope.id;
    ann.send(envelope).await.unwrap();
    loop {
        match next(&mut ann, 10).await {
            Event::Accepted(done) if done == id => break,
            Event::Rejected(rejected) => panic!("{} {}", rejected.reason, rejected.detail),
            _ => {}
        }
    }
    // The customer sees only the line.
    let mut cy = connect(&customer).await;
    match next(&mut cy, 10).await {
        Event::Deliver(deliver) => {
            assert_eq!(deliver.envelope.from.as_str(), "sales@example.org");
            assert_eq!(&deliver.envelope.body[..], b"offer attached");
        }
        other => panic!("{other:?}"),
    }
    // Bob, a colleague on the line, sees the answer in the line's queue.
    let mut bob = connect(&bob_phone).await;
    assert_eq!(receive(&mut bob, 1).await, ["offer attached"]);

    // Someone outside the unit may not send as its line.
    let mut cy_envelope =
        cy.envelope(&customer.account(), bytes::Bytes::from_static(b"x"), Flags::AS_LINE);
    cy_envelope.from = Address::parse("sales@example.org").unwrap();
    cy.send(cy_envelope).await.unwrap();
    loop {
        match next(&mut cy, 10).await {
            Event::Rejected(rejected) => {
                assert_eq!(rejected.reason, RejectReason::NOT_ALLOWED);
                assert!(rejected.detail.contains("rule:"), "{}", rejected.detail);
                break;
            }
            Event::Accepted(_) => panic!("an outsider sent as the line"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_reach_the_main_line_but_not_a_department_line() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let max_phone = hub.enrol("max@example.org", "phone").await;
    let customer = hub.enrol("cy@customer.example", "phone").await;
    let _org = set_up(&hub).await;
    let mut cy = connect(&customer).await;
    let id =
        cy.send_text(&Address::parse("sales@example.org").unwrap(), "hello sales").await.unwrap();
    loop {
        match next(&mut cy, 10).await {
            Event::Rejected(rejected) if rejected.id == id => {
                assert_eq!(rejected.reason, RejectReason::NOT_ALLOWED);
                break;
            }
            Event::Accepted(_) => panic!("an outsider wrote to a department line"),
            _ => {}
        }
    }
    send_all(&mut cy, &Address::parse("main@example.org").unwrap(), &["hello company".into()])
        .await;
    // Max is in the root unit, whose line is the main line.
    let mut max = connect(&max_phone).await;
    assert_eq!(receive(&mut max, 1).await, ["hello company"]);
    let _ = tokio::time::timeout(Duration::from_millis(10), max.next_event()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_member_is_disconnected_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let org = set_up(&hub).await;
    let mut ann = connect(&ann_phone).await;
    let token = hub.token("max@example.org").await;
    let max = AdminClient::new(hub.admin, token);
    max.org(&Command::Deactivate { org: org.id, user: "ann@example.org".into() }).await.unwrap();
    match next(&mut ann, 10).await {
        Event::Closed { .. } => {}
        other => panic!("not closed: {other:?}"),
    }
    let endpoint = switchboard_hub::client::client_endpoint().unwrap();
    match switchboard_hub::client::Client::connect(&endpoint, &ann_phone, None).await {
        Err(switchboard_hub::client::ClientError::Refused { code, .. }) => {
            assert_eq!(code, switchboard_protocol::ErrorCode::USER_DEACTIVATED)
        }
        other => panic!("deactivated member admitted: {:?}", other.map(|_| ())),
    }
    // The owner's rule is enforced through the API, with the rule's name.
    match max.org(&Command::DeleteOrg { org: org.id }).await {
        Ok(_) => {}
        Err(error) => panic!("the owner may delete: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_with_the_rule_and_the_log_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProcess::start(dir.path());
    let org = set_up(&hub).await;
    let ann = AdminClient::new(hub.admin, hub.token("ann@example.org").await);
    match ann.org(&Command::NameAdmin { org: org.id, user: "ann@example.org".into() }).await {
        Err(switchboard_hub::client::admin::AdminError::Api { status, message }) => {
            assert_eq!(status, 403);
            assert!(message.contains("only the owner names admins"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A member without the right cannot read the log; the operator reads all of it.
    assert!(ann.org_events(0).await.unwrap().is_empty());
    let before = hub.admin_client().org_events(0).await.unwrap();
    assert!(before.len() >= 6, "{before:?}");
    hub.kill();
    hub.restart();
    let after = hub.admin_client().org_events(0).await.unwrap();
    assert_eq!(before, after);
    // The state came back too: the sales line still takes messages from members.
    let ann_dir = AdminClient::new(hub.admin, hub.token("ann@example.org").await);
    let directory = ann_dir.directory().await.unwrap();
    assert!(directory[0]["lines"].to_string().contains("sales@example.org"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_set_to_reach_its_sub_units_reaches_their_members_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let max_phone = hub.enrol("max@example.org", "phone").await;
    let org = set_up(&hub).await;
    let max_admin = AdminClient::new(hub.admin, hub.token("max@example.org").await);
    let north = max_admin
        .org(&Command::CreateUnit {
            org: org.id,
            parent: org.sales,
            name: "North".into(),
            line: "north@example.org".into(),
        })
        .await
        .unwrap();
    let Change::UnitCreated(north) = north.change else { panic!() };
    max_admin
        .org(&Command::Assign { org: org.id, user: "bob@example.org".into(), unit: north.id })
        .await
        .unwrap();
    let mut bob = connect(&bob_phone).await;
    let mut max = connect(&max_phone).await;
    let sales = Address::parse("sales@example.org").unwrap();
    send_all(&mut max, &sales, &["before".into()]).await;
    max_admin
        .org(&Command::SetIncludeSubUnits { org: org.id, unit: org.sales, include: true })
        .await
        .unwrap();
    send_all(&mut max, &sales, &["after".into()]).await;
    // Bob, in North below Sales, gets the message sent once Sales reached its sub-units.
    assert_eq!(receive(&mut bob, 1).await, ["after"]);
    let extra = tokio::time::timeout(Duration::from_millis(300), bob.next_event()).await;
    assert!(
        !matches!(extra, Ok(Some(Event::Deliver(_)))),
        "bob got more than the line's new message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_answers_whoever_invited_them_but_cannot_write_to_a_stranger() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let max_phone = hub.enrol("max@example.org", "phone").await;
    let gus_phone = hub.enrol("gus@outside.example", "phone").await;
    let stranger = hub.enrol("stranger@elsewhere.example", "phone").await;
    let org = set_up(&hub).await;
    let max = AdminClient::new(hub.admin, hub.token("max@example.org").await);
    let code = max.invite(org.id, "gus@outside.example", true).await.unwrap();
    let gus_admin = AdminClient::new(hub.admin, hub.token("gus@outside.example").await);
    gus_admin.accept(org.id, &code).await.unwrap();
    // The code is spent.
    assert!(gus_admin.accept(org.id, &code).await.is_err());

    let mut gus = connect(&gus_phone).await;
    let id = gus.send_text(&stranger.account(), "hello stranger").await.unwrap();
    loop {
        match next(&mut gus, 10).await {
            Event::Rejected(rejected) if rejected.id == id => {
                assert_eq!(rejected.reason, RejectReason::NOT_ALLOWED);
                assert!(rejected.detail.contains("guest"), "{}", rejected.detail);
                break;
            }
            Event::Accepted(done) if done == id => panic!("a guest wrote to a stranger"),
            _ => {}
        }
    }
    send_all(&mut gus, &max_phone.account(), &["thanks for the invitation".into()]).await;
    let mut max_client = connect(&max_phone).await;
    assert_eq!(receive(&mut max_client, 1).await, ["thanks for the invitation"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_group_delivers_to_members_and_refuses_their_sends() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let token = |user: &'static str| {
        let operator = hub.admin_client();
        let admin = hub.admin;
        async move {
            let _ = operator.add_user(user).await;
            AdminClient::new(admin, operator.new_token(user).await.unwrap())
        }
    };
    let ann_admin = token("ann@example.org").await;
    ann_admin
        .org(&Command::CreateGroup {
            name: "#news".into(),
            owner: "ann@example.org".into(),
            org: None,
            scope: switchboard_hub::org::Scope::Server,
            anonymous: true,
        })
        .await
        .unwrap();
    ann_admin
        .org(&Command::AddGroupMember { group: "#news".into(), user: "bob@example.org".into() })
        .await
        .unwrap();
    let news = Address::parse("#news").unwrap();
    let mut ann = connect(&ann_phone).await;
    send_all(&mut ann, &news, &["issue 1".into()]).await;
    let mut bob = connect(&bob_phone).await;
    // The group's message, and the invitation in his own queue: two queues, in either order.
    let mut got = receive(&mut bob, 2).await;
    got.sort();
    assert_eq!(got[0], "issue 1");
    assert!(got[1].contains("\"notice\":\"group_invitation\""), "{got:?}");
    let id = bob.send_text(&news, "reply to all?").await.unwrap();
    loop {
        match next(&mut bob, 10).await {
            Event::Rejected(rejected) if rejected.id == id => {
                assert_eq!(rejected.reason, RejectReason::NOT_ALLOWED);
                assert!(rejected.detail.contains("read-only"), "{}", rejected.detail);
                break;
            }
            Event::Accepted(done) if done == id => panic!("a member wrote to an anonymous group"),
            _ => {}
        }
    }
    // Bob does not see who else is in the group; Ann, who owns it, does.
    let bob_view = token("bob@example.org").await.directory().await.unwrap();
    assert_eq!(bob_view[0]["members"], serde_json::json!([]));
    let ann_view = ann_admin.directory().await.unwrap();
    assert_eq!(ann_view[0]["members"], serde_json::json!(["bob@example.org"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_opens_a_line_to_another_organisations_group_until_it_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let pat_phone = hub.enrol("pat@partner.example", "phone").await;
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let org = set_up(&hub).await;
    assign(&hub, &org, "ann@example.org").await;
    let (partner, pia) = partner_with_group(&hub).await;
    let max = AdminClient::new(hub.admin, hub.token("max@example.org").await);
    let far = switchboard_hub::store::system_clock_ms() + 5 * 365 * 24 * 3_600_000;
    let Change::KeyIssued(key) = max
        .org(&Command::IssueKey {
            org: org.id,
            unit: org.sales,
            to_org: partner.id,
            expires_ms: Some(far),
        })
        .await
        .unwrap()
        .change
    else {
        panic!()
    };
    pia.org(&Command::HandKey { key: key.id, group: "#partners".into() }).await.unwrap();

    let sales = Address::parse("sales@example.org").unwrap();
    let mut pat = connect(&pat_phone).await;
    send_all(&mut pat, &sales, &["order 1".into()]).await;
    let mut ann = connect(&ann_phone).await;
    assert_eq!(receive(&mut ann, 1).await, ["order 1"]);

    max.org(&Command::RevokeKey { key: key.id }).await.unwrap();
    let id = pat.send_text(&sales, "order 2").await.unwrap();
    loop {
        match next(&mut pat, 10).await {
            Event::Rejected(rejected) if rejected.id == id => {
                assert_eq!(rejected.reason, RejectReason::NOT_ALLOWED);
                assert!(rejected.detail.contains("revoked"), "{}", rejected.detail);
                break;
            }
            Event::Accepted(done) if done == id => panic!("a revoked key still opened the line"),
            _ => {}
        }
    }
    // The refused use is in the log the line's organisation reads.
    let mut logged = false;
    for _ in 0..50 {
        let events = max.org_events(0).await.unwrap();
        if events.iter().any(|e| e["event"]["change"]["kind"] == "key_use_refused") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged, "the refused key use was not logged");
}

/// A PNG header of the given size (enough for the hub's check; the pixels are not decoded).
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    bytes
}

async fn http(
    hub: &HubProcess,
    method: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
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
    let status = std::str::from_utf8(&answer[9..12]).unwrap().parse().unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (status, answer[split..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_logo_must_be_a_png_or_jpeg_of_at_least_512_pixels_a_side() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let org = set_up(&hub).await;
    let max = hub.token("max@example.org").await;
    let ann = hub.token("ann@example.org").await;
    let path = format!("/v1/org/logo?org={}&unit={}", org.id.0, org.sales.0);
    let (status, body) = http(&hub, "PUT", &path, &max, png(256, 256)).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("512 x 512"));
    let (status, _) = http(&hub, "PUT", &path, &max, b"GIF89a not a logo".to_vec()).await;
    assert_eq!(status, 400);
    let (status, _) = http(&hub, "PUT", &path, &ann, png(600, 600)).await;
    assert_eq!(status, 403, "a member may not change units");
    let (status, _) = http(&hub, "PUT", &path, &max, png(600, 600)).await;
    assert_eq!(status, 200);
    let (status, body) =
        http(&hub, "GET", &format!("/v1/org/logo?unit={}", org.sales.0), &ann, vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(body, png(600, 600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_member_reads_a_line_message_the_colleagues_and_the_sender_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let customer = hub.enrol("cy@customer.example", "phone").await;
    let org = set_up(&hub).await;
    assign(&hub, &org, "ann@example.org").await;
    assign(&hub, &org, "bob@example.org").await;
    let sales = Address::parse("sales@example.org").unwrap();
    let mut cy = connect(&customer).await;
    // Max, a member of the organisation, writes to the department line.
    let max_phone = hub.enrol("max@example.org", "phone").await;
    let mut max = connect(&max_phone).await;
    let id = max.send_text(&sales, "please call the customer").await.unwrap();
    loop {
        if let Event::Accepted(done) = next(&mut max, 10).await
            && done == id
        {
            break;
        }
    }
    let mut ann = connect(&ann_phone).await;
    let Event::Deliver(deliver) = next(&mut ann, 10).await else { panic!("no delivery") };
    ann.ack(deliver.queue.clone(), deliver.seq, vec![]).await.unwrap();
    ann.receipt(switchboard_protocol::Receipt {
        id,
        kind: switchboard_protocol::ReceiptKind::Read,
        message_from: Address::parse("max@example.org").unwrap(),
        by: sales.clone(),
        at_ms: 1,
    })
    .await
    .unwrap();
    // Bob sees the message and then that the line has read it.
    let mut bob = connect(&bob_phone).await;
    let mut saw_receipt = false;
    for _ in 0..4 {
        match next(&mut bob, 10).await {
            Event::Deliver(d) => bob.ack(d.queue, d.seq, vec![]).await.unwrap(),
            Event::Receipt(r) => {
                assert_eq!((r.receipt.id, r.receipt.by.clone()), (id, sales.clone()));
                saw_receipt = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_receipt);
    // A stranger cannot send a receipt in the line's name.
    cy.receipt(switchboard_protocol::Receipt {
        id,
        kind: switchboard_protocol::ReceiptKind::Read,
        message_from: Address::parse("max@example.org").unwrap(),
        by: sales,
        at_ms: 1,
    })
    .await
    .unwrap();
    match next(&mut cy, 10).await {
        Event::Error(error) => {
            assert_eq!(error.code, switchboard_protocol::ErrorCode::RECEIPT_REFUSED)
        }
        other => panic!("{other:?}"),
    }
    // A member who joined after the message was sent never got it, and cannot mark it read
    // in the line's name either.
    let dora_admin = hub.as_user("dora@example.org").await;
    dora_admin.org(&Command::Register { org: org.id }).await.unwrap();
    let max_admin = AdminClient::new(hub.admin, hub.token("max@example.org").await);
    max_admin
        .org(&Command::Approve { org: org.id, user: "dora@example.org".into() })
        .await
        .unwrap();
    assign(&hub, &org, "dora@example.org").await;
    let dora_phone = hub.enrol("dora@example.org", "phone").await;
    let mut dora = connect(&dora_phone).await;
    dora.receipt(switchboard_protocol::Receipt {
        id,
        kind: switchboard_protocol::ReceiptKind::Read,
        message_from: Address::parse("max@example.org").unwrap(),
        by: Address::parse("sales@example.org").unwrap(),
        at_ms: 1,
    })
    .await
    .unwrap();
    match next(&mut dora, 10).await {
        Event::Error(error) => {
            assert_eq!(error.code, switchboard_protocol::ErrorCode::RECEIPT_REFUSED, "{error:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_deleted_without_an_heir_loses_devices_queue_and_address_and_no_one_else_is_harmed()
 {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let ann_phone = hub.enrol("ann@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let max_phone = hub.enrol("max@example.org", "phone").await;
    let org = set_up(&hub).await;
    let mut max = connect(&max_phone).await;
    let ann_address = ann_phone.account();
    send_all(&mut max, &ann_address, &["waiting for ann".into()]).await;
    let admin = AdminClient::new(hub.admin, hub.token("max@example.org").await);
    admin.org(&Command::Deactivate { org: org.id, user: "ann@example.org".into() }).await.unwrap();
    admin
        .org(&Command::DeleteMember {
            org: org.id,
            user: "ann@example.org".into(),
            reassign_to: None,
        })
        .await
        .unwrap();
    // Ann's address is no longer a recipient, and her device is refused.
    let id = max.send_text(&ann_address, "anyone there?").await.unwrap();
    loop {
        match next(&mut max, 10).await {
            Event::Rejected(rejected) if rejected.id == id => {
                assert_eq!(rejected.reason, RejectReason::UNKNOWN_RECIPIENT);
                break;
            }
            Event::Accepted(done) if done == id => panic!("a deleted member still receives"),
            _ => {}
        }
    }
    let endpoint = switchboard_hub::client::client_endpoint().unwrap();
    assert!(switchboard_hub::client::Client::connect(&endpoint, &ann_phone, None).await.is_err());
    // Bob is not harmed.
    send_all(&mut max, &bob_phone.account(), &["hello bob".into()]).await;
    let mut bob = connect(&bob_phone).await;
    assert_eq!(receive(&mut bob, 1).await, ["hello bob"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_rules_hold_through_the_admin_api() {
    use switchboard_hub::client::admin::AdminError;
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let operator = hub.admin_client();
    let status = |result: Result<switchboard_hub::org::Event, AdminError>| match result {
        Ok(_) => 200,
        Err(AdminError::Api { status, .. }) => status,
        Err(other) => panic!("{other}"),
    };
    let create = |owner: &str, domain: &str, line: &str, seats: u32| Command::CreateOrg {
        name: "X".into(),
        owner: owner.into(),
        domain: domain.into(),
        line: line.into(),
        seat_limit: Some(seats),
    };
    // Only the operator creates organisations; the owner must be in the agreed domain.
    let max = AdminClient::new(hub.admin, hub.token("max@example.org").await);
    assert_eq!(
        status(max.org(&create("max@example.org", "example.org", "main@example.org", 2)).await),
        403
    );
    assert_eq!(
        status(operator.org(&create("max@gmail.com", "example.org", "main@example.org", 2)).await),
        400
    );
    let Change::OrgCreated { org, .. } = operator
        .org(&create("max@example.org", "example.org", "main@example.org", 2))
        .await
        .unwrap()
        .change
    else {
        panic!()
    };
    let token = |user: &'static str| {
        let operator = hub.admin_client();
        let admin = hub.admin;
        async move {
            let _ = operator.add_user(user).await;
            AdminClient::new(admin, operator.new_token(user).await.unwrap())
        }
    };
    // Domains: a foreign address cannot register; once the domain is proven, it can.
    let foreign = token("ann@example.net").await;
    assert_eq!(status(foreign.org(&Command::Register { org: org.id }).await), 400);
    max.org(&Command::AddDomain { org: org.id, domain: "example.net".into() }).await.unwrap();
    assert_eq!(status(foreign.org(&Command::Register { org: org.id }).await), 400);
    let confirm = Command::ConfirmDomain { org: org.id, domain: "example.net".into() };
    operator.org(&confirm).await.unwrap();
    foreign.org(&Command::Register { org: org.id }).await.unwrap();
    // Seats: the owner and ann take both; the next registration is refused.
    let bob = token("bob@example.org").await;
    assert_eq!(status(bob.org(&Command::Register { org: org.id }).await), 403);
    operator.org(&Command::SetSeatLimit { org: org.id, limit: 3 }).await.unwrap();
    bob.org(&Command::Register { org: org.id }).await.unwrap();
    // At most 5 admins, named by the owner alone (users of the hub).
    for i in 0..6 {
        operator.add_user(&format!("a{i}@example.org")).await.unwrap();
    }
    for i in 0..5 {
        max.org(&Command::NameAdmin { org: org.id, user: format!("a{i}@example.org") })
            .await
            .unwrap();
    }
    assert_eq!(
        status(max.org(&Command::NameAdmin { org: org.id, user: "a5@example.org".into() }).await),
        403
    );
    let admin = token("a0@example.org").await;
    assert_eq!(
        status(
            admin.org(&Command::RemoveAdmin { org: org.id, user: "a1@example.org".into() }).await
        ),
        403
    );
    // Admins approve; a second assignment is refused.
    admin.org(&Command::Approve { org: org.id, user: "bob@example.org".into() }).await.unwrap();
    let root = org.root;
    admin
        .org(&Command::Assign { org: org.id, user: "bob@example.org".into(), unit: root })
        .await
        .unwrap();
    assert_eq!(
        status(
            admin
                .org(&Command::Assign { org: org.id, user: "bob@example.org".into(), unit: root })
                .await
        ),
        409
    );
    // Ownership passes only on the new owner's confirmation; admins cannot delete the org.
    assert_eq!(status(admin.org(&Command::DeleteOrg { org: org.id }).await), 403);
    max.org(&Command::TransferOwnership { org: org.id, to: "bob@example.org".into() })
        .await
        .unwrap();
    assert_eq!(status(admin.org(&Command::AcceptOwnership { org: org.id }).await), 403);
    bob.org(&Command::AcceptOwnership { org: org.id }).await.unwrap();
    assert_eq!(status(max.org(&Command::DeleteOrg { org: org.id }).await), 403);
    bob.org(&Command::DeleteOrg { org: org.id }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_stops_opening_the_line_when_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let pat_phone = hub.enrol("pat@partner.example", "phone").await;
    let org = set_up(&hub).await;
    let (partner, pia) = partner_with_group(&hub).await;
    let max = AdminClient::new(hub.admin, hub.token("max@example.org").await);
    // A key that works for the next three seconds.
    let expires_ms = switchboard_hub::store::system_clock_ms() + 3_000;
    let Change::KeyIssued(key) = max
        .org(&Command::IssueKey {
            org: org.id,
            unit: org.sales,
            to_org: partner.id,
            expires_ms: Some(expires_ms),
        })
        .await
        .unwrap()
        .change
    else {
        panic!()
    };
    pia.org(&Command::HandKey { key: key.id, group: "#partners".into() }).await.unwrap();
    let sales = Address::parse("sales@example.org").unwrap();
    let mut pat = connect(&pat_phone).await;
    send_all(&mut pat, &sales, &["before expiry".into()]).await;
    let wait = expires_ms.saturating_sub(switchboard_hub::store::system_clock_ms()) + 100;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let id = pat.send_text(&sales, "after expiry").await.unwrap();
    loop {
        match next(&mut pat, 10).await {
            Event::Rejected(rejected) if rejected.id == id => {
                assert!(rejected.detail.contains("expired"), "{}", rejected.detail);
                break;
            }
            Event::Accepted(done) if done == id => panic!("an expired key still opened the line"),
            _ => {}
        }
    }
}
