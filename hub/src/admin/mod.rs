//! The admin API over HTTP: users, enrolment codes, devices, health.
//!
//! Every route but `/v1/health` needs `Authorization: Bearer <token>`, the token being the
//! contents of `<data_dir>/admin.token` (made on first start, readable by its owner only). The
//! `hub user ...` and `hub device ...` commands read that file and call this API.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/health` | | `{"status":"ok"}` |
//! | `GET /v1/users` | | `[user]` |
//! | `POST /v1/users` | `{"name"}` | `{"user", "code", "code_expires_ms"}` (201) |
//! | `POST /v1/users/code` | `{"name"}` | `{"user", "code", "code_expires_ms"}`: a new code |
//! | `GET /v1/devices[?user=NAME]` | | `[device]` |
//! | `POST /v1/devices` | `{"devices": [{"name", "public_key"}], "add_users"?}` | `{"registered", "results": [{"name", "device"} or {"name", "error", "status"}]}`: devices whose keys the operator knows, no codes, at most 10,000 per call |
//! | `POST /v1/devices/revoke` | `{"name"}` | `device` |
//! | `POST /v1/tokens` | `{"user"}` | `{"token"}`: a token acting as that user (operator only) |
//! | `POST /v1/org` | an org command (`{"command": "create_unit", ...}`) | the event |
//! | `POST /v1/org/invite` | `{"org", "user", "guest", "unit"?}` | `{"code", "link", "expires_ms"}`; again: a new code |
//! | `POST /v1/org/accept` | `{"org", "code"}` | the event (the token's user joins) |
//! | `PUT /v1/org/logo?org=N&unit=M` | PNG or JPEG bytes, at least 512 x 512 | the event |
//! | `GET /v1/org/logo?unit=M` | | the logo's bytes |
//! | `GET /v1/org/events[?after=N]` | | `[{"seq", "event"}]` the caller may read |
//! | `GET /v1/org/directory` | | lines and colleagues of the caller's organisations |
//! | `GET /v1/metrics` | | `{"connections", "resident_bytes", "store": {...}}` (operator only) |
//! | `GET /v1/openapi.json` | | the OpenAPI document of this API |
//!
//! The token in `admin.token` acts as the hub operator; tokens from `POST /v1/tokens` act as
//! their user, whose rights every org call checks. A refused org command answers 403 with the
//! rule that refused it.
//!
//! Errors answer `{"error": "..."}` with 400 (bad input), 401 (token), 404 (unknown), 409
//! (exists) or 500.

pub mod provisioning;

use std::{path::Path, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{Address, AddressKind};
use tokio::sync::watch;

use crate::{
    fanout::Hub,
    org::{Actor, Command, Event, OrgError, Right, ServiceError, Status},
    store::{DeviceRecord, StoreError, UserRecord, system_clock_ms},
};

/// How long an enrolment code stays valid.
pub const CODE_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

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

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new enrolment code: 16 characters from an alphabet without look-alikes, in groups of four.
pub fn new_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let raw: [u8; 16] = rand::random();
    let chars: Vec<char> =
        raw.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
    chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    token: Arc<str>,
}

/// Serves the admin API on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    token: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/v1/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/v1/metrics", get(metrics))
        .route("/v1/users", get(list_users).post(add_user))
        .route("/v1/users/code", post(new_user_code))
        .route(
            "/v1/devices",
            get(list_devices)
                .post(register_devices)
                .layer(axum::extract::DefaultBodyLimit::max(REGISTER_BODY_LIMIT)),
        )
        .route("/v1/devices/revoke", post(revoke_device))
        .route("/v1/tokens", post(new_token))
        .route("/v1/org", post(org_command))
        .route("/v1/org/events", get(org_events))
        .route("/v1/org/invite", post(org_invite))
        .route(
            "/v1/org/logo",
            get(get_logo)
                .put(put_logo)
                .layer(axum::extract::DefaultBodyLimit::max(crate::org::MAX_LOGO_BYTES + 1)),
        )
        .route("/v1/org/accept", post(org_accept))
        .route("/v1/org/directory", get(org_directory))
        .route(
            "/v1/openapi.json",
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
        .with_state(AppState { hub, token: token.into() });
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::error!(%error, "admin API stopped");
    }
}

