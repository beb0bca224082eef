//! One run: enrol users and devices, send open-loop at a fixed rate, collect every answer and
//! delivery, bring offline devices back, and check the outcome.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::Rng;
use switchboard_hub::{
    admin::AdminClient,
    client::{Client, ClientHandle, ClientOptions, DeviceIdentity, Event, client_endpoint},
};
use switchboard_protocol::{Address, Flags, MessageId};
use tokio::sync::Semaphore;

use crate::check::{Checker, Stamp, Verdict};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The hub's QUIC address.
    pub hub: SocketAddr,
    /// The hub's admin API address.
    pub admin: SocketAddr,
    /// The operator token.
    pub token: String,
    /// The hub's certificate (DER).
    pub cert: Vec<u8>,
    /// Users to make.
    pub users: u32,
    /// Devices per user.
    pub devices: u32,
    /// Messages per second, offered on schedule whatever the answers do (open loop).
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Body size in bytes (at least the 20-byte stamp).
    pub body: usize,
    /// Fraction of devices offline while sending; they connect afterwards and must catch up.
    pub offline: f64,
    /// UDP segmentation offload.
    pub gso: bool,
    /// Domain of the run's users (unique per run so runs can share a hub).
    pub domain: String,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Devices enrolled.
    pub devices: u64,
    /// Seconds the enrolment took.
    pub enrol_secs: f64,
    /// Sends offered.
    pub sent: u64,
    /// Sends accepted.
    pub accepted: u64,
    /// Sends rejected.
    pub rejected: u64,
    /// Deliveries to devices.
    pub delivered: u64,
    /// Seconds of sending.
    pub send_secs: f64,
    /// Accepted messages per second of sending.
    pub accepted_per_sec: f64,
    /// Deliveries per second while devices were online during sending.
    pub delivered_per_sec: f64,
    /// Intended send time to `accepted`.
    pub accept_latency: Latency,
    /// Intended send time to delivery on each recipient device (online devices only).
    pub deliver_latency: Latency,
    /// Correctness.
    pub verdict: Verdict,
}

struct Shared {
    start: Instant,
    checker: Mutex<Checker>,
    pending: Mutex<HashMap<MessageId, (Stamp, Vec<u32>)>>,
    accept_latency: Mutex<Histogram<u64>>,
    deliver_latency: Mutex<Histogram<u64>>,
    accepted: AtomicU64,
    rejected: AtomicU64,
    delivered: AtomicU64,
    delivered_while_sending: AtomicU64,
    sending: std::sync::atomic::AtomicBool,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Runs the workload: 1:1 messages between random users.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let admin = AdminClient::new(options.admin, options.token.clone());
    let endpoint = client_endpoint().context("client endpoint")?;
    let client_options =
        ClientOptions { segmentation_offload: options.gso, ..ClientOptions::default() };
    let total = options.users * options.devices;
    let enrol_start = Instant::now();
    let identities = enrol(&admin, &endpoint, &client_options, &options).await?;
    let enrol_secs = enrol_start.elapsed().as_secs_f64();

    let shared = Arc::new(Shared {
        start: Instant::now(),
        checker: Mutex::default(),
        pending: Mutex::default(),
        accept_latency: Mutex::new(histogram()),
        deliver_latency: Mutex::new(histogram()),
        accepted: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        delivered_while_sending: AtomicU64::new(0),
        sending: std::sync::atomic::AtomicBool::new(true),
    });

