//! Reloading a running hub's configuration: SIGHUP and `hub reload` apply what is safe live
//! (here the backlog limit, which the next send meets), report what needs a restart without
//! applying it, and change nothing when the file does not parse.

mod common;

use std::process::Command;

use common::*;
use switchboard_hub::client::Event;
use switchboard_protocol::Address;

/// `hub reload` against the hub: (success, stdout and stderr).
fn hub_reload(hub: &HubProcess, config: &std::path::Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hub"))
        .arg("--config")
        .arg(config)
        .args(["--data-dir", hub.data_dir.to_str().unwrap(), "reload"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Sends one message to `to` and returns whether it was accepted (else the reject reason).
async fn try_send(
    client: &mut switchboard_hub::client::Client,
    to: &Address,
) -> Result<(), String> {
    client.send_text(to, "hello").await.unwrap();
    loop {
        match next(client, 20).await {
            Event::Accepted(_) => return Ok(()),
            Event::Rejected(rejected) => return Err(rejected.reason.to_string()),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_hub_reload_apply_live_keys_and_report_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = "[store]\nbacklog_limit = 1000000\n";
    let hub = HubProcess::start_configured(&data, base);
    let config = data.join("hub.toml");
    // The admin API's address for the CLI: the file names it.
    let with_admin = |text: &str| format!("{text}[admin]\nlisten = \"{}\"\n", hub.admin);
    std::fs::write(&config, with_admin(base)).unwrap();

    let sender = hub.enrol("ann@example.org", "laptop").await;
    hub.enrol("bob@example.org", "phone").await;
    let bob = Address::parse("bob@example.org").unwrap();
    let mut ann = connect(&sender).await;
    for _ in 0..3 {
        try_send(&mut ann, &bob).await.unwrap();
    }

    // SIGHUP with a backlog limit of 3: bob's queue holds 3 already, the next is refused.
    std::fs::write(&config, with_admin("[store]\nbacklog_limit = 3\n")).unwrap();
    let pid = hub.pid();
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match try_send(&mut ann, &bob).await {
            Err(reason) => {
                assert_eq!(reason, "recipient-backlog-full");
                break;
            }
            // The signal may not have been handled yet; a message more is within the old limit.
            Ok(()) => assert!(std::time::Instant::now() < deadline, "the reload never applied"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // `hub reload`: the limit raised again applies; a QUIC setting and the log level do not.
    std::fs::write(
        &config,
        with_admin(
            "[store]\nbacklog_limit = 100\n[quic]\nidle_timeout_secs = 99\n[log]\nlevel = \"debug\"\n",
        ),
    )
    .unwrap();
    let (ok, said) = hub_reload(&hub, &config);
    assert!(ok, "{said}");
    assert!(said.contains("applied:       store backlog_limit 100"), "{said}");
    assert!(said.contains("needs restart: quic"), "{said}");
    // The test's hubs run with RUST_LOG set, which takes precedence over the file.
    assert!(said.contains("refused:       log level \"debug\": RUST_LOG is set"), "{said}");
    try_send(&mut ann, &bob).await.expect("the raised limit is in force");

    // A peer added to the file is linked; taken out again, it is removed.
    let peer = format!(
        "[[peers]]\nname = \"elsewhere\"\naddress = \"127.0.0.91:9\"\npin = \"{}\"\ndomains = [\"elsewhere.example\"]\n",
        "ab".repeat(32)
    );
    let kept =
        "[store]\nbacklog_limit = 100\n[quic]\nidle_timeout_secs = 99\n[log]\nlevel = \"debug\"\n";
    std::fs::write(&config, with_admin(&format!("{kept}{peer}"))).unwrap();
    let (ok, said) = hub_reload(&hub, &config);
    assert!(ok && said.contains("applied:       peer elsewhere added"), "{said}");
    let peers = hub.admin_client().request("GET", "/v1/peers", None).await.unwrap();
    assert!(peers.as_array().unwrap().iter().any(|p| p["name"] == "elsewhere"), "{peers}");
    std::fs::write(&config, with_admin(kept)).unwrap();
    let (ok, said) = hub_reload(&hub, &config);
    assert!(ok && said.contains("applied:       peer elsewhere removed"), "{said}");
    let peers = hub.admin_client().request("GET", "/v1/peers", None).await.unwrap();
    assert!(peers.as_array().unwrap().iter().all(|p| p["name"] != "elsewhere"), "{peers}");

    // A file that does not parse changes nothing.
    std::fs::write(&config, with_admin("[store]\nbacklog_limit = \"lots\"\n")).unwrap();
    let refused = hub.admin_client().reload().await.unwrap_err().to_string();
    assert!(refused.contains("nothing was changed"), "{refused}");
    try_send(&mut ann, &bob).await.expect("the limit of 100 is still in force");
    let mut hub = hub;
    assert!(hub.terminate());
}
