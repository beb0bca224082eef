//! `hub contacts`: the address book of a user token's user, through the admin API.

use serde_json::json;
use switchboard_hub::{client::admin::AdminClient, config::Config};

use crate::ContactsCommand;

pub(crate) async fn contacts(
    config: &Config,
    token: String,
    command: ContactsCommand,
) -> anyhow::Result<()> {
    let client = AdminClient::new(config.admin.listen, token);
    let answer = match command {
        ContactsCommand::List => client.request("GET", "/v1/contacts", None).await?,
        ContactsCommand::Add { address, categories } => {
            let body = json!({ "address": address, "categories": categories });
            client.request("POST", "/v1/contacts", Some(body)).await?
        }
        ContactsCommand::Remove { address } => {
            let body = json!({ "address": address });
            client.request("POST", "/v1/contacts/remove", Some(body)).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
