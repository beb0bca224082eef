//! `POST /v1/backups` and `POST /v1/reload` (operator only): a backup of the running hub (see
//! [`crate::backup`]) and a reload of its configuration (see [`crate::reload`]).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;

use crate::{
    admin::{ApiError, AppState, ErrorBody, auth::authorise},
    backup::{BackupError, BackupReport},
};

/// Which backup to take.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupBody {
    /// The backup's directory name under `[backup] dir`: 1-100 of `A-Z a-z 0-9 . _ -`, not
    /// starting with a dot. Default: the UTC time, `20261205T083000Z`.
    #[serde(default)]
    name: Option<String>,
}

/// Takes a consistent backup of the running hub (a RocksDB checkpoint of the store, the TLS
/// certificate and key, the operator token and the configuration file) into a new directory
/// under `[backup] dir`, without stopping it (operator only).
#[utoipa::path(post, path = "/v1/backups", tag = "hub", request_body = BackupBody, responses(
    (status = 200, description = "the backup is complete and durable", body = BackupReport),
    (status = 409, description = "a backup of that name exists", body = ErrorBody),
    (status = 500, description = "the backup failed (the text says why); the partial directory has no BACKUP file", body = ErrorBody),
))]
pub(super) async fn take_backup(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<BackupBody>,
) -> Result<Json<BackupReport>, ApiError> {
    authorise(&state, &headers)?;
    let name =
        body.name.unwrap_or_else(|| crate::backup::default_name(crate::store::system_clock_ms()));
    let hub = state.hub.clone();
    let taken = tokio::task::spawn_blocking(move || crate::backup::backup(&hub, &name))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match taken {
        Ok(report) => Ok(Json(report)),
        Err(error @ BackupError::BadName(_)) => {
            Err(ApiError(StatusCode::BAD_REQUEST, error.to_string()))
        }
        Err(error @ BackupError::Exists(_)) => {
            Err(ApiError(StatusCode::CONFLICT, error.to_string()))
        }
        Err(error) => {
            tracing::error!(%error, "backup failed");
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("backup failed: {error}")))
        }
    }
}

/// Reads the configuration file again and applies what can change live, as SIGHUP does
/// (operator only). What needs a restart is reported and not applied.
#[utoipa::path(post, path = "/v1/reload", tag = "hub", responses(
    (status = 200, description = "what was applied, what needs a restart, what was refused", body = crate::reload::ReloadReport),
    (status = 409, description = "no configuration file, or it does not parse; nothing was changed", body = ErrorBody),
))]
pub(super) async fn reload(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<crate::reload::ReloadReport>, ApiError> {
    authorise(&state, &headers)?;
    match state.hub.reload_from_file().await {
        Ok(report) => Ok(Json(report)),
        Err(error) => Err(ApiError(StatusCode::CONFLICT, error.to_string())),
    }
}
