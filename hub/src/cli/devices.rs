//! `hub device`: list, register in bulk from public keys, revoke, say their kind.

use anyhow::{Context, bail};
use switchboard_hub::{admin, config::Config};
use switchboard_protocol::{Address, AddressKind};

use crate::{
    DeviceCommand,
    cli::{admin_client, format_ms},
};

pub(crate) async fn device(config: &Config, command: DeviceCommand) -> anyhow::Result<()> {
    let admin = admin_client(config)?;
    match command {
        DeviceCommand::List { user } => {
            for device in admin.devices(user.as_deref()).await? {
                let state = if device.revoked { "revoked" } else { "active" };
                let kind = serde_json::to_value(device.kind).unwrap_or_default();
                println!(
                    "{}\t{state}\t{}\tkey {}…\tenrolled {}",
                    device.name,
                    kind.as_str().unwrap_or("?"),
                    admin::hex(&device.public_key[..8]),
                    format_ms(device.enrolled_ms)
                );
            }
        }
        DeviceCommand::Register { file, add_users } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?
            };
            let mut devices = Vec::new();
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut fields = line.split_whitespace();
                let (Some(name), Some(key)) = (fields.next(), fields.next()) else {
                    bail!("line {}: expected `user@domain/device <public key> [kind]`", number + 1);
                };
                let kind = match fields.next() {
                    Some(kind) => Some(serde_json::from_value(serde_json::json!(kind)).map_err(
                        |_| anyhow::anyhow!("line {}: {kind} is no kind of device (desktop, laptop, mobile, server)", number + 1),
                    )?),
                    None => None,
                };
                devices.push(admin::DeviceKey { name: name.into(), public_key: key.into(), kind });
            }
            let (mut registered, mut refused) = (0, 0);
            for chunk in devices.chunks(admin::MAX_REGISTER) {
                let answer = admin.register_devices(chunk, add_users).await?;
                registered += answer.registered;
                for result in answer.results.iter().filter(|r| r.error.is_some()) {
                    refused += 1;
                    eprintln!("{}: {}", result.name, result.error.as_deref().unwrap_or_default());
                }
            }
            println!("registered {registered} devices, refused {refused}");
            if refused > 0 {
                bail!("{refused} devices were not registered");
            }
        }
        DeviceCommand::Revoke { name } => {
            let device = admin.revoke(&name).await?;
            println!("revoked {}", device.name);
        }
        DeviceCommand::Kind { name, kind } => {
            let body = serde_json::json!({ "name": name, "kind": kind });
            let device = admin.request("POST", "/v1/devices/kind", Some(body)).await?;
            println!("{} is a {}", device["name"].as_str().unwrap_or("?"), device["kind"]);
        }
    }
    Ok(())
}

pub(crate) fn parse_device(text: &str) -> anyhow::Result<Address> {
    let address = Address::parse(text).with_context(|| format!("device address {text}"))?;
    if address.kind() != AddressKind::Device {
        bail!("{text} is not a device address (user@domain/device)");
    }
    Ok(address)
}
