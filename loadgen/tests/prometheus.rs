//! A real Prometheus (Debian's, installed by deploy/install-deps.sh) scrapes a hub while
//! loadgen runs against it; the figures are then read back through Prometheus's HTTP query
//! API and compared with what loadgen counted. `promtool check metrics` lints the exposition.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use switchboard_hub::{config::Config, server};
use switchboard_loadgen::{
    hub_target::HubTarget,
    run::{Arrivals, BodySize, Options, Target, Workload, run},
};

/// The loopback address of this test's hub and Prometheus.
const HOST: [u8; 4] = [127, 0, 0, 86];

/// A GET over HTTP/1.0 (the answer ends with the connection): status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A free port on `HOST`.
fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((HOST, 0))).unwrap().local_addr().unwrap().port()
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every 500 ms, its data in `dir`.
    fn start(dir: &std::path::Path, target: SocketAddr) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 450ms\n\
                 scrape_configs:\n  - job_name: switchboard\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = SocketAddr::from((HOST, free_port()));
        let child = Command::new(binary("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prometheus starts");
        let prometheus = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
            || get(addr, "/-/ready").0 != 200
        {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    /// The value of the instant query `query` (one series expected), if it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let (status, body) = get(self.addr, &path);
        assert_eq!(status, 200, "{query}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let result = answer["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{query} has several series: {body}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` has a value for which `ok` holds; returns it.
    fn wait_for(&self, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.value(query);
            if let Some(value) = value.filter(|v| ok(*v)) {
                return value;
            }
            assert!(Instant::now() < deadline, "{query} stayed at {value:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Percent-encodes a query for a URL.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus program, from PATH or where Debian puts it.
fn binary(name: &str) -> String {
    let debian = format!("/usr/bin/{name}");
    if std::path::Path::new(&debian).exists() {
        return debian;
    }
    let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().unwrap();
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(!path.is_empty(), "{name} is not installed: run deploy/install-deps.sh");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_hub_under_load_and_its_figures_match_loadgen() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().join("hub"), ..Config::default() };
    config.quic.listen = SocketAddr::from((HOST, 0));
    config.admin.listen = SocketAddr::from((HOST, 0));
    config.metrics.listen = SocketAddr::from((HOST, 0));
    let hub = server::start(config).await.unwrap();
    let metrics = hub.metrics_addr.expect("the metrics listener is on by default");

    // Probes answer before any scrape.
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(metrics, "/readyz"), (200, "ready\n".into()));

    let prometheus_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prometheus_dir).unwrap();
    let prometheus = tokio::task::block_in_place(|| {
        let prometheus = Prometheus::start(&prometheus_dir, metrics);
        // Prometheus hands new targets to its scrapers some seconds after it starts: the load
        // begins once the first scrape is in.
        prometheus.wait_for("up{job=\"switchboard\"}", |v| v == 1.0);
        prometheus
    });

    let options = Options {
        target: Target::Hubs(vec![HubTarget {
            hub: hub.quic_addr,
            admin: hub.admin_addr,
            token: std::fs::read_to_string(dir.path().join("hub/admin.token"))
                .unwrap()
                .trim()
                .into(),
            cert: hub.cert.clone(),
            gso: true,
        }]),
        workload: Workload::OneToOne,
        users: 50,
        devices: 2,
        rate: 400.0,
        arrivals: Arrivals::Constant,
        warmup: Duration::from_millis(200),
        server_pid: None,
        duration: Duration::from_secs(3),
        body: BodySize::Fixed(200),
        offline: 0.0,
        churn: 0.0,
        idle: 0,
        run_name: "prometheus".into(),
        progress: false,
        hub_restarts: false,
        journal: None,
    };
    let report = run(options).await.unwrap();
    assert!(report.verdict.is_clean(), "{:?}", report.verdict);
    assert!(report.accepted_all > 500, "{report:?}");
    assert_eq!(report.rejected + report.failed, 0, "{report:?}");

    tokio::task::block_in_place(|| {
        // Every scrape during the run succeeded.
        assert_eq!(prometheus.value("min_over_time(up[5m])"), Some(1.0));
        // Every send loadgen had accepted, no more and no fewer.
        let accepted = prometheus
            .wait_for("switchboard_sends_accepted_total", |v| v == report.accepted_all as f64);
        assert_eq!(accepted, report.accepted_all as f64);
        // Nothing refused: every reason's series is there, at 0.
        assert_eq!(prometheus.value("sum(switchboard_sends_rejected_total)"), Some(0.0));
        assert_eq!(
            prometheus.value("switchboard_sends_rejected_total{reason=\"recipient-backlog-full\"}"),
            Some(0.0)
        );
        // Each message went to the recipient's 2 devices and the sender's copy to the sender's
        // 2: at least 4 deliveries per message, all acknowledged once loadgen stopped.
        let deliveries = prometheus.wait_for("switchboard_deliveries_total", |v| v > 0.0);
        assert!(deliveries >= 4.0 * report.accepted_all as f64, "{deliveries}");
        let acks = prometheus.wait_for("switchboard_acks_total", |v| v > 0.0);
        assert!(acks <= deliveries, "{acks} acks of {deliveries} deliveries");
        // Every accepted message was appended twice (recipient and sender's copy).
        let appended = prometheus.wait_for("switchboard_store_messages_appended_total", |v| {
            v >= 2.0 * report.accepted_all as f64
        });
        let fsyncs = prometheus.wait_for("switchboard_store_fsyncs_total", |v| v > 0.0);
        assert!(fsyncs <= appended, "{fsyncs} fsyncs for {appended} appends");
        // The commit latency histogram has a median, below a second.
        let median = prometheus
            .wait_for("histogram_quantile(0.5, switchboard_store_commit_seconds_bucket)", |v| {
                v > 0.0
            });
        assert!(median < 1.0, "median commit {median} s");
        // Messages per fsync: the average of the batch histogram is at least one.
        let per_fsync = prometheus.wait_for(
            "switchboard_store_batch_messages_sum / switchboard_store_batch_messages_count",
            |v| v >= 1.0,
        );
        assert!(per_fsync >= 1.0);
        // Sessions were open while loadgen ran: its 100 devices at the peak.
        let peak = prometheus.wait_for("max_over_time(switchboard_sessions[5m])", |v| v > 0.0);
        assert!(peak >= 100.0, "{peak} sessions at the peak");
        let connected =
            prometheus.wait_for("max_over_time(switchboard_devices_connected[5m])", |v| v > 0.0);
        assert_eq!(connected, 100.0);
        // Bytes in and out, and the process's own figures.
        assert!(prometheus.wait_for("switchboard_received_bytes_total", |v| v > 0.0) > 0.0);
        assert!(prometheus.wait_for("switchboard_sent_bytes_total", |v| v > 0.0) > 0.0);
        assert!(prometheus.wait_for("process_resident_memory_bytes", |v| v > 1e6) > 1e6);
        assert!(prometheus.wait_for("process_cpu_seconds_total", |v| v > 0.0) > 0.0);
        // Queue depths per shard exist; the backlog is drained once every device took all.
        assert!(prometheus.value("sum(switchboard_store_messages_held)").is_some());
        assert!(prometheus.value("switchboard_rocksdb_block_cache_capacity_bytes").unwrap() > 0.0);
    });

    // The exposition passes Prometheus's own linter.
    let (status, exposition) = get(metrics, "/metrics");
    assert_eq!(status, 200);
    let mut promtool = Command::new(binary("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let linted = promtool.wait_with_output().unwrap();
    assert!(
        linted.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );

    hub.shutdown().await;
}
