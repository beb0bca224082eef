//! One device session: handshake, then sends, deliveries, acks and receipts on one stream.
//!
//! One task per session owns both halves of the stream: it reads the next frame only when it
//! is ready for one, so a device that sends faster than its credit is held back by QUIC flow
//! control, not by memory (and an idle connection costs one task, not two). Store work (commits, reads) never runs on this task's thread:
//! commits are futures completed by shard writers, reads go to `spawn_blocking`.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use ed25519_dalek::{Signature, VerifyingKey};
use futures_util::{
    StreamExt,
    stream::{FuturesOrdered, FuturesUnordered},
};
use switchboard_protocol::{
    Ack, Address, Challenge, Close, Deliver, DeliverReceipt, ErrorCode, ErrorFrame, Flags, Frame,
    Hello, MessageId, Pong, Receipt, ReceiptKind, RejectReason, Rejected, Welcome, proof_message,
};
use tokio::sync::watch;

use crate::{
    fanout::{Hub, Refusal, Sender, Stored, Submission, decode_entry},
    net::framed::{FrameReader, FrameWriter, ReadError},
    store::{
        Cursor, DeviceId, DeviceRecord, EnqueueRequest, Enqueued, QueueId, StoreError, UserStatus,
        system_clock_ms,
    },
};

/// Largest delivery window a device may ask for with `credit`.
const MAX_WINDOW: u32 = 65_536;

/// How a session ended, for logs.
#[derive(Debug)]
pub(crate) enum End {
    Closed { code: ErrorCode, reason: String },
    PeerGone(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed { code, reason } => write!(f, "closed by the hub: {code}: {reason}"),
            Self::PeerGone(why) => write!(f, "device gone: {why}"),
        }
    }
}

/// Runs one connection's session to its end.
pub(crate) async fn run(
    hub: Arc<Hub>,
    connection: quinn::Connection,
    session_id: u64,
    shutdown: watch::Receiver<bool>,
) -> End {
    let handshake = Duration::from_secs(hub.config.quic.handshake_timeout_secs);
    let (send, recv) = match tokio::time::timeout(handshake, connection.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(error)) => return End::PeerGone(error.to_string()),
        Err(_) => {
            connection.close(ErrorCode::IDLE_TIMEOUT.0.into(), b"no stream opened in time");
            return End::Closed { code: ErrorCode::IDLE_TIMEOUT, reason: "no stream".into() };
        }
    };
    let mut writer = FrameWriter::new(send, switchboard_protocol::DEFAULT_MAX_PAYLOAD);
    let mut reader = FrameReader::new(recv, hub.config.quic.max_payload);
    let auth = tokio::time::timeout(handshake, authenticate(&hub, &mut reader, &mut writer));
    let device = match auth.await {
        Ok(Ok(device)) => device,
        Ok(Err((code, reason))) => return close(&mut writer, &connection, code, reason).await,
        Err(_) => {
            return close(&mut writer, &connection, ErrorCode::IDLE_TIMEOUT, "handshake too slow")
                .await;
        }
    };
    let welcome = Welcome {
        session_id,
        server_time_ms: system_clock_ms(),
        max_payload: hub.config.quic.max_payload,
        send_credit: hub.config.delivery.send_credit,
    };
    if let Err(error) = writer.send(&welcome.into()).await {
        return End::PeerGone(error.to_string());
    }
    tracing::debug!(session_id, device = %device.name, "session open");
    let session = match Session::new(hub.clone(), device).await {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(session_id, %error, "cannot load the device's queues");
            return close(&mut writer, &connection, ErrorCode::INTERNAL, "store failure").await;
        }
    };
    session.run(&mut writer, &mut reader, &connection, shutdown).await
}

/// Sends `close` and closes the connection with the same code.
async fn close(
    writer: &mut FrameWriter,
    connection: &quinn::Connection,
    code: ErrorCode,
    reason: impl Into<String>,
) -> End {
    let reason = reason.into();
    let _ = writer.push(&Close { code, reason: reason.clone() }.into());
    writer.finish().await;
    // Give the close frame a moment to leave before the connection's close discards it.
    let _ = tokio::time::timeout(Duration::from_millis(200), connection.closed()).await;
    connection.close(code.0.into(), reason.as_bytes());
    End::Closed { code, reason }
}

