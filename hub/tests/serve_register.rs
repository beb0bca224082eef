//! Devices registered in bulk by the operator (`POST /v1/devices`): no enrolment codes, one
//! result per device, bad entries refused one by one.

mod common;

use common::{HubProcess, connect, receive, send_all};
use switchboard_hub::{
    admin::{DeviceKey, MAX_REGISTER, hex},
    client::admin::AdminError,
    client::{Client, DeviceIdentity, client_endpoint},
};
use switchboard_protocol::Address;

fn identity(hub: &HubProcess, name: &str) -> DeviceIdentity {
    DeviceIdentity::generate(Address::parse(name).unwrap(), hub.quic, hub.cert.clone()).unwrap()
}

fn key_of(identity: &DeviceIdentity) -> DeviceKey {
    DeviceKey {
        name: identity.address.as_str().to_string(),
        public_key: hex(&identity.public_key()),
        kind: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_registered_in_bulk_connect_without_codes_and_bad_entries_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let admin = hub.admin_client();
    admin.add_user("bob@example.org").await.unwrap();

    let bob = identity(&hub, "bob@example.org/phone");
    let carol = identity(&hub, "carol@example.org/laptop");
    let bob_again = identity(&hub, "bob@example.org/phone");
    let entries = vec![
        key_of(&bob),
        key_of(&carol),
        key_of(&bob_again),
        DeviceKey {
            name: "bob@example.org".into(),
            public_key: hex(&bob.public_key()),
            kind: None,
        },
        DeviceKey {
            name: "bob@example.org/tablet".into(),
            public_key: "zz".repeat(32),
            kind: None,
        },
        DeviceKey { name: "bob@example.org/watch".into(), public_key: "ab".into(), kind: None },
    ];
    let answer = admin.register_devices(&entries, true).await.unwrap();
    let statuses: Vec<Option<u16>> = answer.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [None, None, Some(409), Some(400), Some(400), Some(400)]);
    assert_eq!(answer.registered, 2);
    let names: Vec<&str> = answer.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>());
    let record = answer.results[0].device.as_ref().unwrap();
    assert_eq!(
        (record.name.as_str(), record.public_key),
        ("bob@example.org/phone", bob.public_key())
    );
    assert!(answer.results[2].error.as_deref().unwrap().contains("already exists"));

    // Without add_users an unknown user is refused, and nothing of it is made.
    let dave = identity(&hub, "dave@example.org/phone");
    let answer = admin.register_devices(&[key_of(&dave)], false).await.unwrap();
    assert_eq!((answer.registered, answer.results[0].status), (0, Some(404)));
    assert!(admin.users().await.unwrap().iter().all(|u| u.name != "dave@example.org"));

    // The registered devices connect with their keys alone and exchange messages; the device
    // whose registration was refused as a duplicate is not let in with its other key.
    let mut bob_client = connect(&bob).await;
    let mut carol_client = connect(&carol).await;
    let texts = vec!["one".to_string(), "two".to_string()];
    send_all(&mut carol_client, &bob.account(), &texts).await;
    assert_eq!(receive(&mut bob_client, 2).await, texts);
    let endpoint = client_endpoint().unwrap();
    assert!(Client::connect(&endpoint, &bob_again, None).await.is_err());
    assert!(Client::connect(&endpoint, &dave, None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_of_more_devices_than_allowed_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let admin = hub.admin_client();
    let one = key_of(&identity(&hub, "erin@example.org/phone"));
    let too_many = vec![one; MAX_REGISTER + 1];
    match admin.register_devices(&too_many, true).await {
        Err(AdminError::Api { status: 400, message }) => assert!(message.contains("at most")),
        other => panic!("expected a 400, got {other:?}"),
    }
    assert!(admin.users().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_devices_register_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let admin = hub.admin_client();
    let identities: Vec<DeviceIdentity> =
        (0..3_000).map(|i| identity(&hub, &format!("u{}@example.org/d{}", i / 2, i % 2))).collect();
    let keys: Vec<DeviceKey> = identities.iter().map(key_of).collect();
    let answer = admin.register_devices(&keys, true).await.unwrap();
    assert_eq!(answer.registered, 3_000, "{:?}", answer.results.iter().find(|r| r.error.is_some()));
    assert_eq!(admin.users().await.unwrap().len(), 1_500);
    assert_eq!(admin.devices(None).await.unwrap().len(), 3_000);
    // Both devices of one user read its queue.
    let mut first = connect(&identities[10]).await;
    let mut second = connect(&identities[11]).await;
    let mut sender = connect(&identities[0]).await;
    let texts = vec!["to both".to_string()];
    send_all(&mut sender, &identities[10].account(), &texts).await;
    assert_eq!(receive(&mut first, 1).await, texts);
    assert_eq!(receive(&mut second, 1).await, texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_adding_the_same_users_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let admin = hub.admin_client();
    let keys = |device: &str| -> Vec<DeviceKey> {
        (0..2_000).map(|u| key_of(&identity(&hub, &format!("u{u}@example.org/{device}")))).collect()
    };
    let (phones, laptops) = (keys("phone"), keys("laptop"));
    let (a, b) =
        tokio::join!(admin.register_devices(&phones, true), admin.register_devices(&laptops, true));
    let (a, b) = (a.unwrap(), b.unwrap());
    let refused = a.results.iter().chain(&b.results).find(|r| r.error.is_some());
    assert_eq!((a.registered, b.registered), (2_000, 2_000), "{refused:?}");
    assert_eq!(admin.users().await.unwrap().len(), 2_000);
    assert_eq!(admin.devices(None).await.unwrap().len(), 4_000);
}
