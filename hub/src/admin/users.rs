//! Users and their enrolment codes. The operator adds any user; an organisation's onboarding
//! admins add users of its agreed domains, who become its members. A new code is issued by
//! whoever looks after the account (the user, their organisation's admins, the operator), and
//! retires the previous one.

use crate::{
    admin::{
        ApiError, AppState, CODE_VALIDITY, ErrorBody,
        auth::{actor, authorise, require_looks_after},
        new_code,
    },
    org::{Actor, Command},
    store::{UserRecord, UserStatus, system_clock_ms},
};
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};

/// A name: a user's address (`user@domain`) or a device's (`user@domain/device`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NameBody {
    pub(super) name: String,
}

/// The answer to adding a user or asking a new code.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserWithCode {
    /// The user.
    pub user: UserRecord,
    /// A one-time enrolment code.
    pub code: String,
    /// When the code expires, Unix milliseconds.
    pub code_expires_ms: u64,
}

pub(super) fn account_name(name: &str) -> Result<String, ApiError> {
    crate::org::account_in("name", name)
        .map(|address| address.as_str().to_string())
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

pub(super) async fn issue(
    state: &AppState,
    user: UserRecord,
) -> Result<Json<UserWithCode>, ApiError> {
    let code = new_code();
    let expires = system_clock_ms() + CODE_VALIDITY.as_millis() as u64;
    state.hub.store().issue_code(user.queue, &code, expires).await?;
    Ok(Json(UserWithCode { user, code, code_expires_ms: expires }))
}

/// Adds a user and issues their first enrolment code.
///
/// The operator adds anyone; an organisation's onboarding admins add users of its agreed
/// domains, who join the organisation first (a refusal, a full organisation say, leaves no
/// account behind).
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = NameBody, responses(
    (status = 201, description = "the user and a one-time enrolment code", body = UserWithCode),
    (status = 400, description = "not an account address", body = ErrorBody),
    (status = 403, description = "not the operator nor an onboarding admin for the domain", body = ErrorBody),
    (status = 409, description = "the user exists", body = ErrorBody),
))]
pub(super) async fn add_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NameBody>,
) -> Result<(StatusCode, Json<UserWithCode>), ApiError> {
    let actor = actor(&state, &headers).await?;
    let name = account_name(&body.name)?;
    // An org admin adds members of their organisation: the member joins first, so that a
    // refusal (a full organisation, say) leaves no account behind.
    if actor != Actor::Operator {
        let org = state.hub.org().snapshot().onboarding_org(&actor, &name).ok_or(ApiError(
            StatusCode::FORBIDDEN,
            "not allowed: rule: the operator, and an organisation's onboarding admins for its              agreed domains, add users"
                .into(),
        ))?;
        let lookup = name.clone();
        if state.hub.store().blocking(move |store| store.user(&lookup)).await?.is_some() {
            return Err(ApiError(StatusCode::CONFLICT, format!("{name} already exists")));
        }
        let join = Command::AddMember { org, user: name.clone() };
        state.hub.org_execute(&actor, join).await?;
    }
    let user = state.hub.add_user(&name).await?;
    tracing::info!(user = %user.name, "user added");
    Ok((StatusCode::CREATED, issue(&state, user).await?))
}

/// Issues a new enrolment code for a user, retiring the previous one (the user, their
/// organisation's admins, the operator).
#[utoipa::path(post, path = "/v1/users/code", tag = "users", request_body = NameBody, responses(
    (status = 200, description = "the user and the new code", body = UserWithCode),
    (status = 403, description = "the caller does not look after the account", body = ErrorBody),
    (status = 404, description = "no such user", body = ErrorBody),
    (status = 409, description = "the user is deactivated", body = ErrorBody),
))]
pub(super) async fn new_user_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NameBody>,
) -> Result<Json<UserWithCode>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let name = account_name(&body.name)?;
    require_looks_after(&state, &actor, &name)?;
    let lookup = name.clone();
    let user = state.hub.store().blocking(move |store| store.user(&lookup)).await?;
    let user = user.ok_or(ApiError(StatusCode::NOT_FOUND, format!("unknown user {name}")))?;
    if user.status != UserStatus::Active {
        return Err(ApiError(StatusCode::CONFLICT, format!("{name} is deactivated")));
    }
    issue(&state, user).await
}

/// Every user of the hub (operator only).
#[utoipa::path(get, path = "/v1/users", tag = "users", responses(
    (status = 200, description = "the users", body = [UserRecord]),
))]
pub(super) async fn list_users(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<UserRecord>>, ApiError> {
    authorise(&state, &headers)?;
    Ok(Json(state.hub.store().blocking(|store| store.users()).await?))
}
