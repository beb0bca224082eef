//! The session state machine driven in memory with a virtual clock, in the style of
//! quinn-proto's `Pair` harness: no sockets, no tasks, deterministic. A [`World`] plays the
//! driver and the hub (users, devices, queues as plain vectors) and a [`Device`] the peer;
//! every frame the session writes is decoded as a device would.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use ed25519_dalek::{Signer, SigningKey};
use switchboard_protocol::{
    Ack, Address, Close, Credit, DecodeError, Decoder, Envelope, ErrorCode, Flags, Frame, Hello,
    MessageId, Ping, Proof, Receipt, ReceiptKind, RejectReason, Send, proof_message,
};

use super::*;
use crate::{
    fanout::{Login, delivery::prepare, encode_message},
    store::Entry,
};

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";

fn config() -> SessionConfig {
    SessionConfig {
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_payload: 1 << 20,
        peer_max_payload: 1 << 20,
        window: 4,
        send_credit: 3,
        sends_per_second: 10,
        send_burst: 5,
    }
}

fn address(text: &str) -> Address {
    Address::parse(text).unwrap()
}

/// The hub side: what the driver's actions reach.
struct World {
    session: Session,
    clock: Now,
    users: HashMap<String, Login>,
    devices: HashMap<String, DeviceRecord>,
    /// Queue entries by queue, with the queue's address.
    queues: BTreeMap<QueueId, (Address, Vec<Entry>)>,
    /// Which queues each device reads, with its cursor and selective acks.
    subscriptions: HashMap<DeviceId, Vec<(QueueId, u64, Vec<u64>)>>,
    codes: HashMap<String, String>,
    /// Actions held back instead of answered (sends, by default, so a test can answer them).
    held: Vec<Action>,
    /// Every action carried out, in order.
    log: Vec<Action>,
    reader: Option<Address>,
    /// Whether sends are answered at once (accepted) or held.
    answer_sends: bool,
    decoder: Decoder,
    received: BytesMut,
}

impl World {
    fn new(config: SessionConfig) -> Self {
        let start = Instant::now();
        let clock = Now { instant: start, unix_ms: 1_700_000_000_000 };
        let mut world = Self {
            session: Session::new(config, 9, [5; 32], clock),
            clock,
            users: HashMap::new(),
            devices: HashMap::new(),
            queues: BTreeMap::new(),
            subscriptions: HashMap::new(),
            codes: HashMap::new(),
            held: Vec::new(),
            log: Vec::new(),
            reader: None,
            answer_sends: true,
            decoder: Decoder::new(1 << 20),
            received: BytesMut::new(),
        };
        world.add_user(ALICE, QueueId(1));
        world.add_user(BOB, QueueId(2));
        world
    }

    fn add_user(&mut self, name: &str, queue: QueueId) {
        self.users.insert(name.into(), Login { queue, deactivated: false });
        self.queues.insert(queue, (address(name), Vec::new()));
    }

    fn add_device(&mut self, name: &str, key: &SigningKey) -> DeviceId {
        let device = DeviceId(100 + self.devices.len() as u64);
        let account = self.users[name.split('/').next().unwrap()].queue;
        self.devices.insert(
            name.into(),
            DeviceRecord {
                name: name.into(),
                device,
                account,
                public_key: key.verifying_key().to_bytes(),
                revoked: false,
                enrolled_ms: 0,
                kind: Default::default(),
            },
        );
        self.subscriptions.insert(device, vec![(account, 0, Vec::new())]);
        device
    }

    fn append(&mut self, queue: QueueId, envelope: &Envelope) -> u64 {
        let entries = &mut self.queues.get_mut(&queue).unwrap().1;
        let seq = entries.last().map_or(1, |e| e.seq + 1);
        entries.push(Entry { seq, expires_ms: u64::MAX, payload: encode_message(envelope) });
        seq
    }

    fn advance(&mut self, by: Duration) {
        self.clock.instant += by;
        self.clock.unix_ms += by.as_millis() as u64;
        if self.session.poll_timeout().is_some_and(|t| t <= self.clock.instant) {
            self.session.handle_timeout(self.clock);
            self.drive();
        }
    }

    fn frame(&mut self, frame: Frame) -> Vec<Frame> {
        self.session.handle_frame(frame, self.clock);
        self.drive()
    }

