//! `api`: emtrack's HTTP surface. It sees only handles: the metrics
//! registry, readiness probes, the database pool, and the alert service's
//! [`AlertHandle`]; never the engine, the pipeline or their state.
//!
//! # Layout
//! - `health`: `/healthz` (alive), `/readyz` (every probe and the database),
//!   `/metrics` (Prometheus text format).
//! - `alerts`: the officers' actions, `POST /v1/alerts/{id}/acknowledge` and
//!   `POST /v1/alerts/{id}/resolve` with `{"officer_id": 3, "note": "..."}`,
//!   and `GET /v1/alerts/stream[?officer_id=N]`, every alert change as
//!   server-sent events.
//! - `error`: how a refusal becomes a status and a body, in one place.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod alerts;
mod error;
mod health;

use alert_service::AlertHandle;
use axum::routing::{get, post};
use sqlx::PgPool;
use std::sync::Arc;

/// A readiness check: true when the part it names is working.
pub type Probe = Arc<dyn Fn() -> bool + Send + Sync>;

/// A readiness note: a condition an operator must see that does not make
/// the service unready (`None` while there is nothing to say).
pub type Note = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    /// Every metric of the service.
    pub metrics: prometheus::Registry,
    /// Named readiness checks (`/readyz` lists each, then the database).
    pub probes: Vec<(&'static str, Probe)>,
    /// Named notes (`/readyz` lists each that has something to say, as
    /// `name warning: …`, after the probes).
    pub notes: Vec<(&'static str, Note)>,
    /// The database, for `/readyz`.
    pub pool: PgPool,
    /// The alert service.
    pub alerts: AlertHandle,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field(
                "probes",
                &self.probes.iter().map(|p| p.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The router.
pub fn router(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(health::readyz))
        .route("/v1/alerts/{id}/acknowledge", post(alerts::acknowledge))
        .route("/v1/alerts/{id}/resolve", post(alerts::resolve))
        .route("/v1/alerts/stream", get(alerts::stream))
        .with_state(state)
}
