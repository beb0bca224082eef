//! `hub` and `hub serve`: run the hub until SIGINT or SIGTERM, then stop it in order.

use sd_notify::NotifyState;
use switchboard_hub::{
    config::{Config, LogFormat},
    reload::{LogFilter, ReloadHooks},
    server,
};

/// Starts logging to stderr; the answer sets a new filter (a reload), unless `RUST_LOG`, which
/// takes precedence, is set.
fn init_logs(config: &Config) -> LogFilter {
    use tracing_subscriber::{EnvFilter, fmt, prelude::*, reload};
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&config.log.level));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match config.log.format {
        LogFormat::Human => registry.with(fmt::layer().with_writer(std::io::stderr)).init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).init(),
    }
    Box::new(move |level: &str| {
        if pinned {
            return Err("RUST_LOG is set and takes precedence".into());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| format!("not a log filter: {e}"))?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// Serves `config`; `overrides` are the command line's, applied again to the file at a reload.
pub(crate) async fn serve(
    config: Config,
    overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
) -> anyhow::Result<()> {
    let log_filter = init_logs(&config);
    let hub = match server::start(config).await {
        Ok(hub) => hub,
        Err(error) => {
            notify(&[NotifyState::Status(&format!("failed to start: {error}"))]);
            return Err(error.into());
        }
    };
    let metrics = match hub.metrics_addr {
        Some(addr) => format!("http://{addr}"),
        None => "off".into(),
    };
    eprintln!(
        "hub serving: QUIC {} · admin http://{} · metrics {metrics} · data {} · console http://{}/console",
        hub.quic_addr,
        hub.admin_addr,
        hub.data_dir.display(),
        hub.admin_addr,
    );
    hub.hub().set_reload_hooks(ReloadHooks { overrides, log_filter });
    // systemd (Type=notify): ready once the store is open and every listener bound.
    let status = format!("serving QUIC {} · admin {}", hub.quic_addr, hub.admin_addr);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let watchdog = sd_notify::watchdog_enabled().map(|every| tokio::spawn(watchdog(every)));
    wait_for_signal(hub.hub()).await?;
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing commits in progress"),
    ]);
    tracing::info!("stopping: no new connections; finishing commits in progress");
    // Pings go on while the hub stops: a long drain is not a hang.
    hub.shutdown().await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    Ok(())
}

/// Tells systemd (when it started the hub with `NOTIFY_SOCKET`) where the hub stands. A
/// failure is logged, never fatal: the hub serves whether or not anyone listens.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify the service manager");
    }
}

/// Pings systemd's watchdog (`WatchdogSec=`) at half its period, from the runtime that serves
/// devices: a runtime that stops scheduling tasks stops the pings, and systemd restarts the
/// hub.
async fn watchdog(every: std::time::Duration) {
    let mut tick = tokio::time::interval(every / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}

/// Waits for SIGTERM or SIGINT; reloads the configuration at each SIGHUP meanwhile.
async fn wait_for_signal(hub: &std::sync::Arc<switchboard_hub::fanout::Hub>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                notify(&[NotifyState::Reloading]);
                if let Err(error) = hub.reload_from_file().await {
                    tracing::warn!(%error, "reload refused");
                }
                notify(&[NotifyState::Ready]);
            }
        }
    }
}
