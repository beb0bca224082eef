//! The crash loop (issue 19): loadgen runs against a real `hub` process (real QUIC on
//! 127.0.0.80, real RocksDB on disk), or three linked ones (127.0.0.81-83, most messages
//! crossing a hub link), while a hub is killed with SIGKILL at random moments and started again
//! on the same data directory and ports. Devices connect again and send
//! again, with the same ids, what got no answer. At the end every accepted message must have
//! reached every device of its recipients (and the sender's other devices) exactly once and in
//! order, and nothing that was never sent may arrive.
//!
//! 20 cycles by default (well under a minute of killing each); `SWITCHBOARD_CRASH_LOOP_CYCLES=1000`
//! runs a thousand (about half an hour), and `SWITCHBOARD_CRASH_LOOP_SEED` repeats a run's
//! moments.
//! The `hub` binary is the one `cargo test --workspace` builds next to this test. A third test
//! kills a hub holding 300 idle devices and checks loadgen's reconnect-storm report: every
//! device came back.
//!
//! The power-loss loop (root only: it mounts FUSE) runs the same checks with the hub's data
//! directory on `faultfs` (loadgen's FUSE file system that holds every write in memory until
//! its file is synced): each cycle kills the hub and then faultfs with SIGKILL, so whatever the
//! hub wrote and never synced is lost, as in a power cut, and mounts it again before the
//! restart. A message the hub answered `accepted` must have been synced.

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

use std::net::Ipv4Addr;

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

/// faultfs mounted at `mount` over `backing`: a disk whose power can be cut.
struct Disk {
    backing: PathBuf,
    mount: PathBuf,
    child: Option<Child>,
    /// Power cuts so far.
    cuts: u32,
}

