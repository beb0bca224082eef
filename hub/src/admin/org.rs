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
    admin::{ApiError, AppState, CODE_VALIDITY, ErrorBody, auth::actor, hex, new_code},
    org::{Actor, Command, Event, ServiceError},
    store::system_clock_ms,
};

/// Runs an organisation command with the caller's rights, as the organisation's rules allow.
///
/// One of (snake_case in `command`; ids are numbers; users and lines are addresses):
/// create_org {name, owner, domain, line, seat_limit?} (operator; seat_limit defaults to
/// [org] default_seats), set_seat_limit {org, limit} (operator), add_domain {org, domain}
/// (operator: proven at once; an admin: a claim, proven by DNS through
/// POST /v1/org/domains/verify or by the operator), confirm_domain {org, domain} (operator),
/// merge_domains {org, from, into}, create_unit {org, parent, name, line} (line in an agreed
/// domain), set_include_sub_units {org, unit, include}, set_logo_public {org, unit, public},
/// grant_unit_right / revoke_unit_right {org, unit, right} (a unit holds send, send_as_line,
/// receive_for_line, read_directory only), register {org}, add_member {org, user} (onboarding
/// admins; POST /v1/users sends it), approve {org, user}, assign {org, user, unit} (admins,
/// and the unit's group admins), move_member {org, user, unit}, change_member_type {org, user,
/// guest}, deactivate {org, user}, reactivate {org, user}, delete_member {org, user,
/// reassign_to?} (a deactivated member; closes the account), name_admin / remove_admin {org,
/// user} (owner; at most 5), name_group_admin / remove_group_admin {org, user, unit? | group?}
/// (admins; exactly one of unit and group), transfer_ownership {org, to}, accept_ownership
/// {org}, delete_org {org} (owner), create_group {name, owner, org?, scope? (owner, group,
/// account, provider, server, public; default owner), anonymous? (default false)} (the owner
/// an active user of the hub), add_group_member / remove_group_member {group, user} (the
/// group's managers; its group admins for active members of its organisation), add_subgroup
/// {group, sub} (the actor manages both; same organisation, or the subgroup holds a working
/// key of the group's organisation), set_group_scope {group, scope}, delete_group {group},
/// issue_key {org, unit, to_org, expires_ms?} (default five years), hand_key {key, group},
/// revoke_key {key}.
#[utoipa::path(post, path = "/v1/org", tag = "org", request_body = Command, responses(
    (status = 200, description = "done; the event", body = Event),
    (status = 400, description = "not a command, or a bad field (named)", body = ErrorBody),
    (status = 403, description = "refused by a rule (named), or the seats are taken", body = ErrorBody),
    (status = 404, description = "an unknown organisation, unit or member", body = ErrorBody),
    (status = 409, description = "taken, already assigned, or a wrong status", body = ErrorBody),
))]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogoQuery {
    /// The unit.
    #[param(value_type = u64)]
    unit: crate::org::UnitId,
}

/// Where a logo goes.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PutLogoQuery {
    /// The organisation.
    #[param(value_type = u64)]
    org: crate::org::OrgId,
    /// The unit.
    #[param(value_type = u64)]
    unit: crate::org::UnitId,
}

/// Sets a unit's logo: PNG or JPEG bytes, at least 512 x 512 pixels, at most 2 MiB (the
/// unit's managers).
#[utoipa::path(put, path = "/v1/org/logo", tag = "org", params(PutLogoQuery),
    request_body(content = Vec<u8>, content_type = "image/png"),
    responses(
        (status = 200, description = "the event", body = Event),
        (status = 400, description = "no org, or not a PNG or JPEG of at least 512 x 512", body = ErrorBody),
        (status = 403, description = "refused by a rule", body = ErrorBody),
        (status = 404, description = "an unknown organisation or unit", body = ErrorBody),
        (status = 413, description = "over 2 MiB", body = ErrorBody),
    ))]
pub(super) async fn put_logo(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<PutLogoQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Event>, ApiError> {
    use sha2::Digest;
    let actor = actor(&state, &headers).await?;
    let org = query.org;
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

/// A unit's logo (the organisation's members, or anyone once it is public).
#[utoipa::path(get, path = "/v1/org/logo", tag = "org", params(LogoQuery), responses(
    (status = 200, description = "the logo's bytes", content_type = "image/png", body = Vec<u8>),
    (status = 404, description = "no such unit the caller may see, or no logo", body = ErrorBody),
))]
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

/// An invitation to make.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct InviteBody {
    #[schema(value_type = u64)]
    org: crate::org::OrgId,
    /// The user invited (`user@domain`).
    user: String,
    /// As a guest, not a member.
    #[serde(default)]
    guest: bool,
    /// The unit they join.
    #[serde(default)]
    #[schema(value_type = Option<u64>)]
    unit: Option<crate::org::UnitId>,
}

/// An invitation's code, shown this once.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Invitation {
    code: String,
    /// `switchboard:invite?org=N&code=C`.
    link: String,
    /// When the code expires, Unix milliseconds.
    expires_ms: u64,
}

/// Invites a user into an organisation (those who onboard members); inviting again makes a
/// new code.
#[utoipa::path(post, path = "/v1/org/invite", tag = "org", request_body = InviteBody, responses(
    (status = 200, description = "the code", body = Invitation),
    (status = 403, description = "refused by a rule, or the seats are taken", body = ErrorBody),
    (status = 404, description = "an unknown organisation or unit", body = ErrorBody),
    (status = 409, description = "the user is a member already", body = ErrorBody),
))]
pub(super) async fn org_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<InviteBody>,
) -> Result<Json<Invitation>, ApiError> {
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
    Ok(Json(Invitation { code, link, expires_ms }))
}

