//! Alerts: the list (filters, cursor pages), one alert with its history and
//! deliveries, and the officers' actions. Every query is scoped
//! ([`crate::scope`]); the actor of an action is the authenticated user.

use crate::ApiState;
use crate::audit::AuditSlot;
use crate::error::{ApiError, ApiResult};
use crate::params::{self, Body, Params};
use crate::scope::{Need, SUBJECT_VISIBLE, Scope, ScopedAlert};
use crate::time::Time;
use alerts::{AlertType, Disposition, OfficerAction, Severity};
use axum::Json;
use axum::extract::State;
use store::Millis;

/// The filters of `GET /v1/alerts`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AlertQuery {
    /// `open`, `acknowledged`, `resolved`, or `unresolved` (open or
    /// acknowledged).
    state: Option<String>,
    /// `critical`, `serious` or `info`.
    severity: Option<String>,
    /// An alert type (`exclusion_zone_entered`, `strap_tamper`, …).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// One subject.
    subject_id: Option<i64>,
    /// One officer's caseload.
    officer_id: Option<i64>,
    /// Raised at or after (RFC 3339).
    from: Option<String>,
    /// Raised before (RFC 3339).
    to: Option<String>,
    /// Include charger records (`charger_connected`, `charger_disconnected`:
    /// information, resolved at once); left out by default so that they do
    /// not crowd the queue (a `type` filter naming one includes them).
    records: Option<bool>,
    /// The `next` of the previous page.
    cursor: Option<String>,
    /// At most this many (1–500, default 50).
    limit: Option<i64>,
}

/// An alert, as listed.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct AlertSummary {
    id: i64,
    subject_id: i64,
    /// The subject's case reference.
    subject_reference: Option<String>,
    /// The supervising officer.
    officer_id: Option<i64>,
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    kind: String,
    severity: String,
    state: String,
    /// When it happened (fix or event time).
    event_at: Time,
    raised_at: Time,
    /// Raised from data that arrived late (not live).
    historical: bool,
    /// 0 officer, 1 supervisor, 2 duty desk.
    level: i16,
    device_id: Option<String>,
    repeats: i32,
    resolved_at: Option<Time>,
    /// A tamper alert: when the device reported the strap or case closed
    /// again (device time); it stays open until an officer resolves it.
    condition_ended_at: Option<Time>,
    /// The zone (zone alerts) or rule (proximity) it is about; 0 for device alerts.
    scope: i64,
}

/// A page of alerts, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct AlertPage {
    alerts: Vec<AlertSummary>,
    /// Pass as `cursor` for the next page (absent on the last).
    next: Option<String>,
}

const SUMMARY: &str = "SELECT a.id, a.subject_id, s.reference AS subject_reference, s.officer_id, a.kind, \
       a.severity, a.state, a.event_at, a.raised_at, a.historical, a.level, a.device_id, a.repeats, \
       a.resolved_at, a.condition_ended_at, a.scope \
     FROM alerts a LEFT JOIN subjects s ON s.id = a.subject_id";

