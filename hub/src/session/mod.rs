//! One device session as a state machine: frames and time in, actions out.
//!
//! No sockets, no tasks and no clock of its own, in the way quinn-proto's `Connection` is
//! driven by quinn: the driver in `net/session.rs` owns the stream and the futures, feeds
//! [`Session`] what arrived ([`Session::handle_frame`], the answers to the actions it asked
//! for, wake-ups, time) and carries out what it asks ([`Session::poll_action`]), writing the
//! bytes of [`Session::poll_transmit`]. Everything a session decides is here: the handshake,
//! the send credit and rate, the delivery window, which queue to read next, what an ack
//! releases, and how a session closes. What a send or a read *does* belongs to
//! [`crate::fanout`]; the session only asks.
//!
//! The life of a session: `hello` -> [`Action::LookupUser`] -> `challenge` -> `proof` (checked
//! here) -> [`Action::LookupDevice`] (-> [`Action::Enrol`] with a code) -> `welcome`,
//! [`Action::Opened`], [`Action::LoadReadings`] -> open: frames are read, entries handed out
//! within the window, until a close (by the device, a rule, a kick, or a drain once every
//! commit it started is answered).

pub mod fuzz;
mod handshake;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use switchboard_protocol::{
    Accepted, Ack, Address, Close, DecodeError, Envelope, ErrorCode, ErrorFrame, Frame, Pong,
    Receipt, Rejected,
};

use crate::{
    config::Config,
    fanout::{Account, AckError, Delivery, ReadRequest, ReceiptError, SendError},
    metrics::HubMetrics,
    store::{DeviceId, DeviceRecord, QueueId},
};
pub use handshake::{EnrolError, Enrolment};

/// Largest delivery window a device may ask for with `credit`.
pub const MAX_WINDOW: u32 = 65_536;

/// Acks and receipts a session hands to the store before their answers: past this, it reads
/// no more frames until some are answered, so QUIC flow control holds a flooding device back.
pub const MAX_STORING: u32 = 1_024;

/// The settings a session follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time from the session's start to `welcome`.
    pub handshake_timeout: Duration,
    /// The connection's idle timeout (told to the device in `welcome`).
    pub idle_timeout: Duration,
    /// Largest payload the hub reads (told to the device in `welcome`).
    pub max_payload: u32,
    /// Largest payload the hub writes (the device's limit).
    pub peer_max_payload: u32,
    /// Deliveries a device may hold unacknowledged at first.
    pub window: u32,
    /// Sends a device may have unanswered.
    pub send_credit: u32,
    /// Sends per second, sustained.
    pub sends_per_second: u32,
    /// Sends at once above the rate.
    pub send_burst: u32,
}

impl SessionConfig {
    /// The settings of `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            handshake_timeout: Duration::from_secs(config.quic.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(config.quic.idle_timeout_secs),
            max_payload: config.quic.max_payload,
            peer_max_payload: switchboard_protocol::DEFAULT_MAX_PAYLOAD,
            window: config.delivery.window,
            send_credit: config.delivery.send_credit,
            sends_per_second: config.limits.sends_per_second,
            send_burst: config.limits.send_burst,
        }
    }
}

/// The time, as the driver reads it: monotonic for limits and timeouts, wall-clock for what
/// the device is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Unix milliseconds.
    pub unix_ms: u64,
}

