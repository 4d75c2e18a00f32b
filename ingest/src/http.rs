//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the
//! process is alive) and `/readyz` (connected and subscribed to the broker,
//! database reachable, engine loaded).

use crate::pipeline::Shared;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The pipeline's shared state (metrics, broker readiness, pool).
    pub shared: Arc<Shared>,
    /// Set once zones, subjects and devices are loaded and state is rebuilt.
    pub engine_loaded: Arc<AtomicBool>,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        s.shared.metrics.render(),
    )
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let broker = s.shared.mqtt_ready.load(Ordering::Relaxed);
    let engine = s.engine_loaded.load(Ordering::Relaxed);
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&s.shared.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let body = format!(
        "broker {}\ndatabase {}\nengine {}\n",
        ok(broker),
        ok(db),
        ok(engine)
    );
    let status = if broker && db && engine {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

fn ok(b: bool) -> &'static str {
    if b { "ok" } else { "not ready" }
}
