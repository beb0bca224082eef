//! One run: set up users and devices on a target (a Switchboard hub, or NATS JetStream for
//! comparison), send open-loop on a schedule, collect every answer and delivery, bring offline
//! devices back, and check the outcome.

use std::{
    collections::HashMap,
    io::IsTerminal,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::Rng;

use anyhow::Context;

use crate::{
    check::{Checker, LINE, Stamp, Verdict},
    hub_target::{HubFleet, HubTarget},
    journal::Journal,
    mqtt_target::{MqttFleet, MqttTarget},
    nats_target::{NatsFleet, NatsTarget},
};

/// Where the load goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Switchboard hubs over QUIC: one, or several linked as peers, the users spread over
    /// them in turn (user `u` on hub `u mod n`).
    Hubs(Vec<HubTarget>),
    /// NATS JetStream, the same workload for comparison.
    Nats(NatsTarget),
    /// An MQTT broker (Mosquitto), the same workload for comparison.
    Mqtt(MqttTarget),
}

/// Who each message is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// From a random device to a random other user.
    OneToOne,
    /// From a random device to one shared line whose members are the first `members` users
    /// of the first hub; every online device of every member receives it.
    Line {
        /// Users reading the line.
        members: u32,
    },
    /// Each message is to the line with probability `line_fraction`, else 1:1.
    Mix {
        /// Users reading the line.
        members: u32,
        /// Fraction of messages sent to the line.
        line_fraction: f64,
    },
}

/// When messages are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Evenly spaced at the rate.
    Constant,
    /// A Poisson process at the rate (exponential gaps), as independent senders make.
    Poisson,
}

/// Body sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BodySize {
    /// Every body this many bytes.
    Fixed(usize),
    /// Uniform between the two (inclusive).
    Uniform(usize, usize),
}

