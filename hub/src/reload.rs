//! Reloading the configuration of a running hub (SIGHUP, `hub reload`, `POST /v1/reload`).
//!
//! The file the hub was started with is read again and compared with the settings in force.
//! What is safe to change live is applied: the log filter; `[limits]` (per-address connection
//! limits and the body size at once, the send rate for sessions opened from then on);
//! `[delivery]` (for sessions opened and messages sent from then on); `[store]
//! backlog_limit` and `disk_budget_bytes` (at once); `[org]` and `[backup]`; peers added to or
//! removed from `[[peers]]`. Every other change (listen addresses, `[quic]`, `[admin]`,
//! `[metrics]`, `[hub]`, the rest of `[store]`, `data_dir`, a peer's changed entry) is reported
//! as needing a restart and not applied: the settings in force stay whole and consistent.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::{config::Config, fanout::Hub};

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// The file read.
    pub file: String,
    /// Changes applied.
    pub applied: Vec<String>,
    /// Changes that take a restart; not applied.
    pub needs_restart: Vec<String>,
    /// Changes that were tried and refused, with why; not applied.
    pub refused: Vec<String>,
}

/// Sets the log filter; an error says why it could not.
pub type LogFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How the process that runs the hub takes part in a reload.
pub struct ReloadHooks {
    /// Applies the command line's overrides (data directory, listen addresses) to a
    /// configuration read from the file, as at the start.
    pub overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
    /// Sets the log filter; an error says why it could not.
    pub log_filter: LogFilter,
}

/// Why no reload happened.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The hub was started without a configuration file.
    #[error("the hub was started without --config: there is no file to read again")]
    NoFile,
    /// The file could not be read or is not a valid configuration; nothing was changed.
    #[error("{0}; nothing was changed")]
    Config(#[from] crate::config::ConfigError),
}

pub(crate) type Hooks = OnceLock<ReloadHooks>;

impl Hub {
    /// Sets how this process takes part in reloads (once; later calls are ignored).
    pub fn set_reload_hooks(&self, hooks: ReloadHooks) {
        let _ = self.reload_hooks().set(hooks);
    }

    /// Reads the configuration file again and applies what can change live.
    pub async fn reload_from_file(self: &Arc<Self>) -> Result<ReloadReport, ReloadError> {
        let source = self.config().source.clone().ok_or(ReloadError::NoFile)?;
        let mut next = Config::load(&source)?;
        if let Some(hooks) = self.reload_hooks().get() {
            (hooks.overrides)(&mut next);
        }
        let mut report = self.reload(next).await;
        report.file = source.display().to_string();
        tracing::info!(
            applied = ?report.applied, needs_restart = ?report.needs_restart, refused = ?report.refused,
            "configuration reloaded"
        );
        Ok(report)
    }

    /// Applies what can change live of `next`, keeps the rest as it is, and says which.
    pub async fn reload(self: &Arc<Self>, mut next: Config) -> ReloadReport {
        let old = self.config().clone();
        let mut report = ReloadReport::default();
        next.source = old.source.clone();

        // What takes a restart: kept as it is.
        macro_rules! restart_only {
            ($($field:ident),*) => {$(
                if next.$field != old.$field {
                    report.needs_restart.push(stringify!($field).replace('_', " "));
                    next.$field = old.$field.clone();
                }
            )*};
        }
        restart_only!(data_dir, quic, admin, metrics, hub);
        let mut store = next.store.clone();
        store.backlog_limit = old.store.backlog_limit;
        store.disk_budget_bytes = old.store.disk_budget_bytes;
        if store != old.store {
            report.needs_restart.push("store (but backlog_limit and disk_budget_bytes)".into());
            let (backlog, budget) = (next.store.backlog_limit, next.store.disk_budget_bytes);
            next.store = old.store.clone();
            next.store.backlog_limit = backlog;
            next.store.disk_budget_bytes = budget;
        }

        // What applies live.
        if next.log != old.log {
            match self.reload_hooks().get().map(|hooks| (hooks.log_filter)(&next.log.level)) {
                Some(Ok(())) if next.log.format == old.log.format => {
                    report.applied.push(format!("log level {:?}", next.log.level));
                }
                Some(Ok(())) => {
                    report.applied.push(format!("log level {:?}", next.log.level));
                    report.needs_restart.push("log format".into());
                    next.log.format = old.log.format;
                }
                Some(Err(why)) => {
                    report.refused.push(format!("log level {:?}: {why}", next.log.level));
                    next.log = old.log.clone();
                }
                None => {
                    report.needs_restart.push("log (this process does not manage it)".into());
                    next.log = old.log.clone();
                }
            }
        }
        if next.limits != old.limits {
            self.sources().set_limits(next.limits.clone());
            report.applied.push(
                "limits (connections per address and body size now; send rate for new sessions)"
                    .into(),
            );
        }
        if next.delivery != old.delivery {
            report.applied.push("delivery (for new sessions and new messages)".into());
        }
        if next.store.backlog_limit != old.store.backlog_limit {
            self.store().set_backlog_limit(next.store.backlog_limit);
            report.applied.push(format!("store backlog_limit {}", next.store.backlog_limit));
        }
        if next.store.disk_budget_bytes != old.store.disk_budget_bytes {
            let budget = next.store.disk_budget_bytes;
            self.store().set_disk_budget((budget > 0).then_some(budget));
            report.applied.push(format!("store disk_budget_bytes {budget}"));
        }
        if next.org != old.org {
            report.applied.push("org".into());
        }
        if next.backup != old.backup {
            report.applied.push("backup".into());
        }
        self.reload_peers(&old, &mut next, &mut report).await;
        self.swap_config(next);
        report
    }

    /// Adds the peers new in `next`, removes those gone from it (unless messages wait for
    /// them), and keeps a changed one as it is.
    async fn reload_peers(&self, old: &Config, next: &mut Config, report: &mut ReloadReport) {
        let wanted = std::mem::take(&mut next.peers);
        let mut kept = Vec::new();
        for peer in &old.peers {
            match wanted.iter().find(|p| p.name == peer.name) {
                Some(same) if same == peer => kept.push(peer.clone()),
                Some(_) => {
                    report.needs_restart.push(format!("peer {} (changed)", peer.name));
                    kept.push(peer.clone());
                }
                None => match self.peers().remove(&peer.name, false).await {
                    Ok(()) => report.applied.push(format!("peer {} removed", peer.name)),
                    Err(error) => {
                        report.refused.push(format!("removing peer {}: {error}", peer.name));
                        kept.push(peer.clone());
                    }
                },
            }
        }
        for peer in wanted.iter().filter(|p| !old.peers.iter().any(|o| o.name == p.name)) {
            match self.peers().add(peer.clone()).await {
                Ok(()) => {
                    report.applied.push(format!("peer {} added", peer.name));
                    kept.push(peer.clone());
                }
                Err(error) => report.refused.push(format!("adding peer {}: {error}", peer.name)),
            }
        }
        next.peers = kept;
    }
}
