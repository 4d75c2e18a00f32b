//! Agency configuration (admin): the global category zones (schools,
//! playgrounds: every subject whose orders name the category must stay out)
//! and the webhooks alert notifications are posted to.
//!
//! A category zone is written like an order's zone: checked by the
//! engine's own rules, versioned in `order_versions` with the author and
//! reason, and applied to the running engine through NOTIFY. A webhook
//! takes effect with the next alert change (the alert service reads the
//! active webhooks in each transaction); its secret is never shown again.

use crate::ApiState;
use crate::audit::AuditSlot;
use crate::error::{ApiError, ApiResult};
use crate::orders::{NewZone, attributed, checked};
use crate::params::{Body, Id, Params, Why, reason};
use crate::scope::{Need, Scope};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// A global zone of a restriction category.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct CategoryZone {
    id: i64,
    name: String,
    category: i32,
    /// An RFC 7946 geometry.
    #[schema(value_type = Object)]
    geometry: serde_json::Value,
    radius_m: Option<f64>,
    buffer_m: f64,
    #[schema(value_type = Option<Object>)]
    schedule: Option<serde_json::Value>,
}

/// `GET /v1/zones`' filter.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ZonesQuery {
    /// Only this category.
    category: Option<i32>,
}

/// `GET /v1/zones`: the global category zones (public places, no one's
/// personal data: every role but the auditor).
#[utoipa::path(get, path = "/v1/zones", tag = "agency", security(("bearer" = [])),
    params(ZonesQuery), responses((status = 200, body = Vec<CategoryZone>)))]
pub(crate) async fn zones(
    State(s): State<ApiState>,
    scope: Scope,
    Params(q): Params<ZonesQuery>,
) -> ApiResult<Json<Vec<CategoryZone>>> {
    if scope.require(Need::Administer).is_err() {
        scope.require(Need::ReadCaseload)?;
    }
    let rows = sqlx::query_as(
        "SELECT id, name, category, geometry, radius_m, buffer_m, schedule FROM zones \
         WHERE category IS NOT NULL AND ($1::int4 IS NULL OR category = $1) ORDER BY id LIMIT 100000",
    )
    .bind(q.category)
    .fetch_all(&s.pool)
    .await?;
    Ok(Json(rows))
}

/// `POST /v1/zones` and `PUT /v1/zones/{id}`' body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCategoryZone {
    /// What officers see ("School No. 12").
    name: String,
    /// The restriction category (as subjects' `category` orders name it).
    category: i32,
    /// An RFC 7946 Polygon, MultiPolygon, or Point with `radius_m`.
    #[schema(value_type = Object)]
    geometry: serde_json::Value,
    radius_m: Option<f64>,
    #[serde(default)]
    buffer_m: f64,
    /// When it applies (absent: always), as an order's schedule.
    #[schema(value_type = Option<Object>)]
    schedule: Option<serde_json::Value>,
    /// Why; kept with the version.
    reason: String,
}

impl NewCategoryZone {
    fn zone(&self) -> NewZone {
        NewZone {
            name: self.name.clone(),
            kind: "exclusion".into(),
            geometry: self.geometry.clone(),
            radius_m: self.radius_m,
            buffer_m: self.buffer_m,
            schedule: self.schedule.clone(),
        }
    }
}

/// Writes category zone `id` (a new one when `None`); `None` back if `id`
/// names no category zone.
async fn write(
    tx: &mut sqlx::PgConnection,
    id: Option<i64>,
    z: &NewCategoryZone,
) -> Result<Option<CategoryZone>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO zones (id, name, kind, category, geometry, radius_m, buffer_m, schedule) \
         VALUES (coalesce($1, nextval('order_ids')), $2, 'exclusion', $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO UPDATE SET name = $2, category = $3, geometry = $4, radius_m = $5, \
             buffer_m = $6, schedule = $7, updated_at = now() WHERE zones.category IS NOT NULL \
         RETURNING id, name, category, geometry, radius_m, buffer_m, schedule",
    )
    .bind(id)
    .bind(&z.name)
    .bind(z.category)
    .bind(&z.geometry)
    .bind(z.radius_m)
    .bind(z.buffer_m)
    .bind(&z.schedule)
    .fetch_optional(tx)
    .await
}

