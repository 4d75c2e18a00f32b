//! "Who was near": the subjects with a fix within R metres of a point
//! during a period, each with its closest fix, its distance and time;
//! within the caller's scope, or over every subject (`all=true`: duty,
//! supervisor, admin) with a reason, which the audit log keeps.
//!
//! The search is `emtrack_fixes_near` (migration 0008): the circle's
//! bounding box becomes one range of grid cells per latitude row, each an
//! index range scan of `fixes_near` within the period's daily partitions;
//! the exact distance (the engine's sphere) is computed on what the box
//! holds. The benchmark (`benches/near.sh`) runs
//! the same function beside a PostGIS GiST index.

use crate::ApiState;
use crate::audit::AuditSlot;
use crate::error::{ApiError, ApiResult};
use crate::identity::Role;
use crate::params::{self, Params};
use crate::scope::{Need, SUBJECT_VISIBLE, Scope};
use crate::time::Time;
use axum::Json;
use axum::extract::State;

/// The largest radius searched, in metres.
pub(crate) const MAX_RADIUS_M: f64 = 5_000.0;
/// The longest period searched, in days.
pub(crate) const MAX_DAYS: i64 = 31;

/// The search.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct NearQuery {
    /// The point's latitude (WGS84 degrees).
    lat: f64,
    /// The point's longitude.
    lon: f64,
    /// The radius in metres (1–5000).
    radius_m: f64,
    /// From (RFC 3339), inclusive.
    from: String,
    /// To (RFC 3339), exclusive; at most 31 days after `from`.
    to: String,
    /// Search every subject, not only the caller's caseload (duty,
    /// supervisor, admin; needs `reason`).
    all: Option<bool>,
    /// Why (required with `all=true`; recorded in the audit log).
    reason: Option<String>,
}

/// A subject that was near, with its closest fix.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct Near {
    subject_id: i64,
    subject_reference: String,
    device_id: String,
    time: Time,
    lat: f64,
    lon: f64,
    accuracy_m: f32,
    /// From the point to the fix, in metres.
    distance_m: f64,
}

/// The answer, closest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct NearAnswer {
    subjects: Vec<Near>,
}

/// The search's SQL: the fixes near the point in the period
/// (`emtrack_fixes_near`, migration 0008), the subject each bracelet was
/// assigned to at the fix's time, the closest fix per subject. `$1` is the
/// scope's officers.
fn sql() -> String {
    format!(
        "SELECT DISTINCT ON (x.subject_id) x.subject_id, s.reference AS subject_reference, c.device_id, \
                c.fix_time AS time, c.lat, c.lon, c.accuracy_m, c.distance_m \
         FROM emtrack_fixes_near($2, $3, $4, $5, $6) c \
         JOIN assignments x ON x.device_id = c.device_id AND c.fix_time >= x.valid_from \
              AND (x.valid_to IS NULL OR c.fix_time < x.valid_to) \
         JOIN subjects s ON s.id = x.subject_id \
         WHERE {SUBJECT_VISIBLE} \
         ORDER BY x.subject_id, c.distance_m, c.fix_time"
    )
}

/// `GET /v1/near`: who was within `radius_m` of (`lat`, `lon`) during
/// [`from`, `to`), closest first.
#[utoipa::path(get, path = "/v1/near", tag = "subjects", security(("bearer" = [])),
    params(NearQuery), responses((status = 200, body = NearAnswer)))]
pub(crate) async fn near(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Params(q): Params<NearQuery>,
) -> ApiResult<Json<NearAnswer>> {
    let all = q.all.unwrap_or(false);
    let officers = if all {
        if !matches!(
            scope.caller.role,
            Role::Duty | Role::Supervisor | Role::Admin
        ) {
            return Err(ApiError::Forbidden);
        }
        let reason = q.reason.as_deref().map(str::trim).unwrap_or("");
        if reason.is_empty() || reason.len() > 1000 {
            return Err(ApiError::Invalid(
                "a search of every subject needs a reason (1–1000 bytes): it is audited".into(),
            ));
        }
        slot.reason(reason);
        None
    } else {
        scope.require(Need::ReadCaseload)?;
        scope.officers()
    };
    // NaN and infinities are outside both ranges.
    if !((-90.0..=90.0).contains(&q.lat) && (-180.0..=180.0).contains(&q.lon)) {
        return Err(ApiError::Invalid(format!(
            "({}, {}) is not a WGS84 latitude and longitude",
            q.lat, q.lon
        )));
    }
    if !(q.radius_m >= 1.0 && q.radius_m <= MAX_RADIUS_M) {
        return Err(ApiError::Invalid(format!(
            "radius_m must be 1 to {MAX_RADIUS_M}, not {}",
            q.radius_m
        )));
    }
    let from = params::time("from", Some(&q.from))?.unwrap_or(store::Millis(0));
    let to = params::time("to", Some(&q.to))?.unwrap_or(store::Millis(0));
    if from >= to || to.0 - from.0 > MAX_DAYS * 86_400_000 {
        return Err(ApiError::Invalid(format!(
            "the period must be from before to, at most {MAX_DAYS} days"
        )));
    }
    slot.detail(
        serde_json::json!({"lat": q.lat, "lon": q.lon, "radius_m": q.radius_m,
        "from": q.from, "to": q.to, "all": all}),
    );
    let mut subjects: Vec<Near> = sqlx::query_as(&sql())
        .bind(officers)
        .bind(q.lat)
        .bind(q.lon)
        .bind(q.radius_m)
        .bind(from)
        .bind(to)
        .fetch_all(&s.pool)
        .await?;
    subjects.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
    // Whose locations this answer disclosed, for the audit log.
    slot.detail(
        serde_json::json!({"lat": q.lat, "lon": q.lon, "radius_m": q.radius_m,
        "from": q.from, "to": q.to, "all": all,
        "subjects": subjects.iter().map(|n| n.subject_id).collect::<Vec<_>>()}),
    );
    Ok(Json(NearAnswer { subjects }))
}
