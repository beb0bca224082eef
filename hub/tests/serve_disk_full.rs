//! A hub whose data directory is on a small filesystem (a tmpfs of its own, mounted by the
//! test) that another process fills: senders get `disk-full`, what was accepted before is
//! delivered, acknowledgements go on, and once space returns the hub accepts again without a
//! restart; after a SIGKILL the store opens and loses nothing. Needs root (to mount); as
//! another user the test says so and passes without running.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use switchboard_hub::client::{Client, Event};
use switchboard_protocol::{Address, RejectReason};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed (root is needed)");
        Self(path.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Sends `text` and waits for its answer: `Ok` when accepted, the reason when rejected.
async fn send(client: &mut Client, to: &Address, text: &str) -> Result<(), RejectReason> {
    let id = client.send_text(to, text).await.unwrap();
    loop {
        match next(client, 20).await {
            Event::Accepted(accepted) if accepted == id => return Ok(()),
            Event::Rejected(rejected) if rejected.id == id => return Err(rejected.reason),
            Event::Closed { code, reason } => panic!("closed: {code}: {reason}"),
            _ => {}
        }
    }
}

/// Fills the filesystem of `dir` with a file until a write fails for want of space.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => panic!("filling: {error}"),
        }
    }
    let _ = file.flush();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_messages_keeps_acks_going_and_recovers_without_a_restart() {
    if !is_root() {
        eprintln!("serve_disk_full: not root, cannot mount a tmpfs; not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = Mount::new(&dir.path().join("small"), "192m");
    let config = "[store]\nmin_free_bytes = 16777216\nreserve_bytes = 16777216\nmemtable_mib = 8\n";
    let mut hub = HubProcess::start_configured(&small.0.join("data"), config);
    let alice = hub.enrol("alice@example.org", "phone").await;
    let bob = hub.enrol("bob@example.org", "phone").await;
    let to_bob = Address::parse("bob@example.org").unwrap();
    let body = |n: usize| format!("{n:06}:{}", "x".repeat(60_000));
    let mut sender = connect(&alice).await;
    let mut reader = connect(&bob).await;
    let mut accepted = Vec::new();
    for n in 0..10 {
        send(&mut sender, &to_bob, &body(n)).await.unwrap();
        accepted.push(body(n));
    }
    let mut received = receive(&mut reader, 5).await;

    // Another process fills the disk; the hub refuses new messages with disk-full.
    let filler = small.0.join("filler");
    fill(&filler);
    let mut refused = 0;
    for n in 10..400 {
        match send(&mut sender, &to_bob, &body(n)).await {
            Ok(()) => accepted.push(body(n)),
            Err(reason) => {
                assert_eq!(reason, RejectReason::DISK_FULL);
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
        }
    }
    assert_eq!(refused, 3, "no disk-full after {} accepted", accepted.len());
    // While it is full, everything accepted is delivered and acknowledged.
    received.extend(receive(&mut reader, accepted.len() - received.len()).await);
    assert_eq!(received, accepted);
    assert_eq!(send(&mut sender, &to_bob, "still full").await, Err(RejectReason::DISK_FULL));
    // The acks are stored while the disk is full: soon a new session of bob's gets nothing
    // again. (An ack whose write found no space is written again within a second or so;
    // until then a new session is sent again what it covers, as delivery is at least once.)
    let mut quiet = false;
    for _ in 0..10 {
        reader.close().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        reader = connect(&bob).await;
        let again = tokio::time::timeout(Duration::from_millis(1_500), async {
            loop {
                if let Event::Deliver(deliver) = next(&mut reader, 60).await {
                    return deliver;
                }
            }
        });
        match again.await {
            Err(_) => {
                quiet = true;
                break;
            }
            Ok(deliver) => {
                let body = String::from_utf8(deliver.envelope.body.to_vec()).unwrap();
                assert!(accepted.contains(&body), "never accepted: {body:.12}");
            }
        }
    }
    assert!(quiet, "acknowledged messages still came again 25 s into the full disk");
    assert_eq!(send(&mut sender, &to_bob, "still full").await, Err(RejectReason::DISK_FULL));

    // Space returns: the hub takes messages again, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 1_000;
    loop {
        match send(&mut sender, &to_bob, &body(n)).await {
            Ok(()) => {
                accepted.push(body(n));
                break;
            }
            Err(reason) => assert_eq!(reason, RejectReason::DISK_FULL),
        }
        assert!(Instant::now() < deadline, "still refusing 60 s after space returned");
        tokio::time::sleep(Duration::from_millis(250)).await;
        n += 1;
    }
    for n in 2_000..2_010 {
        send(&mut sender, &to_bob, &body(n)).await.unwrap();
        accepted.push(body(n));
    }
    received.extend(receive(&mut reader, accepted.len() - received.len()).await);
    assert_eq!(received, accepted, "each accepted message once, in order");

    // After a SIGKILL the store opens and serves on. An ack still on its way when the hub was
    // killed may bring its message again (delivery is at least once); nothing else comes.
    sender.close().await;
    reader.close().await;
    hub.restart();
    let mut sender = connect(&alice).await;
    let mut reader = connect(&bob).await;
    send(&mut sender, &to_bob, "after the restart").await.unwrap();
    loop {
        let [got] = &receive(&mut reader, 1).await[..] else { unreachable!() };
        if got == "after the restart" {
            break;
        }
        assert!(accepted.contains(got), "delivered after the restart: {got:.12}");
    }
    drop(hub);
}
