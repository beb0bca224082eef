//! The I/O driver of one device session: owns the QUIC stream and the futures, and carries
//! out what the state machine in [`crate::session`] asks.
//!
//! One task per session owns both halves of the stream. It reads the next frame only when the
//! session wants one, so a device that sends faster than its credit is held back by QUIC flow
//! control, not by memory (and an idle connection costs one task, not two). Store work never
//! runs on this task's thread: commits are futures completed by shard writers, reads that
//! need the disk go to the blocking pool; reads from memory are answered on the spot.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures_util::{StreamExt, stream::FuturesUnordered};
use switchboard_protocol::{ErrorCode, MessageId};
use tokio::sync::watch;

use crate::{
    fanout::{
        Account, AckError, Delivery, Hub, Login, Raised, ReadRequest, ReceiptError, SendError,
        Sends, SessionSignals, Watch,
    },
    net::framed::{FrameReader, ReadError},
    session::{Action, EnrolError, Enrolment, Loaded, Now, ReadingStart, Session, SessionConfig},
    store::{DeviceId, DeviceRecord, QueueId, StoreError, system_clock_ms},
};

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

/// The answer to an action, fed back to the session when its future completes.
enum Answer {
    User(Result<Option<Login>, StoreError>),
    Device(Result<Option<DeviceRecord>, StoreError>),
    Enrolled(Result<DeviceRecord, EnrolError>),
    Readings(Result<Loaded, StoreError>),
    Read(u64, Result<Vec<Delivery>, StoreError>),
    Acked(QueueId, Result<(), AckError>),
    Receipt(Result<(), ReceiptError>),
}

type Work = Pin<Box<dyn Future<Output = Answer> + Send>>;

fn now() -> Now {
    Now { instant: std::time::Instant::now(), unix_ms: system_clock_ms() }
}

/// Runs one connection's session to its end.
pub(crate) async fn run(
    hub: Arc<Hub>,
    connection: quinn::Connection,
    session_id: u64,
    slot: crate::fanout::HandshakeSlot,
    mut shutdown: watch::Receiver<bool>,
) -> End {
    // Held until the device is welcomed (or the session ends first).
    let mut slot = Some(slot);
    let config = SessionConfig::new(&hub.config());
    let (mut send, recv) =
        match tokio::time::timeout(config.handshake_timeout, connection.accept_bi()).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(error)) => {
                let reason = crate::metrics::label("reason", "peer-gone");
                hub.metrics().handshake_failures.get_or_create(&reason).inc();
                return End::PeerGone(error.to_string());
            }
            Err(_) => {
                let reason = crate::metrics::label("reason", "no-stream");
                hub.metrics().handshake_failures.get_or_create(&reason).inc();
                connection.close(ErrorCode::IDLE_TIMEOUT.0.into(), b"no stream opened in time");
                return End::Closed { code: ErrorCode::IDLE_TIMEOUT, reason: "no stream".into() };
            }
        };
    let mut reader =
        FrameReader::new(recv, config.max_payload).counting(hub.metrics().received_bytes.clone());
    let mut session =
        Session::new(config, session_id, rand::random(), now()).with_metrics(hub.metrics().clone());
    let mut driver = Driver {
        hub: &hub,
        work: FuturesUnordered::new(),
        sends: None,
        signals: None,
        watch: None,
        account: None,
        remote: connection.remote_address().ip(),
    };
    // Whether the session was told to drain. Not `*shutdown.borrow()`: a shutdown that begins
    // while this task is busy must still reach the session at the next select.
    let mut draining = *shutdown.borrow();
    if draining {
        session.drain();
    }
    loop {
        if slot.is_some() && session.device().is_some() {
            slot = None;
        }
        if let Some(end) = driver.carry_out(&mut session) {
            return close(send, &connection, &mut session, end).await;
        }
        if let Some(bytes) = session.poll_transmit()
            && written(&hub, bytes.len(), send.write_chunk(bytes).await).is_err()
        {
            return gone(&hub, &session, "write failed".into());
        }
        let deadline = session.poll_timeout();
        tokio::select! {
            biased;
            raised = signal(&driver.signals) => {
                // A kick ends the session; a refresh before it would only load queues.
                if raised.kick {
                    session.kick();
                } else if raised.refresh {
                    session.refresh();
                }
            }
            changed = shutdown.changed(), if !draining => {
                // A dropped sender means the hub is gone: stop as for a shutdown.
                draining = changed.is_err() || *shutdown.borrow();
                if draining {
                    session.drain();
                }
            }
            Some((id, result)) = next_answer(&mut driver.sends) => session.send_answered(id, result),
            Some(answer) = driver.work.next(), if !driver.work.is_empty() => {
                answer.feed(&mut session);
            }
            // Cancel-safe: a frame partly read stays in the reader's buffer.
            item = reader.next(), if session.wants_frame() => match item {
                Ok(Some(frame)) => session.handle_frame(frame, now()),
                Ok(None) if session.device().is_some() => return gone(&hub, &session, "stream finished".into()),
                Ok(None) => session.handle_stream_end(),
                Err(ReadError::Stream(error)) => return gone(&hub, &session, error.to_string()),
                Err(ReadError::Decode(error)) => session.handle_decode_error(error),
            },
            () = woken(&driver.watch) => {
                if let Some(watch) = &driver.watch {
                    session.woken(watch.take_changed());
                }
            }
            () = sleep_until(deadline) => session.handle_timeout(now()),
        }
    }
}

