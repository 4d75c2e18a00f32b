//! Orders (a subject's rules and their zones) as they stood at any time:
//! `order_versions` (migration 0006) keeps every version with its validity
//! interval, who changed it and why. These endpoints answer "which orders
//! applied at T" and list every change.

use crate::ApiState;
use crate::error::ApiResult;
use crate::params::{self, Params};
use crate::scope::ScopedSubject;
use crate::time::Time;
use axum::Json;
use axum::extract::State;
use store::Millis;

/// The time of `GET /v1/subjects/{id}/orders`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct OrdersQuery {
    /// The time (RFC 3339); absent: now.
    at: Option<String>,
}

/// One version of an order: the rule and, for zone rules and curfews, the
/// version of its zone in force at the same time.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct OrderVersion {
    rule_id: i64,
    rule_version: i32,
    /// When this version of the rule came into force, and when it ceased
    /// (absent: still in force). `-infinity` is not representable: a rule
    /// stored before versioning began shows `valid_from` absent.
    valid_from: Option<Time>,
    valid_to: Option<Time>,
    changed_by: String,
    reason: Option<String>,
    /// The rule's row (kind, zone_id, category, schedule, …); absent once
    /// the rule was deleted.
    #[schema(value_type = Option<Object>)]
    rule: Option<serde_json::Value>,
    zone_version: Option<i32>,
    /// The zone's row (name, kind, GeoJSON geometry, radius, buffer,
    /// schedule) in force at the same time.
    #[schema(value_type = Option<Object>)]
    zone: Option<serde_json::Value>,
}

/// The orders of a subject at a time.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct OrdersAt {
    subject_id: i64,
    at: Time,
    orders: Vec<OrderVersion>,
}

/// `-infinity` and `infinity` read as absent.
const FINITE: &str = "CASE WHEN isfinite(VALUE) THEN VALUE END";

fn finite(col: &str) -> String {
    FINITE.replace("VALUE", col)
}

/// `GET /v1/subjects/{id}/orders?at=T`: the subject's rules in force at T
/// (default now), each with the version of its zone in force at T.
#[utoipa::path(get, path = "/v1/subjects/{id}/orders", tag = "subjects", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The subject's id"), OrdersQuery),
    responses((status = 200, body = OrdersAt)))]
pub(crate) async fn at(
    State(s): State<ApiState>,
    ScopedSubject(id): ScopedSubject,
    Params(q): Params<OrdersQuery>,
) -> ApiResult<Json<OrdersAt>> {
    let at = params::time("at", q.at.as_deref())?.unwrap_or(Millis(store::now_ms()));
    let sql = format!(
        "SELECT v.object_id AS rule_id, v.version AS rule_version, {} AS valid_from, {} AS valid_to, \
                v.changed_by, v.reason, v.row AS rule, zv.version AS zone_version, zv.row AS zone \
         FROM order_versions v \
         LEFT JOIN order_versions zv ON zv.object = 'zone' AND zv.object_id = (v.row ->> 'zone_id')::bigint \
              AND zv.valid_from <= $2 AND (zv.valid_to IS NULL OR zv.valid_to > $2) AND zv.row IS NOT NULL \
         WHERE v.object = 'rule' AND (v.row ->> 'subject_id')::bigint = $1 AND v.row IS NOT NULL \
           AND v.valid_from <= $2 AND (v.valid_to IS NULL OR v.valid_to > $2) \
         ORDER BY v.object_id",
        finite("v.valid_from"),
        finite("v.valid_to")
    );
    let orders = sqlx::query_as(&sql)
        .bind(id)
        .bind(at)
        .fetch_all(&s.pool)
        .await?;
    Ok(Json(OrdersAt {
        subject_id: id,
        at: Time(jiff::Timestamp::from_millisecond(at.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)),
        orders,
    }))
}

/// One change to a subject's orders.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct OrderChange {
    /// `rule` or `zone`.
    pub(crate) object: String,
    pub(crate) object_id: i64,
    pub(crate) version: i32,
    pub(crate) valid_from: Option<Time>,
    pub(crate) valid_to: Option<Time>,
    pub(crate) changed_by: String,
    pub(crate) reason: Option<String>,
    /// The row from `valid_from` on (absent: deleted).
    #[schema(value_type = Option<Object>)]
    pub(crate) row: Option<serde_json::Value>,
}

/// The versions of the rules of subject `$1` and of the zones they name,
/// as `order_versions` rows (`-infinity` and `infinity` read as NULL);
/// `FILTER` is replaced by a further condition on them.
pub(crate) fn subject_versions(filter: &str) -> String {
    format!(
        "WITH rules AS (SELECT DISTINCT object_id FROM order_versions \
                        WHERE object = 'rule' AND (row ->> 'subject_id')::bigint = $1), \
              zones AS (SELECT DISTINCT (row ->> 'zone_id')::bigint AS id FROM order_versions \
                        WHERE object = 'rule' AND object_id IN (SELECT object_id FROM rules) \
                          AND row ->> 'zone_id' IS NOT NULL) \
         SELECT object, object_id, version, {} AS valid_from, {} AS valid_to, changed_by, reason, row \
         FROM order_versions \
         WHERE ((object = 'rule' AND object_id IN (SELECT object_id FROM rules)) \
            OR (object = 'zone' AND object_id IN (SELECT id FROM zones))) AND ({filter}) \
         ORDER BY valid_from, object, object_id, version LIMIT 10000",
        finite("valid_from"),
        finite("valid_to")
    )
}

/// `GET /v1/subjects/{id}/orders/history`: every version of the subject's
/// rules and of the zones they name, oldest first.
#[utoipa::path(get, path = "/v1/subjects/{id}/orders/history", tag = "subjects",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The subject's id")),
    responses((status = 200, body = Vec<OrderChange>)))]
pub(crate) async fn history(
    State(s): State<ApiState>,
    ScopedSubject(id): ScopedSubject,
) -> ApiResult<Json<Vec<OrderChange>>> {
    let sql = subject_versions("true");
    let rows = sqlx::query_as(&sql).bind(id).fetch_all(&s.pool).await?;
    Ok(Json(rows))
}
