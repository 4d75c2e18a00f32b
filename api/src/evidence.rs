//! Evidence export: a subject's record for a period (fixes with the digest
//! of the message that carried each, rule transitions, alert changes, and
//! the orders), as CSV (one part per request) or as one GeoJSON document.
//! Every export needs a stated reason; its SHA-256 is returned in the
//! `x-emtrack-sha256` header and kept in the audit log, so a copy presented
//! later can be checked against the record.
//!
//! The orders are every version of the subject's rules and their zones in
//! force at some time of the period (`order_versions`), each with its
//! validity interval, author and reason.

use crate::ApiState;
use crate::audit::AuditSlot;
use crate::error::{ApiError, ApiResult};
use crate::orders::{self, OrderChange};
use crate::params::{self, Params};
use crate::scope::{Scope, ScopedSubject};
use crate::time::Time;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use store::Millis;

/// The most fixes one export holds; a longer period is exported in parts.
const MAX_FIXES: i64 = 250_000;

/// The period and the reason of an export.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportQuery {
    /// From (RFC 3339), inclusive.
    from: String,
    /// To (RFC 3339), exclusive.
    to: String,
    /// Why (recorded in the audit log; required).
    reason: String,
    /// CSV only: `fixes`, `transitions`, `alerts` or `orders`.
    part: Option<String>,
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
struct FixRow {
    device_id: String,
    fix_time: Time,
    received_at: Time,
    lat: f64,
    lon: f64,
    accuracy_m: f32,
    speed_m_s: Option<f32>,
    heading_deg: Option<f32>,
    battery_pct: Option<i16>,
    flags: i16,
    suspect: bool,
    judged_at: Option<Time>,
    message_id: Option<i64>,
    /// SHA-256 (hex) of the message bytes that carried the fix.
    message_sha256: Option<String>,
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
struct TransitionRow {
    rule_id: i64,
    zone_id: i64,
    kind: String,
    at: Time,
    historical: bool,
    confirmed_at: Time,
    other_device: Option<String>,
    end_cause: Option<String>,
    /// The version of the zone the confirming fix was judged under (as in
    /// the orders' `zone_version`; empty for proximity rules and for ends no
    /// fix decided).
    zone_version: Option<i64>,
    recorded_at: Time,
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
struct AlertChangeRow {
    alert_id: i64,
    #[serde(rename = "type")]
    kind: String,
    severity: String,
    event_at: Time,
    historical: bool,
    version: i32,
    change: String,
    at: Time,
    username: Option<String>,
    note: Option<String>,
    disposition: Option<String>,
}

/// An order version, flattened for CSV (the row as JSON text).
#[derive(Debug, serde::Serialize)]
struct OrderRow {
    object: String,
    object_id: i64,
    version: i32,
    valid_from: Option<Time>,
    valid_to: Option<Time>,
    changed_by: String,
    reason: Option<String>,
    row: Option<String>,
}

struct Record {
    fixes: Vec<FixRow>,
    transitions: Vec<TransitionRow>,
    alerts: Vec<AlertChangeRow>,
    orders: Vec<OrderChange>,
}

async fn fixes(s: &ApiState, subject: i64, from: Millis, to: Millis) -> ApiResult<Vec<FixRow>> {
    let rows: Vec<FixRow> = sqlx::query_as(
        "SELECT f.device_id, f.fix_time, f.received_at, f.lat, f.lon, f.accuracy_m, f.speed_m_s, \
                f.heading_deg, f.battery_pct, f.flags, f.suspect, f.judged_at, f.message_id, \
                encode(m.sha256, 'hex') AS message_sha256 \
         FROM fixes f JOIN assignments x ON x.device_id = f.device_id AND x.subject_id = $1 \
           AND f.fix_time >= x.valid_from AND (x.valid_to IS NULL OR f.fix_time < x.valid_to) \
         LEFT JOIN messages m ON m.id = f.message_id \
         WHERE f.fix_time >= $2 AND f.fix_time < $3 ORDER BY f.fix_time, f.device_id LIMIT $4",
    )
    .bind(subject)
    .bind(from)
    .bind(to)
    .bind(MAX_FIXES + 1)
    .fetch_all(&s.pool)
    .await?;
    if rows.len() as i64 > MAX_FIXES {
        return Err(ApiError::Unprocessable(format!(
            "the period holds more than {MAX_FIXES} fixes: export it in shorter parts"
        )));
    }
    Ok(rows)
}

async fn record(
    s: &ApiState,
    subject: i64,
    from: Millis,
    to: Millis,
    part: Option<&str>,
) -> ApiResult<Record> {
    let want = |p: &str| part.is_none_or(|x| x == p);
    let fixes = if want("fixes") {
        fixes(s, subject, from, to).await?
    } else {
        Vec::new()
    };
    let transitions = if want("transitions") {
        sqlx::query_as(
            "SELECT rule_id, zone_id, kind, at, historical, confirmed_at, other_device, end_cause, zone_version, recorded_at \
             FROM rule_transitions WHERE subject_id = $1 AND at >= $2 AND at < $3 ORDER BY at, rule_id",
        )
        .bind(subject)
        .bind(from)
        .bind(to)
        .fetch_all(&s.pool)
        .await?
    } else {
        Vec::new()
    };
    let alerts = if want("alerts") {
        sqlx::query_as(
            "SELECT a.id AS alert_id, a.kind, a.severity, a.event_at, a.historical, e.version, e.change, \
                    e.at, u.username, e.note, e.disposition \
             FROM alerts a JOIN alert_events e ON e.alert_id = a.id LEFT JOIN users u ON u.id = e.user_id \
             WHERE a.subject_id = $1 AND a.event_at >= $2 AND a.event_at < $3 ORDER BY a.id, e.version",
        )
        .bind(subject)
        .bind(from)
        .bind(to)
        .fetch_all(&s.pool)
        .await?
    } else {
        Vec::new()
    };
    let orders = if want("orders") {
        // Every version in force at some time of the period.
        let sql = orders::subject_versions(
            "row IS NOT NULL AND valid_from < $3 AND (valid_to IS NULL OR valid_to > $2)",
        );
        sqlx::query_as(&sql)
            .bind(subject)
            .bind(from)
            .bind(to)
            .fetch_all(&s.pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(Record {
        fixes,
        transitions,
        alerts,
        orders,
    })
}

fn period(q: &ExportQuery, slot: &AuditSlot) -> ApiResult<(Millis, Millis)> {
    let reason = q.reason.trim();
    if reason.is_empty() || reason.len() > 1000 {
        return Err(ApiError::Invalid(
            "an export needs a reason (1–1000 bytes): it is kept in the audit log".into(),
        ));
    }
    slot.reason(reason);
    let from = params::time("from", Some(&q.from))?.unwrap_or(Millis(0));
    let to = params::time("to", Some(&q.to))?.unwrap_or(Millis(0));
    if from >= to {
        return Err(ApiError::Invalid("from must be before to".into()));
    }
    Ok((from, to))
}

/// The answer: the body, its content type and file name, its SHA-256 in a
/// header and in the audit row.
fn signed(
    body: Vec<u8>,
    content_type: &'static str,
    file: String,
    slot: &AuditSlot,
    what: serde_json::Value,
) -> Response {
    let digest = format!("{:x}", Sha256::digest(&body));
    let mut detail = what;
    detail["sha256"] = serde_json::Value::String(digest.clone());
    detail["bytes"] = body.len().into();
    slot.detail(detail);
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&digest) {
        h.insert(HeaderName::from_static("x-emtrack-sha256"), v);
    }
    r
}

fn csv_of<T: serde::Serialize>(rows: &[T]) -> ApiResult<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)
            .map_err(|e| ApiError::Unavailable(format!("cannot write the CSV: {e}")))?;
    }
    w.into_inner()
        .map_err(|e| ApiError::Unavailable(format!("cannot write the CSV: {e}")))
}