/// Why a session was closed; [`SessionError::code`] goes on the wire with the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A frame came before the handshake reached the point where it is allowed.
    #[error("{frame} before {expected}")]
    TooEarly {
        /// The frame's name.
        frame: &'static str,
        /// The frame the hub waited for.
        expected: &'static str,
    },
    /// A frame only a hub sends.
    #[error("{0} is not sent by a device")]
    NotFromDevice(&'static str),
    /// The stream ended in the middle of the handshake.
    #[error("stream ended before {0}")]
    EndedEarly(&'static str),
    /// The device did not prove who it is.
    #[error("{0}")]
    Authentication(&'static str),
    /// The user is deactivated.
    #[error("the user is deactivated")]
    Deactivated,
    /// The device was revoked (before or during the session).
    #[error("the device was revoked")]
    Revoked,
    /// The enrolment code was refused, or the device name is taken.
    #[error("{0}")]
    Enrolment(String),
    /// The handshake took longer than allowed.
    #[error("handshake too slow")]
    HandshakeTimeout,
    /// More sends unanswered than the send credit.
    #[error("more sends unanswered than the send credit")]
    FlowControl,
    /// Bytes that could not be read as a frame (see [`DecodeError::is_fatal`]).
    #[error("{0}")]
    Decode(DecodeError),
    /// The device closed the session.
    #[error("closed by the device: {0}")]
    ClosedByDevice(String),
    /// The store failed; the detail is logged, not sent.
    #[error("store failure")]
    Store,
    /// The hub failed otherwise (the text is sent).
    #[error("{0}")]
    Internal(String),
    /// The hub is stopping: every commit the session started was answered first.
    #[error("the hub is stopping")]
    ShuttingDown,
}

impl SessionError {
    /// A short name for the metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooEarly { .. } => "too-early",
            Self::NotFromDevice(_) => "hub-only-frame",
            Self::EndedEarly(_) => "ended-early",
            Self::Authentication(_) => "authentication",
            Self::Deactivated => "deactivated",
            Self::Revoked => "revoked",
            Self::Enrolment(_) => "enrolment",
            Self::HandshakeTimeout => "timeout",
            Self::FlowControl => "flow-control",
            Self::Decode(_) => "decode",
            Self::ClosedByDevice(_) => "closed-by-device",
            Self::Store => "store",
            Self::Internal(_) => "internal",
            Self::ShuttingDown => "shutting-down",
        }
    }

    /// The error code on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooEarly { .. } | Self::NotFromDevice(_) => ErrorCode::UNEXPECTED_FRAME,
            Self::EndedEarly(_) | Self::ClosedByDevice(_) => ErrorCode::NORMAL,
            Self::Authentication(_) => ErrorCode::AUTHENTICATION_FAILED,
            Self::Deactivated => ErrorCode::USER_DEACTIVATED,
            Self::Revoked => ErrorCode::DEVICE_REVOKED,
            Self::Enrolment(_) => ErrorCode::ENROLMENT_REFUSED,
            Self::HandshakeTimeout => ErrorCode::IDLE_TIMEOUT,
            Self::FlowControl => ErrorCode::FLOW_CONTROL,
            Self::Decode(error) => error.code(),
            Self::Store | Self::Internal(_) => ErrorCode::INTERNAL,
            Self::ShuttingDown => ErrorCode::SHUTTING_DOWN,
        }
    }
}

/// What the driver is asked to do. Each one that needs an answer names the method that takes
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Look the user up: answer with [`Session::user_looked_up`].
    LookupUser(Address),
    /// Look the device up: answer with [`Session::device_looked_up`].
    LookupDevice(Address),
    /// Enrol a device with a code: answer with [`Session::enrolled`].
    Enrol(Enrolment),
    /// The device is authenticated: register its session (for kicks and refreshes) and make
    /// its send path.
    Opened {
        /// The device.
        device: DeviceId,
        /// Its user.
        account: Account,
    },
    /// Load the queues the device reads, other than `known`: answer with
    /// [`Session::readings_loaded`].
    LoadReadings {
        /// The device.
        device: DeviceId,
        /// The queues the session reads already.
        known: Vec<QueueId>,
    },
    /// Wake the session (with [`Session::woken`]) when one of these queues is appended to;
    /// replaces the previous watch.
    Watch(Vec<QueueId>),
    /// Hand a send to the send path: answer with [`Session::send_answered`].
    Send(Envelope),
    /// Read entries: answer with [`Session::read_done`].
    Read(ReadRequest),
    /// Acknowledge entries in the store: answer with [`Session::ack_done`].
    Ack {
        /// The queue.
        queue: QueueId,
        /// The device.
        device: DeviceId,
        /// Cumulative ack.
        up_to: u64,
        /// Selective acks above it.
        selective: Vec<u64>,
    },
    /// Store a `delivered` receipt the hub made: answer with [`Session::receipt_done`].
    StoreDelivered(Receipt),
    /// Check and store a receipt the device sent: answer with [`Session::receipt_done`].
    StoreReceipt {
        /// The receipt as the device sent it.
        receipt: Receipt,
        /// The device that sent it.
        device: DeviceId,
        /// Each queue the device reads, with the highest sequence this session handed out
        /// from it (acknowledged or not): with the store's cursors, what reached the device.
        handed: Vec<(QueueId, u64)>,
    },
    /// Write what [`Session::poll_transmit`] holds (it ends with `close`), finish the stream
    /// and close the connection with this error's code.
    Close(SessionError),
}