impl BodySize {
    fn sample(self, rng: &mut impl Rng) -> usize {
        match self {
            Self::Fixed(n) => n,
            Self::Uniform(low, high) => rng.random_range(low..=high.max(low)),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the load goes.
    pub target: Target,
    /// Who messages are for.
    pub workload: Workload,
    /// Users to make.
    pub users: u32,
    /// Devices per user.
    pub devices: u32,
    /// Messages per second, offered on schedule whatever the answers do (open loop).
    pub rate: f64,
    /// Constant or Poisson arrivals.
    pub arrivals: Arrivals,
    /// Sending before measuring starts (its messages are still checked).
    pub warmup: Duration,
    /// The process id of the server, when it runs on this machine: its CPU time is read from
    /// `/proc` (a hub reports its own through its metrics when this is not given).
    pub server_pid: Option<u32>,
    /// How long to send after the warm-up.
    pub duration: Duration,
    /// Body sizes (each at least the 20-byte stamp).
    pub body: BodySize,
    /// Fraction of devices offline while sending; they connect afterwards and must catch up.
    pub offline: f64,
    /// Online devices disconnected and reconnected per second while sending.
    pub churn: f64,
    /// Extra idle connected devices held open for the whole run (connection scale).
    pub idle: u32,
    /// Unique name for this run's users, queues or subjects, so runs can share a target.
    pub run_name: String,
    /// Show live progress on standard error.
    pub progress: bool,
    /// The hubs may be killed and restarted during the run (a crash harness does it): a
    /// device whose connection drops keeps connecting again for up to a minute, then sends
    /// again, with the same ids, whatever got no answer. Without it a dropped connection's
    /// sends count as failed.
    pub hub_restarts: bool,
    /// Journal every `accepted` answer (the message id and its stamp) to this file, fsynced;
    /// see [`crate::journal`].
    pub journal: Option<std::path::PathBuf>,
}

/// Latency percentiles in microseconds, with the whole spectrum for plots and comparisons.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
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
    /// (percentile, µs) pairs from 0 to 100, denser towards the tail.
    pub spectrum: Vec<(f64, u64)>,
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Self {
        let spectrum = if h.is_empty() {
            Vec::new()
        } else {
            h.iter_quantiles(4)
                .map(|v| (v.quantile_iterated_to() * 100.0, v.value_iterated_to()))
                .collect()
        };
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            spectrum,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// What ran: "switchboard", or "nats" with its mode.
    pub target: String,
    /// The workload, in words.
    pub workload: String,
    /// Offered messages per second.
    pub offered_rate: f64,
    /// Devices set up (users x devices).
    pub devices: u64,
    /// Seconds the setup (enrolment or consumer creation) took.
    pub setup_secs: f64,
    /// Seconds the enrolment of the devices, idle ones included, took (a hub's bulk
    /// registration), within `setup_secs`.
    #[serde(default)]
    pub enrol_secs: Option<f64>,
    /// Extra idle connections held.
    pub idle_connections: u64,
    /// The hub's resident memory per connected device, when the hub could tell.
    pub hub_bytes_per_connection: Option<f64>,
    /// Messages offered in the measured window.
    pub sent: u64,
    /// Accepted in the measured window.
    pub accepted: u64,
    /// Rejected (whole run).
    pub rejected: u64,
    /// Sends without an answer (connection lost, answer timed out): outcome unknown.
    pub failed: u64,
    /// Deliveries to devices (whole run, checked).
    pub delivered: u64,
    /// Seconds of the measured window.
    pub send_secs: f64,
    /// Accepted messages per second in the measured window.
    pub accepted_per_sec: f64,
    /// Deliveries per second in the measured window.
    pub delivered_per_sec: f64,
    /// Reconnections made by churn.
    pub reconnects: u64,
    /// Intended send time to `accepted`, measured window.
    pub accept_latency: Latency,
    /// Intended send time to delivery on each online recipient device, measured window.
    pub deliver_latency: Latency,
    /// Hubs the users were spread over.
    #[serde(default = "one")]
    pub hubs: u32,
    /// Across hubs: send -> delivered for deliveries on the sender's own hub (the sender's
    /// other devices, recipients of the same hub), measured window.
    #[serde(default)]
    pub deliver_latency_same_hub: Option<Latency>,
    /// Across hubs: send -> delivered for deliveries on another hub than the sender's (one
    /// relay between hubs), measured window.
    #[serde(default)]
    pub deliver_latency_cross_hub: Option<Latency>,
    /// How long after its intended send time the load generator handed each message to its
    /// device, measured window: load-generator delay, counted in the latencies above (absent
    /// in reports from before it was measured).
    #[serde(default)]
    pub pacer_lateness: Option<Latency>,
    /// CPU time of the server(s) from the first send until every delivery was in (warm-up
    /// and catching up included), in seconds, when it could be read.
    #[serde(default)]
    pub server_cpu_secs: Option<f64>,
    /// That, per accepted message of the whole run, in microseconds.
    #[serde(default)]
    pub server_cpu_us_per_message: Option<f64>,
    /// That, per delivery of the whole run, in microseconds.
    #[serde(default)]
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The load generator's own CPU time over the same span, in seconds.
    #[serde(default)]
    pub loadgen_cpu_secs: Option<f64>,
    /// Messages accepted over the whole run (warm-up included).
    #[serde(default)]
    pub accepted_all: u64,
    /// Lines written to the journal of accepted messages, when there is one.
    #[serde(default)]
    pub journaled: Option<u64>,
    /// Idle devices that reconnected after their hub restarted (`--idle` with
    /// `--hub-restarts`): the reconnect storm; see [`crate::storm`].
    #[serde(default)]
    pub storm: Option<crate::storm::StormReport>,
    /// Correctness over the whole run.
    pub verdict: Verdict,
}

impl Report {
    /// Whether the server could not take the load: no send of the run was accepted, or more
    /// than 1% of the sends got no answer. A saturated run says nothing of correctness (nothing
    /// accepted is nothing lost) and is never called clean.
    pub fn saturated(&self) -> bool {
        let offered = self.accepted_all + self.rejected + self.failed;
        offered > 0 && (self.accepted_all == 0 || self.failed * 100 > offered)
    }

    /// Whether the run was correct and not saturated.
    pub fn is_clean(&self) -> bool {
        self.verdict.is_clean() && !self.saturated()
    }
}

fn one() -> u32 {
    1
}

/// The counters and histograms every target reports into.
pub(crate) struct Shared {
    pub(crate) start: Instant,
    /// Who is on which hub, to tell deliveries across hubs from the others.
    plan: Plan,
    /// Send -> delivered on the sender's hub and on another, with several hubs.
    deliver_same_hub: Mutex<Histogram<u64>>,
    deliver_cross_hub: Mutex<Histogram<u64>>,
    checker: Mutex<Checker>,
    accept_latency: Mutex<Histogram<u64>>,
    deliver_latency: Mutex<Histogram<u64>>,
    /// Sends that have not been answered yet.
    pub(crate) unanswered: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    delivered: AtomicU64,
    /// Nanoseconds after `start` from which sends and deliveries are measured.
    measure_from_ns: AtomicU64,
    /// Nanoseconds after `start` at which the measured window ended (0 while it lasts).
    measure_to_ns: AtomicU64,
    accepted_measured: AtomicU64,
    delivered_measured: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// Live figures for progress: deliveries since the last look.
    live_errors: AtomicU64,
    pub(crate) stopping: AtomicBool,
    pub(crate) journal: Option<Journal>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

impl Shared {
    fn new(plan: Plan, journal: Option<Journal>) -> Self {
        Self {
            journal,
            start: Instant::now(),
            plan,
            deliver_same_hub: Mutex::new(histogram()),
            deliver_cross_hub: Mutex::new(histogram()),
            checker: Mutex::default(),
            accept_latency: Mutex::new(histogram()),
            deliver_latency: Mutex::new(histogram()),
            unanswered: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            measure_from_ns: AtomicU64::new(u64::MAX),
            measure_to_ns: AtomicU64::new(0),
            accepted_measured: AtomicU64::new(0),
            delivered_measured: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            live_errors: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Whether a message meant to be sent at `intended_ns` falls in the measured window.
    fn measured(&self, intended_ns: u64) -> bool {
        let to = self.measure_to_ns.load(Ordering::Relaxed);
        intended_ns >= self.measure_from_ns.load(Ordering::Relaxed) && (to == 0 || intended_ns < to)
    }

    /// The target accepted (made durable) the message `stamp`, which `devices` must receive.
    pub(crate) fn accepted(&self, stamp: Stamp, devices: Vec<u32>) {
        let now_ns = self.now_ns();
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if self.measured(stamp.intended_ns) {
            self.accepted_measured.fetch_add(1, Ordering::Relaxed);
            let micros = now_ns.saturating_sub(stamp.intended_ns) / 1000;
            let _ = self.accept_latency.lock().expect("histogram lock").record(micros.max(1));
        }
        self.checker.lock().expect("checker lock").accepted(stamp, devices);
        self.unanswered.fetch_sub(1, Ordering::Relaxed);
    }

    /// The target refused a message.
    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.live_errors.fetch_add(1, Ordering::Relaxed);
        self.unanswered.fetch_sub(1, Ordering::Relaxed);
    }

    /// A send failed without an answer (its connection went away, its answer timed out): it
    /// may or may not have been stored, so it is required nowhere and allowed everywhere.
    pub(crate) fn failed(&self, stamp: Stamp) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.checker.lock().expect("checker lock").uncertain(stamp);
        self.live_errors.fetch_add(1, Ordering::Relaxed);
        self.unanswered.fetch_sub(1, Ordering::Relaxed);
    }

    /// `device` received the message `stamp`.
    pub(crate) fn delivered(&self, device: u32, stamp: Stamp) {
        let now_ns = self.now_ns();
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if self.measured(stamp.intended_ns) {
            self.delivered_measured.fetch_add(1, Ordering::Relaxed);
            let micros = (now_ns.saturating_sub(stamp.intended_ns) / 1000).max(1);
            let _ = self.deliver_latency.lock().expect("histogram lock").record(micros);
            if self.plan.hubs > 1 {
                let (from, to) = (self.plan.user_of(stamp.sender), self.plan.user_of(device));
                let across = self.plan.hub_of(from) != self.plan.hub_of(to);
                let histogram =
                    if across { &self.deliver_cross_hub } else { &self.deliver_same_hub };
                let _ = histogram.lock().expect("histogram lock").record(micros);
            }
        }
        self.checker.lock().expect("checker lock").received(device, stamp);
    }
}

/// One message to send.
pub(crate) struct Job {
    /// The user (or, for the line, `None`) it is for.
    pub(crate) to_user: Option<u32>,
    pub(crate) stamp: Stamp,
    pub(crate) body: Bytes,
    /// Every device that must receive it.
    pub(crate) expected: Vec<u32>,
}

/// The devices of one target, set up and connected.
enum Fleet {
    Hubs(HubFleet),
    Nats(NatsFleet),
    Mqtt(MqttFleet),
}

impl Fleet {
    fn is_online(&self, device: u32) -> bool {
        match self {
            Self::Hubs(fleet) => fleet.is_online(device),
            Self::Nats(fleet) => fleet.is_online(device),
            Self::Mqtt(fleet) => fleet.is_online(device),
        }
    }

    fn submit(&self, sender: u32, job: Job) {
        match self {
            Self::Hubs(fleet) => fleet.submit(sender, job),
            Self::Nats(fleet) => fleet.submit(sender, job),
            Self::Mqtt(fleet) => fleet.submit(sender, job),
        }
    }

    async fn churn_one(&mut self, device: u32) -> anyhow::Result<()> {
        match self {
            Self::Hubs(fleet) => fleet.reconnect(device).await,
            Self::Nats(fleet) => fleet.reconnect(device).await,
            Self::Mqtt(fleet) => fleet.reconnect(device).await,
        }
    }

    async fn bring_back(&mut self, devices: &[u32]) -> anyhow::Result<()> {
        match self {
            Self::Hubs(fleet) => fleet.bring_back(devices).await,
            Self::Nats(fleet) => fleet.bring_back(devices).await,
            Self::Mqtt(fleet) => fleet.bring_back(devices).await,
        }
    }

    /// The server's CPU time so far, in seconds.
    async fn server_cpu(&self, pid: Option<u32>) -> Option<f64> {
        if let Some(pid) = pid {
            return switchboard_hub::admin::proc_cpu_seconds(&format!("/proc/{pid}/stat"));
        }
        match self {
            Self::Hubs(fleet) => fleet.cpu_seconds().await,
            Self::Nats(_) | Self::Mqtt(_) => None,
        }
    }

    async fn bytes_per_connection(&self) -> Option<f64> {
        match self {
            Self::Hubs(fleet) => fleet.bytes_per_connection().await,
            Self::Nats(_) | Self::Mqtt(_) => None,
        }
    }

    async fn shutdown(self) {
        match self {
            Self::Hubs(fleet) => fleet.shutdown().await,
            Self::Nats(fleet) => fleet.shutdown().await,
            Self::Mqtt(fleet) => fleet.shutdown().await,
        }
    }
}

/// The plan every target follows: who is on which hub, who is offline, who reads the line.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) users: u32,
    pub(crate) devices: u32,
    /// Hubs the users are spread over, in turn.
    pub(crate) hubs: u32,
    /// Users reading the line (the first `line_members` users of the first hub), 0 without
    /// a line.
    pub(crate) line_members: u32,
    offline_every: u32,
}

impl Plan {
    fn new(options: &Options) -> Self {
        let hubs = match &options.target {
            Target::Hubs(hubs) => (hubs.len() as u32).max(1),
            Target::Nats(_) | Target::Mqtt(_) => 1,
        };
        let line_members = match options.workload {
            Workload::OneToOne => 0,
            Workload::Line { members } | Workload::Mix { members, .. } => {
                members.min(options.users.div_ceil(hubs))
            }
        };
        let offline_every =
            if options.offline > 0.0 { (1.0 / options.offline).round() as u32 } else { 0 };
        Self { users: options.users, devices: options.devices, hubs, line_members, offline_every }
    }

    /// The hub (index) of `user`.
    pub(crate) fn hub_of(&self, user: u32) -> u32 {
        user % self.hubs
    }

    /// Whether `user` reads the line.
    pub(crate) fn is_member(&self, user: u32) -> bool {
        self.hub_of(user) == 0 && user / self.hubs < self.line_members
    }

    /// Devices in all.
    pub(crate) fn total(&self) -> u32 {
        self.users * self.devices
    }

    /// Whether `device` is kept offline while sending (a fixed stride, so it is repeatable).
    pub(crate) fn is_offline(&self, device: u32) -> bool {
        self.offline_every > 0 && device % self.offline_every == self.offline_every - 1
    }

    pub(crate) fn user_of(&self, device: u32) -> u32 {
        device / self.devices
    }

    pub(crate) fn devices_of(&self, user: u32) -> std::ops::Range<u32> {
        user * self.devices..(user + 1) * self.devices
    }
}

/// Runs the workload and checks it.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let plan = Plan::new(&options);
    anyhow::ensure!(options.users >= 1 && options.devices >= 1, "at least one user and device");
    anyhow::ensure!(options.rate > 0.0, "the rate must be positive");
    anyhow::ensure!(
        matches!(options.target, Target::Hubs(_))
            || (options.journal.is_none() && !options.hub_restarts),
        "hub restarts and the journal are for runs against hubs"
    );
    let journal = match &options.journal {
        Some(path) => {
            Some(Journal::create(path).with_context(|| format!("journal {}", path.display()))?)
        }
        None => None,
    };
    let shared = Arc::new(Shared::new(plan.clone(), journal));
    let setup_start = Instant::now();
    let mut fleet = match &options.target {
        Target::Hubs(targets) => {
            Fleet::Hubs(HubFleet::setup(targets, &plan, &options, shared.clone()).await?)
        }
        Target::Nats(target) => {
            Fleet::Nats(NatsFleet::setup(target, &plan, &options, shared.clone()).await?)
        }
        Target::Mqtt(target) => {
            Fleet::Mqtt(MqttFleet::setup(target, &plan, &options, shared.clone()).await?)
        }
    };
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let bytes_per_connection = fleet.bytes_per_connection().await;
    let enrol_secs = match &fleet {
        Fleet::Hubs(fleet) => Some(fleet.enrol_secs()),
        Fleet::Nats(_) | Fleet::Mqtt(_) => None,
    };

    let senders: Vec<u32> = (0..plan.total()).filter(|&d| fleet.is_online(d)).collect();
    anyhow::ensure!(!senders.is_empty(), "no device is online to send");

    // Open loop: each message has a due time fixed by the schedule alone, whatever happened
    // to the ones before; latency counts from that time.
    let mut rng = rand::rng();
    let mut sequence: HashMap<(u32, u32), u64> = HashMap::new();
    let server_cpu_start = fleet.server_cpu(options.server_pid).await;
    let loadgen_cpu_start = switchboard_hub::admin::process_cpu_seconds();
    let send_start = Instant::now();
    let measure_from = send_start + options.warmup;
    let end = measure_from + options.duration;
    shared
        .measure_from_ns
        .store(measure_from.duration_since(shared.start).as_nanos() as u64, Ordering::Relaxed);
    let mean_gap = 1.0 / options.rate;
    let mut due = send_start;
    let mut sent_measured = 0u64;
    let mut progress = Progress::new(options.progress, &shared);
    let churn_gap = (options.churn > 0.0).then(|| Duration::from_secs_f64(1.0 / options.churn));
    let mut next_churn = churn_gap.map(|gap| send_start + gap);
    let outsiders: Vec<u32> =
        senders.iter().copied().filter(|&d| !plan.is_member(plan.user_of(d))).collect();
    anyhow::ensure!(
        plan.line_members == 0 || !outsiders.is_empty(),
        "a line workload needs online users outside the line to send (users > members)"
    );
    // NATS has no idea of a sender's other devices; the hub copies every message there.
    let copies_to_sender = matches!(options.target, Target::Hubs(_));
    let line_devices: Vec<u32> =
        (0..plan.users).filter(|&u| plan.is_member(u)).flat_map(|u| plan.devices_of(u)).collect();
    let line_fraction = match options.workload {
        Workload::OneToOne => 0.0,
        Workload::Line { .. } => 1.0,
        Workload::Mix { line_fraction, .. } => line_fraction,
    };
    // The sends are paced on a thread of their own, which sleeps to the microsecond: tokio's
    // timers tick in whole milliseconds, and a message sent up to a millisecond after its due
    // time counts that delay as latency (measured: p50 and p99 send -> delivered both 0.5-1 ms
    // too high at 1,000 msg/s). How late the pacer itself was is reported.
    anyhow::ensure!(
        tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread,
        "loadgen paces its sends on a thread of its own: run it on a multi-threaded tokio runtime"
    );
    let handle = tokio::runtime::Handle::current();
    let mut lateness = histogram();
    let paced = tokio::task::block_in_place(|| -> anyhow::Result<()> {
        while due < end {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if due >= measure_from {
                lateness.saturating_record((due.elapsed().as_micros() as u64).max(1));
            }
            if let (Some(at), Some(gap)) = (next_churn, churn_gap)
                && Instant::now() >= at
            {
                let device = senders[rng.random_range(0..senders.len())];
                handle.block_on(fleet.churn_one(device))?;
                next_churn = Some(at + gap);
            }
            let to_line = plan.line_members > 0 && rng.random_bool(line_fraction.clamp(0.0, 1.0));
            // Line messages come from users outside the line: a member's own copy would reach its
            // devices twice (through the line and through its own queue).
            let sender = if to_line {
                outsiders[rng.random_range(0..outsiders.len())]
            } else {
                senders[rng.random_range(0..senders.len())]
            };
            let from_user = plan.user_of(sender);
            let to_user = (!to_line).then(|| {
                let to_user = rng.random_range(0..plan.users);
                if plan.users > 1 && to_user == from_user {
                    (to_user + 1) % plan.users
                } else {
                    to_user
                }
            });
            let to = to_user.unwrap_or(LINE);
            let seq = sequence.entry((sender, to)).or_insert(0);
            *seq += 1;
            let stamp = Stamp {
                sender,
                to,
                seq: *seq,
                intended_ns: due.duration_since(shared.start).as_nanos() as u64,
            };
            let mut expected: Vec<u32> = match to_user {
                Some(user) => plan.devices_of(user).collect(),
                None => line_devices.clone(),
            };
            if copies_to_sender && to_user != Some(from_user) {
                // The hub keeps a copy in the sender's own queue: all of the sender's devices
                // (the sending one too) see the conversation.
                expected.extend(plan.devices_of(from_user));
            }
            let body = Bytes::from(stamp.body(options.body.sample(&mut rng)));
            shared.unanswered.fetch_add(1, Ordering::Relaxed);
            fleet.submit(sender, Job { to_user, stamp, body, expected });
            if due >= measure_from {
                sent_measured += 1;
            }
            progress.tick(&options);
            let gap = match options.arrivals {
                Arrivals::Constant => mean_gap,
                // Exponential gaps; 1 - U is in (0, 1] so the logarithm is finite.
                Arrivals::Poisson => -(1.0 - rng.random::<f64>()).ln() * mean_gap,
            };
            due += Duration::from_secs_f64(gap);
        }
        Ok(())
    });
    paced?;
    let send_secs = options.duration.as_secs_f64();
    shared
        .measure_to_ns
        .store(end.duration_since(shared.start).as_nanos() as u64, Ordering::Relaxed);
    // Answers for everything sent.
    wait_until(Duration::from_secs(60), || shared.unanswered.load(Ordering::Relaxed) == 0).await;
    progress.finish();

    // Offline devices come back and must catch up.
    let offline: Vec<u32> = (0..plan.total()).filter(|&d| plan.is_offline(d)).collect();
    fleet.bring_back(&offline).await?;
    let expected_deliveries = shared.checker.lock().expect("checker lock").expected_deliveries();
    wait_until(Duration::from_secs(120), || {
        shared.delivered.load(Ordering::Relaxed) >= expected_deliveries
    })
    .await;
    let server_cpu = fleet
        .server_cpu(options.server_pid)
        .await
        .zip(server_cpu_start)
        .map(|(end, start)| end - start);
    let loadgen_cpu = switchboard_hub::admin::process_cpu_seconds()
        .zip(loadgen_cpu_start)
        .map(|(end, start)| end - start);
    // A moment more, so that a duplicate arriving late is seen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Idle devices still coming back after a hub restart: the storm is waited out (up to ten
    // minutes) and measured.
    let storm = match &fleet {
        Fleet::Hubs(fleet) => fleet.storm_report(Duration::from_secs(600)).await,
        Fleet::Nats(_) | Fleet::Mqtt(_) => None,
    };
    shared.stopping.store(true, Ordering::Relaxed);
    fleet.shutdown().await;
    let journaled = match &shared.journal {
        Some(journal) => {
            journal.close().context("writing the journal")?;
            Some(journal.written())
        }
        None => None,
    };

    let accepted_measured = shared.accepted_measured.load(Ordering::Relaxed);
    let accepted_all = shared.accepted.load(Ordering::Relaxed);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let per = |count: u64| server_cpu.filter(|_| count > 0).map(|secs| secs * 1e6 / count as f64);
    let report = Report {
        target: match &options.target {
            Target::Hubs(_) => "switchboard".into(),
            Target::Nats(target) => format!("nats ({})", target.label),
            Target::Mqtt(target) => format!("mqtt ({})", target.label),
        },
        workload: describe(&options, &plan),
        offered_rate: options.rate,
        devices: u64::from(plan.total()),
        setup_secs,
        enrol_secs,
        idle_connections: u64::from(options.idle),
        hub_bytes_per_connection: bytes_per_connection,
        sent: sent_measured,
        accepted: accepted_measured,
        rejected: shared.rejected.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        delivered: shared.delivered.load(Ordering::Relaxed),
        send_secs,
        accepted_per_sec: accepted_measured as f64 / send_secs,
        delivered_per_sec: shared.delivered_measured.load(Ordering::Relaxed) as f64 / send_secs,
        reconnects: shared.reconnects.load(Ordering::Relaxed),
        accept_latency: Latency::from(&*shared.accept_latency.lock().expect("histogram lock")),
        deliver_latency: Latency::from(&*shared.deliver_latency.lock().expect("histogram lock")),
        hubs: plan.hubs,
        deliver_latency_same_hub: (plan.hubs > 1)
            .then(|| Latency::from(&*shared.deliver_same_hub.lock().expect("histogram lock"))),
        deliver_latency_cross_hub: (plan.hubs > 1)
            .then(|| Latency::from(&*shared.deliver_cross_hub.lock().expect("histogram lock"))),
        pacer_lateness: Some(Latency::from(&lateness)),
        server_cpu_secs: server_cpu,
        server_cpu_us_per_message: per(accepted_all),
        server_cpu_us_per_delivery: per(delivered),
        loadgen_cpu_secs: loadgen_cpu,
        accepted_all,
        journaled,
        storm,
        verdict: shared.checker.lock().expect("checker lock").verdict(),
    };
    Ok(report)
}

fn describe(options: &Options, plan: &Plan) -> String {
    let kind = match options.workload {
        Workload::OneToOne => "1:1".to_string(),
        Workload::Line { .. } => format!("line of {} members", plan.line_members),
        Workload::Mix { line_fraction, .. } => {
            format!(
                "mix: {:.0}% to a line of {}, rest 1:1",
                line_fraction * 100.0,
                plan.line_members
            )
        }
    };
    let arrivals = match options.arrivals {
        Arrivals::Constant => "constant",
        Arrivals::Poisson => "Poisson",
    };
    let body = match options.body {
        BodySize::Fixed(n) => format!("{n} B"),
        BodySize::Uniform(a, b) => format!("{a}-{b} B"),
    };
    let hubs = match plan.hubs {
        1 => String::new(),
        n => format!(" over {n} hubs"),
    };
    format!(
        "{kind}, {} users x {} devices{hubs}, {arrivals} arrivals, {body} bodies, {:.0}% offline, churn {}/s",
        plan.users,
        plan.devices,
        options.offline * 100.0,
        options.churn
    )
}

pub(crate) async fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Live progress once a second: a bar on a terminal, plain lines otherwise.
struct Progress {
    shared: Arc<Shared>,
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    last: Instant,
    last_accepted: u64,
    last_delivered: u64,
}

impl Progress {
    fn new(enabled: bool, shared: &Arc<Shared>) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .expect("valid progress template"),
            );
            bar
        });
        Self {
            shared: shared.clone(),
            bar,
            plain: enabled && !terminal,
            last: Instant::now(),
            last_accepted: 0,
            last_delivered: 0,
        }
    }

    fn tick(&mut self, options: &Options) {
        if self.bar.is_none() && !self.plain {
            return;
        }
        let elapsed = self.last.elapsed();
        if elapsed < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let accepted = self.shared.accepted.load(Ordering::Relaxed);
        let delivered = self.shared.delivered.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let p99 =
            self.shared.deliver_latency.lock().expect("histogram lock").value_at_quantile(0.99);
        let line = format!(
            "offered {:.0}/s  accepted {:.0}/s  delivered {:.0}/s  p99 delivered {:.1} ms  errors {}",
            options.rate,
            (accepted - self.last_accepted) as f64 / secs,
            (delivered - self.last_delivered) as f64 / secs,
            p99 as f64 / 1000.0,
            self.shared.live_errors.load(Ordering::Relaxed),
        );
        self.last_accepted = accepted;
        self.last_delivered = delivered;
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => eprintln!("loadgen: {line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_whose_sends_all_failed_is_saturated_and_not_clean() {
        let mut report = Report { accepted_all: 0, failed: 5_000, ..Report::default() };
        assert!(report.verdict.is_clean(), "nothing accepted, nothing lost");
        assert!(report.saturated() && !report.is_clean());
        // All refused: saturated too.
        report = Report { accepted_all: 0, rejected: 5_000, ..Report::default() };
        assert!(report.saturated());
        // More than 1% unanswered.
        report = Report { accepted_all: 9_800, failed: 200, ..Report::default() };
        assert!(report.saturated());
        // Under 1% unanswered, everything else accepted and correct: clean.
        report = Report { accepted_all: 9_950, failed: 50, ..Report::default() };
        assert!(!report.saturated() && report.is_clean());
        // Nothing offered at all is no saturation.
        assert!(!Report::default().saturated());
    }
}
