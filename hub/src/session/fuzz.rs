//! Drives one session from arbitrary bytes: the fuzz target `session` (see `fuzz/`) and the
//! corpus replay test share this, so a crash the fuzzer finds is a test case at once.
//!
//! The bytes are read as a script of steps. Some steps are frames a device could send (raw
//! bytes through the decoder, or a well-formed `hello`, `proof`, `send`, `ack`, `credit`,
//! `receipt`); others are what the rest of the hub does (answer the oldest action the session
//! asked for, with success or with one of its failures; a wake-up; a kick, a refresh, the hub
//! draining; time passing; the stream ending). Actions are held until a step answers them, so
//! answers arrive in any order relative to frames, as they do on a loaded hub.
//!
//! After every step the session's output is checked as a device would read it: every byte
//! decodes as frames a hub may send; nothing is written after `close`; `welcome` comes before
//! any delivery; at most one `Close` action; and no more deliveries unacknowledged than the
//! window the device was given.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use ed25519_dalek::{Signer, SigningKey};
use switchboard_protocol::{
    Ack, Address, Credit, Decoder, Envelope, Flags, Frame, Hello, MessageId, Proof, Receipt,
    ReceiptKind, Send, proof_message,
};

use super::{Action, EnrolError, Loaded, MAX_WINDOW, Now, ReadingStart, Session, SessionConfig};
use crate::{
    fanout::{
        AckError, Delivery, Login, ReceiptError, SendError, delivery::prepare, encode_message,
    },
    store::{DeviceId, DeviceRecord, Entry, QueueId, StoreError},
};

const USER: &str = "alice@example.org";
const DEVICE: &str = "alice@example.org/phone";
const NEW_DEVICE: &str = "alice@example.org/tablet";
const OTHER: &str = "bob@example.org";
const QUEUE: QueueId = QueueId(1);
const LINE: QueueId = QueueId(2);
const LINE_NAME: &str = "sales@example.org";
const MAX_PAYLOAD: u32 = 64 * 1024;

/// Runs the script in `data` against a fresh session; panics when a check fails.
pub fn run(data: &[u8]) {
    let mut harness = Harness::new();
    let mut script = Script(data);
    while let Some(op) = script.byte() {
        harness.step(op, &mut script);
        harness.collect();
    }
    // Whatever was left unanswered is answered, as the driver would before the task ends.
    for _ in 0..64 {
        if harness.pending.is_empty() {
            break;
        }
        harness.answer(0);
        harness.collect();
    }
}

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

struct Harness {
    session: Session,
    clock: Now,
    key: SigningKey,
    /// Actions the session asked for and nobody answered yet, oldest first.
    pending: VecDeque<Action>,
    /// The device's view: bytes the session wrote, decoded as they come.
    decoder: Decoder,
    received: BytesMut,
    /// The last challenge seen, for a correct `proof`.
    nonce: Option<[u8; 32]>,
    hello_device: Address,
    welcomed: bool,
    closed_frame: bool,
    close_actions: u32,
    /// Deliveries seen and not acknowledged by a step, and the window granted.
    unacked: Vec<(Address, u64)>,
    window: u32,
    /// The two queues the device reads: the user's and a line's.
    entries: [Vec<Entry>; 2],
    next_id: u128,
}

impl Harness {
    fn new() -> Self {
        let config = SessionConfig {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_payload: MAX_PAYLOAD,
            peer_max_payload: MAX_PAYLOAD,
            window: 4,
            send_credit: 3,
            sends_per_second: 20,
            send_burst: 5,
        };
        let window = config.window;
        let clock = Now { instant: Instant::now(), unix_ms: 1_700_000_000_000 };
        let entries = [messages(USER, 1..6), messages(LINE_NAME, 1..4)];
        Self {
            session: Session::new(config, 7, [9; 32], clock),
            clock,
            key: SigningKey::from_bytes(&[1; 32]),
            pending: VecDeque::new(),
            decoder: Decoder::new(MAX_PAYLOAD),
            received: BytesMut::new(),
            nonce: None,
            hello_device: address(DEVICE),
            welcomed: false,
            closed_frame: false,
            close_actions: 0,
            unacked: Vec::new(),
            window,
            entries,
            next_id: 1,
        }
    }

