//! Orders: a subject's rules and their zones. Written through the API
//! (create, replace, lift; checked by the engine's own rules through
//! [`OrderCheck`]), and read as they stood at any time: `order_versions`
//! (migration 0006) keeps every version with its validity interval, who
//! changed it and why. A change reaches the running engine through the
//! reference tables' NOTIFY, without a restart.

use crate::ApiState;
use crate::audit::AuditSlot;
use crate::error::{ApiError, ApiResult};
use crate::params::{self, Body, Params, Why};
use crate::scope::{Need, Scope, ScopedOrder, ScopedSubject};
use crate::time::Time;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
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
    // A rule version counts for the subject it names (a rule id can move to
    // another subject through an import); a deletion counts for the subject
    // of the version it ended. Zones count through those versions only.
    format!(
        "WITH mine AS (SELECT v.id, v.row FROM order_versions v \
                       WHERE v.object = 'rule' AND coalesce(v.row, \
                             (SELECT p.row FROM order_versions p WHERE p.object = 'rule' \
                                AND p.object_id = v.object_id AND p.version = v.version - 1)) \
                             ->> 'subject_id' = $1::text), \
              zones AS (SELECT DISTINCT (row ->> 'zone_id')::bigint AS id FROM mine \
                        WHERE row ->> 'zone_id' IS NOT NULL) \
         SELECT object, object_id, version, {} AS valid_from, {} AS valid_to, changed_by, reason, row \
         FROM order_versions \
         WHERE (id IN (SELECT id FROM mine) \
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

/// What the API asks before it writes an order: the engine's own rules,
/// provided by the glue (`reference::check`), so that a zone or schedule
/// the engine would refuse on load is refused on write, saying where.
pub trait OrderCheck: Send + Sync {
    /// Whether the engine takes this zone.
    fn zone(&self, zone: &NewZone) -> Result<(), String>;
    /// Whether the engine takes this schedule.
    fn schedule(&self, schedule: &serde_json::Value) -> Result<(), String>;
    /// Whether the engine takes this tuning.
    fn tuning(&self, tuning: &serde_json::Value) -> Result<(), String>;
}

/// A zone as written.
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewZone {
    /// A name officers recognise ("victim's home", "Central Park school").
    pub name: String,
    /// `inclusion` (stay inside) or `exclusion` (stay out).
    pub kind: String,
    /// An RFC 7946 geometry: Polygon or MultiPolygon (exterior rings
    /// counterclockwise), or Point with `radius_m` (a circle).
    #[schema(value_type = Object)]
    pub geometry: serde_json::Value,
    /// A Point zone's radius, in metres.
    pub radius_m: Option<f64>,
    /// A margin around the shape, in metres (default 0).
    #[serde(default)]
    pub buffer_m: f64,
    /// When the zone imposes anything (absent: always): `{"tz", "windows",
    /// "exceptions"}`.
    #[schema(value_type = Option<Object>)]
    pub schedule: Option<serde_json::Value>,
}

/// `POST /v1/subjects/{id}/orders`' body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOrder {
    /// `zone` (the subject must stay in or out of the zone), `curfew`
    /// (inside the zone, an inclusion zone such as home, during the
    /// schedule) or `proximity` (keep `min_distance_m` from the protected
    /// person's phone, `other_device`).
    kind: String,
    /// The zone of a zone order or curfew.
    zone: Option<NewZone>,
    /// A category order's restriction category (the subject must stay out
    /// of every global zone of it: `GET /v1/zones`).
    category: Option<i32>,
    /// A proximity order's protected person's phone (a registered
    /// `victim_phone`).
    other_device: Option<String>,
    /// A proximity order's distance, in metres (1–50,000).
    min_distance_m: Option<f64>,
    /// A proximity order: how old either party's position may be for a
    /// judgement, in seconds (default 300).
    max_age_s: Option<i32>,
    /// A curfew's hours (required for a curfew; a proximity order's, if
    /// it applies only at times): `{"tz": "Asia/Almaty",
    /// "windows": [{"days": ["mon", …], "start": "21:00", "end": "06:00"}],
    /// "exceptions": [{"kind": "suspended", "start": "2026-12-24T18:00",
    /// "end": "2026-12-25T09:00"}]}`.
    #[schema(value_type = Option<Object>)]
    schedule: Option<serde_json::Value>,
    /// How much evidence opens and closes an episode, instead of the
    /// defaults of the order's kind: `{"enter_fixes", "enter_span_s",
    /// "exit_fixes", "grace_s", "strict"}` (all of them; `strict` counts a
    /// fix straddling the boundary as violating).
    #[schema(value_type = Option<Object>)]
    tuning: Option<serde_json::Value>,
    /// Why (the court order, the approved absence); kept with the version.
    reason: String,
}

