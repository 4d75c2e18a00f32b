//! Enrolment: subjects, their devices and their officers, and the agency's
//! device inventory.
//!
//! - An officer or supervisor enrols a subject into a caseload they hold,
//!   assigns a bracelet (a swap when one is already worn: the old
//!   assignment ends where the new one starts), sets its expected reporting
//!   interval, and removes it at the end of the order.
//! - A supervisor transfers a subject between the caseloads of their team.
//! - The administrator keeps the inventory: registers devices and retires
//!   them (a retired device's messages are refused from then on, and its
//!   assignment ends).
//!
//! Each change is one transaction; the reference tables' NOTIFY brings it
//! to the running engine and device registry without a restart, and the
//! audit row keeps who, why and what.

use crate::ApiState;
use crate::audit::AuditSlot;
use crate::error::{ApiError, ApiResult};
use crate::params::{Body, Params, Why};
use crate::scope::{Need, Scope, ScopedSubject};
use crate::time::Time;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

/// The reason of a change, kept in the audit log.
fn reason(r: &str) -> ApiResult<&str> {
    crate::params::reason(r, "in the audit log")
}

/// A reporting interval: 1 s to a day.
fn interval(s: Option<i32>) -> ApiResult<Option<i32>> {
    match s {
        Some(n) if !(1..=86_400).contains(&n) => Err(ApiError::Unprocessable(format!(
            "report_interval_s must be 1–86400 s, not {n}"
        ))),
        other => Ok(other),
    }
}

/// `POST /v1/subjects`' body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSubject {
    /// The agency's case reference (unique).
    reference: String,
    /// The supervising officer (default: the caller's own caseload); one
    /// whose caseload the caller holds.
    officer_id: Option<i64>,
    /// Why (the court order); kept in the audit log.
    reason: String,
}

/// A subject as enrolled.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct Enrolled {
    id: i64,
    reference: String,
    officer_id: Option<i64>,
    created_at: Time,
}

/// `POST /v1/subjects`: enrols a subject into a caseload the caller holds.
#[utoipa::path(post, path = "/v1/subjects", tag = "subjects", security(("bearer" = [])),
    request_body = NewSubject,
    responses((status = 201, body = Enrolled), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn enrol(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Body(b): Body<NewSubject>,
) -> ApiResult<(StatusCode, Json<Enrolled>)> {
    scope.require(Need::WriteOrders)?;
    let why = reason(&b.reason)?;
    let reference = b.reference.trim();
    if reference.is_empty() || reference.len() > 100 {
        return Err(ApiError::Unprocessable(
            "a subject's reference is 1–100 bytes".into(),
        ));
    }
    let officer = b
        .officer_id
        .or(scope.caller.officer)
        .ok_or_else(|| ApiError::Unprocessable("officer_id is required".into()))?;
    scope.holds(officer)?;
    let row: Option<Enrolled> = sqlx::query_as(
        "INSERT INTO subjects (id, reference, officer_id) VALUES (nextval('subject_ids'), $1, $2) \
         ON CONFLICT (reference) DO NOTHING RETURNING id, reference, officer_id, created_at",
    )
    .bind(reference)
    .bind(officer)
    .fetch_optional(&s.pool)
    .await?;
    let row = row.ok_or_else(|| {
        ApiError::Conflict(format!("a subject with reference {reference:?} exists"))
    })?;
    slot.subject(row.id);
    slot.reason(why);
    slot.detail(serde_json::json!({"enrolled": row.id, "officer_id": officer}));
    Ok((StatusCode::CREATED, Json(row)))
}

/// `POST /v1/subjects/{id}/transfer`'s body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Transfer {
    /// The officer who takes the subject over (of the caller's team).
    officer_id: i64,
    /// Why; kept in the audit log.
    reason: String,
}

/// `POST /v1/subjects/{id}/transfer`: moves a subject to another officer's
/// caseload within the supervisor's team. The subject's alerts, raised and
/// new, follow them: the new officer sees and receives them, the previous
/// one no longer does (what was sent before stays in the deliveries).
#[utoipa::path(post, path = "/v1/subjects/{id}/transfer", tag = "subjects",
    security(("bearer" = [])), request_body = Transfer,
    params(("id" = i64, Path, description = "The subject's id")),
    responses((status = 200, body = Enrolled)))]