/// A queue the device reads, where its reading starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingStart {
    /// The queue.
    pub queue: QueueId,
    /// Its address.
    pub name: Address,
    /// The device's cumulative ack.
    pub acked: u64,
    /// Sequences above it the device acknowledged selectively.
    pub held: Vec<u64>,
}

/// The answer to [`Action::LoadReadings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Every queue the device reads now.
    pub current: Vec<QueueId>,
    /// Those the session did not know, with where to start.
    pub added: Vec<ReadingStart>,
}

/// The session's state machine.
pub struct Session {
    config: SessionConfig,
    id: u64,
    state: State,
    /// Encoded frames not yet taken by the driver.
    transmit: BytesMut,
    actions: VecDeque<Action>,
    started: Instant,
    /// The hub is stopping: read nothing more, close once every commit is answered.
    draining: bool,
    /// The counters this session adds to (its own, unregistered, unless the driver gives the
    /// hub's).
    metrics: Arc<HubMetrics>,
}

enum State {
    Handshake(handshake::Handshake),
    Open(Box<Open>),
    Closed,
}

/// An authenticated session.
struct Open {
    device: DeviceRecord,
    readings: Vec<Reading>,
    /// Whether the first [`Action::LoadReadings`] was answered.
    loaded: bool,
    /// A reload is under way; `reload_again` if another was asked for meanwhile.
    reloading: bool,
    reload_again: bool,
    window: u32,
    /// Deliveries handed out and not acknowledged, over all queues.
    in_flight: u32,
    /// Window room promised to reads under way.
    reserved: u32,
    /// Sends handed to the send path and not answered.
    unanswered: u32,
    /// Acks and receipts handed to the store and not answered.
    storing: u32,
    tokens: f64,
    refilled: Instant,
    next_read: u64,
    /// The window was full with a queue waiting, at the last fill.
    stalled: bool,
}

/// A queue the device reads.
struct Reading {
    queue: QueueId,
    name: Address,
    /// Highest sequence handed to the device in this session (or its cursor at the start).
    after: u64,
    /// Sequences above the cursor the device already holds (selective acks).
    held: Vec<u64>,
    /// Handed out and not acknowledged, with the `delivered` receipt each one's ack makes.
    in_flight: BTreeMap<u64, Option<Receipt>>,
    /// The queue may hold entries after `after`: appended to since it was last read to the
    /// end, or its last read stopped at a full window.
    pending: bool,
    /// The read under way, and the window room it was promised.
    reading: Option<(u64, u32)>,
}

impl Session {
    /// A session that has just got its stream; `nonce` is the challenge it will send.
    pub fn new(config: SessionConfig, id: u64, nonce: [u8; 32], now: Now) -> Self {
        Self {
            config,
            id,
            state: State::Handshake(handshake::Handshake::new(nonce)),
            transmit: BytesMut::new(),
            actions: VecDeque::new(),
            started: now.instant,
            draining: false,
            metrics: Arc::default(),
        }
    }

