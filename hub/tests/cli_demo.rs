//! The README's demo through the real `hub` binary: add a user with a device, listen, send.

mod common;

use std::process::{Command, Stdio};

use common::HubProcess;

#[test]
fn user_add_listen_and_send_work_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hub = HubProcess::start(&data);
    // The CLI finds the hub through a configuration naming the addresses this hub bound.
    let config = dir.path().join("hub.toml");
    std::fs::write(
        &config,
        format!("[quic]\nlisten = \"{}\"\n[admin]\nlisten = \"{}\"\n", hub.quic, hub.admin),
    )
    .unwrap();
    let identity = dir.path().join("alice.toml");
    let hub_cmd = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hub"));
        command
            .args(["--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
            .env("SWITCHBOARD_IDENTITY", &identity)
            .env("RUST_LOG", "warn");
        command
    };

    let added = hub_cmd()
        .args(["user", "add", "alice@example.org", "--device", "desktop"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    assert!(String::from_utf8_lossy(&added.stdout).contains("enrolled alice@example.org/desktop"));

    let listener = hub_cmd()
        .args(["listen", "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for text in ["first words", "second words"] {
        let sent = hub_cmd().args(["send", "--to", "alice@example.org", text]).output().unwrap();
        assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
        assert!(String::from_utf8_lossy(&sent.stdout).starts_with("accepted "));
    }
    let out = listener.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    let first = printed.find("alice@example.org -> alice@example.org: first words").unwrap();
    let second = printed.find("alice@example.org -> alice@example.org: second words").unwrap();
    assert!(first < second, "{printed}");

    // Listing shows the user and the device; an unknown recipient is a clear error.
    let users = hub_cmd().args(["user", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&users.stdout).contains("alice@example.org"));
    let devices = hub_cmd().args(["device", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&devices.stdout).contains("alice@example.org/desktop\tactive"));
    let refused = hub_cmd().args(["send", "--to", "nobody@example.org", "x"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown-recipient"));

    // Devices whose keys the operator holds are registered from a file; a bad line is named
    // and fails the command, the good ones are registered.
    let key = |name: &str| {
        let address = switchboard_protocol::Address::parse(name).unwrap();
        let identity =
            switchboard_hub::client::DeviceIdentity::generate(address, hub.quic, vec![]).unwrap();
        switchboard_hub::admin::hex(&identity.public_key())
    };
    let list = dir.path().join("devices.txt");
    std::fs::write(
        &list,
        format!(
            "# provisioned\nbea@example.org/phone {}\nbea@example.org/tablet nothex\n",
            key("bea@example.org/phone")
        ),
    )
    .unwrap();
    let registered = hub_cmd()
        .args(["device", "register", list.to_str().unwrap(), "--add-users"])
        .output()
        .unwrap();
    assert!(!registered.status.success());
    assert!(
        String::from_utf8_lossy(&registered.stdout).contains("registered 1 devices, refused 1")
    );
    assert!(String::from_utf8_lossy(&registered.stderr).contains("bea@example.org/tablet: "));
    let devices = hub_cmd().args(["device", "list", "--user", "bea@example.org"]).output().unwrap();
    let listed = String::from_utf8_lossy(&devices.stdout);
    assert!(listed.contains("bea@example.org/phone\tactive") && !listed.contains("tablet"));
}

#[test]
fn config_default_prints_a_file_the_hub_accepts() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_hub")).args(["config", "--default"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[quic]") && text.contains("listen = \"127.0.0.1:7447\""));
    let parsed = switchboard_hub::config::Config::parse(&text).unwrap();
    assert_eq!(parsed, switchboard_hub::config::Config::default());
}

#[test]
fn org_commands_set_up_a_department_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hub = HubProcess::start(&data);
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, format!("[admin]\nlisten = \"{}\"\n", hub.admin)).unwrap();
    let run = |args: &[&str], token: Option<&str>| -> Result<String, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hub"));
        command.args(["--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
        command.args(args).env_remove("SWITCHBOARD_TOKEN");
        if let Some(token) = token {
            command.env("SWITCHBOARD_TOKEN", token);
        }
        let out = command.output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(String::from_utf8(out.stderr).unwrap())
        }
    };
    let created = run(
        &["org", "create", "Example", "--owner", "max@example.org", "--domain", "example.org"],
        None,
    );
    assert!(created.unwrap_err().contains("--line"), "the main line is required");
    let created = run(
        &[
            "org",
            "create",
            "Example",
            "--owner",
            "max@example.org",
            "--domain",
            "example.org",
            "--line",
            "main@example.org",
            "--seats",
            "5",
        ],
        None,
    )
    .unwrap();
    let event: serde_json::Value = serde_json::from_str(&created).unwrap();
    let org = event["change"]["data"]["org"]["id"].as_u64().unwrap().to_string();
    let root = event["change"]["data"]["root"]["id"].as_u64().unwrap().to_string();

    // Tokens are made only for users of the hub.
    assert!(run(&["org", "token", "ann@example.org"], None).unwrap_err().contains("unknown user"));
    run(&["user", "add", "max@example.org"], None).unwrap();
    run(&["user", "add", "ann@example.org"], None).unwrap();
    let max = run(&["org", "token", "max@example.org"], None).unwrap();
    let ann = run(&["org", "token", "ann@example.org"], None).unwrap();
    let (max, ann) = (Some(max.trim()), Some(ann.trim()));
    let unit =
        run(&["org", "unit", "--org", &org, "--parent", &root, "Sales", "sales@example.org"], max)
            .unwrap();
    let unit: serde_json::Value = serde_json::from_str(&unit).unwrap();
    let sales = unit["change"]["data"]["id"].as_u64().unwrap().to_string();
    run(&["org", "register", "--org", &org], ann).unwrap();
    // Ann may not approve herself: the rule is named.
    let refused = run(&["org", "approve", "--org", &org, "ann@example.org"], ann).unwrap_err();
    assert!(refused.contains("admins approve registrations"), "{refused}");
    run(&["org", "approve", "--org", &org, "ann@example.org"], max).unwrap();
    run(&["org", "assign", "--org", &org, "--unit", &sales, "ann@example.org"], max).unwrap();
    let directory = run(&["org", "directory"], ann).unwrap();
    assert!(directory.contains("sales@example.org") && directory.contains("ann@example.org"));
    let events = run(&["org", "events"], None).unwrap();
    assert_eq!(events.lines().count(), 5, "{events}");
}
