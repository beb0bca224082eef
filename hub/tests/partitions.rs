//! Two hubs in network namespaces of their own, each joined to the test's namespace by a veth
//! pair. Their link runs through a relay of the test's (UDP, in the test's namespace) that
//! delays each packet by a random time, so packets overtake each other; nftables rules in the
//! hubs' namespaces drop a share of the link's packets, or all of them (a partition), healed
//! at random moments. Devices reach their hub over the same veth, on other ports, and are
//! never disturbed. Messages both ways arrive once each, in order, and the backlog drains after
//! the last healing. The namespaces are created and removed by the test.
//!
//! `tc netem` would be the usual tool for delay and reordering; this machine's kernel has no
//! netem qdisc (nor can it load one), hence the relay. Needs root (namespaces, nftables); as
//! another user the test says so and passes without running.
//!
//! `SWITCHBOARD_PARTITION_SEED=S` repeats a run's schedule; `SWITCHBOARD_PARTITION_SECS=N`
//! makes the disturbed part last N seconds instead of 20.

mod common;

use std::{
    net::SocketAddr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;
use switchboard_hub::client::{Client, Event};
use switchboard_protocol::{Address, MessageId};

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?} failed");
}

/// Runs a clean-up command whose failure (nothing to remove) does not matter.
fn quietly(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).stderr(std::process::Stdio::null()).status();
}

/// The namespaces of one run, removed when dropped.
struct Net {
    ns: [String; 2],
}

/// Ports of the link's traffic in each namespace: the relay's ports the hub talks to (its
/// peer's address, and the relay's source towards it).
const LINK_PORTS: [[u16; 2]; 2] = [[47_010, 47_011], [47_020, 47_021]];

impl Net {
    /// Namespace i holds hub i at 10.20(2+i).0.2; the test is 10.20(2+i).0.1 on that veth.
    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        let ns = [format!("sbpa{tag}"), format!("sbpb{tag}")];
        for (i, ns) in ns.iter().enumerate() {
            quietly(&["ip", "netns", "del", ns]);
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            let (outer, inner) = (format!("sbd{tag}{i}"), format!("sbd{tag}{i}x"));
            quietly(&["ip", "link", "del", &outer]);
            run(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            run(&["ip", "link", "set", &inner, "netns", ns]);
            run(&["ip", "addr", "add", &format!("10.20{}.0.1/30", 2 + i), "dev", &outer]);
            run(&["ip", "link", "set", &outer, "up"]);
            run(&["ip", "-n", ns, "addr", "add", &format!("10.20{}.0.2/30", 2 + i), "dev", &inner]);
            run(&["ip", "-n", ns, "link", "set", &inner, "up"]);
        }
        Self { ns }
    }

    /// Drops `percent` of the link's packets in and out of both hubs' namespaces (100: the
    /// link is cut; 0: none dropped).
    fn drop_share(&self, percent: u32) {
        for (ns, ports) in self.ns.iter().zip(LINK_PORTS) {
            let ports = format!("{{ {}, {} }}", ports[0], ports[1]);
            let verdict = match percent {
                0 => String::new(),
                100 => "drop".to_string(),
                p => format!("numgen random mod 100 < {p} drop"),
            };
            let mut rules = String::from("flush ruleset\ntable inet link {\n");
            for (hook, direction) in [("input", "sport"), ("output", "dport")] {
                rules.push_str(&format!(
                    "  chain {hook} {{\n    type filter hook {hook} priority 0;\n    udp {direction} {ports} {verdict}\n  }}\n"
                ));
            }
            rules.push_str("}\n");
            if percent == 0 {
                rules = "flush ruleset\n".to_string();
            }
            let mut child = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
            assert!(child.wait().unwrap().success(), "nft refused:\n{rules}");
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A UDP relay for one direction of the link: what comes to `front` goes to `target` from
/// `back`, and the answers back to whoever wrote to `front`; each packet waits a random time
/// up to `jitter_ms` (set at any moment), so later packets overtake earlier ones.
async fn relay(front: SocketAddr, back: SocketAddr, target: SocketAddr, jitter_ms: Arc<AtomicU64>) {
    let front = Arc::new(tokio::net::UdpSocket::bind(front).await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind(back).await.unwrap());
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let later =
        |socket: Arc<tokio::net::UdpSocket>, to: SocketAddr, bytes: Vec<u8>, jitter: u64| {
            let wait = if jitter == 0 { 0 } else { rand::random_range(0..jitter) };
            tokio::spawn(async move {
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                let _ = socket.send_to(&bytes, to).await;
            });
        };
    let (f, b, c, j) = (front.clone(), back.clone(), client.clone(), jitter_ms.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            later(b.clone(), target, buf[..n].to_vec(), j.load(Ordering::Relaxed));
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                later(front.clone(), to, buf[..n].to_vec(), jitter_ms.load(Ordering::Relaxed));
            }
        }
    });
}

