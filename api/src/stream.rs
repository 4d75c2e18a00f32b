//! `GET /v1/alerts/stream`: the caller's alert changes as server-sent
//! events, resumable.
//!
//! The stream reads `alert_events`, not the in-process broadcast: each
//! event's SSE `id` is its `alert_events.id`, and a client that reconnects
//! with `Last-Event-ID` gets every change after it, in order, then the live
//! ones, without loss or duplicate. The broadcast only wakes the reader.
//! This holds because one task (the alert service, under its database lock)
//! writes `alert_events`, so ids become visible in increasing order.
//! Scope is the same SQL condition as every list ([`SUBJECT_VISIBLE`]).
//! Open streams are capped (`ApiState::streams`); a stream ends when the
//! alert service stops, or when the caller's credential is revoked, expires
//! or its account is disabled (checked before every batch and every 15 s).

use crate::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::scope::{Need, SUBJECT_VISIBLE, Scope};
use crate::time::Time;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// One change, as streamed (`event: alert`).
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct StreamedChange {
    /// The SSE id (resume with `Last-Event-ID`).
    event_id: i64,
    alert_id: i64,
    version: i32,
    /// `raised`, `acknowledged`, `escalated`, `condition_ended`, `resolved`.
    change: String,
    at: Time,
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    kind: String,
    severity: String,
    /// The alert's state now.
    alert_state: String,
    subject_id: i64,
    subject_reference: Option<String>,
    officer_id: Option<i64>,
    /// Escalation level reached by an `escalated` change.
    level: Option<i16>,
    device_id: Option<String>,
    event_at: Time,
    historical: bool,
    note: Option<String>,
    disposition: Option<String>,
    /// Who acted (absent: emtrack itself).
    user_id: Option<i64>,
}

const BATCH: i64 = 200;

struct Reader {
    s: ApiState,
    /// Who reads: checked again before every batch and every 15 s.
    caller: crate::identity::Caller,
    officers: Option<Vec<i64>>,
    last: i64,
    pending: VecDeque<StreamedChange>,
    wake: tokio::sync::broadcast::Receiver<std::sync::Arc<str>>,
    stopped: tokio_util::sync::CancellationToken,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Reader {
    async fn fetch(&mut self) -> Result<(), sqlx::Error> {
        let q = format!(
            "SELECT e.id AS event_id, e.alert_id, e.version, e.change, e.at, a.kind, a.severity, \
                    a.state AS alert_state, a.subject_id, s.reference AS subject_reference, s.officer_id, \
                    e.level, a.device_id, a.event_at, a.historical, e.note, e.disposition, e.user_id \
             FROM alert_events e JOIN alerts a ON a.id = e.alert_id \
             LEFT JOIN subjects s ON s.id = a.subject_id \
             WHERE e.id > $2 AND e.change <> 'repeated' AND {SUBJECT_VISIBLE} \
             ORDER BY e.id LIMIT $3"
        );
        let rows: Vec<StreamedChange> = sqlx::query_as(&q)
            .bind(&self.officers)
            .bind(self.last)
            .bind(BATCH)
            .fetch_all(&self.s.pool)
            .await?;
        if let Some(r) = rows.last() {
            self.last = r.event_id;
        }
        self.pending.extend(rows);
        Ok(())
    }

    /// Whether the caller's credential still holds (not revoked, not
    /// expired, the account enabled); the scope is resolved again, so a
    /// supervisor's changed team applies to an open stream too.
    async fn still_allowed(&mut self) -> bool {
        let live: Result<bool, sqlx::Error> = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM credentials c JOIN users u ON u.id = c.user_id \
             WHERE c.id = $1 AND c.revoked_at IS NULL AND c.expires_at > now() AND u.disabled_at IS NULL)",
        )
        .bind(self.caller.credential)
        .fetch_one(&self.s.pool)
        .await;
        if !live.unwrap_or(false) {
            return false;
        }
        match Scope::resolve(&self.s.pool, self.caller.clone()).await {
            Ok(scope) => {
                self.officers = scope.officers();
                true
            }
            Err(_) => false,
        }
    }

    /// The next change, waiting for one; `None` once the service stops or
    /// the caller's credential no longer holds (revoked, expired, disabled).
    async fn next(&mut self) -> Option<StreamedChange> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Some(c);
            }
            if !self.still_allowed().await {
                return None;
            }
            match self.fetch().await {
                Ok(()) if !self.pending.is_empty() => continue,
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "alert stream: cannot read; retrying"),
            }
            tokio::select! {
                r = self.wake.recv() => if let Err(RecvError::Closed) = r { return None },
                () = self.stopped.cancelled() => return None,
                // A safety net: read again now and then even without a wake-up.
                () = tokio::time::sleep(Duration::from_secs(15)) => {}
            }
        }
    }
}

/// `GET /v1/alerts/stream`: every change to an alert within the caller's
/// scope as `event: alert` (JSON), with `id`; send `Last-Event-ID` to
/// resume after a disconnect (absent: from now on).
#[utoipa::path(get, path = "/v1/alerts/stream", tag = "alerts", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of StreamedChange", content_type = "text/event-stream"),
              (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn stream(
    State(s): State<ApiState>,
    scope: Scope,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    scope.require(Need::ReadCaseload)?;
    let last = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| ApiError::Invalid("Last-Event-ID must be an event id".into()))?,
        None => {
            sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM alert_events")
                .fetch_one(&s.pool)
                .await?
        }
    };
    let permit = s
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy("alert streams"))?;
    let reader = Reader {
        wake: s.alerts.subscribe(),
        stopped: s.alerts.stopped(),
        officers: scope.officers(),
        caller: scope.caller.clone(),
        s,
        last,
        pending: VecDeque::new(),
        _permit: permit,
    };
    let events = futures_util::stream::unfold(reader, |mut r| async move {
        let c = r.next().await?;
        let e = Event::default()
            .event("alert")
            .id(c.event_id.to_string())
            .json_data(&c)
            .unwrap_or_else(|_| Event::default().comment("unencodable change"));
        Some((Ok(e), r))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
