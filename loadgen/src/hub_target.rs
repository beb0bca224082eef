//! The load against a Switchboard hub: users and devices enrolled through the admin API, every
//! device its own QUIC connection, one task per device sending in order.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use switchboard_hub::{
    admin::{DeviceKey, hex},
    client::admin::AdminClient,
    client::{Client, ClientOptions, DeviceIdentity, Event, client_endpoint, client_endpoint_at},
    org::{Change, Command},
};
use switchboard_protocol::{Address, Envelope, Flags, MessageId};
use tokio::sync::{Semaphore, mpsc};

use crate::{
    check::Stamp,
    run::{Job, Options, Plan, Shared, wait_until},
    storm::{Storm, StormReport},
};

/// A hub to load.
#[derive(Debug, Clone)]
pub struct HubTarget {
    /// The hub's QUIC address.
    pub hub: SocketAddr,
    /// The hub's admin API address.
    pub admin: SocketAddr,
    /// The operator token.
    pub token: String,
    /// The hub's certificate (DER).
    pub cert: Vec<u8>,
    /// UDP segmentation offload.
    pub gso: bool,
}

/// Enrolments and connections in flight at once.
const PARALLEL_SETUP: usize = 64;

/// Devices registered per admin call, and calls in flight at once: a hub's writers commit a
/// call's devices together, and two calls keep them busy while the next is sent.
const REGISTER_CHUNK: usize = 5_000;
const PARALLEL_REGISTER: usize = 2;

/// What every device task and reader shares.
struct Ctx {
    shared: Arc<Shared>,
    /// Sent and not yet answered, by message id: the stamp and who must receive it.
    pending: Mutex<HashMap<MessageId, (Stamp, Vec<u32>)>>,
    /// Per device and queue, the highest sequence taken. A delivery at or below it is the hub
    /// sending again what a device had not acknowledged before it reconnected: a device takes
    /// each sequence once, as every client must.
    taken: Mutex<HashMap<(u32, Address), u64>>,
    /// Client endpoints; a device always uses the same one (see [`Ctx::endpoint`]).
    endpoints: Vec<quinn::Endpoint>,
    client_options: ClientOptions,
    /// The hubs may be killed and restarted during the run (see [`Options::hub_restarts`]).
    hub_restarts: bool,
}

/// Devices per client endpoint when the hubs are on loopback.
const DEVICES_PER_SOURCE: u64 = 4_000;

/// The client endpoints of a run with `devices` devices. On loopback, one per 4,000 devices,
/// each on an address of its own in 127.77.0.0/16, so that a large run looks like many sources
/// (as real devices are) and stays within a hub's limits per source address
/// (`[limits] connections_per_address`, `connection_burst_per_address`). Elsewhere, one.
fn client_endpoints(targets: &[HubTarget], devices: u64) -> anyhow::Result<Vec<quinn::Endpoint>> {
    if !targets.iter().all(|t| t.hub.ip().is_loopback()) {
        return Ok(vec![client_endpoint().context("client endpoint")?]);
    }
    let count = devices.div_ceil(DEVICES_PER_SOURCE).max(1);
    (0..count)
        .map(|k| {
            let ip = std::net::Ipv4Addr::new(127, 77, (k / 250) as u8, (k % 250 + 1) as u8);
            client_endpoint_at(SocketAddr::from((ip, 0)))
                .with_context(|| format!("client endpoint on {ip}"))
        })
        .collect()
}

impl Ctx {
    /// The endpoint `identity` connects from: always the same for one device.
    fn endpoint(&self, identity: &DeviceIdentity) -> &quinn::Endpoint {
        let hash = identity.address.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.endpoints[(hash % self.endpoints.len() as u64) as usize]
    }
}

enum Order {
    Send(Job),
    Reconnect,
}

/// The enrolled devices of one run.
pub(crate) struct HubFleet {
    context: Arc<Ctx>,
    identities: Vec<DeviceIdentity>,
    /// The users' account addresses, by user (shared by every device task).
    accounts: Arc<[Address]>,
    line: Option<Address>,
    /// The order channel of each online device.
    orders: Vec<Option<mpsc::UnboundedSender<Order>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    idle: Vec<Client>,
    /// With `hub_restarts`: the idle devices' tasks, which connect again after a drop.
    storm: Option<(Arc<Storm>, Vec<tokio::task::JoinHandle<()>>)>,
    bytes_per_connection: Option<f64>,
    enrol_secs: f64,
    admins: Vec<AdminClient>,
}