/// An error answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let status = match &error {
            StoreError::Exists(_) => StatusCode::CONFLICT,
            StoreError::UnknownUser(_) | StoreError::UnknownDeviceName(_) => StatusCode::NOT_FOUND,
            StoreError::InvalidName(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, error.to_string())
    }
}

/// The operator token alone.
fn authorise(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// The operator token, or a user token: who is asking.
async fn actor(state: &AppState, headers: &HeaderMap) -> Result<Actor, ApiError> {
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
struct TokenBody {
    user: String,
}

async fn new_token(
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

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Store(error) => error.into(),
            ServiceError::Refused(refused) => {
                let status = match &refused {
                    OrgError::NotAllowed { .. } | OrgError::SeatLimit { .. } => {
                        StatusCode::FORBIDDEN
                    }
                    OrgError::UnknownOrg(_)
                    | OrgError::UnknownUnit(_)
                    | OrgError::UnknownMember(_) => StatusCode::NOT_FOUND,
                    OrgError::Taken(_)
                    | OrgError::AlreadyAssigned { .. }
                    | OrgError::WrongStatus { .. } => StatusCode::CONFLICT,
                    OrgError::DomainNotAgreed { .. } | OrgError::Invalid(_) => {
                        StatusCode::BAD_REQUEST
                    }
                };
                ApiError(status, refused.to_string())
            }
        }
    }
}

async fn org_command(
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
struct LogoQuery {
    org: Option<crate::org::OrgId>,
    unit: crate::org::UnitId,
}

async fn put_logo(
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

async fn get_logo(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LogoQuery>,
) -> Result<Response, ApiError> {
    actor(&state, &headers).await?;
    let snapshot = state.hub.org().snapshot();
    let unit =
        snapshot.unit(query.unit).ok_or(ApiError(StatusCode::NOT_FOUND, "no such unit".into()))?;
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
struct InviteBody {
    org: crate::org::OrgId,
    user: String,
    #[serde(default)]
    guest: bool,
    #[serde(default)]
    unit: Option<crate::org::UnitId>,
}

fn code_hash_hex(code: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(code.trim().as_bytes()))
}

async fn org_invite(
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
        code_hash: code_hash_hex(&code),
        expires_ms,
    };
    state.hub.org_execute(&actor, command).await?;
    let link = format!("switchboard:invite?org={}&code={code}", body.org.0);
    Ok(Json(serde_json::json!({ "code": code, "link": link, "expires_ms": expires_ms })))
}

#[derive(Deserialize)]
struct AcceptBody {
    org: crate::org::OrgId,
    code: String,
}

async fn org_accept(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<AcceptBody>,
) -> Result<Json<Event>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let command = Command::AcceptInvitation { org: body.org, code_hash: code_hash_hex(&body.code) };
    Ok(Json(state.hub.org_execute(&actor, command).await?))
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<u64>,
}

async fn org_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let actor = actor(&state, &headers).await?;
    let hub = state.hub.clone();
    let after = query.after.unwrap_or(0);
    let events = state.hub.store().blocking(move |_| hub.org().events(after, 1000)).await?;
    let snapshot = state.hub.org().snapshot();
    let readable = |event: &Event| match &actor {
        Actor::Operator => true,
        Actor::User(_) => event
            .org()
            .and_then(|id| snapshot.org(id))
            .is_some_and(|org| snapshot.holds(org, &actor, Right::ReadEventLog)),
    };
    Ok(Json(
        events
            .into_iter()
            .filter(|(_, event)| readable(event))
            .map(|(seq, event)| serde_json::json!({ "seq": seq, "event": event }))
            .collect(),
    ))
}

