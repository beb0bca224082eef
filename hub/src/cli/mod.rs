//! The `hub` binary's commands, one file per topic; `main.rs` only parses the command line.
//! These are clients of the library: the admin API through
//! [`AdminClient`], devices through
//! [`Client`](switchboard_hub::client::Client).

pub(crate) mod contacts;
pub(crate) mod devices;
pub(crate) mod messages;
pub(crate) mod org;
pub(crate) mod peers;
pub(crate) mod personal;
pub(crate) mod serve;
pub(crate) mod users;

use std::path::PathBuf;

use anyhow::Context;
use switchboard_hub::{client::admin::AdminClient, config::Config};

pub(crate) fn admin_client(config: &Config) -> anyhow::Result<AdminClient> {
    let data_dir = config.data_dir();
    let path = data_dir.join("admin.token");
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the admin token {} (has the hub been started with this data directory?)",
            path.display()
        )
    })?;
    Ok(AdminClient::new(config.admin.listen, token.trim().to_string()))
}

pub(crate) fn default_identity_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("switchboard/identity.toml")
}

/// Unix milliseconds as UTC `YYYY-MM-DD hh:mm:ss`.
pub(crate) fn format_ms(ms: u64) -> String {
    let [year, month, day, hour, minute, second] = switchboard_hub::backup::utc(ms);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}")
}
