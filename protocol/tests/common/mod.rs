//! Strategies and samples shared by the protocol's integration tests.
#![allow(dead_code, unreachable_pub)] // each test file uses a different part of this module

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use switchboard_protocol::*;

pub fn addr(text: &str) -> Address {
    Address::parse(text).unwrap()
}

pub fn envelope(body: &'static [u8]) -> Envelope {
    Envelope {
        id: MessageId::from_parts(1_763_900_000_000, 42),
        from: addr("alice@example.org"),
        to: addr("sales@example.org"),
        created_ms: 1_763_900_000_000,
        ttl_secs: 86_400,
        flags: Flags::WANT_RECEIPTS | Flags::AS_LINE,
        body: Bytes::from_static(body),
    }
}

/// One sample of every frame type, in [`FrameType::ALL`] order.
pub fn sample_frames() -> Vec<Frame> {
    vec![
        Hello {
            device: addr("alice@example.org/laptop"),
            public_key: [7; 32],
            enrolment_code: Some("K7QX-22PL-9WZT".into()),
            agent: "switchboard-cli/0.1".into(),
        }
        .into(),
        Challenge { nonce: [9; 32] }.into(),
        Proof { signature: [3; 64] }.into(),
        Welcome {
            session_id: 77,
            server_time_ms: 1_763_900_000_123,
            max_payload: 1 << 20,
            send_credit: 64,
            window: 256,
            idle_timeout_ms: 30_000,
        }
        .into(),
        Ping { nonce: 5 }.into(),
        Pong { nonce: 5 }.into(),
        ErrorFrame { code: ErrorCode::FLOW_CONTROL, text: "sent past credit".into() }.into(),
        Close { code: ErrorCode::SHUTTING_DOWN, reason: "hub stopping".into() }.into(),
        Send { envelope: envelope(b"hello bob") }.into(),
        Accepted { id: MessageId(1) }.into(),
        Rejected {
            id: MessageId(2),
            reason: RejectReason::NOT_ALLOWED,
            detail: "rule: anonymous-group-read-only".into(),
        }
        .into(),
        Deliver { queue: addr("sales@example.org"), seq: 1_000_001, envelope: envelope(b"") }
            .into(),
        Ack { queue: addr("bob@example.org"), up_to: 10, selective: vec![12, 15, 16] }.into(),
        Receipt {
            id: MessageId(3),
            kind: ReceiptKind::Read,
            message_from: addr("alice@example.org"),
            by: addr("bob@example.org/phone"),
            at_ms: 99,
        }
        .into(),
        Credit { grant: 128 }.into(),
        DeliverReceipt {
            queue: addr("alice@example.org"),
            seq: 7,
            receipt: Receipt {
                id: MessageId(3),
                kind: ReceiptKind::Delivered,
                message_from: addr("alice@example.org"),
                by: addr("bob@example.org"),
                at_ms: 100,
            },
        }
        .into(),
        HubHello {
            hub: "hub1.example.org".into(),
            domains: vec![addr("@example.org"), addr("@example.net")],
            max_batch: 512,
        }
        .into(),
        Relay { batch: 8, envelopes: vec![envelope(b"one"), envelope(b"two")] }.into(),
        RelayAck {
            batch: 8,
            rejected: vec![RelayRejection { index: 1, reason: RejectReason::UNKNOWN_RECIPIENT }],
        }
        .into(),
        RelayReceipts {
            batch: 9,
            receipts: vec![Receipt {
                id: MessageId(4),
                kind: ReceiptKind::Delivered,
                message_from: addr("alice@example.org"),
                by: addr("bob@example.net/phone"),
                at_ms: 100,
            }],
        }
        .into(),
        RelayTaken {
            batch: 10,
            taken: vec![Taken {
                device: addr("alice@example.org/laptop"),
                from: addr("bob@example.net"),
                id: MessageId(5),
            }],
        }
        .into(),
    ]
}

pub fn encode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    frame.encode(DEFAULT_MAX_PAYLOAD, &mut out).unwrap();
    out
}

/// Feeds `bytes` to a fresh decoder in pieces cut at `cuts`, and collects every frame.
pub fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let mut frames = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    for end in points {
        let mut piece = &bytes[start..end];
        while !piece.is_empty() {
            if let Some(frame) = decoder.decode(&mut piece)? {
                frames.push(frame);
            }
        }
        start = end;
    }
    assert!(decoder.is_idle(), "bytes of a partial frame left in the decoder");
    Ok(frames)
}

fn local() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._+-]{0,10}[a-z0-9]".prop_filter("no double dot", |s| !s.contains(".."))
}

fn domain() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", 1..4)
        .prop_map(|labels| labels.join("."))
}

pub fn address() -> impl Strategy<Value = Address> {
    prop_oneof![
        (local(), domain()).prop_map(|(l, d)| format!("{l}@{d}")),
        (local(), domain(), "[a-z0-9_-]{1,12}").prop_map(|(l, d, v)| format!("{l}@{d}/{v}")),
        domain().prop_map(|d| format!("@{d}")),
        "[a-z0-9._-]{1,20}".prop_map(|g| format!("#{g}")),
        ("[a-z0-9._-]{1,20}", domain()).prop_map(|(g, d)| format!("#{g}@{d}")),
    ]
    .prop_map(|text| Address::parse(&text).unwrap())
}

pub fn device_address() -> impl Strategy<Value = Address> {
    (local(), domain(), "[a-z0-9_-]{1,12}")
        .prop_map(|(l, d, v)| Address::parse(&format!("{l}@{d}/{v}")).unwrap())
}