/// The device went away without a `close`: counted as a failed handshake or a closed session.
fn gone(hub: &Hub, session: &Session, why: String) -> End {
    let reason = crate::metrics::label("reason", "peer-gone");
    let closed = match session.device() {
        Some(_) => &hub.metrics().sessions_closed,
        None => &hub.metrics().handshake_failures,
    };
    closed.get_or_create(&reason).inc();
    End::PeerGone(why)
}

/// Counts the bytes of a write that went out.
fn written(
    hub: &Hub,
    bytes: usize,
    result: Result<(), quinn::WriteError>,
) -> Result<(), quinn::WriteError> {
    if result.is_ok() {
        hub.metrics().sent_bytes.inc_by(bytes as u64);
    }
    result
}

/// Writes what is left and the `close` frame, then closes the connection with the same code.
async fn close(
    mut send: quinn::SendStream,
    connection: &quinn::Connection,
    session: &mut Session,
    end: End,
) -> End {
    if let Some(bytes) = session.poll_transmit() {
        let _ = send.write_chunk(bytes).await;
    }
    let _ = send.finish();
    if let End::Closed { code, reason } = &end {
        // Give the close frame a moment to leave before the connection's close discards it.
        let _ = tokio::time::timeout(Duration::from_millis(200), connection.closed()).await;
        connection.close(code.0.into(), reason.as_bytes());
    }
    end
}

/// Carries out a session's actions.
struct Driver<'h> {
    hub: &'h Arc<Hub>,
    work: FuturesUnordered<Work>,
    /// The send path, once the device is known.
    sends: Option<Sends>,
    signals: Option<Arc<SessionSignals>>,
    watch: Option<Watch<'h>>,
    account: Option<Account>,
    /// The device's address, for the limits on failed enrolments.
    remote: std::net::IpAddr,
}

impl<'h> Driver<'h> {
    /// Carries out every action the session asked for; `Some` when it closed.
    fn carry_out(&mut self, session: &mut Session) -> Option<End> {
        while let Some(action) = session.poll_action() {
            if let Some(end) = self.start(action, session) {
                return Some(end);
            }
        }
        None
    }

