//! Home records of private users (see [`crate::personal`]): `GET /v1/home?user=NAME` and
//! `POST /v1/home` with a record signed by one of the user's devices; `GET /v1/home/handoff`;
//! `GET /v1/home/mailbox`.

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;

use crate::{
    admin::{ApiError, AppState, auth::actor},
    org::Actor,
    personal::{HomeError, HomeRecord, SetHomeError},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HomeQuery {
    user: String,
}

/// Refuses unless `actor` is the operator or `user` themself.
fn require_self_or_operator(actor: &Actor, user: &str) -> Result<(), ApiError> {
    match actor {
        Actor::Operator => Ok(()),
        Actor::User(name) if name == user => Ok(()),
        _ => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("only {user} and the operator read or change {user}'s home"),
        )),
    }
}

/// `GET /v1/home?user=NAME`: the user's home record (the operator, or the user).
pub(super) async fn get_home(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HomeQuery>,
) -> Result<Json<HomeRecord>, ApiError> {
    let actor = actor(&state, &headers).await?;
    require_self_or_operator(&actor, &query.user)?;
    match state.hub.home_of(&query.user).await? {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("{} has no home record", query.user))),
    }
}

/// `GET /v1/home/handoff?user=NAME`: the user's hand-off in progress (the operator, or the
/// user); 404 when none is.
pub(super) async fn get_handoff(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HomeQuery>,
) -> Result<Json<crate::links::HandoffStatus>, ApiError> {
    let actor = actor(&state, &headers).await?;
    require_self_or_operator(&actor, &query.user)?;
    match state.hub.peers().handoff_status(&query.user) {
        Some(status) => Ok(Json(status)),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no hand-off of {} is in progress", query.user),
        )),
    }
}

/// `POST /v1/home/handoff/abandon {"user"}`: gives up on what the old home hub of the user's
/// unfinished hand-off holds (the operator, or the user); 404 when no hand-off is in progress.
pub(super) async fn abandon_handoff(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<HomeQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = actor(&state, &headers).await?;
    require_self_or_operator(&actor, &body.user)?;
    let from =
        state.hub.peers().abandon_move(&body.user).await.map_err(super::peers::peer_error)?;
    Ok(Json(serde_json::json!({ "user": body.user, "abandoned": from })))
}

/// `POST /v1/home`: a new home record, signed by one of the user's devices, with the next
/// epoch (the operator, or the user).
pub(super) async fn set_home(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(record): Json<HomeRecord>,
) -> Result<Json<HomeRecord>, ApiError> {
    let actor = actor(&state, &headers).await?;
    require_self_or_operator(&actor, &record.user)?;
    let (user, device) = (record.user.clone(), record.device.clone());
    match state.hub.set_home(record).await {
        Ok(record) => Ok(Json(record)),
        Err(SetHomeError::Store(error)) => Err(error.into()),
        Err(SetHomeError::Refused(error)) => {
            tracing::warn!(%user, %device, kind = error.kind(), %error, "home record refused");
            let status = match error {
                HomeError::Field(_) => StatusCode::BAD_REQUEST,
                HomeError::UnknownUser(_) | HomeError::UnknownDevice { .. } => {
                    StatusCode::NOT_FOUND
                }
                HomeError::Revoked(_) | HomeError::BadSignature(_) => StatusCode::FORBIDDEN,
                HomeError::StaleEpoch { .. } | HomeError::HandOff { .. } => StatusCode::CONFLICT,
            };
            Err(ApiError(status, format!("{}: {error}", error.kind())))
        }
    }
}

/// `GET /v1/home/mailbox?user=NAME`: the user's mailbox on this hub, their registration hub
/// (the operator, or the user): its last sequence, what it holds, where the home hub's link is
/// and where each device reading it is; 404 when the user's home hub is not another hub.
pub(super) async fn get_mailbox(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HomeQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = actor(&state, &headers).await?;
    require_self_or_operator(&actor, &query.user)?;
    let Some(home) = state.hub.peers().home_hub(&query.user) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{} has no home hub other than this one", query.user),
        ));
    };
    let mailbox = state.hub.store().mailbox(&query.user).await?;
    let user = query.user.clone();
    let (stats, link, devices) = state
        .hub
        .store()
        .blocking(move |store| {
            let stats = store.stats(mailbox.queue)?;
            let link = store.cursor(mailbox.queue, mailbox.link)?.acked;
            let readers = store.readers(mailbox.queue)?;
            let mut devices = Vec::new();
            for record in store.device_records(Some(&user))? {
                if readers.contains(&record.device) {
                    let acked = store.cursor(mailbox.queue, record.device)?.acked;
                    devices.push(serde_json::json!({ "device": record.name, "acked": acked }));
                }
            }
            Ok((stats, link, devices))
        })
        .await?;
    Ok(Json(serde_json::json!({
        "user": query.user,
        "home": home,
        "last_seq": stats.last_seq,
        "held": stats.backlog(),
        "home_acked": link,
        "devices": devices,
    })))
}
