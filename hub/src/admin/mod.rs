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
//! | `GET /v1/org/events[?after=N&limit=M]` | | `{"events": [{"seq", "event"}], "next_after", "more"}` the caller may read; with `newest=true[&before=N]` newest first, walking back (`next_after` is then the next `before`) |
//! | `GET /v1/org/directory` | | lines and colleagues of the caller's organisations |
//! | `GET /v1/me` | | `{"actor", "user", "orgs": [{"org", "name", "role", "status", "manages_members", "reads_log", "group_admin_of"}]}`: who the token acts as, in each organisation it has a part in |
//! | `GET /v1/org/overview?org=N` | | owner, admins, seats, domains and their state, units tree, group admins (owner, admins, group admins) |
//! | `GET /v1/org/groups` | | the groups the caller may see; an anonymous group's members only to those who manage it |
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
//! | `POST /v1/backups` | `{"name"?}` | the backup: `{"dir", "taken_ms", "hub", "store_bytes", "config", "took_ms"}` (operator only) |
//! | `POST /v1/reload` | | `{"file", "applied", "needs_restart", "refused"}`: the configuration file read again (operator only) |
//! | `GET /v1/metrics` | | `{"connections", "handshakes", "handshakes_refused", "resident_bytes", "store_...", "cpu_seconds"}` (operator only) |
//! | `GET /v1/openapi.json` | | the OpenAPI document of this API, made from the handlers below and their types |
//!
//! The same listener serves the web console at `/console` (see [`crate::console`]): its pages
//! call these routes in the process with the signed-in user's token, which a cookie carries.
//!
//! A refused org command answers 403 with the rule that refused it. Errors answer
//! `{"error": "..."}` with 400 (bad input, naming the field), 401 (token), 403 (a rule), 404
//! (unknown), 409 (exists, wrong status) or 500.

mod auth;
mod backups;
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
mod views;

use std::{sync::Arc, time::Duration};

use axum::{Json, Router};
use tokio::sync::watch;
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt},
    routes,
};

pub use auth::load_or_create_token;
pub use contacts::Contact;
use devices::REGISTER_BODY_LIMIT;
pub use devices::{DeviceKey, MAX_REGISTER, Registered, Registration};
use error::ApiError;
pub(crate) use error::ErrorBody;
pub(crate) use metrics::resident_bytes;
pub use metrics::{Metrics, proc_cpu_seconds, process_cpu_seconds};
pub(crate) use peers::peer_statuses;
pub use users::UserWithCode;

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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HubCard {
    /// The hub's name (`[hub] name`).
    pub name: String,
    /// The domains it serves by configuration (its organisations' domains are served too).
    pub domains: Vec<String>,
    /// The address devices and peers reach it at (UDP), as it is bound: `ip:port`.
    #[schema(value_type = String)]
    pub quic: std::net::SocketAddr,
    /// The pin of its certificate, as `hub identity` prints it.
    pub pin: String,
    /// Its certificate, DER in hex: what a device pins.
    pub certificate: String,
}

/// How to reach this hub: its name, domains, QUIC address, certificate and pin (operator
/// only).
#[utoipa::path(get, path = "/v1/hub", tag = "hub", responses(
    (status = 200, description = "the hub", body = HubCard),
))]
async fn hub_card(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<HubCard>, ApiError> {
    auth::authorise(&state, &headers)?;
    Ok(Json((*state.card).clone()))
}

/// The answer to `GET /v1/health`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok`.
    status: &'static str,
}

/// Whether the hub serves (no token needed).
#[utoipa::path(get, path = "/v1/health", tag = "hub", security(()), responses(
    (status = 200, description = "serving", body = Health),
))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
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
    listener::serve(listener, app, Some(token.into()), limits, shutdown).await;
}

/// Serves `app` on `listener` with the admin API's caps, timeouts and per-address rates, and
/// no tokens (the metrics listener).
pub(crate) async fn serve_plain(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: crate::config::AdminConfig,
    shutdown: watch::Receiver<bool>,
) {
    listener::serve(listener, app, None, limits, shutdown).await;
}

/// The document's frame: what every route shares.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchboard hub admin API",
        version = "1",
        description = "Users, devices, tokens, organisations, contacts, home hubs and peers of one Switchboard hub. \
Every route but /v1/health and /v1/openapi.json needs `Authorization: Bearer <token>`: the operator token in \
<data_dir>/admin.token, or a user token from POST /v1/tokens, which acts as its user and stops working when it \
expires, is revoked, or its user is deactivated or deleted. Errors answer `{\"error\": text}`: 400 bad input (the \
text names the field), 401 token, 403 a rule refused (the text names the rule), 404 unknown, 409 conflict. Any \
route may also answer 404 (unknown route), 405 (wrong method, with Allow), 408 (slower than [admin] \
request_timeout_secs), 413 (body too large), 415 (missing or wrong Content-Type), 429 (too many requests or failed \
authentications, with Retry-After; never for the operator token) and 503 (every connection busy, with \
Retry-After). A request without a token is answered 401 before its body is read. Names are 1-200 characters \
without control characters; addresses at most 254 bytes (local@domain, a device local@domain/device, a group \
#name); domains at most 253 bytes."
    ),
    security(("token" = []))
)]
struct Frame;