    fn step(&mut self, op: u8, script: &mut Script<'_>) {
        match op % 12 {
            0 => {
                let len = usize::from(script.byte().unwrap_or(0));
                let bytes = script.take(len).to_vec();
                self.raw(&bytes);
            }
            1 => self.hello(op / 12 % 4),
            2 => self.proof((op / 12).is_multiple_of(2)),
            3 => {
                let by = u64::from(script.byte().unwrap_or(0)) * 100;
                self.advance(Duration::from_millis(by));
            }
            4 => {
                let variant = script.byte().unwrap_or(0);
                self.answer(variant);
            }
            5 => self.session.handle_stream_end(),
            6 => self.session.woken([QUEUE, LINE]),
            7 => match op / 12 % 3 {
                0 => self.session.kick(),
                1 => self.session.refresh(),
                _ => self.session.drain(),
            },
            8 => {
                let to = script.byte().unwrap_or(0);
                self.send(to);
            }
            9 => {
                let pick = script.byte().unwrap_or(0);
                self.ack(pick);
            }
            10 => {
                let grant = u32::from(script.byte().unwrap_or(0)) * 3;
                self.frame(Credit { grant }.into());
            }
            _ => {
                let pick = script.byte().unwrap_or(0);
                self.receipt(pick);
            }
        }
    }

    fn frame(&mut self, frame: Frame) {
        if self.session.is_closed() {
            return;
        }
        if self.welcomed {
            match &frame {
                Frame::Credit(credit) => {
                    self.window = self.window.saturating_add(credit.grant).min(MAX_WINDOW);
                }
                Frame::Ack(ack) => self.unacked.retain(|(queue, seq)| {
                    *queue != ack.queue || (*seq > ack.up_to && !ack.selective.contains(seq))
                }),
                _ => {}
            }
        }
        self.session.handle_frame(frame, self.clock);
    }

    /// Bytes as they came off the stream: decoded frames are handled, decode errors too.
    fn raw(&mut self, bytes: &[u8]) {
        let mut decoder = Decoder::new(MAX_PAYLOAD);
        let mut src = bytes;
        while !src.is_empty() && !self.session.is_closed() {
            match decoder.decode(&mut src) {
                Ok(Some(frame)) => self.frame(frame),
                Ok(None) => break,
                Err(error) => {
                    let fatal = error.is_fatal();
                    self.session.handle_decode_error(error);
                    if fatal {
                        break;
                    }
                }
            }
        }
    }

    fn hello(&mut self, variant: u8) {
        let (device, code) = match variant {
            0 => (DEVICE, None),
            1 => (NEW_DEVICE, Some("1234-5678")),
            2 => (NEW_DEVICE, None),
            _ => (OTHER, None),
        };
        self.hello_device = address(device);
        self.frame(
            Hello {
                device: address(device),
                public_key: self.key.verifying_key().to_bytes(),
                enrolment_code: code.map(Into::into),
                agent: "fuzz".into(),
            }
            .into(),
        );
    }

    fn proof(&mut self, correct: bool) {
        let nonce = self.nonce.unwrap_or([0; 32]);
        let mut signature = self.key.sign(&proof_message(&nonce, &self.hello_device)).to_bytes();
        if !correct {
            signature[0] ^= 1;
        }
        self.frame(Proof { signature }.into());
    }

    fn advance(&mut self, by: Duration) {
        self.clock.instant += by;
        self.clock.unix_ms += u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        if self.session.poll_timeout().is_some_and(|t| t <= self.clock.instant) {
            self.session.handle_timeout(self.clock);
        }
    }

