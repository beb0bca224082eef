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
use serde::Deserialize;

use crate::{
    admin::{ApiError, AppState, hex, users::account_name},
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    user: String,
    #[serde(default)]
    expires_ms: Option<u64>,
    #[serde(default)]
    label: Option<String>,
}

/// `POST /v1/tokens`: a token acting as an existing, active user.
pub(super) async fn new_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<TokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    let mut answer = serde_json::json!(record);
    answer["token"] = serde_json::json!(token);
    Ok(Json(answer))
}

#[derive(Deserialize)]
pub(super) struct TokensQuery {
    user: Option<String>,
}

/// `GET /v1/tokens[?user=NAME]`: the records (never the tokens) the caller may see.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeBody {
    id: String,
}

/// `POST /v1/tokens/revoke`: deletes a token by its id.
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
