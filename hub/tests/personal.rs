//! Home records of private users on their registration hub (a hub process, its admin API and
//! QUIC): taken only when signed by one of the user's devices with the next epoch, told to
//! every device of the user, and every other record refused with its reason.

mod common;

use common::*;
use serde_json::Value;
use switchboard_hub::{
    client::{DeviceIdentity, Event},
    personal::HomeRecord,
};
use switchboard_protocol::Flags;

/// A record moving `identity`'s user to a hub "desk-N" at `epoch`, signed by `identity`.
fn signed(identity: &DeviceIdentity, epoch: u64) -> HomeRecord {
    let mut record = HomeRecord {
        user: identity.address.account().unwrap().as_str().to_string(),
        hub: format!("desk-{epoch}"),
        address: "127.0.0.2:7447".parse().unwrap(),
        pin: "ab".repeat(32),
        epoch,
        device: identity.address.as_str().to_string(),
        signed_ms: switchboard_hub::store::system_clock_ms(),
        signature: String::new(),
    };
    record.sign(identity.secret_key.as_slice().try_into().unwrap());
    record
}

async fn post(client: &switchboard_hub::client::admin::AdminClient, record: &HomeRecord) -> String {
    let body = serde_json::to_value(record).unwrap();
    match client.request("POST", "/v1/home", Some(body)).await {
        Ok(answer) => format!("ok {}", answer["epoch"]),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_record_signed_by_a_users_device_is_taken_and_every_device_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let desk = hub.enrol("alice@home.example", "desk").await;
    let laptop = hub.enrol("alice@home.example", "laptop").await;
    let alice = hub.as_user("alice@home.example").await;
    assert_eq!(post(&alice, &signed(&desk, 1)).await, "ok 1");
    let stored = alice.request("GET", "/v1/home?user=alice@home.example", None).await.unwrap();
    assert_eq!(stored["hub"], "desk-1");
    assert_eq!(stored["device"], "alice@home.example/desk");
    // The laptop, which did not make the change, is told.
    let mut client = connect(&laptop).await;
    let notice = loop {
        if let Event::Deliver(deliver) = next(&mut client, 10).await {
            assert!(deliver.envelope.flags.contains(Flags::NOTICE));
            break serde_json::from_slice::<Value>(&deliver.envelope.body).unwrap();
        }
    };
    assert_eq!(notice["notice"], "home_changed");
    assert_eq!(notice["epoch"], 1);
    assert_eq!(notice["device"], "alice@home.example/desk");
    // Another of her devices makes the next change; the operator may post it too.
    assert_eq!(post(&hub.admin_client(), &signed(&laptop, 2)).await, "ok 2");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_records_replayed_forged_or_signed_by_another_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let desk = hub.enrol("alice@home.example", "desk").await;
    let laptop = hub.enrol("alice@home.example", "laptop").await;
    let bob_phone = hub.enrol("bob@home.example", "phone").await;
    let operator = hub.admin_client();
    let first = signed(&desk, 1);
    assert_eq!(post(&operator, &first).await, "ok 1");

    // The same record again (a replay), and one that skips an epoch.
    assert!(post(&operator, &first).await.starts_with("409: stale-epoch"));
    assert!(post(&operator, &signed(&desk, 3)).await.starts_with("409: stale-epoch"));
    // Signed by bob's key in the name of alice's desk.
    let mut forged = signed(&bob_phone, 2);
    forged.user = "alice@home.example".into();
    forged.device = "alice@home.example/desk".into();
    assert!(post(&operator, &forged).await.starts_with("403: bad-signature"));
    // A field changed after signing.
    let mut tampered = signed(&desk, 2);
    tampered.address = "127.0.0.66:7447".parse().unwrap();
    assert!(post(&operator, &tampered).await.starts_with("403: bad-signature"));
    // A signature that is not hex, and one cut short.
    let mut garbage = signed(&desk, 2);
    garbage.signature = "zz".into();
    assert!(post(&operator, &garbage).await.starts_with("403: bad-signature"));
    garbage.signature = signed(&desk, 2).signature[..64].to_string();
    assert!(post(&operator, &garbage).await.starts_with("403: bad-signature"));
    // Bob's device for alice's record, a device alice does not have, a user of no hub here.
    let mut crossed = signed(&desk, 2);
    crossed.device = "bob@home.example/phone".into();
    assert!(post(&operator, &crossed).await.starts_with("400: malformed"));
    let mut ghost = signed(&desk, 2);
    ghost.device = "alice@home.example/ghost".into();
    assert!(post(&operator, &ghost).await.starts_with("404: unknown-device"));
    let mut stranger = signed(&desk, 2);
    stranger.user = "carol@home.example".into();
    stranger.device = "carol@home.example/desk".into();
    assert!(post(&operator, &stranger).await.starts_with("404: unknown-user"));
    // A revoked device's key no longer counts.
    operator.revoke("alice@home.example/laptop").await.unwrap();
    assert!(post(&operator, &signed(&laptop, 2)).await.starts_with("403: revoked-device"));
    // Bob may neither read nor change alice's record, even with a good signature.
    let bob = hub.as_user("bob@home.example").await;
    assert!(post(&bob, &signed(&desk, 2)).await.starts_with("403"));
    let read = bob.request("GET", "/v1/home?user=alice@home.example", None).await;
    assert!(read.unwrap_err().to_string().starts_with("403"));

    // Nothing changed: epoch 1 as the desk signed it, and the next good record is epoch 2.
    let stored = operator.request("GET", "/v1/home?user=alice@home.example", None).await.unwrap();
    assert_eq!(serde_json::from_value::<HomeRecord>(stored).unwrap(), first);
    assert_eq!(post(&operator, &signed(&desk, 2)).await, "ok 2");
}

/// `identity`'s device enrolled on `home` too (the same key), and an identity that connects
/// there.
async fn at_home(home: &HubProcess, identity: &DeviceIdentity) -> DeviceIdentity {
    use switchboard_hub::admin::{DeviceKey, hex};
    let key = DeviceKey {
        name: identity.address.as_str().to_string(),
        public_key: hex(&identity.public_key()),
        kind: None,
    };
    let answer = home.admin_client().register_devices(&[key], true).await.unwrap();
    assert!(answer.results.iter().all(|r| r.error.is_none()), "{:?}", answer.results);
    DeviceIdentity { hub: home.quic, hub_cert: home.cert.clone(), ..identity.clone() }
}

/// A record making `site` (the hub `name`) the home hub of `identity`'s user, signed by it.
fn home_at(identity: &DeviceIdentity, name: &str, site: &Site, epoch: u64) -> HomeRecord {
    let mut record = signed(identity, epoch);
    record.hub = name.to_string();
    record.address = site.quic;
    record.pin = site.pin.clone();
    record.sign(identity.secret_key.as_slice().try_into().unwrap());
    record
}

/// Receives until `count` messages arrived (acknowledging everything); answers them and the
/// notices that came with them.
async fn messages_and_notices(
    client: &mut switchboard_hub::client::Client,
    count: usize,
) -> (Vec<String>, Vec<Value>) {
    let (mut texts, mut notices) = (Vec::new(), Vec::new());
    while texts.len() < count {
        match next(client, 20).await {
            Event::Deliver(deliver) => {
                let body = deliver.envelope.body.to_vec();
                if deliver.envelope.flags.contains(Flags::NOTICE) {
                    notices.push(serde_json::from_slice(&body).unwrap());
                } else {
                    texts.push(String::from_utf8(body).unwrap());
                }
                client.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
            }
            Event::Receipt(receipt) => {
                client.ack(receipt.queue, receipt.seq, vec![]).await.unwrap()
            }
            Event::Closed { code, reason } => panic!("closed: {code}: {reason}"),
            _ => {}
        }
    }
    (texts, notices)
}

fn texts(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix} {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_hubs_reach_each_other_and_an_exchange_through_their_registration_hub() {
    // P: the provider's registration hub for home.example. A and E: alice's and bob's desktops,
    // their home hubs. X: an organisation's exchange server for x.example.
    let (p, a, e, x) =
        (site([127, 0, 0, 1]), site([127, 0, 0, 2]), site([127, 0, 0, 3]), site([127, 0, 0, 4]));
    let peer = |name: &str, site: &Site, domain: &str, extra: &str| {
        format!(
            "\n[[peers]]\nname = \"{name}\"\naddress = \"{}\"\npin = \"{}\"\ndomains = [\"{domain}\"]\n{extra}",
            site.quic, site.pin
        )
    };
    let provider = format!(
        "[hub]\nname = \"provider\"\ndomains = [\"home.example\"]\n{}",
        peer("exchange", &x, "x.example", "")
    );
    let desktop = |name: &str| {
        format!(
            "[hub]\nname = \"{name}\"\n{}",
            peer("provider", &p, "home.example", "forwards = true\n")
        )
    };
    let exchange = format!(
        "[hub]\nname = \"exchange\"\ndomains = [\"x.example\"]\n{}",
        peer("provider", &p, "home.example", "")
    );
    let mut hub_p = HubProcess::start_at(p.dir.path(), &provider, p.quic, p.admin);
    let hub_a = HubProcess::start_at(a.dir.path(), &desktop("alice-desk"), a.quic, a.admin);
    let mut hub_e = HubProcess::start_at(e.dir.path(), &desktop("bob-desk"), e.quic, e.admin);
    let hub_x = HubProcess::start_at(x.dir.path(), &exchange, x.quic, x.admin);

    // Accounts and device keys on the registration hub; each device also on its home hub.
    let desk = hub_p.enrol("alice@home.example", "desk").await;
    let laptop = hub_p.enrol("alice@home.example", "laptop").await;
    let phone = hub_p.enrol("bob@home.example", "phone").await;
    let tablet = hub_p.enrol("bob@home.example", "tablet").await;
    let pc = hub_p.enrol("bob@home.example", "pc").await;
    // The desk's identity as enrolled at P: what `hub personal home` signs with.
    let desk_file = a.dir.path().join("desk-identity.toml");
    desk.save(&desk_file).unwrap();
    let (desk, laptop) = (at_home(&hub_a, &desk).await, at_home(&hub_a, &laptop).await);
    let (phone, tablet) = (at_home(&hub_e, &phone).await, at_home(&hub_e, &tablet).await);
    let pc = at_home(&hub_e, &pc).await;
    let operator = hub_p.admin_client();
    // Alice makes her desktop her home hub with one command, run on the desktop.
    let token = hub_p.token("alice@home.example").await;
    let (config, data_dir) = (a.dir.path().join("hub.toml"), a.dir.path());
    let registration = p.admin.to_string();
    let hub_cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
            .args(["--config", config.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let made = hub_cli(&[
        "personal",
        "home",
        "--registration",
        &registration,
        "--token",
        &token,
        "--identity",
        desk_file.to_str().unwrap(),
        "--address",
        &a.quic.to_string(),
    ]);
    assert!(made.contains("alice@home.example now lives at alice-desk"), "{made}");
    let shown = hub_cli(&[
        "personal",
        "show",
        "alice@home.example",
        "--registration",
        &registration,
        "--token",
        &token,
    ]);
    assert!(
        shown.contains(&format!("home hub alice-desk at {} (pin {})", a.quic, a.pin)),
        "{shown}"
    );
    assert!(shown.contains("epoch 1, signed by alice@home.example/desk"), "{shown}");
    assert!(
        shown.contains("preferred device: alice@home.example/desk (unspecified, home record)"),
        "{shown}"
    );
    // Bob cannot take alice's home hub's name for his own hub: her messages would go there.
    let hijack = post(&operator, &home_at(&phone, "alice-desk", &e, 1)).await;
    assert!(
        hijack.starts_with("400: malformed") && hijack.contains("home hub of alice"),
        "{hijack}"
    );
    assert_eq!(post(&operator, &home_at(&phone, "bob-desk", &e, 1)).await, "ok 1");

    // Alice's laptop to bob: laptop -> A -> P -> E -> bob's online devices, the pc later.
    let bob: switchboard_protocol::Address = "bob@home.example".parse().unwrap();
    let (mut laptop_c, mut phone_c, mut tablet_c) =
        (connect(&laptop).await, connect(&phone).await, connect(&tablet).await);
    let to_bob = texts("to bob", 10);
    send_all(&mut laptop_c, &bob, &to_bob).await;
    // Each of bob's devices is told of his new home first (the notice reached E through P).
    for client in [&mut phone_c, &mut tablet_c] {
        let (got, notices) = messages_and_notices(client, 10).await;
        assert_eq!(got, to_bob);
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert_eq!(notices[0]["notice"], "home_changed");
        assert_eq!(notices[0]["hub"], "bob-desk");
    }
    let mut pc_c = connect(&pc).await;
    assert_eq!(messages_and_notices(&mut pc_c, 10).await.0, to_bob);
    pc_c.close().await;

    // A member of the exchange to alice: X -> P -> A -> every device of alice.
    let carol = hub_x.enrol("carol@x.example", "pc").await;
    let mut carol_c = connect(&carol).await;
    let to_alice = texts("to alice", 5);
    send_all(&mut carol_c, &"alice@home.example".parse().unwrap(), &to_alice).await;
    let mut desk_c = connect(&desk).await;
    // The desk sees alice's own side of her messages to bob first, then carol's.
    let (seen, notices) = messages_and_notices(&mut desk_c, 15).await;
    assert_eq!(seen[..10], to_bob[..]);
    assert_eq!(seen[10..], to_alice[..]);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["hub"], "alice-desk");
    // And alice's answer reaches carol: A -> P (alice's way out) -> X.
    let reply = texts("to carol", 3);
    send_all(&mut desk_c, &"carol@x.example".parse().unwrap(), &reply).await;
    // (Carol's own side of her messages to alice may come first on her device.)
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(
            receive(&mut carol_c, 1).await.into_iter().filter(|t| t.starts_with("to carol")),
        );
    }
    assert_eq!(got, reply);

    // Bob's desktop dies: what alice sends waits at P and reaches bob when it is back.
    phone_c.close().await;
    tablet_c.close().await;
    hub_e.kill();
    let while_down = texts("while bob's desk is down", 20);
    send_all(&mut laptop_c, &bob, &while_down).await;
    // All 20 wait in P's queue for bob's desktop (its mailbox) until the desktop is back.
    loop {
        let peers = operator.request("GET", "/v1/peers", None).await.unwrap();
        let bob_desk = peers.as_array().unwrap().iter().find(|p| p["name"] == "bob-desk").cloned();
        if bob_desk.is_some_and(|p| p["queued"].as_u64() == Some(20)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    hub_e.restart();
    let mut phone_c = connect(&phone).await;
    assert_eq!(messages_and_notices(&mut phone_c, 20).await.0, while_down);

    // The registration hub itself is killed with messages on their way through it, and comes
    // back knowing where its users live: each message arrives once, in order.
    let through_p = texts("through a crash of the provider", 40);
    send_all(&mut laptop_c, &bob, &through_p[..20]).await;
    hub_p.kill();
    send_all(&mut laptop_c, &bob, &through_p[20..]).await;
    hub_p.restart();
    assert_eq!(messages_and_notices(&mut phone_c, 40).await.0, through_p);
    let extra = tokio::time::timeout(std::time::Duration::from_secs(2), phone_c.next_event()).await;
    assert!(extra.is_err(), "a duplicate: {extra:?}");
    for client in [laptop_c, phone_c, desk_c, carol_c] {
        client.close().await;
    }
    drop((hub_a, hub_x));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_home_hub_gets_what_waited_in_the_mailbox_for_the_old_one() {
    let (p, e, e2) = (site([127, 0, 0, 5]), site([127, 0, 0, 6]), site([127, 0, 0, 7]));
    // The old desktop is down during the move: the provider waits two seconds for its part.
    let provider =
        "[hub]\nname = \"provider\"\ndomains = [\"home.example\"]\nhandoff_wait_secs = 2\n";
    let desktop = |name: &str| {
        format!(
            "[hub]\nname = \"{name}\"\n\n[[peers]]\nname = \"provider\"\naddress = \"{}\"\npin = \"{}\"\ndomains = [\"home.example\"]\nforwards = true\n",
            p.quic, p.pin
        )
    };
    let hub_p = HubProcess::start_at(p.dir.path(), provider, p.quic, p.admin);
    let mut hub_e = HubProcess::start_at(e.dir.path(), &desktop("bob-desk"), e.quic, e.admin);
    let hub_e2 = HubProcess::start_at(e2.dir.path(), &desktop("bob-desk-2"), e2.quic, e2.admin);
    // Dora has no home hub of her own: the provider serves her directly.
    let dora = hub_p.enrol("dora@home.example", "phone").await;
    let phone = hub_p.enrol("bob@home.example", "phone").await;
    let (phone_e, phone_e2) = (at_home(&hub_e, &phone).await, at_home(&hub_e2, &phone).await);
    let operator = hub_p.admin_client();
    assert_eq!(post(&operator, &home_at(&phone, "bob-desk", &e, 1)).await, "ok 1");
    let bob: switchboard_protocol::Address = "bob@home.example".parse().unwrap();
    let mut dora_c = connect(&dora).await;
    let first = texts("first", 5);
    send_all(&mut dora_c, &bob, &first).await;
    let mut phone_c = connect(&phone_e).await;
    // What the phone took, by (from, id), as its application keeps it.
    let mut seen = std::collections::HashSet::new();
    assert_eq!(new_texts(&mut phone_c, &mut seen, 5).await, first);
    phone_c.close().await;
    let queued_for = |name: &'static str| {
        let operator = operator.clone();
        async move {
            let peers = operator.request("GET", "/v1/peers", None).await.unwrap();
            let peer = peers.as_array().unwrap().iter().find(|p| p["name"] == name).cloned();
            peer.and_then(|p| p["queued"].as_u64())
        }
    };
    // Three more reach the old desktop while the phone is off.
    let held = texts("held at the old desktop", 3);
    send_all(&mut dora_c, &bob, &held).await;
    while queued_for("bob-desk").await != Some(0) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The old desktop goes down; what dora sends waits in bob's mailbox at the provider.
    hub_e.kill();
    let waiting = texts("waiting", 10);
    send_all(&mut dora_c, &bob, &waiting).await;
    while queued_for("bob-desk").await != Some(10) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The operator cannot drop the old home hub, and with it bob's mailbox.
    let body = serde_json::json!({ "name": "bob-desk", "force": true });
    let refused = operator.request("POST", "/v1/peers/remove", Some(body)).await.unwrap_err();
    assert!(refused.to_string().starts_with("409: bob-desk is the home hub of bob"), "{refused}");
    // Bob makes his new desktop his home: the mailbox goes there, in order, once.
    assert_eq!(post(&operator, &home_at(&phone, "bob-desk-2", &e2, 2)).await, "ok 2");
    // The old desktop stays a peer, a former home hub: the mailbox up to the move (what waited
    // and the change itself) is still its to relay, for it to hand over when it is back.
    assert_eq!(queued_for("bob-desk").await, Some(11));
    let mut phone_c = connect(&phone_e2).await;
    let (got, _) = messages_and_notices(&mut phone_c, 10).await;
    assert_eq!(got, waiting);
    // The change itself follows what waited, in the same mailbox.
    let notice = loop {
        if let Event::Deliver(deliver) = next(&mut phone_c, 10).await {
            assert!(deliver.envelope.flags.contains(Flags::NOTICE));
            phone_c.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
            break serde_json::from_slice::<Value>(&deliver.envelope.body).unwrap();
        }
    };
    assert_eq!((notice["hub"].as_str(), notice["epoch"].as_u64()), (Some("bob-desk-2"), Some(2)));
    let extra = tokio::time::timeout(std::time::Duration::from_secs(2), phone_c.next_event()).await;
    assert!(extra.is_err(), "a duplicate: {extra:?}");
    let shown = operator.request("GET", "/v1/home?user=bob@home.example", None).await.unwrap();
    assert_eq!(shown["hub"], "bob-desk-2");
    // The move stays open, the old desktop's part has not come: the operator sees that.
    let path = "/v1/home/handoff?user=bob@home.example";
    let open = operator.request("GET", path, None).await.unwrap();
    assert_eq!(
        (open["from"].as_str(), open["mailbox_released"].as_bool()),
        (Some("bob-desk"), Some(true))
    );
    // The old desktop is back: it learns of the move and hands over what the phone never took
    // there; the new desktop has what came through the mailbox already and keeps it once.
    // (What it hands over starts at the lowest cursor it has for bob's devices, which may be
    // behind what the phone took; the application drops what it has.)
    hub_e.restart();
    assert_eq!(new_texts(&mut phone_c, &mut seen, 3).await, held);
    nothing_new(&mut phone_c, &mut seen).await;
    let done = operator.request("GET", path, None).await.unwrap_err();
    assert!(done.to_string().starts_with("404: no hand-off"), "{done}");
    phone_c.close().await;
    dora_c.close().await;
    drop(hub_e2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_desktop_is_the_preferred_device_until_a_home_record_names_another() {
    use switchboard_hub::admin::{DeviceKey, hex};
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let operator = hub.admin_client();
    let laptop = hub.enrol("alice@home.example", "laptop").await;
    let desk1 = hub.enrol("alice@home.example", "desk1").await;
    let alice = hub.as_user("alice@home.example").await;
    let kind = |client: &switchboard_hub::client::admin::AdminClient, name: &str, kind: &str| {
        let (client, body) = (client.clone(), serde_json::json!({ "name": name, "kind": kind }));
        async move { client.request("POST", "/v1/devices/kind", Some(body)).await }
    };
    let preferred = || async {
        let path = "/v1/devices/preferred?user=alice@home.example";
        let answer = alice.request("GET", path, None).await.unwrap();
        (answer["device"]["name"].as_str().map(str::to_string), answer["why"].clone())
    };
    assert_eq!(preferred().await.0, None, "no desktop yet");
    // The operator and alice herself say what her machines are; bob may not.
    kind(&operator, "alice@home.example/laptop", "laptop").await.unwrap();
    kind(&alice, "alice@home.example/desk1", "desktop").await.unwrap();
    let bob = hub.as_user("bob@home.example").await;
    let refused = kind(&bob, "alice@home.example/laptop", "desktop").await.unwrap_err();
    assert!(refused.to_string().starts_with("403"), "{refused}");
    let unknown = kind(&operator, "alice@home.example/laptop", "toaster").await.unwrap_err();
    assert!(unknown.to_string().starts_with('4'), "{unknown}");
    // A second desktop registered with its kind, after the first.
    let desk2 = DeviceIdentity::generate(
        "alice@home.example/desk2".parse().unwrap(),
        hub.quic,
        hub.cert.clone(),
    )
    .unwrap();
    let key = DeviceKey {
        name: "alice@home.example/desk2".into(),
        public_key: hex(&desk2.public_key()),
        kind: Some(switchboard_hub::store::DeviceKind::Desktop),
    };
    let answer = operator.register_devices(&[key], false).await.unwrap();
    assert_eq!(
        answer.results[0].device.as_ref().unwrap().kind,
        switchboard_hub::store::DeviceKind::Desktop
    );
    let listed = operator.devices(Some("alice@home.example")).await.unwrap();
    let kinds: Vec<_> = listed.iter().map(|d| (d.name.as_str(), d.kind)).collect();
    assert!(
        kinds.contains(&("alice@home.example/laptop", switchboard_hub::store::DeviceKind::Laptop)),
        "{kinds:?}"
    );

    // The first desktop, while no record names another; a revoked one no longer counts.
    assert_eq!(
        preferred().await,
        (Some("alice@home.example/desk1".into()), "first desktop".into())
    );
    operator.revoke("alice@home.example/desk1").await.unwrap();
    assert_eq!(preferred().await.0.as_deref(), Some("alice@home.example/desk2"));
    // The device that signs her home record is her preferred device from then on.
    assert_eq!(post(&alice, &signed(&laptop, 1)).await, "ok 1");
    assert_eq!(preferred().await, (Some("alice@home.example/laptop".into()), "home record".into()));
    drop(desk1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_old_home_hub_accepted_before_a_move_still_reaches_its_recipients() {
    let (p, a, a2) = (site([127, 0, 0, 8]), site([127, 0, 0, 9]), site([127, 0, 0, 10]));
    let provider = "[hub]\nname = \"provider\"\ndomains = [\"home.example\"]\n";
    let desktop = |name: &str| {
        format!(
            "[hub]\nname = \"{name}\"\n\n[[peers]]\nname = \"provider\"\naddress = \"{}\"\npin = \"{}\"\ndomains = [\"home.example\"]\nforwards = true\n",
            p.quic, p.pin
        )
    };
    let mut hub_p = HubProcess::start_at(p.dir.path(), provider, p.quic, p.admin);
    let mut hub_a = HubProcess::start_at(a.dir.path(), &desktop("alice-desk"), a.quic, a.admin);
    let hub_a2 = HubProcess::start_at(a2.dir.path(), &desktop("alice-desk-2"), a2.quic, a2.admin);
    let bob = hub_p.enrol("bob@home.example", "phone").await;
    let desk = hub_p.enrol("alice@home.example", "desk").await;
    let (desk_a, _desk_a2) = (at_home(&hub_a, &desk).await, at_home(&hub_a2, &desk).await);
    let operator = hub_p.admin_client();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk", &a, 1)).await, "ok 1");
    // A's own link to the provider, as A sees it.
    let provider_link = || async {
        let peers = hub_a.admin_client().request("GET", "/v1/peers", None).await.unwrap();
        peers.as_array().unwrap()[0].clone()
    };
    while provider_link().await["state"] != "up" {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The provider goes down; alice's desktop accepts what she sends and holds it. Then A
    // goes down too (SIGKILL), so it cannot link again before the move is taken.
    hub_p.kill();
    let mut alice = connect(&desk_a).await;
    let held = texts("held by the old home", 10);
    send_all(&mut alice, &"bob@home.example".parse().unwrap(), &held).await;
    alice.close().await;
    hub_a.kill();
    // The provider is back, and alice moves to her second desktop while A is down.
    hub_p.restart();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk-2", &a2, 2)).await, "ok 2");
    hub_a.restart();
    // A, now a former home hub, still delivers what it accepted: once, in order.
    let mut bob_c = connect(&bob).await;
    assert_eq!(messages_and_notices(&mut bob_c, 10).await.0, held);
    let extra = tokio::time::timeout(std::time::Duration::from_secs(2), bob_c.next_event()).await;
    assert!(extra.is_err(), "a duplicate: {extra:?}");
    // The provider sends the former home nothing, and keeps it unless told with force.
    let peers = operator.request("GET", "/v1/peers", None).await.unwrap();
    let former = peers.as_array().unwrap().iter().find(|p| p["name"] == "alice-desk").unwrap();
    assert!(former["last_error"].as_str().unwrap().contains("former home hub"), "{former}");
    let body = serde_json::json!({ "name": "alice-desk" });
    let kept = operator.request("POST", "/v1/peers/remove", Some(body)).await.unwrap_err();
    assert!(kept.to_string().starts_with("409: alice-desk was the home hub of alice"), "{kept}");
    bob_c.close().await;
}

/// Receives until `count` messages new to `seen` arrived, acknowledging everything, as an
/// application does: a message whose (`from`, `id`) it has is dropped. Answers the new texts
/// in the order they came.
async fn new_texts(
    client: &mut switchboard_hub::client::Client,
    seen: &mut std::collections::HashSet<(String, switchboard_protocol::MessageId)>,
    count: usize,
) -> Vec<String> {
    receive_texts(client, seen, |_| true, count).await
}

/// Receives until `count` messages that are new to `seen` and `wanted` arrived, acknowledging
/// everything; notices are passed over. Answers their texts in the order they came.
async fn receive_texts(
    client: &mut switchboard_hub::client::Client,
    seen: &mut std::collections::HashSet<(String, switchboard_protocol::MessageId)>,
    wanted: impl Fn(&switchboard_protocol::Envelope) -> bool,
    count: usize,
) -> Vec<String> {
    let mut texts = Vec::new();
    while texts.len() < count {
        match next(client, 30).await {
            Event::Deliver(deliver) => {
                let envelope = &deliver.envelope;
                let fresh = seen.insert((envelope.from.as_str().to_string(), envelope.id));
                if fresh && wanted(envelope) && !envelope.flags.contains(Flags::NOTICE) {
                    texts.push(String::from_utf8(envelope.body.to_vec()).unwrap());
                }
                client.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
            }
            Event::Receipt(receipt) => {
                client.ack(receipt.queue, receipt.seq, vec![]).await.unwrap()
            }
            Event::Closed { code, reason } => panic!("closed: {code}: {reason}"),
            _ => {}
        }
    }
    texts
}

/// Receives until `count` messages from `from` arrived, acknowledging everything: the copies
/// of what the device sent itself, and notices, are passed over. Answers their texts in order.
async fn texts_from(
    client: &mut switchboard_hub::client::Client,
    from: &str,
    count: usize,
) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    receive_texts(client, &mut seen, |envelope| envelope.from.as_str() == from, count).await
}

/// Asserts that nothing new to `seen` arrives for two seconds.
async fn nothing_new(
    client: &mut switchboard_hub::client::Client,
    seen: &mut std::collections::HashSet<(String, switchboard_protocol::MessageId)>,
) {
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while let Ok(Some(event)) = tokio::time::timeout_at(until, client.next_event()).await {
        if let Event::Deliver(deliver) = event {
            let envelope = &deliver.envelope;
            let fresh = seen.insert((envelope.from.as_str().to_string(), envelope.id));
            assert!(!fresh || envelope.flags.contains(Flags::NOTICE), "more: {envelope:?}");
            client.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
        }
    }
}

/// A provider P and two desktops of alice's, A and A2, each with P as its registration hub.
struct Move {
    /// Kept for its directory, which the provider's process uses.
    _p: Site,
    a: Site,
    a2: Site,
    hub_p: HubProcess,
    hub_a: HubProcess,
    hub_a2: HubProcess,
}

fn desktop_config(name: &str, p: &Site) -> String {
    format!(
        "[hub]\nname = \"{name}\"\n\n[[peers]]\nname = \"provider\"\naddress = \"{}\"\npin = \"{}\"\ndomains = [\"home.example\"]\nforwards = true\n",
        p.quic, p.pin
    )
}

fn start_move(ips: [[u8; 4]; 3], provider_extra: &str) -> Move {
    let (p, a, a2) = (site(ips[0]), site(ips[1]), site(ips[2]));
    let provider =
        format!("[hub]\nname = \"provider\"\ndomains = [\"home.example\"]\n{provider_extra}");
    let hub_p = HubProcess::start_at(p.dir.path(), &provider, p.quic, p.admin);
    let hub_a =
        HubProcess::start_at(a.dir.path(), &desktop_config("alice-desk", &p), a.quic, a.admin);
    let hub_a2 =
        HubProcess::start_at(a2.dir.path(), &desktop_config("alice-desk-2", &p), a2.quic, a2.admin);
    Move { _p: p, a, a2, hub_p, hub_a, hub_a2 }
}

/// Waits until `hub`'s link to its peer `name` is up.
async fn link_up(hub: &HubProcess, name: &str) {
    loop {
        let peers = hub.admin_client().request("GET", "/v1/peers", None).await.unwrap();
        if peers.as_array().unwrap().iter().any(|p| p["name"] == name && p["state"] == "up") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_another_home_hub_with_messages_in_flight_hands_over_everything_once_in_order() {
    let m = start_move([[127, 0, 0, 40], [127, 0, 0, 41], [127, 0, 0, 42]], "");
    let bob = m.hub_p.enrol("bob@home.example", "phone").await;
    let desk = m.hub_p.enrol("alice@home.example", "desk").await;
    let laptop = m.hub_p.enrol("alice@home.example", "laptop").await;
    let phone = m.hub_p.enrol("alice@home.example", "phone").await;
    let desk_a = at_home(&m.hub_a, &desk).await;
    let (laptop_a, laptop_a2) =
        (at_home(&m.hub_a, &laptop).await, at_home(&m.hub_a2, &laptop).await);
    let (_, phone_a2) = (at_home(&m.hub_a, &phone).await, at_home(&m.hub_a2, &phone).await);
    // The new desktop is enrolled at the provider only: A has never heard of it.
    let desk2 = m.hub_p.enrol("alice@home.example", "desk-2").await;
    let operator = m.hub_p.admin_client();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk", &m.a, 1)).await, "ok 1");
    link_up(&m.hub_p, "alice-desk").await;
    // A's own link to P, which P refused until the record (A hands over through it).
    link_up(&m.hub_a, "provider").await;
    let alice: switchboard_protocol::Address = "alice@home.example".parse().unwrap();

    // Twenty reach A; the laptop takes ten of them there. The phone is off all along.
    let mut bob_c = connect(&bob).await;
    let all = texts("to alice", 60);
    send_all(&mut bob_c, &alice, &all[..20]).await;
    let mut laptop_c = connect(&laptop_a).await;
    let mut laptop_seen = std::collections::HashSet::new();
    assert_eq!(new_texts(&mut laptop_c, &mut laptop_seen, 10).await, all[..10]);
    // The laptop writes to bob: the copies wait for the phone at A, among the rest.
    let from_a = texts("from A", 3);
    send_all(&mut laptop_c, &"bob@home.example".parse().unwrap(), &from_a).await;
    assert_eq!(texts_from(&mut bob_c, "alice@home.example", 3).await, from_a);
    laptop_c.close().await;

    // Forty more while alice moves to her second desktop, signed by it.
    let sender = tokio::spawn(async move {
        let all = texts("to alice", 60);
        send_all(&mut bob_c, &alice, &all[20..]).await;
        bob_c
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(post(&operator, &home_at(&desk2, "alice-desk-2", &m.a2, 2)).await, "ok 2");
    let mut bob_c = sender.await.unwrap();

    // Every device gets everything it did not take, once (by id), in order, at A2.
    let mut laptop_c = connect(&laptop_a2).await;
    let laptop_got = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        new_texts(&mut laptop_c, &mut laptop_seen, 53),
    );
    let laptop_got = laptop_got.await.expect("the laptop's 53");
    let mut phone_c = connect(&phone_a2).await;
    let mut phone_seen = std::collections::HashSet::new();
    // The phone also gets the receipts for what the laptop sent: bob's hub made them when he
    // took the messages, and they waited at A.
    let mut receipts = std::collections::HashSet::new();
    let mut phone_got = Vec::new();
    while phone_got.len() < 63 || receipts.len() < 3 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(30), phone_c.next_event());
        let Ok(Some(event)) = event.await else {
            panic!("{} of 63 messages, receipts {receipts:?}", phone_got.len())
        };
        match event {
            Event::Deliver(deliver) => {
                let envelope = &deliver.envelope;
                let fresh = phone_seen.insert((envelope.from.as_str().to_string(), envelope.id));
                if fresh && !envelope.flags.contains(Flags::NOTICE) {
                    phone_got.push(String::from_utf8(envelope.body.to_vec()).unwrap());
                }
                phone_c.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
            }
            Event::Receipt(receipt) => {
                let r = &receipt.receipt;
                assert_eq!(r.message_from.as_str(), "alice@home.example");
                receipts.insert((r.id, r.kind));
                phone_c.ack(receipt.queue, receipt.seq, vec![]).await.unwrap();
            }
            Event::Closed { code, reason } => panic!("closed: {code}: {reason}"),
            _ => {}
        }
    }
    assert!(receipts.iter().all(|(_, kind)| *kind == switchboard_protocol::ReceiptKind::Delivered));
    let expected: Vec<String> = [&all[..20], &from_a[..], &all[20..]].concat();
    assert_eq!(phone_got, expected);
    // The laptop took ten at A; its own sends come back to it as copies, in their place.
    assert_eq!(laptop_got, expected[10..]);
    nothing_new(&mut laptop_c, &mut laptop_seen).await;
    nothing_new(&mut phone_c, &mut phone_seen).await;

    // The directory points to A2; A takes no more sends from alice, and says where she went.
    let shown = operator.request("GET", "/v1/home?user=alice@home.example", None).await.unwrap();
    assert_eq!((shown["hub"].as_str(), shown["epoch"].as_u64()), (Some("alice-desk-2"), Some(2)));
    let mut desk_c = connect(&desk_a).await;
    desk_c.send_text(&"bob@home.example".parse().unwrap(), "from the old desk").await.unwrap();
    let refused = loop {
        match next(&mut desk_c, 10).await {
            Event::Rejected(rejected) => break rejected,
            Event::Accepted(id) => panic!("the old home hub accepted {id}"),
            _ => {}
        }
    };
    assert!(refused.detail.contains("moved to the home hub alice-desk-2"), "{}", refused.detail);
    // What alice sends from A2 reaches bob, after all the rest.
    let mut laptop_send = connect(&laptop_a2).await;
    send_all(&mut laptop_send, &"bob@home.example".parse().unwrap(), &texts("from A2", 3)).await;
    // Bob got the copies handed over in alice's queue nowhere: only what she sent from A2.
    assert_eq!(texts_from(&mut bob_c, "alice@home.example", 3).await, texts("from A2", 3));
    for client in [desk_c, laptop_c, phone_c, laptop_send, bob_c] {
        client.close().await;
    }
    drop(m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_hub_that_never_answers_is_ended_by_moving_back_and_the_old_hub_keeps_the_user()
{
    let m = start_move([[127, 0, 0, 43], [127, 0, 0, 44], [127, 0, 0, 45]], "");
    let Move { a, a2, hub_p, mut hub_a, mut hub_a2, .. } = m;
    // The second desktop is off.
    hub_a2.kill();
    let bob = hub_p.enrol("bob@home.example", "phone").await;
    let desk = hub_p.enrol("alice@home.example", "desk").await;
    let desk_a = at_home(&hub_a, &desk).await;
    let operator = hub_p.admin_client();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk", &a, 1)).await, "ok 1");
    let alice: switchboard_protocol::Address = "alice@home.example".parse().unwrap();
    let mut bob_c = connect(&bob).await;
    let all = texts("to alice", 30);
    send_all(&mut bob_c, &alice, &all[..10]).await;
    // A goes down before the move, so the move stays open: A has not handed its part over.
    link_up(&hub_a, "provider").await;
    hub_a.kill();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk-2", &a2, 2)).await, "ok 2");
    send_all(&mut bob_c, &alice, &all[10..20]).await;
    // While the move is open, no third hub is taken: it would strand what A2 took.
    let mut third = home_at(&desk, "alice-desk-3", &a2, 3);
    third.address = "127.0.0.46:7447".parse().unwrap();
    third.sign(desk.secret_key.as_slice().try_into().unwrap());
    let refused = post(&operator, &third).await;
    assert!(refused.starts_with("409: hand-off-in-progress"), "{refused}");
    let path = "/v1/home/handoff?user=alice@home.example";
    let open = operator.request("GET", path, None).await.unwrap();
    assert_eq!(
        (open["from"].as_str(), open["to"].as_str()),
        (Some("alice-desk"), Some("alice-desk-2"))
    );
    assert_eq!(open["mailbox_released"], false);
    // A2 never answers; alice goes back to A, which ends the move.
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk", &a, 3)).await, "ok 3");
    send_all(&mut bob_c, &alice, &all[20..]).await;
    let ended = operator.request("GET", path, None).await.unwrap_err();
    assert!(ended.to_string().starts_with("404: no hand-off"), "{ended}");
    hub_a.restart();
    let mut desk_c = connect(&desk_a).await;
    let mut seen = std::collections::HashSet::new();
    assert_eq!(new_texts(&mut desk_c, &mut seen, 30).await, all);
    nothing_new(&mut desk_c, &mut seen).await;
    // A takes her sends again.
    send_all(&mut desk_c, &"bob@home.example".parse().unwrap(), &texts("back", 2)).await;
    assert_eq!(texts_from(&mut bob_c, "alice@home.example", 2).await, texts("back", 2));
    desk_c.close().await;
    bob_c.close().await;
}

/// Which hub a crash cycle kills.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Old,
    Provider,
    New,
}

/// One crash cycle: alice's home is A with messages for her on A and on their way; she moves
/// to A2; `victim` is killed with SIGKILL `after` the record is taken and started again. Every
/// message reaches her phone at A2 once (by id), in order.
async fn crash_cycle(ips: [[u8; 4]; 3], victim: Victim, after: std::time::Duration) {
    let m = start_move(ips, "handoff_wait_secs = 600\n");
    let Move { a, a2, mut hub_p, mut hub_a, mut hub_a2, .. } = m;
    let bob = hub_p.enrol("bob@home.example", "phone").await;
    let desk = hub_p.enrol("alice@home.example", "desk").await;
    let phone = hub_p.enrol("alice@home.example", "phone").await;
    let _ = at_home(&hub_a, &desk).await;
    let (_, phone_a2) = (at_home(&hub_a, &phone).await, at_home(&hub_a2, &phone).await);
    let operator = hub_p.admin_client();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk", &a, 1)).await, "ok 1");
    link_up(&hub_p, "alice-desk").await;
    let alice: switchboard_protocol::Address = "alice@home.example".parse().unwrap();
    let all = texts("to alice", 40);
    let mut bob_c = connect(&bob).await;
    send_all(&mut bob_c, &alice, &all).await;
    bob_c.close().await;
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk-2", &a2, 2)).await, "ok 2");
    tokio::time::sleep(after).await;
    match victim {
        Victim::Old => hub_a.kill(),
        Victim::Provider => hub_p.kill(),
        Victim::New => hub_a2.kill(),
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    match victim {
        Victim::Old => hub_a.restart(),
        Victim::Provider => hub_p.restart(),
        Victim::New => hub_a2.restart(),
    }
    let mut phone_c = connect(&phone_a2).await;
    let mut seen = std::collections::HashSet::new();
    assert_eq!(new_texts(&mut phone_c, &mut seen, 40).await, all, "{victim:?} after {after:?}");
    nothing_new(&mut phone_c, &mut seen).await;
    phone_c.close().await;
    let admin = hub_p.admin_client();
    let shown = admin.request("GET", "/v1/home?user=alice@home.example", None).await;
    assert_eq!(shown.unwrap()["hub"], "alice-desk-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_of_the_old_the_new_or_the_registration_hub_during_a_hand_off_loses_nothing() {
    let ips = [[127, 0, 0, 47], [127, 0, 0, 48], [127, 0, 0, 49]];
    // One cycle per hub, each at another step: as the old hub takes the notice, while it
    // hands over, and as the new hub takes what was handed over.
    crash_cycle(ips, Victim::Old, std::time::Duration::from_millis(0)).await;
    crash_cycle(ips, Victim::Provider, std::time::Duration::from_millis(150)).await;
    crash_cycle(ips, Victim::New, std::time::Duration::from_millis(400)).await;
}

/// The long loop: every hub at every step, `SWITCHBOARD_HANDOFF_CYCLES` times (default 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 12 crash cycles per round"]
async fn hand_off_crash_loop() {
    let rounds = std::env::var("SWITCHBOARD_HANDOFF_CYCLES").ok().and_then(|n| n.parse().ok());
    let ips = [[127, 0, 0, 50], [127, 0, 0, 51], [127, 0, 0, 52]];
    for _ in 0..rounds.unwrap_or(3) {
        for victim in [Victim::Old, Victim::Provider, Victim::New] {
            for after_ms in [0, 50, 150, 400] {
                crash_cycle(ips, victim, std::time::Duration::from_millis(after_ms)).await;
            }
        }
    }
}

/// A relay of `envelopes` from `fake` as batch `batch`: the reasons of what was refused, by
/// index.
async fn relay(
    fake: &mut FakePeer,
    batch: u64,
    envelopes: Vec<switchboard_protocol::Envelope>,
) -> Vec<(u16, switchboard_protocol::RejectReason)> {
    use switchboard_protocol::{Frame, Relay};
    fake.writer.send(&Frame::Relay(Relay { batch, envelopes })).await.unwrap();
    let Some(Frame::RelayAck(ack)) = fake.reader.next().await.unwrap() else { panic!() };
    assert_eq!(ack.batch, batch);
    ack.rejected.iter().map(|r| (r.index, r.reason)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_off_frames_from_a_hub_that_hands_no_one_over_are_refused_and_change_nothing() {
    use switchboard_protocol::RejectReason;
    let (p, a, x) = (site([127, 0, 0, 53]), site([127, 0, 0, 54]), tempfile::tempdir().unwrap());
    let x_pin = hub_pin(x.path());
    // hub-x, another organisation's hub serving x.example, is a peer of both P and A.
    let peer_x = format!(
        "\n[[peers]]\nname = \"hub-x\"\naddress = \"127.0.0.55:9\"\npin = \"{x_pin}\"\ndomains = [\"x.example\"]\n"
    );
    let provider = format!("[hub]\nname = \"provider\"\ndomains = [\"home.example\"]\n{peer_x}");
    let hub_p = HubProcess::start_at(p.dir.path(), &provider, p.quic, p.admin);
    let desktop = desktop_config("alice-desk", &p) + &peer_x;
    let hub_a = HubProcess::start_at(a.dir.path(), &desktop, a.quic, a.admin);
    let bob = hub_p.enrol("bob@home.example", "phone").await;
    let desk = hub_p.enrol("alice@home.example", "desk").await;
    let desk_a = at_home(&hub_a, &desk).await;
    let operator = hub_p.admin_client();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk", &a, 1)).await, "ok 1");
    link_up(&hub_p, "alice-desk").await;

    let handoff = |from: &str, to: &str, text: &str| {
        let mut envelope = envelope(from, to, text);
        envelope.flags = Flags::HANDOFF;
        envelope
    };
    let mut marker = handoff("alice@home.example", "alice@home.example", "{}");
    marker.flags = Flags::NOTICE | Flags::HANDOFF;
    // A home_changed notice naming hub-x as alice's home, as the registration hub would write.
    let record = home_at(&desk, "hub-x", &a, 2);
    let mut moved = envelope("alice@home.example", "alice@home.example", "");
    moved.flags = Flags::NOTICE;
    moved.body = serde_json::json!({ "notice": "home_changed", "hub": "hub-x", "epoch": 2, "record": record })
        .to_string()
        .into();
    // To the registration hub: a hand-off of alice (nobody is moving), its end marker, and the
    // move notice from a hub that does not serve her domain.
    let mut fake = FakePeer::connect(x.path(), [127, 0, 0, 55], &hub_p, &p.pin).await;
    let batch = vec![
        handoff("xavier@x.example", "alice@home.example", "slipped in"),
        marker.clone(),
        moved.clone(),
    ];
    let refused = relay(&mut fake, 1, batch).await;
    let expected: Vec<_> = (0..3).map(|i| (i, RejectReason::NOT_ALLOWED)).collect();
    assert_eq!(refused, expected);
    // A report of what alice's desk took, from a hub that is not her home hub.
    let taken = switchboard_protocol::Taken {
        device: "alice@home.example/desk".parse().unwrap(),
        from: "bob@home.example".parse().unwrap(),
        id: switchboard_protocol::MessageId(1),
    };
    let frame = switchboard_protocol::RelayTaken { batch: 2, taken: vec![taken] };
    fake.writer.send(&switchboard_protocol::Frame::RelayTaken(frame)).await.unwrap();
    let answer = fake.reader.next().await.unwrap();
    let Some(switchboard_protocol::Frame::RelayAck(ack)) = answer else { panic!("{answer:?}") };
    assert_eq!(
        ack.rejected.iter().map(|r| (r.index, r.reason)).collect::<Vec<_>>(),
        [(0, RejectReason::NOT_ALLOWED)]
    );
    fake.connection.close(0u32.into(), b"done");
    // To her home hub: the same, which would make A hand her over or take entries into her queue.
    let mut fake = FakePeer::connect(x.path(), [127, 0, 0, 55], &hub_a, &a.pin).await;
    let batch =
        vec![handoff("xavier@x.example", "alice@home.example", "slipped in"), marker, moved];
    assert_eq!(relay(&mut fake, 1, batch).await, expected);

    // Nothing changed: her home is A at epoch 1, A takes her sends, and she gets only bob's.
    let shown = operator.request("GET", "/v1/home?user=alice@home.example", None).await.unwrap();
    assert_eq!((shown["hub"].as_str(), shown["epoch"].as_u64()), (Some("alice-desk"), Some(1)));
    let mut bob_c = connect(&bob).await;
    send_all(&mut bob_c, &"alice@home.example".parse().unwrap(), &texts("from bob", 2)).await;
    let mut desk_c = connect(&desk_a).await;
    let mut seen = std::collections::HashSet::new();
    assert_eq!(new_texts(&mut desk_c, &mut seen, 2).await, texts("from bob", 2));
    nothing_new(&mut desk_c, &mut seen).await;
    send_all(&mut desk_c, &"bob@home.example".parse().unwrap(), &texts("from alice", 2)).await;
    assert_eq!(texts_from(&mut bob_c, "alice@home.example", 2).await, texts("from alice", 2));
    desk_c.close().await;
    bob_c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_home_hub_gone_for_good_is_given_up_by_its_user_and_the_next_move_is_taken() {
    let m = start_move([[127, 0, 0, 56], [127, 0, 0, 57], [127, 0, 0, 58]], "");
    let p_dir = m._p.dir.path().to_path_buf();
    let Move { a, a2, hub_p, mut hub_a, hub_a2, .. } = m;
    let bob = hub_p.enrol("bob@home.example", "phone").await;
    let desk = hub_p.enrol("alice@home.example", "desk").await;
    let (_, desk_a2) = (at_home(&hub_a, &desk).await, at_home(&hub_a2, &desk).await);
    let operator = hub_p.admin_client();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk", &a, 1)).await, "ok 1");
    link_up(&hub_p, "alice-desk").await;
    // A dies for good; alice moves to A2, which waits for A's part (an hour by default).
    hub_a.kill();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk-2", &a2, 2)).await, "ok 2");
    let alice: switchboard_protocol::Address = "alice@home.example".parse().unwrap();
    let mut bob_c = connect(&bob).await;
    let after = texts("after the move", 5);
    send_all(&mut bob_c, &alice, &after).await;
    // Bob is not alice: he cannot end her hand-off.
    let body = serde_json::json!({ "user": "alice@home.example" });
    let bobs = hub_p.as_user("bob@home.example").await;
    let refused = bobs.request("POST", "/v1/home/handoff/abandon", Some(body.clone())).await;
    assert!(refused.unwrap_err().to_string().starts_with("403"), "bob ended alice's hand-off");
    // Alice sees the open move, and gives A up: A2 gets the mailbox at once, and she may move
    // again.
    let token = hub_p.token("alice@home.example").await;
    let personal = |command: &str| {
        let admin = hub_p.admin.to_string();
        let args = [command, "alice@home.example", "--registration", &admin, "--token", &token];
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hub"))
            .args(["--data-dir", p_dir.to_str().unwrap(), "personal"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let shown = personal("show");
    assert!(shown.contains("hand-off from alice-desk to alice-desk-2 since"), "{shown}");
    assert!(shown.contains("waiting for the old home hub's part"), "{shown}");
    let given_up = personal("abandon-handoff");
    assert!(given_up.contains("hand-off of alice@home.example from alice-desk is abandoned"));
    assert!(!personal("show").contains("hand-off from"));
    let mut desk_c = connect(&desk_a2).await;
    let mut seen = std::collections::HashSet::new();
    assert_eq!(new_texts(&mut desk_c, &mut seen, 5).await, after);
    let again = operator.request("POST", "/v1/home/handoff/abandon", Some(body)).await;
    assert!(again.unwrap_err().to_string().starts_with("404: no hand-off"));
    let mut third = home_at(&desk, "alice-desk-3", &a2, 3);
    third.address = "127.0.0.59:7447".parse().unwrap();
    third.sign(desk.secret_key.as_slice().try_into().unwrap());
    assert_eq!(post(&operator, &third).await, "ok 3");
    desk_c.close().await;
    bob_c.close().await;
}

/// Alice's mailbox at the provider as `GET /v1/home/mailbox` shows it: the last sequence, and
/// each device's `acked`, by device name.
async fn mailbox(hub: &HubProcess) -> (u64, std::collections::HashMap<String, u64>) {
    let path = "/v1/home/mailbox?user=alice@home.example";
    let shown = hub.admin_client().request("GET", path, None).await.unwrap();
    let devices = shown["devices"].as_array().unwrap().iter();
    let acked = devices
        .map(|d| (d["device"].as_str().unwrap().to_string(), d["acked"].as_u64().unwrap()))
        .collect();
    (shown["last_seq"].as_u64().unwrap(), acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_read_their_mailbox_at_the_registration_hub_while_the_home_hub_is_down() {
    use switchboard_protocol::{Frame, RejectReason, RelayTaken, Taken};
    let (p, a) = (site([127, 0, 0, 60]), site([127, 0, 0, 61]));
    let provider = "[hub]\nname = \"provider\"\ndomains = [\"home.example\"]\n";
    let hub_p = HubProcess::start_at(p.dir.path(), provider, p.quic, p.admin);
    let mut hub_a =
        HubProcess::start_at(a.dir.path(), &desktop_config("alice-desk", &p), a.quic, a.admin);
    let bob = hub_p.enrol("bob@home.example", "phone").await;
    let desk = hub_p.enrol("alice@home.example", "desk").await;
    let laptop = hub_p.enrol("alice@home.example", "laptop").await;
    let laptop_a = at_home(&hub_a, &laptop).await;
    at_home(&hub_a, &desk).await;
    let operator = hub_p.admin_client();
    assert_eq!(post(&operator, &home_at(&desk, "alice-desk", &a, 1)).await, "ok 1");
    link_up(&hub_p, "alice-desk").await;
    link_up(&hub_a, "provider").await;
    let alice: switchboard_protocol::Address = "alice@home.example".parse().unwrap();

    // Three messages reach the laptop at home; the desk, off, takes nothing.
    let mut bob_c = connect(&bob).await;
    let (first, later) = (texts("at home", 3), texts("while home is down", 3));
    send_all(&mut bob_c, &alice, &first).await;
    let mut laptop_c = connect(&laptop_a).await;
    let mut seen = std::collections::HashSet::new();
    assert_eq!(new_texts(&mut laptop_c, &mut seen, 3).await, first);
    // Her home hub tells the provider how far the laptop got: its cursor on the mailbox there
    // follows, to the last message (after the home_changed notice, the mailbox's first entry).
    loop {
        let (last, acked) = mailbox(&hub_p).await;
        assert_eq!(acked["alice@home.example/desk"], 0, "the desk took nothing");
        if last == 4 && acked["alice@home.example/laptop"] == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    laptop_c.close().await;

    // The home hub goes down; what bob sends now waits in the mailbox.
    hub_a.kill();
    send_all(&mut bob_c, &alice, &later).await;
    // The laptop reads the mailbox at the provider: only what it did not take at home, in
    // order, and nothing after (its application has not seen these: a fresh set of ids).
    let mut laptop_p = connect(&laptop).await;
    let mut seen_p = std::collections::HashSet::new();
    assert_eq!(new_texts(&mut laptop_p, &mut seen_p, 3).await, later);
    nothing_new(&mut laptop_p, &mut seen_p).await;
    seen.extend(seen_p);
    // The desk gets everything, in order, from its own cursor.
    let mut desk_p = connect(&desk).await;
    let mut desk_seen = std::collections::HashSet::new();
    let everything: Vec<String> = first.iter().chain(&later).cloned().collect();
    assert_eq!(new_texts(&mut desk_p, &mut desk_seen, 6).await, everything);
    nothing_new(&mut desk_p, &mut desk_seen).await;
    // Sends go through her home hub, not here: refused, with the reason.
    laptop_p.send_text(&"bob@home.example".parse().unwrap(), "via the provider").await.unwrap();
    let refusal = loop {
        match next(&mut laptop_p, 10).await {
            Event::Rejected(rejected) => break rejected,
            Event::Closed { code, reason } => panic!("closed: {code}: {reason}"),
            _ => {}
        }
    };
    assert_eq!(refusal.reason, RejectReason::NOT_ALLOWED);
    assert!(refusal.detail.contains("alice-desk"), "{}", refusal.detail);
    // Bob's device reads only his own queue: alice's mailbox is no queue of his, and an ack of
    // it is refused.
    bob_c.ack(alice.clone(), 1, vec![]).await.unwrap();
    let error = loop {
        match next(&mut bob_c, 10).await {
            Event::Error(error) => break error,
            // The copies of what he sent are his; nothing else is.
            Event::Deliver(deliver) if deliver.envelope.from.as_str() == "bob@home.example" => {}
            Event::Deliver(deliver) => panic!("bob got {:?}", deliver.envelope),
            _ => {}
        }
    };
    assert!(error.text.contains("not a queue this device reads"), "{}", error.text);
    // Nor may bob see it through the admin API; alice may, and a user with no home hub
    // elsewhere has no mailbox.
    let path = "/v1/home/mailbox?user=alice@home.example";
    let refused = hub_p.as_user("bob@home.example").await.request("GET", path, None).await;
    assert!(refused.unwrap_err().to_string().starts_with("403"));
    let shown = hub_p.as_user("alice@home.example").await.request("GET", path, None).await;
    assert_eq!(shown.unwrap()["home"], "alice-desk");
    let none = operator.request("GET", "/v1/home/mailbox?user=bob@home.example", None).await;
    assert!(none.unwrap_err().to_string().starts_with("404"));

    // Progress reports the provider must refuse, from her home hub (its identity, while the
    // real one is down): for a device of another user, and for a device she does not have.
    let taken = |device: &str| Taken {
        device: device.parse().unwrap(),
        from: "bob@home.example".parse().unwrap(),
        id: switchboard_protocol::MessageId(1),
    };
    let before = mailbox(&hub_p).await;
    let mut fake =
        FakePeer::connect_as(a.dir.path(), [127, 0, 0, 61], &hub_p, &p.pin, "alice-desk", &[])
            .await;
    let frame = RelayTaken {
        batch: 1,
        taken: vec![
            taken("bob@home.example/phone"),
            taken("alice@home.example/ghost"),
            taken("alice@home.example/laptop"),
        ],
    };
    fake.writer.send(&Frame::RelayTaken(frame)).await.unwrap();
    let Some(Frame::RelayAck(ack)) = fake.reader.next().await.unwrap() else { panic!() };
    let reasons: Vec<_> = ack.rejected.iter().map(|r| (r.index, r.reason)).collect();
    assert_eq!(
        reasons,
        [(0, RejectReason::NOT_ALLOWED), (1, RejectReason::UNKNOWN_RECIPIENT)],
        "a message the mailbox does not know changes nothing and is no refusal"
    );
    fake.connection.close(0u32.into(), b"done");
    assert_eq!(mailbox(&hub_p).await, before);

    // The home hub is back: it gets what waited (the laptop had it from the provider already
    // and drops it by (from, id)), and the laptop's progress there follows again.
    hub_a.restart();
    let mut laptop_c = connect(&laptop_a).await;
    nothing_new(&mut laptop_c, &mut seen).await;
    send_all(&mut bob_c, &alice, &texts("home again", 1)).await;
    assert_eq!(new_texts(&mut laptop_c, &mut seen, 1).await, texts("home again", 1));
    loop {
        let (last, acked) = mailbox(&hub_p).await;
        if acked["alice@home.example/laptop"] == last {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for client in [laptop_c, laptop_p, desk_p, bob_c] {
        client.close().await;
    }
}
