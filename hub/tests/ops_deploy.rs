//! The deployment files under deploy/ (Containerfile, compose.yaml, Kubernetes manifests, the
//! systemd unit) against the binary they run: every hub command line in them is run through
//! the hub's own argument parser with its configuration file; the ports they publish and probe
//! are the ones the configuration listens on; the Kubernetes manifests pass kubernetes-validate
//! (strict, with the schemas it ships). Images cannot be built or pulled here, so this is what
//! keeps the files true.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use switchboard_hub::config::Config;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap()
}

/// Every JSON array that follows `key` on a line of `text` (`CMD [...]`, `args: [...]`).
fn arrays_after(text: &str, key: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix(key)?;
            let start = rest.find('[')?;
            Some(serde_json::from_str(rest[start..].trim()).expect("a JSON array of strings"))
        })
        .collect()
}

/// Runs the hub with a command line taken from a deployment file: paths inside the image are
/// mapped to files here, `serve` and `ready` become `config` (which parses the same global
/// options and loads the configuration file, then prints it), and the subcommand is checked to
/// exist. Returns the configuration the hub printed.
fn check_command_line(args: &[String], config_file: &Path, what: &str) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut mapped = Vec::new();
    let mut subcommand = None;
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--config" => {
                iter.next().expect("--config takes a file");
                mapped.push("--config".to_string());
                mapped.push(config_file.display().to_string());
            }
            "--data-dir" => {
                iter.next().expect("--data-dir takes a directory");
                mapped.push("--data-dir".to_string());
                mapped.push(data.path().display().to_string());
            }
            flag if flag.starts_with("--") => mapped.push(flag.to_string()),
            sub => {
                subcommand = Some(sub.to_string());
                assert!(iter.peek().is_none(), "{what}: arguments after the subcommand {sub}");
            }
        }
    }
    let subcommand = subcommand.unwrap_or_else(|| panic!("{what}: no subcommand in {args:?}"));
    let help = Command::new(env!("CARGO_BIN_EXE_hub")).args([&subcommand, "--help"]).output();
    assert!(help.unwrap().status.success(), "{what}: the hub has no subcommand {subcommand}");
    let output =
        Command::new(env!("CARGO_BIN_EXE_hub")).args(&mapped).arg("config").output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{what}: hub {mapped:?} config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    said
}

#[test]
fn the_containerfile_runs_the_hub_with_options_it_has_and_exposes_its_ports() {
    let file = read("Containerfile");
    let config_file = deploy("container/hub.toml");
    let config = Config::load(&config_file).unwrap();
    let entrypoint = arrays_after(&file, "ENTRYPOINT");
    assert_eq!(entrypoint, vec![vec!["/usr/local/bin/hub".to_string()]]);
    let cmd: Vec<Vec<String>> =
        arrays_after(&file, "CMD").into_iter().filter(|a| a[0].starts_with("--")).collect();
    assert_eq!(cmd.len(), 1, "one CMD");
    let printed = check_command_line(&cmd[0], &config_file, "CMD");
    assert!(printed.contains("QUIC listen: 0.0.0.0:7447"), "{printed}");
    // The health check runs `hub ready` against the metrics listener.
    let health = arrays_after(&file, "CMD");
    let ready: Vec<&Vec<String>> = health.iter().filter(|a| a.contains(&"ready".into())).collect();
    assert_eq!(ready.len(), 1, "one health check running `hub ready`: {health:?}");
    assert_eq!(ready[0][0], "/usr/local/bin/hub");
    assert!(file.contains("HEALTHCHECK "), "a HEALTHCHECK");
    check_command_line(&ready[0][1..], &config_file, "HEALTHCHECK");
    // EXPOSE names the configuration's ports.
    let expose = file.lines().find_map(|l| l.strip_prefix("EXPOSE ")).expect("EXPOSE");
    let ports = [
        format!("{}/udp", config.quic.listen.port()),
        format!("{}/tcp", config.admin.listen.port()),
        format!("{}/tcp", config.metrics.listen.port()),
    ];
    for port in &ports {
        assert!(expose.split_whitespace().any(|p| p == port), "EXPOSE lacks {port}");
    }
    assert!(file.contains("USER 10001"), "the image runs as a non-root user");
    assert!(file.contains("VOLUME [\"/var/lib/switchboard\"]"), "the data is a volume");
}

