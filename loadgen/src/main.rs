//! `loadgen`: open-loop load against a Switchboard hub, with every delivery checked.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use switchboard_loadgen::run::{Latency, Options, Report, run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for Switchboard hubs: enrols users and devices, sends 1:1 messages between
/// random users at a fixed rate (open loop: latency counts from the intended send time), and
/// checks that every accepted message reached every device of its recipient (and the sender's
/// other devices) exactly once and in order. Exits with status 1 if it did not.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about)]
struct Cli {
    /// The hub's QUIC address.
    #[arg(long, default_value = "127.0.0.1:7447")]
    hub: SocketAddr,
    /// The hub's admin API address.
    #[arg(long, default_value = "127.0.0.1:7448")]
    admin: SocketAddr,
    /// The hub's data directory, to read its admin token and certificate (default: the hub's
    /// default data directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Users.
    #[arg(long, default_value_t = 100)]
    users: u32,
    /// Devices per user.
    #[arg(long, default_value_t = 2)]
    devices: u32,
    /// Messages per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 256)]
    body: usize,
    /// Fraction of devices offline while sending (they reconnect after and must catch up).
    #[arg(long, default_value_t = 0.0)]
    offline: f64,
    /// Turn UDP segmentation offload off.
    #[arg(long)]
    no_gso: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
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
    let data_dir = cli.data_dir.clone().unwrap_or_else(switchboard_hub::config::default_data_dir);
    let token = std::fs::read_to_string(data_dir.join("admin.token"))
        .with_context(|| format!("the hub's admin token in {}", data_dir.display()))?;
    let cert = std::fs::read(data_dir.join("tls/cert.der"))
        .with_context(|| format!("the hub's certificate in {}", data_dir.display()))?;
    let options = Options {
        hub: cli.hub,
        admin: cli.admin,
        token: token.trim().to_string(),
        cert,
        users: cli.users,
        devices: cli.devices,
        rate: cli.rate,
        duration: Duration::from_secs_f64(cli.duration),
        body: cli.body,
        offline: cli.offline,
        gso: !cli.no_gso,
        domain: format!("run{}.loadgen", rand::random::<u32>()),
    };
    eprintln!(
        "loadgen: {} users x {} devices, {} msg/s for {} s, {}-byte bodies",
        cli.users, cli.devices, cli.rate, cli.duration, cli.body
    );
    let report = run(options).await?;
    print_report(&report);
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.verdict.is_clean())
}

fn print_report(report: &Report) {
    let latency = |name: &str, l: &Latency| {
        println!(
            "{name:<22} n={:<9} p50 {:>8} µs  p90 {:>8} µs  p99 {:>8} µs  p99.9 {:>8} µs  max {:>8} µs",
            l.count, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        );
    };
    println!("devices enrolled       {} in {:.1} s", report.devices, report.enrol_secs);
    println!(
        "sent / accepted / rejected  {} / {} / {} in {:.1} s",
        report.sent, report.accepted, report.rejected, report.send_secs
    );
    println!("accepted/s             {:.0}", report.accepted_per_sec);
    println!("deliveries/s (online)  {:.0}", report.delivered_per_sec);
    latency("send -> accepted", &report.accept_latency);
    latency("send -> delivered", &report.deliver_latency);
    let v = &report.verdict;
    println!(
        "correctness            lost {}  duplicated {}  reordered {}  unexpected {}  {}",
        v.lost,
        v.duplicated,
        v.reordered,
        v.unexpected,
        if v.is_clean() { "OK" } else { "FAILED" }
    );
}