impl HubFleet {
    pub(crate) async fn setup(
        targets: &[HubTarget],
        plan: &Plan,
        options: &Options,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!targets.is_empty(), "no hub to load");
        let admins: Vec<AdminClient> =
            targets.iter().map(|t| AdminClient::new(t.admin, t.token.clone())).collect();
        let devices = u64::from(plan.users) * u64::from(plan.devices) + u64::from(options.idle);
        let endpoints = client_endpoints(targets, devices)?;
        let client_options = ClientOptions {
            segmentation_offload: targets[0].gso,
            // Of thousands of handshakes in a burst, a few lose packets and would wait out the
            // idle timeout; trying again sooner is what a device would do.
            connect_timeout: Duration::from_secs(3),
            ..ClientOptions::default()
        };
        let domains = user_domains(targets, &admins, plan, &options.run_name).await?;
        let names: Vec<String> = (0..plan.users)
            .map(|u| {
                let domain = &domains[plan.hub_of(u) as usize];
                match targets.len() {
                    1 => format!("u{u}@{domain}"),
                    _ => format!("u{u}-{}@{domain}", options.run_name),
                }
            })
            .collect();
        let started = Instant::now();
        // Each hub enrols its own users; the identities are then put back in device order.
        let mut by_hub = Vec::with_capacity(targets.len());
        for (index, (target, admin)) in targets.iter().zip(&admins).enumerate() {
            let mine: Vec<String> = (0..plan.users)
                .filter(|&u| plan.hub_of(u) as usize == index)
                .map(|u| names[u as usize].clone())
                .collect();
            by_hub.push(enrol(admin, target, &mine, plan.devices, "d").await?);
        }
        let devices = plan.devices as usize;
        let identities: Vec<DeviceIdentity> = (0..plan.users)
            .flat_map(|u| {
                let (hub, nth) = (plan.hub_of(u) as usize, (u / plan.hubs) as usize);
                by_hub[hub][nth * devices..(nth + 1) * devices].to_vec()
            })
            .collect();
        let mut enrol_secs = started.elapsed().as_secs_f64();
        let line = if plan.line_members > 0 {
            // The line and its members are on the first hub; users of every hub write to it.
            let members: Vec<String> = (0..plan.users)
                .filter(|&u| plan.hub_of(u) == 0)
                .map(|u| names[u as usize].clone())
                .collect();
            let main_line = targets.len() > 1;
            let line = make_line(
                &admins[0],
                &targets[0],
                &domains[0],
                &members,
                plan.line_members as usize,
                main_line,
            )
            .await?;
            Some(line)
        } else {
            None
        };
        if targets.len() > 1 {
            wait_for_links(targets, &admins, &domains).await?;
        }
        let context = Arc::new(Ctx {
            shared,
            pending: Mutex::default(),
            taken: Mutex::default(),
            endpoints,
            client_options,
            hub_restarts: options.hub_restarts,
        });
        let before = resident_bytes(&admins).await;
        // Idle devices: enrolled under users of their own, connected, never used.
        let (mut idle, mut idle_ids) = (Vec::new(), Vec::new());
        if options.idle > 0 {
            let started = Instant::now();
            for (index, (target, admin)) in targets.iter().zip(&admins).enumerate() {
                let idle_names: Vec<String> = (0..options.idle)
                    .filter(|i| *i as usize % targets.len() == index)
                    .map(|i| format!("idle{i}-{}@{}", options.run_name, domains[index]))
                    .collect();
                idle_ids.extend(enrol(admin, target, &idle_names, 1, "idle").await?);
            }
            enrol_secs += started.elapsed().as_secs_f64();
            idle = connect_all(&context, &idle_ids).await?;
        }
        let mut fleet = Self {
            accounts: names
                .iter()
                .map(|n| Address::parse(n))
                .collect::<Result<Vec<_>, _>>()?
                .into(),
            context,
            identities,
            line,
            orders: vec![None; plan.total() as usize],
            tasks: Vec::new(),
            idle,
            storm: None,
            bytes_per_connection: None,
            enrol_secs,
            admins: admins.clone(),
        };
        let online: Vec<u32> = (0..plan.total()).filter(|&d| !plan.is_offline(d)).collect();
        fleet.bring_back(&online).await?;
        if let (Some(before), Some(after)) = (before, resident_bytes(&admins).await) {
            let connections = online.len() + fleet.idle.len();
            if connections > 0 {
                fleet.bytes_per_connection =
                    Some(after.saturating_sub(before) as f64 / connections as f64);
            }
        }
        if options.hub_restarts && !fleet.idle.is_empty() {
            let storm = Arc::new(Storm::default());
            let tasks = fleet
                .idle
                .drain(..)
                .zip(idle_ids)
                .map(|(client, identity)| {
                    let (storm, context) = (storm.clone(), fleet.context.clone());
                    let identity = identity.clone();
                    tokio::spawn(async move {
                        let endpoint = context.endpoint(&identity).clone();
                        let options = context.client_options.clone();
                        storm.hold(endpoint, identity, options, client).await;
                    })
                })
                .collect();
            fleet.storm = Some((storm, tasks));
        }
        Ok(fleet)
    }

    /// Seconds the enrolment of the devices (the idle ones too) took.
    pub(crate) fn enrol_secs(&self) -> f64 {
        self.enrol_secs
    }

    pub(crate) fn is_online(&self, device: u32) -> bool {
        self.orders.get(device as usize).is_some_and(Option::is_some)
    }

    pub(crate) fn submit(&self, sender: u32, job: Job) {
        let Some(orders) = &self.orders[sender as usize] else {
            self.context.shared.failed(job.stamp);
            return;
        };
        if let Err(mpsc::error::SendError(Order::Send(job))) = orders.send(Order::Send(job)) {
            self.context.shared.failed(job.stamp);
        }
    }

    /// Closes `device`'s connection once its sends are answered, and connects it again.
    pub(crate) async fn reconnect(&mut self, device: u32) -> anyhow::Result<()> {
        if let Some(orders) = &self.orders[device as usize] {
            let _ = orders.send(Order::Reconnect);
        }
        Ok(())
    }

    /// Connects `devices` (offline until now) and starts their tasks.
    pub(crate) async fn bring_back(&mut self, devices: &[u32]) -> anyhow::Result<()> {
        let identities: Vec<DeviceIdentity> =
            devices.iter().map(|&d| self.identities[d as usize].clone()).collect();
        let clients = connect_all(&self.context, &identities).await?;
        for (&device, client) in devices.iter().zip(clients) {
            let (tx, rx) = mpsc::unbounded_channel();
            let recipients =
                Recipients { accounts: self.accounts.clone(), line: self.line.clone() };
            self.tasks.push(tokio::spawn(device_task(
                self.context.clone(),
                device,
                self.identities[device as usize].clone(),
                client,
                rx,
                recipients,
            )));
            self.orders[device as usize] = Some(tx);
        }
        Ok(())
    }

    /// The hubs' CPU time together, from their metrics, in seconds.
    pub(crate) async fn cpu_seconds(&self) -> Option<f64> {
        let mut total = 0.0;
        for admin in &self.admins {
            total += admin.metrics().await.ok().and_then(|m| m.cpu_seconds)?;
        }
        Some(total)
    }

    pub(crate) async fn bytes_per_connection(&self) -> Option<f64> {
        self.bytes_per_connection
    }

    pub(crate) async fn shutdown(mut self) {
        self.orders.clear();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        for client in self.idle.drain(..) {
            client.close().await;
        }
        if let Some((_, tasks)) = self.storm.take() {
            for task in tasks {
                task.abort();
            }
        }
    }

    /// With idle devices that reconnect: waits (up to `limit`) until every one that dropped is
    /// back, and reports the storm; `None` without such devices or without a drop.
    pub(crate) async fn storm_report(&self, limit: Duration) -> Option<StormReport> {
        let (storm, _) = self.storm.as_ref()?;
        let deadline = Instant::now() + limit;
        while !storm.settled() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        storm.report()
    }
}