/// `GET /v1/subjects/{id}/evidence.csv`: one part of the record as CSV.
#[utoipa::path(get, path = "/v1/subjects/{id}/evidence.csv", tag = "subjects",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The subject's id"), ExportQuery),
    responses((status = 200, description = "CSV with a header row; SHA-256 in x-emtrack-sha256", content_type = "text/csv", body = String)))]
pub(crate) async fn csv(
    State(s): State<ApiState>,
    ScopedSubject(id): ScopedSubject,
    slot: AuditSlot,
    Params(q): Params<ExportQuery>,
) -> ApiResult<Response> {
    let (from, to) = period(&q, &slot)?;
    let part = q.part.as_deref().unwrap_or("");
    if !["fixes", "transitions", "alerts", "orders"].contains(&part) {
        return Err(ApiError::Invalid(format!(
            "part {part:?} is unknown: fixes, transitions, alerts or orders"
        )));
    }
    let r = record(&s, id, from, to, Some(part)).await?;
    let body = match part {
        "fixes" => csv_of(&r.fixes)?,
        "transitions" => csv_of(&r.transitions)?,
        "alerts" => csv_of(&r.alerts)?,
        _ => csv_of(
            &r.orders
                .iter()
                .map(|o| OrderRow {
                    object: o.object.clone(),
                    object_id: o.object_id,
                    version: o.version,
                    valid_from: o.valid_from,
                    valid_to: o.valid_to,
                    changed_by: o.changed_by.clone(),
                    reason: o.reason.clone(),
                    row: o.row.as_ref().map(|r| r.to_string()),
                })
                .collect::<Vec<_>>(),
        )?,
    };
    let what = serde_json::json!({"format": "csv", "part": part, "from": q.from, "to": q.to});
    Ok(signed(
        body,
        "text/csv; charset=utf-8",
        format!("subject-{id}-{part}.csv"),
        &slot,
        what,
    ))
}