    fn send(&mut self, pick: u8) {
        let to = match pick % 4 {
            0 => OTHER,
            1 => USER,
            2 => LINE_NAME,
            _ => "alice@example.org/phone",
        };
        // Ids repeat now and then, as a resend after a lost answer does.
        let id = if pick & 0x80 != 0 { self.next_id.saturating_sub(1) } else { self.next_id };
        self.next_id += 1;
        let envelope = Envelope {
            id: MessageId(id),
            from: address(USER),
            to: address(to),
            created_ms: 1,
            ttl_secs: u32::from(pick >> 4),
            flags: if pick & 0x40 != 0 { Flags::WANT_RECEIPTS } else { Flags::NONE },
            body: Bytes::from_static(b"fuzz"),
        };
        self.frame(Send { envelope }.into());
    }

    /// Acknowledges one delivery seen (cumulatively, or selectively), or a sequence past the
    /// end of a queue.
    fn ack(&mut self, pick: u8) {
        let (queue, seq, selective) = if self.unacked.is_empty() || pick & 0x80 != 0 {
            (address(if pick & 1 == 0 { USER } else { LINE_NAME }), u64::from(pick & 0x3f), false)
        } else {
            let index = usize::from(pick) % self.unacked.len();
            let (queue, seq) = self.unacked[index].clone();
            (queue, seq, pick & 0x40 != 0)
        };
        let ack = if selective {
            Ack { queue, up_to: 0, selective: vec![seq] }
        } else {
            Ack { queue, up_to: seq, selective: Vec::new() }
        };
        self.frame(ack.into());
    }

    fn receipt(&mut self, pick: u8) {
        let kind = match pick % 3 {
            0 => ReceiptKind::Read,
            1 => ReceiptKind::Answered,
            _ => ReceiptKind::Delivered,
        };
        let by = if pick & 0x40 != 0 { LINE_NAME } else { USER };
        self.frame(
            Receipt {
                id: MessageId(u128::from(pick >> 3)),
                message_from: address(OTHER),
                by: address(by),
                kind,
                at_ms: 1,
            }
            .into(),
        );
    }

    /// Answers the oldest pending action; `variant` picks success or a failure.
    fn answer(&mut self, variant: u8) {
        let Some(action) = self.pending.pop_front() else { return };
        let fail = variant % 4 == 3;
        let now = self.clock;
        let key = self.key.verifying_key().to_bytes();
        let session = &mut self.session;
        match action {
            Action::LookupUser(account) => {
                let login = (account.as_str() == USER)
                    .then_some(Login { queue: QUEUE, deactivated: variant % 8 == 5 });
                session.user_looked_up(if fail { Err("store".into()) } else { Ok(login) });
            }
            Action::LookupDevice(device) => {
                let known = (device.as_str() == DEVICE).then(|| record(key, DEVICE, variant));
                session.device_looked_up(if fail { Err("store".into()) } else { Ok(known) }, now);
            }
            Action::Enrol(enrolment) => {
                let result = match variant % 4 {
                    0 | 1 => Ok(record(key, enrolment.device.as_str(), 0)),
                    2 => Err(EnrolError::Taken),
                    _ => Err(EnrolError::Refused("unknown code".into())),
                };
                session.enrolled(result, now);
            }
            Action::LoadReadings { known, .. } => {
                let mut current = vec![QUEUE];
                if variant.is_multiple_of(2) {
                    current.push(LINE);
                }
                let added = current
                    .iter()
                    .filter(|q| !known.contains(q))
                    .map(|&queue| ReadingStart {
                        queue,
                        name: address(if queue == QUEUE { USER } else { LINE_NAME }),
                        acked: 0,
                        held: Vec::new(),
                    })
                    .collect();
                let line_dropped = !fail && !current.contains(&LINE);
                session.readings_loaded(if fail {
                    Err("store".into())
                } else {
                    Ok(Loaded { current, added })
                });
                // A queue the device no longer reads (it left the line): its deliveries in
                // flight stop counting against the window, as protocol.md says, and cannot be
                // acknowledged any more.
                if line_dropped {
                    let line = address(LINE_NAME);
                    self.unacked.retain(|(queue, _)| *queue != line);
                }
            }
            Action::Send(envelope) => {
                let result = match variant % 4 {
                    0 | 1 => Ok(()),
                    2 => Err(SendError::NotAllowed("a rule".into())),
                    _ => Err(SendError::Store(StoreError::Closed)),
                };
                session.send_answered(envelope.id, result);
            }
            Action::Read(request) => {
                let index = usize::from(request.queue != QUEUE);
                let reader = address(USER);
                let result = if fail {
                    Err("store".into())
                } else {
                    Ok(self.entries[index]
                        .iter()
                        .filter(|e| e.seq > request.after)
                        .take(request.max)
                        .map(|e| prepare(e, &request.name, &reader))
                        .collect::<Result<Vec<Delivery>, _>>()
                        .expect("the harness's entries decode"))
                };
                session.read_done(request.id, result);
            }
            Action::Ack { queue, .. } => session.ack_done(
                queue,
                if fail {
                    Err(AckError(StoreError::AckBeyondTail { queue: QUEUE, seq: 99, last: 5 }))
                } else {
                    Ok(())
                },
            ),
            Action::StoreDelivered(_) | Action::StoreReceipt { .. } => session
                .receipt_done(if fail { Err(ReceiptError::DeliveredByDevice) } else { Ok(()) }),
            Action::Opened { .. } | Action::Watch(_) | Action::Close(_) => {}
        }
    }