pub(crate) async fn transfer(
    State(s): State<ApiState>,
    scope: Scope,
    ScopedSubject(id): ScopedSubject,
    slot: AuditSlot,
    Body(b): Body<Transfer>,
) -> ApiResult<Json<Enrolled>> {
    scope.require(Need::Transfer)?;
    let why = reason(&b.reason)?;
    scope.holds(b.officer_id)?;
    let (from, row): (Option<i64>, Enrolled) = {
        let mut tx = s.pool.begin().await?;
        let from: Option<i64> =
            sqlx::query_scalar("SELECT officer_id FROM subjects WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        let row = sqlx::query_as(
            "UPDATE subjects SET officer_id = $2 WHERE id = $1 \
             RETURNING id, reference, officer_id, created_at",
        )
        .bind(id)
        .bind(b.officer_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        (from, row)
    };
    slot.reason(why);
    slot.detail(serde_json::json!({"from_officer": from, "to_officer": b.officer_id}));
    Ok(Json(row))
}

/// `PUT /v1/subjects/{id}/device`'s body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fit {
    /// The bracelet to fit (registered, not retired, not worn by anyone
    /// else).
    device_id: String,
    /// The bracelet's expected reporting interval in seconds (silence
    /// alerts are judged by it); absent: unchanged.
    report_interval_s: Option<i32>,
    /// Why (fitted at induction, replaced after a fault); kept in the audit
    /// log.
    reason: String,
}

/// The subject's bracelet assignment after a change.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Fitted {
    subject_id: i64,
    device_id: String,
    /// The bracelet it replaced, if any (a swap).
    replaced: Option<String>,
    report_interval_s: i32,
}