#[test]
fn compose_runs_three_linked_hubs_with_options_the_hub_has() {
    let file = read("compose.yaml");
    let config_file = deploy("container/hub.toml");
    let commands = arrays_after(&file, "command:");
    assert_eq!(commands.len(), 3, "three hubs: {commands:?}");
    for command in &commands {
        check_command_line(command, &config_file, "compose command");
    }
    let health = arrays_after(&file, "test:");
    assert_eq!(health.len(), 1);
    assert_eq!(&health[0][..2], ["CMD", "/usr/local/bin/hub"]);
    check_command_line(&health[0][2..], &config_file, "compose health check");
    // The setup script asks the hub for its pin the way `hub identity` prints it.
    let setup = read("container/compose-setup.sh");
    assert!(setup.contains("identity | sed -n 's/^pin: *//p'"));
    let data = tempfile::tempdir().unwrap();
    let identity = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["--data-dir", data.path().to_str().unwrap(), "identity"])
        .output()
        .unwrap();
    let printed = String::from_utf8(identity.stdout).unwrap();
    assert!(printed.lines().any(|l| l.starts_with("pin: ")), "{printed}");
    // Prometheus scrapes each hub's metrics port at the addresses the hubs have.
    let prometheus = read("container/prometheus.yml");
    for ip in ["172.28.0.11", "172.28.0.12", "172.28.0.13"] {
        assert!(file.contains(&format!("ipv4_address: {ip}")), "{ip}");
        assert!(setup.contains(ip), "the setup script names {ip}");
        assert!(prometheus.contains(&format!("'{ip}:7449'")), "prometheus scrapes {ip}");
    }
}

#[test]
fn the_kubernetes_manifests_validate_and_match_the_hubs_configuration() {
    let validate = Command::new(deploy("kubernetes-validate")).output().unwrap();
    assert!(validate.status.success(), "{}", String::from_utf8_lossy(&validate.stderr));
    let validator = String::from_utf8(validate.stdout).unwrap().trim().to_string();
    let manifests: Vec<PathBuf> = ["configmap", "statefulset", "service", "poddisruptionbudget"]
        .iter()
        .map(|m| deploy(&format!("k8s/{m}.yaml")))
        .collect();
    let output = Command::new(&validator).arg("--strict").args(&manifests).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "kubernetes-validate: {said}");
    assert_eq!(said.matches(" passed for resource ").count(), 5, "{said}");

    // The ConfigMap's hub.toml is a configuration the hub takes.
    let configmap = read("k8s/configmap.yaml");
    let toml: String = configmap
        .split_once("hub.toml: |\n")
        .expect("a hub.toml key")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l.trim()))
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::parse(&toml).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("hub.toml");
    std::fs::write(&config_file, &toml).unwrap();

    let statefulset = read("k8s/statefulset.yaml");
    let args = arrays_after(&statefulset, "args:");
    assert_eq!(args.len(), 1);
    check_command_line(&args[0], &config_file, "StatefulSet args");
    // Container ports are the configuration's; the probes ask the metrics listener.
    for (name, port) in [
        ("quic", config.quic.listen.port()),
        ("admin", config.admin.listen.port()),
        ("metrics", config.metrics.listen.port()),
    ] {
        let declared = format!("- name: {name}\n              containerPort: {port}\n");
        assert!(statefulset.contains(&declared), "the container port {name} is {port}");
    }
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let at = statefulset.find(probe).unwrap_or_else(|| panic!("no {probe}"));
        let body = &statefulset[at..at + 200];
        assert!(body.contains("port: metrics"), "{probe} asks the metrics listener");
        let path = if probe == "livenessProbe" { "/healthz" } else { "/readyz" };
        assert!(body.contains(&format!("path: {path}")), "{probe} asks {path}");
    }
    assert!(statefulset.contains("volumeClaimTemplates:"), "the store is on a PVC");
    let service = read("k8s/service.yaml");
    assert!(service.contains("protocol: UDP"), "QUIC is served over UDP");
}

