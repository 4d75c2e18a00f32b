//! The audit log: who did what, when, from where, and why.
//!
//! [`guard`] wraps every authenticated endpoint: it authenticates the
//! bearer token ([`crate::identity::authenticate`]), resolves the caller's
//! [`Scope`], runs the handler, and appends one `audit_log` row for the
//! request (the credential used, the route and the path as sent, the
//! answer's status, the subject whose data was read or changed, the stated
//! reason). If that row cannot be written, the answer is withheld: the
//! caller gets 503, never data that left no trace. Logins are recorded by
//! [`crate::accounts`] (a refused one too). The table refuses UPDATE and
//! DELETE (a trigger, migration 0005).
//!
//! A streamed answer (the alert stream) is recorded when it opens.

use crate::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::identity::{Caller, authenticate};
use crate::scope::{Need, Scope};
use crate::time::Time;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What a handler adds to its request's audit row.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuditSlot(Arc<Mutex<Extra>>);

#[derive(Debug, Default)]
struct Extra {
    subject: Option<i64>,
    reason: Option<String>,
    detail: Option<serde_json::Value>,
}

impl AuditSlot {
    /// The slot of the request whose parts these are (a fresh, unrecorded
    /// one outside the guard).
    pub(crate) fn of(parts: &Parts) -> AuditSlot {
        parts
            .extensions
            .get::<AuditSlot>()
            .cloned()
            .unwrap_or_default()
    }

    fn with(&self, f: impl FnOnce(&mut Extra)) {
        if let Ok(mut e) = self.0.lock() {
            f(&mut e);
        }
    }

    /// The request reads or changes this subject's data.
    pub(crate) fn subject(&self, id: i64) {
        self.with(|e| e.subject = Some(id));
    }

    /// The reason the caller gave.
    pub(crate) fn reason(&self, reason: &str) {
        self.with(|e| e.reason = Some(reason.to_owned()));
    }

    /// Anything else worth keeping (an export's digest, the change made).
    pub(crate) fn detail(&self, detail: serde_json::Value) {
        self.with(|e| e.detail = Some(detail));
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AuditSlot {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(AuditSlot::of(parts))
    }
}

/// One audit row.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub(crate) caller: Option<&'a Caller>,
    /// A username given at login (for a refused login by an unknown name).
    pub(crate) username: Option<&'a str>,
    pub(crate) action: &'a str,
    pub(crate) target: Option<&'a str>,
    pub(crate) status: u16,
    pub(crate) from: Option<SocketAddr>,
    pub(crate) subject: Option<i64>,
    pub(crate) reason: Option<&'a str>,
    pub(crate) detail: Option<&'a serde_json::Value>,
}

/// Text as PostgreSQL can hold it: `text` and `jsonb` refuse NUL, so a NUL
/// (from a hostile name or note) is recorded as U+FFFD rather than losing
/// the row.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

