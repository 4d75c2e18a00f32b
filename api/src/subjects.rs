//! Subjects: the caseload overview (a green/amber/red status per subject),
//! one subject with its device and latest position, and track playback
//! as GeoJSON. Every query is scoped ([`crate::scope`]); reading one
//! subject or a track is audited as a read of that subject's location.

use crate::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::params::{self, Params};
use crate::scope::{Need, SUBJECT_VISIBLE, Scope, ScopedSubject};
use crate::time::Time;
use axum::Json;
use axum::extract::State;

/// The filters of `GET /v1/subjects`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubjectQuery {
    /// One officer's caseload.
    officer_id: Option<i64>,
    /// `green`, `amber` or `red`.
    status: Option<String>,
    /// Subjects with an id above this (the `next` of the previous page).
    after_id: Option<i64>,
    /// At most this many (1–1000, default 200).
    limit: Option<i64>,
}

/// A subject in the caseload overview.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct SubjectSummary {
    id: i64,
    reference: String,
    officer_id: Option<i64>,
    officer_name: Option<String>,
    /// The bracelet assigned now.
    device_id: Option<String>,
    /// Its expected reporting interval, in seconds.
    report_interval_s: Option<i32>,
    /// Its last message of any kind.
    last_seen_at: Option<Time>,
    /// Unresolved alerts, and of those critical or serious.
    open_alerts: i64,
    open_serious_alerts: i64,
    /// `red`: an unresolved critical or serious alert; `amber`: another
    /// unresolved alert, no bracelet, or silent for more than two reporting
    /// intervals; `green`: none of these.
    status: String,
}

/// A page of the overview, by subject id.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SubjectPage {
    subjects: Vec<SubjectSummary>,
    /// Pass as `after_id` for the next page (absent on the last).
    next: Option<i64>,
}

/// The current assignment of each subject, its device's state and its open
/// alerts; the status rule is documented on [`SubjectSummary::status`].
const OVERVIEW: &str = "WITH o AS ( \
    SELECT s.id, s.reference, s.officer_id, off.name AS officer_name, cur.device_id, \
           d.report_interval_s, ds.last_seen_at, \
           (SELECT count(*) FROM alerts a WHERE a.subject_id = s.id AND a.state <> 'resolved') AS open_alerts, \
           (SELECT count(*) FROM alerts a WHERE a.subject_id = s.id AND a.state <> 'resolved' \
               AND a.severity IN ('critical', 'serious')) AS open_serious_alerts \
    FROM subjects s \
    LEFT JOIN officers off ON off.id = s.officer_id \
    LEFT JOIN LATERAL (SELECT device_id FROM assignments x WHERE x.subject_id = s.id \
        AND x.valid_from <= now() AND (x.valid_to IS NULL OR x.valid_to > now()) \
        ORDER BY x.valid_from DESC LIMIT 1) cur ON true \
    LEFT JOIN devices d ON d.id = cur.device_id \
    LEFT JOIN device_state ds ON ds.device_id = cur.device_id \
    WHERE SCOPE) \
  SELECT *, CASE WHEN open_serious_alerts > 0 THEN 'red' \
    WHEN open_alerts > 0 OR device_id IS NULL \
      OR last_seen_at IS NULL OR last_seen_at < now() - 2 * report_interval_s * interval '1 second' THEN 'amber' \
    ELSE 'green' END AS status FROM o";

/// `GET /v1/subjects`: the caller's caseload with a status per subject.
#[utoipa::path(get, path = "/v1/subjects", tag = "subjects", params(SubjectQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SubjectPage), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(s): State<ApiState>,
    scope: Scope,
    Params(q): Params<SubjectQuery>,
) -> ApiResult<Json<SubjectPage>> {
    scope.require(Need::ReadCaseload)?;
    let limit = params::limit(q.limit, 200, 1000)?;
    if let Some(st) = q.status.as_deref()
        && !["green", "amber", "red"].contains(&st)
    {
        return Err(ApiError::Invalid(format!(
            "status {st:?} is unknown (green, amber, red)"
        )));
    }
    let sql = format!(
        "SELECT * FROM ({}) v WHERE ($2::int8 IS NULL OR officer_id = $2) \
           AND ($3::text IS NULL OR status = $3) AND ($4::int8 IS NULL OR id > $4) \
         ORDER BY id LIMIT $5",
        OVERVIEW.replace("SCOPE", SUBJECT_VISIBLE)
    );
    let rows: Vec<SubjectSummary> = sqlx::query_as(&sql)
        .bind(scope.officers())
        .bind(q.officer_id)
        .bind(q.status)
        .bind(q.after_id)
        .bind(limit + 1)
        .fetch_all(&s.pool)
        .await?;
    let (subjects, next) = params::page(rows, limit, |r| r.id);
    Ok(Json(SubjectPage { subjects, next }))
}

/// A position.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct Position {
    device_id: String,
    time: Time,
    lat: f64,
    lon: f64,
    accuracy_m: f32,
    speed_m_s: Option<f32>,
    battery_pct: Option<i16>,
    /// From the cellular or Wi-Fi network, not GNSS.
    network_location: bool,
    /// Stored but not judged (an implausible jump).
    suspect: bool,
    /// The device's clock disagreed with its arrival; judged at `judged_at`.
    judged_at: Option<Time>,
}

/// One subject: the overview's line, its latest position and its device's
/// store-and-forward backlog.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SubjectDetail {
    subject: SubjectSummary,
    latest_position: Option<Position>,
    /// Messages the bracelet last said it holds, not yet sent.
    pending_messages: Option<i32>,
}

