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
