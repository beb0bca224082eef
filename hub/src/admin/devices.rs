//! Devices: listing, bulk registration from known public keys, revocation (operator only).

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{Address, AddressKind};

use crate::{
    admin::{
        ApiError, AppState,
        auth::authorise,
        provisioning::Provisioning,
        users::{NameBody, account_name},
    },
    store::DeviceRecord,
};

#[derive(Deserialize)]
pub(super) struct DeviceQuery {
    user: Option<String>,
}

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceKey {
    /// `user@domain/device`.
    pub name: String,
    /// The device's ed25519 public key, 64 hex digits.
    pub public_key: String,
}

#[derive(Deserialize)]
pub(super) struct RegisterBody {
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