/// `PUT /v1/orders/{id}`' body: what changes.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderUpdate {
    /// The zone, replaced whole.
    zone: Option<NewZone>,
    /// The curfew's schedule, replaced whole (an approved absence is an
    /// exception in it).
    #[schema(value_type = Option<Object>)]
    schedule: Option<serde_json::Value>,
    /// The tuning, replaced whole (as on create).
    #[schema(value_type = Option<Object>)]
    tuning: Option<serde_json::Value>,
    /// Why; kept with the version.
    reason: String,
}

/// A written order.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Written {
    rule_id: i64,
    /// The order's zone (0 for a proximity order).
    zone_id: i64,
}

/// The reason of a change to an order.
fn reason(r: &str) -> ApiResult<&str> {
    params::reason(r, "with the version")
}

pub(crate) fn checked(s: &ApiState, zone: &NewZone) -> ApiResult<()> {
    if zone.name.trim().is_empty() || zone.name.len() > 200 {
        return Err(crate::error::ApiError::Unprocessable(
            "a zone's name is 1–200 bytes".into(),
        ));
    }
    s.orders
        .zone(zone)
        .map_err(|e| crate::error::ApiError::Unprocessable(format!("zone: {e}")))
}

fn checked_tuning(s: &ApiState, tuning: &serde_json::Value) -> ApiResult<()> {
    s.orders
        .tuning(tuning)
        .map_err(crate::error::ApiError::Unprocessable)
}

fn checked_schedule(s: &ApiState, schedule: &serde_json::Value) -> ApiResult<()> {
    s.orders
        .schedule(schedule)
        .map_err(|e| crate::error::ApiError::Unprocessable(format!("schedule: {e}")))
}

/// A transaction whose order versions name the caller and the reason.
pub(crate) async fn attributed<'a>(
    s: &'a ApiState,
    scope: &Scope,
    why: &str,
) -> ApiResult<sqlx::Transaction<'a, sqlx::Postgres>> {
    let mut tx = s.pool.begin().await?;
    sqlx::query(
        "SELECT set_config('emtrack.actor', $1, true), set_config('emtrack.reason', $2, true)",
    )
    .bind(format!(
        "user:{} {}",
        scope.caller.user, scope.caller.username
    ))
    .bind(why)
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// Writes zone `id` (a new one when `None`); returns its id.
async fn write_zone(
    tx: &mut sqlx::PgConnection,
    id: Option<i64>,
    z: &NewZone,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO zones (id, name, kind, geometry, radius_m, buffer_m, schedule) \
         VALUES (coalesce($1, nextval('order_ids')), $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO UPDATE SET name = $2, kind = $3, geometry = $4, radius_m = $5, \
             buffer_m = $6, schedule = $7, updated_at = now() \
         RETURNING id",
    )
    .bind(id)
    .bind(&z.name)
    .bind(&z.kind)
    .bind(&z.geometry)
    .bind(z.radius_m)
    .bind(z.buffer_m)
    .bind(&z.schedule)
    .fetch_one(tx)
    .await
}

/// `POST /v1/subjects/{id}/orders`: a new zone order, curfew or proximity
/// order for the subject, checked by the engine's rules; it reaches the
/// running engine at once.
#[utoipa::path(post, path = "/v1/subjects/{id}/orders", tag = "subjects", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The subject's id")), request_body = NewOrder,
    responses((status = 201, body = Written), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn create(
    State(s): State<ApiState>,
    scope: Scope,
    ScopedSubject(id): ScopedSubject,
    slot: AuditSlot,
    Body(b): Body<NewOrder>,
) -> ApiResult<(StatusCode, Json<Written>)> {
    scope.require(Need::WriteOrders)?;
    let why = reason(&b.reason)?;
    if let Some(t) = &b.tuning {
        checked_tuning(&s, t)?;
    }
    let written = match b.kind.as_str() {
        "zone" | "curfew" => zone_order(&s, &scope, id, &b, why).await?,
        "proximity" => proximity_order(&s, &scope, id, &b, why).await?,
        "category" => category_order(&s, &scope, id, &b, why).await?,
        k => {
            return Err(ApiError::Unprocessable(format!(
                "order kind {k:?} is unknown (zone, curfew, proximity, category)"
            )));
        }
    };
    slot.reason(why);
    slot.detail(
        serde_json::json!({"rule_id": written.rule_id, "zone_id": written.zone_id, "kind": b.kind}),
    );
    Ok((StatusCode::CREATED, Json(written)))
}

/// What a new rule names, by kind (the rest stays NULL).
#[derive(Default)]
struct Target<'a> {
    zone_id: Option<i64>,
    category: Option<i32>,
    other_device: Option<&'a str>,
    min_distance_m: Option<f64>,
    max_age_s: Option<i32>,
}