/// Addresses a device task sends to.
#[derive(Clone)]
struct Recipients {
    accounts: Arc<[Address]>,
    line: Option<Address>,
}

/// One device: sends its jobs in order, reconnects when told, and reads its events in a
/// reader task of its current connection. With `hub_restarts`, a connection that drops (the
/// reader reports it, tagged with the connection's number) is made again, and the sends that
/// got no answer are sent again, in their order and with their ids: the hub stores each once.
async fn device_task(
    context: Arc<Ctx>,
    device: u32,
    identity: DeviceIdentity,
    client: Client,
    mut orders: mpsc::UnboundedReceiver<Order>,
    recipients: Recipients,
) {
    let (lost_tx, mut lost) = mpsc::unbounded_channel::<u64>();
    // A reader for each connection, tagged with the connection's number.
    let read = |client: Client, generation: u64| {
        let lost = context.hub_restarts.then(|| (lost_tx.clone(), generation));
        tokio::spawn(read_events(context.clone(), device, client, lost))
    };
    let mut generation = 0;
    let mut handle = client.handle();
    let mut reader = read(client, generation);
    // Sent and maybe unanswered, in send order (only with `hub_restarts`).
    let mut unanswered: VecDeque<(MessageId, Envelope)> = VecDeque::new();
    loop {
        let order = tokio::select! {
            order = orders.recv() => match order {
                Some(order) => order,
                None => break,
            },
            Some(dropped) = lost.recv() => {
                if dropped != generation {
                    continue;
                }
                // The hub went away: connect again, then send again what got no answer.
                let _ = reader.await;
                match connect_for(&context, &identity, HUB_RESTART_PATIENCE).await {
                    Ok(client) => {
                        context.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                        generation += 1;
                        handle = client.handle();
                        reader = read(client, generation);
                        let open: Vec<Envelope> = {
                            let pending = context.pending.lock().expect("pending lock");
                            unanswered.retain(|(id, _)| pending.contains_key(id));
                            unanswered.iter().map(|(_, envelope)| envelope.clone()).collect()
                        };
                        for envelope in open {
                            // A failure here is another drop, which the new reader reports.
                            let _ = handle.send(envelope).await;
                        }
                        continue;
                    }
                    Err(error) => {
                        eprintln!("loadgen: device {device} could not reconnect: {error}");
                        give_up(&context, &mut orders, unanswered).await;
                        return;
                    }
                }
            }
        };
        match order {
            Order::Send(job) => {
                let to = match job.to_user {
                    Some(user) => &recipients.accounts[user as usize],
                    None => recipients.line.as_ref().expect("a line workload has a line"),
                };
                let envelope = handle.envelope(to, job.body, Flags::NONE);
                let (id, stamp) = (envelope.id, job.stamp);
                context.pending.lock().expect("pending lock").insert(id, (job.stamp, job.expected));
                if context.hub_restarts {
                    {
                        let pending = context.pending.lock().expect("pending lock");
                        while unanswered.front().is_some_and(|(id, _)| !pending.contains_key(id)) {
                            unanswered.pop_front();
                        }
                    }
                    unanswered.push_back((id, envelope.clone()));
                    // A failure is a dropped connection: the reader reports it, and the send
                    // goes again once the device is back.
                    let _ = handle.send(envelope).await;
                } else if handle.send(envelope).await.is_err()
                    && context.pending.lock().expect("pending lock").remove(&id).is_some()
                {
                    context.shared.failed(stamp);
                }
            }
            Order::Reconnect => {
                // Every send answered first, so nothing is left in doubt by the close.
                let mine = |context: &Ctx| {
                    context
                        .pending
                        .lock()
                        .expect("pending lock")
                        .values()
                        .any(|(stamp, _)| stamp.sender == device)
                };
                wait_until(Duration::from_secs(30), || !mine(&context)).await;
                generation += 1;
                handle.close().await;
                let _ = reader.await;
                // Tried again on failure, as every connect here: a hub busy with its disk may
                // answer a hello late (seen on a loaded machine: no welcome within 3 s).
                match connect_retrying(
                    context.endpoint(&identity),
                    &identity,
                    None,
                    &context.client_options,
                )
                .await
                {
                    Ok(client) => {
                        context.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                        handle = client.handle();
                        reader = read(client, generation);
                    }
                    Err(error) => {
                        eprintln!("loadgen: device {device} could not reconnect: {error}");
                        give_up(&context, &mut orders, unanswered).await;
                        return;
                    }
                }
            }
        }
    }
    // The run is over: wait for the reader to see the last deliveries, then close.
    wait_until(Duration::from_secs(1), || context.shared.stopping.load(Ordering::Relaxed)).await;
    handle.close().await;
    let _ = reader.await;
}