pub fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{}}}", max / 4)).unwrap()
}

pub fn envelope_strategy() -> impl Strategy<Value = Envelope> {
    (
        any::<u128>(),
        address(),
        address(),
        any::<u64>(),
        any::<u32>(),
        0u16..=Flags::ALL.bits(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(id, from, to, created_ms, ttl_secs, flags, body)| Envelope {
            id: MessageId(id),
            from,
            to,
            created_ms,
            ttl_secs,
            flags: Flags::from_bits(flags).unwrap(),
            body: body.into(),
        })
}

fn ascending(max_len: usize) -> impl Strategy<Value = (u64, Vec<u64>)> {
    (any::<u32>(), prop::collection::btree_set(1u64..1_000_000, 0..max_len)).prop_map(
        |(base, set)| {
            let base = u64::from(base);
            (base, set.into_iter().map(|s| base + s).collect())
        },
    )
}

pub fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            device_address(),
            any::<[u8; 32]>(),
            prop::option::of("[A-Z0-9-]{0,20}"),
            text(MAX_TEXT_LEN)
        )
            .prop_map(|(device, public_key, enrolment_code, agent)| Hello {
                device,
                public_key,
                enrolment_code,
                agent
            }
            .into()),
        any::<[u8; 32]>().prop_map(|nonce| Challenge { nonce }.into()),
        prop::collection::vec(any::<u8>(), 64)
            .prop_map(|s| Proof { signature: s.try_into().unwrap() }.into()),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(a, b, c, d, e, f)| Welcome {
                session_id: a,
                server_time_ms: b,
                max_payload: c,
                send_credit: d,
                window: e,
                idle_timeout_ms: f,
            }
            .into()),
        any::<u64>().prop_map(|nonce| Ping { nonce }.into()),
        any::<u64>().prop_map(|nonce| Pong { nonce }.into()),
        (any::<u16>(), text(MAX_TEXT_LEN)).prop_map(|(c, text)| ErrorFrame {
            code: ErrorCode(c),
            text
        }
        .into()),
        (any::<u16>(), text(MAX_TEXT_LEN)).prop_map(|(c, reason)| Close {
            code: ErrorCode(c),
            reason
        }
        .into()),
        envelope_strategy().prop_map(|envelope| Send { envelope }.into()),
        any::<u128>().prop_map(|id| Accepted { id: MessageId(id) }.into()),
        (any::<u128>(), any::<u16>(), text(MAX_TEXT_LEN)).prop_map(|(id, r, detail)| Rejected {
            id: MessageId(id),
            reason: RejectReason(r),
            detail
        }
        .into()),
        (address(), any::<u64>(), envelope_strategy()).prop_map(|(queue, seq, envelope)| Deliver {
            queue,
            seq,
            envelope
        }
        .into()),
        (address(), ascending(20)).prop_map(|(queue, (up_to, selective))| Ack {
            queue,
            up_to,
            selective
        }
        .into()),
        (any::<u128>(), 1u8..=3, address(), address(), any::<u64>()).prop_map(
            |(id, k, message_from, by, at_ms)| {
                let kind = [ReceiptKind::Delivered, ReceiptKind::Read, ReceiptKind::Answered]
                    [usize::from(k - 1)];
                Receipt { id: MessageId(id), kind, message_from, by, at_ms }.into()
            }
        ),
        (address(), any::<u64>(), any::<u128>(), address(), address()).prop_map(
            |(queue, seq, id, message_from, by)| {
                let receipt = Receipt {
                    id: MessageId(id),
                    kind: ReceiptKind::Read,
                    message_from,
                    by,
                    at_ms: 1,
                };
                DeliverReceipt { queue, seq, receipt }.into()
            }
        ),
        any::<u32>().prop_map(|grant| Credit { grant }.into()),
        ("[a-z0-9.-]{1,40}", prop::collection::vec(domain(), 0..5), any::<u32>()).prop_map(
            |(hub, domains, max_batch)| {
                let domains =
                    domains.iter().map(|d| Address::parse(&format!("@{d}")).unwrap()).collect();
                HubHello { hub, domains, max_batch }.into()
            }
        ),
        (any::<u64>(), prop::collection::vec(envelope_strategy(), 0..5))
            .prop_map(|(batch, envelopes)| Relay { batch, envelopes }.into()),
        (any::<u64>(), prop::collection::btree_map(any::<u16>(), any::<u16>(), 0..10)).prop_map(
            |(batch, map)| {
                let rejected = map
                    .into_iter()
                    .map(|(index, r)| RelayRejection { index, reason: RejectReason(r) })
                    .collect();
                RelayAck { batch, rejected }.into()
            }
        ),
        (any::<u64>(), any::<u128>(), any::<u64>()).prop_map(|(batch, id, at_ms)| {
            let receipt = Receipt {
                id: MessageId(id),
                kind: ReceiptKind::Read,
                message_from: Address::parse("alice@example.org").unwrap(),
                by: Address::parse("bob@example.net").unwrap(),
                at_ms,
            };
            RelayReceipts { batch, receipts: vec![receipt] }.into()
        }),
        (any::<u64>(), any::<u128>()).prop_map(|(batch, id)| {
            let taken = Taken {
                device: Address::parse("alice@example.org/desk").unwrap(),
                from: Address::parse("bob@example.net").unwrap(),
                id: MessageId(id),
            };
            RelayTaken { batch, taken: vec![taken] }.into()
        }),
    ]
}
