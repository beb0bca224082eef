//! `hub org`: organisation commands through the admin API, with a user's token (`--token`) or,
//! without one, the operator's (read from the data directory).

use anyhow::Context;
use serde_json::json;
use switchboard_hub::{client::admin::AdminClient, config::Config};

use crate::{OrgCommand, cli::admin_client};

const DAY_MS: u64 = 24 * 3600 * 1000;

pub(crate) async fn org(
    config: &Config,
    token: Option<String>,
    command: OrgCommand,
) -> anyhow::Result<()> {
    use switchboard_hub::org::{Command as Org, OrgId, UnitId};
    // A user's token is enough: the operator's file is read only when no token is given.
    let client = match token {
        Some(token) => AdminClient::new(config.admin.listen, token),
        None => admin_client(config)?,
    };
    let now = switchboard_hub::store::system_clock_ms();
    let print = |value: serde_json::Value| -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(&value)?);
        Ok(())
    };
    let command = match command {
        OrgCommand::Token { user, days, label } => {
            let body = json!({ "user": user, "expires_ms": days.map(|d| now + d * DAY_MS), "label": label });
            let answer = client.request("POST", "/v1/tokens", Some(body)).await?;
            let token = answer["token"].as_str().context("no token in the answer")?;
            println!("{token}");
            return Ok(());
        }
        OrgCommand::Tokens { user } => {
            let path = match user {
                Some(user) => format!("/v1/tokens?user={user}"),
                None => "/v1/tokens".into(),
            };
            // One line each: id, user, expiry (or "never"), label.
            let tokens = client.request("GET", &path, None).await?;
            for token in tokens.as_array().into_iter().flatten() {
                let expires = match token["expires_ms"].as_u64() {
                    Some(ms) => format!("expires_ms={ms}"),
                    None => "never".into(),
                };
                let label = token["label"].as_str().unwrap_or("-");
                println!(
                    "{}\t{}\t{expires}\t{label}",
                    token["id"].as_str().unwrap_or("?"),
                    token["user"].as_str().unwrap_or("?")
                );
            }
            return Ok(());
        }
        OrgCommand::RevokeToken { id } => {
            let body = json!({ "id": id });
            return print(client.request("POST", "/v1/tokens/revoke", Some(body)).await?);
        }
        OrgCommand::AddMember { user } => {
            let answer = client.add_user(&user).await?;
            println!("{}", answer.code);
            return Ok(());
        }
        OrgCommand::Code { user } => {
            println!("{}", client.new_code(&user).await?.code);
            return Ok(());
        }
        OrgCommand::Invite { org, guest, unit, user } => {
            let body = json!({ "org": org, "user": user, "guest": guest, "unit": unit });
            return print(client.request("POST", "/v1/org/invite", Some(body)).await?);
        }
        OrgCommand::Accept { org, code } => {
            let event = client.accept(OrgId(org), &code).await?;
            println!("{}", serde_json::to_string(&event)?);
            return Ok(());
        }
        OrgCommand::VerifyDomain { org, domain } => {
            let body = json!({ "org": org, "domain": domain });
            let event = client.request("POST", "/v1/org/domains/verify", Some(body)).await?;
            println!("{event}");
            return Ok(());
        }
        OrgCommand::Domains { org } => {
            return print(
                client.request("GET", &format!("/v1/org/domains?org={org}"), None).await?,
            );
        }
        OrgCommand::Members { org } => {
            return print(
                client.request("GET", &format!("/v1/org/members?org={org}"), None).await?,
            );
        }
        OrgCommand::Keys => return print(client.request("GET", "/v1/org/keys", None).await?),
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
        OrgCommand::AddDomain { org, domain } => {
            let event =
                client.org(&Org::AddDomain { org: OrgId(org), domain: domain.clone() }).await?;
            println!("{}", serde_json::to_string(&event)?);
            // An admin's claim needs its record; the operator's word proved it already.
            let domains = client.request("GET", &format!("/v1/org/domains?org={org}"), None).await;
            if let Ok(domains) = domains
                && let Some(claim) = domains["claims"]
                    .as_array()
                    .and_then(|claims| claims.iter().find(|c| c["domain"] == domain.as_str()))
            {
                eprintln!(
                    "publish this TXT record, then run `hub org verify-domain --org {org} {domain}`:\n  {} TXT \"{}\"",
                    claim["record"].as_str().unwrap_or_default(),
                    claim["txt"].as_str().unwrap_or_default()
                );
            }
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
        OrgCommand::NameAdmin { org, user } => Org::NameAdmin { org: OrgId(org), user },
        OrgCommand::NameGroupAdmin { org, unit, group, user } => {
            Org::NameGroupAdmin { org: OrgId(org), user, unit: unit.map(UnitId), group }
        }
        OrgCommand::RemoveGroupAdmin { org, unit, group, user } => {
            Org::RemoveGroupAdmin { org: OrgId(org), user, unit: unit.map(UnitId), group }
        }
        OrgCommand::Move { org, unit, user } => {
            Org::MoveMember { org: OrgId(org), user, unit: UnitId(unit) }
        }
        OrgCommand::MemberType { org, kind, user } => {
            Org::ChangeMemberType { org: OrgId(org), user, guest: kind == "guest" }
        }
        OrgCommand::Deactivate { org, user } => Org::Deactivate { org: OrgId(org), user },
        OrgCommand::Reactivate { org, user } => Org::Reactivate { org: OrgId(org), user },
        OrgCommand::Delete { org, reassign_to, user } => {
            Org::DeleteMember { org: OrgId(org), user, reassign_to }
        }
        OrgCommand::IssueKey { org, unit, to_org, days } => Org::IssueKey {
            org: OrgId(org),
            unit: UnitId(unit),
            to_org: OrgId(to_org),
            expires_ms: days.map(|d| now + d * DAY_MS),
        },
        OrgCommand::HandKey { key, group } => Org::HandKey { key, group },
        OrgCommand::RevokeKey { key } => Org::RevokeKey { key },
        OrgCommand::Run { json } => serde_json::from_str(&json).context("the org command")?,
    };
    let event = client.org(&command).await?;
    println!("{}", serde_json::to_string(&event)?);
    Ok(())
}