fn config(name: &str, domain: &str, peer: &str, peer_domain: &str, at: &str, pin: &str) -> String {
    format!(
        "[hub]\nname = \"{name}\"\ndomains = [\"{domain}\"]\n\n[[peers]]\nname = \"{peer}\"\n\
         address = \"{at}\"\npin = \"{pin}\"\ndomains = [\"{peer_domain}\"]\n"
    )
}

async fn link_state(hub: &HubProcess) -> Value {
    let peers = hub.admin_client().request("GET", "/v1/peers", None).await.unwrap();
    peers.as_array().unwrap()[0].clone()
}

/// A device that sends, and takes what comes from the other hub (messages whose body starts
/// with `from`; its own copies and receipts are acknowledged and set aside).
struct Peer {
    client: Client,
    from: char,
    got: Vec<String>,
}

impl Peer {
    async fn take(&mut self, event: Event) -> Option<MessageId> {
        match event {
            Event::Deliver(deliver) => {
                let body = String::from_utf8(deliver.envelope.body.to_vec()).unwrap();
                if body.starts_with(self.from) {
                    self.got.push(body);
                }
                self.client.ack(deliver.queue, deliver.seq, vec![]).await.unwrap();
            }
            Event::Receipt(receipt) => {
                self.client.ack(receipt.queue, receipt.seq, vec![]).await.unwrap();
            }
            Event::Accepted(id) => return Some(id),
            Event::Rejected(rejected) => panic!("rejected: {rejected:?}"),
            Event::Error(error) => panic!("error: {error:?}"),
            Event::Closed { code, reason } => panic!("closed: {code}: {reason}"),
        }
        None
    }

    /// Sends `texts` to `to` and waits until each is accepted (the hub keeps them for the
    /// other hub, however the link is), taking deliveries meanwhile.
    async fn send(&mut self, to: &str, texts: &[String]) {
        let to = Address::parse(to).unwrap();
        let mut waiting = std::collections::HashSet::new();
        for text in texts {
            waiting.insert(self.client.send_text(&to, text).await.unwrap());
        }
        while !waiting.is_empty() {
            let event = next(&mut self.client, 30).await;
            if let Some(id) = self.take(event).await {
                waiting.remove(&id);
            }
        }
    }