fn label<T>(name: &str, v: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> ApiResult<()> {
    match v {
        Some(v) if parse(v).is_none() => Err(ApiError::Invalid(format!("{name} {v:?} is unknown"))),
        _ => Ok(()),
    }
}

fn cursor(c: Option<&str>) -> ApiResult<(Option<Millis>, i64)> {
    let Some(c) = c else { return Ok((None, 0)) };
    let bad = || ApiError::Invalid(format!("cursor {c:?} is not one this API gave"));
    let (ms, id) = c.split_once('_').ok_or_else(bad)?;
    // A time jiff cannot hold is not one this API gave (and would fail to bind).
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    jiff::Timestamp::from_millisecond(ms).map_err(|_| bad())?;
    Ok((Some(Millis(ms)), id.parse().map_err(|_| bad())?))
}

/// `GET /v1/alerts`: the alerts within the caller's scope, filtered, newest
/// first, a page at a time.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", params(AlertQuery),
    security(("bearer" = [])),
    responses((status = 200, body = AlertPage), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(s): State<ApiState>,
    scope: Scope,
    Params(q): Params<AlertQuery>,
) -> ApiResult<Json<AlertPage>> {
    scope.require(Need::ReadCaseload)?;
    let limit = params::limit(q.limit, 50, 500)?;
    label("state", q.state.as_deref(), |v| {
        ["open", "acknowledged", "resolved", "unresolved"]
            .contains(&v)
            .then_some(())
    })?;
    label("severity", q.severity.as_deref(), Severity::from_name)?;
    label("type", q.kind.as_deref(), AlertType::from_name)?;
    let (from, to) = (
        params::time("from", q.from.as_deref())?,
        params::time("to", q.to.as_deref())?,
    );
    let (after_at, after_id) = cursor(q.cursor.as_deref())?;
    let records = q.records.unwrap_or(false) || q.kind.is_some();
    let sql = format!(
        "{SUMMARY} WHERE {SUBJECT_VISIBLE} \
           AND ($2::text IS NULL OR a.state = $2 OR ($2 = 'unresolved' AND a.state <> 'resolved')) \
           AND ($3::text IS NULL OR a.severity = $3) AND ($4::text IS NULL OR a.kind = $4) \
           AND ($5::int8 IS NULL OR a.subject_id = $5) AND ($6::int8 IS NULL OR s.officer_id = $6) \
           AND ($7::timestamptz IS NULL OR a.raised_at >= $7) AND ($8::timestamptz IS NULL OR a.raised_at < $8) \
           AND ($9::timestamptz IS NULL OR (a.raised_at, a.id) < ($9, $10)) \
           AND ($12 OR a.kind NOT IN ('charger_connected', 'charger_disconnected')) \
         ORDER BY a.raised_at DESC, a.id DESC LIMIT $11"
    );
    let rows: Vec<AlertSummary> = sqlx::query_as(&sql)
        .bind(scope.officers())
        .bind(q.state)
        .bind(q.severity)
        .bind(q.kind)
        .bind(q.subject_id)
        .bind(q.officer_id)
        .bind(from)
        .bind(to)
        .bind(after_at)
        .bind(after_id)
        .bind(limit + 1)
        .bind(records)
        .fetch_all(&s.pool)
        .await?;
    let (alerts, next) = params::page(rows, limit, |a| {
        format!("{}_{}", a.raised_at.0.as_millisecond(), a.id)
    });
    Ok(Json(AlertPage { alerts, next }))
}

/// One change in an alert's history.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct AlertChange {
    version: i32,
    at: Time,
    /// `raised`, `repeated`, `acknowledged`, `escalated`, `condition_ended`
    /// (a tamper alert's strap or case closed again; the note says when),
    /// `resolved`.
    change: String,
    level: Option<i16>,
    automatic: Option<bool>,
    note: Option<String>,
    disposition: Option<String>,
    /// The user who acted (absent: emtrack itself).
    user_id: Option<i64>,
    username: Option<String>,
}

/// One notification of the alert and its fate.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct AlertDelivery {
    version: i32,
    /// `mqtt` or `webhook`.
    channel: String,
    /// The topic, or the webhook's id.
    target: String,
    /// `pending`, `delivered` or `dead`.
    state: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: Time,
    delivered_at: Option<Time>,
}

/// One alert, with its history and deliveries.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct AlertDetail {
    alert: AlertSummary,
    history: Vec<AlertChange>,
    deliveries: Vec<AlertDelivery>,
}

