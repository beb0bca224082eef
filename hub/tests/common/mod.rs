//! A real `hub` process on 127.0.0.1 for integration tests, and helpers to enrol devices.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use switchboard_hub::{
    client::admin::AdminClient,
    client::{Client, DeviceIdentity, Event, client_endpoint},
};
use switchboard_protocol::Address;

/// A hub process serving on loopback, with its data in a directory that outlives restarts.
pub struct HubProcess {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub quic: SocketAddr,
    pub admin: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` answer (none when the config turns it off).
    pub metrics: Option<SocketAddr>,
    pub cert: Vec<u8>,
    extra: Vec<String>,
    config: Option<PathBuf>,
    /// The network namespace the hub runs in, if not the test's own.
    netns: Option<String>,
}

impl HubProcess {
    /// Starts a hub on free ports with its data in `data_dir`.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Starts a hub with `config` (TOML) as its configuration file.
    pub fn start_configured(data_dir: &Path, config: &str) -> Self {
        let path = data_dir.join("hub.toml");
        std::fs::create_dir_all(data_dir).unwrap();
        std::fs::write(&path, config).unwrap();
        let config = Some(path);
        let (child, quic, admin, metrics) =
            spawn(None, data_dir, &config, &[], "127.0.0.1:0", "127.0.0.1:0");
        let cert = std::fs::read(data_dir.join("tls/cert.der")).unwrap();
        let data_dir = data_dir.into();
        Self {
            child: Some(child),
            data_dir,
            quic,
            admin,
            metrics,
            cert,
            extra: Vec::new(),
            config,
            netns: None,
        }
    }

    /// Starts a hub with `config` (TOML) listening on `quic` and `admin` (for hubs on distinct
    /// loopback addresses, which other hubs' configurations name).
    pub fn start_at(data_dir: &Path, config: &str, quic: SocketAddr, admin: SocketAddr) -> Self {
        let path = data_dir.join("hub.toml");
        std::fs::create_dir_all(data_dir).unwrap();
        std::fs::write(&path, config).unwrap();
        let config = Some(path);
        let (child, quic, admin, metrics) =
            spawn(None, data_dir, &config, &[], &quic.to_string(), &admin.to_string());
        let cert = std::fs::read(data_dir.join("tls/cert.der")).unwrap();
        let data_dir = data_dir.into();
        Self {
            child: Some(child),
            data_dir,
            quic,
            admin,
            metrics,
            cert,
            extra: Vec::new(),
            config,
            netns: None,
        }
    }

    /// Starts a hub with `config` in the network namespace `netns`, listening on every address
    /// there at the ports of `quic` and `admin`, which are where the test reaches it.
    pub fn start_in_netns(
        netns: &str,
        data_dir: &Path,
        config: &str,
        quic: SocketAddr,
        admin: SocketAddr,
    ) -> Self {
        let path = data_dir.join("hub.toml");
        std::fs::create_dir_all(data_dir).unwrap();
        std::fs::write(&path, config).unwrap();
        let config = Some(path);
        let any = |at: SocketAddr| SocketAddr::from(([0, 0, 0, 0], at.port())).to_string();
        let (child, _, _, _) = spawn(Some(netns), data_dir, &config, &[], &any(quic), &any(admin));
        let cert = std::fs::read(data_dir.join("tls/cert.der")).unwrap();
        Self {
            child: Some(child),
            data_dir: data_dir.into(),
            quic,
            admin,
            metrics: None,
            cert,
            extra: Vec::new(),
            config,
            netns: Some(netns.to_string()),
        }
    }

    /// Starts a hub with extra command-line arguments (after `serve`).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, quic, admin, metrics) =
            spawn(None, data_dir, &None, &extra, "127.0.0.1:0", "127.0.0.1:0");
        let cert = std::fs::read(data_dir.join("tls/cert.der")).unwrap();
        Self {
            child: Some(child),
            data_dir: data_dir.into(),
            quic,
            admin,
            metrics,
            cert,
            extra,
            config: None,
            netns: None,
        }
    }

    /// The hub process's id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the hub is running").id()
    }

    /// Kills the hub with SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        signal_process(child.id(), "TERM");
        child.wait().unwrap().success()
    }

    /// Starts the hub again on the same data directory and the same ports.
    pub fn restart(&mut self) {
        self.kill();
        // In a namespace of its own the hub listens on every address of it, at the ports the
        // test reaches it on.
        let listen = |at: SocketAddr| match self.netns {
            Some(_) => SocketAddr::from(([0, 0, 0, 0], at.port())).to_string(),
            None => at.to_string(),
        };
        let (child, quic, admin, metrics) = spawn(
            self.netns.as_deref(),
            &self.data_dir,
            &self.config,
            &self.extra,
            &listen(self.quic),
            &listen(self.admin),
        );
        if self.netns.is_none() {
            assert_eq!((quic, admin), (self.quic, self.admin));
        }
        self.child = Some(child);
        if self.netns.is_none() {
            self.metrics = metrics;
        }
    }

    /// A user token for `user`, adding the user first if the hub does not know them.
    pub async fn token(&self, user: &str) -> String {
        let operator = self.admin_client();
        let _ = operator.add_user(user).await;
        operator.new_token(user).await.unwrap()
    }

    /// An admin client acting as `user` (added first if new).
    pub async fn as_user(&self, user: &str) -> AdminClient {
        AdminClient::new(self.admin, self.token(user).await)
    }

    pub fn admin_client(&self) -> AdminClient {
        let token = std::fs::read_to_string(self.data_dir.join("admin.token")).unwrap();
        AdminClient::new(self.admin, token.trim().to_string())
    }

    /// Adds a user (if new) and enrols `device` for it; returns the device's identity.
    pub async fn enrol(&self, user: &str, device: &str) -> DeviceIdentity {
        let admin = self.admin_client();
        let code = match admin.add_user(user).await {
            Ok(added) => added.code,
            Err(_) => admin.new_code(user).await.unwrap().code,
        };
        let address = Address::parse(&format!("{user}/{device}")).unwrap();
        let identity = DeviceIdentity::generate(address, self.quic, self.cert.clone()).unwrap();
        let endpoint = client_endpoint().unwrap();
        let client = Client::connect(&endpoint, &identity, Some(&code)).await.unwrap();
        client.close().await;
        identity
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a signal with the `kill` command (the workspace forbids the unsafe `libc::kill`).
fn signal_process(pid: u32, signal: &str) {
    let status =
        Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success());
}

fn spawn(
    netns: Option<&str>,
    data_dir: &Path,
    config: &Option<PathBuf>,
    extra: &[String],
    quic: &str,
    admin: &str,
) -> (Child, SocketAddr, SocketAddr, Option<SocketAddr>) {
    // The metrics listener on the admin API's address, at a free port: several hubs of one
    // test binary must not all take the default port.
    let metrics_at = {
        let admin: SocketAddr = admin.parse().unwrap();
        SocketAddr::new(admin.ip(), 0).to_string()
    };
    let mut metrics_arg = vec!["--metrics-listen", metrics_at.as_str()];
    if extra.iter().any(|a| a == "--metrics-listen") {
        metrics_arg.clear();
    }
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_hub")]);
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_hub")),
    };
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .args(["--data-dir", data_dir.to_str().unwrap(), "serve", "--listen", quic])
        .args(["--admin-listen", admin])
        .args(&metrics_arg)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if !sent && line.starts_with("hub serving: ") {
                let _ = tx.send(line.clone());
                sent = true;
            } else {
                eprintln!("[hub] {line}");
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).expect("the hub did not start");
    // "hub serving: QUIC 127.0.0.1:p · admin http://127.0.0.1:q · data ..."
    let quic: SocketAddr =
        line.split("QUIC ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let admin: SocketAddr =
        line.split("http://").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let metrics = line
        .split("metrics http://")
        .nth(1)
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap());
    (child, quic, admin, metrics)
}

/// The pin of the hub whose data directory is `data_dir` (`hub identity`, which makes the
/// certificate if there is none yet).
pub fn hub_pin(data_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["--data-dir", data_dir.to_str().unwrap(), "identity"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines().find_map(|l| l.strip_prefix("pin:")).unwrap().trim().to_string()
}

/// A free UDP port on `ip` (a loopback address of the test's own).
pub fn free_udp_port(ip: [u8; 4]) -> SocketAddr {
    std::net::UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap().local_addr().unwrap()
}

/// Connects `identity` (already enrolled).
pub async fn connect(identity: &DeviceIdentity) -> Client {
    let endpoint = client_endpoint().unwrap();
    Client::connect(&endpoint, identity, None).await.unwrap()
}

/// Waits for the next event, failing the test after `secs` seconds.
pub async fn next(client: &mut Client, secs: u64) -> Event {
    tokio::time::timeout(Duration::from_secs(secs), client.next_event())
        .await
        .expect("no event in time")
        .expect("session ended")
}

/// Receives deliveries (acknowledging each) until `count` bodies arrived; returns the bodies in
/// arrival order. Fails on a timeout or a closed session.
pub async fn receive(client: &mut Client, count: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    while bodies.len() < count {
        match next(client, 20).await {
            Event::Deliver(deliver) => {
                bodies.push(String::from_utf8(deliver.envelope.body.to_vec()).unwrap());
                client.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
            }
            Event::Receipt(receipt) => {
                client.ack(receipt.queue, receipt.seq, vec![]).await.unwrap();
            }
            Event::Closed { code, reason } => panic!("closed: {code}: {reason}"),
            _ => {}
        }
    }
    bodies
}

/// Sends each text and waits until every one is accepted; panics on a rejection.
pub async fn send_all(client: &mut Client, to: &Address, texts: &[String]) {
    let mut waiting = std::collections::HashSet::new();
    for text in texts {
        waiting.insert(client.send_text(to, text).await.unwrap());
        // Drain answers that are already there so the credit keeps flowing.
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(0), client.next_event()).await
        {
            settle(&mut waiting, event);
        }
    }
    while !waiting.is_empty() {
        let event = next(client, 20).await;
        settle(&mut waiting, event);
    }
}

fn settle(waiting: &mut std::collections::HashSet<switchboard_protocol::MessageId>, event: Event) {
    match event {
        Event::Accepted(id) => {
            waiting.remove(&id);
        }
        Event::Rejected(rejected) => panic!("rejected: {} {}", rejected.reason, rejected.detail),
        Event::Closed { code, reason } => panic!("closed: {code}: {reason}"),
        _ => {}
    }
}

/// A hub's place: its data directory, its addresses on one loopback address, its pin.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub quic: SocketAddr,
    pub admin: SocketAddr,
    pub pin: String,
}

/// A place for a hub on `ip`, its certificate made (so its pin is known before it starts).
pub fn site(ip: [u8; 4]) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let quic = free_udp_port(ip);
    let admin =
        std::net::TcpListener::bind(SocketAddr::from((ip, 0))).unwrap().local_addr().unwrap();
    let pin = hub_pin(dir.path());
    Site { dir, quic, admin, pin }
}

/// A hub of the test's own making (hub-x, serving x.example), linked to `hub` as one of its
/// peers: its frames are whatever the test writes.
pub struct FakePeer {
    pub connection: quinn::Connection,
    pub writer: switchboard_hub::net::framed::FrameWriter,
    pub reader: switchboard_hub::net::framed::FrameReader,
}

impl FakePeer {
    /// Links from `ip` to `target` with the identity kept in `dir`.
    pub async fn connect(dir: &Path, ip: [u8; 4], target: &HubProcess, target_pin: &str) -> Self {
        Self::connect_as(dir, ip, target, target_pin, "hub-x", &["@x.example"]).await
    }

    /// Links from `ip` to `target` with the identity kept in `dir`, as the hub `name` serving
    /// `domains` (`@domain` each).
    pub async fn connect_as(
        dir: &Path,
        ip: [u8; 4],
        target: &HubProcess,
        target_pin: &str,
        name: &str,
        domains: &[&str],
    ) -> Self {
        use switchboard_hub::net::{framed, tls};
        let identity = tls::load_or_create(&dir.join("tls")).unwrap();
        let crypto = tls::hub_client_crypto(&identity, target_pin).unwrap();
        let mut endpoint =
            quinn::Endpoint::client((std::net::Ipv4Addr::from(ip), 0).into()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
        let connection = endpoint.connect(target.quic, "switchboard-hub").unwrap().await.unwrap();
        let (send, recv) = connection.open_bi().await.unwrap();
        let mut writer = framed::FrameWriter::new(send, 16 << 20);
        let mut reader = framed::FrameReader::new(recv, 16 << 20);
        let hello = switchboard_protocol::HubHello {
            hub: name.into(),
            domains: domains.iter().map(|d| d.parse().unwrap()).collect(),
            max_batch: 1024,
        };
        writer.send(&switchboard_protocol::Frame::HubHello(hello)).await.unwrap();
        let answer = reader.next().await.unwrap();
        assert!(matches!(answer, Some(switchboard_protocol::Frame::HubHello(_))), "{answer:?}");
        Self { connection, writer, reader }
    }
}

/// A plain message from `from` to `to`, made now.
pub fn envelope(from: &str, to: &str, text: &str) -> switchboard_protocol::Envelope {
    switchboard_protocol::Envelope {
        id: switchboard_protocol::MessageId::from_parts(
            switchboard_hub::store::system_clock_ms(),
            rand::random(),
        ),
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        created_ms: switchboard_hub::store::system_clock_ms(),
        ttl_secs: 0,
        flags: switchboard_protocol::Flags::NONE,
        body: bytes::Bytes::from(text.to_string()),
    }
}

/// Whether the tests run as root (network namespaces, mounts).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A real DNS server on loopback: dnsmasq, answering the TXT records given and nothing else.
pub struct Dns {
    child: std::process::Child,
}

impl Dns {
    /// Starts dnsmasq on `ip`:53 (a loopback address of the test's own, so that no hub's
    /// port can take it), answering `records`.
    pub fn start(ip: [u8; 4], records: &[(&str, &str)]) -> Self {
        let binary = ["/usr/sbin/dnsmasq", "dnsmasq"]
            .into_iter()
            .find(|b| std::process::Command::new(b).arg("--version").output().is_ok())
            .expect("dnsmasq is not installed (deploy/install-deps.sh installs it)");
        let addr = std::net::SocketAddr::from((ip, 53));
        let mut command = std::process::Command::new(binary);
        command.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
            "--port=53",
            &format!("--listen-address={}", addr.ip()),
        ]);
        for (name, text) in records {
            command.arg(format!("--txt-record={name},{text}"));
        }
        let mut child = command.stdout(std::process::Stdio::null()).spawn().unwrap();
        // Ready when it answers on TCP (it serves TCP and UDP on the same port).
        for _ in 0..100 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("dnsmasq on {addr} exited: {status}");
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                return Self { child };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dnsmasq on {addr} did not start");
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
