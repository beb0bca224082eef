//! The admin API's HTTP/1.1 server: connections accepted under caps, timeouts on every phase of
//! a request, a back-off for addresses that keep failing authentication, and a shutdown that
//! does not wait for idle clients.
//!
//! - **Caps.** At most `max_connections` connections in all and `max_connections_per_address`
//!   from one address. When a new connection would pass a cap, the connection under that cap
//!   that has been idle the longest (no request in progress, including one still sending its
//!   headers) is closed to make room; if every one is busy with a request, the new connection
//!   is answered 503 with `Retry-After` and closed. So clients that only hold connections open cannot keep the operator
//!   out.
//! - **Timeouts.** A request's headers must arrive within `header_timeout_secs` of the
//!   connection waiting for them (a new connection, or an idle kept-alive one), and the whole
//!   request, body and handler, within `request_timeout_secs`; past it the answer is 408.
//! - **Authentication back-off.** After `failed_auth_limit` (10) answers of 401 to one address
//!   within [`FAILED_AUTH_WINDOW`], that address gets 429 with `Retry-After` for every
//!   request until the oldest of those failures is a window old: guessing a token goes at a
//!   few tries a minute, not thousands a second. A request with the operator token is never
//!   held back, so a guesser on the operator's own address cannot lock the operator out.
//! - **Request rates.** Requests spend a token from a bucket of their bearer token and one of
//!   their address, refilled at `requests_per_second_per_token` and
//!   `requests_per_second_per_address` up to their bursts; with either bucket empty the answer
//!   is 429 with `Retry-After` (whole seconds until it has a token again), before the request
//!   is parsed. The operator token spends from neither.
//! - **Shutdown.** Idle connections are closed at once; requests in progress get
//!   [`SHUTDOWN_GRACE`] to finish.
//! - **The console.** For `/console` paths the `switchboard_console` cookie, if the request has
//!   no `Authorization`, is taken as its bearer token (so everything above applies to it as to
//!   the API); such a request needs no token to be answered (the console's sign-in page), and
//!   its answers stay pages, not the API's JSON errors.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, Request, Response, StatusCode, header},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

use crate::config::AdminConfig;

/// The window of `[admin] failed_auth_limit`: answers of 401 to one address within it, after
/// which it is refused.
pub const FAILED_AUTH_WINDOW: Duration = Duration::from_secs(60);
/// The largest body any route takes (a bulk device registration); each route has its own
/// limit at or below it (2 MiB unless the API document says otherwise).
pub const MAX_BODY_BYTES: u64 = super::devices::REGISTER_BODY_LIMIT as u64;
/// How long requests in progress may take to finish once the hub stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One open connection, as the caps see it.
struct Open {
    ip: IpAddr,
    /// Requests in progress on it.
    busy: Arc<AtomicUsize>,
    /// When it last finished a request (or was accepted), ms since the server started.
    idle_since_ms: Arc<AtomicU64>,
    /// Closes it.
    close: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Open>,
}

impl Registry {
    /// The idle connection (of `ip`, or of anyone) idle the longest.
    fn longest_idle(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, c)| ip.is_none_or(|ip| c.ip == ip))
            .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, c)| c.idle_since_ms.load(Ordering::Acquire))
            .map(|(&id, _)| id)
    }

    fn evict(&mut self, id: u64) {
        if let Some(mut open) = self.open.remove(&id)
            && let Some(close) = open.close.take()
        {
            let _ = close.send(());
        }
    }
}

/// Failed authentications per address.
struct Failures {
    /// Failures within the window that hold an address back; 0: none do.
    limit: usize,
    by_ip: HashMap<IpAddr, VecDeque<Instant>>,
}

impl Failures {
    fn new(limit: usize) -> Self {
        Self { limit, by_ip: HashMap::new() }
    }

    /// How long `ip` must wait, if it is refused now.
    fn wait(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let times = self.by_ip.get_mut(&ip)?;
        while times.front().is_some_and(|t| now.duration_since(*t) >= FAILED_AUTH_WINDOW) {
            times.pop_front();
        }
        if times.is_empty() {
            self.by_ip.remove(&ip);
            return None;
        }
        (self.limit > 0 && times.len() >= self.limit).then(|| {
            let oldest = times[times.len() - self.limit];
            FAILED_AUTH_WINDOW.saturating_sub(now.duration_since(oldest))
        })
    }

    fn record(&mut self, ip: IpAddr, now: Instant) {
        if self.limit == 0 {
            return;
        }
        // Bounded: an address is refused once it has the limit, so it adds no more.
        if self.by_ip.len() >= 100_000 {
            self.by_ip.retain(|_, t| {
                t.back().is_some_and(|b| now.duration_since(*b) < FAILED_AUTH_WINDOW)
            });
        }
        let times = self.by_ip.entry(ip).or_default();
        times.push_back(now);
        if times.len() > self.limit {
            times.pop_front();
        }
    }
}