/// An invitation's code.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct AcceptBody {
    #[schema(value_type = u64)]
    org: crate::org::OrgId,
    code: String,
}

/// Accepts an invitation: the token's user joins.
#[utoipa::path(post, path = "/v1/org/accept", tag = "org", request_body = AcceptBody, responses(
    (status = 200, description = "the event", body = Event),
    (status = 403, description = "a wrong, spent or expired code, or refused by a rule", body = ErrorBody),
    (status = 404, description = "no such organisation", body = ErrorBody),
    (status = 409, description = "the user is a member already, or of a status that cannot join", body = ErrorBody),
))]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// The position to read after (0: from the start).
    after: Option<u64>,
    /// Most events in the page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Newest first: the events before position `before` (default: the end of the log),
    /// walking back; not with `after`.
    #[serde(default)]
    newest: bool,
    /// With `newest`: the position to read before (the previous page's `next_after`).
    before: Option<u64>,
}

/// One event of the log and its position.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Logged {
    seq: u64,
    event: Event,
}

/// A page of the event log.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct EventPage {
    events: Vec<Logged>,
    /// The position to ask after next time (with `newest`: to ask before).
    next_after: u64,
    /// Whether the log goes on past `next_after` (with `newest`: before it).
    more: bool,
}

/// Most events one page holds.
const MAX_EVENTS_PAGE: usize = 1000;
/// Most events of the log one request looks at (visible to the caller or not): a caller who
/// sees few of them gets a short page and a cursor past what was looked at.
const MAX_EVENTS_SCANNED: usize = 10_000;

/// The next events after position `after` that the caller may read, and `next_after`, the
/// position to ask after next time. The walk goes on past events the caller may not read (up
/// to a bound per request), so a cursor always moves forward through the whole log; `more`
/// says whether the log goes on past `next_after`. With `newest=true` the walk goes backwards
/// from `before` (default: the end of the log), the newest event first, and `next_after` is
/// the position to ask before next time.
#[utoipa::path(get, path = "/v1/org/events", tag = "org", params(EventsQuery), responses(
    (status = 200, description = "a page of events", body = EventPage),
    (status = 400, description = "a bad `after` or `limit`", body = ErrorBody),
))]
pub(super) async fn org_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let limit = match query.limit {
        None => 100,
        Some(limit) if (1..=MAX_EVENTS_PAGE).contains(&limit) => limit,
        Some(_) => return Err(ApiError::field("limit", "between 1 and 1000")),
    };
    if query.newest {
        if query.after.is_some() {
            return Err(ApiError::field("after", "not with newest (use before)"));
        }
        return newest_events(&state, actor, query.before, limit).await;
    }
    if query.before.is_some() {
        return Err(ApiError::field("before", "only with newest=true"));
    }
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
                        out.push(Logged { seq, event });
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
    Ok(Json(EventPage { events, next_after, more }))
}

/// The events before position `before` that `actor` may read, newest first.
async fn newest_events(
    state: &AppState,
    actor: Actor,
    before: Option<u64>,
    limit: usize,
) -> Result<Json<EventPage>, ApiError> {
    let hub = state.hub.clone();
    let page = state
        .hub
        .store()
        .blocking(move |_| {
            let snapshot = hub.org().snapshot();
            let last = hub.org().last_position()?;
            // Positions start at 1; `end` is the first position not to read.
            let mut end = before.unwrap_or(u64::MAX).min(last + 1);
            let (mut out, mut scanned) = (Vec::new(), 0);
            'walk: while end > 1 && out.len() < limit && scanned < MAX_EVENTS_SCANNED {
                let start = end.saturating_sub(1000).max(1);
                let batch = hub.org().events(start - 1, (end - start) as usize)?;
                if batch.is_empty() {
                    end = start;
                    continue;
                }
                for (seq, event) in batch.into_iter().rev() {
                    scanned += 1;
                    end = seq;
                    if snapshot.may_read_event(&actor, &event) {
                        out.push(Logged { seq, event });
                        if out.len() == limit {
                            break 'walk;
                        }
                    }
                }
                end = end.min(start);
            }
            Ok((out, end, end > 1))
        })
        .await?;
    let (events, next_after, more) = page;
    Ok(Json(EventPage { events, next_after, more }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct OrgQuery {
    /// The organisation.
    #[param(value_type = u64)]
    pub(super) org: crate::org::OrgId,
}

/// An organisation's members (status pending, active or deactivated; role, unit, admin and
/// group-admin duties), open invitations and seats, for those who onboard, approve or manage
/// members.
#[utoipa::path(get, path = "/v1/org/members", tag = "org", params(OrgQuery), responses(
    (status = 200, description = "`{seats_taken, seat_limit, members, invitations}`", body = Object),
    (status = 403, description = "refused by a rule", body = ErrorBody),
    (status = 404, description = "no such organisation", body = ErrorBody),
))]
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

/// The keys issued by or to an organisation where the caller manages keys.
#[utoipa::path(get, path = "/v1/org/keys", tag = "org", responses(
    (status = 200, description = "the keys", body = [Object]),
))]
pub(super) async fn org_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::org::Key>>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let snapshot = state.hub.org().snapshot();
    Ok(Json(snapshot.keys_seen_by(&actor).into_iter().cloned().collect()))
}

/// The lines and colleagues of the caller's organisations, as its directory shows them (a user
/// token only).
#[utoipa::path(get, path = "/v1/org/directory", tag = "org", responses(
    (status = 200, description = "one entry per organisation or group", body = [Object]),
    (status = 400, description = "the operator token: the directory is a member's view", body = ErrorBody),
))]
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
