//! `hub` and `hub serve`: run the hub until SIGINT or SIGTERM, then stop it in order.

use sd_notify::NotifyState;
use switchboard_hub::{
    config::{Config, LogFormat},
    server,
};

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub(crate) async fn serve(config: Config) -> anyhow::Result<()> {
    init_logs(&config);
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
        "hub serving: QUIC {} · admin http://{} · metrics {metrics} · data {}",
        hub.quic_addr,
        hub.admin_addr,
        hub.data_dir.display()
    );
    // systemd (Type=notify): ready once the store is open and every listener bound.
    let status = format!("serving QUIC {} · admin {}", hub.quic_addr, hub.admin_addr);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let watchdog = sd_notify::watchdog_enabled().map(|every| tokio::spawn(watchdog(every)));
    wait_for_signal().await?;
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

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
