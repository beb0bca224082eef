//! Hub links: one QUIC connection with mutual TLS to each peer hub of the configuration, made
//! by this hub's connector for that peer and kept up: reconnected with exponential backoff and
//! jitter (from about a second to about a minute, never giving up), each attempt and failure
//! logged and visible through the admin API (`GET /v1/peers`).
//!
//! Hubs know each other by the pin of their certificate (SHA-256 of its DER, `hub identity`),
//! checked in both directions: the connecting hub accepts only the pinned server certificate;
//! the accepting hub takes a `switchboard-hub/1` connection only from a client certificate whose
//! pin is in its peer table. Then both send `hub-hello` (name, domains served, largest batch),
//! which must agree with the peer table, else the link is closed with `unknown-hub`.
//!
//! Relaying messages over these links (outbound queues, `relay`, `relay-ack`) comes next; a link
//! today carries its handshake and stays up.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use switchboard_protocol::{Address, ErrorCode, Frame, HubHello};
use tokio::sync::{Notify, watch};

use crate::{
    config::{Config, PeerConfig},
    net::{
        framed::{FrameReader, FrameWriter},
        tls::{self, Identity},
    },
    store::system_clock_ms,
};

/// Largest `relay` batch this hub takes, announced in its `hub-hello`.
pub const MAX_BATCH: u32 = 1024;
/// First wait after a failed attempt.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How long the other side has for its `hub-hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a QUIC handshake with a peer may take (a peer that is down does not answer at all).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest hub-link frame this hub reads.
const MAX_LINK_FRAME: u32 = 16 << 20;

/// Where a link to a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// An attempt is under way.
    Connecting,
    /// The link is up (hellos exchanged).
    Up,
    /// Waiting before the next attempt.
    Backoff,
}

/// What the admin API shows of a peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// The peer's name.
    pub name: String,
    /// Its address.
    pub address: std::net::SocketAddr,
    /// The domains it serves.
    pub domains: Vec<String>,
    /// This hub's link to it.
    pub state: LinkState,
    /// Since when, Unix milliseconds.
    pub since_ms: u64,
    /// Connection attempts made.
    pub attempts: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When the next attempt is due (in backoff), Unix milliseconds.
    pub next_attempt_ms: Option<u64>,
    /// Whether the peer's own link to this hub is up.
    pub inbound_up: bool,
    /// Messages waiting for this peer (none until relaying exists).
    pub queued: u64,
}

/// One peer: its configuration, its link's status, and a way to end a backoff.
struct Peer {
    config: PeerConfig,
    pin: String,
    status: Mutex<PeerStatus>,
    retry: Notify,
}

impl Peer {
    fn update(&self, change: impl FnOnce(&mut PeerStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut status);
    }
}

/// The peer hubs of this hub.
pub struct Peers {
    peers: Vec<Arc<Peer>>,
    name: String,
    domains: Vec<String>,
}

impl Peers {
    /// The peers of `config`, none linked yet.
    pub fn new(config: &Config) -> Self {
        let now = system_clock_ms();
        let peers = config
            .peers
            .iter()
            .map(|peer| {
                Arc::new(Peer {
                    config: peer.clone(),
                    pin: peer.pin.to_ascii_lowercase(),
                    status: Mutex::new(PeerStatus {
                        name: peer.name.clone(),
                        address: peer.address,
                        domains: peer.domains.clone(),
                        state: LinkState::Connecting,
                        since_ms: now,
                        attempts: 0,
                        last_error: None,
                        next_attempt_ms: None,
                        inbound_up: false,
                        queued: 0,
                    }),
                    retry: Notify::new(),
                })
            })
            .collect();
        Self { peers, name: config.hub.name.clone(), domains: config.hub.domains.clone() }
    }

    /// Every peer's status, in configuration order.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|p| p.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Ends the backoff of the link to `name` now; `false` if there is no such peer.
    pub fn retry(&self, name: &str) -> bool {
        match self.peers.iter().find(|p| p.config.name == name) {
            Some(peer) => {
                peer.retry.notify_one();
                true
            }
            None => false,
        }
    }

    fn hello(&self) -> Frame {
        let domains = self.domains.iter().filter_map(|d| Address::parse(&format!("@{d}")).ok());
        Frame::HubHello(HubHello {
            hub: self.name.clone(),
            domains: domains.collect(),
            max_batch: MAX_BATCH,
        })
    }
}

/// Checks a peer's `hub-hello` against its entry in the peer table.
fn check_hello(peer: &PeerConfig, frame: Option<Frame>) -> Result<HubHello, String> {
    let hello = match frame {
        Some(Frame::HubHello(hello)) => hello,
        Some(other) => {
            return Err(format!("expected hub-hello, got {}", other.frame_type().name()));
        }
        None => return Err("the stream ended before hub-hello".into()),
    };
    if hello.hub != peer.name {
        return Err(format!("the peer says it is {:?}, the peer table {:?}", hello.hub, peer.name));
    }
    for domain in &hello.domains {
        let domain = domain.domain().unwrap_or_default();
        if !peer.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Err(format!(
                "{} claims {domain}, which the peer table does not give it",
                peer.name
            ));
        }
    }
    Ok(hello)
}