type AuthResult = Result<DeviceRecord, (ErrorCode, String)>;

async fn authenticate(
    hub: &Arc<Hub>,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> AuthResult {
    let hello: Hello = match reader.next().await {
        Ok(Some(Frame::Hello(hello))) => hello,
        Ok(Some(other)) => {
            return Err((
                ErrorCode::UNEXPECTED_FRAME,
                format!("{} before hello", other.frame_type().name()),
            ));
        }
        Ok(None) => return Err((ErrorCode::NORMAL, "stream ended before hello".into())),
        Err(ReadError::Decode(error)) => return Err((error.code(), error.to_string())),
        Err(ReadError::Stream(error)) => return Err((ErrorCode::NORMAL, error.to_string())),
    };
    let refused = |code: ErrorCode, why: &str| Err((code, why.to_string()));
    let Some(account) = hello.device.account() else {
        return refused(ErrorCode::AUTHENTICATION_FAILED, "hello.device is not a device address");
    };
    let store = hub.store.clone();
    let name = account.as_str().to_string();
    let user = blocking(move || store.user(&name)).await;
    let user = match user {
        Ok(Some(user)) => user,
        Ok(None) => return refused(ErrorCode::AUTHENTICATION_FAILED, "unknown user"),
        Err(error) => return Err((ErrorCode::INTERNAL, error.to_string())),
    };
    if user.status == UserStatus::Deactivated || hub.is_deactivated(&user.name) {
        return refused(ErrorCode::USER_DEACTIVATED, "the user is deactivated");
    }
    let nonce: [u8; 32] = rand::random();
    if writer.send(&Challenge { nonce }.into()).await.is_err() {
        return refused(ErrorCode::NORMAL, "peer gone");
    }
    let proof = match reader.next().await {
        Ok(Some(Frame::Proof(proof))) => proof,
        Ok(Some(other)) => {
            return Err((
                ErrorCode::UNEXPECTED_FRAME,
                format!("{} before proof", other.frame_type().name()),
            ));
        }
        Ok(None) => return refused(ErrorCode::NORMAL, "stream ended before proof"),
        Err(ReadError::Decode(error)) => return Err((error.code(), error.to_string())),
        Err(ReadError::Stream(error)) => return Err((ErrorCode::NORMAL, error.to_string())),
    };
    let key = match VerifyingKey::from_bytes(&hello.public_key) {
        Ok(key) if !key.is_weak() => key,
        _ => return refused(ErrorCode::AUTHENTICATION_FAILED, "not a usable ed25519 public key"),
    };
    let signature = Signature::from_bytes(&proof.signature);
    if key.verify_strict(&proof_message(&nonce, &hello.device), &signature).is_err() {
        return refused(ErrorCode::AUTHENTICATION_FAILED, "the proof does not verify");
    }
    let store = hub.store.clone();
    let device_name = hello.device.as_str().to_string();
    let known = blocking(move || store.device_record(&device_name)).await;
    let known = known.map_err(|e| (ErrorCode::INTERNAL, e.to_string()))?;
    if let Some(known) = known {
        // Also the case of an enrolment whose welcome was lost: the code is spent, but the
        // device proved the key it enrolled with.
        if known.public_key != hello.public_key {
            return refused(
                ErrorCode::AUTHENTICATION_FAILED,
                "another key is enrolled for this device",
            );
        }
        if known.revoked {
            return refused(ErrorCode::DEVICE_REVOKED, "the device was revoked");
        }
        return Ok(known);
    }
    let Some(code) = hello.enrolment_code else {
        return refused(ErrorCode::AUTHENTICATION_FAILED, "unknown device; enrol it with a code");
    };
    match hub.store.enrol_device(user.queue, hello.device.as_str(), hello.public_key, &code).await {
        Ok(record) => {
            tracing::info!(device = %record.name, "device enrolled");
            if let Err(error) = hub.on_enrolled(&record).await {
                return Err((ErrorCode::INTERNAL, error.to_string()));
            }
            Ok(record)
        }
        Err(StoreError::EnrolmentRefused(why)) => refused(ErrorCode::ENROLMENT_REFUSED, why),
        Err(StoreError::Exists(_)) => {
            refused(ErrorCode::ENROLMENT_REFUSED, "this device name is taken")
        }
        Err(error) => Err((ErrorCode::INTERNAL, error.to_string())),
    }
}

/// Runs blocking store work off the tokio workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(StoreError::Storage(format!("blocking task failed: {e}"))))
}