/// `PUT /v1/subjects/{id}/device`: fits a bracelet to the subject, or swaps
/// the one worn for another; the old assignment ends where the new begins,
/// so every fix belongs to exactly one.
#[utoipa::path(put, path = "/v1/subjects/{id}/device", tag = "subjects",
    security(("bearer" = [])), request_body = Fit,
    params(("id" = i64, Path, description = "The subject's id")),
    responses((status = 200, body = Fitted), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn fit(
    State(s): State<ApiState>,
    scope: Scope,
    ScopedSubject(id): ScopedSubject,
    slot: AuditSlot,
    Body(b): Body<Fit>,
) -> ApiResult<Json<Fitted>> {
    scope.require(Need::WriteOrders)?;
    let why = reason(&b.reason)?;
    let every = interval(b.report_interval_s)?;
    let mut tx = s.pool.begin().await?;
    let (current_every, wearer) = lock_bracelet(&mut tx, id, &b.device_id).await?;
    let replaced = if wearer == Some(id) {
        None
    } else {
        let old: Option<String> = end_bracelet(&mut tx, id).await?;
        sqlx::query(
            "INSERT INTO assignments (device_id, subject_id, valid_from) VALUES ($1, $2, now())",
        )
        .bind(&b.device_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        old
    };
    if let Some(n) = every {
        sqlx::query("UPDATE devices SET report_interval_s = $2 WHERE id = $1")
            .bind(&b.device_id)
            .bind(n)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    slot.reason(why);
    slot.detail(serde_json::json!({
        "device_id": b.device_id, "replaced": replaced, "report_interval_s": every,
    }));
    Ok(Json(Fitted {
        subject_id: id,
        device_id: b.device_id,
        replaced,
        report_interval_s: every.unwrap_or(current_every),
    }))
}

/// Locks the subject and the bracelet (in that order; `remove` locks the
/// subject too), so that concurrent changes to either wait; then, in a
/// statement of its own (a snapshot taken after the locks), reads who wears
/// the bracelet now. Returns its reporting interval and wearer (none, or
/// `subject` itself); a bracelet not in the inventory (or no bracelet) is
/// 422, a retired one or one worn by another subject 409.
async fn lock_bracelet(
    tx: &mut sqlx::PgConnection,
    subject: i64,
    device: &str,
) -> ApiResult<(i32, Option<i64>)> {
    sqlx::query("SELECT 1 FROM subjects WHERE id = $1 FOR UPDATE")
        .bind(subject)
        .execute(&mut *tx)
        .await?;
    let row: Option<(bool, i32)> = sqlx::query_as(
        "SELECT retired_at IS NOT NULL, report_interval_s FROM devices \
         WHERE id = $1 AND kind = 'bracelet' FOR UPDATE",
    )
    .bind(device)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((retired, every)) = row else {
        return Err(ApiError::Unprocessable(format!(
            "no bracelet {device:?} in the inventory"
        )));
    };
    if retired {
        return Err(ApiError::Conflict(format!(
            "bracelet {device:?} is retired"
        )));
    }
    let wearer: Option<i64> = sqlx::query_scalar(
        "SELECT subject_id FROM assignments WHERE device_id = $1 \
         AND valid_from <= now() AND (valid_to IS NULL OR valid_to > now()) LIMIT 1",
    )
    .bind(device)
    .fetch_optional(&mut *tx)
    .await?;
    if wearer.is_some_and(|w| w != subject) {
        return Err(ApiError::Conflict(format!(
            "bracelet {device:?} is assigned to another subject"
        )));
    }
    Ok((every, wearer))
}

/// Ends the subject's current bracelet assignment, if any; returns the
/// bracelet.
async fn end_bracelet(
    tx: &mut sqlx::PgConnection,
    subject: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE assignments a SET valid_to = now() FROM devices d \
         WHERE d.id = a.device_id AND d.kind = 'bracelet' AND a.subject_id = $1 \
           AND a.valid_from < now() AND (a.valid_to IS NULL OR a.valid_to > now()) \
         RETURNING a.device_id",
    )
    .bind(subject)
    .fetch_optional(tx)
    .await
}

/// `DELETE /v1/subjects/{id}/device?reason=`: removes the subject's bracelet
/// (the end of the order); its fixes from then on are refused as
/// unassigned.
#[utoipa::path(delete, path = "/v1/subjects/{id}/device", tag = "subjects",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The subject's id"), Why),
    responses((status = 204), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn remove(
    State(s): State<ApiState>,
    scope: Scope,
    ScopedSubject(id): ScopedSubject,
    slot: AuditSlot,
    Params(q): Params<Why>,
) -> ApiResult<StatusCode> {
    scope.require(Need::WriteOrders)?;
    let why = reason(&q.reason)?;
    let mut tx = s.pool.begin().await?;
    sqlx::query("SELECT 1 FROM subjects WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let Some(device) = end_bracelet(&mut tx, id).await? else {
        return Err(ApiError::Conflict("the subject wears no bracelet".into()));
    };
    tx.commit().await?;
    slot.reason(why);
    slot.detail(serde_json::json!({"device_id": device}));
    Ok(StatusCode::NO_CONTENT)
}

/// A device in the inventory.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct Device {
    id: String,
    /// `bracelet` or `victim_phone`.
    kind: String,
    /// `binary`, `json` or `owntracks`.
    format: String,
    report_interval_s: i32,
    retired_at: Option<Time>,
    /// Whether someone wears or carries it now (who is caseload data, not
    /// the inventory's).
    assigned: bool,
}

const DEVICE: &str = "SELECT d.id, d.kind, d.format, d.report_interval_s, d.retired_at, \
        EXISTS (SELECT 1 FROM assignments a WHERE a.device_id = d.id AND a.valid_from <= now() \
                AND (a.valid_to IS NULL OR a.valid_to > now())) \
        OR EXISTS (SELECT 1 FROM victims v WHERE v.device_id = d.id) AS assigned \
     FROM devices d";

/// `GET /v1/devices`: the inventory (admin).
#[utoipa::path(get, path = "/v1/devices", tag = "devices", security(("bearer" = [])),
    responses((status = 200, body = Vec<Device>)))]
pub(crate) async fn devices(
    State(s): State<ApiState>,
    scope: Scope,
) -> ApiResult<Json<Vec<Device>>> {
    scope.require(Need::Administer)?;
    let rows = sqlx::query_as(&format!("{DEVICE} ORDER BY d.id LIMIT 100000"))
        .fetch_all(&s.pool)
        .await?;
    Ok(Json(rows))
}