    fn start(&mut self, action: Action, session: &mut Session) -> Option<End> {
        let hub = self.hub.clone();
        match action {
            Action::LookupUser(account) => {
                self.work.push(Box::pin(async move { Answer::User(hub.login(&account).await) }))
            }
            Action::LookupDevice(device) => self.work.push(Box::pin(async move {
                let name = device.as_str().to_string();
                Answer::Device(hub.store().blocking(move |store| store.device_record(&name)).await)
            })),
            Action::Enrol(enrolment) => {
                let remote = self.remote;
                self.work.push(Box::pin(async move {
                    Answer::Enrolled(enrol(&hub, remote, enrolment).await)
                }))
            }
            Action::Opened { device, account } => {
                self.signals = Some(hub.sessions().register(device));
                self.sends = Some(Sends::new(hub.clone(), account.clone()));
                self.account = Some(account);
            }
            Action::LoadReadings { device, known } => self.work.push(Box::pin(async move {
                Answer::Readings(load_readings(&hub, device, known).await)
            })),
            Action::Watch(queues) => {
                // The old watch goes first: a wake-up between the two is caught by the
                // session, which reads every queue after a reload.
                self.watch = None;
                self.watch = Some(self.hub.notifier().watch(&queues));
            }
            Action::Send(envelope) => {
                let id = envelope.id;
                let submitted = match &mut self.sends {
                    Some(sends) => sends.submit(envelope),
                    None => Err(SendError::Invalid("no session".into())),
                };
                if let Err(error) = submitted {
                    session.send_answered(id, Err(error));
                }
            }
            Action::Read(request) => self.read(request, session),
            Action::Ack { queue, device, up_to, selective } => {
                // Its own task: an ack waiting for disk space outlives the session.
                let acking =
                    tokio::spawn(async move { ack(&hub, queue, device, up_to, selective).await });
                self.work.push(Box::pin(async move {
                    let acked = acking
                        .await
                        .unwrap_or_else(|e| Err(AckError(StoreError::TaskFailed(e.to_string()))));
                    Answer::Acked(queue, acked)
                }));
            }
            Action::StoreDelivered(receipt) => self.work.push(Box::pin(async move {
                Answer::Receipt(hub.store_receipt(receipt, None).await)
            })),
            Action::StoreReceipt { receipt, device, handed } => {
                // A receipt comes only once the session is open, when the account is known.
                let Some(account) = self.account.clone() else {
                    session.receipt_done(Ok(()));
                    return None;
                };
                match hub.check_receipt(&account.address, &receipt) {
                    Ok(line) => self.work.push(Box::pin(async move {
                        let checked = hub
                            .check_received(&account, device, &receipt, line.as_ref(), handed)
                            .await;
                        Answer::Receipt(match checked {
                            Ok(()) => hub.store_receipt(receipt, line).await,
                            Err(error) => Err(error),
                        })
                    })),
                    Err(error) => session.receipt_done(Err(error)),
                }
            }
            Action::Close(error) => {
                return Some(End::Closed { code: error.code(), reason: error.to_string() });
            }
        }
        None
    }

    /// Reads from memory on the spot when it can (a device keeping up with its queues), else
    /// on the blocking pool.
    fn read(&mut self, request: ReadRequest, session: &mut Session) {
        let Some(account) = &self.account else { return };
        if let Some(result) = self.hub.read_now(&account.address, &request) {
            return session.read_done(request.id, result.map_err(|e| e.to_string()));
        }
        let (hub, reader) = (self.hub.clone(), account.address.clone());
        self.work.push(Box::pin(async move {
            Answer::Read(request.id, hub.read(&reader, &request).await)
        }));
    }
}

impl Answer {
    fn feed(self, session: &mut Session) {
        match self {
            Self::User(result) => session.user_looked_up(result.map_err(|e| e.to_string())),
            Self::Device(result) => {
                session.device_looked_up(result.map_err(|e| e.to_string()), now());
            }
            Self::Enrolled(result) => session.enrolled(result, now()),
            Self::Readings(result) => session.readings_loaded(result.map_err(|e| e.to_string())),
            Self::Read(id, result) => session.read_done(id, result.map_err(|e| e.to_string())),
            Self::Acked(queue, result) => session.ack_done(queue, result),
            Self::Receipt(result) => session.receipt_done(result),
        }
    }
}