/// A message handed to the device and not yet acknowledged.
struct InFlight {
    /// A `delivered` receipt to make when the device acknowledges it.
    receipt: Option<Receipt>,
}

/// A queue the device reads.
struct Reading {
    queue: QueueId,
    name: Address,
    /// Highest sequence handed to the device in this session (or its cursor at the start).
    after: u64,
    /// Sequences above the cursor the device already holds (selective acks).
    held: Vec<u64>,
    in_flight: BTreeMap<u64, InFlight>,
    /// The queue may hold entries after `after`: appended to since it was last read to the
    /// end, or its last read stopped at a full window.
    pending: bool,
}

/// The queues `device` reads, other than `known`, each from its cursor.
async fn load_readings(
    hub: &Arc<Hub>,
    device: DeviceId,
    known: &[QueueId],
) -> Result<Vec<Reading>, StoreError> {
    let store = hub.store.clone();
    let known = known.to_vec();
    let queues = blocking(move || {
        let mut out = Vec::new();
        for queue in store.subscriptions(device)? {
            if known.contains(&queue) {
                continue;
            }
            let cursor = store.cursor(queue, device)?;
            let name = store.queue_name(queue)?;
            out.push((queue, cursor, name));
        }
        Ok(out)
    })
    .await?;
    let mut readings = Vec::new();
    for (queue, cursor, name) in queues {
        // Queues not named by an address (none today) are not delivered to devices.
        let Ok(name) = Address::parse(&name) else { continue };
        readings.push(Reading {
            queue,
            name,
            after: cursor.acked,
            held: cursor.selective,
            in_flight: BTreeMap::new(),
            pending: true,
        });
    }
    Ok(readings)
}

enum Outcome {
    Sent(MessageId, Result<(), Refusal>),
    Acked(Result<Cursor, StoreError>),
    Stored(Result<(), Refusal>),
}

type Work = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A send's first commit (to its recipient), finished in the order the sends arrived so that
/// the copies to the sender's own queue are appended in that order too.
type FirstCommit = Pin<Box<dyn Future<Output = (MessageId, FirstResult, Submitted)> + Send>>;
type FirstResult = Result<Enqueued, StoreError>;
/// The recipient's queue and the sender's copy still to commit.
type Submitted = (QueueId, Option<(QueueId, EnqueueRequest)>);

struct Session {
    hub: Arc<Hub>,
    device: DeviceRecord,
    sender: Sender,
    readings: Vec<Reading>,
    window: u32,
    in_flight: u32,
    /// Sends not yet answered.
    unanswered: u32,
    /// Whether a queue may hold entries not yet handed out.
    more: bool,
    tokens: f64,
    refilled: Instant,
    first_commits: FuturesOrdered<FirstCommit>,
    work: FuturesUnordered<Work>,
}

impl Session {
    async fn new(hub: Arc<Hub>, device: DeviceRecord) -> Result<Self, StoreError> {
        let readings = load_readings(&hub, device.device, &[]).await?;
        let account = Address::parse(device.name.split('/').next().unwrap_or_default())
            .map_err(|e| StoreError::Corrupt(format!("device record name: {e}")))?;
        let limits = &hub.config.limits;
        Ok(Self {
            sender: Sender { account, queue: device.account },
            window: hub.config.delivery.window,
            tokens: f64::from(limits.send_burst),
            refilled: Instant::now(),
            hub,
            device,
            readings,
            in_flight: 0,
            unanswered: 0,
            more: true,
            first_commits: FuturesOrdered::new(),
            work: FuturesUnordered::new(),
        })
    }