/// `POST /v1/zones`: a new category zone (admin).
#[utoipa::path(post, path = "/v1/zones", tag = "agency", security(("bearer" = [])),
    request_body = NewCategoryZone, responses((status = 201, body = CategoryZone)))]
pub(crate) async fn create_zone(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Body(b): Body<NewCategoryZone>,
) -> ApiResult<(StatusCode, Json<CategoryZone>)> {
    scope.require(Need::Administer)?;
    let why = reason(&b.reason, "with the version")?;
    checked(&s, &b.zone())?;
    let mut tx = attributed(&s, &scope, why).await?;
    let zone = write(&mut tx, None, &b).await?.ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    slot.reason(why);
    slot.detail(serde_json::json!({"zone_id": zone.id, "category": zone.category}));
    Ok((StatusCode::CREATED, Json(zone)))
}

/// `PUT /v1/zones/{id}`: replaces a category zone (admin); the previous
/// version stays in `order_versions`.
#[utoipa::path(put, path = "/v1/zones/{id}", tag = "agency", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The zone's id")), request_body = NewCategoryZone,
    responses((status = 200, body = CategoryZone)))]
pub(crate) async fn replace_zone(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Id(id): Id,
    Body(b): Body<NewCategoryZone>,
) -> ApiResult<Json<CategoryZone>> {
    scope.require(Need::Administer)?;
    let why = reason(&b.reason, "with the version")?;
    checked(&s, &b.zone())?;
    let mut tx = attributed(&s, &scope, why).await?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM zones WHERE id = $1 AND category IS NOT NULL)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Err(ApiError::NotFound);
    }
    let zone = write(&mut tx, Some(id), &b)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    slot.reason(why);
    slot.detail(serde_json::json!({"zone_id": id, "category": zone.category}));
    Ok(Json(zone))
}

/// `DELETE /v1/zones/{id}?reason=`: removes a category zone (admin); its
/// versions stay.
#[utoipa::path(delete, path = "/v1/zones/{id}", tag = "agency", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The zone's id"), Why),
    responses((status = 204)))]
pub(crate) async fn remove_zone(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Id(id): Id,
    Params(q): Params<Why>,
) -> ApiResult<StatusCode> {
    scope.require(Need::Administer)?;
    let why = reason(&q.reason, "with the version")?;
    let mut tx = attributed(&s, &scope, why).await?;
    let done = sqlx::query("DELETE FROM zones WHERE id = $1 AND category IS NOT NULL")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    slot.reason(why);
    slot.detail(serde_json::json!({"zone_id": id}));
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook, as listed (never its secret).
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct Webhook {
    id: i64,
    url: String,
    active: bool,
    max_attempts: i32,
}

/// `GET /v1/webhooks`: the webhooks (admin).
#[utoipa::path(get, path = "/v1/webhooks", tag = "agency", security(("bearer" = [])),
    responses((status = 200, body = Vec<Webhook>)))]
pub(crate) async fn webhooks(
    State(s): State<ApiState>,
    scope: Scope,
) -> ApiResult<Json<Vec<Webhook>>> {
    scope.require(Need::Administer)?;
    let rows = sqlx::query_as("SELECT id, url, active, max_attempts FROM webhooks ORDER BY id")
        .fetch_all(&s.pool)
        .await?;
    Ok(Json(rows))
}

/// `POST /v1/webhooks`' body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    /// Where alert changes are posted (`http://` or `https://`).
    url: String,
    /// The signing secret (32–256 bytes): preferably a Standard Webhooks
    /// `whsec_<base64 of 24+ random bytes>`, whose bytes key
    /// `webhook-signature`; any other secret keys it as is (and the legacy
    /// `X-Emtrack-Signature`).
    secret: String,
    /// Attempts before a delivery is `dead` (1–100, default 8).
    max_attempts: Option<i32>,
}

/// Checks a webhook's attempts.
fn attempts(max_attempts: i32) -> ApiResult<i32> {
    if !(1..=100).contains(&max_attempts) {
        return Err(ApiError::Unprocessable("max_attempts must be 1–100".into()));
    }
    Ok(max_attempts)
}

