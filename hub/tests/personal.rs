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
