//! Drives the admin API's routes from arbitrary bytes: the fuzz target `admin` (see `fuzz/`)
//! and the corpus replay test share this.
//!
//! One input is one request to a real hub on a real store: its first byte picks the route and
//! method, the second the credentials (the operator's token, an ordinary user's, none, a
//! wrong one), the third the `Content-Type`; the rest is the body (for a `GET`, the query
//! string). The answer must never be a server error, and every error must have the API's one
//! shape: `{"error": "..."}` as JSON, with `WWW-Authenticate` on a 401. The store is kept
//! between inputs, so what one request creates, the next can use.

use std::path::Path;

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use tower::ServiceExt;

use crate::{config::Config, server::StartError, store::StoreError};

/// The routes a request can take, with the method.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/users"),
    ("POST", "/v1/users/code"),
    ("POST", "/v1/devices"),
    ("POST", "/v1/devices/revoke"),
    ("POST", "/v1/devices/kind"),
    ("POST", "/v1/tokens"),
    ("POST", "/v1/tokens/revoke"),
    ("POST", "/v1/org"),
    ("POST", "/v1/org/invite"),
    ("POST", "/v1/org/accept"),
    ("POST", "/v1/org/domains/verify"),
    ("PUT", "/v1/org/logo"),
    ("POST", "/v1/contacts"),
    ("POST", "/v1/contacts/remove"),
    ("POST", "/v1/home"),
    ("POST", "/v1/home/handoff/abandon"),
    ("POST", "/v1/peers"),
    ("POST", "/v1/peers/remove"),
    ("POST", "/v1/peers/retry"),
    ("GET", "/v1/users"),
    ("GET", "/v1/devices"),
    ("GET", "/v1/devices/preferred"),
    ("GET", "/v1/tokens"),
    ("GET", "/v1/org/events"),
    ("GET", "/v1/org/members"),
    ("GET", "/v1/org/keys"),
    ("GET", "/v1/org/domains"),
    ("GET", "/v1/org/logo"),
    ("GET", "/v1/org/directory"),
    ("GET", "/v1/contacts"),
    ("GET", "/v1/home"),
    ("GET", "/v1/home/handoff"),
    ("GET", "/v1/home/mailbox"),
    ("GET", "/v1/peers"),
    ("GET", "/v1/metrics"),
    ("GET", "/v1/hub"),
    ("DELETE", "/v1/users"),
    ("GET", "/v1/nowhere"),
];

const OPERATOR_TOKEN: &str = "fuzz-operator-token";

/// A hub on a store in a directory, with its admin routes, an ordinary user and their token.
pub struct Harness {
    /// The hub itself: its links and sessions run while the harness drives its runtime.
    _running: crate::server::RunningHub,
    runtime: tokio::runtime::Runtime,
    app: Router,
    user_token: String,
}

impl Harness {
    /// A hub started in `dir` (made if missing) on loopback ports of the system's choosing,
    /// with the user `fuzz@example.org`.
    pub fn new(dir: &Path) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StartError::Store(StoreError::Storage(e.to_string())))?;
        let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
        config.hub.domains = vec!["example.org".into()];
        config.quic.listen = "127.0.0.1:0".parse().expect("a socket address");
        config.admin.listen = "127.0.0.1:0".parse().expect("a socket address");
        config.metrics.enabled = false;
        let running = runtime.block_on(crate::server::start(config.clone()))?;
        let card = super::HubCard {
            name: "fuzz".into(),
            domains: config.hub.domains.clone(),
            quic: "127.0.0.1:4433".parse().expect("a socket address"),
            pin: String::new(),
            certificate: String::new(),
        };
        let app = super::router(running.hub().clone(), OPERATOR_TOKEN.into(), card);
        let mut harness = Self { runtime, app, user_token: String::new(), _running: running };
        harness.request_as(
            "POST",
            "/v1/users",
            Some(OPERATOR_TOKEN),
            br#"{"name":"fuzz@example.org"}"#,
        );
        let (_, body) = harness.request_as(
            "POST",
            "/v1/tokens",
            Some(OPERATOR_TOKEN),
            br#"{"user":"fuzz@example.org"}"#,
        );
        let token = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(String::from));
        harness.user_token =
            token.ok_or_else(|| StartError::Store(StoreError::Storage("no user token".into())))?;
        Ok(harness)
    }

    /// Sends the request `data` describes; panics when the answer breaks the API's rules.
    pub fn run(&self, data: &[u8]) {
        let [route, auth, content_type, body @ ..] = data else { return };
        let (method, path) = ROUTES[usize::from(*route) % ROUTES.len()];
        let token = match auth % 5 {
            0 | 1 => Some(OPERATOR_TOKEN),
            2 => Some(self.user_token.as_str()),
            3 => None,
            _ => Some("wrong"),
        };
        let content_type = match content_type % 4 {
            0 | 1 => Some("application/json"),
            2 => Some("text/plain"),
            _ => None,
        };
        self.check(method, path, token, content_type, body);
    }

    fn check(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) {
        let (status, headers, bytes) =
            self.runtime.block_on(self.send(method, path, token, content_type, body));
        assert!(!status.is_server_error(), "{method} {path}: {status}: {}", lossy(&bytes));
        if status.is_client_error() {
            let json = headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            assert!(json, "{method} {path}: {status} without a JSON body: {}", lossy(&bytes));
            let error = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from));
            assert!(error.is_some(), "{method} {path}: {status}: {}", lossy(&bytes));
            if status == StatusCode::UNAUTHORIZED {
                assert!(headers.contains_key(header::WWW_AUTHENTICATE), "{method} {path}: 401");
            }
        }
    }

    fn request_as(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, Vec<u8>) {
        let (status, _, bytes) =
            self.runtime.block_on(self.send(method, path, token, Some("application/json"), body));
        (status, bytes)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let method = Method::from_bytes(method.as_bytes()).expect("a method from the table");
        let uri = match method {
            Method::GET => format!("{path}?{}", query(body)),
            _ => path.to_string(),
        };
        let mut request = Request::builder().method(method.clone()).uri(&uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let body = match method {
            Method::GET => Body::empty(),
            _ => Body::from(body.to_vec()),
        };
        let request = request.body(body).expect("a request from valid parts");
        let response = match self.app.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        let response = super::listener::uniform(response, &method, path).await;
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20).await.map(|b| b.to_vec());
        (parts.status, parts.headers, bytes.unwrap_or_default())
    }
}

/// The bytes as a query string: kept where a URI allows them, percent-encoded otherwise.
fn query(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"=&-_.~,:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}
