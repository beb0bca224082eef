//! `loadgen`: open-loop load against a Switchboard hub (or NATS JetStream, for comparison),
//! with every delivery checked.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use switchboard_loadgen::{
    hub_target::HubTarget,
    mqtt_target::MqttTarget,
    nats_target::NatsTarget,
    plot,
    run::{Arrivals, BodySize, Latency, Options, Report, Target, Workload, run},
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for Switchboard hubs: enrols users and devices, sends messages at a rate
/// (open loop: latency counts from the intended send time, so a stall is measured, not
/// hidden), and checks that every accepted message reached every device it should, exactly
/// once and in order. Exits with status 1 if it did not, 2 if the run could not be made.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about, args_override_self = true)]
struct Cli {
    /// A named workload; flags given after it change it. smoke: 50 users x 2 devices at
    /// 500/s for 5 s. direct: 1,000 users x 1 device, 1:1. department: a line of 1,000
    /// members, 1 device each. mixed: 1,000 users x 2 devices, 10% to a line of 100, 5%
    /// offline, 2 reconnections a second.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// What to load: a Switchboard hub, or NATS JetStream or an MQTT broker (the same
    /// workload, to compare).
    #[arg(long, value_enum, default_value_t = TargetKind::Hub)]
    target: TargetKind,
    /// The hub's QUIC address; several, comma-separated, to spread the users over linked
    /// hubs (user u on the u-th mod n) and send across them.
    #[arg(long, alias = "hubs", value_delimiter = ',', default_value = "127.0.0.1:7447")]
    hub: Vec<std::net::SocketAddr>,
    /// The hub's admin API address; with several hubs, one per hub, in the same order.
    #[arg(long, alias = "admins", value_delimiter = ',', default_value = "127.0.0.1:7448")]
    admin: Vec<std::net::SocketAddr>,
    /// The hub's data directory, to read its admin token and certificate (default: the hub's
    /// default data directory); with several hubs, one per hub, in the same order.
    #[arg(long, alias = "data-dirs", value_delimiter = ',')]
    data_dir: Vec<PathBuf>,
    /// The NATS server, with --target nats.
    #[arg(long, default_value = "127.0.0.1:4222")]
    nats: String,
    /// How the NATS server syncs, for the report (e.g. "sync_interval: always").
    #[arg(long, default_value = "server defaults")]
    nats_label: String,
    /// The MQTT broker's TCP address, with --target mqtt.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: std::net::SocketAddr,
    /// What to call the MQTT broker's run in the report (how it keeps messages).
    #[arg(long, default_value = "broker defaults, not durable")]
    mqtt_label: String,
    /// Users.
    #[arg(long)]
    users: Option<u32>,
    /// Devices per user.
    #[arg(long)]
    devices: Option<u32>,
    /// Who messages are for.
    #[arg(long, value_enum)]
    workload: Option<WorkloadKind>,
    /// Users reading the line (line and mix workloads); they are the first users.
    #[arg(long)]
    members: Option<u32>,
    /// Fraction of messages to the line (mix workload).
    #[arg(long)]
    line_fraction: Option<f64>,
    /// Messages per second, or "max": step the rate up until p99 or errors break the bound
    /// (--max-p99-ms) and report the highest rate that held.
    #[arg(long)]
    rate: Option<String>,
    /// The p99 send -> delivered bound for --rate max, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    max_p99_ms: f64,
    /// Arrivals: evenly spaced, or a Poisson process.
    #[arg(long, value_enum)]
    arrivals: Option<ArrivalKind>,
    /// Seconds of sending before measuring (its messages are still checked).
    #[arg(long)]
    warmup: Option<f64>,
    /// Seconds of measured sending.
    #[arg(long)]
    duration: Option<f64>,
    /// Body size in bytes, or a uniform range "MIN-MAX".
    #[arg(long)]
    body: Option<String>,
    /// Fraction of devices offline while sending (they reconnect after and must catch up).
    #[arg(long)]
    offline: Option<f64>,
    /// Devices disconnected and reconnected per second while sending.
    #[arg(long)]
    churn: Option<f64>,
    /// Extra idle connected devices held for the run; the report gives the hub's resident
    /// memory per connection. With --hub-restarts they connect again when their hub is
    /// restarted, as devices do, and the report measures that reconnect storm.
    #[arg(long)]
    idle: Option<u32>,
    /// The server's process id, when it runs on this machine: its CPU time is read from /proc
    /// (a hub reports its own through its metrics when this is not given).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The hubs may be killed and restarted during the run (by a crash harness): devices
    /// whose connection drops connect again for up to a minute and send again, with the same
    /// ids, what got no answer.
    #[arg(long)]
    hub_restarts: bool,
    /// Write every accepted message (id, sender, recipient, number) to FILE, fsynced.
    #[arg(long, value_name = "FILE")]
    journal: Option<std::path::PathBuf>,
    /// Turn UDP segmentation offload off.
    #[arg(long)]
    no_gso: bool,
    /// No progress while running.
    #[arg(long)]
    quiet: bool,
    /// Write the report (every figure and the whole percentile spectrum) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the latency percentiles as SVG (or, for a .html name, an HTML page holding it).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Compare two or more JSON reports instead of running: a table, and with --plot their
    /// percentile curves on one chart.
    #[arg(long, num_args = 2.., value_name = "REPORT.json")]
    compare: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    Smoke,
    Direct,
    Department,
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Hub,
    Nats,
    Mqtt,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum WorkloadKind {
    #[value(name = "1:1", alias = "direct")]
    OneToOne,
    Line,
    Mix,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArrivalKind {
    Constant,
    Poisson,
}

/// A workload's settings before the command line changes them.
struct Settings {
    users: u32,
    devices: u32,
    workload: WorkloadKind,
    members: u32,
    line_fraction: f64,
    rate: String,
    arrivals: ArrivalKind,
    warmup: f64,
    duration: f64,
    body: String,
    offline: f64,
    churn: f64,
    idle: u32,
}

impl Settings {
    fn of(preset: Option<Preset>) -> Self {
        let base = Self {
            users: 100,
            devices: 2,
            workload: WorkloadKind::OneToOne,
            members: 10,
            line_fraction: 0.1,
            rate: "1000".into(),
            arrivals: ArrivalKind::Constant,
            warmup: 1.0,
            duration: 10.0,
            body: "256".into(),
            offline: 0.0,
            churn: 0.0,
            idle: 0,
        };
        match preset {
            None => base,
            Some(Preset::Smoke) => {
                Self { users: 50, rate: "500".into(), duration: 5.0, warmup: 0.5, ..base }
            }
            Some(Preset::Direct) => Self { users: 1000, devices: 1, ..base },
            Some(Preset::Department) => Self {
                users: 1001,
                devices: 1,
                workload: WorkloadKind::Line,
                members: 1000,
                rate: "200".into(),
                ..base
            },
            Some(Preset::Mixed) => Self {
                users: 1000,
                devices: 2,
                workload: WorkloadKind::Mix,
                members: 100,
                line_fraction: 0.1,
                arrivals: ArrivalKind::Poisson,
                offline: 0.05,
                churn: 2.0,
                ..base
            },
        }
    }

    fn apply(mut self, cli: &Cli) -> Self {
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = cli.$field.clone() { self.$field = v; } )* };
        }
        take!(
            users,
            devices,
            workload,
            members,
            line_fraction,
            rate,
            arrivals,
            warmup,
            duration,
            body,
            offline,
            churn,
            idle
        );
        self
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn main_async(cli: Cli) -> anyhow::Result<bool> {
    if !cli.compare.is_empty() {
        return compare(&cli);
    }
    let settings = Settings::of(cli.preset).apply(&cli);
    let target = match cli.target {
        TargetKind::Hub => Target::Hubs(hub_targets(&cli)?),
        TargetKind::Nats => {
            Target::Nats(NatsTarget { url: cli.nats.clone(), label: cli.nats_label.clone() })
        }
        TargetKind::Mqtt => {
            Target::Mqtt(MqttTarget { address: cli.mqtt, label: cli.mqtt_label.clone() })
        }
    };
    let workload = match settings.workload {
        WorkloadKind::OneToOne => Workload::OneToOne,
        WorkloadKind::Line => Workload::Line { members: settings.members },
        WorkloadKind::Mix => {
            Workload::Mix { members: settings.members, line_fraction: settings.line_fraction }
        }
    };
    let options = Options {
        target,
        workload,
        users: settings.users,
        devices: settings.devices,
        rate: 0.0,
        arrivals: match settings.arrivals {
            ArrivalKind::Constant => Arrivals::Constant,
            ArrivalKind::Poisson => Arrivals::Poisson,
        },
        warmup: Duration::from_secs_f64(settings.warmup),
        server_pid: cli.server_pid,
        duration: Duration::from_secs_f64(settings.duration),
        body: parse_body(&settings.body)?,
        offline: settings.offline,
        churn: settings.churn,
        idle: settings.idle,
        run_name: String::new(),
        progress: !cli.quiet,
        hub_restarts: cli.hub_restarts,
        journal: cli.journal.clone(),
    };
    let report = if settings.rate == "max" {
        find_max(&cli, options).await?
    } else {
        let rate: f64 = settings
            .rate
            .parse()
            .with_context(|| format!("--rate {}: a number or \"max\"", settings.rate))?;
        let options = Options { rate, run_name: run_name(), ..options };
        eprintln!("loadgen: {} at {rate}/s", describe_target(&options));
        let report = run(options).await?;
        print_report(&report);
        report
    };
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cli.plot {
        plot::write(path, &[(label_of(&report), &report)])?;
    }
    Ok(report.is_clean())
}

/// The hubs of `--hub`, `--admin` and `--data-dir`, zipped in order.
fn hub_targets(cli: &Cli) -> anyhow::Result<Vec<HubTarget>> {
    let n = cli.hub.len();
    let data_dirs = match cli.data_dir.len() {
        0 if n == 1 => vec![switchboard_hub::config::default_data_dir()],
        len if len == n => cli.data_dir.clone(),
        len => anyhow::bail!("{n} hubs but {len} data directories: one per hub, in order"),
    };
    anyhow::ensure!(
        cli.admin.len() == n,
        "{n} hubs but {} admin addresses: one per hub, in order",
        cli.admin.len()
    );
    let mut targets = Vec::with_capacity(n);
    for ((&hub, &admin), data_dir) in cli.hub.iter().zip(&cli.admin).zip(&data_dirs) {
        let token = std::fs::read_to_string(data_dir.join("admin.token"))
            .with_context(|| format!("the hub's admin token in {}", data_dir.display()))?;
        let cert = std::fs::read(data_dir.join("tls/cert.der"))
            .with_context(|| format!("the hub's certificate in {}", data_dir.display()))?;
        targets.push(HubTarget {
            hub,
            admin,
            token: token.trim().to_string(),
            cert,
            gso: !cli.no_gso,
        });
    }
    Ok(targets)
}

fn run_name() -> String {
    format!("run{:08x}", rand::random::<u32>())
}

fn describe_target(options: &Options) -> String {
    match &options.target {
        Target::Hubs(hubs) => {
            let addresses: Vec<String> = hubs.iter().map(|h| h.hub.to_string()).collect();
            format!("hub {}", addresses.join(", "))
        }
        Target::Nats(nats) => format!("NATS {} ({})", nats.url, nats.label),
        Target::Mqtt(mqtt) => format!("MQTT {} ({})", mqtt.address, mqtt.label),
    }
}

fn label_of(report: &Report) -> String {
    format!("{} {:.0}/s", report.target, report.offered_rate)
}

fn parse_body(text: &str) -> anyhow::Result<BodySize> {
    let number = |s: &str| {
        s.trim().parse::<usize>().with_context(|| format!("--body {text}: a size or MIN-MAX"))
    };
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (number(low)?, number(high)?);
            anyhow::ensure!(low <= high, "--body {text}: MIN above MAX");
            Ok(BodySize::Uniform(low, high))
        }
        None => Ok(BodySize::Fixed(number(text)?)),
    }
}

