//! Bad input against a real hub over real QUIC: each offender gets its error, and the hub goes
//! on serving everyone else.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use switchboard_hub::{
    client::{Client, ClientError, DeviceIdentity, Event, client_endpoint},
    net::{
        endpoint,
        framed::{FrameReader, FrameWriter},
        tls,
    },
};
use switchboard_protocol::{
    Address, ErrorCode, Frame, Hello, MessageId, Proof, RejectReason, Send, proof_message,
};

/// A raw session: QUIC connected and the stream open, nothing sent yet.
async fn raw(hub: &HubProcess) -> (quinn::Connection, FrameWriter, FrameReader) {
    let endpoint = client_endpoint().unwrap();
    let mut config =
        quinn::ClientConfig::new(Arc::new(tls::client_crypto(hub.cert.clone()).unwrap()));
    config.transport_config(endpoint::transport(Duration::from_secs(10), None, true));
    let connection = endpoint.connect_with(config, hub.quic, "localhost").unwrap().await.unwrap();
    let (send, recv) = connection.open_bi().await.unwrap();
    (connection, FrameWriter::new(send, 1 << 20), FrameReader::new(recv, 1 << 20))
}

/// Reads frames until a `close`; returns its code.
async fn close_code(reader: &mut FrameReader) -> ErrorCode {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Ok(Some(Frame::Close(close)))) => return close.code,
            Ok(Ok(Some(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// The hub still carries a message from a fresh sender to a fresh recipient.
async fn still_serving(hub: &HubProcess, tag: &str) {
    let sender = hub.enrol(&format!("s-{tag}@example.org"), "d").await;
    let recipient = hub.enrol(&format!("r-{tag}@example.org"), "d").await;
    let mut s = connect(&sender).await;
    let to = recipient.account();
    send_all(&mut s, &to, &["still here".to_string()]).await;
    let mut r = connect(&recipient).await;
    assert_eq!(receive(&mut r, 1).await, ["still here"]);
}

fn sample_envelope(from: &str) -> switchboard_protocol::Envelope {
    switchboard_protocol::Envelope {
        id: MessageId(1),
        from: Address::parse(from).unwrap(),
        to: Address::parse("bob@example.org").unwrap(),
        created_ms: 0,
        ttl_secs: 0,
        flags: Default::default(),
        body: bytes::Bytes::from_static(b"x"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_before_authentication_is_closed_with_unexpected_frame() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let (_connection, mut writer, mut reader) = raw(&hub).await;
    writer.send(&Send { envelope: sample_envelope("mallory@example.org") }.into()).await.unwrap();
    assert_eq!(close_code(&mut reader).await, ErrorCode::UNEXPECTED_FRAME);
    still_serving(&hub, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_closed_with_authentication_failed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let alice = hub.enrol("alice@example.org", "phone").await;
    let (_connection, mut writer, mut reader) = raw(&hub).await;
    let hello = Hello {
        device: alice.address.clone(),
        public_key: alice.public_key(),
        enrolment_code: None,
        agent: "test".into(),
    };
    writer.send(&hello.into()).await.unwrap();
    let Ok(Some(Frame::Challenge(challenge))) = reader.next().await else { panic!("no challenge") };
    // Sign with another key: right message, wrong signer.
    let impostor =
        DeviceIdentity::generate(alice.address.clone(), hub.quic, hub.cert.clone()).unwrap();
    let other = {
        use ed25519_dalek::Signer;
        let key = ed25519_dalek::SigningKey::from_bytes(
            impostor.secret_key.as_slice().try_into().unwrap(),
        );
        key.sign(&proof_message(&challenge.nonce, &alice.address)).to_bytes()
    };
    writer.send(&Proof { signature: other }.into()).await.unwrap();
    assert_eq!(close_code(&mut reader).await, ErrorCode::AUTHENTICATION_FAILED);

    // An impostor with its own key pair and no code fails too, through the client library.
    let endpoint = client_endpoint().unwrap();
    match Client::connect(&endpoint, &impostor, None).await {
        Err(ClientError::Refused { code, .. }) => {
            assert_eq!(code, ErrorCode::AUTHENTICATION_FAILED)
        }
        other => panic!("impostor admitted: {:?}", other.map(|_| ())),
    }
    // The real device still connects.
    let client = connect(&alice).await;
    client.close().await;
    still_serving(&hub, "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_code_and_a_revoked_device_are_refused_and_revocation_closes_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let admin = hub.admin_client();
    let added = admin.add_user("carol@example.org").await.unwrap();
    let endpoint = client_endpoint().unwrap();
    let first = DeviceIdentity::generate(
        Address::parse("carol@example.org/a").unwrap(),
        hub.quic,
        hub.cert.clone(),
    )
    .unwrap();
    Client::connect(&endpoint, &first, Some(&added.code)).await.unwrap().close().await;
    let second = DeviceIdentity::generate(
        Address::parse("carol@example.org/b").unwrap(),
        hub.quic,
        hub.cert.clone(),
    )
    .unwrap();
    match Client::connect(&endpoint, &second, Some(&added.code)).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::ENROLMENT_REFUSED),
        other => panic!("spent code admitted: {:?}", other.map(|_| ())),
    }

    let mut live = connect(&first).await;
    admin.revoke("carol@example.org/a").await.unwrap();
    match next(&mut live, 10).await {
        Event::Closed { code, .. } => assert_eq!(code, ErrorCode::DEVICE_REVOKED),
        other => panic!("session not closed: {other:?}"),
    }
    match Client::connect(&endpoint, &first, None).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::DEVICE_REVOKED),
        other => panic!("revoked device admitted: {:?}", other.map(|_| ())),
    }
    still_serving(&hub, "c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_is_closed_with_frame_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let alice = hub.enrol("alice@example.org", "phone").await;
    let mut client = connect(&alice).await;
    // A header announcing a 16 MiB payload: refused from the header alone.
    let mut header = vec![1u8, 0x10];
    header.extend_from_slice(&(16u32 << 20).to_be_bytes());
    client.send_raw(&header).await.unwrap();
    match next(&mut client, 10).await {
        Event::Closed { code, .. } => assert_eq!(code, ErrorCode::FRAME_TOO_LARGE),
        other => panic!("not closed: {other:?}"),
    }
    still_serving(&hub, "d").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_message_limit_is_rejected_too_large_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let alice = hub.enrol("alice@example.org", "phone").await;
    hub.enrol("bob@example.org", "phone").await;
    let mut client = connect(&alice).await;
    let bob = Address::parse("bob@example.org").unwrap();
    let big = client.envelope(&bob, bytes::Bytes::from(vec![7u8; 600 << 10]), Default::default());
    client.send(big).await.unwrap();
    match next(&mut client, 10).await {
        Event::Rejected(rejected) => assert_eq!(rejected.reason, RejectReason::TOO_LARGE),
        other => panic!("not rejected: {other:?}"),
    }
    // Unknown recipients and a forged sender get their own reasons; the session goes on.
    let nobody = Address::parse("nobody@example.org").unwrap();
    let id = client.send_text(&nobody, "hello?").await.unwrap();
    match next(&mut client, 10).await {
        Event::Rejected(rejected) => {
            assert_eq!((rejected.id, rejected.reason), (id, RejectReason::UNKNOWN_RECIPIENT));
        }
        other => panic!("not rejected: {other:?}"),
    }
    client.send(sample_envelope("bob@example.org")).await.unwrap();
    match next(&mut client, 10).await {
        Event::Rejected(rejected) => assert_eq!(rejected.reason, RejectReason::INVALID_ENVELOPE),
        other => panic!("not rejected: {other:?}"),
    }
    send_all(&mut client, &bob, &["fine".to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_close_the_session_with_an_error_and_harm_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    // Before authentication: a wrong version byte.
    let (_connection, mut writer, mut reader) = raw(&hub).await;
    writer.write_raw(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(close_code(&mut reader).await, ErrorCode::UNSUPPORTED_VERSION);
    // After authentication: a right header with a payload that is not a frame of its type.
    let alice = hub.enrol("alice@example.org", "phone").await;
    let mut client = connect(&alice).await;
    client.send_raw(&[1, 0x14, 0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    match next(&mut client, 10).await {
        Event::Error(error) => assert_eq!(error.code, ErrorCode::MALFORMED),
        other => panic!("no error frame: {other:?}"),
    }
    // A malformed payload skips one frame only: the session still works.
    hub.enrol("bob@example.org", "phone").await;
    send_all(&mut client, &Address::parse("bob@example.org").unwrap(), &["ok".into()]).await;
    still_serving(&hub, "e").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_acks_gets_its_window_and_no_more_while_others_flow() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let alice = hub.enrol("alice@example.org", "phone").await;
    let stuck = hub.enrol("bob@example.org", "stuck").await;
    let healthy = hub.enrol("bob@example.org", "healthy").await;
    let carol = hub.enrol("carol@example.org", "phone").await;
    let window = 256; // the default delivery window
    let mut sender = connect(&alice).await;
    let bob = Address::parse("bob@example.org").unwrap();
    let sent: Vec<String> = (0..(window + 200)).map(|i| format!("n{i}")).collect();
    send_all(&mut sender, &bob, &sent).await;
    // The stuck device connects with the whole backlog waiting, and never acks.
    let mut stuck_client = connect(&stuck).await;

    // Another device of the same user and another user are not held back.
    let mut healthy_client = connect(&healthy).await;
    assert_eq!(receive(&mut healthy_client, sent.len()).await, sent);
    let mut carol_client = connect(&carol).await;
    send_all(&mut sender, &carol.account(), &["for carol".into()]).await;
    assert_eq!(receive(&mut carol_client, 1).await, ["for carol"]);

    // The stuck device got exactly its window.
    let mut got = 0;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), stuck_client.next_event()).await
    {
        if matches!(event, Event::Deliver(_)) {
            got += 1;
        }
    }
    assert_eq!(got, window);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_past_the_send_credit_is_closed_with_flow_control() {
    let dir = tempfile::tempdir().unwrap();
    // A credit of 4 and a burst of 400 sends in one write: the hub reads far more than 4 before
    // the first group commit can answer any.
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, "[delivery]\nsend_credit = 4\n").unwrap();
    let data = dir.path().join("data");
    let hub = HubProcess::start_with(&data, &["--config", config.to_str().unwrap()]);
    let alice = hub.enrol("alice@example.org", "phone").await;
    hub.enrol("bob@example.org", "phone").await;
    let (_connection, mut writer, mut reader) = raw(&hub).await;
    let hello = Hello {
        device: alice.address.clone(),
        public_key: alice.public_key(),
        enrolment_code: None,
        agent: "test".into(),
    };
    writer.send(&hello.into()).await.unwrap();
    let Ok(Some(Frame::Challenge(challenge))) = reader.next().await else { panic!("no challenge") };
    let signature = {
        use ed25519_dalek::Signer;
        let key =
            ed25519_dalek::SigningKey::from_bytes(alice.secret_key.as_slice().try_into().unwrap());
        key.sign(&proof_message(&challenge.nonce, &alice.address)).to_bytes()
    };
    writer.send(&Proof { signature }.into()).await.unwrap();
    let Ok(Some(Frame::Welcome(welcome))) = reader.next().await else { panic!("no welcome") };
    // Far more sends than the credit, in one burst, without reading an answer.
    assert_eq!(welcome.send_credit, 4);
    for i in 0..400u32 {
        let mut envelope = sample_envelope("alice@example.org");
        envelope.id = MessageId(u128::from(i) + 1);
        writer.push(&Send { envelope }.into()).unwrap();
    }
    writer.flush().await.unwrap();
    assert_eq!(close_code(&mut reader).await, ErrorCode::FLOW_CONTROL);
    still_serving(&hub, "f").await;
}

/// A hub with a configuration file holding `toml`.
fn hub_with(dir: &tempfile::TempDir, toml: &str) -> HubProcess {
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, toml).unwrap();
    HubProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()])
}

/// Waits for the answer to `id`.
async fn answer(client: &mut Client, id: MessageId) -> Result<(), RejectReason> {
    loop {
        match next(client, 10).await {
            Event::Accepted(done) if done == id => return Ok(()),
            Event::Rejected(rejected) if rejected.id == id => return Err(rejected.reason),
            Event::Closed { code, reason } => panic!("closed: {code}: {reason}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_past_the_rate_are_rejected_rate_limited_and_later_ones_pass() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with(&dir, "[limits]\nsends_per_second = 2\nsend_burst = 2\n");
    let alice = hub.enrol("alice@example.org", "phone").await;
    let bob = hub.enrol("bob@example.org", "phone").await.account();
    let mut client = connect(&alice).await;
    let mut outcomes = Vec::new();
    for i in 0..4 {
        let id = client.send_text(&bob, &format!("r{i}")).await.unwrap();
        outcomes.push(answer(&mut client, id).await);
    }
    // The burst of 2 passes; the next two, sent within the same second, do not.
    assert_eq!(outcomes[..2], [Ok(()), Ok(())]);
    assert_eq!(outcomes[2..], [Err(RejectReason::RATE_LIMITED), Err(RejectReason::RATE_LIMITED)]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let id = client.send_text(&bob, "later").await.unwrap();
    assert_eq!(answer(&mut client, id).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_recipient_queue_is_rejected_backlog_full_until_it_drains() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with(&dir, "[store]\nbacklog_limit = 3\n");
    let alice = hub.enrol("alice@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let bob = bob_phone.account();
    let mut client = connect(&alice).await;
    for i in 0..3 {
        let id = client.send_text(&bob, &format!("b{i}")).await.unwrap();
        assert_eq!(answer(&mut client, id).await, Ok(()));
    }
    let id = client.send_text(&bob, "one too many").await.unwrap();
    assert_eq!(answer(&mut client, id).await, Err(RejectReason::RECIPIENT_BACKLOG_FULL));
    // Bob takes and acknowledges what is there; the queue has room again.
    let mut bob_client = connect(&bob_phone).await;
    assert_eq!(receive(&mut bob_client, 3).await, ["b0", "b1", "b2"]);
    let mut accepted = false;
    for _ in 0..50 {
        let id = client.send_text(&bob, "fits now").await.unwrap();
        if answer(&mut client, id).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // the last ack is still committing
    }
    assert!(accepted);
    assert_eq!(receive(&mut bob_client, 1).await, ["fits now"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_for_a_full_recipient_never_shows_on_the_senders_other_devices() {
    let dir = tempfile::tempdir().unwrap();
    // One shard: the recipient's queue and the sender's copy are written together.
    let hub = hub_with(&dir, "[store]\nbacklog_limit = 3\nshards = 1\n");
    let alice = hub.enrol("alice@example.org", "phone").await;
    let alice_laptop = hub.enrol("alice@example.org", "laptop").await;
    let carol = hub.enrol("carol@example.org", "phone").await;
    let bob = hub.enrol("bob@example.org", "phone").await.account();
    let dave = hub.enrol("dave@example.org", "phone").await.account();
    // Carol fills bob's queue; alice's own queue is empty.
    let mut carol_c = connect(&carol).await;
    for i in 0..3 {
        let id = carol_c.send_text(&bob, &format!("c{i}")).await.unwrap();
        assert_eq!(answer(&mut carol_c, id).await, Ok(()));
    }
    let mut client = connect(&alice).await;
    let id = client.send_text(&bob, "refused").await.unwrap();
    assert_eq!(answer(&mut client, id).await, Err(RejectReason::RECIPIENT_BACKLOG_FULL));
    let id = client.send_text(&dave, "taken").await.unwrap();
    assert_eq!(answer(&mut client, id).await, Ok(()));
    // Her laptop shows what was accepted, and nothing of the refused one.
    let mut laptop = connect(&alice_laptop).await;
    assert_eq!(receive(&mut laptop, 1).await, ["taken"]);
    let more = tokio::time::timeout(Duration::from_millis(500), laptop.next_event()).await;
    assert!(more.is_err(), "{more:?}");
}