const POSITION: &str = "SELECT device_id, fix_time AS time, lat, lon, accuracy_m, speed_m_s, battery_pct, \
    (flags & 4) <> 0 AS network_location, suspect, judged_at FROM fixes";

/// `GET /v1/subjects/{id}`: one subject with its latest position (audited
/// as a location read).
#[utoipa::path(get, path = "/v1/subjects/{id}", tag = "subjects", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The subject's id")),
    responses((status = 200, body = SubjectDetail), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn one(
    State(s): State<ApiState>,
    ScopedSubject(id): ScopedSubject,
) -> ApiResult<Json<SubjectDetail>> {
    let sql = format!(
        "{} WHERE id = $2",
        OVERVIEW.replace("SCOPE", "($1::int8[] IS NULL) AND s.id = $2")
    );
    let subject: SubjectSummary = sqlx::query_as(&sql)
        .bind(None::<Vec<i64>>)
        .bind(id)
        .fetch_one(&s.pool)
        .await?;
    let (latest_position, pending_messages) = match &subject.device_id {
        Some(d) => (
            // The bracelet's newest fix since it was assigned to this
            // subject: never the previous wearer's.
            sqlx::query_as(&format!(
                "{POSITION} WHERE device_id = $1 AND fix_time >= (SELECT max(valid_from) FROM assignments \
                   WHERE device_id = $1 AND subject_id = $2 AND valid_from <= now()) \
                 ORDER BY fix_time DESC LIMIT 1"
            ))
            .bind(d)
            .bind(id)
            .fetch_optional(&s.pool)
            .await?,
            sqlx::query_scalar("SELECT pending FROM device_state WHERE device_id = $1")
                .bind(d)
                .fetch_optional(&s.pool)
                .await?
                .flatten(),
        ),
        None => (None, None),
    };
    Ok(Json(SubjectDetail {
        subject,
        latest_position,
        pending_messages,
    }))
}

/// The range of `GET /v1/subjects/{id}/track`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TrackQuery {
    /// From (RFC 3339), inclusive.
    from: String,
    /// To (RFC 3339), exclusive.
    to: String,
    /// With `from`, the page starts at this bracelet's fix at `from` (the
    /// answer's `next_device`: two bracelets can share an instant).
    from_device: Option<String>,
    /// At most this many points per page (1–20000, default 5000); the
    /// answer's `next_from` and `next_device` continue the range.
    limit: Option<i64>,
}

/// `GET /v1/subjects/{id}/track`: the fixes of every bracelet assigned to
/// the subject during [from, to), as a GeoJSON FeatureCollection: a
/// LineString of the page's points, then one Point per fix with its time,
/// accuracy and flags. A long range comes in pages (`next_from`). Audited
/// as a location read.
#[utoipa::path(get, path = "/v1/subjects/{id}/track", tag = "subjects", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The subject's id"), TrackQuery),
    responses((status = 200, description = "A GeoJSON FeatureCollection (RFC 7946)", body = Object),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn track(
    State(s): State<ApiState>,
    ScopedSubject(id): ScopedSubject,
    Params(q): Params<TrackQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = params::limit(q.limit, 5000, 20_000)?;
    let from = params::time("from", Some(&q.from))?;
    let to = params::time("to", Some(&q.to))?;
    if from >= to {
        return Err(ApiError::Invalid("from must be before to".into()));
    }
    let mut points: Vec<Position> = sqlx::query_as(
        "SELECT f.device_id, f.fix_time AS time, f.lat, f.lon, f.accuracy_m, f.speed_m_s, f.battery_pct, \
                (f.flags & 4) <> 0 AS network_location, f.suspect, f.judged_at \
         FROM fixes f JOIN assignments x ON x.device_id = f.device_id AND x.subject_id = $1 \
           AND f.fix_time >= x.valid_from AND (x.valid_to IS NULL OR f.fix_time < x.valid_to) \
         WHERE (f.fix_time, f.device_id) >= ($2, coalesce($5, '')) AND f.fix_time < $3 \
         ORDER BY f.fix_time, f.device_id LIMIT $4",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(limit + 1)
    .bind(&q.from_device)
    .fetch_all(&s.pool)
    .await?;
    // The first point left out starts the next page.
    let next = (points.len() as i64 > limit)
        .then(|| points.pop().map(|p| (p.time, p.device_id)))
        .flatten();
    Ok(Json(geojson_track(id, &points, next)))
}

/// The track as an RFC 7946 FeatureCollection. `next_from` and
/// `next_device` (foreign members) name the first point left out: ask
/// again from it.
fn geojson_track(
    subject: i64,
    points: &[Position],
    next: Option<(Time, String)>,
) -> serde_json::Value {
    let coords: Vec<[f64; 2]> = points.iter().map(|p| [p.lon, p.lat]).collect();
    let mut features = Vec::with_capacity(points.len() + 1);
    if coords.len() >= 2 {
        features.push(serde_json::json!({
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": coords},
            "properties": {"subject_id": subject, "kind": "track"},
        }));
    }
    for p in points {
        features.push(serde_json::json!({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [p.lon, p.lat]},
            "properties": {
                "kind": "fix",
                "time": p.time,
                "device_id": p.device_id,
                "accuracy_m": p.accuracy_m,
                "speed_m_s": p.speed_m_s,
                "battery_pct": p.battery_pct,
                "network_location": p.network_location,
                "suspect": p.suspect,
                "judged_at": p.judged_at,
            },
        }));
    }
    serde_json::json!({
        "type": "FeatureCollection",
        "features": features,
        "next_from": next.as_ref().map(|n| n.0),
        "next_device": next.map(|n| n.1),
    })
}