/// Steps the rate up (x1.5 from 1,000/s) until a step breaks the bound: p99 send ->
/// delivered above --max-p99-ms, any rejected, failed, lost, duplicated or reordered message,
/// or less than 95% of the offered rate accepted. Reports the last step that held, then runs
/// once more at half of it and prints that run's latency.
async fn find_max(cli: &Cli, options: Options) -> anyhow::Result<Report> {
    let bound_us = (cli.max_p99_ms * 1000.0) as u64;
    let mut rate = 1000.0;
    let mut best: Option<Report> = None;
    loop {
        let step = Options { rate, run_name: run_name(), ..options.clone() };
        eprintln!("loadgen: step at {rate:.0}/s");
        let report = run(step).await?;
        let held = report.verdict.is_clean()
            && report.rejected == 0
            && report.failed == 0
            && report.deliver_latency.p99_us <= bound_us
            && report.accepted_per_sec >= 0.95 * rate;
        println!(
            "step {:>9.0}/s  accepted {:>9.0}/s  p99 delivered {:>9.1} ms  {}",
            rate,
            report.accepted_per_sec,
            report.deliver_latency.p99_us as f64 / 1000.0,
            if held { "held" } else { "broke the bound" }
        );
        if !held {
            let Some(best) = best else {
                print_report(&report);
                anyhow::bail!("even {rate:.0}/s broke the bound");
            };
            println!("highest rate that held: {:.0}/s", best.offered_rate);
            print_report(&best);
            // The latency a hub gives with room to spare: at half its highest rate.
            let half = best.offered_rate / 2.0;
            eprintln!("loadgen: step at {half:.0}/s (half of the highest)");
            let at_half =
                run(Options { rate: half, run_name: run_name(), ..options.clone() }).await?;
            println!(
                "at half the highest rate, {:.0}/s: p50 {:.2} ms, p99 {:.2} ms send -> delivered, {}",
                half,
                at_half.deliver_latency.p50_us as f64 / 1000.0,
                at_half.deliver_latency.p99_us as f64 / 1000.0,
                if at_half.is_clean() { "clean" } else { "NOT clean" }
            );
            anyhow::ensure!(at_half.is_clean(), "the run at half the highest rate was not clean");
            return Ok(best);
        }
        best = Some(report);
        rate *= 1.5;
    }
}

