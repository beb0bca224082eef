//! The metrics listener (`[metrics] listen`, 127.0.0.1:7449 by default): `GET /metrics` in the
//! Prometheus text format, `GET /healthz` and `GET /readyz` for load balancers and Kubernetes
//! probes. None of them needs a token: keep the listener on a loopback or private address.
//!
//! It is bound before the store opens, so a probe can tell a hub that is starting (alive, not
//! ready) from one that is not running, and it stays up until the hub has stopped, so a load
//! balancer sees the drain. Connections are served by the admin API's server, with its caps,
//! timeouts and per-address rate limits.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU8, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::fanout::Hub;

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// Where the hub is in its life, as `/readyz` tells it.
#[derive(Default)]
pub struct Readiness {
    state: AtomicU8,
    hub: OnceLock<Arc<Hub>>,
}

impl Readiness {
    /// The store is open and every listener bound: `/readyz` answers 200 and `/metrics` has
    /// figures.
    pub fn ready(&self, hub: Arc<Hub>) {
        let _ = self.hub.set(hub);
        // Never back from draining to ready.
        let _ = self.state.compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The hub is stopping: `/readyz` answers 503 from now on.
    pub fn draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    /// Whether the hub is ready.
    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY
    }
}

/// The routes of the metrics listener.
pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// 200 while the process runs and its runtime answers.
async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

/// 200 once the store is open and the listeners bound; 503 while starting and draining.
async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    match readiness.state.load(Ordering::Acquire) {
        READY => text(StatusCode::OK, "ready\n"),
        DRAINING => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
    }
}

/// The exposition; 503 until the store is open.
async fn metrics(State(readiness): State<Arc<Readiness>>) -> Response {
    let Some(hub) = readiness.hub.get() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    };
    let body = super::render(hub).await;
    (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    async fn answer(readiness: &Arc<Readiness>, path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
        let response = router(readiness.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_is_503_while_starting_and_draining_and_healthz_always_200() {
        let readiness = Arc::new(Readiness::default());
        assert_eq!(answer(&readiness, "/healthz").await, (StatusCode::OK, "ok\n".into()));
        let starting = (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string());
        assert_eq!(answer(&readiness, "/readyz").await, starting);
        assert_eq!(answer(&readiness, "/metrics").await, starting);
        readiness.state.store(READY, Ordering::Release);
        assert_eq!(answer(&readiness, "/readyz").await, (StatusCode::OK, "ready\n".into()));
        readiness.draining();
        assert!(!readiness.is_ready());
        let draining = (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string());
        assert_eq!(answer(&readiness, "/readyz").await, draining);
        assert_eq!(answer(&readiness, "/healthz").await, (StatusCode::OK, "ok\n".into()));
        // Draining is final: a late `ready` does not undo it.
        readiness.state.compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire).ok();
        assert_eq!(answer(&readiness, "/readyz").await, draining);
    }
}
