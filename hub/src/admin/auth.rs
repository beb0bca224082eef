//! Who is asking: the operator's token (`<data_dir>/admin.token`) or a user's token; and the
//! user tokens themselves (`/v1/tokens`): made only for existing, active users, listed, given
//! an expiry, revoked.
//!
//! A user token stops working at once when it expires, is revoked, or its user is deactivated
//! (on the hub or in any organisation) or deleted: every request looks the token and its user
//! up again.

use std::path::Path;

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};

use crate::{
    admin::{ApiError, AppState, ErrorBody, hex, users::account_name},
    org::{Actor, MAX_NAME},
    store::{TokenRecord, UserStatus, system_clock_ms},
};

/// Reads `<data_dir>/admin.token`, making it on first start.
pub fn load_or_create_token(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let token = hex(&rand::random::<[u8; 32]>());
    crate::net::tls::write_private(&path, token.as_bytes())?;
    Ok(token)
}

/// The operator token alone.
pub(super) fn authorise(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if is_operator(&state.token, headers) {
        Ok(())
    } else {
        Err(ApiError(StatusCode::UNAUTHORIZED, "missing or wrong admin token".into()))
    }
}

/// Whether `headers` carry the operator `token`, compared without an early exit so that the
/// time taken says nothing about the token.
pub(super) fn is_operator(token: &str, headers: &HeaderMap) -> bool {
    let given = bearer(headers);
    let expected = token.as_bytes();
    given.len() == expected.len()
        && given.bytes().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

pub(super) fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// The operator token, or a working user token: who is asking.
pub(super) async fn actor(state: &AppState, headers: &HeaderMap) -> Result<Actor, ApiError> {
    if authorise(state, headers).is_ok() {
        return Ok(Actor::Operator);
    }
    let token = bearer(headers).to_string();
    if token.is_empty() {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "missing token".into()));
    }
    let found = state
        .hub
        .store()
        .blocking(move |store| {
            let Some(record) = store.token(&token)? else { return Ok(None) };
            let user = store.user(&record.user)?;
            Ok(Some((record, user)))
        })
        .await?;
    let unauthorised = |why: &str| Err(ApiError(StatusCode::UNAUTHORIZED, why.into()));
    let Some((record, user)) = found else { return unauthorised("unknown token") };
    if record.expires_ms.is_some_and(|expires| expires <= system_clock_ms()) {
        return unauthorised("the token has expired");
    }
    match user {
        Some(user)
            if user.status == UserStatus::Active && !state.hub.is_deactivated(&user.name) =>
        {
            Ok(Actor::User(user.name))
        }
        _ => unauthorised("the token's user is deactivated or deleted"),
    }
}

/// Refuses with 403 unless `actor` looks after `user`'s account (the user, their org's
/// onboarding admins, the operator).
pub(super) fn require_looks_after(
    state: &AppState,
    actor: &Actor,
    user: &str,
) -> Result<(), ApiError> {
    if state.hub.org().snapshot().looks_after(actor, user) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "not allowed: rule: only the user, their organisation's admins and the operator \
                 look after {user}'s account"
            ),
        ))
    }
}

/// A token to make.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    /// The user it acts as (`user@domain`): existing and active.
    user: String,
    /// When it stops working, Unix milliseconds, in the future; never when left out.
    #[serde(default)]
    expires_ms: Option<u64>,
    /// A name for people.
    #[serde(default)]
    label: Option<String>,
}

/// A token made: its record, and the token itself (shown this once).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct IssuedToken {
    #[serde(flatten)]
    record: TokenRecord,
    /// The bearer token: `Authorization: Bearer <token>`.
    token: String,
}

/// Makes a token acting as an existing, active user (the user, their organisation's admins,
/// the operator).
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = TokenBody, responses(
    (status = 200, description = "the token and its record", body = IssuedToken),
    (status = 400, description = "a bad field", body = ErrorBody),
    (status = 403, description = "the caller does not look after the account", body = ErrorBody),
    (status = 404, description = "no such user", body = ErrorBody),
    (status = 409, description = "the user is deactivated", body = ErrorBody),
))]
pub(super) async fn new_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<TokenBody>,
) -> Result<Json<IssuedToken>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let user = account_name(&body.user)?;
    require_looks_after(&state, &actor, &user)?;
    let now = system_clock_ms();
    if body.expires_ms.is_some_and(|expires| expires <= now) {
        return Err(ApiError::field("expires_ms", "must be in the future"));
    }
    let label = match body.label {
        Some(label) => Some(
            crate::org::text("label", &label, MAX_NAME)
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?,
        ),
        None => None,
    };
    let lookup = user.clone();
    let record = state.hub.store().blocking(move |store| store.user(&lookup)).await?;
    match record {
        Some(record) if record.status == UserStatus::Active && !state.hub.is_deactivated(&user) => {
        }
        Some(_) => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("{user} is deactivated; a token is made only for an active user"),
            ));
        }
        None => return Err(ApiError(StatusCode::NOT_FOUND, format!("unknown user {user}"))),
    }
    let token = hex(&rand::random::<[u8; 32]>());
    let record = TokenRecord {
        id: crate::store::token_id_of(&token),
        user: user.clone(),
        created_ms: now,
        expires_ms: body.expires_ms,
        label,
    };
    state.hub.store().issue_token(&token, &record).await?;
    Ok(Json(IssuedToken { record, token }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TokensQuery {
    /// Only this user's tokens.
    user: Option<String>,
}

/// The records (never the tokens) of the tokens the caller may see.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(TokensQuery), responses(
    (status = 200, description = "token records", body = [TokenRecord]),
))]
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<TokensQuery>,
) -> Result<Json<Vec<TokenRecord>>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let user = query.user.clone();
    let tokens = state.hub.store().blocking(move |store| store.tokens(user.as_deref())).await?;
    let snapshot = state.hub.org().snapshot();
    Ok(Json(tokens.into_iter().filter(|t| snapshot.looks_after(&actor, &t.user)).collect()))
}

/// A token by its id.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeBody {
    /// The id from its record.
    id: String,
}

/// Deletes a token by its id; it stops working at once.
#[utoipa::path(post, path = "/v1/tokens/revoke", tag = "tokens", request_body = RevokeBody, responses(
    (status = 200, description = "the record of the token revoked", body = TokenRecord),
    (status = 404, description = "no such token the caller may see", body = ErrorBody),
))]
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RevokeBody>,
) -> Result<Json<TokenRecord>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let id = body.id.clone();
    let tokens = state.hub.store().blocking(|store| store.tokens(None)).await?;
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no token {id}"));
    let record = tokens.into_iter().find(|t| t.id == body.id).ok_or_else(not_found)?;
    // Someone who may not see a token is told it does not exist.
    if !state.hub.org().snapshot().looks_after(&actor, &record.user) {
        return Err(not_found());
    }
    state.hub.store().revoke_token(&body.id).await?.ok_or_else(not_found)?;
    Ok(Json(record))
}