    async fn run(
        mut self,
        writer: &mut FrameWriter,
        reader: &mut FrameReader,
        connection: &quinn::Connection,
        mut shutdown: watch::Receiver<bool>,
    ) -> End {
        let hub = self.hub.clone();
        let queues: Vec<QueueId> = self.readings.iter().map(|r| r.queue).collect();
        let watch = hub.notifier.watch(&queues);
        let signals = hub.register_session(self.device.device);
        let mut watch = watch;
        let mut draining = *shutdown.borrow();
        loop {
            if self.more
                && self.in_flight < self.window
                && !draining
                && let Err(error) = self.fill(writer).await
            {
                tracing::error!(device = %self.device.name, %error, "cannot read queue");
                return close(writer, connection, ErrorCode::INTERNAL, "store failure").await;
            }
            if writer.pending() > 0 && writer.flush().await.is_err() {
                return End::PeerGone("write failed".into());
            }
            if draining && self.work.is_empty() && self.first_commits.is_empty() {
                return close(writer, connection, ErrorCode::SHUTTING_DOWN, "the hub is stopping")
                    .await;
            }
            tokio::select! {
                biased;
                () = signals.refresh.notified() => {
                    match self.reload().await {
                        Ok(()) => {
                            let queues: Vec<QueueId> = self.readings.iter().map(|r| r.queue).collect();
                            watch = hub.notifier.watch(&queues);
                            // Appends between the old watch and the new one were not seen.
                            self.readings.iter_mut().for_each(|r| r.pending = true);
                            self.more = true;
                        }
                        Err(error) => {
                            tracing::error!(device = %self.device.name, %error, "cannot reload subscriptions");
                            return close(writer, connection, ErrorCode::INTERNAL, "store failure").await;
                        }
                    }
                }
                () = signals.kick.notified() => {
                    return close(writer, connection, ErrorCode::DEVICE_REVOKED, "the device was revoked").await;
                }
                changed = shutdown.changed(), if !draining => {
                    // A dropped sender means the hub is gone: stop as for a shutdown.
                    draining = changed.is_err() || *shutdown.borrow();
                }
                Some((id, result, submission)) = self.first_commits.next(), if !self.first_commits.is_empty() => {
                    self.first_committed(id, result, submission);
                }
                Some(outcome) = self.work.next(), if !self.work.is_empty() => {
                    self.finish(outcome, writer);
                }
                // Cancel-safe: a frame partly read stays in the reader's buffer.
                item = reader.next(), if !draining => {
                    let frame = match item {
                        Ok(Some(frame)) => frame,
                        Ok(None) => return End::PeerGone("stream finished".into()),
                        Err(ReadError::Stream(error)) => return End::PeerGone(error.to_string()),
                        Err(ReadError::Decode(error)) if error.is_fatal() => {
                            return close(writer, connection, error.code(), error.to_string()).await;
                        }
                        Err(ReadError::Decode(error)) => {
                            let _ = writer.push(&ErrorFrame { code: error.code(), text: error.to_string() }.into());
                            continue;
                        }
                    };
                    if let Err((code, reason)) = self.handle(frame, writer) {
                        return close(writer, connection, code, reason).await;
                    }
                }
                () = watch.woken() => {
                    for queue in watch.take_changed() {
                        if let Some(reading) = self.readings.iter_mut().find(|r| r.queue == queue) {
                            reading.pending = true;
                        }
                    }
                    self.more = true;
                }
            }
        }
    }

    /// Adds the queues the device was subscribed to since the session began, and
    /// Drops the queues it no longer reads (their in-flight deliveries no longer count).
    async fn reload(&mut self) -> Result<(), StoreError> {
        let store = self.hub.store.clone();
        let device = self.device.device;
        let current = blocking(move || store.subscriptions(device)).await?;
        for reading in self.readings.iter().filter(|r| !current.contains(&r.queue)) {
            self.in_flight -= reading.in_flight.len() as u32;
        }
        self.readings.retain(|r| current.contains(&r.queue));
        let known: Vec<QueueId> = self.readings.iter().map(|r| r.queue).collect();
        let added = load_readings(&self.hub, self.device.device, &known).await?;
        self.readings.extend(added);
        Ok(())
    }