/// `GET /v1/alerts/{id}`: one alert, its history (who did what) and its
/// deliveries (who was told, when, after how many attempts).
#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The alert's id")),
    responses((status = 200, body = AlertDetail), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn one(State(s): State<ApiState>, a: ScopedAlert) -> ApiResult<Json<AlertDetail>> {
    let alert = sqlx::query_as(&format!("{SUMMARY} WHERE a.id = $1"))
        .bind(a.id)
        .fetch_one(&s.pool)
        .await?;
    let history = sqlx::query_as(
        "SELECT e.version, e.at, e.change, e.level, e.automatic, e.note, e.disposition, e.user_id, \
                u.username FROM alert_events e LEFT JOIN users u ON u.id = e.user_id \
         WHERE e.alert_id = $1 ORDER BY e.version",
    )
    .bind(a.id)
    .fetch_all(&s.pool)
    .await?;
    let deliveries = sqlx::query_as(
        "SELECT version, channel, target, state, attempts, last_error, created_at, delivered_at \
         FROM alert_deliveries WHERE alert_id = $1 ORDER BY id",
    )
    .bind(a.id)
    .fetch_all(&s.pool)
    .await?;
    Ok(Json(AlertDetail {
        alert,
        history,
        deliveries,
    }))
}

/// `POST /v1/alerts/{id}/acknowledge`'s body.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Acknowledge {
    /// An optional note (at most 4096 bytes).
    note: Option<String>,
}

/// `POST /v1/alerts/{id}/resolve`'s body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Resolve {
    /// What was done and found (required, at most 4096 bytes).
    note: String,
    /// `violation_confirmed`, `false_alarm`, `device_fault` or
    /// `approved_by_officer`.
    disposition: String,
}

/// The answer to an action.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Done {
    alert_id: i64,
    /// The state after the action.
    state: String,
}

async fn act(
    s: &ApiState,
    scope: &Scope,
    a: ScopedAlert,
    action: OfficerAction,
    note: Option<String>,
) -> ApiResult<Json<Done>> {
    scope.require(Need::ActOnAlerts)?;
    let actor = u64::try_from(scope.caller.user).map_err(|_| ApiError::Forbidden)?;
    let alert = u64::try_from(a.id).map_err(|_| ApiError::NotFound)?;
    s.alerts.act(alert, actor, action, note).await?;
    let state = sqlx::query_scalar("SELECT state FROM alerts WHERE id = $1")
        .bind(a.id)
        .fetch_one(&s.pool)
        .await?;
    Ok(Json(Done {
        alert_id: a.id,
        state,
    }))
}

/// `POST /v1/alerts/{id}/acknowledge`: the caller takes the alert (its
/// escalation stops). The actor recorded is the caller.
#[utoipa::path(post, path = "/v1/alerts/{id}/acknowledge", tag = "alerts",
    security(("bearer" = [])), request_body = Acknowledge,
    params(("id" = i64, Path, description = "The alert's id")),
    responses((status = 200, body = Done), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn acknowledge(
    State(s): State<ApiState>,
    scope: Scope,
    a: ScopedAlert,
    slot: AuditSlot,
    Body(body): Body<Acknowledge>,
) -> ApiResult<Json<Done>> {
    slot.detail(serde_json::json!({"alert_id": a.id, "note": body.note}));
    act(&s, &scope, a, OfficerAction::Acknowledge, body.note).await
}

/// `POST /v1/alerts/{id}/resolve`: the caller closes the alert with a note
/// and a disposition.
#[utoipa::path(post, path = "/v1/alerts/{id}/resolve", tag = "alerts",
    security(("bearer" = [])), request_body = Resolve,
    params(("id" = i64, Path, description = "The alert's id")),
    responses((status = 200, body = Done), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn resolve(
    State(s): State<ApiState>,
    scope: Scope,
    a: ScopedAlert,
    slot: AuditSlot,
    Body(body): Body<Resolve>,
) -> ApiResult<Json<Done>> {
    let d = Disposition::from_name(&body.disposition).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "disposition {:?} is unknown (violation_confirmed, false_alarm, device_fault, approved_by_officer)",
            body.disposition
        ))
    })?;
    slot.detail(
        serde_json::json!({"alert_id": a.id, "note": body.note, "disposition": d.as_str()}),
    );
    act(&s, &scope, a, OfficerAction::Resolve(d), Some(body.note)).await
}