impl Disk {
    fn new(backing: PathBuf, mount: PathBuf) -> Self {
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mount).unwrap();
        let mut disk = Self { backing, mount, child: None, cuts: 0 };
        disk.power_on();
        disk
    }

    fn mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mount = self.mount.to_string_lossy();
        mounts.lines().any(|l| l.split(' ').nth(1) == Some(mount.as_ref()) && l.contains("fuse"))
    }

    fn power_on(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_faultfs"))
            .arg(&self.backing)
            .arg(&self.mount)
            .stdout(Stdio::null())
            .spawn()
            .expect("start faultfs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.mounted() {
            assert!(Instant::now() < deadline, "faultfs did not mount {}", self.mount.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Cuts the power: what was not synced is gone.
    fn power_off(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
            let status = Command::new("umount").arg("-l").arg(&self.mount).status().unwrap();
            assert!(status.success(), "umount -l {}", self.mount.display());
            self.cuts += 1;
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.power_off();
    }
}

/// Whether this test runs as root (`/proc/self` belongs to the process's effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

struct Hub {
    /// Declared first, so that a hub's process is killed (in `Drop`) before its disk goes.
    disk: Option<Disk>,
    binary: PathBuf,
    dir: PathBuf,
    quic: SocketAddr,
    admin: SocketAddr,
    /// The configuration file, for linked hubs (their names, domains and peers).
    config: Option<PathBuf>,
    child: Option<Child>,
    starts: u32,
}

impl Hub {
    /// A hub on `ip` with its data under `dir`, not started yet.
    fn new(dir: &Path, ip: Ipv4Addr) -> Self {
        let quic = std::net::UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap();
        let admin = std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap();
        let binary = hub_binary();
        Self {
            disk: None,
            binary,
            dir: dir.into(),
            quic,
            admin,
            config: None,
            child: None,
            starts: 0,
        }
    }

    /// The pin of the hub's certificate (made now if it has none yet).
    fn pin(&self) -> String {
        let output = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("identity")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        text.lines().find_map(|l| l.strip_prefix("pin:")).unwrap().trim().to_string()
    }

    fn target(&self) -> HubTarget {
        HubTarget {
            hub: self.quic,
            admin: self.admin,
            token: self.token(),
            cert: std::fs::read(self.dir.join("data/tls/cert.der")).unwrap(),
            gso: true,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hub.log"))
            .unwrap();
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["serve", "--listen", &self.quic.to_string()])
            .args(["--admin-listen", &self.admin.to_string()])
            .args(["--metrics-listen", &std::net::SocketAddr::new(self.admin.ip(), 0).to_string()])
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

    /// SIGKILL; on faultfs, a power cut as well (the disk is back on for the next start).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
            if let Some(disk) = &mut self.disk {
                disk.power_off();
                disk.power_on();
            }
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

/// Three hubs, each serving `hN.example` and the domains under it, each the others' peer.
fn three_linked_hubs(dirs: &[tempfile::TempDir]) -> Vec<Hub> {
    let mut hubs: Vec<Hub> =
        (0..3).map(|i| Hub::new(dirs[i].path(), Ipv4Addr::new(127, 0, 0, 81 + i as u8))).collect();
    let pins: Vec<String> = hubs.iter().map(Hub::pin).collect();
    let domains = |i: usize| format!("[\"h{i}.example\", \"*.h{i}.example\"]");
    let quic: Vec<SocketAddr> = hubs.iter().map(|h| h.quic).collect();
    for (i, hub) in hubs.iter_mut().enumerate() {
        let mut config = format!("[hub]\nname = \"hub-{i}\"\ndomains = {}\n", domains(i));
        for j in (0..3).filter(|&j| j != i) {
            config.push_str(&format!(
                "\n[[peers]]\nname = \"hub-{j}\"\naddress = \"{}\"\npin = \"{}\"\ndomains = {}\n",
                quic[j],
                pins[j],
                domains(j)
            ));
        }
        let path = hub.dir.join("hub.toml");
        std::fs::write(&path, config).unwrap();
        hub.config = Some(path);
        hub.spawn();
    }
    hubs
}

fn setting(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_message_arrives_once_and_in_order_across_repeated_sigkills_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::new(dir.path(), Ipv4Addr::new(127, 0, 0, 80));
    hub.spawn();
    crash_loop(vec![hub], dir.path(), 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_message_arrives_once_and_in_order_across_power_cuts_under_load() {
    if !is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: mounting faultfs needs root and /dev/fuse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::new(dir.path(), Ipv4Addr::new(127, 0, 0, 85));
    hub.disk = Some(Disk::new(dir.path().join("disk"), dir.path().join("data")));
    hub.spawn();
    crash_loop(vec![hub], dir.path(), 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_across_three_hubs_arrive_once_and_in_order_while_each_is_killed_in_turn() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hubs = three_linked_hubs(&dirs);
    crash_loop(hubs, dirs[0].path(), 60).await;
}

/// Runs loadgen against `hubs` (`users` users with two devices each, spread over the hubs)
/// while one of them, at random, is killed and started again, the cycles the environment asks
/// for (20 by default); then checks the run and the journal under `dir`.
async fn crash_loop(hubs: Vec<Hub>, dir: &Path, users: u32) {
    let cycles = setting("SWITCHBOARD_CRASH_LOOP_CYCLES").unwrap_or(20) as u32;
    let seed = setting("SWITCHBOARD_CRASH_LOOP_SEED").unwrap_or_else(|| rand::rng().random());
    println!(
        "crash loop: {} hub(s), {cycles} cycles, seed {seed} (SWITCHBOARD_CRASH_LOOP_SEED repeats it)",
        hubs.len()
    );
    let devices = 2u32;
    let journal = dir.join("accepted.journal");
    let options = Options {
        target: Target::Hubs(hubs.iter().map(Hub::target).collect()),
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

    // The killer: once every online device is connected, SIGKILL one hub and restart it,
    // `cycles` times.
    let done = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicU32::new(0));
    let killer = {
        let (done, killed) = (done.clone(), killed.clone());
        let admins: Vec<AdminClient> =
            hubs.iter().map(|h| AdminClient::new(h.admin, h.token())).collect();
        let handle = tokio::runtime::Handle::current();
        let mut hubs = hubs;
        std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let connected = handle.block_on(async {
                    let mut sum = 0;
                    for admin in &admins {
                        sum += admin.metrics().await?.connections;
                    }
                    Ok::<_, switchboard_hub::client::admin::AdminError>(sum)
                });
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
                let victim = rng.random_range(0..hubs.len());
                hubs[victim].kill();
                killed.fetch_add(1, Ordering::Relaxed);
                hubs[victim].spawn();
            }
            hubs
        })
    };
    let report = run(options).await;
    done.store(true, Ordering::Relaxed);
    let hubs = killer.join().expect("the killer thread");
    let logs = || hubs.iter().map(Hub::log_tail).collect::<Vec<_>>().join("\n----\n");
    let report = report.unwrap_or_else(|e| panic!("loadgen failed: {e:#}\n{}", logs()));
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
    assert_eq!(hubs.iter().map(|h| h.starts).sum::<u32>(), cycles + hubs.len() as u32);
    assert!(report.reconnects >= u64::from(cycles), "{report:?}");

    // Nothing lost, duplicated, reordered or made up; every send answered.
    assert!(report.verdict.is_clean(), "{:?}\n{}", report.verdict, logs());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_devices_all_come_back_after_their_hub_is_killed_and_the_storm_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::new(dir.path(), Ipv4Addr::new(127, 0, 0, 84));
    hub.spawn();
    let (users, idle) = (10u32, 300u32);
    let options = Options {
        target: Target::Hubs(vec![hub.target()]),
        workload: Workload::OneToOne,
        users,
        devices: 1,
        rate: 50.0,
        arrivals: Arrivals::Poisson,
        warmup: Duration::from_millis(200),
        server_pid: None,
        // An idle device learns of the restart at its next keep-alive (every 10 s), answered
        // by a stateless reset: the sending outlasts that.
        duration: Duration::from_secs(14),
        body: BodySize::Fixed(64),
        offline: 0.0,
        churn: 0.0,
        idle,
        run_name: "storm".into(),
        progress: false,
        hub_restarts: true,
        journal: None,
    };
    let admin = AdminClient::new(hub.admin, hub.token());
    let handle = tokio::runtime::Handle::current();
    let killer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !handle
            .block_on(admin.metrics())
            .is_ok_and(|m| m.connections >= u64::from(users + idle))
        {
            assert!(Instant::now() < deadline, "the devices never all connected");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        hub.kill();
        hub.spawn();
        hub
    });
    let report = run(options).await;
    let hub = killer.join().expect("the killer thread");
    let report = report.unwrap_or_else(|e| panic!("loadgen failed: {e:#}\n{}", hub.log_tail()));
    let storm = report.storm.clone().expect("the idle devices saw their hub go");
    println!("storm: {storm:?}");
    assert_eq!((storm.lost, storm.back), (u64::from(idle), u64::from(idle)), "{storm:?}");
    assert!(storm.secs_to_all_back > 0.0 && storm.wait_max_secs <= storm.secs_to_all_back);
    assert!(report.verdict.is_clean(), "{:?}", report.verdict);
}