/// Checks a webhook's URL.
fn url(url: &str) -> ApiResult<()> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| ApiError::Unprocessable(format!("url: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || uri.host().is_none()
        || url.len() > 2000
    {
        return Err(ApiError::Unprocessable(
            "url must be an http:// or https:// URL with a host".into(),
        ));
    }
    // The URL is listed and audited: no credential may ride in it.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(ApiError::Unprocessable(
            "url must not carry credentials (user:password@); the secret signs each request".into(),
        ));
    }
    Ok(())
}

/// `POST /v1/webhooks`: adds a webhook (admin); every alert change from now
/// on is posted to it, signed with its secret.
#[utoipa::path(post, path = "/v1/webhooks", tag = "agency", security(("bearer" = [])),
    request_body = NewWebhook, responses((status = 201, body = Webhook)))]
pub(crate) async fn add_webhook(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Body(b): Body<NewWebhook>,
) -> ApiResult<(StatusCode, Json<Webhook>)> {
    scope.require(Need::Administer)?;
    let attempts = attempts(b.max_attempts.unwrap_or(8))?;
    url(&b.url)?;
    if !(32..=256).contains(&b.secret.len()) {
        return Err(ApiError::Unprocessable(
            "secret must be 32–256 bytes (random: the receiver checks signatures with it)".into(),
        ));
    }
    // A Standard Webhooks secret must be what it says: its key is the
    // bytes it encodes.
    if b.secret.starts_with("whsec_")
        && alert_service::whsec_key(&b.secret).is_none_or(|k| k.len() < 24)
    {
        return Err(ApiError::Unprocessable(
            "a whsec_ secret must be whsec_ and the base64 of 24 random bytes or more".into(),
        ));
    }
    // Sealed (bound to its id) when the service has a key: the database
    // never holds it in clear.
    let id: i64 = sqlx::query_scalar("SELECT nextval('webhook_ids')")
        .fetch_one(&s.pool)
        .await?;
    let (plain, sealed) = match &s.seal {
        Some(key) => (
            None,
            Some(key.seal(b.secret.as_bytes(), id.to_string().as_bytes())),
        ),
        None => (Some(&b.secret), None),
    };
    let hook: Webhook = sqlx::query_as(
        "INSERT INTO webhooks (id, url, secret, secret_sealed, max_attempts) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id, url, active, max_attempts",
    )
    .bind(id)
    .bind(&b.url)
    .bind(plain)
    .bind(sealed)
    .bind(attempts)
    .fetch_one(&s.pool)
    .await?;
    // The secret never reaches the audit log.
    slot.detail(serde_json::json!({"webhook_id": hook.id, "url": hook.url}));
    Ok((StatusCode::CREATED, Json(hook)))
}

/// `PATCH /v1/webhooks/{id}`' body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookChange {
    /// Inactive: its notifications wait (pending) until it is active again.
    active: Option<bool>,
    max_attempts: Option<i32>,
}

/// `PATCH /v1/webhooks/{id}`: pauses, resumes or tunes a webhook (admin).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "agency", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The webhook's id")), request_body = WebhookChange,
    responses((status = 200, body = Webhook)))]
pub(crate) async fn change_webhook(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Id(id): Id,
    Body(b): Body<WebhookChange>,
) -> ApiResult<Json<Webhook>> {
    scope.require(Need::Administer)?;
    if let Some(n) = b.max_attempts {
        attempts(n)?;
    }
    let hook: Webhook = sqlx::query_as(
        "UPDATE webhooks SET active = coalesce($2, active), max_attempts = coalesce($3, max_attempts) \
         WHERE id = $1 RETURNING id, url, active, max_attempts",
    )
    .bind(id)
    .bind(b.active)
    .bind(b.max_attempts)
    .fetch_optional(&s.pool)
    .await?
    .ok_or(ApiError::NotFound)?;
    slot.detail(
        serde_json::json!({"webhook_id": id, "active": b.active, "max_attempts": b.max_attempts}),
    );
    Ok(Json(hook))
}
