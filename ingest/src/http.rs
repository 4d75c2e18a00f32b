//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the
//! process is alive) and `/readyz` (connected and subscribed to the broker,
//! database reachable, engine loaded), and the officers' alert actions:
//! `POST /v1/alerts/{id}/acknowledge` and `POST /v1/alerts/{id}/resolve`
//! with `{"officer_id": 3, "note": "..."}` (a note is required to resolve),
//! and `GET /v1/alerts/stream[?officer_id=N]`, every alert change as
//! server-sent events (the notification JSON; `lagged` when a slow reader
//! missed some, which `alert_deliveries` still has).

use crate::alerting::{ActionError, Command};

/// Longest officer's note taken.
pub const MAX_NOTE_BYTES: usize = 4_096;
use crate::pipeline::Shared;
use alerts::BookError;
use axum::Router;
use axum::extract::State;
use axum::extract::{Json, Path, RawQuery};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
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
    /// The alert service.
    pub alerting: crate::alerting::Alerting,
}

/// The body of an alert action.
#[derive(Debug, serde::Deserialize)]
pub struct Action {
    /// Who acts.
    pub officer_id: u64,
    /// Why (required to resolve).
    #[serde(default)]
    pub note: Option<String>,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/alerts/{id}/acknowledge", post(acknowledge))
        .route("/v1/alerts/{id}/resolve", post(resolve))
        .route("/v1/alerts/stream", get(stream))
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

async fn act(
    s: &HttpState,
    note: Option<String>,
    make: impl FnOnce(crate::alerting::Reply, Option<String>) -> Command,
) -> (StatusCode, String) {
    if let Some(n) = &note
        && (n.len() > MAX_NOTE_BYTES || n.contains('\0'))
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("a note is text of at most {MAX_NOTE_BYTES} bytes, without NUL characters\n"),
        );
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.alerting.commands.send(make(tx, note)).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "alert service stopped\n".into(),
        );
    }
    match rx.await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n".into()),
        Ok(Err(ActionError::Book(e @ BookError::Unknown(_)))) => {
            (StatusCode::NOT_FOUND, format!("{e}\n"))
        }
        Ok(Err(ActionError::Book(e @ BookError::Resolved(_)))) => {
            (StatusCode::CONFLICT, format!("{e}\n"))
        }
        Ok(Err(ActionError::Book(e @ BookError::NoteRequired(_)))) => {
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n"))
        }
        Ok(Err(ActionError::NotStored)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database refused the change; try again\n".into(),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "alert service stopped\n".into(),
        ),
    }
}

async fn acknowledge(
    State(s): State<HttpState>,
    Path(id): Path<u64>,
    Json(a): Json<Action>,
) -> impl IntoResponse {
    act(&s, a.note, |reply, note| Command::Acknowledge {
        alert: id,
        officer: a.officer_id,
        note,
        reply,
    })
    .await
}

async fn resolve(
    State(s): State<HttpState>,
    Path(id): Path<u64>,
    Json(a): Json<Action>,
) -> impl IntoResponse {
    act(&s, a.note, |reply, note| Command::Resolve {
        alert: id,
        officer: a.officer_id,
        note,
        reply,
    })
    .await
}

async fn stream(
    State(s): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    use tokio::sync::broadcast::error::RecvError;
    // `officer_id=N`: only alerts of this officer's subjects.
    let officer: Option<u64> = q.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("officer_id="))
            .and_then(|v| v.parse().ok())
    });
    let rx = s.alerting.broadcast.subscribe();
    // The stream ends when the alert service stops, so that a graceful
    // shutdown is not held open by a subscriber.
    let stopped = s.alerting.stopped.clone();
    let events = futures_util::stream::unfold(rx, move |mut rx| {
        let stopped = stopped.clone();
        async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = stopped.cancelled() => return None,
                };
                match next {
                    Ok(json) => {
                        if let Some(o) = officer {
                            let mine = serde_json::from_str::<serde_json::Value>(&json)
                                .is_ok_and(|v| v["officer_id"].as_u64() == Some(o));
                            if !mine {
                                continue;
                            }
                        }
                        return Some((Ok(Event::default().event("alert").data(&*json)), rx));
                    }
                    Err(RecvError::Lagged(n)) => {
                        return Some((
                            Ok(Event::default().event("lagged").data(n.to_string())),
                            rx,
                        ));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
