//! Limits per source address over real QUIC: connections held at once, new connections per
//! second, and failed enrolments per address and per account. Each client endpoint binds a
//! loopback address of its own (127.0.0.93 to .96), which the hub sees as the source.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::*;
use switchboard_hub::client::{Client, ClientError, DeviceIdentity, client_endpoint_at};
use switchboard_protocol::{Address, ErrorCode};

fn endpoint(last: u8) -> quinn::Endpoint {
    client_endpoint_at(SocketAddr::from(([127, 0, 0, last], 0))).unwrap()
}

fn identity(hub: &HubProcess, name: &str) -> DeviceIdentity {
    DeviceIdentity::generate(Address::parse(name).unwrap(), hub.quic, hub.cert.clone()).unwrap()
}

/// Connects, trying again for up to five seconds (a closed connection frees its place when
/// the hub's task for it has ended).
async fn connect_soon(endpoint: &quinn::Endpoint, identity: &DeviceIdentity) -> Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect(endpoint, identity, None).await {
            Ok(client) => return client,
            Err(error) if Instant::now() > deadline => panic!("not admitted again: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_past_its_connection_cap_is_refused_and_other_addresses_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[limits]\nconnections_per_address = 3\n";
    let hub = HubProcess::start_configured(dir.path(), config);
    let alice = hub.enrol("alice@example.org", "phone").await;
    let a = endpoint(93);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(&a, &alice, None).await.unwrap());
    }
    match Client::connect(&a, &alice, None).await {
        Err(ClientError::Connect(text)) => assert!(text.contains("refused"), "{text}"),
        other => panic!("a fourth connection from one address: {:?}", other.map(|_| ())),
    }
    // Another address is not affected, and the held sessions still work.
    let b = endpoint(94);
    let other = Client::connect(&b, &alice, None).await.unwrap();
    let bob = hub.enrol("bob@example.org", "phone").await;
    let to_bob = Address::parse("bob@example.org").unwrap();
    send_all(&mut held[0], &to_bob, &["still here".to_string()]).await;
    let mut bob = connect(&bob).await;
    assert_eq!(receive(&mut bob, 1).await, ["still here"]);
    // A closed connection frees its place.
    held.pop().unwrap().close().await;
    let again = connect_soon(&a, &alice).await;
    again.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_past_an_address_rate_are_refused_until_its_bucket_refills() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        "[limits]\nconnections_per_second_per_address = 1\nconnection_burst_per_address = 2\n";
    let hub = HubProcess::start_configured(dir.path(), config);
    let alice = hub.enrol("alice@example.org", "phone").await;
    let a = endpoint(95);
    // Two connections spend the burst; a third within the same second must be refused. On a
    // machine too slow to make three handshakes within a second, wait for the bucket to fill
    // and try again.
    for attempt in 1.. {
        let started = Instant::now();
        for _ in 0..2 {
            Client::connect(&a, &alice, None).await.unwrap().close().await;
        }
        let asked = started.elapsed();
        // Closing connections gives nothing back; only time does.
        let third = Client::connect(&a, &alice, None).await;
        if asked < Duration::from_millis(900) {
            assert!(matches!(third, Err(ClientError::Connect(_))), "a third within a second");
            let again = connect_soon(&a, &alice).await;
            assert!(started.elapsed() >= Duration::from_secs(1), "admitted before a refill");
            again.close().await;
            return;
        }
        assert!(attempt < 5, "never three handshakes within a second");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_enrolments_lock_out_the_account_and_the_address_even_with_the_right_code() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        "[limits]\nenrolment_failures_per_account = 3\nenrolment_failures_per_address = 4\n";
    let hub = HubProcess::start_configured(dir.path(), config);
    let admin = hub.admin_client();
    let alice_code = admin.add_user("alice@example.org").await.unwrap().code;
    let carol_code = admin.add_user("carol@example.org").await.unwrap().code;
    let dave_code = admin.add_user("dave@example.org").await.unwrap().code;
    let (a, b) = (endpoint(96), endpoint(97));
    let refused = |result: Result<Client, ClientError>| match result {
        Err(ClientError::Refused { code, reason }) => {
            assert_eq!(code, ErrorCode::ENROLMENT_REFUSED);
            reason
        }
        other => panic!("admitted: {:?}", other.map(|_| ())),
    };
    // Three guesses for alice from address a.
    for guess in ["AAAA-AAAA-AAAA-AAAA", "BBBB-BBBB-BBBB-BBBB", "CCCC-CCCC-CCCC-CCCC"] {
        let device = identity(&hub, "alice@example.org/laptop");
        let reason = refused(Client::connect(&a, &device, Some(guess)).await);
        assert!(!reason.contains("too many"), "{reason}");
    }
    // Now her right code is refused too, from any address: her account is locked out.
    let device = identity(&hub, "alice@example.org/laptop");
    let reason = refused(Client::connect(&b, &device, Some(&alice_code)).await);
    assert!(reason.contains("too many failed enrolment attempts"), "{reason}");
    // One more failure from a (for carol) makes four: address a is locked out for everyone,
    // while carol's account (one failure) is not, from b.
    let carol = identity(&hub, "carol@example.org/phone");
    refused(Client::connect(&a, &carol, Some("DDDD-DDDD-DDDD-DDDD")).await);
    let dave = identity(&hub, "dave@example.org/phone");
    let reason = refused(Client::connect(&a, &dave, Some(&dave_code)).await);
    assert!(reason.contains("too many failed enrolment attempts"), "{reason}");
    Client::connect(&b, &carol, Some(&carol_code)).await.unwrap().close().await;
    Client::connect(&b, &dave, Some(&dave_code)).await.unwrap().close().await;
    // The lock-out refused alice's code without spending it.
    assert!(admin.devices(Some("alice@example.org")).await.unwrap().is_empty());
}