/// `GET /v1/subjects/{id}/evidence.geojson`: the whole record as one RFC
/// 7946 FeatureCollection: the order zones and the fixes as features;
/// subject, period, orders, transitions and alert changes as members.
#[utoipa::path(get, path = "/v1/subjects/{id}/evidence.geojson", tag = "subjects",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The subject's id"), ExportQuery),
    responses((status = 200, description = "A GeoJSON FeatureCollection; SHA-256 in x-emtrack-sha256", content_type = "application/geo+json", body = Object)))]
pub(crate) async fn geojson(
    State(s): State<ApiState>,
    scope: Scope,
    ScopedSubject(id): ScopedSubject,
    slot: AuditSlot,
    Params(q): Params<ExportQuery>,
) -> ApiResult<Response> {
    let (from, to) = period(&q, &slot)?;
    if q.part.is_some() {
        return Err(ApiError::Invalid(
            "part is for CSV: the GeoJSON holds every part".into(),
        ));
    }
    let r = record(&s, id, from, to, None).await?;
    let reference: Option<String> =
        sqlx::query_scalar("SELECT reference FROM subjects WHERE id = $1")
            .bind(id)
            .fetch_optional(&s.pool)
            .await?;
    let mut features = Vec::with_capacity(r.orders.len() + r.fixes.len());
    for o in r.orders.iter().filter(|o| o.object == "zone") {
        let Some(row) = &o.row else { continue };
        features.push(serde_json::json!({
            "type": "Feature", "geometry": row["geometry"],
            "properties": {"kind": "zone", "zone_id": o.object_id, "version": o.version,
                "valid_from": o.valid_from, "valid_to": o.valid_to, "name": row["name"],
                "zone_kind": row["kind"], "radius_m": row["radius_m"], "buffer_m": row["buffer_m"]},
        }));
    }
    for f in &r.fixes {
        features.push(serde_json::json!({
            "type": "Feature", "geometry": {"type": "Point", "coordinates": [f.lon, f.lat]},
            "properties": {"kind": "fix", "time": f.fix_time, "received_at": f.received_at, "device_id": f.device_id,
                "accuracy_m": f.accuracy_m, "speed_m_s": f.speed_m_s, "battery_pct": f.battery_pct, "flags": f.flags,
                "suspect": f.suspect, "judged_at": f.judged_at, "message_id": f.message_id,
                "message_sha256": f.message_sha256},
        }));
    }
    let doc = serde_json::json!({
        "type": "FeatureCollection",
        "subject": {"id": id, "reference": reference},
        "period": {"from": q.from, "to": q.to},
        "generated_at": jiff::Timestamp::now(),
        "generated_by": scope.caller.username,
        "orders": r.orders,
        "transitions": r.transitions,
        "alert_changes": r.alerts,
        "features": features,
    });
    let body = serde_json::to_vec(&doc).map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let what = serde_json::json!({"format": "geojson", "from": q.from, "to": q.to,
        "fixes": r.fixes.len(), "transitions": r.transitions.len(), "alert_changes": r.alerts.len()});
    Ok(signed(
        body,
        "application/geo+json",
        format!("subject-{id}.geojson"),
        &slot,
        what,
    ))
}