    /// Hands out entries until the window is full or every queue that may have some is
    /// drained.
    async fn fill(&mut self, writer: &mut FrameWriter) -> Result<(), StoreError> {
        for index in 0..self.readings.len() {
            let room = self.window.saturating_sub(self.in_flight) as usize;
            if room == 0 {
                break;
            }
            let reading = &self.readings[index];
            if !reading.pending {
                continue;
            }
            let (store, queue, after) = (self.hub.store.clone(), reading.queue, reading.after);
            // From memory when it can be (the usual case: new messages are in the memtable),
            // else on a blocking thread.
            let entries = match store.read_after_cached(queue, after, room)? {
                Some(entries) => entries,
                None => blocking(move || store.read_after(queue, after, room)).await?,
            };
            let reading = &mut self.readings[index];
            reading.pending = entries.len() == room;
            for entry in entries {
                reading.after = entry.seq;
                if reading.held.binary_search(&entry.seq).is_ok() {
                    continue;
                }
                let (frame, receipt): (Frame, _) = match decode_entry(&entry.payload)? {
                    Stored::Message(envelope) => {
                        let receipt = (envelope.flags.contains(Flags::WANT_RECEIPTS)
                            && envelope.from != self.sender.account)
                            .then(|| Receipt {
                                id: envelope.id,
                                kind: ReceiptKind::Delivered,
                                message_from: envelope.from.clone(),
                                by: reading.name.clone(),
                                at_ms: 0,
                            });
                        let queue = reading.name.clone();
                        (Deliver { queue, seq: entry.seq, envelope }.into(), receipt)
                    }
                    Stored::Receipt(receipt) => {
                        let queue = reading.name.clone();
                        (DeliverReceipt { queue, seq: entry.seq, receipt }.into(), None)
                    }
                };
                match writer.push(&frame) {
                    Ok(()) => {
                        reading.in_flight.insert(entry.seq, InFlight { receipt });
                        self.in_flight += 1;
                    }
                    // The configuration keeps every stored message within the device's frame
                    // limit; an entry that is not cannot be handed out and stays for a client
                    // with a larger limit.
                    Err(error) => tracing::error!(
                        device = %self.device.name, seq = entry.seq, %error,
                        "a queue entry does not fit in a frame"
                    ),
                }
            }
        }
        self.more = self.readings.iter().any(|r| r.pending);
        Ok(())
    }

    fn handle(
        &mut self,
        frame: Frame,
        writer: &mut FrameWriter,
    ) -> Result<(), (ErrorCode, String)> {
        match frame {
            Frame::Send(send) => {
                if self.unanswered >= self.hub.config.delivery.send_credit {
                    return Err((
                        ErrorCode::FLOW_CONTROL,
                        "more sends unanswered than the send credit".into(),
                    ));
                }
                let id = send.envelope.id;
                if !self.take_token() {
                    let rejected = Rejected {
                        id,
                        reason: RejectReason::RATE_LIMITED,
                        detail: format!(
                            "more than {} sends per second",
                            self.hub.config.limits.sends_per_second
                        ),
                    };
                    let _ = writer.push(&rejected.into());
                    return Ok(());
                }
                match self.hub.submit(&self.sender, send.envelope) {
                    Ok(Submission { recipient, commit, copy }) => {
                        self.unanswered += 1;
                        self.first_commits.push_back(Box::pin(async move {
                            (id, commit.await, (recipient, copy))
                        }));
                    }
                    Err(refusal) => {
                        let rejected =
                            Rejected { id, reason: refusal.reason, detail: refusal.detail };
                        let _ = writer.push(&rejected.into());
                    }
                }
            }
            Frame::Ack(ack) => self.ack(ack, writer),
            Frame::Receipt(receipt) => {
                let own = receipt.by == self.sender.account
                    || receipt.by.account().as_ref() == Some(&self.sender.account);
                let snapshot = self.hub.org.snapshot();
                // A receipt by a line the device's user reads: the colleagues on the line see
                // it too (the shared receipt).
                let line = snapshot.line(receipt.by.as_str()).filter(|unit| {
                    snapshot
                        .lines_of(unit.org, self.sender.account.as_str())
                        .iter()
                        .any(|u| u.id == unit.id)
                });
                let shared = line.is_some();
                if !own && !shared {
                    let text = format!(
                        "a receipt by {} from a device of {}",
                        receipt.by, self.sender.account
                    );
                    let _ =
                        writer.push(&ErrorFrame { code: ErrorCode::UNEXPECTED_FRAME, text }.into());
                    return Ok(());
                }
                let hub = self.hub.clone();
                self.work.push(Box::pin(async move {
                    let colleagues = if shared { Some(receipt.by.clone()) } else { None };
                    Outcome::Stored(hub.store_receipt(receipt, colleagues).await)
                }));
            }
            Frame::Credit(credit) => {
                self.window = self.window.saturating_add(credit.grant).min(MAX_WINDOW);
                self.more = true;
            }
            Frame::Ping(ping) => {
                let _ = writer.push(&Pong { nonce: ping.nonce }.into());
            }
            Frame::Pong(_) => {}
            Frame::Error(error) => {
                tracing::debug!(device = %self.device.name, code = %error.code, text = %error.text, "device reported an error");
            }
            Frame::Close(close) => {
                return Err((ErrorCode::NORMAL, format!("closed by the device: {}", close.reason)));
            }
            other => {
                return Err((
                    ErrorCode::UNEXPECTED_FRAME,
                    format!("{} is not sent by a device", other.frame_type().name()),
                ));
            }
        }
        Ok(())
    }

