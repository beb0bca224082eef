//! The admin console: the admin API's face in a browser, served by the admin listener at
//! `/console`.
//!
//! Pages are HTML made on the hub from Rust ([`maud`]), with no script at all: every action is
//! a plain form that posts and comes back to its page (post, redirect, get). Nothing is built
//! in a browser's tool chain and nothing needs a build step; the pages are as fast as the
//! server, work with a keyboard and a screen reader as plain HTML does, and the
//! Content-Security-Policy can forbid every script.
//!
//! The console holds no rules of its own. Each page reads the admin API, and each action calls
//! it, in the process, with the signed-in user's token: an owner sees owner actions, a group
//! admin their groups, the operator the hub, and a refusal shows the API's own text, which
//! names the rule. What a page shows is what the API shows that token.
//!
//! Safety:
//! - Signing in takes a token (the operator's, or a user's from `POST /v1/tokens`); it is kept
//!   in the `switchboard_console` cookie, `HttpOnly` (no script reads it), `SameSite=Strict`
//!   (no other site's page sends it), `Path=/console`, and `Secure` when the request came
//!   through a TLS proxy (`X-Forwarded-Proto: https`). The listener takes the cookie as the
//!   request's bearer token, so rates and failed-authentication back-off apply as to the API.
//! - Every state-changing request is a POST carrying a CSRF token derived from the signed-in
//!   token and a secret of the hub process (a form from before a restart must be reloaded),
//!   and, when the browser sends an `Origin`, an origin that is the console's own.
//! - Every answer carries `Content-Security-Policy: default-src 'none'; style-src 'self';
//!   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`, and
//!   `Cache-Control: no-store`.

mod actions;
mod pages;
mod view;

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use sha2::Digest;
use tower::ServiceExt;

use crate::fanout::Hub;

/// The cookie the signed-in token lives in.
pub const TOKEN_COOKIE: &str = "switchboard_console";
/// The cookie a page's one-time message lives in, between an action and the page it returns to.
const FLASH_COOKIE: &str = "switchboard_flash";

/// The policy every console answer carries: no script at all, styles and images from the hub.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is the console's.
pub(crate) fn is_console_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// Puts the console cookie's token in `Authorization`, unless the request has one.
pub(crate) fn cookie_to_bearer(headers: &mut HeaderMap) {
    if headers.contains_key(header::AUTHORIZATION) {
        return;
    }
    let Some(token) = cookie(headers, TOKEN_COOKIE) else { return };
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, value);
    }
}

/// The value of cookie `name`, if the request carries it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// The console's state: the admin API it calls, and what it keeps between requests.
#[derive(Clone)]
pub(crate) struct Console {
    /// The admin API's routes, called in the process.
    api: Router,
    hub: Arc<Hub>,
    /// The secret CSRF tokens are derived with; new each time the hub starts.
    csrf_key: Arc<[u8; 32]>,
    /// The last figures the hub page read, to show rates since.
    last_figures: Arc<Mutex<Option<view::Figures>>>,
}

/// A refusal from the API: its status and text (which names the rule).
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    status: StatusCode,
    text: String,
}

/// Who is signed in: their token, and the CSRF token their forms carry.
pub(crate) struct Session {
    token: String,
    csrf: String,
    /// The message an action left for this page.
    flash: Option<view::Flash>,
    /// Whether the request came through TLS (for the cookie's `Secure`).
    secure: bool,
}

impl Console {
    /// The session of a request, if it carries a token.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty())?
            .to_string();
        Some(Session {
            csrf: self.csrf_for(&token),
            token,
            flash: cookie(headers, FLASH_COOKIE).and_then(|v| view::Flash::decode(&v)),
            secure: is_secure(headers),
        })
    }

    /// The CSRF token of `token`'s forms.
    fn csrf_for(&self, token: &str) -> String {
        let mut hash = sha2::Sha256::new();
        hash.update(self.csrf_key.as_slice());
        hash.update(b"console csrf\0");
        hash.update(token.as_bytes());
        crate::admin::hex(&hash.finalize()[..16])
    }

    /// Calls the admin API as `token`: the answer's JSON, or its refusal.
    async fn call(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Refusal> {
        let body = body.map(|b| (b.to_string().into_bytes(), "application/json"));
        let (status, _, bytes) = self.call_raw(token, method, uri, body).await?;
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            text: format!("the API answered {status} with no JSON: {e}"),
        })
    }

    /// Reads `uri` of the admin API as `token`, as a `T`.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        uri: &str,
    ) -> Result<T, Refusal> {
        let value = self.call(token, Method::GET, uri, None).await?;
        serde_json::from_value(value).map_err(|e| Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            text: format!("GET {uri}: {e}"),
        })
    }

    /// Calls the admin API as `token` with a raw body: status, content type and bytes of a
    /// success, or the refusal.
    async fn call_raw(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> Result<(StatusCode, String, bytes::Bytes), Refusal> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some((bytes, content_type)) => {
                request = request.header(header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let internal = |text: String| Refusal { status: StatusCode::INTERNAL_SERVER_ERROR, text };
        let request = request.body(body).map_err(|e| internal(format!("a bad request: {e}")))?;
        let response = match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
            .await
            .map_err(|e| internal(format!("the API's answer could not be read: {e}")))?;
        if status.is_success() {
            return Ok((status, content_type, bytes));
        }
        let text = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&bytes).trim().to_string();
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_lowercase()
                } else {
                    text
                }
            });
        Err(Refusal { status, text })
    }
}

/// Whether the request came to the console through TLS: a proxy in front of the admin
/// listener says so with `X-Forwarded-Proto`.
fn is_secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The console's routes, calling `api` (the admin API's routes with their state).
pub(crate) fn router(api: Router, hub: Arc<Hub>) -> Router {
    let console =
        Console { api, hub, csrf_key: Arc::new(rand::random()), last_figures: Arc::default() };
    Router::new()
        .route("/console", get(pages::home))
        .route("/console/", get(pages::home))
        .route("/console/console.css", get(stylesheet))
        .route("/console/icon.svg", get(icon))
        .route("/console/sign-in", get(pages::sign_in_page).post(actions::sign_in))
        .route("/console/sign-out", post(actions::sign_out))
        .route("/console/org/{org}", get(pages::overview))
        .route("/console/org/{org}/members", get(pages::members))
        .route("/console/org/{org}/approvals", get(pages::approvals))
        .route("/console/org/{org}/keys", get(pages::keys))
        .route("/console/org/{org}/events", get(pages::events))
        .route("/console/groups", get(pages::groups))
        .route("/console/hub", get(pages::hub))
        .route("/console/logo", get(pages::logo))
        .route(
            "/console/logo",
            post(actions::upload_logo).layer(axum::extract::DefaultBodyLimit::max(
                crate::org::MAX_LOGO_BYTES + 64 * 1024,
            )),
        )
        .route("/console/do/{action}", post(actions::act))
        // Unknown console paths only: a fallback would answer the API's unknown routes too.
        .route("/console/{*rest}", get(pages::not_found))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(console)
}

/// The headers every console answer carries.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The stylesheet.
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

/// The console's icon: a switchboard's plug.
async fn icon() -> Response {
    (
        [(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")],
        include_str!("icon.svg"),
    )
        .into_response()
}
