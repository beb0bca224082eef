//! End to end over real QUIC on 127.0.0.1 against a real `hub` process: devices offline and
//! back, the hub killed with SIGKILL and stopped with SIGTERM, nothing accepted lost or doubled.

mod common;

use std::time::Duration;

use common::*;
use switchboard_hub::client::Event;
use switchboard_protocol::{Address, ReceiptKind};

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_gets_every_message_in_order_exactly_once_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let alice_phone = hub.enrol("alice@example.org", "phone").await;
    let alice_laptop = hub.enrol("alice@example.org", "laptop").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let bob = Address::parse("bob@example.org").unwrap();

    // Bob's phone is offline; Alice's laptop is online.
    let mut laptop = connect(&alice_laptop).await;
    let mut phone = connect(&alice_phone).await;
    let sent = texts("to-bob", 300);
    send_all(&mut phone, &bob, &sent).await;

    // Alice's other device shows the whole conversation.
    assert_eq!(receive(&mut laptop, sent.len()).await, sent);

    // Bob's phone comes online and gets everything, in order, once.
    let mut bob_client = connect(&bob_phone).await;
    assert_eq!(receive(&mut bob_client, sent.len()).await, sent);
    let extra = tokio::time::timeout(Duration::from_millis(300), bob_client.next_event()).await;
    assert!(!matches!(extra, Ok(Some(Event::Deliver(_)))), "a message was delivered twice");

    // Bob acknowledged everything: after a reconnect nothing is delivered again, and a new
    // message continues the sequence.
    bob_client.close().await;
    let mut bob_client = connect(&bob_phone).await;
    send_all(&mut phone, &bob, &["after".to_string()]).await;
    assert_eq!(receive(&mut bob_client, 1).await, ["after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_disconnects_mid_stream_resumes_after_its_last_ack() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let alice_phone = hub.enrol("alice@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let bob = Address::parse("bob@example.org").unwrap();
    let mut alice = connect(&alice_phone).await;
    let sent = texts("m", 100);
    send_all(&mut alice, &bob, &sent).await;

    // Bob takes 40 and drops the connection without a word.
    let mut first = connect(&bob_phone).await;
    let got = receive(&mut first, 40).await;
    assert_eq!(got, sent[..40]);
    // Let the last ack reach the hub before the connection goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);

    let mut second = connect(&bob_phone).await;
    assert_eq!(receive(&mut second, 60).await, sent[40..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_when_the_hub_is_killed_between_send_and_receive() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProcess::start(dir.path());
    let alice_phone = hub.enrol("alice@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let bob = Address::parse("bob@example.org").unwrap();
    let mut alice = connect(&alice_phone).await;
    let sent = texts("durable", 500);
    send_all(&mut alice, &bob, &sent).await;

    hub.kill();
    hub.restart();

    let mut bob_client = connect(&bob_phone).await;
    assert_eq!(receive(&mut bob_client, sent.len()).await, sent);
    let extra = tokio::time::timeout(Duration::from_millis(300), bob_client.next_event()).await;
    assert!(!matches!(extra, Ok(Some(Event::Deliver(_)))), "a message was delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_after_a_kill_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProcess::start(dir.path());
    let alice_phone = hub.enrol("alice@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let bob = Address::parse("bob@example.org").unwrap();
    let alice = connect(&alice_phone).await;
    let envelope = alice.envelope(&bob, bytes::Bytes::from_static(b"once"), Default::default());
    let mut alice = alice;
    alice.send(envelope.clone()).await.unwrap();
    assert!(matches!(next(&mut alice, 10).await, Event::Accepted(_)));
    hub.kill();
    hub.restart();
    // The device did not trust the first answer (say it never arrived) and sends again.
    let mut alice = connect(&alice_phone).await;
    alice.send(envelope.clone()).await.unwrap();
    loop {
        match next(&mut alice, 10).await {
            Event::Accepted(id) => {
                assert_eq!(id, envelope.id);
                break;
            }
            Event::Deliver(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut bob_client = connect(&bob_phone).await;
    assert_eq!(receive(&mut bob_client, 1).await, ["once"]);
    let extra = tokio::time::timeout(Duration::from_millis(300), bob_client.next_event()).await;
    assert!(!matches!(extra, Ok(Some(Event::Deliver(_)))), "the retry was stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_every_accepted_message_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProcess::start(dir.path());
    let alice_phone = hub.enrol("alice@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let bob = Address::parse("bob@example.org").unwrap();
    let mut alice = connect(&alice_phone).await;
    // Send without waiting, then stop the hub while answers are still coming.
    let mut ids = Vec::new();
    for text in texts("t", 200) {
        ids.push(alice.send_text(&bob, &text).await.unwrap());
    }
    // Stop the hub once the first answer is in, with most sends still in flight.
    let mut accepted = std::collections::HashSet::new();
    loop {
        if let Event::Accepted(id) = next(&mut alice, 20).await {
            accepted.insert(id);
            break;
        }
    }
    assert!(hub.terminate(), "the hub did not exit cleanly on SIGTERM");
    let mut closed_with = None;
    while let Some(event) = alice.next_event().await {
        match event {
            Event::Accepted(id) => {
                accepted.insert(id);
            }
            Event::Closed { code, .. } => {
                closed_with = Some(code);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(closed_with, Some(switchboard_protocol::ErrorCode::SHUTTING_DOWN));
    hub.restart();
    let mut bob_client = connect(&bob_phone).await;
    let mut delivered = std::collections::HashSet::new();
    // Every accepted message arrives; unanswered ones may or may not have been kept.
    while delivered.len() < ids.len() {
        match tokio::time::timeout(Duration::from_secs(2), bob_client.next_event()).await {
            Ok(Some(Event::Deliver(deliver))) => {
                assert!(delivered.insert(deliver.envelope.id), "delivered twice");
                bob_client.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    for id in &accepted {
        assert!(delivered.contains(id), "accepted message {id} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_learn_from_a_stateless_reset_that_a_killed_hub_restarted_not_from_their_idle_timeout()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProcess::start(dir.path());
    let bob = Address::parse("bob@example.org").unwrap();
    let mut devices = Vec::new();
    for i in 0..8 {
        let identity = hub.enrol(&format!("u{i}@example.org"), "phone").await;
        devices.push(connect(&identity).await);
    }
    hub.kill();
    hub.restart();
    // Each device sends into its old connection; the restarted hub does not know it and
    // answers with a stateless reset, which the device accepts: its connection ends well
    // before the 30 s idle timeout would end it.
    let started = std::time::Instant::now();
    for client in &mut devices {
        let _ = client.send_text(&bob, "anyone?").await;
    }
    for client in &mut devices {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), client.next_event()).await {
                Ok(Some(Event::Closed { .. })) | Ok(None) => break,
                Ok(Some(_)) => {}
                Err(_) => panic!("a device did not learn of the restart within 15 s"),
            }
        }
    }
    println!("8 devices learnt of the restart in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_gets_a_delivered_receipt_once_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let alice_phone = hub.enrol("alice@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let bob_tablet = hub.enrol("bob@example.org", "tablet").await;
    let bob = Address::parse("bob@example.org").unwrap();
    let mut alice = connect(&alice_phone).await;
    let id = alice.send_text(&bob, "receipt please").await.unwrap();
    // Both of Bob's devices take it.
    let mut phone = connect(&bob_phone).await;
    let mut tablet = connect(&bob_tablet).await;
    assert_eq!(receive(&mut phone, 1).await, ["receipt please"]);
    assert_eq!(receive(&mut tablet, 1).await, ["receipt please"]);
    let mut receipts = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, alice.next_event()).await {
        match event {
            Event::Receipt(receipt) => {
                alice.ack(receipt.queue.clone(), receipt.seq, vec![]).await.unwrap();
                receipts.push(receipt.receipt);
            }
            Event::Deliver(deliver) => alice.ack(deliver.queue, deliver.seq, vec![]).await.unwrap(),
            _ => {}
        }
    }
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0].id, id);
    assert_eq!(receipts[0].kind, ReceiptKind::Delivered);
    assert_eq!(receipts[0].by, bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_other_devices_see_messages_to_many_recipients_in_send_order() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let alice_phone = hub.enrol("alice@example.org", "phone").await;
    let alice_laptop = hub.enrol("alice@example.org", "laptop").await;
    let mut recipients = Vec::new();
    for name in ["bob", "carol", "dave", "erin"] {
        recipients.push(hub.enrol(&format!("{name}@example.org"), "phone").await.account());
    }
    let mut phone = connect(&alice_phone).await;
    // Sends to four recipients (queues on different shards), all in flight at once.
    let mut sent = Vec::new();
    let mut waiting = std::collections::HashSet::new();
    for i in 0..400 {
        let text = format!("x{i:04}");
        waiting.insert(phone.send_text(&recipients[i % 4], &text).await.unwrap());
        sent.push(text);
    }
    while !waiting.is_empty() {
        if let Event::Accepted(id) = next(&mut phone, 20).await {
            waiting.remove(&id);
        }
    }
    let mut laptop = connect(&alice_laptop).await;
    assert_eq!(receive(&mut laptop, sent.len()).await, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_open_connections_and_stored_messages() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let alice_phone = hub.enrol("alice@example.org", "phone").await;
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let admin = hub.admin_client();
    let mut phone = connect(&alice_phone).await;
    let mut bob_client = connect(&bob_phone).await;
    // A session is counted from its accept to its end; the enrolment connections end first.
    let mut connections = 0;
    for _ in 0..50 {
        connections = admin.metrics().await.unwrap().connections;
        if connections == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(connections, 2);
    let before = admin.metrics().await.unwrap();
    let sent = texts("counted", 5);
    send_all(&mut phone, &Address::parse("bob@example.org").unwrap(), &sent).await;
    assert_eq!(receive(&mut bob_client, sent.len()).await, sent);
    let after = admin.metrics().await.unwrap();
    assert!(after.store_enqueued >= before.store_enqueued + 5, "{before:?} -> {after:?}");
    assert!(after.store_batches > before.store_batches);
    // Every message was fsynced before it was accepted.
    assert!(after.store_synced_batches > before.store_synced_batches);
    assert!(after.store_synced_batches <= after.store_batches);
    // New message ids are checked against the store's memory, not its disk.
    assert_eq!(after.store_dedupe_disk_lookups, before.store_dedupe_disk_lookups);
    assert!(after.resident_bytes.is_some_and(|bytes| bytes > 0));
}
