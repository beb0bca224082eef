//! A short loadgen run against a real hub (started in this process: real QUIC on 127.0.0.1,
//! real RocksDB on disk): hundreds of devices, some offline while messages are sent, and the
//! checker must find nothing lost, duplicated or reordered.

use std::{net::SocketAddr, time::Duration};

use switchboard_hub::{config::Config, net};
use switchboard_loadgen::run::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_with_offline_devices_loses_duplicates_and_reorders_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.quic.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let hub = net::start(config).await.unwrap();
    let options = Options {
        hub: hub.quic_addr,
        admin: hub.admin_addr,
        token: std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().into(),
        cert: hub.cert.clone(),
        users: 100,
        devices: 3,
        rate: 500.0,
        duration: Duration::from_secs(3),
        body: 256,
        offline: 0.2,
        gso: true,
        domain: "short.loadgen".into(),
    };
    let report = run(options).await.unwrap();
    hub.shutdown().await;
    assert!(report.accepted > 1_000, "{report:?}");
    assert_eq!(report.rejected, 0, "{report:?}");
    assert!(report.verdict.is_clean(), "{:?}", report.verdict);
    // Every accepted message reached 3 devices (a message to oneself) or 6.
    assert!(report.delivered >= report.accepted * 3, "{report:?}");
}