    /// Counts what this session does in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<HubMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The encoded frames to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.transmit.is_empty()).then(|| self.transmit.split().freeze())
    }

    /// When [`Session::handle_timeout`] is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Handshake(_) => Some(self.started + self.config.handshake_timeout),
            _ => None,
        }
    }

    /// Whether the driver should read the next frame: not while the handshake waits for a
    /// lookup, the device's queues load, or the hub drains. A device that sends faster is
    /// held back by the transport's flow control.
    pub fn wants_frame(&self) -> bool {
        match &self.state {
            State::Handshake(handshake) => handshake.wants_frame(),
            State::Open(open) => open.loaded && !self.draining && open.storing < MAX_STORING,
            State::Closed => false,
        }
    }

    /// Whether the session has closed (the last action was [`Action::Close`]).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The device, once authenticated.
    pub fn device(&self) -> Option<&DeviceRecord> {
        match &self.state {
            State::Open(open) => Some(&open.device),
            _ => None,
        }
    }

    /// Time passed: ends a handshake that took too long.
    pub fn handle_timeout(&mut self, now: Now) {
        if matches!(self.state, State::Handshake(_))
            && now.instant >= self.started + self.config.handshake_timeout
        {
            self.close(SessionError::HandshakeTimeout);
        }
    }

    /// A frame from the device.
    pub fn handle_frame(&mut self, frame: Frame, now: Now) {
        match &mut self.state {
            State::Handshake(_) => self.handshake_frame(frame),
            State::Open(_) => self.open_frame(frame, now),
            State::Closed => {}
        }
        self.progress();
    }

    /// Bytes from the device that were not a frame. A fatal error (a bad header) closes the
    /// session, as does any error in the handshake; otherwise the device gets an `error` frame
    /// and the session goes on after the frame.
    pub fn handle_decode_error(&mut self, error: DecodeError) {
        match self.state {
            State::Open(_) if !error.is_fatal() => {
                self.push(&ErrorFrame { code: error.code(), text: error.to_string() }.into());
            }
            State::Closed => {}
            _ => self.close(SessionError::Decode(error)),
        }
    }

    /// The stream ended before the handshake finished (after it, the driver just stops).
    pub fn handle_stream_end(&mut self) {
        if let State::Handshake(handshake) = &self.state {
            let expected = handshake.expected();
            self.state = State::Closed;
            self.actions.push_back(Action::Close(SessionError::EndedEarly(expected)));
        }
    }

    /// The device was revoked or its user deactivated.
    pub fn kick(&mut self) {
        if !self.is_closed() {
            self.close(SessionError::Revoked);
        }
    }

    /// The hub is stopping: read no more frames, hand out nothing more, and close once every
    /// commit already started is answered.
    pub fn drain(&mut self) {
        self.draining = true;
        self.progress();
    }

    /// The queues the device reads changed: reload them.
    pub fn refresh(&mut self) {
        let State::Open(open) = &mut self.state else { return };
        if open.reloading || !open.loaded {
            open.reload_again = true;
            return;
        }
        open.reloading = true;
        let known = open.readings.iter().map(|r| r.queue).collect();
        self.actions.push_back(Action::LoadReadings { device: open.device.device, known });
    }

    /// These queues were appended to.
    pub fn woken(&mut self, queues: impl IntoIterator<Item = QueueId>) {
        let State::Open(open) = &mut self.state else { return };
        for queue in queues {
            if let Some(reading) = open.readings.iter_mut().find(|r| r.queue == queue) {
                reading.pending = true;
            }
        }
        self.progress();
    }

    /// The answer to [`Action::LoadReadings`].
    pub fn readings_loaded(&mut self, loaded: Result<Loaded, String>) {
        let State::Open(open) = &mut self.state else { return };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::error!(device = %open.device.name, %error, "cannot load the device's queues");
                return self.close(SessionError::Store);
            }
        };
        open.apply_readings(loaded);
        let queues = open.readings.iter().map(|r| r.queue).collect();
        let again = std::mem::take(&mut open.reload_again);
        self.actions.push_back(Action::Watch(queues));
        if again {
            self.refresh();
        }
        self.progress();
    }

    /// The answer to [`Action::Send`].
    pub fn send_answered(
        &mut self,
        id: switchboard_protocol::MessageId,
        result: Result<(), SendError>,
    ) {
        let State::Open(open) = &mut self.state else { return };
        open.unanswered = open.unanswered.saturating_sub(1);
        let frame: Frame = match result {
            Ok(()) => {
                self.metrics.sends_accepted.inc();
                Accepted { id }.into()
            }
            Err(error) => {
                self.metrics.rejected(error.code());
                Rejected { id, reason: error.code(), detail: error.to_string() }.into()
            }
        };
        self.push(&frame);
        self.progress();
    }

    /// The answer to [`Action::Read`].
    pub fn read_done(&mut self, id: u64, result: Result<Vec<Delivery>, String>) {
        let State::Open(open) = &mut self.state else { return };
        // A read made before a reload dropped its queue finds nothing to fill.
        let Some(index) =
            open.readings.iter().position(|r| r.reading.is_some_and(|(i, _)| i == id))
        else {
            return;
        };
        let deliveries = match result {
            Ok(deliveries) => deliveries,
            Err(error) => {
                tracing::error!(device = %open.device.name, %error, "cannot read queue");
                return self.close(SessionError::Store);
            }
        };
        let limit = self.config.peer_max_payload;
        let handed = open.hand_out(index, deliveries, limit, &mut self.transmit);
        self.metrics.deliveries.inc_by(handed);
        self.progress();
    }

    /// The answer to [`Action::Ack`].
    pub fn ack_done(&mut self, queue: QueueId, result: Result<(), AckError>) {
        let State::Open(open) = &mut self.state else { return };
        open.storing = open.storing.saturating_sub(1);
        if let Err(error) = result {
            let name = open.readings.iter().find(|r| r.queue == queue).map(|r| r.name.clone());
            let text = match name {
                Some(name) => error.text(&name),
                None => error.to_string(),
            };
            if error.code() == ErrorCode::INTERNAL {
                tracing::warn!(device = %open.device.name, %error, "ack not stored");
            }
            self.push(&ErrorFrame { code: error.code(), text }.into());
        }
        self.progress();
    }

    /// The answer to [`Action::StoreDelivered`] and [`Action::StoreReceipt`].
    pub fn receipt_done(&mut self, result: Result<(), ReceiptError>) {
        let State::Open(open) = &mut self.state else { return };
        open.storing = open.storing.saturating_sub(1);
        match result {
            Ok(()) => {}
            Err(error) if error.is_refusal() => {
                let text = error.to_string();
                self.push(&ErrorFrame { code: ErrorCode::RECEIPT_REFUSED, text }.into());
            }
            Err(error) => {
                tracing::debug!(device = %open.device.name, %error, "receipt not stored");
            }
        }
        self.progress();
    }

    fn open_frame(&mut self, frame: Frame, now: Now) {
        let State::Open(open) = &mut self.state else { return };
        match frame {
            Frame::Send(send) => {
                if open.unanswered >= self.config.send_credit {
                    return self.close(SessionError::FlowControl);
                }
                if !open.take_token(&self.config, now.instant) {
                    let error = SendError::RateLimited(self.config.sends_per_second);
                    self.metrics.rejected(error.code());
                    let id = send.envelope.id;
                    let frame = Rejected { id, reason: error.code(), detail: error.to_string() };
                    return self.push(&frame.into());
                }
                open.unanswered += 1;
                self.actions.push_back(Action::Send(send.envelope));
            }
            Frame::Ack(ack) => self.ack(ack, now),
            Frame::Receipt(receipt) => {
                open.storing += 1;
                let handed = open.readings.iter().map(|r| (r.queue, r.after)).collect();
                let device = open.device.device;
                self.actions.push_back(Action::StoreReceipt { receipt, device, handed });
            }
            Frame::Credit(credit) => {
                open.window = open.window.saturating_add(credit.grant).min(MAX_WINDOW);
            }
            Frame::Ping(ping) => self.push(&Pong { nonce: ping.nonce }.into()),
            Frame::Pong(_) => {}
            Frame::Error(error) => {
                tracing::debug!(device = %open.device.name, code = %error.code, text = %error.text, "device reported an error");
            }
            Frame::Close(close) => self.close(SessionError::ClosedByDevice(close.reason)),
            other => self.close(SessionError::NotFromDevice(other.frame_type().name())),
        }
    }

    fn ack(&mut self, ack: Ack, now: Now) {
        let State::Open(open) = &mut self.state else { return };
        let device = open.device.device;
        let Some(reading) = open.readings.iter_mut().find(|r| r.name == ack.queue) else {
            let text = format!("ack of {}: not a queue this device reads", ack.queue);
            return self.push(&ErrorFrame { code: ErrorCode::ACK_REFUSED, text }.into());
        };
        let mut done: Vec<u64> = reading.in_flight.range(..=ack.up_to).map(|(&s, _)| s).collect();
        done.extend(ack.selective.iter().filter(|s| reading.in_flight.contains_key(s)));
        let queue = reading.queue;
        for seq in done {
            let Some(receipt) = reading.in_flight.remove(&seq) else { continue };
            open.in_flight -= 1;
            self.metrics.acks.inc();
            if let Some(mut receipt) = receipt {
                receipt.at_ms = now.unix_ms;
                open.storing += 1;
                self.actions.push_back(Action::StoreDelivered(receipt));
            }
        }
        open.storing += 1;
        self.actions.push_back(Action::Ack {
            queue,
            device,
            up_to: ack.up_to,
            selective: ack.selective,
        });
    }

    /// After every input: read what the window has room for, or close a drained session.
    fn progress(&mut self) {
        let State::Open(open) = &mut self.state else { return };
        if !open.loaded {
            return;
        }
        if self.draining {
            if open.unanswered == 0 && open.storing == 0 {
                self.close(SessionError::ShuttingDown);
            }
            return;
        }
        if open.fill(&mut self.actions) {
            self.metrics.window_stalls.inc();
        }
    }

    fn push(&mut self, frame: &Frame) {
        // Only deliveries can be over the device's limit (handled where they are made); the
        // session's own frames are small.
        let _ = frame.encode(self.config.peer_max_payload, &mut self.transmit);
    }

    fn close(&mut self, error: SessionError) {
        let reason = crate::metrics::label("reason", error.label());
        let closed = match self.state {
            State::Open(_) => &self.metrics.sessions_closed,
            _ => &self.metrics.handshake_failures,
        };
        closed.get_or_create(&reason).inc();
        self.push(&Close { code: error.code(), reason: error.to_string() }.into());
        self.state = State::Closed;
        self.actions.push_back(Action::Close(error));
    }
}