    // Which devices are offline while sending: a fixed stride, so the choice is repeatable.
    let offline_every =
        if options.offline > 0.0 { (1.0 / options.offline).round() as u32 } else { 0 };
    let is_offline = |index: u32| offline_every > 0 && index % offline_every == offline_every - 1;
    let mut handles: Vec<Option<ClientHandle>> = vec![None; total as usize];
    let mut readers = Vec::new();
    for (index, identity) in identities.iter().enumerate() {
        let index = index as u32;
        if is_offline(index) {
            continue;
        }
        let client = Client::connect_with(&endpoint, identity, None, &client_options).await?;
        handles[index as usize] = Some(client.handle());
        readers.push(tokio::spawn(read_events(client, index, shared.clone())));
    }
    let senders: Vec<u32> = (0..total).filter(|&i| handles[i as usize].is_some()).collect();
    // One sending task per device keeps each sender's messages in order on the wire; the
    // schedule never waits for them (open loop).
    let mut outboxes: Vec<
        Option<tokio::sync::mpsc::UnboundedSender<switchboard_protocol::Envelope>>,
    > = vec![None; total as usize];
    for &index in &senders {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<switchboard_protocol::Envelope>();
        let handle = handles[index as usize].clone().expect("senders are online");
        let task_shared = shared.clone();
        tokio::spawn(async move {
            while let Some(envelope) = rx.recv().await {
                if handle.send(envelope.clone()).await.is_err() {
                    task_shared.pending.lock().expect("pending lock").remove(&envelope.id);
                }
            }
        });
        outboxes[index as usize] = Some(tx);
    }
    anyhow::ensure!(!senders.is_empty(), "no device is online to send");
    let accounts: Vec<Address> = identities.iter().map(DeviceIdentity::account).collect();

    // Open loop: message n is due at start + n / rate, whatever happened to the ones before.
    let send_start = Instant::now();
    let mut sequence: HashMap<u32, u64> = HashMap::new();
    let mut sent = 0u64;
    let interval = Duration::from_secs_f64(1.0 / options.rate.max(1.0));
    let mut rng = rand::rng();
    while send_start.elapsed() < options.duration {
        let due = send_start + interval.mul_f64(sent as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        }
        let sender = senders[rng.random_range(0..senders.len())];
        let from_user = sender / options.devices;
        let mut to_user = rng.random_range(0..options.users);
        if options.users > 1 && to_user == from_user {
            to_user = (to_user + 1) % options.users;
        }
        let seq = sequence.entry(sender).or_insert(0);
        *seq += 1;
        let stamp = Stamp {
            sender,
            seq: *seq,
            intended_ns: due.duration_since(shared.start).as_nanos() as u64,
        };
        // Every device of the recipient, and (for a message to someone else) of the sender.
        let mut expected: Vec<u32> =
            (to_user * options.devices..(to_user + 1) * options.devices).collect();
        if to_user != from_user {
            expected.extend(from_user * options.devices..(from_user + 1) * options.devices);
        }
        let handle = handles[sender as usize].clone().expect("senders are online");
        let to = accounts[(to_user * options.devices) as usize].clone();
        let envelope = handle.envelope(&to, Bytes::from(stamp.body(options.body)), Flags::NONE);
        shared.pending.lock().expect("pending lock").insert(envelope.id, (stamp, expected));
        let outbox = outboxes[sender as usize].as_ref().expect("senders have an outbox");
        if outbox.send(envelope.clone()).is_err() {
            shared.pending.lock().expect("pending lock").remove(&envelope.id);
        }
        sent += 1;
    }
    let send_secs = send_start.elapsed().as_secs_f64();
    drop(outboxes);
    // Answers for everything sent.
    wait_until(Duration::from_secs(30), || shared.pending.lock().expect("pending lock").is_empty())
        .await;
    shared.sending.store(false, Ordering::Relaxed);
    let delivered_while_sending = shared.delivered_while_sending.load(Ordering::Relaxed);

