//! Devices: listing, bulk registration from known public keys, revocation (operator only);
//! their kinds, and a user's preferred device.

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{Address, AddressKind};

use crate::{
    admin::{
        ApiError, AppState, ErrorBody,
        auth::authorise,
        provisioning::Provisioning,
        users::{NameBody, account_name},
    },
    store::{DeviceKind, DeviceRecord},
};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeviceQuery {
    /// The user (`user@domain`).
    user: Option<String>,
}

/// The enrolled devices, all or one user's (operator only).
#[utoipa::path(get, path = "/v1/devices", tag = "devices", params(DeviceQuery), responses(
    (status = 200, description = "the devices", body = [DeviceRecord]),
    (status = 400, description = "not an account address", body = ErrorBody),
))]
pub(super) async fn list_devices(
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
pub(super) const REGISTER_BODY_LIMIT: usize = 8 << 20;

/// One device to register: its address and its ed25519 public key in hex.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceKey {
    /// `user@domain/device`.
    pub name: String,
    /// The device's ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// What kind of machine it is (unspecified when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DeviceKind>,
}

/// Devices whose public keys the operator knows, registered without enrolment codes.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct RegisterBody {
    /// At most 10,000.
    devices: Vec<DeviceKey>,
    /// Adds the users that do not exist yet (otherwise their devices are refused, 404).
    #[serde(default)]
    add_users: bool,
}

/// What registering one device came to.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    /// How many devices were registered.
    pub registered: usize,
    /// One result per device, in the order given.
    pub results: Vec<Registered>,
}

/// Registers devices whose keys the operator knows, with no codes (operator only). Each
/// device succeeds or fails on its own, in the order given.
#[utoipa::path(post, path = "/v1/devices", tag = "devices", request_body = RegisterBody, responses(
    (status = 200, description = "one result per device", body = Registration),
    (status = 400, description = "more than 10,000 devices", body = ErrorBody),
    (status = 413, description = "a body over 8 MiB", body = ErrorBody),
))]
pub(super) async fn register_devices(
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
    let outcomes = Provisioning::new(&state.hub).register_devices(&valid, body.add_users).await;
    let mut registered = 0;
    for (index, outcome) in positions.into_iter().zip(outcomes) {
        match outcome {
            Ok(record) => {
                registered += 1;
                let kind = body.devices[index].kind.filter(|k| *k != record.kind);
                results[index].device = Some(match kind {
                    Some(kind) => state.hub.store().set_device_kind(&record.name, kind).await?,
                    None => record,
                });
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

pub(super) fn parse_device_key(device: &DeviceKey) -> Result<(Address, [u8; 32]), ApiError> {
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

/// A device and its kind.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KindBody {
    /// The device (`user@domain/device`).
    name: String,
    kind: DeviceKind,
}

/// Says what kind of machine a device is (the operator, or the device's own user).
#[utoipa::path(post, path = "/v1/devices/kind", tag = "devices", request_body = KindBody, responses(
    (status = 200, description = "the device", body = DeviceRecord),
    (status = 400, description = "not a device address", body = ErrorBody),
    (status = 403, description = "neither the operator nor the device's user", body = ErrorBody),
    (status = 404, description = "no such device", body = ErrorBody),
))]
pub(super) async fn set_device_kind(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<KindBody>,
) -> Result<Json<DeviceRecord>, ApiError> {
    let actor = super::auth::actor(&state, &headers).await?;
    let address = match Address::parse(&body.name) {
        Ok(address) if address.kind() == AddressKind::Device => address,
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("{} is not a device address (local@domain/device)", body.name),
            ));
        }
    };
    let own = matches!(&actor, crate::org::Actor::User(user)
        if address.account().is_some_and(|a| a.as_str() == user));
    if !matches!(actor, crate::org::Actor::Operator) && !own {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only the operator and the device's user say what kind of machine it is".into(),
        ));
    }
    let record = state.hub.store().set_device_kind(address.as_str(), body.kind).await?;
    Ok(Json(record))
}

/// A user's preferred device, and why it is.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Preferred {
    user: String,
    /// None before the user has a desktop (and no home record).
    device: Option<DeviceRecord>,
    /// `home record`, `first desktop` or `no desktop yet`.
    why: &'static str,
}

/// A user's preferred device (the user, the operator): the device that signed their home
/// record, or before they have one, their first enrolled desktop that is not revoked.
#[utoipa::path(get, path = "/v1/devices/preferred", tag = "devices", params(DeviceQuery), responses(
    (status = 200, description = "the preferred device", body = Preferred),
    (status = 400, description = "no user, or not an account address", body = ErrorBody),
    (status = 403, description = "neither the user nor the operator", body = ErrorBody),
))]
pub(super) async fn preferred_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<DeviceQuery>,
) -> Result<Json<Preferred>, ApiError> {
    let actor = super::auth::actor(&state, &headers).await?;
    let Some(user) = query.user else {
        return Err(ApiError(StatusCode::BAD_REQUEST, "user: required".into()));
    };
    let user = account_name(&user)?;
    if !matches!(&actor, crate::org::Actor::Operator)
        && !matches!(&actor, crate::org::Actor::User(u) if *u == user)
    {
        return Err(ApiError(StatusCode::FORBIDDEN, format!("only {user} and the operator")));
    }
    let home = state.hub.home_of(&user).await?;
    let lookup = user.clone();
    let devices =
        state.hub.store().blocking(move |store| store.device_records(Some(&lookup))).await?;
    let (device, why) = match home {
        Some(record) => (devices.into_iter().find(|d| d.name == record.device), "home record"),
        None => {
            let first = devices
                .into_iter()
                .filter(|d| d.kind == DeviceKind::Desktop && !d.revoked)
                .min_by(|a, b| (a.enrolled_ms, &a.name).cmp(&(b.enrolled_ms, &b.name)));
            (first, "first desktop")
        }
    };
    let why = if device.is_some() { why } else { "no desktop yet" };
    Ok(Json(Preferred { user, device, why }))
}

/// Revokes a device: its sessions end at once and it is refused from then on (operator
/// only).
#[utoipa::path(post, path = "/v1/devices/revoke", tag = "devices", request_body = NameBody, responses(
    (status = 200, description = "the device", body = DeviceRecord),
    (status = 400, description = "not a device address", body = ErrorBody),
    (status = 404, description = "no such device", body = ErrorBody),
))]
pub(super) async fn revoke_device(
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