fn compare(cli: &Cli) -> anyhow::Result<bool> {
    let mut reports = Vec::new();
    for path in &cli.compare {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let report: Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        reports.push((path.display().to_string(), report));
    }
    let base = &reports[0].1;
    println!(
        "{:<44} {:>11} {:>7} {:>12} {:>9} {:>9} {:>9} {:>9}  clean",
        "report", "accepted/s", "ratio", "deliveries/s", "p50 ms", "p99 ms", "µs/msg", "µs/deliv",
    );
    for (name, report) in &reports {
        let ratio = if base.accepted_per_sec > 0.0 {
            report.accepted_per_sec / base.accepted_per_sec
        } else {
            0.0
        };
        let cpu = |us: Option<f64>| us.map_or("-".into(), |us| format!("{us:.1}"));
        println!(
            "{:<44} {:>11.0} {:>6.2}x {:>12.0} {:>9.2} {:>9.2} {:>9} {:>9}  {}",
            format!("{} ({})", report.target, name),
            report.accepted_per_sec,
            ratio,
            report.delivered_per_sec,
            report.deliver_latency.p50_us as f64 / 1000.0,
            report.deliver_latency.p99_us as f64 / 1000.0,
            cpu(report.server_cpu_us_per_message),
            cpu(report.server_cpu_us_per_delivery),
            match (report.saturated(), report.verdict.is_clean()) {
                (true, _) => "saturated",
                (false, true) => "yes",
                (false, false) => "NO",
            }
        );
    }
    if let Some(path) = &cli.plot {
        let labelled: Vec<(String, &Report)> =
            reports.iter().map(|(name, r)| (format!("{} ({name})", r.target), r)).collect();
        plot::write(path, &labelled)?;
    }
    Ok(reports.iter().all(|(_, r)| r.is_clean()))
}