/// Token buckets by key: one per bearer token, or one per address.
struct Buckets<K> {
    /// Tokens a second; 0: no limit.
    rate: f64,
    burst: f64,
    /// Tokens left and when they were counted.
    by_key: HashMap<K, (f64, Instant)>,
}

/// Keys kept before full buckets are forgotten.
const BUCKET_KEYS: usize = 100_000;

impl<K: std::hash::Hash + Eq> Buckets<K> {
    fn new(rate: u32, burst: u32) -> Self {
        Self { rate: f64::from(rate), burst: f64::from(burst.max(1)), by_key: HashMap::new() }
    }

    /// Spends a token of `key`'s bucket, or answers how long until it has one.
    fn spend(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        if self.by_key.len() >= BUCKET_KEYS {
            let (rate, burst) = (self.rate, self.burst);
            self.by_key.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (rate, burst) = (self.rate, self.burst);
        let (tokens, at) = self.by_key.entry(key).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - *tokens) / rate));
        }
        *tokens -= 1.0;
        Ok(())
    }
}

/// The request-rate buckets of the admin API.
struct Rates {
    tokens: Buckets<Box<str>>,
    addresses: Buckets<IpAddr>,
}

impl Rates {
    fn new(limits: &AdminConfig) -> Self {
        Self {
            tokens: Buckets::new(
                limits.requests_per_second_per_token,
                limits.request_burst_per_token,
            ),
            addresses: Buckets::new(
                limits.requests_per_second_per_address,
                limits.request_burst_per_address,
            ),
        }
    }

    /// Spends from the address's bucket, then the token's (if the request carries one); the
    /// answer 429 with `Retry-After` when either is empty.
    fn refusal(&mut self, ip: IpAddr, token: &str, now: Instant) -> Option<Response<Body>> {
        let refused = |wait: Duration, what: String| {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut response =
                error(StatusCode::TOO_MANY_REQUESTS, &format!("{what}; retry after {secs} s"));
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        };
        if let Err(wait) = self.addresses.spend(ip, now) {
            let rate = self.addresses.rate;
            return Some(refused(wait, format!("more than {rate} requests a second from {ip}")));
        }
        if !token.is_empty()
            && let Err(wait) = self.tokens.spend(token.into(), now)
        {
            let rate = self.tokens.rate;
            return Some(refused(
                wait,
                format!("more than {rate} requests a second with this token"),
            ));
        }
        None
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, as the module says.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    operator_token: Option<Arc<str>>,
    limits: AdminConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let registry = Arc::new(Mutex::new(Registry::default()));
    let failures = Arc::new(Mutex::new(Failures::new(limits.failed_auth_limit)));
    let rates = Arc::new(Mutex::new(Rates::new(&limits)));
    let mut connections = tokio::task::JoinSet::new();
    let (stopping_tx, stopping) = watch::channel(false);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let ip = remote.ip();
        let now_ms = started.elapsed().as_millis() as u64;
        let admitted = {
            let mut registry = registry.lock().expect("admin registry lock");
            admit(&mut registry, ip, &limits).then(|| {
                let id = registry.next_id;
                registry.next_id += 1;
                let (close, closed) = oneshot::channel();
                let busy = Arc::new(AtomicUsize::new(0));
                let idle_since_ms = Arc::new(AtomicU64::new(now_ms));
                registry.open.insert(
                    id,
                    Open {
                        ip,
                        busy: busy.clone(),
                        idle_since_ms: idle_since_ms.clone(),
                        close: Some(close),
                    },
                );
                (id, closed, busy, idle_since_ms)
            })
        };
        let Some((id, closed, busy, idle_since_ms)) = admitted else {
            tracing::debug!(%remote, "admin API: connection refused, every slot busy");
            connections.spawn(refuse(stream));
            continue;
        };
        let connection = Connection {
            app: app.clone(),
            remote,
            busy,
            idle_since_ms,
            started,
            failures: failures.clone(),
            rates: rates.clone(),
            failed_auth_limit: limits.failed_auth_limit,
            operator_token: operator_token.clone(),
            request_timeout: Duration::from_secs(limits.request_timeout_secs),
        };
        let header_timeout = Duration::from_secs(limits.header_timeout_secs);
        let registry = registry.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            connection.run(stream, header_timeout, closed, stopping).await;
            registry.lock().expect("admin registry lock").open.remove(&id);
        });
        // Reap what has ended, so the set does not grow with the connections ever made.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let deadline = tokio::time::sleep(SHUTDOWN_GRACE + Duration::from_secs(1));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                connections.abort_all();
                break;
            }
        }
    }
}

