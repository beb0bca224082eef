//! `hub personal`: a private user's home hub, through their registration hub's admin API.

use anyhow::Context;
use switchboard_hub::{
    client::{DeviceIdentity, admin::AdminClient},
    config::Config,
    net::tls,
    personal::HomeRecord,
    store::system_clock_ms,
};

use crate::{PersonalCommand, cli::default_identity_path};

pub(crate) async fn personal(config: &Config, command: PersonalCommand) -> anyhow::Result<()> {
    match command {
        PersonalCommand::Home { registration, token, identity, address } => {
            let path = identity.unwrap_or_else(default_identity_path);
            let identity = DeviceIdentity::load(&path)
                .with_context(|| format!("the device identity {}", path.display()))?;
            let user = identity.address.account().context("the identity names no user")?;
            let client = AdminClient::new(registration, token);
            let next = match current(&client, user.as_str()).await? {
                Some(record) => record.epoch + 1,
                None => 1,
            };
            let cert = tls::load_or_create_for(config)?;
            let mut record = HomeRecord {
                user: user.as_str().to_string(),
                hub: config.hub.name.clone(),
                address: address.unwrap_or(config.quic.listen),
                pin: tls::pin(cert.cert.as_ref()),
                epoch: next,
                device: identity.address.as_str().to_string(),
                signed_ms: system_clock_ms(),
                signature: String::new(),
            };
            let secret: [u8; 32] = identity
                .secret_key
                .as_slice()
                .try_into()
                .context("the identity's secret key is not 32 bytes")?;
            record.sign(&secret);
            let body = serde_json::to_value(&record)?;
            client.request("POST", "/v1/home", Some(body)).await?;
            println!(
                "{} now lives at {} ({}), epoch {}",
                record.user, record.hub, record.address, record.epoch
            );
        }
        PersonalCommand::AbandonHandoff { user, registration, token } => {
            let client = AdminClient::new(registration, token);
            let body = serde_json::json!({ "user": user });
            let answer = client.request("POST", "/v1/home/handoff/abandon", Some(body)).await?;
            println!(
                "the hand-off of {user} from {} is abandoned; its new home hub has the mailbox",
                answer["abandoned"].as_str().unwrap_or("?")
            );
        }
        PersonalCommand::Show { user, registration, token } => {
            let client = AdminClient::new(registration, token);
            let path = format!("/v1/devices/preferred?user={user}");
            let preferred = client.request("GET", &path, None).await?;
            match preferred["device"]["name"].as_str() {
                Some(device) => println!(
                    "preferred device: {device} ({}, {})",
                    preferred["device"]["kind"].as_str().unwrap_or("?"),
                    preferred["why"].as_str().unwrap_or("?")
                ),
                None => println!("preferred device: none (no desktop enrolled yet)"),
            }
            match current(&client, &user).await? {
                Some(record) => println!(
                    "{}: home hub {} at {} (pin {}), epoch {}, signed by {} at {}",
                    record.user,
                    record.hub,
                    record.address,
                    record.pin,
                    record.epoch,
                    record.device,
                    crate::cli::format_ms(record.signed_ms)
                ),
                None => println!("{user} has no home hub yet: the registration hub serves them"),
            }
            let path = format!("/v1/home/handoff?user={user}");
            match client.request("GET", &path, None).await {
                Ok(handoff) => println!(
                    "hand-off from {} to {} since {}: {}",
                    handoff["from"].as_str().unwrap_or("?"),
                    handoff["to"].as_str().unwrap_or("?"),
                    crate::cli::format_ms(handoff["started_ms"].as_u64().unwrap_or(0)),
                    if handoff["mailbox_released"].as_bool() == Some(true) {
                        "the old home hub's part has not come; the new one has the mailbox"
                    } else {
                        "waiting for the old home hub's part; the mailbox is held for the new one"
                    }
                ),
                Err(switchboard_hub::client::admin::AdminError::Api { status: 404, .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(())
}

/// The user's home record at the registration hub, if any.
async fn current(client: &AdminClient, user: &str) -> anyhow::Result<Option<HomeRecord>> {
    match client.request("GET", &format!("/v1/home?user={user}"), None).await {
        Ok(answer) => Ok(Some(serde_json::from_value(answer)?)),
        Err(switchboard_hub::client::admin::AdminError::Api { status: 404, .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}
