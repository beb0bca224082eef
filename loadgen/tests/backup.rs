//! A backup of a live hub under loadgen traffic, restored into a new hub: every message
//! accepted before the backup began is there once, in order, every cursor where it was; what
//! was accepted after the backup finished is not; the traffic around the backup loses,
//! duplicates and reorders nothing.
//!
//! The exact check runs on probe users the test drives itself (a sender, and a reader with two
//! devices: one that has acknowledged part of its queue, one never connected); loadgen's load
//! runs meanwhile and is checked by loadgen.

use std::{net::SocketAddr, path::Path, time::Duration};

use bytes::Bytes;
use switchboard_hub::{
    admin::{DeviceKey, hex},
    client::{Client, DeviceIdentity, Event, admin::AdminClient, client_endpoint},
    config::Config,
    server::{self, RunningHub},
};
use switchboard_loadgen::{
    hub_target::HubTarget,
    run::{Arrivals, BodySize, Options, Target, Workload, run},
};
use switchboard_protocol::{Address, Flags, MessageId};

const HUB_A: [u8; 4] = [127, 0, 0, 88];
const HUB_B: [u8; 4] = [127, 0, 0, 89];
/// Probe messages sent before the backup, of which the first reader acknowledges some.
const BEFORE: usize = 200;
const ACKED: u64 = 120;
/// Probe messages sent after the backup.
const AFTER: usize = 50;

async fn start(config_file: &Path, data_dir: &Path, host: [u8; 4]) -> RunningHub {
    let mut config = Config::load(config_file).unwrap();
    config.data_dir = data_dir.to_path_buf();
    config.quic.listen = SocketAddr::from((host, 0));
    config.admin.listen = SocketAddr::from((host, 0));
    config.metrics.listen = SocketAddr::from((host, 0));
    server::start(config).await.unwrap()
}

fn operator(hub: &RunningHub) -> AdminClient {
    let token = std::fs::read_to_string(hub.data_dir.join("admin.token")).unwrap();
    AdminClient::new(hub.admin_addr, token.trim().to_string())
}

/// Connects `identity` to `hub` (the identity's address and pinned certificate replaced).
async fn connect(identity: &DeviceIdentity, hub: &RunningHub) -> Client {
    let mut identity = identity.clone();
    identity.hub = hub.quic_addr;
    identity.hub_cert = hub.cert.clone();
    Client::connect(&client_endpoint().unwrap(), &identity, None).await.unwrap()
}

/// Sends `count` probe messages and waits for every `accepted`; their ids in order.
async fn send_probes(sender: &mut Client, to: &Address, count: usize) -> Vec<MessageId> {
    let handle = sender.handle();
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let envelope = handle.envelope(to, Bytes::from(format!("probe {n}")), Flags::NONE);
        ids.push(envelope.id);
        handle.send(envelope).await.unwrap();
    }
    let mut accepted = 0;
    while accepted < count {
        match tokio::time::timeout(Duration::from_secs(30), sender.next_event()).await {
            Ok(Some(Event::Accepted(_))) => accepted += 1,
            Ok(Some(Event::Deliver(_) | Event::Receipt(_))) => {}
            other => panic!("waiting for accepted: {other:?}"),
        }
    }
    ids
}