/// How long a device keeps trying to connect again after its hub went away (`hub_restarts`).
const HUB_RESTART_PATIENCE: Duration = Duration::from_secs(60);

/// A device that cannot connect any more: what it sent without an answer, and every further
/// send, counts as failed (its deliveries will be missing).
async fn give_up(
    context: &Ctx,
    orders: &mut mpsc::UnboundedReceiver<Order>,
    unanswered: VecDeque<(MessageId, Envelope)>,
) {
    for (id, _) in unanswered {
        let entry = context.pending.lock().expect("pending lock").remove(&id);
        if let Some((stamp, _)) = entry {
            context.shared.failed(stamp);
        }
    }
    while let Some(order) = orders.recv().await {
        if let Order::Send(job) = order {
            context.shared.failed(job.stamp);
        }
    }
}

/// Connects, trying again with a growing pause (at most a second) until `patience` has
/// passed: the hub is restarting.
async fn connect_for(
    context: &Ctx,
    identity: &DeviceIdentity,
    patience: Duration,
) -> anyhow::Result<Client> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(50);
    loop {
        match Client::connect_with(
            context.endpoint(identity),
            identity,
            None,
            &context.client_options,
        )
        .await
        {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() >= deadline => {
                return Err(error).with_context(|| format!("connecting {}", identity.address));
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Reads one connection's events: answers to its sends, and deliveries. Deliveries are
/// acknowledged as a device would: once the deliveries that have arrived are taken, one
/// cumulative ack per queue up to the last one taken.
async fn read_events(
    context: Arc<Ctx>,
    device: u32,
    mut client: Client,
    lost: Option<(mpsc::UnboundedSender<u64>, u64)>,
) {
    read_connection(&context, device, &mut client).await;
    // The connection is over, whoever ended it; the device task knows whether it meant to.
    if let Some((lost, generation)) = lost {
        let _ = lost.send(generation);
    }
}

async fn read_connection(context: &Ctx, device: u32, client: &mut Client) {
    let mut acks: Vec<(Address, u64)> = Vec::new();
    while let Some(first) = client.next_event().await {
        let mut next = Some(first);
        while let Some(event) = next {
            match event {
                Event::Accepted(id) => {
                    let entry = context.pending.lock().expect("pending lock").remove(&id);
                    if let Some((stamp, devices)) = entry {
                        if let Some(journal) = &context.shared.journal {
                            journal.accepted(id.0, stamp);
                        }
                        context.shared.accepted(stamp, devices);
                    }
                }
                Event::Rejected(rejected) => {
                    let mut pending = context.pending.lock().expect("pending lock");
                    if pending.remove(&rejected.id).is_some() {
                        context.shared.rejected();
                    }
                }
                Event::Deliver(deliver) => {
                    let fresh = {
                        let mut taken = context.taken.lock().expect("taken lock");
                        let last = taken.entry((device, deliver.queue.clone())).or_insert(0);
                        let fresh = deliver.seq > *last;
                        *last = (*last).max(deliver.seq);
                        fresh
                    };
                    if fresh && let Some(stamp) = Stamp::read(&deliver.envelope.body) {
                        context.shared.delivered(device, stamp);
                    }
                    note_ack(&mut acks, deliver.queue, deliver.seq);
                }
                Event::Receipt(receipt) => note_ack(&mut acks, receipt.queue, receipt.seq),
                Event::Error(_) => {}
                Event::Closed { .. } => return,
            }
            next = client.try_next_event();
        }
        for (queue, seq) in acks.drain(..) {
            let _ = client.ack(queue, seq, vec![]).await;
        }
    }
}

/// Remembers that `queue` may be acknowledged up to `seq`.
fn note_ack(acks: &mut Vec<(Address, u64)>, queue: Address, seq: u64) {
    match acks.iter_mut().find(|(q, _)| *q == queue) {
        Some((_, up_to)) => *up_to = (*up_to).max(seq),
        None => acks.push((queue, seq)),
    }
}

/// Connects every identity, many at a time.
async fn connect_all(
    context: &Arc<Ctx>,
    identities: &[DeviceIdentity],
) -> anyhow::Result<Vec<Client>> {
    let limit = Arc::new(Semaphore::new(PARALLEL_SETUP));
    let mut tasks = Vec::with_capacity(identities.len());
    for identity in identities {
        let permit = limit.clone().acquire_owned().await?;
        let (context, identity) = (context.clone(), identity.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            connect_retrying(context.endpoint(&identity), &identity, None, &context.client_options)
                .await
        }));
    }
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        clients.push(task.await??);
    }
    Ok(clients)
}