/// Adds the bearer token scheme, and to every operation the answers the listener and the
/// extractors give whatever the route: 401 and 429 to all (401 not to the public ones), 400 to
/// those that take a query or a body, 413 and 415 to those that take a body.
struct Shared;

impl utoipa::Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            Ref, ResponseBuilder,
            security::{Http, HttpAuthScheme, SecurityScheme},
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("token", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let error = |text: &str| {
            ResponseBuilder::new()
                .description(text)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            // The routes that need no token (the listener answers them without one).
            let public = matches!(path.as_str(), "/v1/health" | "/v1/openapi.json");
            let operations =
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                if !public {
                    responses.entry("401".into()).or_insert_with(|| {
                        error("no token, or a wrong, expired or revoked one (with WWW-Authenticate), or a user token on an operator-only route").into()
                    });
                }
                let body = operation.request_body.is_some();
                if body || operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    responses.entry("400".into()).or_insert_with(|| {
                        error("a malformed query or body: a missing or mistyped field, a bad value (the text names it)").into()
                    });
                }
                if body {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| error("the body is larger than the route takes").into());
                    responses
                        .entry("415".into())
                        .or_insert_with(|| error("a missing or wrong Content-Type").into());
                }
                responses.entry("429".into()).or_insert_with(|| {
                    error("too many requests from the token or the address, or too many failed authentications (with Retry-After)").into()
                });
            }
        }
    }
}

/// The admin API's routes over `hub`, with `token` as the operator's, and the OpenAPI document
/// made from them: what the hub's listener puts behind its listener (connection limits,
/// timeouts, the 401 before parsing, the uniform error shape), without them.
pub fn router(hub: Arc<Hub>, token: String, card: HubCard) -> Router {
    let (app, document) = parts();
    let document = Arc::new(document.to_pretty_json().expect("the OpenAPI document serialises"));
    let api = app
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move {
                    ([("content-type", "application/json")], document.as_str().to_owned())
                }
            }),
        )
        .with_state(AppState { hub: hub.clone(), token: token.into(), card: Arc::new(card) });
    // The console calls the API's routes in the process, with the signed-in caller's token.
    api.clone().merge(crate::console::router(api, hub))
}

/// The OpenAPI document of the admin API, as `GET /v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The routes and the document made from them.
fn parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::Modify;
    let (app, mut document) = routes().split_for_parts();
    Shared.modify(&mut document);
    (app, document)
}

/// Every route, each registered at the path and method of its annotation.
fn routes() -> OpenApiRouter<AppState> {
    use utoipa::OpenApi;
    OpenApiRouter::with_openapi(Frame::openapi())
        .routes(routes!(health))
        .routes(routes!(hub_card))
        .routes(routes!(metrics::metrics))
        .routes(routes!(backups::take_backup))
        .routes(routes!(backups::reload))
        .routes(routes!(users::list_users, users::add_user))
        .routes(routes!(users::new_user_code))
        .routes(
            routes!(devices::list_devices, devices::register_devices)
                .layer(axum::extract::DefaultBodyLimit::max(REGISTER_BODY_LIMIT)),
        )
        .routes(routes!(devices::revoke_device))
        .routes(routes!(devices::set_device_kind))
        .routes(routes!(devices::preferred_device))
        .routes(routes!(auth::list_tokens, auth::new_token))
        .routes(routes!(auth::revoke_token))
        .routes(routes!(home::get_home, home::set_home))
        .routes(routes!(home::get_handoff))
        .routes(routes!(home::get_mailbox))
        .routes(routes!(home::abandon_handoff))
        .routes(routes!(peers::list_peers, peers::add_peer))
        .routes(routes!(peers::remove_peer))
        .routes(routes!(peers::retry_peer))
        .routes(routes!(org::org_command))
        .routes(routes!(org::org_events))
        .routes(routes!(org::org_members))
        .routes(routes!(org::org_keys))
        .routes(routes!(domains::list_domains))
        .routes(routes!(domains::verify_domain))
        .routes(routes!(org::org_invite))
        .routes(
            routes!(org::get_logo, org::put_logo)
                .layer(axum::extract::DefaultBodyLimit::max(crate::org::MAX_LOGO_BYTES + 1)),
        )
        .routes(routes!(org::org_accept))
        .routes(routes!(org::org_directory))
        .routes(routes!(views::me))
        .routes(routes!(views::overview))
        .routes(routes!(views::groups))
        .routes(routes!(contacts::list_contacts, contacts::put_contact))
        .routes(routes!(contacts::remove_contact))
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