    /// Carries out every action until the session asks for nothing more; answers the frames
    /// the session wrote.
    fn drive(&mut self) -> Vec<Frame> {
        while let Some(action) = self.session.poll_action() {
            self.log.push(action.clone());
            self.carry_out(action);
        }
        let mut frames = Vec::new();
        while let Some(bytes) = self.session.poll_transmit() {
            self.received.extend_from_slice(&bytes);
        }
        while let Some(frame) = self.decoder.decode(&mut self.received).unwrap() {
            frames.push(frame);
        }
        frames
    }

    fn carry_out(&mut self, action: Action) {
        let session = &mut self.session;
        match action {
            Action::LookupUser(account) => {
                session.user_looked_up(Ok(self.users.get(account.as_str()).copied()));
            }
            Action::LookupDevice(device) => {
                session
                    .device_looked_up(Ok(self.devices.get(device.as_str()).cloned()), self.clock);
            }
            Action::Enrol(enrolment) => {
                let result = match self.codes.remove(enrolment.device.as_str()) {
                    Some(code) if code == enrolment.code => {
                        let record = DeviceRecord {
                            name: enrolment.device.as_str().into(),
                            device: DeviceId(900),
                            account: enrolment.account,
                            public_key: enrolment.public_key,
                            revoked: false,
                            enrolled_ms: self.clock.unix_ms,
                            kind: Default::default(),
                        };
                        self.subscriptions
                            .insert(DeviceId(900), vec![(enrolment.account, 0, vec![])]);
                        Ok(record)
                    }
                    _ => Err(EnrolError::Refused("unknown or spent code".into())),
                };
                session.enrolled(result, self.clock);
            }
            Action::Opened { account, .. } => self.reader = Some(account.address),
            Action::LoadReadings { device, known } => {
                let subscribed = self.subscriptions.get(&device).cloned().unwrap_or_default();
                let current = subscribed.iter().map(|s| s.0).collect();
                let added = subscribed
                    .into_iter()
                    .filter(|(queue, ..)| !known.contains(queue))
                    .map(|(queue, acked, held)| ReadingStart {
                        queue,
                        name: self.queues[&queue].0.clone(),
                        acked,
                        held,
                    })
                    .collect();
                session.readings_loaded(Ok(Loaded { current, added }));
            }
            Action::Watch(_) => {}
            Action::Send(envelope) if self.answer_sends => {
                session.send_answered(envelope.id, Ok(()))
            }
            Action::Read(request) => {
                let reader = self.reader.clone().unwrap();
                let entries = &self.queues[&request.queue].1;
                let deliveries = entries
                    .iter()
                    .filter(|e| e.seq > request.after)
                    .take(request.max)
                    .map(|e| prepare(e, &request.name, &reader).unwrap())
                    .collect();
                session.read_done(request.id, Ok(deliveries));
            }
            Action::Ack { queue, .. } => session.ack_done(queue, Ok(())),
            Action::StoreDelivered(_) | Action::StoreReceipt { .. } => session.receipt_done(Ok(())),
            Action::Close(_) => {}
            held => self.held.push(held),
        }
    }

    /// Runs the handshake of `device` with `key`; answers the frames after `welcome`.
    fn connect(&mut self, device: &str, key: &SigningKey, code: Option<&str>) -> Vec<Frame> {
        let hello = Hello {
            device: address(device),
            public_key: key.verifying_key().to_bytes(),
            enrolment_code: code.map(Into::into),
            agent: "test".into(),
        };
        let frames = self.frame(hello.into());
        let nonce = match frames.as_slice() {
            [Frame::Challenge(challenge)] => challenge.nonce,
            other => return other.to_vec(),
        };
        let signature = key.sign(&proof_message(&nonce, &address(device))).to_bytes();
        self.frame(Proof { signature }.into())
    }