    /// Takes the session's actions and output, and checks them.
    fn collect(&mut self) {
        while let Some(action) = self.session.poll_action() {
            if let Action::Close(error) = &action {
                self.close_actions += 1;
                assert_eq!(self.close_actions, 1, "a second Close: {error:?}");
            }
            if !matches!(action, Action::Opened { .. } | Action::Watch(_) | Action::Close(_)) {
                self.pending.push_back(action);
            }
        }
        while let Some(bytes) = self.session.poll_transmit() {
            assert!(!self.closed_frame, "bytes written after close");
            self.received.extend_from_slice(&bytes);
        }
        loop {
            let frame = match self.decoder.decode(&mut self.received) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => panic!("the hub wrote bytes a device cannot decode: {error}"),
            };
            assert!(!self.closed_frame, "a frame after close: {frame:?}");
            match frame {
                Frame::Challenge(challenge) => self.nonce = Some(challenge.nonce),
                Frame::Welcome(_) => {
                    assert!(!self.welcomed, "a second welcome");
                    self.welcomed = true;
                }
                Frame::Deliver(deliver) => {
                    assert!(self.welcomed, "a delivery before welcome");
                    self.unacked.push((deliver.queue, deliver.seq));
                }
                Frame::DeliverReceipt(deliver) => {
                    assert!(self.welcomed, "a delivery before welcome");
                    self.unacked.push((deliver.queue, deliver.seq));
                }
                Frame::Close(_) => self.closed_frame = true,
                _ => {}
            }
        }
        let mut distinct = self.unacked.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() <= self.window as usize,
            "{} deliveries unacknowledged, window {}",
            distinct.len(),
            self.window
        );
    }
}

/// A device record for `name` with `key`, or (by `variant`) another key or revoked.
fn record(key: [u8; 32], name: &str, variant: u8) -> DeviceRecord {
    let public_key = if variant % 8 == 6 { [7; 32] } else { key };
    DeviceRecord {
        name: name.into(),
        device: DeviceId(100),
        account: QUEUE,
        public_key,
        revoked: variant % 8 == 7,
        enrolled_ms: 0,
        kind: Default::default(),
    }
}

fn address(text: &str) -> Address {
    Address::parse(text).expect("the harness's addresses parse")
}

fn messages(queue: &str, seqs: std::ops::Range<u64>) -> Vec<Entry> {
    seqs.map(|seq| Entry {
        seq,
        expires_ms: u64::MAX,
        payload: encode_message(&Envelope {
            id: MessageId(1000 + u128::from(seq)),
            from: address(OTHER),
            to: address(queue),
            created_ms: 1,
            ttl_secs: 60,
            flags: if seq % 2 == 0 { Flags::WANT_RECEIPTS } else { Flags::NONE },
            body: Bytes::from_static(b"hello"),
        }),
    })
    .collect()
}
