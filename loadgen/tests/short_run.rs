//! Short loadgen runs against a real hub (started in this process: real QUIC on 127.0.0.1,
//! real RocksDB on disk): hundreds of devices, some offline while messages are sent, some
//! reconnecting, a department line; the checker must find nothing lost, duplicated or
//! reordered.

use std::{net::SocketAddr, time::Duration};

use switchboard_hub::{config::Config, server};
use switchboard_loadgen::{
    hub_target::HubTarget,
    run::{Arrivals, BodySize, Options, Report, Target, Workload, run},
};

async fn run_against_a_hub(workload: Workload, tune: impl FnOnce(&mut Options)) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.quic.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.metrics.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let hub = server::start(config).await.unwrap();
    let mut options = Options {
        target: Target::Hubs(vec![HubTarget {
            hub: hub.quic_addr,
            admin: hub.admin_addr,
            token: std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().into(),
            cert: hub.cert.clone(),
            gso: true,
        }]),
        workload,
        users: 100,
        devices: 3,
        rate: 500.0,
        arrivals: Arrivals::Constant,
        warmup: Duration::from_millis(200),
        server_pid: None,
        duration: Duration::from_secs(3),
        body: BodySize::Fixed(256),
        offline: 0.2,
        churn: 0.0,
        idle: 0,
        run_name: "short".into(),
        progress: false,
        hub_restarts: false,
        journal: None,
    };
    tune(&mut options);
    let report = run(options).await.unwrap();
    hub.shutdown().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_with_offline_devices_loses_duplicates_and_reorders_nothing() {
    let report = run_against_a_hub(Workload::OneToOne, |_| {}).await;
    assert!(report.accepted > 1_000, "{report:?}");
    assert_eq!(report.rejected + report.failed, 0, "{report:?}");
    assert!(report.verdict.is_clean(), "{:?}", report.verdict);
    // Every accepted message reached 6 devices (the recipient's and the sender's 3 each).
    assert!(report.delivered >= report.accepted * 6, "{report:?}");
    // The pacer's own delay is reported for every message of the measured window.
    let lateness = report.pacer_lateness.as_ref().expect("pacer lateness reported");
    assert_eq!(lateness.count, report.sent, "{report:?}");
    // The hub's CPU (here the test's whole process, hub and load generator) over the run, per
    // message of the whole run and per delivery.
    let cpu = report.server_cpu_secs.expect("the hub reports its CPU time");
    assert!(cpu > 0.0, "{report:?}");
    assert!(report.accepted_all >= report.accepted, "{report:?}");
    let per_message = report.server_cpu_us_per_message.expect("CPU per message");
    assert!((per_message - cpu * 1e6 / report.accepted_all as f64).abs() < 1e-6, "{report:?}");
    assert!(report.server_cpu_us_per_delivery.unwrap() < per_message, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_devices_and_poisson_arrivals_lose_nothing() {
    let report = run_against_a_hub(Workload::OneToOne, |options| {
        options.arrivals = Arrivals::Poisson;
        options.churn = 5.0;
        options.body = BodySize::Uniform(20, 2000);
        options.idle = 20;
    })
    .await;
    assert!(report.reconnects >= 10, "{report:?}");
    assert_eq!(report.rejected + report.failed, 0, "{report:?}");
    assert!(report.verdict.is_clean(), "{:?}", report.verdict);
    assert!(report.hub_bytes_per_connection.is_some(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_workload_reaches_every_members_devices_once() {
    let report = run_against_a_hub(Workload::Mix { members: 30, line_fraction: 0.5 }, |options| {
        options.rate = 200.0;
    })
    .await;
    assert!(report.accepted > 300, "{report:?}");
    assert_eq!(report.rejected + report.failed, 0, "{report:?}");
    assert!(report.verdict.is_clean(), "{:?}", report.verdict);
    // A line message reaches 90 member devices (and 3 of the sender's): far more deliveries
    // than accepted messages.
    assert!(report.delivered > report.accepted * 20, "{report:?}");
}

/// Three hubs on 127.0.0.41, .42 and .43, each serving `hN.example` and every domain under it
/// (the run's organisation is in `across.h0.example`), each the others' peer (`routes` false:
/// the last hub has no peer table).
async fn three_linked_hubs(
    dirs: &[tempfile::TempDir],
    routes: bool,
) -> Vec<(server::RunningHub, HubTarget)> {
    use switchboard_hub::{config::PeerConfig, net::tls};
    let ports: Vec<SocketAddr> = (0..3)
        .map(|i| {
            let ip = std::net::Ipv4Addr::new(127, 0, 0, 41 + i as u8);
            std::net::UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap()
        })
        .collect();
    let pins: Vec<String> = dirs
        .iter()
        .map(|d| tls::pin(tls::load_or_create(&d.path().join("tls")).unwrap().cert.as_ref()))
        .collect();
    let domains = |i: usize| vec![format!("h{i}.example"), format!("*.h{i}.example")];
    let mut hubs = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.quic.listen = ports[i];
        config.admin.listen = SocketAddr::new(ports[i].ip(), 0);
        config.metrics.listen = SocketAddr::new(ports[i].ip(), 0);
        config.hub.name = format!("hub-{i}");
        config.hub.domains = domains(i);
        if routes || i < 2 {
            config.peers = (0..3)
                .filter(|&j| j != i)
                .map(|j| PeerConfig {
                    name: format!("hub-{j}"),
                    address: ports[j],
                    pin: pins[j].clone(),
                    domains: domains(j),
                    provider: false,
                    forwards: false,
                })
                .collect();
        }
        let hub = server::start(config).await.unwrap();
        let target = HubTarget {
            hub: hub.quic_addr,
            admin: hub.admin_addr,
            token: std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().into(),
            cert: hub.cert.clone(),
            gso: true,
        };
        hubs.push((hub, target));
    }
    hubs
}

fn options_across(targets: Vec<HubTarget>) -> Options {
    Options {
        target: Target::Hubs(targets),
        workload: Workload::Mix { members: 15, line_fraction: 0.3 },
        users: 60,
        devices: 2,
        rate: 300.0,
        arrivals: Arrivals::Poisson,
        warmup: Duration::from_millis(200),
        server_pid: None,
        duration: Duration::from_secs(3),
        body: BodySize::Fixed(256),
        offline: 0.2,
        churn: 2.0,
        idle: 0,
        run_name: "across".into(),
        progress: false,
        hub_restarts: false,
        journal: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_across_three_hubs_loses_duplicates_and_reorders_nothing() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hubs = three_linked_hubs(&dirs, true).await;
    let targets = hubs.iter().map(|(_, t)| t.clone()).collect();
    let report = run(options_across(targets)).await.unwrap();
    for (hub, _) in hubs {
        hub.shutdown().await;
    }
    assert_eq!(report.hubs, 3, "{report:?}");
    assert!(report.accepted > 600, "{report:?}");
    assert_eq!(report.rejected + report.failed, 0, "{report:?}");
    assert!(report.verdict.is_clean(), "{:?}", report.verdict);
    // Two users in three are on another hub than a sender: most deliveries crossed a link,
    // and every measured delivery is counted on one side or the other.
    let same = report.deliver_latency_same_hub.as_ref().expect("same-hub latency");
    let across = report.deliver_latency_cross_hub.as_ref().expect("cross-hub latency");
    assert!(across.count > same.count / 2, "{report:?}");
    assert_eq!(same.count + across.count, report.deliver_latency.count, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_across_hubs_without_a_route_stops_before_sending_and_names_it() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hubs = three_linked_hubs(&dirs, false).await;
    let targets = hubs.iter().map(|(_, t)| t.clone()).collect();
    let error = run(options_across(targets)).await.unwrap_err().to_string();
    for (hub, _) in hubs {
        hub.shutdown().await;
    }
    assert!(error.contains("has no peer serving") && error.contains("127.0.0.43"), "{error}");
}

/// A Mosquitto broker on `127.0.0.1` for the length of a test (installed by
/// `deploy/install-deps.sh`), with its process id.
struct Mosquitto {
    child: std::process::Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"),
        )
        .unwrap();
        let binary = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| std::process::Command::new(b).arg("-h").output().is_ok())
            .expect("mosquitto is installed (deploy/install-deps.sh)");
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if std::net::TcpStream::connect(address).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, address, _dir: dir }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_workload_runs_against_mosquitto_with_persistent_sessions_and_is_checked() {
    use switchboard_loadgen::mqtt_target::MqttTarget;
    let broker = Mosquitto::start();
    let options = Options {
        target: Target::Mqtt(MqttTarget { address: broker.address, label: "test".into() }),
        workload: Workload::Mix { members: 10, line_fraction: 0.2 },
        users: 40,
        devices: 2,
        rate: 300.0,
        arrivals: Arrivals::Poisson,
        warmup: Duration::from_millis(200),
        server_pid: Some(broker.child.id()),
        duration: Duration::from_secs(2),
        body: BodySize::Fixed(256),
        offline: 0.2,
        churn: 0.0,
        idle: 0,
        run_name: format!("mqtt{}", std::process::id()),
        progress: false,
        hub_restarts: false,
        journal: None,
    };
    let report = run(options).await.unwrap();
    assert_eq!(report.target, "mqtt (test)");
    assert!(report.accepted > 300, "{report:?}");
    assert_eq!(report.rejected + report.failed, 0, "{report:?}");
    // Offline devices' persistent sessions kept what came for them: nothing lost.
    assert!(report.is_clean(), "{:?}", report.verdict);
    // No copies to the sender: each 1:1 message reaches the recipient's 2 devices.
    assert!(report.delivered >= report.accepted * 2, "{report:?}");
    // The broker's CPU, read from /proc.
    assert!(report.server_cpu_secs.is_some_and(|s| s > 0.0), "{report:?}");
}