impl Open {
    fn new(device: DeviceRecord, config: &SessionConfig, now: Instant) -> Self {
        Self {
            device,
            readings: Vec::new(),
            loaded: false,
            reloading: true,
            reload_again: false,
            window: config.window,
            in_flight: 0,
            reserved: 0,
            unanswered: 0,
            storing: 0,
            tokens: f64::from(config.send_burst),
            refilled: now,
            next_read: 1,
            stalled: false,
        }
    }

    /// Adds the queues the device was subscribed to since the session began, and drops those
    /// it no longer reads (their in-flight deliveries and reads no longer count).
    fn apply_readings(&mut self, loaded: Loaded) {
        for reading in self.readings.iter().filter(|r| !loaded.current.contains(&r.queue)) {
            self.in_flight -= reading.in_flight.len() as u32;
            self.reserved -= reading.reading.map_or(0, |(_, room)| room);
        }
        self.readings.retain(|r| loaded.current.contains(&r.queue));
        self.readings.extend(loaded.added.into_iter().map(|start| Reading {
            queue: start.queue,
            name: start.name,
            after: start.acked,
            held: start.held,
            in_flight: BTreeMap::new(),
            pending: true,
            reading: None,
        }));
        // Appends between the old watch and the new one were not seen.
        self.readings.iter_mut().for_each(|r| r.pending = true);
        self.loaded = true;
        self.reloading = false;
    }

