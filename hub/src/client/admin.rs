//! The client of the admin API, as the `hub user`, `hub device` and `hub org` commands,
//! loadgen and the tests use it: HTTP/1 over one TCP connection per call, bearer token.

use crate::{
    admin::{DeviceKey, Metrics, Registration, UserWithCode},
    org::{Command, Event},
    store::{DeviceRecord, UserRecord},
};

/// A client of the admin API, as the `hub user` and `hub device` commands and the tests use it.
#[derive(Clone)]
pub struct AdminClient {
    addr: std::net::SocketAddr,
    token: String,
}

/// A page of the organisation log (`GET /v1/org/events`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EventsPage {
    /// `{"seq", "event"}` objects the caller may read.
    pub events: Vec<serde_json::Value>,
    /// The position to ask after next.
    pub next_after: u64,
    /// Whether the log goes on after `next_after`.
    pub more: bool,
}

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The hub could not be reached.
    #[error("cannot reach the hub's admin API at {addr} ({reason}); is the hub running?")]
    Unreachable {
        /// The address tried.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The hub answered with an error.
    #[error("{status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The hub's message.
        message: String,
    },
    /// The answer could not be read.
    #[error("bad answer: {0}")]
    Answer(String),
}

impl AdminClient {
    /// A client for the API at `addr` with `token`.
    pub fn new(addr: std::net::SocketAddr, token: String) -> Self {
        Self { addr, token }
    }

    /// The hub's metrics (operator only).
    pub async fn metrics(&self) -> Result<Metrics, AdminError> {
        self.call("GET", "/v1/metrics", None).await
    }

    /// Takes a backup named `name` (default: the UTC time) under the hub's backup directory
    /// (operator only).
    pub async fn backup(
        &self,
        name: Option<&str>,
    ) -> Result<crate::backup::BackupReport, AdminError> {
        let body = serde_json::json!({ "name": name });
        self.call("POST", "/v1/backups", Some(body)).await
    }

    /// Makes the hub read its configuration file again (operator only).
    pub async fn reload(&self) -> Result<crate::reload::ReloadReport, AdminError> {
        self.call("POST", "/v1/reload", None).await
    }

    /// How to reach the hub: its name, domains, QUIC address and certificate.
    pub async fn hub_card(&self) -> Result<crate::admin::HubCard, AdminError> {
        self.call("GET", "/v1/hub", None).await
    }

    /// Adds a user; the answer holds its first enrolment code.
    pub async fn add_user(&self, name: &str) -> Result<UserWithCode, AdminError> {
        self.call("POST", "/v1/users", Some(serde_json::json!({ "name": name }))).await
    }

    /// A new enrolment code for an existing user.
    pub async fn new_code(&self, name: &str) -> Result<UserWithCode, AdminError> {
        self.call("POST", "/v1/users/code", Some(serde_json::json!({ "name": name }))).await
    }

    /// Registers devices whose public keys are known, without codes (at most
    /// [`MAX_REGISTER`](crate::admin::MAX_REGISTER) per call); `add_users` adds the users that do not exist yet.
    pub async fn register_devices(
        &self,
        devices: &[DeviceKey],
        add_users: bool,
    ) -> Result<Registration, AdminError> {
        let body = serde_json::json!({ "devices": devices, "add_users": add_users });
        self.call("POST", "/v1/devices", Some(body)).await
    }

    /// Every user.
    pub async fn users(&self) -> Result<Vec<UserRecord>, AdminError> {
        self.call("GET", "/v1/users", None).await
    }

    /// The devices of `user`, or all.
    pub async fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceRecord>, AdminError> {
        let path = match user {
            Some(user) => format!("/v1/devices?user={}", percent_encode(user)),
            None => "/v1/devices".to_string(),
        };
        self.call("GET", &path, None).await
    }

    /// A token acting as `user`, an existing, active user (made by the operator, the user, or
    /// an onboarding admin of the user's organisation).
    pub async fn new_token(&self, user: &str) -> Result<String, AdminError> {
        let answer: serde_json::Value =
            self.call("POST", "/v1/tokens", Some(serde_json::json!({ "user": user }))).await?;
        answer["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AdminError::Answer("no token in the answer".into()))
    }

    /// Runs an organisation command as this client's token.
    pub async fn org(&self, command: &Command) -> Result<Event, AdminError> {
        let body = serde_json::to_value(command).map_err(|e| AdminError::Answer(e.to_string()))?;
        self.call("POST", "/v1/org", Some(body)).await
    }

    /// One page of the organisation log this token may read, after position `after`.
    pub async fn org_events_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<EventsPage, AdminError> {
        self.call("GET", &format!("/v1/org/events?after={after}&limit={limit}"), None).await
    }

    /// Every event of the organisation log this token may read after position `after`,
    /// following the pages to the end.
    pub async fn org_events(&self, mut after: u64) -> Result<Vec<serde_json::Value>, AdminError> {
        let mut out = Vec::new();
        loop {
            let page = self.org_events_page(after, 1000).await?;
            out.extend(page.events);
            after = page.next_after;
            if !page.more {
                return Ok(out);
            }
        }
    }

    /// Any call of the API, answered as JSON (for the calls this client has no method for).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, AdminError> {
        self.call(method, path, body).await
    }

    /// Invites `user` to `org` (as a guest when `guest`); returns the code.
    pub async fn invite(
        &self,
        org: crate::org::OrgId,
        user: &str,
        guest: bool,
    ) -> Result<String, AdminError> {
        let body = serde_json::json!({ "org": org, "user": user, "guest": guest });
        let answer: serde_json::Value = self.call("POST", "/v1/org/invite", Some(body)).await?;
        answer["code"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AdminError::Answer("no code".into()))
    }

    /// Accepts an invitation as this token's user.
    pub async fn accept(&self, org: crate::org::OrgId, code: &str) -> Result<Event, AdminError> {
        let body = serde_json::json!({ "org": org, "code": code });
        self.call("POST", "/v1/org/accept", Some(body)).await
    }

    /// The directory view of this token's user.
    pub async fn directory(&self) -> Result<Vec<serde_json::Value>, AdminError> {
        self.call("GET", "/v1/org/directory", None).await
    }

    /// Revokes a device.
    pub async fn revoke(&self, device: &str) -> Result<DeviceRecord, AdminError> {
        self.call("POST", "/v1/devices/revoke", Some(serde_json::json!({ "name": device }))).await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, AdminError> {
        use http_body_util::{BodyExt, Full};
        let unreachable = |reason: String| AdminError::Unreachable { addr: self.addr, reason };
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(connection);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| AdminError::Answer(e.to_string()))?;
        let response =
            sender.send_request(request).await.map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| AdminError::Answer(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(AdminError::Api { status: status.as_u16(), message });
        }
        serde_json::from_slice(&bytes).map_err(|e| AdminError::Answer(e.to_string()))
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