fn print_report(report: &Report) {
    let latency = |name: &str, l: &Latency| {
        println!(
            "{name:<22} n={:<9} p50 {:>8} µs  p90 {:>8} µs  p99 {:>8} µs  p99.9 {:>8} µs  max {:>8} µs",
            l.count, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        );
    };
    println!("target                 {}", report.target);
    println!("workload               {}", report.workload);
    let idle = match report.idle_connections {
        0 => String::new(),
        n => format!(" + {n} idle"),
    };
    match report.enrol_secs {
        Some(enrol) => println!(
            "devices set up         {}{idle} in {:.1} s (enrolled in {enrol:.1} s)",
            report.devices, report.setup_secs
        ),
        None => println!(
            "devices set up         {}{idle} in {:.1} s",
            report.devices, report.setup_secs
        ),
    }
    if report.idle_connections > 0 || report.hub_bytes_per_connection.is_some() {
        println!(
            "idle connections       {}  hub memory per connection {}",
            report.idle_connections,
            report
                .hub_bytes_per_connection
                .map_or("unknown".into(), |b| format!("{:.1} KiB", b / 1024.0))
        );
    }
    if let Some(storm) = &report.storm {
        println!(
            "reconnect storm        {} of {} idle devices back in {:.1} s (each: p50 {:.1} s, p99 {:.1} s, max {:.1} s); failed attempts: {} refused, {} timed out, {} other",
            storm.back,
            storm.lost,
            storm.secs_to_all_back,
            storm.wait_p50_secs,
            storm.wait_p99_secs,
            storm.wait_max_secs,
            storm.refused,
            storm.timed_out,
            storm.other
        );
    }
    println!(
        "sent / accepted        {} / {} in {:.1} s (measured window); rejected {}, failed {}",
        report.sent, report.accepted, report.send_secs, report.rejected, report.failed
    );
    println!("accepted/s             {:.0}", report.accepted_per_sec);
    println!("deliveries/s           {:.0}", report.delivered_per_sec);
    if report.reconnects > 0 {
        println!("reconnections          {}", report.reconnects);
    }
    if let Some(lines) = report.journaled {
        println!("journal                {lines} accepted messages written and fsynced");
    }
    latency("send -> accepted", &report.accept_latency);
    latency("send -> delivered", &report.deliver_latency);
    if let Some(same) = &report.deliver_latency_same_hub {
        latency("  on the sender's hub", same);
    }
    if let Some(across) = &report.deliver_latency_cross_hub {
        latency("  on another hub", across);
    }
    if let Some(lateness) = &report.pacer_lateness {
        latency("pacer lateness", lateness);
    }
    if let Some(secs) = report.server_cpu_secs {
        let per = |us: Option<f64>| us.map_or("-".into(), |us| format!("{us:.1} µs"));
        println!(
            "server CPU             {secs:.2} s: {} per message ({} accepted), {} per delivery",
            per(report.server_cpu_us_per_message),
            report.accepted_all,
            per(report.server_cpu_us_per_delivery),
        );
    }
    if let Some(secs) = report.loadgen_cpu_secs {
        println!("loadgen CPU            {secs:.2} s");
    }
    let v = &report.verdict;
    println!(
        "correctness            lost {}  duplicated {}  reordered {}  unexpected {}  {}",
        v.lost,
        v.duplicated,
        v.reordered,
        v.unexpected,
        if v.is_clean() { "OK" } else { "FAILED" }
    );
    if report.saturated() {
        println!(
            "saturated              {} accepted, {} rejected, {} unanswered: the server did not take this load",
            report.accepted_all, report.rejected, report.failed
        );
    }
}