/// Answers a connection there is no room for with 503 and `Retry-After`, without reading its
/// request, and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::json!({
        "error": "the admin API is at its connection limit with every connection busy; retry shortly"
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Makes room for a connection from `ip`, closing the longest-idle one under a full cap;
/// `false` if there is no room.
fn admit(registry: &mut Registry, ip: IpAddr, limits: &AdminConfig) -> bool {
    let from_ip = registry.open.values().filter(|c| c.ip == ip).count();
    if from_ip >= limits.max_connections_per_address {
        match registry.longest_idle(Some(ip)) {
            Some(id) => registry.evict(id),
            None => return false,
        }
    }
    if registry.open.len() >= limits.max_connections {
        match registry.longest_idle(None) {
            Some(id) => registry.evict(id),
            None => return false,
        }
    }
    true
}

struct Connection {
    app: Router,
    remote: SocketAddr,
    busy: Arc<AtomicUsize>,
    idle_since_ms: Arc<AtomicU64>,
    started: Instant,
    failures: Arc<Mutex<Failures>>,
    rates: Arc<Mutex<Rates>>,
    failed_auth_limit: usize,
    /// `None` on a listener whose routes need no token (the metrics listener).
    operator_token: Option<Arc<str>>,
    request_timeout: Duration,
}

impl Connection {
    async fn run(
        self,
        stream: tokio::net::TcpStream,
        header_timeout: Duration,
        closed: oneshot::Receiver<()>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let this = Arc::new(self);
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.answer(request.map(Body::new)).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(64 * 1024);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = closed => {}
            () = stopped(&mut stopping) => {}
        }
        // Closed to make room, or the hub stops: an idle connection ends now, a request in
        // progress gets its answer first.
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
    }

    async fn answer(&self, mut request: Request<Body>) -> Response<Body> {
        let ip = self.remote.ip();
        // The console's pages carry their token in a cookie: it counts as the request's bearer
        // token, for the operator's exemption, the rates and the failed authentications alike.
        let console = crate::console::is_console_path(request.uri().path());
        if console {
            crate::console::cookie_to_bearer(request.headers_mut());
        }
        let operator = self
            .operator_token
            .as_ref()
            .is_some_and(|token| super::auth::is_operator(token, request.headers()));
        let wait = match operator {
            true => None,
            false => self.failures.lock().expect("admin failures lock").wait(ip, Instant::now()),
        };
        if let Some(wait) = wait {
            let secs = wait.as_secs().max(1);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "too many failed authentications from {ip}: {} within {} s; retry after {secs} s",
                    self.failed_auth_limit,
                    FAILED_AUTH_WINDOW.as_secs()
                ),
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
        if !operator {
            let token = super::auth::bearer(request.headers());
            let refusal =
                self.rates.lock().expect("admin rates lock").refusal(ip, token, Instant::now());
            if let Some(response) = refusal {
                return response;
            }
        }
        // Every route but these wants a token: without one, the answer is 401 before the
        // request is parsed at all.
        // The console answers a request without a token itself, with its sign-in page.
        let public = self.operator_token.is_none()
            || console
            || matches!(request.uri().path(), "/v1/health" | "/v1/openapi.json");
        if !public && super::auth::bearer(request.headers()).is_empty() {
            self.failures.lock().expect("admin failures lock").record(ip, Instant::now());
            return with_challenge(error(
                StatusCode::UNAUTHORIZED,
                "this request needs a token: Authorization: Bearer <token>",
            ));
        }
        // A body declared larger than any route takes is refused before it is read.
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
            // The body is not read: the connection ends with the answer.
            let mut response = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a request body may be at most {MAX_BODY_BYTES} bytes"),
            );
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        self.busy.fetch_add(1, Ordering::AcqRel);
        let answered =
            tokio::time::timeout(self.request_timeout, self.app.clone().oneshot(request));
        let response = match answered.await {
            Ok(Ok(response)) => response,
            Ok(Err(infallible)) => match infallible {},
            Err(_) => error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the request took longer than {} s", self.request_timeout.as_secs()),
            ),
        };
        self.idle_since_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Release);
        self.busy.fetch_sub(1, Ordering::AcqRel);
        if response.status() == StatusCode::UNAUTHORIZED {
            self.failures.lock().expect("admin failures lock").record(ip, Instant::now());
        }
        match console {
            // The console's answers are pages, errors included.
            true => response,
            false => uniform(response, &method, &path).await,
        }
    }
}