/// Connects, trying again a few times on failure: under a burst of handshakes a busy hub may
/// time one out.
async fn connect_retrying(
    endpoint: &quinn::Endpoint,
    identity: &DeviceIdentity,
    code: Option<&str>,
    options: &ClientOptions,
) -> anyhow::Result<Client> {
    let mut attempt = 0;
    loop {
        match Client::connect_with(endpoint, identity, code, options).await {
            Ok(client) => return Ok(client),
            Err(_) if attempt < 4 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("connecting {}", identity.address));
            }
        }
    }
}

/// Adds each user and enrols `devices` devices for each, in bulk: the keys are made here and
/// registered through the admin API (`POST /v1/devices`) in calls of up to 10,000, a few at a
/// time, so that the hub's shard writers commit thousands of devices per fsync.
async fn enrol(
    admin: &AdminClient,
    target: &HubTarget,
    users: &[String],
    devices: u32,
    device_prefix: &str,
) -> anyhow::Result<Vec<DeviceIdentity>> {
    let mut identities = Vec::with_capacity(users.len() * devices as usize);
    for name in users {
        for device in 0..devices {
            let address = Address::parse(&format!("{name}/{device_prefix}{device}"))?;
            identities.push(DeviceIdentity::generate(address, target.hub, target.cert.clone())?);
        }
    }
    let limit = Arc::new(Semaphore::new(PARALLEL_REGISTER));
    let mut tasks = Vec::new();
    for chunk in identities.chunks(REGISTER_CHUNK) {
        let permit = limit.clone().acquire_owned().await?;
        let keys: Vec<DeviceKey> = chunk
            .iter()
            .map(|identity| DeviceKey {
                name: identity.address.as_str().to_string(),
                public_key: hex(&identity.public_key()),
                kind: None,
            })
            .collect();
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let answer = admin.register_devices(&keys, true).await?;
            if let Some(refused) = answer.results.iter().find(|r| r.error.is_some()) {
                anyhow::bail!(
                    "registering {}: {}",
                    refused.name,
                    refused.error.as_deref().unwrap_or_default()
                );
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(identities)
}

/// Makes an organisation owning the run's domain with every user as a member, and a
/// department whose line the first `members` users read. The others are colleagues in no
/// department: they may write to the line, and get their own copy as the sender.
///
/// With `main_line` (users of other hubs write to it, and a department line takes messages
/// from its organisation's members only), the line is the organisation's main line, which
/// takes messages from anyone: the first `members` users are the organisation's members,
/// in its root unit, and the others are not in it.
async fn make_line(
    admin: &AdminClient,
    target: &HubTarget,
    domain: &str,
    users: &[String],
    members: usize,
    main_line: bool,
) -> anyhow::Result<Address> {
    // The owner belongs to the root unit: a user of its own, not one of the line's members
    // (it has no devices).
    let owner = &format!("owner@{domain}");
    let line = format!("line@{domain}");
    let users = if main_line { &users[..members.min(users.len())] } else { users };
    let created = admin
        .org(&Command::CreateOrg {
            name: format!("loadgen {domain}"),
            owner: owner.clone(),
            domain: domain.to_string(),
            line: if main_line { line.clone() } else { format!("main@{domain}") },
            seat_limit: Some(users.len() as u32 + 1),
        })
        .await
        .context("creating the run's organisation")?;
    let Change::OrgCreated { org, .. } = created.change else {
        anyhow::bail!("creating the organisation answered {:?}", created.change)
    };
    let org = *org;
    let as_user = |user: String| {
        let operator = admin.clone();
        let address = target.admin;
        async move {
            // A token is made only for a user the hub knows (the owner is not a device's).
            if let Err(error) = operator.add_user(&user).await
                && !error.to_string().starts_with("409")
            {
                return Err(error.into());
            }
            anyhow::Ok(AdminClient::new(address, operator.new_token(&user).await?))
        }
    };
    let owner_client = as_user(owner.clone()).await?;
    let unit = if main_line {
        org.root
    } else {
        let unit = owner_client
            .org(&Command::CreateUnit {
                org: org.id,
                parent: org.root,
                name: "Line".into(),
                line: line.clone(),
            })
            .await
            .context("creating the line's unit")?;
        let Change::UnitCreated(unit) = unit.change else {
            anyhow::bail!("creating the unit answered {:?}", unit.change)
        };
        unit.id
    };
    let limit = Arc::new(Semaphore::new(PARALLEL_SETUP));
    let mut tasks = Vec::with_capacity(users.len());
    for (index, user) in users.iter().enumerate() {
        let permit = limit.clone().acquire_owned().await?;
        let user = user.clone();
        let owner_client = owner_client.clone();
        let client = as_user(user.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let client = client.await?;
            client.org(&Command::Register { org: org.id }).await?;
            owner_client.org(&Command::Approve { org: org.id, user: user.clone() }).await?;
            if index < members {
                owner_client.org(&Command::Assign { org: org.id, user, unit }).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await?.context("adding a member to the line")?;
    }
    Ok(Address::parse(&line)?)
}

/// The hubs' resident memory together, from their metrics.
async fn resident_bytes(admins: &[AdminClient]) -> Option<u64> {
    let mut total = 0;
    for admin in admins {
        total += admin.metrics().await.ok().and_then(|m| m.resident_bytes)?;
    }
    Some(total)
}

/// The domain of each hub's users. One hub: a domain of the run's own (`RUN.loadgen`), which
/// any hub takes. Several: each hub's first configured domain (`GET /v1/hub`), so that the
/// others route to it; with a line, the first hub's users are in `RUN.DOMAIN`, the domain of
/// the run's organisation, which the other hubs must route there (a peer domain
/// `*.DOMAIN`).
async fn user_domains(
    targets: &[HubTarget],
    admins: &[AdminClient],
    plan: &Plan,
    run_name: &str,
) -> anyhow::Result<Vec<String>> {
    if targets.len() == 1 {
        return Ok(vec![format!("{run_name}.loadgen")]);
    }
    let mut domains = Vec::with_capacity(targets.len());
    for (target, admin) in targets.iter().zip(admins) {
        let card = admin
            .hub_card()
            .await
            .with_context(|| format!("asking the hub at {} who it is", target.admin))?;
        let domain = card.domains.iter().find(|d| !d.starts_with("*.")).with_context(|| {
            format!(
                "the hub {} ({}) serves no domain of its own ([hub] domains): across hubs, \
                 each hub's users are in its first domain",
                card.name, target.admin
            )
        })?;
        domains.push(domain.clone());
    }
    if plan.line_members > 0 {
        domains[0] = format!("{run_name}.{}", domains[0]);
    }
    Ok(domains)
}

/// Waits until every hub has a link up to a peer serving each other hub's users' domain; a
/// missing route or a link that stays down is an error that names it.
async fn wait_for_links(
    targets: &[HubTarget],
    admins: &[AdminClient],
    domains: &[String],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let route = |peers: &serde_json::Value, domain: &str| {
        peers
            .as_array()
            .into_iter()
            .flatten()
            .find(|peer| {
                peer["domains"].as_array().into_iter().flatten().any(|d| {
                    d.as_str().is_some_and(|d| switchboard_hub::config::domain_matches(d, domain))
                })
            })
            .cloned()
    };
    // Every route first (a missing one is not waited for), then every link up.
    for wait in [false, true] {
        for (index, admin) in admins.iter().enumerate() {
            for (other, domain) in domains.iter().enumerate() {
                if other == index {
                    continue;
                }
                loop {
                    let peers = admin.request("GET", "/v1/peers", None).await?;
                    let Some(route) = route(&peers, domain) else {
                        anyhow::bail!(
                            "the hub at {} has no peer serving {domain} (the users of the hub at {})",
                            targets[index].admin,
                            targets[other].admin
                        );
                    };
                    if !wait || route["state"] == "up" {
                        break;
                    }
                    if Instant::now() > deadline {
                        anyhow::bail!(
                            "the link from the hub at {} to {} is not up: {}",
                            targets[index].admin,
                            route["name"],
                            route["last_error"]
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    Ok(())
}
