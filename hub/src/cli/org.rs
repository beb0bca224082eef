//! `hub org`: organisation commands through the admin API, with an operator's or a user's
//! token.

use anyhow::Context;
use switchboard_hub::{client::admin::AdminClient, config::Config};

use crate::{OrgCommand, cli::admin_client};

pub(crate) async fn org(
    config: &Config,
    token: Option<String>,
    command: OrgCommand,
) -> anyhow::Result<()> {
    use switchboard_hub::org::{Command as Org, OrgId, UnitId};
    let operator = admin_client(config)?;
    let client = match token {
        Some(token) => AdminClient::new(config.admin.listen, token),
        None => operator,
    };
    let command = match command {
        OrgCommand::Token { user } => {
            println!("{}", client.new_token(&user).await?);
            return Ok(());
        }
        OrgCommand::Events { after } => {
            for event in client.org_events(after).await? {
                println!("{event}");
            }
            return Ok(());
        }
        OrgCommand::Directory => {
            println!("{}", serde_json::to_string_pretty(&client.directory().await?)?);
            return Ok(());
        }
        OrgCommand::Create { name, owner, domain, line, seats } => {
            Org::CreateOrg { name, owner, domain, line, seat_limit: seats }
        }
        OrgCommand::Unit { org, parent, name, line } => {
            Org::CreateUnit { org: OrgId(org), parent: UnitId(parent), name, line }
        }
        OrgCommand::Register { org } => Org::Register { org: OrgId(org) },
        OrgCommand::Approve { org, user } => Org::Approve { org: OrgId(org), user },
        OrgCommand::Assign { org, unit, user } => {
            Org::Assign { org: OrgId(org), user, unit: UnitId(unit) }
        }
        OrgCommand::Run { json } => serde_json::from_str(&json).context("the org command")?,
    };
    let event = client.org(&command).await?;
    println!("{}", serde_json::to_string(&event)?);
    Ok(())
}
