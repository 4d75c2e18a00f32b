//! The officers' alert actions and the alert stream.

use crate::HttpState;
use crate::error::ApiError;
use alerts::OfficerAction;
use axum::extract::{Json, Path, RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::broadcast::error::RecvError;

/// The body of an alert action.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Action {
    /// Who acts.
    officer_id: u64,
    /// Why (required to resolve).
    #[serde(default)]
    note: Option<String>,
}

async fn act(
    s: &HttpState,
    alert: u64,
    action: OfficerAction,
    body: Action,
) -> Result<&'static str, ApiError> {
    s.alerts
        .act(alert, body.officer_id, action, body.note)
        .await
        .map(|()| "ok\n")
        .map_err(ApiError)
}

/// `POST /v1/alerts/{id}/acknowledge`.
pub(crate) async fn acknowledge(
    State(s): State<HttpState>,
    Path(id): Path<u64>,
    Json(body): Json<Action>,
) -> Result<&'static str, ApiError> {
    act(&s, id, OfficerAction::Acknowledge, body).await
}

/// `POST /v1/alerts/{id}/resolve`.
pub(crate) async fn resolve(
    State(s): State<HttpState>,
    Path(id): Path<u64>,
    Json(body): Json<Action>,
) -> Result<&'static str, ApiError> {
    act(&s, id, OfficerAction::Resolve, body).await
}

/// `GET /v1/alerts/stream[?officer_id=N]`: every alert change (of this
/// officer's subjects) as `event: alert`; `event: lagged` with a count when
/// a slow reader missed some (`alert_deliveries` still has them). The
/// stream ends when the alert service stops, so that a graceful shutdown is
/// not held open by a subscriber.
pub(crate) async fn stream(
    State(s): State<HttpState>,
    RawQuery(q): RawQuery,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let officer: Option<u64> = q.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("officer_id="))
            .and_then(|v| v.parse().ok())
    });
    let rx = s.alerts.subscribe();
    let stopped = s.alerts.stopped();
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
                        let mine = officer.is_none_or(|o| {
                            serde_json::from_str::<serde_json::Value>(&json)
                                .is_ok_and(|v| v["officer_id"].as_u64() == Some(o))
                        });
                        if mine {
                            return Some((Ok(Event::default().event("alert").data(&*json)), rx));
                        }
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