/// Inserts a rule of `kind` for `subject`, with the order's schedule and
/// tuning; returns its id.
async fn insert_rule(
    tx: &mut sqlx::PgConnection,
    subject: i64,
    kind: &str,
    t: Target<'_>,
    b: &NewOrder,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO rules (id, subject_id, kind, zone_id, category, other_device, min_distance_m, \
                            max_age_s, schedule, tuning) \
         VALUES (nextval('order_ids'), $1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(subject)
    .bind(kind)
    .bind(t.zone_id)
    .bind(t.category)
    .bind(t.other_device)
    .bind(t.min_distance_m)
    .bind(t.max_age_s)
    .bind(&b.schedule)
    .bind(&b.tuning)
    .fetch_one(tx)
    .await
}

/// A zone order or a curfew: its zone and the rule, in one transaction.
async fn zone_order(
    s: &ApiState,
    scope: &Scope,
    subject: i64,
    b: &NewOrder,
    why: &str,
) -> ApiResult<Written> {
    let Some(zone) = &b.zone else {
        return Err(ApiError::Unprocessable(format!(
            "a {} order needs a zone",
            b.kind
        )));
    };
    if b.other_device.is_some() || b.min_distance_m.is_some() || b.max_age_s.is_some() {
        return Err(ApiError::Unprocessable(
            "other_device, min_distance_m and max_age_s are for proximity orders".into(),
        ));
    }
    if b.category.is_some() {
        return Err(ApiError::Unprocessable(
            "category is for category orders".into(),
        ));
    }
    match (b.kind.as_str(), &b.schedule) {
        ("curfew", Some(sch)) => {
            if zone.kind != "inclusion" {
                return Err(ApiError::Unprocessable(
                    "a curfew's zone is an inclusion zone (home)".into(),
                ));
            }
            checked_schedule(s, sch)?;
        }
        ("curfew", None) => {
            return Err(ApiError::Unprocessable("a curfew needs a schedule".into()));
        }
        (_, Some(_)) => {
            return Err(ApiError::Unprocessable(
                "a zone order's hours go in zone.schedule; schedule is for curfews".into(),
            ));
        }
        _ => {}
    }
    checked(s, zone)?;
    let mut tx = attributed(s, scope, why).await?;
    let zone_id = write_zone(&mut tx, None, zone).await?;
    let target = Target {
        zone_id: Some(zone_id),
        ..Target::default()
    };
    let rule_id = insert_rule(&mut tx, subject, &b.kind, target, b).await?;
    tx.commit().await?;
    Ok(Written { rule_id, zone_id })
}

/// A category order: the subject stays out of every global zone of the
/// category (schools, playgrounds), as the agency draws them.
async fn category_order(
    s: &ApiState,
    scope: &Scope,
    subject: i64,
    b: &NewOrder,
    why: &str,
) -> ApiResult<Written> {
    let Some(category) = b.category else {
        return Err(ApiError::Unprocessable(
            "a category order needs category".into(),
        ));
    };
    if b.zone.is_some()
        || b.other_device.is_some()
        || b.min_distance_m.is_some()
        || b.max_age_s.is_some()
    {
        return Err(ApiError::Unprocessable(
            "a category order names only its category (and a schedule, if any)".into(),
        ));
    }
    if let Some(sch) = &b.schedule {
        checked_schedule(s, sch)?;
    }
    let mut tx = attributed(s, scope, why).await?;
    let target = Target {
        category: Some(category),
        ..Target::default()
    };
    let rule_id = insert_rule(&mut tx, subject, "category", target, b).await?;
    tx.commit().await?;
    Ok(Written {
        rule_id,
        zone_id: 0,
    })
}

/// A proximity order: the protected person's phone becomes watched (a
/// `victims` row) and the rule keeps the subject `min_distance_m` away.
async fn proximity_order(
    s: &ApiState,
    scope: &Scope,
    subject: i64,
    b: &NewOrder,
    why: &str,
) -> ApiResult<Written> {
    let (Some(phone), Some(distance)) = (&b.other_device, b.min_distance_m) else {
        return Err(ApiError::Unprocessable(
            "a proximity order needs other_device and min_distance_m".into(),
        ));
    };
    if b.zone.is_some() || b.category.is_some() {
        return Err(ApiError::Unprocessable(
            "a proximity order has no zone or category (the protected person's home is a zone order)"
                .into(),
        ));
    }
    if !distance.is_finite() || !(1.0..=50_000.0).contains(&distance) {
        return Err(ApiError::Unprocessable(
            "min_distance_m must be 1–50000".into(),
        ));
    }
    let max_age = b.max_age_s.unwrap_or(300);
    if !(1..=86_400).contains(&max_age) {
        return Err(ApiError::Unprocessable("max_age_s must be 1–86400".into()));
    }
    if let Some(sch) = &b.schedule {
        checked_schedule(s, sch)?;
    }
    let mut tx = attributed(s, scope, why).await?;
    let usable: Option<bool> = sqlx::query_scalar(
        "SELECT retired_at IS NULL FROM devices WHERE id = $1 AND kind = 'victim_phone' FOR UPDATE",
    )
    .bind(phone)
    .fetch_optional(&mut *tx)
    .await?;
    match usable {
        None => {
            return Err(ApiError::Unprocessable(format!(
                "no victim's phone {phone:?} in the inventory"
            )));
        }
        Some(false) => {
            return Err(ApiError::Conflict(format!("phone {phone:?} is retired")));
        }
        Some(true) => {}
    }
    sqlx::query(
        "INSERT INTO victims (id, device_id, protected_from) \
         SELECT nextval('order_ids'), $1, $2 WHERE NOT EXISTS \
           (SELECT 1 FROM victims WHERE device_id = $1 AND protected_from = $2)",
    )
    .bind(phone)
    .bind(subject)
    .execute(&mut *tx)
    .await?;
    let target = Target {
        other_device: Some(phone),
        min_distance_m: Some(distance),
        max_age_s: Some(max_age),
        ..Target::default()
    };
    let rule_id = insert_rule(&mut tx, subject, "proximity", target, b).await?;
    tx.commit().await?;
    Ok(Written {
        rule_id,
        zone_id: 0,
    })
}

/// The rule's zone, if only this subject's rules use it (a zone shared with
/// other subjects, or a category zone, is not changed through one order).
async fn own_zone(s: &ApiState, order: &ScopedOrder) -> ApiResult<Option<i64>> {
    let row: Option<(Option<i64>, bool)> = sqlx::query_as(
        "SELECT r.zone_id, NOT EXISTS (SELECT 1 FROM rules o WHERE o.zone_id = r.zone_id AND o.subject_id <> r.subject_id) \
                AND NOT EXISTS (SELECT 1 FROM victims v WHERE v.home_zone_id = r.zone_id) \
                AND NOT EXISTS (SELECT 1 FROM zones z WHERE z.id = r.zone_id AND z.category IS NOT NULL) \
         FROM rules r WHERE r.id = $1",
    )
    .bind(order.id)
    .fetch_optional(&s.pool)
    .await?;
    match row {
        Some((Some(z), true)) => Ok(Some(z)),
        Some((Some(_), false)) => Err(ApiError::Conflict(
            "the zone is shared with other orders (another subject, a victim, a category): \
             change it there, or give this subject a zone of its own"
                .into(),
        )),
        _ => Ok(None),
    }
}

/// `PUT /v1/orders/{id}`: replaces the order's zone and/or schedule. The
/// previous version stays in `order_versions`.
#[utoipa::path(put, path = "/v1/orders/{id}", tag = "subjects", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The order's (rule's) id")), request_body = OrderUpdate,
    responses((status = 200, body = Written), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn update(
    State(s): State<ApiState>,
    scope: Scope,
    order: ScopedOrder,
    slot: AuditSlot,
    Body(b): Body<OrderUpdate>,
) -> ApiResult<Json<Written>> {
    scope.require(Need::WriteOrders)?;
    let why = reason(&b.reason)?;
    let (kind, schedule_now): (String, Option<serde_json::Value>) =
        sqlx::query_as("SELECT kind, schedule FROM rules WHERE id = $1")
            .bind(order.id)
            .fetch_one(&s.pool)
            .await?;
    if b.zone.is_none() && b.schedule.is_none() && b.tuning.is_none() {
        return Err(ApiError::Invalid(
            "nothing to change: give zone, schedule and/or tuning".into(),
        ));
    }
    if let Some(t) = &b.tuning {
        checked_tuning(&s, t)?;
    }
    if let Some(sch) = &b.schedule {
        if kind == "zone" && schedule_now.is_none() {
            return Err(ApiError::Unprocessable(
                "a zone order's hours go in zone.schedule".into(),
            ));
        }
        checked_schedule(&s, sch)?;
    }
    let zone_id = own_zone(&s, &order).await?;
    if b.zone.is_some() && zone_id.is_none() {
        return Err(ApiError::Unprocessable(format!(
            "a {kind} order has no zone to replace"
        )));
    }
    if let Some(z) = &b.zone {
        checked(&s, z)?;
        if kind == "curfew" && z.kind != "inclusion" {
            return Err(ApiError::Unprocessable(
                "a curfew's zone is an inclusion zone (home)".into(),
            ));
        }
    }
    let mut tx = attributed(&s, &scope, why).await?;
    if let (Some(z), Some(zid)) = (&b.zone, zone_id) {
        write_zone(&mut tx, Some(zid), z).await?;
    }
    if let Some(sch) = &b.schedule {
        sqlx::query("UPDATE rules SET schedule = $2 WHERE id = $1")
            .bind(order.id)
            .bind(sch)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(t) = &b.tuning {
        sqlx::query("UPDATE rules SET tuning = $2 WHERE id = $1")
            .bind(order.id)
            .bind(t)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    slot.reason(why);
    slot.detail(
        serde_json::json!({"rule_id": order.id, "zone": b.zone.is_some(),
        "schedule": b.schedule.is_some(), "tuning": b.tuning.is_some()}),
    );
    Ok(Json(Written {
        rule_id: order.id,
        zone_id: zone_id.unwrap_or(0),
    }))
}

/// `DELETE /v1/orders/{id}?reason=`: lifts the order (its zone too, when
/// no other order uses it). Its versions stay in `order_versions`.
#[utoipa::path(delete, path = "/v1/orders/{id}", tag = "subjects", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The order's (rule's) id"), Why),
    responses((status = 204)))]
pub(crate) async fn lift(
    State(s): State<ApiState>,
    scope: Scope,
    order: ScopedOrder,
    slot: AuditSlot,
    Params(q): Params<Why>,
) -> ApiResult<StatusCode> {
    scope.require(Need::WriteOrders)?;
    let why = reason(&q.reason)?;
    // A zone shared with other orders stays; only this order is lifted.
    let zone_id = match own_zone(&s, &order).await {
        Ok(z) => z,
        Err(ApiError::Conflict(_)) => None,
        Err(e) => return Err(e),
    };
    let mut tx = attributed(&s, &scope, why).await?;
    let phone: Option<String> =
        sqlx::query_scalar("DELETE FROM rules WHERE id = $1 RETURNING other_device")
            .bind(order.id)
            .fetch_one(&mut *tx)
            .await?;
    // A proximity order's phone stops being watched for this subject once
    // no order protects its carrier from them.
    if let Some(p) = phone {
        sqlx::query(
            "DELETE FROM victims v WHERE v.device_id = $1 AND v.protected_from = $2 \
             AND NOT EXISTS (SELECT 1 FROM rules r WHERE r.kind = 'proximity' \
                             AND r.other_device = $1 AND r.subject_id = $2)",
        )
        .bind(p)
        .bind(order.subject)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(z) = zone_id {
        sqlx::query("DELETE FROM zones WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM rules WHERE zone_id = $1)")
            .bind(z)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    slot.reason(why);
    slot.detail(serde_json::json!({"rule_id": order.id, "subject_id": order.subject}));
    Ok(StatusCode::NO_CONTENT)
}