#[test]
fn the_systemd_unit_runs_the_hub_with_options_it_has() {
    let unit = read("systemd/switchboard.service");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let args: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(args[0], "/usr/local/bin/hub");
    check_command_line(&args[1..], &deploy("container/hub.toml"), "ExecStart");
}

#[test]
fn hub_ready_exits_zero_for_a_ready_hub_and_non_zero_where_none_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = common::HubProcess::start(dir.path());
    let metrics = hub.metrics.expect("a metrics listener");
    let ready = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["ready", "--at", &metrics.to_string()])
        .output()
        .unwrap();
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stderr));
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "ready\n");
    hub.kill();
    let gone = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["ready", "--at", &metrics.to_string()])
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no metrics listener"));
}

/// The names of the metric families a hub exposes (from `# TYPE` lines), with the series
/// names their samples take (`_bucket`, `_sum`, `_count` for histograms).
fn exposed_names(exposition: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// `GET path` on `addr` over HTTP/1.0: the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_documented_and_the_dashboard_asks_only_for_real_series_in_valid_promql() {
    let dir = tempfile::tempdir().unwrap();
    // A peer (never reachable), so that the peer series exist; a message waiting for an
    // offline device, so that the fullest queues have one.
    let config = format!(
        "[[peers]]\nname = \"elsewhere\"\naddress = \"127.0.0.91:9\"\npin = \"{}\"\ndomains = [\"elsewhere.example\"]\n",
        "ab".repeat(32)
    );
    let mut hub = common::HubProcess::start_configured(&dir.path().join("data"), &config);
    let ann = hub.enrol("ann@example.org", "laptop").await;
    // Bob's phone enrols (its first connection) and goes offline.
    let phone = hub.enrol("bob@example.org", "phone").await;
    common::connect(&phone).await.close().await;
    let mut client = common::connect(&ann).await;
    let bob = switchboard_protocol::Address::parse("bob@example.org").unwrap();
    common::send_all(&mut client, &bob, &["hello".to_string()]).await;
    let metrics = hub.metrics.unwrap();
    // Queue depths are read at most every 10 s: this is the first read.
    let exposition =
        tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.unwrap();
    hub.kill();
    let names = exposed_names(&exposition);
    // The message waiting for bob's phone is counted in his queue.
    assert!(
        exposition.contains("switchboard_queue_messages_held{queue=\"bob@example.org\"} 1"),
        "{exposition}"
    );
    assert!(names.len() > 40, "{names:?}");

    // docs/operations.md names every family.
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md"))
            .unwrap();
    let undocumented: Vec<&String> = names
        .iter()
        .filter(|n| !n.ends_with("_bucket") && !n.ends_with("_sum") && !n.ends_with("_count"))
        .filter(|n| !docs.contains(&format!("`{n}`")))
        .collect();
    assert!(undocumented.is_empty(), "not in docs/operations.md: {undocumented:?}");

    // The dashboard's expressions use only series the hub has (and Prometheus's `up`).
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/switchboard.json")).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().replace("$job", ".*"));
        }
    }
    assert!(exprs.len() >= 20);
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("switchboard_") || word.starts_with("process_") {
                assert!(
                    names.contains(word),
                    "the dashboard asks for {word}, which no hub exposes"
                );
            }
        }
    }
    // Every expression is valid PromQL: promtool checks them as recording rules.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let checked = Command::new("promtool").arg("check").arg("rules").arg(&file).output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
