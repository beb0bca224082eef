//! Receipts a device makes, over real QUIC against a real `hub` process: only for messages
//! that reached a device of its user (issue 19: receipt forgery).

mod common;

use std::time::Duration;

use common::*;
use switchboard_hub::client::{Client, Event};
use switchboard_protocol::{Address, ErrorCode, MessageId, Receipt, ReceiptKind};

fn read(id: MessageId, message_from: &str, by: &str) -> Receipt {
    Receipt {
        id,
        kind: ReceiptKind::Read,
        message_from: message_from.parse().unwrap(),
        by: by.parse().unwrap(),
        at_ms: switchboard_hub::store::system_clock_ms(),
    }
}

async fn refused(client: &mut Client) -> String {
    match next(client, 10).await {
        Event::Error(error) => {
            assert_eq!(error.code, ErrorCode::RECEIPT_REFUSED, "{error:?}");
            error.text
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// No receipt reaches `client` within a short wait (what it gets meanwhile is acknowledged).
async fn no_receipt(client: &mut Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Err(_) | Ok(None) => return,
            Ok(Some(Event::Receipt(receipt))) => panic!("a forged receipt arrived: {receipt:?}"),
            Ok(Some(Event::Deliver(d))) => client.ack(d.queue, d.seq, vec![]).await.unwrap(),
            Ok(Some(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_for_a_message_the_user_never_received_is_refused_and_reaches_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let carol_phone = hub.enrol("carol@example.org", "phone").await;
    let alice_phone = hub.enrol("alice@example.org", "phone").await;
    let mut bob = connect(&bob_phone).await;
    let mut carol = connect(&carol_phone).await;

    // An id carol never sent.
    bob.receipt(read(MessageId(0x0123_4567_89ab_cdef), "carol@example.org", "bob@example.org"))
        .await
        .unwrap();
    let text = refused(&mut bob).await;
    assert!(text.contains("carol@example.org"), "{text}");

    // An id carol did send, but to alice: it is in alice's queue, never in bob's.
    let alice = Address::parse("alice@example.org").unwrap();
    let to_alice = carol.send_text(&alice, "for alice only").await.unwrap();
    loop {
        if let Event::Accepted(id) = next(&mut carol, 10).await
            && id == to_alice
        {
            break;
        }
    }
    bob.receipt(read(to_alice, "carol@example.org", "bob@example.org")).await.unwrap();
    refused(&mut bob).await;
    no_receipt(&mut carol).await;

    // Alice did get it, and her receipt goes through.
    let mut alice_client = connect(&alice_phone).await;
    let Event::Deliver(deliver) = next(&mut alice_client, 10).await else { panic!("no delivery") };
    assert_eq!(deliver.envelope.id, to_alice);
    alice_client.receipt(read(to_alice, "carol@example.org", "alice@example.org")).await.unwrap();
    loop {
        match next(&mut carol, 10).await {
            Event::Receipt(receipt) => {
                assert_eq!(receipt.receipt.id, to_alice);
                assert_eq!(receipt.receipt.kind, ReceiptKind::Read);
                break;
            }
            Event::Deliver(d) => carol.ack(d.queue, d.seq, vec![]).await.unwrap(),
            _ => {}
        }
    }
    // The session that was refused goes on: bob can still send.
    let sent = bob.send_text(&alice, "still here").await.unwrap();
    loop {
        if let Event::Accepted(id) = next(&mut bob, 10).await
            && id == sent
        {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_from_another_device_of_the_user_that_took_the_message_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let carol_phone = hub.enrol("carol@example.org", "phone").await;
    let mut carol = connect(&carol_phone).await;
    let bob = Address::parse("bob@example.org").unwrap();
    let id = carol.send_text(&bob, "hello bob").await.unwrap();
    // Bob's phone takes it and acknowledges it.
    let mut phone = connect(&bob_phone).await;
    let Event::Deliver(deliver) = next(&mut phone, 10).await else { panic!("no delivery") };
    assert_eq!(deliver.envelope.id, id);
    phone.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
    phone.close().await;
    // A laptop enrolled afterwards never got it (the phone took it; nothing was left), but it
    // is bob's: his person read the message on the phone and marks it read on the laptop.
    let bob_laptop = hub.enrol("bob@example.org", "laptop").await;
    let laptop = connect(&bob_laptop).await;
    laptop.receipt(read(id, "carol@example.org", "bob@example.org")).await.unwrap();
    loop {
        match next(&mut carol, 10).await {
            Event::Receipt(receipt) if receipt.receipt.kind == ReceiptKind::Read => {
                assert_eq!(receipt.receipt.id, id);
                break;
            }
            Event::Receipt(receipt) => carol.ack(receipt.queue, receipt.seq, vec![]).await.unwrap(),
            Event::Deliver(d) => carol.ack(d.queue, d.seq, vec![]).await.unwrap(),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_receipt_made_by_a_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let bob_phone = hub.enrol("bob@example.org", "phone").await;
    let carol_phone = hub.enrol("carol@example.org", "phone").await;
    let mut carol = connect(&carol_phone).await;
    let bob = Address::parse("bob@example.org").unwrap();
    let id = carol.send_text(&bob, "hello bob").await.unwrap();
    let mut phone = connect(&bob_phone).await;
    let Event::Deliver(deliver) = next(&mut phone, 10).await else { panic!("no delivery") };
    assert_eq!(deliver.envelope.id, id);
    // Not acknowledged yet, so the hub has made no delivered receipt; the device cannot
    // make one in its place.
    let mut delivered = read(id, "carol@example.org", "bob@example.org");
    delivered.kind = ReceiptKind::Delivered;
    phone.receipt(delivered).await.unwrap();
    let text = refused(&mut phone).await;
    assert!(text.contains("delivered"), "{text}");
    no_receipt(&mut carol).await;
}
