//! The peer hubs and their links (operator only): `GET /v1/peers`, `POST /v1/peers/retry`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};

use crate::{
    admin::{ApiError, AppState, ErrorBody, auth::authorise},
    links::PeerStatus,
};

/// Each peer, its link's state, attempts and last error, and what waits for it (operator
/// only).
#[utoipa::path(get, path = "/v1/peers", tag = "peers", responses(
    (status = 200, description = "the peers", body = [PeerStatus]),
))]
pub(super) async fn list_peers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<PeerStatus>>, ApiError> {
    authorise(&state, &headers)?;
    Ok(Json(peer_statuses(&state.hub).await?))
}

/// Each peer's status with what waits for it: its outbound queue's last sequence past the
/// link's cursor, and the age of the first message past it.
pub(crate) async fn peer_statuses(
    hub: &std::sync::Arc<crate::fanout::Hub>,
) -> Result<Vec<PeerStatus>, crate::store::StoreError> {
    let mut statuses = hub.peers().statuses();
    if statuses.is_empty() {
        return Ok(statuses);
    }
    let outbound: Vec<_> = statuses.iter().map(|s| hub.peers().outbound_of(&s.name)).collect();
    let now = crate::store::system_clock_ms();
    let waiting = hub
        .store()
        .blocking(move |store| {
            Ok(outbound
                .into_iter()
                .map(|out| {
                    out.and_then(|out| {
                        let stats = store.stats(out.queue).ok()?;
                        let cursor = store.cursor(out.queue, out.link).ok()?;
                        let queued = stats.last_seq.saturating_sub(cursor.acked);
                        let first = store.read(out.queue, out.link, 64).ok().unwrap_or_default();
                        Some((queued, first.iter().find_map(accepted_ms)))
                    })
                    .unwrap_or((0, None))
                })
                .collect::<Vec<_>>())
        })
        .await?;
    for (status, (queued, accepted)) in statuses.iter_mut().zip(waiting) {
        status.queued = queued;
        status.oldest_age_ms = accepted.map(|ms| now.saturating_sub(ms));
    }
    Ok(statuses)
}

/// When the hub accepted the message `entry` holds: its expiry less its time to live, both set
/// on acceptance. None for a receipt.
fn accepted_ms(entry: &crate::store::Entry) -> Option<u64> {
    match crate::fanout::entry::decode_entry(&entry.payload).ok()? {
        crate::fanout::entry::Stored::Message(envelope) => {
            Some(entry.expires_ms.saturating_sub(u64::from(envelope.ttl_secs) * 1000))
        }
        crate::fanout::entry::Stored::Receipt(_) => None,
    }
}

/// A peer by name.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryBody {
    name: String,
}

/// The answer to a retry.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Retrying {
    retrying: String,
}

/// The answer to adding a peer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Added {
    added: String,
}

/// The answer to removing a peer.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Removed {
    removed: String,
}

/// Ends the backoff of the link to a peer now (operator only).
#[utoipa::path(post, path = "/v1/peers/retry", tag = "peers", request_body = RetryBody, responses(
    (status = 200, description = "the link tries again", body = Retrying),
    (status = 404, description = "no such peer", body = ErrorBody),
))]
pub(super) async fn retry_peer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RetryBody>,
) -> Result<Json<Retrying>, ApiError> {
    authorise(&state, &headers)?;
    if state.hub.peers().retry(&body.name) {
        Ok(Json(Retrying { retrying: body.name }))
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, format!("no peer {}", body.name)))
    }
}

/// Adds a peer at run time (kept across restarts) and links it (operator only).
#[utoipa::path(post, path = "/v1/peers", tag = "peers", request_body = crate::config::PeerConfig, responses(
    (status = 200, description = "added", body = Added),
    (status = 400, description = "a bad field", body = ErrorBody),
    (status = 409, description = "the name or a domain is taken, or the name is a user's home or former home hub", body = ErrorBody),
))]
pub(super) async fn add_peer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<crate::config::PeerConfig>,
) -> Result<Json<Added>, ApiError> {
    authorise(&state, &headers)?;
    let name = body.name.clone();
    state.hub.peers().add(body).await.map_err(peer_error)?;
    Ok(Json(Added { added: name }))
}

/// A peer to remove.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveBody {
    name: String,
    /// Removes it although messages wait for it (they are dropped).
    #[serde(default)]
    force: bool,
}

/// Removes a peer added at run time (operator only): refused while messages wait for it unless
/// `force`, for a configured peer, and for a user's home or former home hub.
#[utoipa::path(post, path = "/v1/peers/remove", tag = "peers", request_body = RemoveBody, responses(
    (status = 200, description = "removed", body = Removed),
    (status = 404, description = "no such peer", body = ErrorBody),
    (status = 409, description = "configured, messages wait for it, or a user's home or former home hub", body = ErrorBody),
))]
pub(super) async fn remove_peer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RemoveBody>,
) -> Result<Json<Removed>, ApiError> {
    authorise(&state, &headers)?;
    state.hub.peers().remove(&body.name, body.force).await.map_err(peer_error)?;
    Ok(Json(Removed { removed: body.name }))
}

pub(super) fn peer_error(error: crate::links::PeerError) -> ApiError {
    use crate::links::PeerError;
    let status = match &error {
        PeerError::Invalid(_) => StatusCode::BAD_REQUEST,
        PeerError::Unknown(_) | PeerError::NoMove(_) => StatusCode::NOT_FOUND,
        PeerError::Exists(_)
        | PeerError::DomainTaken { .. }
        | PeerError::Configured(_)
        | PeerError::Queued { .. }
        | PeerError::HomeHub { .. }
        | PeerError::FormerHome { .. }
        | PeerError::Moving { .. } => StatusCode::CONFLICT,
        PeerError::Store(_) | PeerError::Tls(_) | PeerError::NotRunning => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError(status, error.to_string())
}
