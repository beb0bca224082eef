//! The admin API over HTTP: users, enrolment codes, tokens, devices, organisations, contacts,
//! health.
//!
//! Every route but `/v1/health` needs `Authorization: Bearer <token>`: the contents of
//! `<data_dir>/admin.token` (made on first start, readable by its owner only), which acts as the
//! hub operator, or a user token from `POST /v1/tokens`, which acts as its user and stops
//! working when it expires, is revoked, or its user is deactivated or deleted. The `hub user`,
//! `hub device` and `hub org` commands call this API.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /v1/health` | | `{"status":"ok"}` |
//! | `GET /v1/hub` | | `{"name", "domains", "quic", "pin", "certificate"}`: how to reach this hub (operator only) |
//! | `GET /v1/users` | | `[user]` (operator) |
//! | `POST /v1/users` | `{"name"}` | `{"user", "code", "code_expires_ms"}` (201): the operator, or an onboarding admin for an agreed domain (the user joins the organisation) |
//! | `POST /v1/users/code` | `{"name"}` | `{"user", "code", "code_expires_ms"}`: a new code, retiring the previous one |
//! | `GET /v1/devices[?user=NAME]` | | `[device]` |
//! | `POST /v1/devices` | `{"devices": [{"name", "public_key"}], "add_users"?}` | `{"registered", "results": [{"name", "device"} or {"name", "error", "status"}]}`: devices whose keys the operator knows, no codes, at most 10,000 per call |
//! | `POST /v1/devices/revoke` | `{"name"}` | `device` |
//! | `POST /v1/devices/kind` | `{"name", "kind"}` | `device`: `kind` is `desktop`, `laptop`, `mobile`, `server` or `unspecified` (the operator, the device's user) |
//! | `GET /v1/devices/preferred?user=NAME` | | `{"user", "device", "why"}`: the device that signed the user's home record, else their first enrolled desktop (the user, the operator) |
//! | `GET /v1/tokens[?user=NAME]` | | `[{"id", "user", "created_ms", "expires_ms"?, "label"?}]` the caller may see |
//! | `POST /v1/tokens` | `{"user", "expires_ms"?, "label"?}` | the record and `"token"`: for an existing, active user |
//! | `POST /v1/tokens/revoke` | `{"id"}` | the record |
//! | `POST /v1/org` | an org command (`{"command": "create_unit", ...}`) | the event |
//! | `POST /v1/org/invite` | `{"org", "user", "guest", "unit"?}` | `{"code", "link", "expires_ms"}`; again: a new code |
//! | `POST /v1/org/accept` | `{"org", "code"}` | the event (the token's user joins) |
//! | `GET /v1/org/members?org=N` | | members, invitations and seats (admins) |
//! | `GET /v1/org/keys` | | keys issued by or to the caller's organisations |
//! | `GET /v1/org/domains?org=N` | | domains, claims and the TXT record each claim needs |
//! | `POST /v1/org/domains/verify` | `{"org", "domain"}` | the event: the domain proven by its TXT record |
//! | `PUT /v1/org/logo?org=N&unit=M` | PNG or JPEG bytes, at least 512 x 512 | the event |
//! | `GET /v1/org/logo?unit=M` | | the logo's bytes (the organisation's members, or anyone once public) |
//! | `GET /v1/org/events[?after=N&limit=M]` | | `{"events": [{"seq", "event"}], "next_after", "more"}` the caller may read |
//! | `GET /v1/org/directory` | | lines and colleagues of the caller's organisations |
//! | `GET /v1/contacts` | | `{"contacts", "colleagues"}` of the token's user |
//! | `POST /v1/contacts` | `{"address", "categories"}` | the contact |
//! | `POST /v1/contacts/remove` | `{"address"}` | the removed contact |
//! | `GET /v1/home?user=NAME` | | the user's home record (the user, the operator) |
//! | `POST /v1/home` | `{"user", "hub", "address", "pin", "epoch", "device", "signed_ms", "signature"}` | the record, taken when signed by one of the user's unrevoked devices with the next epoch; 400 `malformed`, 404 `unknown-user`/`unknown-device`, 403 `revoked-device`/`bad-signature`, 409 `stale-epoch`/`hand-off-in-progress` (the user, the operator) |
//! | `GET /v1/home/handoff?user=NAME` | | the user's hand-off in progress: `{"user", "from", "to", "started_ms", "mailbox_released"}`; 404 when none is (the user, the operator) |
//! | `GET /v1/home/mailbox?user=NAME` | | the user's mailbox here, their registration hub: `{"user", "home", "last_seq", "held", "home_acked", "devices": [{"device", "acked"}]}` (`held`: entries kept, for the home hub or for a device; `home_acked`: the home hub's link has everything up to it; each device has taken everything up to its `acked`, here or, as its home hub reported, there); 404 when the user's home hub is not another hub (the user, the operator) |
//! | `POST /v1/home/handoff/abandon` | `{"user"}` | `{"user", "abandoned"}`: gives up on what the old home hub of the user's unfinished hand-off holds; the move ends, the new home hub gets the mailbox, what the old hub hands over later is dropped; 404 when no hand-off is in progress (the user, the operator) |
//! | `GET /v1/peers` | | `[{"name", "address", "domains", "state", "since_ms", "attempts", "last_error", "next_attempt_ms", "inbound_up", "queued", "oldest_age_ms"}]` (operator only) |
//! | `POST /v1/peers` | `{"name", "address", "pin", "domains", "provider"?}` | adds a peer at run time, kept across restarts (operator only) |
//! | `POST /v1/peers/remove` | `{"name", "force"?}` | removes a peer added at run time; refused while messages wait for it unless `force`, and for a user's home hub (operator only) |
//! | `POST /v1/peers/retry` | `{"name"}` | ends the link's backoff now (operator only) |
//! | `GET /v1/metrics` | | `{"connections", "resident_bytes", "store": {...}}` (operator only) |
//! | `GET /v1/openapi.json` | | the OpenAPI document of this API |
//!
//! A refused org command answers 403 with the rule that refused it. Errors answer
//! `{"error": "..."}` with 400 (bad input, naming the field), 401 (token), 403 (a rule), 404
//! (unknown), 409 (exists, wrong status) or 500.