async fn org_directory(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let Actor::User(user) = actor(&state, &headers).await? else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the directory is a member's view; use a user token".into(),
        ));
    };
    let snapshot = state.hub.org().snapshot();
    let mut out = Vec::new();
    for membership in snapshot.memberships(&user).filter(|m| m.status == Status::Active) {
        let Some(org) = snapshot.org(membership.org) else { continue };
        let units: Vec<_> = snapshot.units().filter(|u| u.org == org.id).collect();
        let lines: Vec<_> = units
            .iter()
            .map(|u| serde_json::json!({ "name": u.name, "line": u.address }))
            .collect();
        let mut colleagues = Vec::new();
        for unit in &units {
            for member in snapshot.members_of(unit.id).filter(|m| m.status == Status::Active) {
                colleagues.push(serde_json::json!({ "user": member.user, "unit": unit.address }));
            }
        }
        out.push(serde_json::json!({
            "org": org.id, "name": org.name, "lines": lines, "members": colleagues
        }));
    }
    // Groups the user reads or manages; an anonymous group's members are shown only to those
    // who manage it.
    let actor = Actor::User(user.clone());
    for group in snapshot.groups() {
        let manages = snapshot.manages(group, &actor);
        if !manages && !snapshot.group_readers(&group.address).contains(&user) {
            continue;
        }
        let members: Vec<&String> =
            if group.anonymous && !manages { Vec::new() } else { group.members.iter().collect() };
        out.push(serde_json::json!({
            "group": group.address, "anonymous": group.anonymous, "members": members
        }));
    }
    Ok(Json(out))
}

/// The OpenAPI document of the admin API.
const OPENAPI: &str = include_str!("openapi.json");

#[derive(Deserialize)]
struct NameBody {
    name: String,
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

fn account_name(name: &str) -> Result<String, ApiError> {
    match Address::parse(name) {
        Ok(address) if address.kind() == AddressKind::Account => Ok(address.as_str().to_string()),
        Ok(_) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{name} is not a user address (local@domain)"),
        )),
        Err(error) => Err(ApiError(StatusCode::BAD_REQUEST, format!("{name}: {error}"))),
    }
}

async fn issue(state: &AppState, user: UserRecord) -> Result<Json<UserWithCode>, ApiError> {
    let code = new_code();
    let expires = system_clock_ms() + CODE_VALIDITY.as_millis() as u64;
    state.hub.store().issue_code(user.queue, &code, expires).await?;
    Ok(Json(UserWithCode { user, code, code_expires_ms: expires }))
}

async fn add_user(
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

async fn new_user_code(
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

async fn list_users(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<UserRecord>>, ApiError> {
    authorise(&state, &headers)?;
    Ok(Json(state.hub.store().blocking(|store| store.users()).await?))
}

#[derive(Deserialize)]
struct DeviceQuery {
    user: Option<String>,
}

async fn list_devices(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<DeviceQuery>,
) -> Result<Json<Vec<DeviceRecord>>, ApiError> {
    authorise(&state, &headers)?;
    let user = query.user.as_deref().map(account_name).transpose()?;
    let records = state.hub.store().blocking(move |store| store.device_records(user.as_deref()));
    Ok(Json(records.await?))
}

/// The most devices one `POST /v1/devices` registers.
pub const MAX_REGISTER: usize = 10_000;

/// Room for [`MAX_REGISTER`] entries with long names.
const REGISTER_BODY_LIMIT: usize = 8 << 20;

/// One device to register: its address and its ed25519 public key in hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceKey {
    /// `user@domain/device`.
    pub name: String,
    /// The device's ed25519 public key, 64 hex digits.
    pub public_key: String,
}

#[derive(Deserialize)]
struct RegisterBody {
    devices: Vec<DeviceKey>,
    #[serde(default)]
    add_users: bool,
}

/// What registering one device came to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    /// The device's address as given.
    pub name: String,
    /// The device's record, when registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRecord>,
    /// Why it was not, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status the error would have on its own (400, 404, 409, 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// The answer to `POST /v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// How many devices were registered.
    pub registered: usize,
    /// One result per device, in the order given.
    pub results: Vec<Registered>,
}

async fn register_devices(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<RegisterBody>,
) -> Result<Json<Registration>, ApiError> {
    authorise(&state, &headers)?;
    if body.devices.len() > MAX_REGISTER {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{} devices in one call; at most {MAX_REGISTER}", body.devices.len()),
        ));
    }
    let mut results: Vec<Registered> = body
        .devices
        .iter()
        .map(|d| Registered { name: d.name.clone(), device: None, error: None, status: None })
        .collect();
    let mut valid = Vec::with_capacity(body.devices.len());
    let mut positions = Vec::with_capacity(body.devices.len());
    for (index, device) in body.devices.iter().enumerate() {
        match parse_device_key(device) {
            Ok(parsed) => {
                valid.push(parsed);
                positions.push(index);
            }
            Err(ApiError(status, text)) => {
                results[index].error = Some(text);
                results[index].status = Some(status.as_u16());
            }
        }
    }
    let outcomes =
        provisioning::Provisioning::new(&state.hub).register_devices(&valid, body.add_users).await;
    let mut registered = 0;
    for (index, outcome) in positions.into_iter().zip(outcomes) {
        match outcome {
            Ok(record) => {
                registered += 1;
                results[index].device = Some(record);
            }
            Err(error) => {
                let ApiError(status, text) = ApiError::from(error);
                results[index].error = Some(text);
                results[index].status = Some(status.as_u16());
            }
        }
    }
    tracing::info!(registered, refused = results.len() - registered, "devices registered");
    Ok(Json(Registration { registered, results }))
}