    /// Takes what is already here.
    async fn drain(&mut self) {
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(50), self.client.next_event()).await
        {
            self.take(event).await;
        }
    }

    /// Takes deliveries until `count` came from the other hub, for up to `secs`.
    async fn until(&mut self, count: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.got.len() < count {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
            assert!(Instant::now() < deadline, "{} of {count} arrived", self.got.len());
            let event = next(&mut self.client, left).await;
            self.take(event).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_between_hubs_arrive_once_in_order_through_loss_reordering_and_partitions() {
    if !is_root() {
        eprintln!("partitions: not root, cannot make network namespaces; not run");
        return;
    }
    let seed = std::env::var("SWITCHBOARD_PARTITION_SEED").ok().and_then(|s| s.parse().ok());
    let seed: u64 = seed.unwrap_or_else(rand::random);
    let secs = std::env::var("SWITCHBOARD_PARTITION_SECS").ok().and_then(|s| s.parse().ok());
    let chaos = Duration::from_secs(secs.unwrap_or(20));
    eprintln!("partitions: seed {seed} (SWITCHBOARD_PARTITION_SEED repeats it)");
    let mut rng = StdRng::seed_from_u64(seed);

    let net = Net::new();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let pins = [hub_pin(dirs[0].path()), hub_pin(dirs[1].path())];
    let reach = |i: usize| -> (SocketAddr, SocketAddr) {
        let ip = format!("10.20{}.0.2", 2 + i);
        (format!("{ip}:4433").parse().unwrap(), format!("{ip}:8080").parse().unwrap())
    };
    // The link through the relays: A reaches B at 10.202.0.1:47010, B reaches A at
    // 10.203.0.1:47020 (see LINK_PORTS).
    let jitter = Arc::new(AtomicU64::new(0));
    let at = |text: &str| -> SocketAddr { text.parse().unwrap() };
    relay(at("10.202.0.1:47010"), at("10.203.0.1:47021"), at("10.203.0.2:4433"), jitter.clone())
        .await;
    relay(at("10.203.0.1:47020"), at("10.202.0.1:47011"), at("10.202.0.2:4433"), jitter.clone())
        .await;
    let config_a = config("hub-a", "a.example", "hub-b", "b.example", "10.202.0.1:47010", &pins[1]);
    let config_b = config("hub-b", "b.example", "hub-a", "a.example", "10.203.0.1:47020", &pins[0]);
    let (quic_a, admin_a) = reach(0);
    let (quic_b, admin_b) = reach(1);
    let hub_a = HubProcess::start_in_netns(&net.ns[0], dirs[0].path(), &config_a, quic_a, admin_a);
    let hub_b = HubProcess::start_in_netns(&net.ns[1], dirs[1].path(), &config_b, quic_b, admin_b);
    let alice = hub_a.enrol("alice@a.example", "phone").await;
    let bob = hub_b.enrol("bob@b.example", "phone").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for hub in [&hub_a, &hub_b] {
        while link_state(hub).await["state"] != "up" {
            assert!(Instant::now() < deadline, "the link never came up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut alice = Peer { client: connect(&alice).await, from: 'b', got: Vec::new() };
    let mut bob = Peer { client: connect(&bob).await, from: 'a', got: Vec::new() };
    let to_bob: Vec<String> = (0..300).map(|i| format!("a{i:04}")).collect();
    let to_alice: Vec<String> = (0..300).map(|i| format!("b{i:04}")).collect();
    let started = Instant::now();
    let mut sent = 0;
    let mut cuts = 0;
    while started.elapsed() < chaos || sent < to_bob.len() {
        // The link for the next moment: lossy, cut, or clean.
        let (state, dropped, late_ms) = match rng.random_range(0..10) {
            0..=3 => ("lossy", 10, 80),
            4..=6 => ("cut", 100, 0),
            _ => ("clean", 0, 0),
        };
        cuts += usize::from(state == "cut");
        net.drop_share(dropped);
        jitter.store(late_ms, Ordering::Relaxed);
        let chunk = rng.random_range(5..30).min(to_bob.len() - sent);
        alice.send("bob@b.example", &to_bob[sent..sent + chunk]).await;
        bob.send("alice@a.example", &to_alice[sent..sent + chunk]).await;
        sent += chunk;
        // Take what has come meanwhile, without waiting for what the link holds back.
        bob.drain().await;
        alice.drain().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
    }
    // A cut longer than the link's idle timeout: the link is lost and must be made again.
    net.drop_share(100);
    tokio::time::sleep(Duration::from_secs(12)).await;
    net.drop_share(0);
    jitter.store(0, Ordering::Relaxed);
    eprintln!("partitions: {sent} each way, {cuts} cuts and a long one; healed");

    // The backlog drains: within the link's reconnection backoff and a little more.
    bob.until(to_bob.len(), 90).await;
    alice.until(to_alice.len(), 90).await;
    // Nothing more comes, and neither hub holds anything for the other.
    tokio::time::sleep(Duration::from_secs(1)).await;
    bob.drain().await;
    alice.drain().await;
    assert_eq!(bob.got, to_bob, "bob: each message once, in order");
    assert_eq!(alice.got, to_alice, "alice: each message once, in order");
    // Each link is up again (a link may still be replacing a connection the long cut left
    // behind: wait for it, within the backoff cap).
    for hub in [&hub_a, &hub_b] {
        let until = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            let link = link_state(hub).await;
            if (link["state"].as_str(), link["queued"].as_u64()) == (Some("up"), Some(0)) {
                break;
            }
            assert!(tokio::time::Instant::now() < until, "a link not up and empty: {link}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    alice.client.close().await;
    bob.client.close().await;
}