    // Offline devices come back and must catch up.
    for (index, identity) in identities.iter().enumerate() {
        if is_offline(index as u32) {
            let client = Client::connect_with(&endpoint, identity, None, &client_options).await?;
            readers.push(tokio::spawn(read_events(client, index as u32, shared.clone())));
        }
    }
    let expected_deliveries = shared.checker.lock().expect("checker lock").expected_deliveries();
    wait_until(Duration::from_secs(60), || {
        shared.delivered.load(Ordering::Relaxed) >= expected_deliveries
    })
    .await;
    // A moment more, so that a duplicate arriving late is seen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for reader in &readers {
        reader.abort();
    }

    let accepted = shared.accepted.load(Ordering::Relaxed);
    let report = Report {
        devices: u64::from(total),
        enrol_secs,
        sent,
        accepted,
        rejected: shared.rejected.load(Ordering::Relaxed),
        delivered: shared.delivered.load(Ordering::Relaxed),
        send_secs,
        accepted_per_sec: accepted as f64 / send_secs,
        delivered_per_sec: delivered_while_sending as f64 / send_secs,
        accept_latency: Latency::from(&*shared.accept_latency.lock().expect("histogram lock")),
        deliver_latency: Latency::from(&*shared.deliver_latency.lock().expect("histogram lock")),
        verdict: shared.checker.lock().expect("checker lock").verdict(),
    };
    Ok(report)
}

async fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Enrols `users` x `devices` devices, many at a time.
async fn enrol(
    admin: &AdminClient,
    endpoint: &quinn::Endpoint,
    client_options: &ClientOptions,
    options: &Options,
) -> anyhow::Result<Vec<DeviceIdentity>> {
    let limit = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for user in 0..options.users {
        let name = format!("u{user}@{}", options.domain);
        let first = admin.add_user(&name).await.with_context(|| format!("adding {name}"))?;
        for device in 0..options.devices {
            let code =
                if device == 0 { first.code.clone() } else { admin.new_code(&name).await?.code };
            let address = Address::parse(&format!("{name}/d{device}"))?;
            let identity = DeviceIdentity::generate(address, options.hub, options.cert.clone())?;
            let permit = limit.clone().acquire_owned().await?;
            let (endpoint, client_options) = (endpoint.clone(), client_options.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let client =
                    Client::connect_with(&endpoint, &identity, Some(&code), &client_options)
                        .await?;
                client.close().await;
                anyhow::Ok(identity)
            }));
        }
    }
    let mut identities = Vec::with_capacity(tasks.len());
    for task in tasks {
        identities.push(task.await??);
    }
    Ok(identities)
}

/// Reads one device's events: answers to its sends, and deliveries (acknowledged at once).
async fn read_events(mut client: Client, device: u32, shared: Arc<Shared>) {
    while let Some(event) = client.next_event().await {
        let now_ns = shared.start.elapsed().as_nanos() as u64;
        match event {
            Event::Accepted(id) => {
                let entry = shared.pending.lock().expect("pending lock").remove(&id);
                if let Some((stamp, devices)) = entry {
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    let micros = now_ns.saturating_sub(stamp.intended_ns) / 1000;
                    let _ =
                        shared.accept_latency.lock().expect("histogram lock").record(micros.max(1));
                    shared.checker.lock().expect("checker lock").accepted(stamp, devices);
                }
            }
            Event::Rejected(rejected) => {
                if shared.pending.lock().expect("pending lock").remove(&rejected.id).is_some() {
                    shared.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Deliver(deliver) => {
                if let Some(stamp) = Stamp::read(&deliver.envelope.body) {
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                    if shared.sending.load(Ordering::Relaxed) {
                        shared.delivered_while_sending.fetch_add(1, Ordering::Relaxed);
                        let micros = now_ns.saturating_sub(stamp.intended_ns) / 1000;
                        let _ = shared
                            .deliver_latency
                            .lock()
                            .expect("histogram lock")
                            .record(micros.max(1));
                    }
                    shared.checker.lock().expect("checker lock").received(device, stamp);
                }
                let _ = client.ack(deliver.queue, deliver.seq, vec![]).await;
            }
            Event::Receipt(receipt) => {
                let _ = client.ack(receipt.queue, receipt.seq, vec![]).await;
            }
            Event::Error(_) => {}
            Event::Closed { .. } => return,
        }
    }
}