fn clean_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(clean(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(clean_json).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (clean(k).into_owned(), clean_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Appends `e` to the audit log.
pub(crate) async fn write(pool: &PgPool, e: Entry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (user_id, username, role, credential_id, action, target, status, \
                                subject_id, reason, from_addr, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(e.caller.map(|c| c.user))
    .bind(
        e.caller
            .map(|c| c.username.as_str())
            .or(e.username)
            .map(clean),
    )
    .bind(e.caller.map(|c| c.role.as_str()))
    .bind(e.caller.map(|c| c.credential))
    .bind(clean(e.action))
    .bind(e.target.map(clean))
    .bind(e.status as i16)
    .bind(e.subject)
    .bind(e.reason.map(clean))
    .bind(e.from.map(|a| a.ip().to_string()))
    .bind(e.detail.map(clean_json))
    .execute(pool)
    .await?;
    Ok(())
}

/// The bearer token of a request, if it has one.
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The middleware on every authenticated endpoint (see the module docs).
pub(crate) async fn guard(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let Some(token) = bearer(&req) else {
        s.metrics.refused("no_credential");
        return ApiError::Unauthenticated.into_response();
    };
    let caller = match authenticate(&s.pool, token).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            s.metrics.refused("bad_credential");
            return ApiError::Unauthenticated.into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let scope = match Scope::resolve(&s.pool, caller.clone()).await {
        Ok(scope) => scope,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let action = format!(
        "{} {}",
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map_or("?", |p| p.as_str())
    );
    let target = req.uri().to_string();
    let from = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let slot = AuditSlot::default();
    req.extensions_mut().insert(scope);
    req.extensions_mut().insert(slot.clone());
    let response = next.run(req).await;
    let extra = std::mem::take(&mut *slot.0.lock().unwrap_or_else(|p| p.into_inner()));
    let entry = Entry {
        caller: Some(&caller),
        username: None,
        action: &action,
        target: Some(&target),
        status: response.status().as_u16(),
        from,
        subject: extra.subject,
        reason: extra.reason.as_deref(),
        detail: extra.detail.as_ref(),
    };
    match write(&s.pool, entry).await {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, %action, "the audit log refused a row: answer withheld");
            ApiError::Unavailable("the audit log is unavailable; nothing was returned".into())
                .into_response()
        }
    }
}

/// The filters of `GET /v1/audit`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only this user's rows.
    user_id: Option<i64>,
    /// Only rows about this subject.
    subject_id: Option<i64>,
    /// Only this action (`login`, `GET /v1/subjects/{id}`, …).
    action: Option<String>,
    /// At or after (RFC 3339).
    from: Option<String>,
    /// Before (RFC 3339).
    to: Option<String>,
    /// Rows with an id below this (the `next` of the previous page).
    before_id: Option<i64>,
    /// At most this many rows (1–1000, default 100).
    limit: Option<i64>,
}

/// One audit row.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct AuditRow {
    id: i64,
    at: Time,
    user_id: Option<i64>,
    username: Option<String>,
    role: Option<String>,
    credential_id: Option<i64>,
    action: String,
    target: Option<String>,
    status: Option<i16>,
    subject_id: Option<i64>,
    reason: Option<String>,
    from_addr: Option<String>,
    #[schema(value_type = Option<Object>)]
    detail: Option<serde_json::Value>,
}

/// A page of the audit log, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    rows: Vec<AuditRow>,
    /// Pass as `before_id` for the next page (absent on the last).
    next: Option<i64>,
}

/// `GET /v1/audit`: the audit log, for auditors.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    security(("bearer" = [])),
    responses((status = 200, body = AuditPage), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(s): State<ApiState>,
    scope: Scope,
    crate::params::Params(q): crate::params::Params<AuditQuery>,
) -> ApiResult<axum::Json<AuditPage>> {
    scope.require(Need::ReadAudit)?;
    let limit = crate::params::limit(q.limit, 100, 1000)?;
    let from = crate::params::time("from", q.from.as_deref())?;
    let to = crate::params::time("to", q.to.as_deref())?;
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT id, at, user_id, username, role, credential_id, action, target, status, subject_id, \
                reason, from_addr, detail FROM audit_log \
         WHERE ($1::int8 IS NULL OR user_id = $1) AND ($2::int8 IS NULL OR subject_id = $2) \
           AND ($3::text IS NULL OR action = $3) AND ($4::timestamptz IS NULL OR at >= $4) \
           AND ($5::timestamptz IS NULL OR at < $5) AND ($6::int8 IS NULL OR id < $6) \
         ORDER BY id DESC LIMIT $7",
    )
    .bind(q.user_id)
    .bind(q.subject_id)
    .bind(q.action)
    .bind(from)
    .bind(to)
    .bind(q.before_id)
    .bind(limit + 1)
    .fetch_all(&s.pool)
    .await?;
    let (rows, next) = crate::params::page(rows, limit, |r| r.id);
    Ok(axum::Json(AuditPage { rows, next }))
}