    /// Asks to read every queue that may hold entries, while the window has room. Whether the
    /// window has just become the limit: a queue has entries waiting and no room is left.
    fn fill(&mut self, actions: &mut VecDeque<Action>) -> bool {
        for reading in &mut self.readings {
            let room = self.window.saturating_sub(self.in_flight + self.reserved);
            if room == 0 {
                break;
            }
            if !reading.pending || reading.reading.is_some() {
                continue;
            }
            let id = self.next_read;
            self.next_read += 1;
            reading.reading = Some((id, room));
            self.reserved += room;
            actions.push_back(Action::Read(ReadRequest {
                id,
                queue: reading.queue,
                name: reading.name.clone(),
                after: reading.after,
                max: room as usize,
            }));
        }
        let full = self.window.saturating_sub(self.in_flight + self.reserved) == 0;
        let waiting = full && self.readings.iter().any(|r| r.pending && r.reading.is_none());
        let newly = waiting && !self.stalled;
        self.stalled = waiting;
        newly
    }

    /// Hands the entries of a read to the device.
    fn hand_out(
        &mut self,
        index: usize,
        deliveries: Vec<Delivery>,
        limit: u32,
        transmit: &mut BytesMut,
    ) -> u64 {
        let mut handed = 0;
        let reading = &mut self.readings[index];
        let Some((_, room)) = reading.reading.take() else { return 0 };
        self.reserved -= room;
        reading.pending = deliveries.len() >= room as usize;
        for delivery in deliveries {
            reading.after = delivery.seq;
            if reading.held.binary_search(&delivery.seq).is_ok() {
                continue;
            }
            match delivery.frame.encode(limit, transmit) {
                Ok(()) => {
                    reading.in_flight.insert(delivery.seq, delivery.receipt);
                    self.in_flight += 1;
                    handed += 1;
                }
                // The configuration keeps every stored message within the device's frame
                // limit; an entry that is not cannot be handed out and stays for a client
                // with a larger limit.
                Err(error) => tracing::error!(
                    device = %self.device.name, seq = delivery.seq, %error,
                    "a queue entry does not fit in a frame"
                ),
            }
        }
        handed
    }

    fn take_token(&mut self, config: &SessionConfig, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * f64::from(config.sends_per_second))
            .min(f64::from(config.send_burst.max(1)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