/// A QUIC connection through TLS to the hub that opens no stream: it holds a handshake slot
/// until the hub's handshake timeout.
async fn silent_connection(hub: &HubProcess) -> quinn::Connection {
    use switchboard_hub::net::{endpoint, tls};
    let client = switchboard_hub::client::client_endpoint().unwrap();
    let crypto = tls::client_crypto(hub.cert.clone()).unwrap();
    let mut config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
    config.transport_config(endpoint::transport(Duration::from_secs(30), None, true));
    client.connect_with(config, hub.quic, "localhost").unwrap().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_handshakes_in_progress_are_refused_until_one_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[quic]\nmax_handshakes = 2\nhandshake_timeout_secs = 4\n";
    let hub = HubProcess::start_configured(dir.path(), config);
    let alice = hub.enrol("alice@example.org", "phone").await;
    let operator = hub.admin_client();
    // Welcomed sessions hold no slot: more of them than the limit connect one after another.
    let mut welcomed = Vec::new();
    for _ in 0..4 {
        welcomed.push(connect(&alice).await);
    }
    assert_eq!(operator.metrics().await.unwrap().handshakes, 0);
    // Two connections that never say hello hold both slots; the next one is refused before
    // its TLS handshake.
    let silent = [silent_connection(&hub).await, silent_connection(&hub).await];
    assert_eq!(operator.metrics().await.unwrap().handshakes, 2);
    match Client::connect(&client_endpoint_at(([127, 0, 0, 1], 0).into()).unwrap(), &alice, None)
        .await
    {
        Err(ClientError::Connect(text)) => assert!(text.contains("refused"), "{text}"),
        other => panic!("a third handshake at once: {:?}", other.map(|_| ())),
    }
    assert_eq!(operator.metrics().await.unwrap().handshakes_refused, 1);
    // The silent ones are closed at the handshake timeout, which frees their slots.
    for connection in &silent {
        let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed()).await;
        assert!(closed.is_ok(), "a silent connection outlived the handshake timeout");
    }
    let again =
        connect_soon(&client_endpoint_at(([127, 0, 0, 1], 0).into()).unwrap(), &alice).await;
    let metrics = operator.metrics().await.unwrap();
    assert_eq!((metrics.handshakes, metrics.handshakes_refused), (0, 1));
    // The sessions welcomed before all went on.
    let bob = hub.enrol("bob@example.org", "phone").await;
    let to_bob = Address::parse("bob@example.org").unwrap();
    send_all(&mut welcomed[3], &to_bob, &["still here".to_string()]).await;
    let mut bob = connect(&bob).await;
    assert_eq!(receive(&mut bob, 1).await, ["still here"]);
    again.close().await;
}
