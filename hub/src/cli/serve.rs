//! `hub` and `hub serve`: run the hub until SIGINT or SIGTERM, then stop it in order.

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
    let hub = server::start(config).await?;
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
    wait_for_signal().await?;
    tracing::info!("stopping: no new connections; finishing commits in progress");
    hub.shutdown().await;
    Ok(())
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
