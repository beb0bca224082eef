//! Users and their enrolment codes (operator only).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{Address, AddressKind};

use crate::{
    admin::{ApiError, AppState, CODE_VALIDITY, auth::authorise, new_code},
    store::{UserRecord, system_clock_ms},
};

#[derive(Deserialize)]
pub(super) struct NameBody {
    pub(super) name: String,
}

/// The answer to adding a user or asking a new code.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserWithCode {
    /// The user.
    pub user: UserRecord,
    /// A one-time enrolment code.
    pub code: String,
    /// When the code expires, Unix milliseconds.
    pub code_expires_ms: u64,
}

pub(super) fn account_name(name: &str) -> Result<String, ApiError> {
    match Address::parse(name) {
        Ok(address) if address.kind() == AddressKind::Account => Ok(address.as_str().to_string()),
        Ok(_) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{name} is not a user address (local@domain)"),
        )),
        Err(error) => Err(ApiError(StatusCode::BAD_REQUEST, format!("{name}: {error}"))),
    }
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

pub(super) async fn add_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NameBody>,
) -> Result<(StatusCode, Json<UserWithCode>), ApiError> {
    authorise(&state, &headers)?;
    let name = account_name(&body.name)?;
    let user = state.hub.add_user(&name).await?;
    tracing::info!(user = %user.name, "user added");
    Ok((StatusCode::CREATED, issue(&state, user).await?))
}

pub(super) async fn new_user_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NameBody>,
) -> Result<Json<UserWithCode>, ApiError> {
    authorise(&state, &headers)?;
    let name = account_name(&body.name)?;
    let lookup = name.clone();
    let user = state.hub.store().blocking(move |store| store.user(&lookup)).await?;
    let user = user.ok_or(ApiError(StatusCode::NOT_FOUND, format!("unknown user {name}")))?;
    issue(&state, user).await
}

pub(super) async fn list_users(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<UserRecord>>, ApiError> {
    authorise(&state, &headers)?;
    Ok(Json(state.hub.store().blocking(|store| store.users()).await?))
}