fn parse_device_key(device: &DeviceKey) -> Result<(Address, [u8; 32]), ApiError> {
    let bad = |text: String| ApiError(StatusCode::BAD_REQUEST, text);
    let address = match Address::parse(&device.name) {
        Ok(address) if address.kind() == AddressKind::Device => address,
        _ => {
            return Err(bad(format!(
                "{} is not a device address (local@domain/device)",
                device.name
            )));
        }
    };
    let key: [u8; 32] = crate::client::unhex(device.public_key.trim())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| bad("public_key must be 64 hex digits (an ed25519 key)".into()))?;
    if ed25519_dalek::VerifyingKey::from_bytes(&key).is_err() {
        return Err(bad("public_key is not a valid ed25519 key".into()));
    }
    Ok((address, key))
}

async fn revoke_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NameBody>,
) -> Result<Json<DeviceRecord>, ApiError> {
    authorise(&state, &headers)?;
    let name = match Address::parse(&body.name) {
        Ok(address) if address.kind() == AddressKind::Device => address.as_str().to_string(),
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("{} is not a device address (local@domain/device)", body.name),
            ));
        }
    };
    let record = state.hub.store().revoke_device(&name).await?;
    state.hub.sessions().kick(record.device);
    tracing::info!(device = %record.name, "device revoked");
    Ok(Json(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_four_groups_of_four_unambiguous_characters() {
        let code = new_code();
        assert_eq!(code.len(), 19);
        assert!(code.split('-').all(|g| g.len() == 4));
        assert!(!code.contains(['0', 'O', '1', 'I']));
        assert_ne!(new_code(), code);
    }
}

/// What `GET /v1/metrics` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// QUIC connections open now.
    pub connections: u64,
    /// The hub process's resident memory in bytes (Linux; absent elsewhere).
    pub resident_bytes: Option<u64>,
    /// Write batches the store has committed (each one fsync).
    pub store_batches: u64,
    /// Commands in those batches.
    pub store_commands: u64,
    /// Messages appended to queues.
    pub store_enqueued: u64,
    /// Dedupe checks that had to look on disk: the message id was older than what the store
    /// holds in memory (late retransmissions, the first minutes after a restart). A steady
    /// rise under normal traffic means `[store] dedupe_memory` is too small.
    #[serde(default)]
    pub store_dedupe_disk_lookups: u64,
    /// Write batches fsynced: every batch but those of acknowledgements alone.
    #[serde(default)]
    pub store_synced_batches: u64,
}

/// The resident set size of this process, from `/proc/self/statm` (in pages, taken as 4 KiB:
/// the page size of the x86-64 and most arm64 Linux systems the hub runs on).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Metrics>, ApiError> {
    authorise(&state, &headers)?;
    let store = state.hub.store().metrics();
    Ok(Json(Metrics {
        connections: state.hub.connections() as u64,
        resident_bytes: resident_bytes(),
        store_batches: store.batches.load(std::sync::atomic::Ordering::Relaxed),
        store_commands: store.commands.load(std::sync::atomic::Ordering::Relaxed),
        store_enqueued: store.enqueued.load(std::sync::atomic::Ordering::Relaxed),
        store_dedupe_disk_lookups: store
            .dedupe_disk_lookups
            .load(std::sync::atomic::Ordering::Relaxed),
        store_synced_batches: store.synced_batches.load(std::sync::atomic::Ordering::Relaxed),
    }))
}
