//! Organisation commands, invitations, logos, the event log and the directory, with the
//! caller's rights (a user's token) checked by the organisation's rules.

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use crate::{
    admin::{ApiError, AppState, CODE_VALIDITY, auth::actor, hex, new_code},
    org::{Actor, Command, Event, ServiceError},
    store::system_clock_ms,
};

pub(super) async fn org_command(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Event>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let command: Command = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("not an org command: {e}")))?;
    let event = state.hub.org_execute(&actor, command).await?;
    Ok(Json(event))
}

#[derive(Deserialize)]
pub(super) struct LogoQuery {
    org: Option<crate::org::OrgId>,
    unit: crate::org::UnitId,
}

pub(super) async fn put_logo(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LogoQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Event>, ApiError> {
    use sha2::Digest;
    let actor = actor(&state, &headers).await?;
    let org = query.org.ok_or(ApiError(StatusCode::BAD_REQUEST, "org is required".into()))?;
    let (format, width, height) = crate::org::check_logo(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let logo = crate::org::Logo {
        format: format.into(),
        width,
        height,
        sha256: hex(&sha2::Sha256::digest(&body)),
    };
    // The rule is checked before the bytes are kept, so a refused caller stores nothing.
    let command = Command::SetLogo { org, unit: query.unit, logo };
    state
        .hub
        .org()
        .snapshot()
        .decide(&actor, command.clone(), system_clock_ms())
        .map_err(|e| ApiError::from(ServiceError::Refused(e)))?;
    state.hub.store().put_blob(&format!("logo:{}", query.unit.0), body.to_vec()).await?;
    Ok(Json(state.hub.org_execute(&actor, command).await?))
}

pub(super) async fn get_logo(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LogoQuery>,
) -> Result<Response, ApiError> {
    let actor = actor(&state, &headers).await?;
    let snapshot = state.hub.org().snapshot();
    // Someone who may not see the logo is told there is no such unit.
    let unit = snapshot
        .unit(query.unit)
        .filter(|unit| snapshot.may_see_logo(&actor, unit))
        .ok_or(ApiError(StatusCode::NOT_FOUND, "no such unit".into()))?;
    let logo =
        unit.logo.clone().ok_or(ApiError(StatusCode::NOT_FOUND, "the unit has no logo".into()))?;
    let name = format!("logo:{}", query.unit.0);
    let bytes = state.hub.store().blocking(move |store| store.blob(&name)).await?;
    let bytes =
        bytes.ok_or(ApiError(StatusCode::NOT_FOUND, "the logo's file is missing".into()))?;
    let content_type = if logo.format == "png" { "image/png" } else { "image/jpeg" };
    Ok(([("content-type", content_type)], bytes).into_response())
}

#[derive(Deserialize)]
pub(super) struct InviteBody {
    org: crate::org::OrgId,
    user: String,
    #[serde(default)]
    guest: bool,
    #[serde(default)]
    unit: Option<crate::org::UnitId>,
}

pub(super) async fn org_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<InviteBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let code = new_code();
    let expires_ms = system_clock_ms() + CODE_VALIDITY.as_millis() as u64;
    let command = Command::Invite {
        org: body.org,
        user: body.user,
        guest: body.guest,
        unit: body.unit,
        code_hash: crate::org::code_hash(&code),
        expires_ms,
    };
    state.hub.org_execute(&actor, command).await?;
    let link = format!("switchboard:invite?org={}&code={code}", body.org.0);
    Ok(Json(serde_json::json!({ "code": code, "link": link, "expires_ms": expires_ms })))
}

#[derive(Deserialize)]
pub(super) struct AcceptBody {
    org: crate::org::OrgId,
    code: String,
}

pub(super) async fn org_accept(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<AcceptBody>,
) -> Result<Json<Event>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let command =
        Command::AcceptInvitation { org: body.org, code_hash: crate::org::code_hash(&body.code) };
    Ok(Json(state.hub.org_execute(&actor, command).await?))
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// Most events one page holds.
const MAX_EVENTS_PAGE: usize = 1000;
/// Most events of the log one request looks at (visible to the caller or not): a caller who
/// sees few of them gets a short page and a cursor past what was looked at.
const MAX_EVENTS_SCANNED: usize = 10_000;

/// `GET /v1/org/events?after=N&limit=M`: the next events after position `after` that the
/// caller may read, and `next_after`, the position to ask after next time. The walk goes on
/// past events the caller may not read (up to a bound per request), so a cursor always moves
/// forward through the whole log; `more` says whether the log goes on past `next_after`.
pub(super) async fn org_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let limit = match query.limit {
        None => 100,
        Some(limit) if (1..=MAX_EVENTS_PAGE).contains(&limit) => limit,
        Some(_) => return Err(ApiError::field("limit", "between 1 and 1000")),
    };
    let hub = state.hub.clone();
    let mut after = query.after.unwrap_or(0);
    let page = state
        .hub
        .store()
        .blocking(move |_| {
            let snapshot = hub.org().snapshot();
            let (mut out, mut scanned, mut more) = (Vec::new(), 0, true);
            while out.len() < limit && scanned < MAX_EVENTS_SCANNED {
                let batch = hub.org().events(after, 1000)?;
                if batch.is_empty() {
                    more = false;
                    break;
                }
                for (seq, event) in batch {
                    scanned += 1;
                    after = seq;
                    if snapshot.may_read_event(&actor, &event) {
                        out.push(serde_json::json!({ "seq": seq, "event": event }));
                        if out.len() == limit {
                            break;
                        }
                    }
                }
            }
            Ok((out, after, more))
        })
        .await?;
    let (events, next_after, more) = page;
    Ok(Json(serde_json::json!({ "events": events, "next_after": next_after, "more": more })))
}

#[derive(Deserialize)]
pub(super) struct OrgQuery {
    org: crate::org::OrgId,
}

/// `GET /v1/org/members?org=N`: members with status, role and unit, open invitations and group
/// admins, for those who onboard, approve or manage members.
pub(super) async fn org_members(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<OrgQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let snapshot = state.hub.org().snapshot();
    let roster = snapshot
        .roster(&actor, query.org, system_clock_ms())
        .map_err(|e| ApiError::from(ServiceError::Refused(e)))?;
    Ok(Json(serde_json::json!(roster)))
}

/// `GET /v1/org/keys`: the keys issued by or to an organisation where the caller manages
/// keys.
pub(super) async fn org_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::org::Key>>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let snapshot = state.hub.org().snapshot();
    Ok(Json(snapshot.keys_seen_by(&actor).into_iter().cloned().collect()))
}

pub(super) async fn org_directory(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let Actor::User(user) = actor(&state, &headers).await? else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the directory is a member's view; use a user token".into(),
        ));
    };
    let directory = state.hub.org().snapshot().directory_of(&user);
    let out = directory.iter().map(|entry| serde_json::json!(entry)).collect();
    Ok(Json(out))
}