/// Starts one connector per peer; they run until `shutdown`.
pub(crate) fn start(
    peers: Arc<Peers>,
    endpoint: quinn::Endpoint,
    identity: &Identity,
    shutdown: watch::Receiver<bool>,
) -> Result<(), tls::TlsError> {
    for peer in &peers.peers {
        let crypto = tls::hub_client_crypto(identity, &peer.pin)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(crate::net::endpoint::transport(
            Duration::from_secs(30),
            Some(Duration::from_secs(10)),
            true,
        ));
        tokio::spawn(connector(
            peers.clone(),
            peer.clone(),
            endpoint.clone(),
            client,
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// Keeps the link to `peer` up until shutdown.
async fn connector(
    peers: Arc<Peers>,
    peer: Arc<Peer>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = BACKOFF_START;
    while !*shutdown.borrow() {
        peer.update(|s| {
            s.state = LinkState::Connecting;
            s.attempts += 1;
            s.next_attempt_ms = None;
        });
        match link_once(&peers, &peer, &endpoint, client.clone()).await {
            Ok(connection) => {
                delay = BACKOFF_START;
                let now = system_clock_ms();
                peer.update(|s| {
                    s.state = LinkState::Up;
                    s.since_ms = now;
                    s.last_error = None;
                });
                tracing::info!(peer = %peer.config.name, "hub link up");
                let why = tokio::select! {
                    error = connection.closed() => error.to_string(),
                    _ = shutdown.changed() => {
                        connection.close(ErrorCode::SHUTTING_DOWN.0.into(), b"the hub is stopping");
                        return;
                    }
                };
                tracing::warn!(peer = %peer.config.name, %why, "hub link down");
                peer.update(|s| s.last_error = Some(why));
            }
            Err(why) => {
                tracing::warn!(peer = %peer.config.name, %why, "hub link attempt failed");
                peer.update(|s| s.last_error = Some(why));
            }
        }
        // Exponential backoff with jitter (half to one and a half times the delay).
        let wait = delay.mul_f64(0.5 + rand::random::<f64>());
        delay = (delay * 2).min(BACKOFF_CAP);
        let now = system_clock_ms();
        peer.update(|s| {
            s.state = LinkState::Backoff;
            s.since_ms = now;
            s.next_attempt_ms = Some(now + wait.as_millis() as u64);
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = peer.retry.notified() => delay = BACKOFF_START,
            _ = shutdown.changed() => return,
        }
    }
}

/// One attempt: connects, exchanges hellos, and answers the connection.
async fn link_once(
    peers: &Peers,
    peer: &Peer,
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
) -> Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect_with(client, peer.config.address, "switchboard-hub")
        .map_err(|e| format!("cannot connect: {e}"))?;
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    // When the peer closes the link, its reason says why (an unknown hub, say).
    let failed = |what: &str, error: String| match connection.close_reason() {
        Some(reason) => format!("{what}: {reason}"),
        None => format!("{what}: {error}"),
    };
    let (send, recv) = connection.open_bi().await.map_err(|e| failed("stream", e.to_string()))?;
    let mut writer = FrameWriter::new(send, MAX_LINK_FRAME);
    let mut reader = FrameReader::new(recv, MAX_LINK_FRAME);
    writer.send(&peers.hello()).await.map_err(|e| failed("sending hub-hello", e.to_string()))?;
    let answer = tokio::time::timeout(HELLO_TIMEOUT, reader.next())
        .await
        .map_err(|_| "no hub-hello in time".to_string())?
        .map_err(|e| failed("reading hub-hello", e.to_string()))?;
    if let Err(why) = check_hello(&peer.config, answer) {
        connection.close(ErrorCode::UNKNOWN_HUB.0.into(), why.as_bytes());
        return Err(why);
    }
    Ok(connection)
}

/// Takes a `switchboard-hub/1` connection: only from a peer of the table (by pin), after a
/// matching `hub-hello`; it stays open until either side closes it.
pub(crate) async fn accept(peers: Arc<Peers>, connection: quinn::Connection) {
    let remote = connection.remote_address();
    let pin = connection
        .peer_identity()
        .and_then(|identity| {
            identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()
        })
        .and_then(|certs| certs.first().map(|cert| tls::pin(cert.as_ref())));
    let Some(peer) = pin.and_then(|pin| peers.peers.iter().find(|p| p.pin == pin).cloned()) else {
        tracing::warn!(%remote, "hub link refused: the certificate is no known peer's");
        connection.close(ErrorCode::UNKNOWN_HUB.0.into(), b"unknown hub");
        return;
    };
    let answered = async {
        let (send, recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi())
            .await
            .map_err(|_| "no stream in time".to_string())?
            .map_err(|e| e.to_string())?;
        let mut reader = FrameReader::new(recv, MAX_LINK_FRAME);
        let mut writer = FrameWriter::new(send, MAX_LINK_FRAME);
        let hello = tokio::time::timeout(HELLO_TIMEOUT, reader.next())
            .await
            .map_err(|_| "no hub-hello in time".to_string())?
            .map_err(|e| e.to_string())?;
        check_hello(&peer.config, hello)?;
        writer.send(&peers.hello()).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((reader, writer))
    };
    let streams = match answered.await {
        Ok(streams) => streams,
        Err(why) => {
            tracing::warn!(peer = %peer.config.name, %remote, %why, "hub link refused");
            connection.close(ErrorCode::UNKNOWN_HUB.0.into(), why.as_bytes());
            return;
        }
    };
    peer.update(|s| s.inbound_up = true);
    tracing::info!(peer = %peer.config.name, %remote, "hub link accepted");
    let why = connection.closed().await;
    drop(streams);
    peer.update(|s| s.inbound_up = false);
    tracing::info!(peer = %peer.config.name, %why, "inbound hub link closed");
}
