//! The peer hubs and their links (operator only): `GET /v1/peers`, `POST /v1/peers/retry`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;

use crate::{
    admin::{ApiError, AppState, auth::authorise},
    links::PeerStatus,
};

/// `GET /v1/peers`: each peer, its link's state, attempts and last error.
pub(super) async fn list_peers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<PeerStatus>>, ApiError> {
    authorise(&state, &headers)?;
    let mut statuses = state.hub.peers().statuses();
    let outbound: Vec<_> =
        statuses.iter().map(|s| state.hub.peers().outbound_of(&s.name)).collect();
    // What waits in each outbound queue: its last sequence past the link's cursor, and the
    // age of the first message past it.
    let now = crate::store::system_clock_ms();
    let waiting = state
        .hub
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
    Ok(Json(statuses))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryBody {
    name: String,
}

/// `POST /v1/peers/retry`: ends the backoff of the link to a peer now.
pub(super) async fn retry_peer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RetryBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorise(&state, &headers)?;
    if state.hub.peers().retry(&body.name) {
        Ok(Json(serde_json::json!({ "retrying": body.name })))
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, format!("no peer {}", body.name)))
    }
}

/// `POST /v1/peers`: adds a peer at run time (kept across restarts) and links it.
pub(super) async fn add_peer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<crate::config::PeerConfig>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorise(&state, &headers)?;
    let name = body.name.clone();
    state.hub.peers().add(body).await.map_err(peer_error)?;
    Ok(Json(serde_json::json!({ "added": name })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveBody {
    name: String,
    #[serde(default)]
    force: bool,
}

/// `POST /v1/peers/remove`: removes a peer added at run time.
pub(super) async fn remove_peer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RemoveBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorise(&state, &headers)?;
    state.hub.peers().remove(&body.name, body.force).await.map_err(peer_error)?;
    Ok(Json(serde_json::json!({ "removed": body.name })))
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