/// Writes an ack. A write that found the disk full is tried again twice a second for up to a
/// minute, even after the session ended (an ack is idempotent): acks free space, and the store
/// resumes writing once the reserve it released is there, so a device's acks are not lost to
/// a full disk.
async fn ack(
    hub: &Hub,
    queue: QueueId,
    device: DeviceId,
    up_to: u64,
    selective: Vec<u64>,
) -> Result<(), AckError> {
    let mut tries = 0;
    loop {
        match hub.ack(queue, device, up_to, selective.clone()).await {
            Err(AckError(StoreError::NoSpace { .. })) if tries < 120 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// Enrols a device with a code, then subscribes it to its user's lines. Past the limit of
/// failed enrolments from `remote` or for the account, the code is not looked at.
async fn enrol(
    hub: &Hub,
    remote: std::net::IpAddr,
    enrolment: Enrolment,
) -> Result<DeviceRecord, EnrolError> {
    let Enrolment { account, device, public_key, code } = enrolment;
    let user = device.account().map(|a| a.as_str().to_string()).unwrap_or_default();
    let sources = hub.sources();
    if let Some(wait) = sources.enrolment_wait(remote, &user, std::time::Instant::now()) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(%remote, %device, retry_in_secs = secs, "enrolment refused: too many failed attempts");
        return Err(EnrolError::Refused(format!(
            "too many failed enrolment attempts from this address or for this user; try again in {secs} s"
        )));
    }
    let enrolled = hub.store().enrol_device(account, device.as_str(), public_key, &code).await;
    let record = match enrolled {
        Ok(record) => record,
        Err(StoreError::EnrolmentRefused(why)) => {
            sources.enrolment_failed(remote, &user, std::time::Instant::now());
            tracing::warn!(%remote, %device, why, "enrolment refused");
            return Err(EnrolError::Refused(why.into()));
        }
        Err(StoreError::Exists(_)) => return Err(EnrolError::Taken),
        Err(error) => return Err(EnrolError::Failed(error.to_string())),
    };
    hub.on_enrolled(&record).await.map_err(|e| EnrolError::Failed(e.to_string()))?;
    Ok(record)
}

/// The queues `device` reads, and where it starts in those other than `known`.
async fn load_readings(
    hub: &Hub,
    device: DeviceId,
    known: Vec<QueueId>,
) -> Result<Loaded, StoreError> {
    let queues = hub
        .store()
        .blocking(move |store| {
            let mut current = store.subscriptions(device)?;
            // On the registration hub of a user whose home hub is another, the device reads
            // the user's mailbox in the place of the account's queue, under its address.
            let account = match store.device_account(device)? {
                Some(queue) => Some((queue, store.queue_name(queue)?)),
                None => None,
            };
            let mut names = Vec::with_capacity(current.len());
            for &queue in &current {
                names.push(store.queue_name(queue)?);
            }
            let mailbox = account.as_ref().and_then(|(_, user)| {
                names.iter().position(|name| name.strip_prefix("mailbox:") == Some(user.as_str()))
            });
            if let (Some(index), Some((queue, user))) = (mailbox, &account) {
                names[index] = user.clone();
                if let Some(at) = current.iter().position(|q| q == queue) {
                    current.remove(at);
                    names.remove(at);
                }
            }
            let mut added = Vec::new();
            for (&queue, name) in current.iter().zip(names) {
                if !known.contains(&queue) {
                    let cursor = store.cursor(queue, device)?;
                    added.push((queue, cursor, name));
                }
            }
            Ok((current, added))
        })
        .await?;
    let (current, added) = queues;
    let added = added
        .into_iter()
        // Queues not named by an address (another user's mailbox, say) are not delivered to
        // devices.
        .filter_map(|(queue, cursor, name)| {
            let name = switchboard_protocol::Address::parse(&name).ok()?;
            Some(ReadingStart { queue, name, acked: cursor.acked, held: cursor.selective })
        })
        .collect();
    Ok(Loaded { current, added })
}

/// Waits for the signals of the session's registration (never, before there is one).
async fn signal(signals: &Option<Arc<SessionSignals>>) -> Raised {
    match signals {
        Some(signals) => signals.raised().await,
        None => std::future::pending().await,
    }
}

/// The next answer of the send path (never, while nothing is waiting).
async fn next_answer(sends: &mut Option<Sends>) -> Option<(MessageId, Result<(), SendError>)> {
    match sends {
        Some(sends) if !sends.is_empty() => sends.next().await,
        _ => std::future::pending().await,
    }
}

async fn woken(watch: &Option<Watch<'_>>) {
    match watch {
        Some(watch) => watch.woken().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