/// `POST /v1/devices`' body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDevice {
    /// The device's id as it sends it (1–64 of `A-Z a-z 0-9 . _ -`, or
    /// `ot:{user}:{device}` for an OwnTracks phone).
    id: String,
    /// `bracelet` or `victim_phone`.
    kind: String,
    /// `binary`, `json` or `owntracks`.
    format: String,
    /// Expected reporting interval in seconds.
    report_interval_s: i32,
}

/// `POST /v1/devices`: registers a device (admin).
#[utoipa::path(post, path = "/v1/devices", tag = "devices", security(("bearer" = [])),
    request_body = NewDevice,
    responses((status = 201, body = Registered), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn register(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Body(b): Body<NewDevice>,
) -> ApiResult<(
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    Json<Registered>,
)> {
    scope.require(Need::Administer)?;
    if !matches!(b.kind.as_str(), "bracelet" | "victim_phone") {
        return Err(ApiError::Unprocessable(
            "kind is bracelet or victim_phone".into(),
        ));
    }
    if !matches!(b.format.as_str(), "binary" | "json" | "owntracks") {
        return Err(ApiError::Unprocessable(
            "format is binary, json or owntracks".into(),
        ));
    }
    interval(Some(b.report_interval_s))?;
    let mut tx = s.pool.begin().await?;
    let added = sqlx::query(
        "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&b.id)
    .bind(&b.kind)
    .bind(&b.format)
    .bind(b.report_interval_s)
    .execute(&mut *tx)
    .await;
    match added {
        Ok(r) if r.rows_affected() == 0 => {
            return Err(ApiError::Conflict(format!("device {:?} exists", b.id)));
        }
        Ok(_) => {}
        // The table's check of the id (kind and format were checked
        // above): the protocol's device id rule.
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("23514") => {
            return Err(ApiError::Unprocessable(format!(
                "device id {:?}: 1–64 of A-Z a-z 0-9 . _ - (or ot:user:device)",
                b.id
            )));
        }
        Err(e) => return Err(e.into()),
    }
    // The broker's credential before the commit: a refusal stores nothing.
    let credential = crate::credentials::issue(&s, &b.id).await?;
    if let Err(e) = tx.commit().await {
        if credential.is_some() {
            // Best effort: a credential for a device that was not stored.
            let _ = crate::credentials::revoke(&s, &b.id).await;
        }
        return Err(e.into());
    }
    slot.detail(serde_json::json!({"device_id": b.id, "kind": b.kind,
        "credential": if credential.is_some() { "issued" } else { "none" }}));
    let device = sqlx::query_as(&format!("{DEVICE} WHERE d.id = $1"))
        .bind(&b.id)
        .fetch_one(&s.pool)
        .await?;
    Ok((
        StatusCode::CREATED,
        crate::credentials::NO_STORE,
        Json(Registered { device, credential }),
    ))
}

/// A registered device, with its broker credential when the service
/// issues them (shown once).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Registered {
    #[serde(flatten)]
    device: Device,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<crate::credentials::DeviceCredential>,
}

/// `POST /v1/devices/{id}/retire?reason=`: retires a device (admin): its
/// messages are refused from now on and whoever wore it no longer does.
#[utoipa::path(post, path = "/v1/devices/{id}/retire", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "The device's id"), Why),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn retire(
    State(s): State<ApiState>,
    scope: Scope,
    slot: AuditSlot,
    Path(id): Path<String>,
    Params(q): Params<Why>,
) -> ApiResult<StatusCode> {
    scope.require(Need::Administer)?;
    let why = reason(&q.reason)?;
    let mut tx = s.pool.begin().await?;
    let done =
        sqlx::query("UPDATE devices SET retired_at = coalesce(retired_at, now()) WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound);
    }
    sqlx::query(
        "UPDATE assignments SET valid_to = now() WHERE device_id = $1 \
         AND valid_from < now() AND (valid_to IS NULL OR valid_to > now())",
    )
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    // Its broker credential goes before the commit: a refusal keeps it in
    // service rather than leave a retired device able to publish.
    crate::credentials::revoke(&s, &id).await?;
    tx.commit().await?;
    slot.reason(why);
    slot.detail(serde_json::json!({"device_id": id}));
    Ok(StatusCode::NO_CONTENT)
}
