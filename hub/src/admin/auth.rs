//! Who is asking: the operator's token (`<data_dir>/admin.token`) or a user's token (made by
//! `POST /v1/tokens`).

use std::path::Path;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;

use crate::{
    admin::{ApiError, AppState, hex, users::account_name},
    org::Actor,
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
    let given = bearer(headers);
    // Compare without an early exit so the time taken says nothing about the token.
    let expected = state.token.as_bytes();
    let same = given.len() == expected.len()
        && given.bytes().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError(StatusCode::UNAUTHORIZED, "missing or wrong admin token".into()))
    }
}

pub(super) fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// The operator token, or a user token: who is asking.
pub(super) async fn actor(state: &AppState, headers: &HeaderMap) -> Result<Actor, ApiError> {
    if authorise(state, headers).is_ok() {
        return Ok(Actor::Operator);
    }
    let token = bearer(headers).to_string();
    if token.is_empty() {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "missing token".into()));
    }
    match state.hub.store().blocking(move |store| store.token_user(&token)).await? {
        Some(user) => Ok(Actor::User(user)),
        None => Err(ApiError(StatusCode::UNAUTHORIZED, "unknown token".into())),
    }
}

#[derive(Deserialize)]
pub(super) struct TokenBody {
    user: String,
}

pub(super) async fn new_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<TokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorise(&state, &headers)?;
    let user = account_name(&body.user)?;
    let token = hex(&rand::random::<[u8; 32]>());
    state.hub.store().issue_token(&token, &user).await?;
    Ok(Json(serde_json::json!({ "user": user, "token": token })))
}
