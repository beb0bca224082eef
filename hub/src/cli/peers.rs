//! `hub peer`: the peer hubs and their links, through the admin API (operator token).

use switchboard_hub::config::Config;

use crate::{PeerCommand, cli::admin_client};

pub(crate) async fn peer(config: &Config, command: PeerCommand) -> anyhow::Result<()> {
    let client = admin_client(config)?;
    match command {
        PeerCommand::List => {
            let peers = client.request("GET", "/v1/peers", None).await?;
            for peer in peers.as_array().into_iter().flatten() {
                let error = peer["last_error"].as_str().unwrap_or("-");
                let oldest = match peer["oldest_age_ms"].as_u64() {
                    Some(ms) => format!("{} s", ms / 1000),
                    None => "-".into(),
                };
                println!(
                    "{}\t{}\t{}\tinbound {}\tattempts {}\tqueued {} (oldest {oldest})\tlast error: {error}",
                    peer["name"].as_str().unwrap_or("?"),
                    peer["address"].as_str().unwrap_or("?"),
                    peer["state"].as_str().unwrap_or("?"),
                    if peer["inbound_up"] == true { "up" } else { "down" },
                    peer["attempts"],
                    peer["queued"],
                );
            }
        }
        PeerCommand::Add { name, address, pin, domains, provider } => {
            let body = serde_json::json!({
                "name": name, "address": address, "pin": pin, "domains": domains,
                "provider": provider,
            });
            client.request("POST", "/v1/peers", Some(body)).await?;
            println!("added {name}");
        }
        PeerCommand::Remove { name, force } => {
            let body = serde_json::json!({ "name": name, "force": force });
            client.request("POST", "/v1/peers/remove", Some(body)).await?;
            println!("removed {name}");
        }
        PeerCommand::Retry { name } => {
            let body = serde_json::json!({ "name": name });
            client.request("POST", "/v1/peers/retry", Some(body)).await?;
            println!("retrying {name}");
        }
    }
    Ok(())
}
