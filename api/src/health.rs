//! Liveness, readiness and metrics.

use crate::HttpState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus::TextEncoder;
use std::time::Duration;

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let body = TextEncoder::new()
        .encode_to_string(&s.metrics.gather())
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"));
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

/// `GET /readyz`: the node's role (`role active` or `role standby`), one
/// line per probe and one for the database; 200 only on the active node
/// when every one is ok. Then a `warning` line for each note that has
/// something to say (it does not change the status).
pub(crate) async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&s.pool),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let mut all = db && s.role == crate::Role::Active;
    let mut body = format!("role {}\n", s.role.as_str());
    for (name, probe) in &s.probes {
        let ok = probe();
        all &= ok;
        body.push_str(&format!("{name} {}\n", word(ok)));
    }
    body.push_str(&format!("database {}\n", word(db)));
    for (name, note) in &s.notes {
        if let Some(text) = note() {
            body.push_str(&format!("{name} warning: {text}\n"));
        }
    }
    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

fn word(ok: bool) -> &'static str {
    if ok { "ok" } else { "not ready" }
}
