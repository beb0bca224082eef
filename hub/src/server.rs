//! The running hub as a whole: [`start`] opens the store, the hub state, the QUIC endpoint and
//! the admin API; [`RunningHub::shutdown`] stops them in order.
//!
//! Shutdown: no new connections; every session finishes the commits it started and closes with
//! `shutting-down` (up to 10 s); the admin API stops; the endpoint closes; then the store's
//! writers commit what they hold and stop. A SIGKILL loses nothing accepted either: `accepted`
//! follows the fsync.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use switchboard_protocol::ErrorCode;
use tokio::sync::watch;

use crate::{
    admin,
    config::Config,
    fanout::Hub,
    metrics::listener::Readiness,
    net::{self, tls},
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
    /// Where `/metrics`, `/healthz` and `/readyz` are served (HTTP), unless turned off.
    pub metrics_addr: Option<SocketAddr>,
    /// The hub's certificate (DER), which clients pin.
    pub cert: Vec<u8>,
    /// The data directory.
    pub data_dir: PathBuf,
    hub: Arc<Hub>,
    endpoint: quinn::Endpoint,
    shutdown: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
    admin: tokio::task::JoinHandle<()>,
    readiness: Arc<Readiness>,
    /// The metrics listener's own stop: it outlives the rest, so probes see the drain.
    metrics: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

/// Creates the data directory readable by this user alone (0700), or makes an existing one so:
/// it holds the store, the hub's private key and the operator token, and the store's own
/// files are created with the process's umask. A directory opened up to others is closed
/// again, with a warning.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %dir.display(), mode = format!("{:o}", mode & 0o777), "data directory was open to other users; set to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Starts a hub with `config`.
pub async fn start(config: Config) -> Result<RunningHub, StartError> {
    let data_dir = config.data_dir();
    let dir_error = |source| StartError::DataDir { path: data_dir.clone(), source };
    private_dir(&data_dir).map_err(dir_error)?;
    // First, so that a probe sees a hub that is starting (a large store can take a while).
    let readiness = Arc::new(Readiness::default());
    let (metrics, metrics_addr) = match config.metrics.enabled {
        true => {
            let listen = config.metrics.listen;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|source| StartError::Bind { addr: listen, source })?;
            let addr = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr: listen, source })?;
            let (stop, stopped) = watch::channel(false);
            let app = crate::metrics::listener::router(readiness.clone());
            let serving =
                tokio::spawn(admin::serve_plain(listener, app, config.admin.clone(), stopped));
            (Some((stop, serving)), Some(addr))
        }
        false => (None, None),
    };
    let identity = tls::load_or_create_for(&config)?;
    let token = admin::load_or_create_token(&data_dir).map_err(dir_error)?;
    let endpoint = net::bind(&config.quic, &identity)?;
    let quic_addr = endpoint
        .local_addr()
        .map_err(|source| StartError::Bind { addr: config.quic.listen, source })?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.admin.listen, source })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr: config.admin.listen, source })?;
    let card = admin::HubCard {
        name: config.hub.name.clone(),
        domains: config.hub.domains.clone(),
        quic: quic_addr,
        pin: tls::pin(identity.cert.as_ref()),
        certificate: admin::hex(identity.cert.as_ref()),
    };
    let admin_limits = config.admin.clone();
    let hub = open_hub(config).await?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let accepting =
        tokio::spawn(net::accept_loop(hub.clone(), endpoint.clone(), shutdown_rx.clone()));
    crate::links::start(hub.clone(), endpoint.clone(), &identity, shutdown_rx.clone()).await?;
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        hub.clone(),
        token,
        card,
        admin_limits,
        shutdown_rx,
    ));
    readiness.ready(hub.clone());
    tracing::info!(%quic_addr, %admin_addr, ?metrics_addr, data_dir = %data_dir.display(), "hub serving");
    Ok(RunningHub {
        quic_addr,
        admin_addr,
        metrics_addr,
        readiness,
        metrics,
        cert: identity.cert.to_vec(),
        data_dir,
        hub,
        endpoint,
        shutdown,
        accepting,
        admin,
    })
}

/// Opens the store and the hub state, and loads the directory (all of it blocks on RocksDB).
async fn open_hub(config: Config) -> Result<Arc<Hub>, StoreError> {
    let opening = tokio::task::spawn_blocking(move || {
        let store = Arc::new(Store::open(config.store_config(&config.data_dir()))?);
        let hub = Hub::new(store, config)?;
        let users = hub.load_directory()?;
        tracing::info!(users, "directory loaded");
        Ok(hub)
    });
    opening.await.unwrap_or_else(|e| Err(StoreError::TaskFailed(e.to_string())))
}

impl RunningHub {
    /// The shared hub state (store, settings).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Stops the hub: refuses new connections, lets every session finish the commits it
    /// started and close with `shutting-down`, then stops the store. Nothing accepted is lost.
    pub async fn shutdown(self) {
        self.readiness.draining();
        let _ = self.shutdown.send(true);
        // The accept loop returns once every session has ended.
        let _ = self.accepting.await;
        let _ = self.admin.await;
        self.endpoint.close(ErrorCode::SHUTTING_DOWN.0.into(), b"the hub is stopping");
        let _ = tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle()).await;
        let store = self.hub.store().clone();
        let _ = tokio::task::spawn_blocking(move || store.shutdown()).await;
        if let Some((stop, serving)) = self.metrics {
            let _ = stop.send(true);
            let _ = serving.await;
        }
        tracing::info!("hub stopped");
    }
}