/// Gives every error answer the API's one shape, whoever made it (a handler, or axum's
/// routing and extractors, which answer in plain text or not at all): `{"error": "..."}` with
/// `Content-Type: application/json`. An unprocessable body (a missing or mistyped field) is
/// 400 like any other bad request; 401 says how to authenticate.
pub(super) async fn uniform(
    response: Response<Body>,
    method: &axum::http::Method,
    path: &str,
) -> Response<Body> {
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        return match status {
            StatusCode::UNAUTHORIZED => with_challenge(response),
            _ => response,
        };
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let text = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => format!("no such route: {method} {path}"),
        (StatusCode::METHOD_NOT_ALLOWED, true) => {
            let allowed = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok());
            match allowed {
                Some(allowed) => format!("{path} does not take {method}; it takes {allowed}"),
                None => format!("{path} does not take {method}"),
            }
        }
        (_, true) => status.canonical_reason().unwrap_or("error").to_lowercase(),
        (_, false) => text,
    };
    let status = match status {
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        other => other,
    };
    let mut uniform = error(status, &text);
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            uniform.headers_mut().insert(name, value.clone());
        }
    }
    match status {
        StatusCode::UNAUTHORIZED => with_challenge(uniform),
        _ => uniform,
    }
}

/// Adds the challenge a 401 carries.
fn with_challenge(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"switchboard\""));
    response
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// An answer in the API's error shape, `{"error": "..."}`.
fn error(status: StatusCode, text: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": text }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_the_limit_of_failures_until_the_oldest_is_a_window_old() {
        let mut failures = Failures::new(10);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        for i in 0..9 {
            failures.record(ip, t0 + Duration::from_secs(i));
        }
        assert_eq!(failures.wait(ip, t0 + Duration::from_secs(10)), None);
        failures.record(ip, t0 + Duration::from_secs(10));
        assert_eq!(
            failures.wait(ip, t0 + Duration::from_secs(10)),
            Some(FAILED_AUTH_WINDOW - Duration::from_secs(10))
        );
        assert_eq!(failures.wait(other, t0 + Duration::from_secs(10)), None);
        // Once the oldest failure is a window old, the address may try again.
        assert_eq!(failures.wait(ip, t0 + FAILED_AUTH_WINDOW), None);
        // A limit of 0 holds no one back.
        let mut off = Failures::new(0);
        for i in 0..100 {
            off.record(ip, t0 + Duration::from_millis(i));
        }
        assert_eq!(off.wait(ip, t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate_and_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut buckets = Buckets::new(2, 3);
        for _ in 0..3 {
            assert_eq!(buckets.spend("a", t0), Ok(()));
        }
        assert_eq!(buckets.spend("a", t0), Err(Duration::from_millis(500)));
        // Another key has its own bucket.
        assert_eq!(buckets.spend("b", t0), Ok(()));
        // Half a second refills one token at two a second.
        assert_eq!(buckets.spend("a", t0 + Duration::from_millis(500)), Ok(()));
        assert!(buckets.spend("a", t0 + Duration::from_millis(500)).is_err());
        // A rate of 0 is no limit.
        let mut open = Buckets::new(0, 0);
        assert!((0..10_000).all(|_| open.spend("a", t0).is_ok()));
    }

    #[test]
    fn a_full_cap_closes_the_longest_idle_connection_and_never_a_busy_one() {
        let limits = AdminConfig {
            max_connections: 3,
            max_connections_per_address: 2,
            ..AdminConfig::default()
        };
        let mut registry = Registry::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let add = |registry: &mut Registry, ip, idle_since: u64, busy: usize| {
            assert!(admit(registry, ip, &limits));
            let id = registry.next_id;
            registry.next_id += 1;
            registry.open.insert(
                id,
                Open {
                    ip,
                    busy: Arc::new(AtomicUsize::new(busy)),
                    idle_since_ms: Arc::new(AtomicU64::new(idle_since)),
                    close: None,
                },
            );
            id
        };
        let a_busy = add(&mut registry, a, 1, 1);
        let a_idle = add(&mut registry, a, 5, 0);
        // A third from `a` passes its per-address cap: its idle one goes, not the busy one.
        let a_new = add(&mut registry, a, 9, 0);
        assert!(!registry.open.contains_key(&a_idle));
        assert!(registry.open.contains_key(&a_busy));
        let _b1 = add(&mut registry, b, 10, 1);
        // Three open (cap): a new one from `b` closes the longest idle anywhere (a_new).
        let _b2 = add(&mut registry, b, 11, 0);
        assert!(!registry.open.contains_key(&a_new));
        // Every one busy: no room.
        for open in registry.open.values() {
            open.busy.store(1, Ordering::Release);
        }
        assert!(!admit(&mut registry, b, &limits));
    }
}
