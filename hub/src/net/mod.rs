//! The QUIC side of the hub: the endpoint, device sessions, and the running hub as a whole.
//!
//! [`start`] opens the store, makes or loads the TLS certificate, binds the QUIC endpoint and
//! the admin API, and returns a [`RunningHub`]; [`RunningHub::shutdown`] stops it in order:
//! no new connections, every session finishes the commits it started and closes with
//! `shutting-down`, then the store's writers drain and stop.

pub mod endpoint;
pub mod framed;
mod session;
pub mod tls;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use switchboard_protocol::ErrorCode;
use tokio::{sync::watch, task::JoinSet};

use crate::{
    admin,
    config::Config,
    fanout::Hub,
    store::{Store, StoreError},
};

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be made.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened (another hub may be running on the same data directory).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A hub that is serving.
pub struct RunningHub {
    /// Where devices connect (UDP).
    pub quic_addr: SocketAddr,
    /// Where the admin API listens (HTTP).
    pub admin_addr: SocketAddr,
    /// The hub's certificate (DER), which clients pin.
    pub cert: Vec<u8>,
    /// The data directory.
    pub data_dir: PathBuf,
    hub: Arc<Hub>,
    endpoint: quinn::Endpoint,
    shutdown: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
    admin: tokio::task::JoinHandle<()>,
}

/// Starts a hub with `config`.
pub async fn start(config: Config) -> Result<RunningHub, StartError> {
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .map_err(|source| StartError::DataDir { path: data_dir.clone(), source })?;
    let identity = tls::load_or_create(&data_dir.join("tls"))?;
    let token = admin::load_or_create_token(&data_dir)
        .map_err(|source| StartError::DataDir { path: data_dir.clone(), source })?;
    let store_config = config.store_config(&data_dir);
    let store = tokio::task::spawn_blocking(move || Store::open(store_config))
        .await
        .map_err(|e| StoreError::Storage(e.to_string()))??;
    let quic = &config.quic;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls::server_crypto(&identity)?));
    server.transport_config(endpoint::transport(
        Duration::from_secs(quic.idle_timeout_secs),
        None,
        quic.segmentation_offload,
    ));
    server.max_incoming(quic.max_connections.clamp(1, 1 << 20));
    let socket = endpoint::udp_socket(quic.listen, quic.udp_buffer_bytes)
        .map_err(|source| StartError::Bind { addr: quic.listen, source })?;
    let runtime = quinn::default_runtime().ok_or_else(|| StartError::Bind {
        addr: quic.listen,
        source: std::io::Error::other("no async runtime"),
    })?;
    let endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, runtime)
            .map_err(|source| StartError::Bind { addr: quic.listen, source })?;
    let quic_addr =
        endpoint.local_addr().map_err(|source| StartError::Bind { addr: quic.listen, source })?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.admin.listen, source })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr: config.admin.listen, source })?;

    let store = Arc::new(store);
    let hub = tokio::task::spawn_blocking(move || Hub::new(store, config))
        .await
        .map_err(|e| StoreError::Storage(e.to_string()))??;
    let loading = hub.clone();
    let users = tokio::task::spawn_blocking(move || loading.load_directory())
        .await
        .map_err(|e| StoreError::Storage(e.to_string()))??;
    tracing::info!(users, "directory loaded");
    let (shutdown, shutdown_rx) = watch::channel(false);
    let accepting = tokio::spawn(accept_loop(hub.clone(), endpoint.clone(), shutdown_rx.clone()));
    let admin = tokio::spawn(admin::serve(admin_listener, hub.clone(), token, shutdown_rx));
    tracing::info!(%quic_addr, %admin_addr, data_dir = %data_dir.display(), "hub serving");
    Ok(RunningHub {
        quic_addr,
        admin_addr,
        cert: identity.cert.to_vec(),
        data_dir,
        hub,
        endpoint,
        shutdown,
        accepting,
        admin,
    })
}

impl RunningHub {
    /// The shared hub state (store, settings).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Stops the hub: refuses new connections, lets every session finish the commits it
    /// started and close with `shutting-down`, then stops the store. Nothing accepted is lost.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accepting.await;
        let _ = self.admin.await;
        self.endpoint.close(ErrorCode::SHUTTING_DOWN.0.into(), b"the hub is stopping");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
        let hub = self.hub;
        // Sessions are gone; the last references to the store go with them.
        let store = tokio::task::spawn_blocking(move || {
            for _ in 0..500 {
                if Arc::strong_count(&hub) == 1 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            match Arc::try_unwrap(hub) {
                Ok(hub) => match Arc::try_unwrap(hub.store) {
                    Ok(store) => store.close(),
                    Err(_) => tracing::warn!(
                        "store still in use at shutdown; its writers stop when it is dropped"
                    ),
                },
                Err(_) => tracing::warn!("hub state still in use at shutdown"),
            }
        });
        let _ = store.await;
        tracing::info!("hub stopped");
    }
}

async fn accept_loop(
    hub: Arc<Hub>,
    endpoint: quinn::Endpoint,
    mut shutdown: watch::Receiver<bool>,
) {
    let live = Arc::new(AtomicUsize::new(0));
    let ids = AtomicU64::new(1);
    let mut sessions = JoinSet::new();
    let validate = hub.config.quic.address_validation;
    let max = hub.config.quic.max_connections;
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
        if live.load(Ordering::Relaxed) >= max {
            tracing::warn!(max, "connection refused: limit reached");
            incoming.refuse();
            continue;
        }
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (hub, live, shutdown) = (hub.clone(), live.clone(), shutdown.clone());
        live.fetch_add(1, Ordering::Relaxed);
        hub.connections.fetch_add(1, Ordering::Relaxed);
        sessions.spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => {
                    let end = session::run(hub.clone(), connection, id, shutdown).await;
                    tracing::debug!(session_id = id, %remote, %end, "session ended");
                }
                Err(error) => tracing::debug!(%remote, %error, "handshake failed"),
            }
            live.fetch_sub(1, Ordering::Relaxed);
            hub.connections.fetch_sub(1, Ordering::Relaxed);
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
