//! The crash loop (issue 19): loadgen runs against a real `hub` process (real QUIC on
//! 127.0.0.80, real RocksDB on disk) while the hub is killed with SIGKILL at random moments
//! and started again on the same data directory and ports. Devices connect again and send
//! again, with the same ids, what got no answer. At the end every accepted message must have
//! reached every device of its recipients (and the sender's other devices) exactly once and in
//! order, and nothing that was never sent may arrive.
//!
//! 20 cycles by default (well under a minute of killing); `SWITCHBOARD_CRASH_LOOP_CYCLES=1000` runs
//! a thousand (about half an hour), and `SWITCHBOARD_CRASH_LOOP_SEED` repeats a run's moments.
//! The `hub` binary is the one `cargo test --workspace` builds next to this test.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng};
use switchboard_hub::client::admin::AdminClient;
use switchboard_loadgen::{
    hub_target::HubTarget,
    journal::read_journal,
    run::{Arrivals, BodySize, Options, Target, Workload, run},
};

const IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 80);

/// The hub built by `cargo test --workspace`, next to this test's own binary.
fn hub_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let hub = dir.join("hub");
    assert!(
        hub.exists(),
        "{} is missing: build it first (cargo build -p switchboard-hub), or run the whole \
         workspace's tests (deploy/test)",
        hub.display()
    );
    hub
}

struct Hub {
    binary: PathBuf,
    dir: PathBuf,
    quic: SocketAddr,
    admin: SocketAddr,
    child: Option<Child>,
    starts: u32,
}

impl Hub {
    fn start(dir: &Path) -> Self {
        let quic = std::net::UdpSocket::bind((IP, 0)).unwrap().local_addr().unwrap();
        let admin = std::net::TcpListener::bind((IP, 0)).unwrap().local_addr().unwrap();
        let mut hub =
            Self { binary: hub_binary(), dir: dir.into(), quic, admin, child: None, starts: 0 };
        hub.spawn();
        hub
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hub.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["serve", "--listen", &self.quic.to_string()])
            .args(["--admin-listen", &self.admin.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the hub");
        self.child = Some(child);
        self.starts += 1;
        // Up once its admin API answers (it binds it after the store is open and the QUIC
        // endpoint is bound).
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&self.admin, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "the hub did not come up: {}", self.log_tail());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/admin.token")).unwrap().trim().to_string()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_message_arrives_once_and_in_order_across_repeated_sigkills_under_load() {
    let cycles: u32 = std::env::var("SWITCHBOARD_CRASH_LOOP_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SWITCHBOARD_CRASH_LOOP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("crash loop: {cycles} cycles, seed {seed} (SWITCHBOARD_CRASH_LOOP_SEED repeats it)");
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path());
    let target = HubTarget {
        hub: hub.quic,
        admin: hub.admin,
        token: hub.token(),
        cert: std::fs::read(dir.path().join("data/tls/cert.der")).unwrap(),
        gso: true,
    };
    let (users, devices) = (40u32, 2u32);
    let journal = dir.path().join("accepted.journal");
    let options = Options {
        target: Target::Hubs(vec![target.clone()]),
        // A quarter of the messages to a line of 10: a kill lands among fan-outs too.
        workload: Workload::Mix { members: 10, line_fraction: 0.25 },
        users,
        devices,
        rate: 150.0,
        arrivals: Arrivals::Poisson,
        warmup: Duration::from_millis(200),
        server_pid: None,
        // Long enough for the cycles (each a pause of 0.2-1 s and a restart); kills that
        // outlast the sending land in the drain, which must survive them too.
        duration: Duration::from_secs_f64(f64::from(cycles) * 1.2 + 2.0),
        body: BodySize::Uniform(24, 600),
        // One device in ten is offline until the sending ends, then catches up.
        offline: 0.1,
        churn: 0.0,
        idle: 0,
        run_name: "crash".into(),
        progress: false,
        hub_restarts: true,
        journal: Some(journal.clone()),
    };
    let online = (0..users * devices).filter(|d| d % 10 != 9).count() as u64;

    // The killer: once every online device is connected, SIGKILL and restart, `cycles` times.
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU32::new(0));
    let killer = {
        let (done, killed) = (done.clone(), killed.clone());
        let admin = AdminClient::new(hub.admin, hub.token());
        let handle = tokio::runtime::Handle::current();
        let mut hub = hub;
        std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let connected = handle.block_on(admin.metrics()).map(|m| m.connections);
                if connected.is_ok_and(|c| c >= online) {
                    break;
                }
                assert!(Instant::now() < deadline, "the devices never all connected");
                std::thread::sleep(Duration::from_millis(50));
            }
            for _ in 0..cycles {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(rng.random_range(200..1000)));
                hub.kill();
                killed.fetch_add(1, Ordering::Relaxed);
                hub.spawn();
            }
            hub
        })
    };
    let report = run(options).await;
    done.store(true, Ordering::Relaxed);
    let hub = killer.join().expect("the killer thread");
    let report = report.unwrap_or_else(|e| panic!("loadgen failed: {e:#}\n{}", hub.log_tail()));
    println!(
        "crash loop: accepted {}, delivered {}, reconnections {}, send -> delivered p99 {} µs, max {} µs",
        report.accepted_all,
        report.delivered,
        report.reconnects,
        report.deliver_latency.p99_us,
        report.deliver_latency.max_us
    );
    let killed = killed.load(Ordering::Relaxed);
    assert_eq!(killed, cycles, "every kill landed while loadgen ran");
    assert_eq!(hub.starts, cycles + 1);
    assert!(report.reconnects >= u64::from(cycles), "{report:?}");

    // Nothing lost, duplicated, reordered or made up; every send answered.
    assert!(report.verdict.is_clean(), "{:?}\n{}", report.verdict, hub.log_tail());
    assert_eq!(report.failed, 0, "sends left without an answer: {report:?}");
    assert_eq!(report.rejected, 0, "{report:?}");
    assert!(report.accepted_all > u64::from(cycles) * 50, "{report:?}");

    // The journal holds each accepted message once, fsynced.
    let entries = read_journal(&journal).unwrap();
    assert_eq!(report.journaled, Some(report.accepted_all), "{report:?}");
    assert_eq!(entries.len() as u64, report.accepted_all);
    let ids: std::collections::HashSet<u128> = entries.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), entries.len(), "an id was accepted twice");
}