    /// A send's first commit finished (in send order): commit the sender's copy, then answer.
    fn first_committed(
        &mut self,
        id: MessageId,
        result: FirstResult,
        (recipient, copy): Submitted,
    ) {
        let hub = self.hub.clone();
        match result {
            Ok(_) => {
                hub.notifier.wake(recipient);
                let copy = copy.map(|copy| (copy.0, hub.commit_copy(copy)));
                self.work.push(Box::pin(async move {
                    if let Some((queue, pending)) = copy {
                        match pending.await {
                            Ok(_) => hub.notifier.wake(queue),
                            // The message is durable for its recipient; the copy only mirrors
                            // it to the sender's other devices.
                            Err(error) => tracing::warn!(
                                %error, "a sent message was not copied to the sender's own queue"
                            ),
                        }
                    }
                    Outcome::Sent(id, Ok(()))
                }));
            }
            Err(error) => {
                self.work
                    .push(Box::pin(async move { Outcome::Sent(id, Err(Refusal::from(error))) }));
            }
        }
    }

    fn ack(&mut self, ack: Ack, writer: &mut FrameWriter) {
        let Some(reading) = self.readings.iter_mut().find(|r| r.name == ack.queue) else {
            let text = format!("{} is not a queue this device reads", ack.queue);
            let _ = writer.push(&ErrorFrame { code: ErrorCode::UNEXPECTED_FRAME, text }.into());
            return;
        };
        let mut done: Vec<u64> = reading.in_flight.range(..=ack.up_to).map(|(&s, _)| s).collect();
        done.extend(ack.selective.iter().filter(|s| reading.in_flight.contains_key(s)));
        let now = system_clock_ms();
        for seq in done {
            if let Some(item) = reading.in_flight.remove(&seq) {
                self.in_flight -= 1;
                self.more = true;
                if let Some(mut receipt) = item.receipt {
                    receipt.at_ms = now;
                    let hub = self.hub.clone();
                    self.work.push(Box::pin(async move {
                        Outcome::Stored(hub.store_receipt(receipt, None).await)
                    }));
                }
            }
        }
        // Submitted now, not when the future is first polled: an ack the hub has read is
        // committed even if the session ends at once.
        let device: DeviceId = self.device.device;
        let pending = self.hub.store.ack(reading.queue, device, ack.up_to, ack.selective);
        self.work.push(Box::pin(async move { Outcome::Acked(pending.await) }));
    }

    fn finish(&mut self, outcome: Outcome, writer: &mut FrameWriter) {
        match outcome {
            Outcome::Sent(id, result) => {
                self.unanswered -= 1;
                let frame: Frame = match result {
                    Ok(()) => switchboard_protocol::Accepted { id }.into(),
                    Err(refusal) => {
                        Rejected { id, reason: refusal.reason, detail: refusal.detail }.into()
                    }
                };
                let _ = writer.push(&frame);
            }
            Outcome::Acked(Ok(_)) => {}
            Outcome::Acked(Err(error)) => {
                let code = match error {
                    StoreError::AckBeyondTail { .. } | StoreError::TooManySelectiveAcks { .. } => {
                        ErrorCode::MALFORMED
                    }
                    _ => ErrorCode::INTERNAL,
                };
                let _ =
                    writer.push(&ErrorFrame { code, text: format!("ack refused: {error}") }.into());
            }
            Outcome::Stored(Ok(())) => {}
            Outcome::Stored(Err(refusal)) => {
                tracing::debug!(device = %self.device.name, detail = %refusal.detail, "receipt not stored");
            }
        }
    }

    fn take_token(&mut self) -> bool {
        let limits = &self.hub.config.limits;
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * f64::from(limits.sends_per_second))
            .min(f64::from(limits.send_burst.max(1)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
