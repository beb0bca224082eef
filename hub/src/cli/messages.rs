//! The device side from the command line: `hub enrol`, `hub send`, `hub listen`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use switchboard_hub::{
    client::{Client, ClientOptions, DeviceIdentity, Event, client_endpoint},
    config::Config,
};
use switchboard_protocol::{Address, ReceiptKind};

use crate::cli::format_ms;

pub(crate) async fn enrol(
    config: &Config,
    address: Address,
    code: &str,
    hub: Option<SocketAddr>,
    cert: Option<PathBuf>,
    path: &Path,
) -> anyhow::Result<()> {
    let cert_path = cert.unwrap_or_else(|| config.data_dir().join("tls/cert.der"));
    let cert = std::fs::read(&cert_path)
        .with_context(|| format!("the hub's certificate {}", cert_path.display()))?;
    let identity = DeviceIdentity::generate(address, hub.unwrap_or(config.quic.listen), cert)?;
    let endpoint = client_endpoint()?;
    let client =
        Client::connect_with(&endpoint, &identity, Some(code), &client_options(config)).await?;
    client.close().await;
    identity.save(path)?;
    println!("enrolled {} · identity kept in {}", identity.address, path.display());
    Ok(())
}

pub(crate) async fn send(
    config: &Config,
    path: &Path,
    to: Address,
    text: &str,
) -> anyhow::Result<()> {
    let identity = DeviceIdentity::load(path)?;
    let endpoint = client_endpoint()?;
    let mut client =
        Client::connect_with(&endpoint, &identity, None, &client_options(config)).await?;
    let id = client.send_text(&to, text).await?;
    let account = client.account().clone();
    let mut accepted = false;
    // After `accepted`, wait a moment for this message's copy in the sender's own queue and
    // acknowledge that one entry (this device has the message); anything else is left for
    // `hub listen` to show.
    let linger = std::time::Duration::from_millis(500);
    loop {
        let event = if accepted {
            match tokio::time::timeout(linger, client.next_event()).await {
                Ok(event) => event,
                Err(_) => break,
            }
        } else {
            client.next_event().await
        };
        match event {
            Some(Event::Accepted(done)) if done == id => {
                println!("accepted {id}");
                accepted = true;
                if to == account {
                    break; // a message to oneself has no separate copy
                }
            }
            Some(Event::Rejected(rejected)) if rejected.id == id => {
                bail!("rejected: {}: {}", rejected.reason, rejected.detail);
            }
            Some(Event::Deliver(deliver))
                if deliver.envelope.id == id && deliver.envelope.from == account =>
            {
                client.ack(deliver.queue, 0, vec![deliver.seq]).await?;
                if accepted {
                    break;
                }
            }
            Some(Event::Closed { code, reason }) => {
                bail!("the hub closed the session: {code}: {reason}")
            }
            Some(_) => {}
            None if accepted => break,
            None => bail!("the session ended before an answer"),
        }
    }
    client.close().await;
    Ok(())
}

pub(crate) async fn listen(config: &Config, path: &Path, count: Option<u64>) -> anyhow::Result<()> {
    let identity = DeviceIdentity::load(path)?;
    let endpoint = client_endpoint()?;
    let mut client =
        Client::connect_with(&endpoint, &identity, None, &client_options(config)).await?;
    eprintln!("listening as {}", identity.address);
    let mut seen = 0;
    while let Some(event) = client.next_event().await {
        match event {
            Event::Deliver(deliver) => {
                let envelope = &deliver.envelope;
                println!(
                    "{} {} -> {}: {}",
                    format_ms(envelope.created_ms),
                    envelope.from,
                    envelope.to,
                    String::from_utf8_lossy(&envelope.body)
                );
                client.ack(deliver.queue, deliver.seq, vec![]).await?;
                seen += 1;
            }
            Event::Receipt(receipt) => {
                let kind = match receipt.receipt.kind {
                    ReceiptKind::Delivered => "delivered",
                    ReceiptKind::Read => "read",
                    ReceiptKind::Answered => "answered",
                };
                println!("receipt: {} {kind} to {}", receipt.receipt.id, receipt.receipt.by);
                client.ack(receipt.queue, receipt.seq, vec![]).await?;
            }
            Event::Error(error) => eprintln!("hub error: {}: {}", error.code, error.text),
            Event::Closed { code, reason } => bail!("the hub closed the session: {code}: {reason}"),
            Event::Accepted(_) | Event::Rejected(_) => {}
        }
        if count.is_some_and(|count| seen >= count) {
            client.close().await;
            return Ok(());
        }
    }
    Ok(())
}

fn client_options(config: &Config) -> ClientOptions {
    ClientOptions {
        segmentation_offload: config.quic.segmentation_offload,
        ..ClientOptions::default()
    }
}
