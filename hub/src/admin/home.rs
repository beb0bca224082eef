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
    admin::{ApiError, AppState, ErrorBody, auth::actor},
    org::Actor,
    personal::{HomeError, HomeRecord, SetHomeError},
};

/// A user, in the query or the body.
#[derive(Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HomeQuery {
    /// The user (`user@domain`).
    user: String,
}

/// The answer to abandoning a hand-off.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Abandoned {
    user: String,
    /// The old home hub given up on.
    abandoned: String,
}

/// Where one device reading a mailbox is.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct MailboxReader {
    /// The device's address.
    device: String,
    /// It has taken everything up to this sequence, here or (as its home hub reported) there.
    acked: u64,
}

/// A user's mailbox on this hub, their registration hub.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Mailbox {
    user: String,
    /// Their home hub.
    home: String,
    /// The mailbox's last sequence.
    last_seq: u64,
    /// Entries kept, for the home hub or for a device.
    held: u64,
    /// The home hub's link has everything up to this sequence.
    home_acked: u64,
    devices: Vec<MailboxReader>,
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

/// The user's home record (the operator, or the user).
#[utoipa::path(get, path = "/v1/home", tag = "home", params(HomeQuery), responses(
    (status = 200, description = "the home record", body = HomeRecord),
    (status = 403, description = "neither the user nor the operator", body = ErrorBody),
    (status = 404, description = "no home record", body = ErrorBody),
))]
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

/// The user's hand-off in progress (the operator, or the user).
#[utoipa::path(get, path = "/v1/home/handoff", tag = "home", params(HomeQuery), responses(
    (status = 200, description = "the hand-off", body = crate::links::HandoffStatus),
    (status = 403, description = "neither the user nor the operator", body = ErrorBody),
    (status = 404, description = "no hand-off in progress", body = ErrorBody),
))]
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

/// Gives up on what the old home hub of the user's unfinished hand-off holds (the operator, or
/// the user): the move ends, the new home hub gets the mailbox, and what the old hub hands
/// over later is dropped.
#[utoipa::path(post, path = "/v1/home/handoff/abandon", tag = "home", request_body = HomeQuery, responses(
    (status = 200, description = "the hub given up on", body = Abandoned),
    (status = 403, description = "neither the user nor the operator", body = ErrorBody),
    (status = 404, description = "no hand-off in progress", body = ErrorBody),
))]
pub(super) async fn abandon_handoff(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<HomeQuery>,
) -> Result<Json<Abandoned>, ApiError> {
    let actor = actor(&state, &headers).await?;
    require_self_or_operator(&actor, &body.user)?;
    let from =
        state.hub.peers().abandon_move(&body.user).await.map_err(super::peers::peer_error)?;
    Ok(Json(Abandoned { user: body.user, abandoned: from }))
}

/// Takes a new home record, signed by one of the user's unrevoked devices, with the next epoch
/// (the operator, or the user). The error text starts with its kind.
#[utoipa::path(post, path = "/v1/home", tag = "home", request_body = HomeRecord, responses(
    (status = 200, description = "the record taken", body = HomeRecord),
    (status = 400, description = "`malformed`: a bad field", body = ErrorBody),
    (status = 403, description = "`revoked-device`, `bad-signature`, or neither the user nor the operator", body = ErrorBody),
    (status = 404, description = "`unknown-user`, `unknown-device`", body = ErrorBody),
    (status = 409, description = "`stale-epoch`: not one above the stored record's; `hand-off-in-progress`: a move is open and the record names another hub than the one the user is moving away from", body = ErrorBody),
))]
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

/// The user's mailbox on this hub, their registration hub (the operator, or the user): its
/// last sequence, what it holds, where the home hub's link is and where each device reading
/// it is.
#[utoipa::path(get, path = "/v1/home/mailbox", tag = "home", params(HomeQuery), responses(
    (status = 200, description = "the mailbox", body = Mailbox),
    (status = 403, description = "neither the user nor the operator", body = ErrorBody),
    (status = 404, description = "the user's home hub is not another hub", body = ErrorBody),
))]
pub(super) async fn get_mailbox(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HomeQuery>,
) -> Result<Json<Mailbox>, ApiError> {
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
                    devices.push(MailboxReader { device: record.name, acked });
                }
            }
            Ok((stats, link, devices))
        })
        .await?;
    Ok(Json(Mailbox {
        user: query.user,
        home,
        last_seq: stats.last_seq,
        held: stats.backlog(),
        home_acked: link,
        devices,
    }))
}