mod auth;
mod contacts;
mod devices;
mod domains;
mod error;
pub mod fuzz;
mod home;
pub mod listener;
mod metrics;
mod org;
mod peers;
pub mod provisioning;
mod users;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    routing::{get, post},
};
use tokio::sync::watch;

pub use auth::load_or_create_token;
pub use contacts::Contact;
pub use devices::{DeviceKey, MAX_REGISTER, Registered, Registration};
use devices::{REGISTER_BODY_LIMIT, list_devices, register_devices, revoke_device};
use error::ApiError;
use metrics::metrics;
pub use metrics::{Metrics, proc_cpu_seconds, process_cpu_seconds};
use org::{
    get_logo, org_accept, org_command, org_directory, org_events, org_invite, org_keys,
    org_members, put_logo,
};
pub use users::UserWithCode;
use users::{add_user, list_users, new_user_code};

use crate::fanout::Hub;

/// How long an enrolment code stays valid.
pub const CODE_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

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
pub(crate) struct AppState {
    pub(crate) hub: Arc<Hub>,
    pub(crate) token: Arc<str>,
    pub(crate) card: Arc<HubCard>,
}

/// What `GET /v1/hub` tells about this hub: what a device or a peer needs to reach it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HubCard {
    /// The hub's name (`[hub] name`).
    pub name: String,
    /// The domains it serves by configuration (its organisations' domains are served too).
    pub domains: Vec<String>,
    /// The address devices and peers reach it at (UDP), as it is bound.
    pub quic: std::net::SocketAddr,
    /// The pin of its certificate, as `hub identity` prints it.
    pub pin: String,
    /// Its certificate, DER in hex: what a device pins.
    pub certificate: String,
}

/// `GET /v1/hub` (operator only).
async fn hub_card(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<HubCard>, ApiError> {
    auth::authorise(&state, &headers)?;
    Ok(Json((*state.card).clone()))
}

/// Serves the admin API on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    token: String,
    card: HubCard,
    limits: crate::config::AdminConfig,
    shutdown: watch::Receiver<bool>,
) {
    let app = router(hub, token.clone(), card);
    listener::serve(listener, app, token.into(), limits, shutdown).await;
}

/// The admin API's routes over `hub`, with `token` as the operator's: what the hub's listener puts
/// behind its listener (connection limits, timeouts, the 401 before parsing, the uniform
/// error shape), without them.
pub fn router(hub: Arc<Hub>, token: String, card: HubCard) -> Router {
    let app = Router::new()
        .route("/v1/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/v1/hub", get(hub_card))
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
        .route("/v1/devices/kind", post(devices::set_device_kind))
        .route("/v1/devices/preferred", get(devices::preferred_device))
        .route("/v1/tokens", get(auth::list_tokens).post(auth::new_token))
        .route("/v1/home", get(home::get_home).post(home::set_home))
        .route("/v1/home/handoff", get(home::get_handoff))
        .route("/v1/home/mailbox", get(home::get_mailbox))
        .route("/v1/home/handoff/abandon", post(home::abandon_handoff))
        .route("/v1/peers", get(peers::list_peers).post(peers::add_peer))
        .route("/v1/peers/remove", post(peers::remove_peer))
        .route("/v1/peers/retry", post(peers::retry_peer))
        .route("/v1/tokens/revoke", post(auth::revoke_token))
        .route("/v1/org", post(org_command))
        .route("/v1/org/events", get(org_events))
        .route("/v1/org/members", get(org_members))
        .route("/v1/org/keys", get(org_keys))
        .route("/v1/org/domains", get(domains::list_domains))
        .route("/v1/org/domains/verify", post(domains::verify_domain))
        .route("/v1/org/invite", post(org_invite))
        .route(
            "/v1/org/logo",
            get(get_logo)
                .put(put_logo)
                .layer(axum::extract::DefaultBodyLimit::max(crate::org::MAX_LOGO_BYTES + 1)),
        )
        .route("/v1/org/accept", post(org_accept))
        .route("/v1/org/directory", get(org_directory))
        .route("/v1/contacts", get(contacts::list_contacts).post(contacts::put_contact))
        .route("/v1/contacts/remove", post(contacts::remove_contact))
        .route(
            "/v1/openapi.json",
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        );
    app.with_state(AppState { hub, token: token.into(), card: Arc::new(card) })
}

/// The OpenAPI document of the admin API.
const OPENAPI: &str = include_str!("openapi.json");

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
