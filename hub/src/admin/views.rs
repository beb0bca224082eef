//! What the caller is, an organisation at a glance, and the groups the caller may see: the
//! read-only views the console's pages are made from.

use axum::{
    Json,
    extract::{Query, State},
    http::HeaderMap,
};

use crate::{
    admin::{ApiError, AppState, ErrorBody, auth::actor, org::OrgQuery},
    org::{GroupView, Overview, ServiceError, Standing},
    store::system_clock_ms,
};

/// Who the token acts as, and its part in each organisation: role, status, whether it
/// manages members or reads the event log, what it looks after as a group admin (every
/// organisation for the operator).
#[utoipa::path(get, path = "/v1/me", tag = "org", responses(
    (status = 200, description = "`{actor, user, orgs: [{org, name, role, status, manages_members, reads_log, group_admin_of}]}`", body = Object),
))]
pub(super) async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Standing>, ApiError> {
    let actor = actor(&state, &headers).await?;
    Ok(Json(state.hub.org().snapshot().standing(&actor)))
}

/// An organisation at a glance: owner, admins, seats, domains with their state, the units
/// tree with lines, group admins (the owner, admins and group admins, the operator).
#[utoipa::path(get, path = "/v1/org/overview", tag = "org", params(OrgQuery), responses(
    (status = 200, description = "`{org, name, owner, pending_owner, admins, seats_taken, seat_limit, domains: [{domain, state, into}], units: [{id, parent, depth, name, line, include_sub_units, rights, logo, logo_public, members}], group_admins: [{user, manages}]}`", body = Object),
    (status = 403, description = "refused by a rule", body = ErrorBody),
    (status = 404, description = "no such organisation", body = ErrorBody),
))]
pub(super) async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<OrgQuery>,
) -> Result<Json<Overview>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let snapshot = state.hub.org().snapshot();
    let overview = snapshot
        .overview(&actor, query.org, system_clock_ms())
        .map_err(|e| ApiError::from(ServiceError::Refused(e)))?;
    Ok(Json(overview))
}

/// The groups the caller may see (manages, looks after as a group admin, owns or belongs to;
/// every group for the operator), each with owner, organisation, scope, anonymity, subgroups,
/// and its members unless it is anonymous and the caller does not manage it (`members` null).
#[utoipa::path(get, path = "/v1/org/groups", tag = "org", responses(
    (status = 200, description = "`[{address, owner, org, scope, anonymous, members, subgroups, manages, group_admin}]`", body = [Object]),
))]
pub(super) async fn groups(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<GroupView>>, ApiError> {
    let actor = actor(&state, &headers).await?;
    Ok(Json(state.hub.org().snapshot().groups_seen_by(&actor)))
}