    fn closed_with(&self) -> Option<SessionError> {
        self.log.iter().find_map(|a| match a {
            Action::Close(error) => Some(error.clone()),
            _ => None,
        })
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn message(id: u128, from: &str, to: &str, flags: Flags) -> Envelope {
    Envelope {
        id: MessageId(id),
        from: address(from),
        to: address(to),
        created_ms: 1,
        ttl_secs: 60,
        flags,
        body: Bytes::from_static(b"hi"),
    }
}

/// A world with alice's phone connected and nothing waiting.
fn connected(config: SessionConfig) -> World {
    let mut world = World::new(config);
    world.add_device("alice@example.org/phone", &key(1));
    let frames = world.connect("alice@example.org/phone", &key(1), None);
    assert!(matches!(frames.first(), Some(Frame::Welcome(_))), "{frames:?}");
    world
}

fn delivered_seqs(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Deliver(d) => Some(d.seq),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_proves_the_key_then_welcomes_with_the_limits_and_loads_the_queues() {
    let mut world = World::new(config());
    let device = world.add_device("alice@example.org/phone", &key(1));
    let frames = world.connect("alice@example.org/phone", &key(1), None);
    let [Frame::Welcome(welcome)] = frames.as_slice() else { panic!("{frames:?}") };
    assert_eq!((welcome.session_id, welcome.send_credit, welcome.window), (9, 3, 4));
    assert_eq!(welcome.idle_timeout_ms, 30_000);
    assert_eq!(welcome.server_time_ms, 1_700_000_000_000);
    assert!(world.session.wants_frame());
    assert_eq!(world.session.poll_timeout(), None, "no handshake deadline once open");
    let kinds: Vec<&str> = world
        .log
        .iter()
        .map(|a| match a {
            Action::LookupUser(_) => "user",
            Action::LookupDevice(_) => "device",
            Action::Opened { device: d, .. } if *d == device => "opened",
            Action::LoadReadings { .. } => "load",
            Action::Watch(_) => "watch",
            Action::Read(_) => "read",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["user", "device", "opened", "load", "watch", "read"]);
}

/// A refusal case: its name, how it spoils the world, and the code the session closes with.
type Refusal = (&'static str, fn(&mut World), ErrorCode);

#[test]
fn handshake_refusals_close_with_their_codes() {
    let cases: [Refusal; 4] = [
        ("unknown user", |w| w.users.clear(), ErrorCode::AUTHENTICATION_FAILED),
        (
            "deactivated",
            |w| w.users.get_mut(ALICE).unwrap().deactivated = true,
            ErrorCode::USER_DEACTIVATED,
        ),
        (
            "revoked",
            |w| w.devices.values_mut().for_each(|d| d.revoked = true),
            ErrorCode::DEVICE_REVOKED,
        ),
        (
            "another key",
            |w| {
                w.devices
                    .values_mut()
                    .for_each(|d| d.public_key = key(2).verifying_key().to_bytes())
            },
            ErrorCode::AUTHENTICATION_FAILED,
        ),
    ];
    for (name, spoil, code) in cases {
        let mut world = World::new(config());
        world.add_device("alice@example.org/phone", &key(1));
        spoil(&mut world);
        let frames = world.connect("alice@example.org/phone", &key(1), None);
        let Some(Frame::Close(close)) = frames.last() else { panic!("{name}: {frames:?}") };
        assert_eq!(close.code, code, "{name}");
        assert!(world.session.is_closed(), "{name}");
        assert_eq!(world.closed_with().map(|e| e.code()), Some(code), "{name}");
    }
}

#[test]
fn a_proof_signed_by_another_key_is_refused() {
    let mut world = World::new(config());
    world.add_device("alice@example.org/phone", &key(1));
    let hello = Hello {
        device: address("alice@example.org/phone"),
        public_key: key(1).verifying_key().to_bytes(),
        enrolment_code: None,
        agent: "test".into(),
    };
    let frames = world.frame(hello.into());
    let [Frame::Challenge(challenge)] = frames.as_slice() else { panic!("{frames:?}") };
    let forged = key(2).sign(&proof_message(&challenge.nonce, &address("alice@example.org/phone")));
    let frames = world.frame(Proof { signature: forged.to_bytes() }.into());
    assert_eq!(
        world.closed_with(),
        Some(SessionError::Authentication("the proof does not verify"))
    );
    assert!(matches!(frames.last(), Some(Frame::Close(_))));
    assert!(!world.log.iter().any(|a| matches!(a, Action::LookupDevice(_))));
}

#[test]
fn a_frame_before_hello_closes_as_unexpected() {
    let mut world = World::new(config());
    let frames = world.frame(Ping { nonce: 1 }.into());
    let [Frame::Close(close)] = frames.as_slice() else { panic!("{frames:?}") };
    assert_eq!(close.code, ErrorCode::UNEXPECTED_FRAME);
    assert_eq!(close.reason, "ping before hello");
}

#[test]
fn a_handshake_that_takes_too_long_times_out_on_the_virtual_clock() {
    let mut world = World::new(config());
    world.advance(Duration::from_secs(9));
    assert!(!world.session.is_closed());
    world.advance(Duration::from_secs(1));
    assert_eq!(world.closed_with(), Some(SessionError::HandshakeTimeout));
    assert_eq!(world.session.poll_timeout(), None);
}

#[test]
fn an_unknown_device_enrols_with_its_code_once() {
    let mut world = World::new(config());
    world.codes.insert("alice@example.org/laptop".into(), "code-1".into());
    let frames = world.connect("alice@example.org/laptop", &key(3), Some("code-1"));
    assert!(matches!(frames.first(), Some(Frame::Welcome(_))), "{frames:?}");
    assert_eq!(world.session.device().unwrap().device, DeviceId(900));

    let mut again = World::new(config());
    let frames = again.connect("alice@example.org/laptop", &key(3), Some("code-1"));
    assert!(
        matches!(frames.last(), Some(Frame::Close(c)) if c.code == ErrorCode::ENROLMENT_REFUSED)
    );
    let mut without = World::new(config());
    without.connect("alice@example.org/laptop", &key(3), None);
    assert_eq!(
        without.closed_with(),
        Some(SessionError::Authentication("unknown device; enrol it with a code"))
    );
}

#[test]
fn deliveries_stop_at_the_window_and_resume_with_acks_and_credit() {
    let mut world = World::new(config());
    for id in 1..=10 {
        world.append(QueueId(1), &message(id, BOB, ALICE, Flags::NONE));
    }
    world.add_device("alice@example.org/phone", &key(1));
    let frames = world.connect("alice@example.org/phone", &key(1), None);
    assert_eq!(delivered_seqs(&frames), [1, 2, 3, 4], "the window is 4");
    let ack = |up_to| Ack { queue: address(ALICE), up_to, selective: vec![] };
    assert_eq!(delivered_seqs(&world.frame(ack(2).into())), [5, 6]);
    assert!(delivered_seqs(&world.frame(ack(2).into())).is_empty(), "nothing new was acked");
    assert_eq!(delivered_seqs(&world.frame(Credit { grant: 3 }.into())), [7, 8, 9]);
    assert_eq!(delivered_seqs(&world.frame(ack(9).into())), [10]);
    let reads = world.log.iter().filter(|a| matches!(a, Action::Read(_))).count();
    let frames = world.frame(ack(10).into());
    assert!(delivered_seqs(&frames).is_empty());
    assert_eq!(
        world.log.iter().filter(|a| matches!(a, Action::Read(_))).count(),
        reads,
        "a queue read to its end is not read again until a wake-up"
    );
    world.append(QueueId(1), &message(11, BOB, ALICE, Flags::NONE));
    world.session.woken([QueueId(1)]);
    assert_eq!(delivered_seqs(&world.drive()), [11]);
}

#[test]
fn selective_acks_release_the_window_and_held_entries_are_not_sent_again() {
    let mut world = World::new(config());
    for id in 1..=8 {
        world.append(QueueId(1), &message(id, BOB, ALICE, Flags::NONE));
    }
    let device = world.add_device("alice@example.org/phone", &key(1));
    // The device held 2 and 3 from an earlier session.
    world.subscriptions.insert(device, vec![(QueueId(1), 0, vec![2, 3])]);
    let frames = world.connect("alice@example.org/phone", &key(1), None);
    assert_eq!(delivered_seqs(&frames), [1, 4, 5, 6], "2 and 3 are held, not sent again");
    let frames = world.frame(Ack { queue: address(ALICE), up_to: 0, selective: vec![4] }.into());
    assert_eq!(delivered_seqs(&frames), [7], "a selective ack frees one place in the window");
    let acks: Vec<_> = world
        .log
        .iter()
        .filter_map(|a| match a {
            Action::Ack { up_to, selective, .. } => Some((*up_to, selective.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [(0, vec![4])]);
}

#[test]
fn refused_acks_answer_ack_refused_naming_the_queue_by_address_and_the_session_goes_on() {
    let mut world = connected(config());
    let frames = world.frame(Ack { queue: address(BOB), up_to: 1, selective: vec![] }.into());
    let [Frame::Error(error)] = frames.as_slice() else { panic!("{frames:?}") };
    assert_eq!(error.code, ErrorCode::ACK_REFUSED);
    assert!(error.text.contains(BOB), "{}", error.text);
    assert!(!world.session.is_closed());
    world.session.ack_done(
        QueueId(1),
        Err(AckError(crate::store::StoreError::AckBeyondTail {
            queue: QueueId(1),
            seq: 9,
            last: 1,
        })),
    );
    let frames = world.drive();
    let [Frame::Error(error)] = frames.as_slice() else { panic!("{frames:?}") };
    assert_eq!(error.code, ErrorCode::ACK_REFUSED);
    assert_eq!(error.text, "ack of alice@example.org: sequence 9 is past the queue's last, 1");
    assert!(!world.session.is_closed());
}

#[test]
fn acknowledging_a_message_that_wants_receipts_stores_one_delivered_receipt() {
    let mut world = World::new(config());
    world.append(QueueId(1), &message(1, BOB, ALICE, Flags::WANT_RECEIPTS));
    world.append(QueueId(1), &message(2, ALICE, BOB, Flags::WANT_RECEIPTS));
    world.add_device("alice@example.org/phone", &key(1));
    world.connect("alice@example.org/phone", &key(1), None);
    world.advance(Duration::from_secs(3));
    world.frame(Ack { queue: address(ALICE), up_to: 2, selective: vec![] }.into());
    world.frame(Ack { queue: address(ALICE), up_to: 2, selective: vec![] }.into());
    let receipts: Vec<&Receipt> = world
        .log
        .iter()
        .filter_map(|a| match a {
            Action::StoreDelivered(receipt) => Some(receipt),
            _ => None,
        })
        .collect();
    let expected = Receipt {
        id: MessageId(1),
        kind: ReceiptKind::Delivered,
        message_from: address(BOB),
        by: address(ALICE),
        at_ms: 1_700_000_003_000,
    };
    assert_eq!(receipts, [&expected], "one receipt, only for the other user's message");
}

#[test]
fn sends_past_the_credit_close_the_session_with_flow_control() {
    let mut world = connected(config());
    world.answer_sends = false;
    for id in 1..=3 {
        world.frame(Send { envelope: message(id, ALICE, BOB, Flags::NONE) }.into());
    }
    assert!(!world.session.is_closed());
    let frames = world.frame(Send { envelope: message(4, ALICE, BOB, Flags::NONE) }.into());
    assert!(matches!(frames.last(), Some(Frame::Close(c)) if c.code == ErrorCode::FLOW_CONTROL));
    assert_eq!(world.held.len(), 3, "the fourth send was not handed on");
}

#[test]
fn answered_sends_free_the_credit_and_each_gets_its_answer() {
    let mut world = connected(config());
    world.answer_sends = false;
    for id in 1..=3 {
        world.frame(Send { envelope: message(id, ALICE, BOB, Flags::NONE) }.into());
    }
    world.session.send_answered(MessageId(2), Ok(()));
    world.session.send_answered(MessageId(1), Err(SendError::NotAllowed("rule: no".into())));
    let frames = world.drive();
    assert!(matches!(&frames[0], Frame::Accepted(a) if a.id == MessageId(2)));
    assert!(
        matches!(&frames[1], Frame::Rejected(r) if r.id == MessageId(1) && r.reason == RejectReason::NOT_ALLOWED && r.detail == "rule: no")
    );
    let frames = world.frame(Send { envelope: message(4, ALICE, BOB, Flags::NONE) }.into());
    assert!(frames.is_empty() && !world.session.is_closed(), "{frames:?}");
}

#[test]
fn sends_above_the_rate_are_rejected_until_the_virtual_clock_refills() {
    let mut world = connected(SessionConfig { send_burst: 2, sends_per_second: 1, ..config() });
    let send = |world: &mut World, id| {
        world.frame(Send { envelope: message(id, ALICE, BOB, Flags::NONE) }.into())
    };
    assert!(matches!(send(&mut world, 1).as_slice(), [Frame::Accepted(_)]));
    assert!(matches!(send(&mut world, 2).as_slice(), [Frame::Accepted(_)]));
    let frames = send(&mut world, 3);
    assert!(
        matches!(frames.as_slice(), [Frame::Rejected(r)] if r.reason == RejectReason::RATE_LIMITED),
        "{frames:?}"
    );
    world.advance(Duration::from_millis(999));
    assert!(matches!(send(&mut world, 4).as_slice(), [Frame::Rejected(_)]));
    world.advance(Duration::from_millis(2));
    assert!(matches!(send(&mut world, 5).as_slice(), [Frame::Accepted(_)]));
}

#[test]
fn draining_waits_for_every_started_commit_then_closes_shutting_down() {
    let mut world = connected(config());
    world.answer_sends = false;
    world.frame(Send { envelope: message(1, ALICE, BOB, Flags::NONE) }.into());
    world.session.drain();
    assert!(world.drive().is_empty());
    assert!(!world.session.wants_frame(), "a draining session reads nothing more");
    assert!(!world.session.is_closed(), "the send is still unanswered");
    world.session.send_answered(MessageId(1), Ok(()));
    let frames = world.drive();
    assert!(matches!(frames[0], Frame::Accepted(_)));
    assert!(matches!(&frames[1], Frame::Close(c) if c.code == ErrorCode::SHUTTING_DOWN));
}

#[test]
fn close_paths_name_their_cause() {
    let mut world = connected(config());
    world.frame(Close { code: ErrorCode::NORMAL, reason: "bye".into() }.into());
    assert_eq!(world.closed_with(), Some(SessionError::ClosedByDevice("bye".into())));

    let mut world = connected(config());
    world.session.kick();
    world.drive();
    assert_eq!(world.closed_with(), Some(SessionError::Revoked));

    let mut world = connected(config());
    world.frame(Frame::Challenge(switchboard_protocol::Challenge { nonce: [0; 32] }));
    assert_eq!(world.closed_with(), Some(SessionError::NotFromDevice("challenge")));

    let mut world = connected(config());
    world.session.handle_decode_error(DecodeError::UnexpectedEnd);
    let frames = world.drive();
    assert!(matches!(frames.as_slice(), [Frame::Error(_)]), "{frames:?}");
    assert!(!world.session.is_closed(), "a bad payload skips the frame");
    world.session.handle_decode_error(DecodeError::UnknownFrameType(0x7f));
    assert!(world.session.is_closed(), "a bad header closes");
}

#[test]
fn a_reload_drops_a_queue_and_its_deliveries_stop_counting() {
    let mut world = World::new(config());
    world.queues.insert(QueueId(7), (address("sales@example.org"), Vec::new()));
    for id in 1..=4 {
        world.append(QueueId(7), &message(id, BOB, "sales@example.org", Flags::NONE));
    }
    let device = world.add_device("alice@example.org/phone", &key(1));
    world.subscriptions.get_mut(&device).unwrap().push((QueueId(7), 0, vec![]));
    let frames = world.connect("alice@example.org/phone", &key(1), None);
    assert_eq!(delivered_seqs(&frames).len(), 4, "the window is full of the line's messages");
    world.append(QueueId(1), &message(9, BOB, ALICE, Flags::NONE));
    world.subscriptions.get_mut(&device).unwrap().retain(|s| s.0 != QueueId(7));
    world.session.refresh();
    let frames = world.drive();
    let Some(Frame::Deliver(deliver)) = frames.first() else { panic!("{frames:?}") };
    assert_eq!((deliver.queue.as_str(), deliver.seq), (ALICE, 1));
    let frames = world
        .frame(Ack { queue: address("sales@example.org"), up_to: 4, selective: vec![] }.into());
    assert!(matches!(frames.as_slice(), [Frame::Error(_)]), "no longer read: {frames:?}");
}

#[test]
fn a_read_answered_after_its_queue_was_dropped_is_ignored() {
    let mut world = connected(config());
    world.session.woken([QueueId(1)]);
    let read = std::iter::from_fn(|| world.session.poll_action())
        .find_map(|a| match a {
            Action::Read(request) => Some(request),
            _ => None,
        })
        .expect("a wake-up makes a read");
    world.subscriptions.clear();
    world.session.refresh();
    world.drive();
    let entry = Entry {
        seq: 1,
        expires_ms: u64::MAX,
        payload: encode_message(&message(1, BOB, ALICE, Flags::NONE)),
    };
    let delivery = prepare(&entry, &read.name, &address(ALICE)).unwrap();
    world.session.read_done(read.id, Ok(vec![delivery]));
    assert!(delivered_seqs(&world.drive()).is_empty());
}

#[test]
fn a_session_stops_reading_at_the_cap_of_unanswered_receipts_and_resumes_once_answered() {
    let mut world = connected(config());
    let receipt = Receipt {
        id: MessageId(1),
        kind: ReceiptKind::Read,
        message_from: address(BOB),
        by: address(ALICE),
        at_ms: 1,
    };
    for _ in 0..MAX_STORING {
        assert!(world.session.wants_frame());
        world.session.handle_frame(receipt.clone().into(), world.clock);
    }
    assert!(!world.session.wants_frame(), "reads past {MAX_STORING} unanswered receipts");
    world.drive();
    assert!(world.session.wants_frame());
    assert!(!world.session.is_closed());
}