/// What `client` is delivered from `queue` until nothing comes for a second: (seq, id).
async fn drain(client: &mut Client, queue: &Address) -> Vec<(u64, MessageId)> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), client.next_event()).await {
            Err(_) => return got,
            Ok(Some(Event::Deliver(deliver))) if &deliver.queue == queue => {
                got.push((deliver.seq, deliver.envelope.id));
            }
            Ok(Some(Event::Deliver(_) | Event::Receipt(_) | Event::Accepted(_))) => {}
            other => panic!("while draining: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_message_accepted_before_it_once_with_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("hub.toml");
    std::fs::write(&config_file, "[hub]\nname = \"backup-test\"\n").unwrap();
    let hub_a = start(&config_file, &dir.path().join("a"), HUB_A).await;
    let admin_a = operator(&hub_a);

    // The probes: a sender, and a reader with two devices.
    let domain = "probe.loadgen";
    let reader = Address::parse(&format!("reader@{domain}")).unwrap();
    let identity = |name: &str| {
        DeviceIdentity::generate(Address::parse(name).unwrap(), hub_a.quic_addr, hub_a.cert.clone())
            .unwrap()
    };
    let sender_id = identity(&format!("sender@{domain}/d"));
    let reader_1 = identity(&format!("reader@{domain}/r1"));
    let reader_2 = identity(&format!("reader@{domain}/r2"));
    let keys: Vec<DeviceKey> = [&sender_id, &reader_1, &reader_2]
        .iter()
        .map(|i| DeviceKey {
            name: i.address.as_str().to_string(),
            public_key: hex(&i.public_key()),
            kind: None,
        })
        .collect();
    admin_a.register_devices(&keys, true).await.unwrap();

    // Loadgen's traffic, before, during and after the backup.
    let options = Options {
        target: Target::Hubs(vec![HubTarget {
            hub: hub_a.quic_addr,
            admin: hub_a.admin_addr,
            token: std::fs::read_to_string(hub_a.data_dir.join("admin.token"))
                .unwrap()
                .trim()
                .into(),
            cert: hub_a.cert.clone(),
            gso: true,
        }]),
        workload: Workload::OneToOne,
        users: 50,
        devices: 2,
        rate: 300.0,
        arrivals: Arrivals::Constant,
        warmup: Duration::from_millis(200),
        server_pid: None,
        duration: Duration::from_secs(5),
        body: BodySize::Fixed(200),
        offline: 0.2,
        churn: 0.0,
        idle: 0,
        run_name: "backup".into(),
        progress: false,
        hub_restarts: false,
        journal: None,
    };
    // The probes and the backup run while loadgen does (its run is not a task of its own:
    // both share this one).
    let probes = async {
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Before the backup: the probes are accepted, and the first reader acknowledges some.
        let mut sender = connect(&sender_id, &hub_a).await;
        let before = send_probes(&mut sender, &reader, BEFORE).await;
        let mut first = connect(&reader_1, &hub_a).await;
        let seen = drain(&mut first, &reader).await;
        assert_eq!(seen.len(), BEFORE);
        first.handle().ack(reader.clone(), ACKED, Vec::new()).await.unwrap();
        let store = hub_a.hub().store().clone();
        let queue = store.queue_id(reader.as_str()).unwrap().unwrap();
        let device = hub_a.hub().store().device_record(reader_1.address.as_str()).unwrap().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.cursor(queue, device.device).unwrap().acked < ACKED {
            assert!(std::time::Instant::now() < deadline, "the ack never reached the store");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // The backup, under load.
        let report = admin_a.backup(Some("under-load")).await.unwrap();
        assert!(report.config, "{report:?}");
        assert!(report.store_bytes > 0, "{report:?}");
        assert_eq!(report.hub, "backup-test");
        // The same name again is refused; so is a name that is a path; so is a user's token.
        let again = admin_a.backup(Some("under-load")).await.unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
        let path = admin_a.backup(Some("../escape")).await.unwrap_err();
        assert!(path.to_string().contains("backup name"), "{path}");
        let user = AdminClient::new(
            hub_a.admin_addr,
            admin_a.new_token("sender@probe.loadgen").await.unwrap(),
        );
        assert!(user.backup(Some("by-a-user")).await.is_err());
        assert!(!dir.path().join("a/backups/by-a-user").exists());

        // After it: more probes, and the first reader takes everything.
        let after = send_probes(&mut sender, &reader, AFTER).await;
        let rest = drain(&mut first, &reader).await;
        assert_eq!(rest.len(), AFTER);
        first.handle().ack(reader.clone(), (BEFORE + AFTER) as u64, Vec::new()).await.unwrap();
        sender.close().await;
        first.close().await;
        (report, before, after)
    };
    let (report_load, (report, before, after)) = tokio::join!(run(options), probes);
    let report_load = report_load.unwrap();
    assert!(report_load.verdict.is_clean(), "{:?}", report_load.verdict);
    assert_eq!(report_load.rejected + report_load.failed, 0, "{report_load:?}");
    let users_a = admin_a.users().await.unwrap().len();
    let cert_a = hub_a.cert.clone();
    hub_a.shutdown().await;

    // Restore into a new data directory and start a hub on it elsewhere.
    let data_b = dir.path().join("b");
    let restored = switchboard_hub::backup::restore(Path::new(&report.dir), &data_b).unwrap();
    assert_eq!(restored.users, users_a, "every user of the backup is restored");
    let restored_config = restored.config.expect("the configuration file was in the backup");
    assert_eq!(
        std::fs::read_to_string(&restored_config).unwrap(),
        std::fs::read_to_string(&config_file).unwrap()
    );
    // Into a data directory that has a store: refused.
    let refused = switchboard_hub::backup::restore(Path::new(&report.dir), &data_b).unwrap_err();
    assert!(refused.to_string().contains("already holds a store"), "{refused}");

    let hub_b = start(&restored_config, &data_b, HUB_B).await;
    assert_eq!(hub_b.cert, cert_a, "the restored hub has the same certificate");
    // The operator token came along.
    assert_eq!(operator(&hub_b).users().await.unwrap().len(), users_a);

    // The first reader is handed what follows its cursor at the backup, once, in order.
    let mut first = connect(&reader_1, &hub_b).await;
    let got = drain(&mut first, &reader).await;
    let expected: Vec<(u64, MessageId)> =
        (ACKED + 1..=BEFORE as u64).map(|seq| (seq, before[seq as usize - 1])).collect();
    assert_eq!(got, expected, "the first reader after the restore");
    // The second, never connected before, gets every probe accepted before the backup.
    let mut second = connect(&reader_2, &hub_b).await;
    let got = drain(&mut second, &reader).await;
    let expected: Vec<(u64, MessageId)> =
        before.iter().enumerate().map(|(i, id)| (i as u64 + 1, *id)).collect();
    assert_eq!(got, expected, "the second reader after the restore");
    // Nothing accepted after the backup is there.
    assert!(got.iter().all(|(_, id)| !after.contains(id)));
    // The restored hub takes new messages after the restored ones.
    let mut sender = connect(&sender_id, &hub_b).await;
    send_probes(&mut sender, &reader, 1).await;
    let next = drain(&mut second, &reader).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, BEFORE as u64 + 1, "sequences go on from the backup's");
    hub_b.shutdown().await;
}
