//! The hub under systemd: the notify protocol spoken through a real `NOTIFY_SOCKET` (READY once
//! the listeners answer, watchdog pings at half of `WATCHDOG_USEC`, STOPPING on SIGTERM), and
//! the unit file in deploy/systemd checked by `systemd-analyze verify`.

use std::{
    net::TcpStream,
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The datagrams received on `socket` until `until` holds for one, or the time is up.
fn receive_until(
    socket: &UnixDatagram,
    within: Duration,
    until: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket.set_read_timeout(Some(deadline - Instant::now())).unwrap();
        let Ok(n) = socket.recv(&mut buf) else { break };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let done = until(&text);
        got.push(text);
        if done {
            break;
        }
    }
    got
}

#[test]
fn the_hub_notifies_ready_pings_the_watchdog_and_notifies_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut hub = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["--data-dir", dir.path().join("data").to_str().unwrap(), "serve"])
        .args(["--listen", "127.0.0.87:0", "--admin-listen", "127.0.0.87:0"])
        .args(["--metrics-listen", "127.0.0.87:0"])
        .env("NOTIFY_SOCKET", &socket_path)
        // 400 ms: a ping every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let ready = receive_until(&socket, Duration::from_secs(60), |m| m.contains("READY=1"));
    let ready = ready.last().expect("a notification").clone();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // The status names the admin address, which answers already: READY follows the binds.
    let status = ready.lines().find_map(|l| l.strip_prefix("STATUS=")).expect("a status");
    let admin = status.split("admin ").nth(1).unwrap().trim();
    TcpStream::connect(admin).expect("the admin API is up when READY is sent");

    // Watchdog pings, about every 200 ms: five within the ten seconds allowed.
    let pings = receive_until(&socket, Duration::from_secs(10), {
        let count = std::cell::Cell::new(0);
        move |m| {
            if m.trim() == "WATCHDOG=1" {
                count.set(count.get() + 1);
            }
            count.get() >= 5
        }
    });
    assert_eq!(pings.iter().filter(|m| m.trim() == "WATCHDOG=1").count(), 5, "{pings:?}");

    let status = Command::new("kill").args(["-TERM", &hub.id().to_string()]).status().unwrap();
    assert!(status.success());
    let stopping = receive_until(&socket, Duration::from_secs(30), |m| m.contains("STOPPING=1"));
    assert!(
        stopping.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "no STOPPING=1 in {stopping:?}"
    );
    assert!(hub.wait().unwrap().success());
}

#[test]
fn a_hub_that_cannot_start_tells_systemd_why_and_never_says_ready() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // The admin port is taken: the hub cannot bind it.
    let taken = std::net::TcpListener::bind("127.0.0.87:0").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["--data-dir", dir.path().join("data").to_str().unwrap(), "serve"])
        .args(["--listen", "127.0.0.87:0", "--metrics-listen", "127.0.0.87:0"])
        .args(["--admin-listen", &taken.local_addr().unwrap().to_string()])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let got = receive_until(&socket, Duration::from_secs(2), |_| false);
    assert!(got.iter().all(|m| !m.contains("READY=1")), "{got:?}");
    assert!(
        got.iter().any(|m| m.starts_with("STATUS=failed to start: cannot listen on")),
        "{got:?}"
    );
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/switchboard.service"
    ))
    .unwrap();
    // `verify` checks that ExecStart's program exists: point it at the binary under test.
    assert!(unit.contains("ExecStart=/usr/local/bin/hub "), "the unit runs /usr/local/bin/hub");
    let unit = unit.replace("/usr/local/bin/hub", env!("CARGO_BIN_EXE_hub"));
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=switchboard",
        "User=switchboard",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=",
        "LimitNOFILE=",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
