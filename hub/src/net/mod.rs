//! The QUIC side of the hub: the endpoint, the accept loop, and each device session's I/O
//! driver (`session.rs`; the session's decisions live in [`crate::session`]). Nothing here
//! decides what a frame means.

pub mod endpoint;
pub mod framed;
mod session;
pub mod sources;
pub mod tls;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinSet};

use crate::{config::QuicConfig, fanout::Hub, server::StartError};

/// Binds the QUIC endpoint devices connect to.
pub(crate) fn bind(
    quic: &QuicConfig,
    identity: &tls::Identity,
) -> Result<quinn::Endpoint, StartError> {
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls::server_crypto(identity)?));
    server.transport_config(endpoint::transport(
        Duration::from_secs(quic.idle_timeout_secs),
        None,
        quic.segmentation_offload,
    ));
    server.max_incoming(quic.max_connections.clamp(1, 1 << 20));
    let bind_error = |source| StartError::Bind { addr: quic.listen, source };
    let socket = endpoint::udp_socket(quic.listen, quic.udp_buffer_bytes).map_err(bind_error)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| bind_error(std::io::Error::other("no async runtime")))?;
    quinn::Endpoint::new(endpoint_config(identity), Some(server), socket, runtime)
        .map_err(bind_error)
}

/// The endpoint's configuration, with a stateless-reset key and a connection-id key derived
/// from the hub's private key: the same after a restart, so that a hub that crashed answers
/// packets of its earlier connections with a reset its peers and devices accept, and they
/// notice at once instead of after the idle timeout. Both keys matter: quinn drops a packet
/// whose connection id its generator does not recognise before it considers a reset, so with
/// a fresh random id key (quinn's default) a restarted hub stayed silent and every device
/// waited out its idle timeout (found by the crash loop, loadgen/tests/crash_loop.rs).
fn endpoint_config(identity: &tls::Identity) -> quinn::EndpointConfig {
    use sha2::Digest;
    let derive = |label: &[u8]| {
        let mut secret = sha2::Sha256::new();
        secret.update(label);
        secret.update(identity.key.secret_der());
        secret.finalize()
    };
    let reset = derive(b"switchboard stateless reset key\0");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset);
    let cid = derive(b"switchboard connection id key\0");
    let cid_key = u64::from_le_bytes(cid[..8].try_into().expect("a SHA-256 digest has 8 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    // quinn sends at most one reset per interval (20 ms by default), for all peers together:
    // after a restart, 70 devices took over a second to hear of it. A reset is always smaller
    // than the packet that caused it, so a shorter interval amplifies nothing.
    config.min_reset_interval(Duration::from_millis(1));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// The protocol the connection's TLS handshake agreed on.
fn alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection.handshake_data()?.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

use crate::metrics::label;

/// Accepts connections and runs a session on each until shutdown; then refuses new ones and
/// waits (up to 10 s) for every session to finish what it started.
pub(crate) async fn accept_loop(
    hub: Arc<Hub>,
    endpoint: quinn::Endpoint,
    mut shutdown: watch::Receiver<bool>,
) {
    let ids = AtomicU64::new(1);
    let mut sessions = JoinSet::new();
    let validate = hub.config().quic.address_validation;
    let max = hub.config().quic.max_connections;
    let max_handshakes = hub.config().quic.max_handshakes;
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        if validate && !incoming.remote_address_validated() {
            let _ = incoming.retry();
            continue;
        }
        if hub.connections() >= max {
            tracing::warn!(max, "connection refused: limit reached");
            hub.metrics()
                .connections_refused
                .get_or_create(&label("reason", "max-connections"))
                .inc();
            incoming.refuse();
            continue;
        }
        let ip = incoming.remote_address().ip();
        let Some(slot) = hub.start_handshake(max_handshakes) else {
            hub.metrics()
                .connections_refused
                .get_or_create(&label("reason", "max-handshakes"))
                .inc();
            refused(ip, Refusal::Handshakes(max_handshakes));
            incoming.refuse();
            continue;
        };
        let source = match hub.sources().admit(ip, std::time::Instant::now()) {
            Ok(source) => source,
            Err(refusal) => {
                let reason = match refusal {
                    sources::SourceRefusal::Connections(_) => "connections-per-address",
                    sources::SourceRefusal::Rate(_) => "connection-rate-per-address",
                };
                hub.metrics().connections_refused.get_or_create(&label("reason", reason)).inc();
                refused(ip, Refusal::Source(refusal));
                incoming.refuse();
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (hub, shutdown) = (hub.clone(), shutdown.clone());
        let counted = hub.count_connection();
        sessions.spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) if alpn(&connection).as_deref() == Some(tls::HUB_ALPN) => {
                    drop(slot);
                    crate::links::accept(hub.clone(), connection, shutdown).await;
                }
                Ok(connection) => {
                    let end = session::run(hub.clone(), connection, id, slot, shutdown).await;
                    tracing::debug!(session_id = id, %remote, %end, "session ended");
                }
                Err(error) => {
                    hub.metrics().handshake_failures.get_or_create(&label("reason", "tls")).inc();
                    tracing::debug!(%remote, %error, "handshake failed");
                }
            }
            drop(counted);
            drop(source);
        });
    }
    // Refuse new connections, then let every session finish what it started.
    endpoint.set_server_config(None);
    let drain = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        tracing::warn!("sessions still open 10 s after shutdown began; closing them");
        sessions.abort_all();
    }
}

/// Why a new connection was refused before its handshake.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// `quic.max_handshakes` handshakes were in progress.
    #[error("{0} handshakes in progress already")]
    Handshakes(usize),
    /// A limit of its source address.
    #[error(transparent)]
    Source(sources::SourceRefusal),
}

/// Logs a refused connection, at most once a second with the count since the last line, so a
/// storm of them cannot flood the log.
fn refused(ip: std::net::IpAddr, refusal: Refusal) {
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let count = SINCE.fetch_add(1, Ordering::Relaxed) + 1;
    let now = crate::store::system_clock_ms();
    let last = LAST_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 1_000
        && LAST_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        SINCE.store(0, Ordering::Relaxed);
        tracing::warn!(%ip, %refusal, refused = count, "connections refused (this one and those since the last line)");
    }
}
