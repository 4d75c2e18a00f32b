//! Scope: what a caller may see and do, decided here and nowhere else.
//!
//! The guard ([`crate::audit::guard`]) resolves a [`Scope`] for every
//! authenticated request before any handler runs. Handlers then reach
//! caseload data only through it:
//! - a path naming a subject or an alert is taken by the [`ScopedSubject`]
//!   and [`ScopedAlert`] extractors, which answer 404 for anything outside
//!   the scope (the same answer as for a missing one), so the handler never
//!   sees such an id;
//! - a list query filters on [`SUBJECT_VISIBLE`] with the scope's officers
//!   bound as `$1` ([`Scope::officers`]);
//! - an endpoint a role may not use at all answers 403 ([`Scope::require`]).
//!
//! | role | subjects (read) | alerts (read, act) | orders, enrolment, devices of subjects (write) | transfer | users, device inventory | audit log |
//! |---|---|---|---|---|---|---|
//! | officer | own caseload | own caseload | own caseload | – | – | – |
//! | supervisor | own and supervised officers' caseloads | same | same | within the team | – | – |
//! | duty | every subject, read-only | every alert | – | – | – | – |
//! | admin | – | – | – | – | yes, and category zones, webhooks | – |
//! | auditor | – | – | – | – | – | yes |
//!
//! A write that names an officer (enrolling a subject, a transfer) may
//! name only one whose caseload the caller holds ([`Scope::holds`]).

use crate::ApiState;
use crate::audit::AuditSlot;
use crate::error::ApiError;
use crate::identity::{Caller, Role};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sqlx::PgPool;

/// The SQL condition that keeps a subject (aliased `s`, possibly from a
/// LEFT JOIN) within the scope whose officers are bound as `$1`
/// (`int8[]`; NULL: every subject).
pub(crate) const SUBJECT_VISIBLE: &str = "($1::int8[] IS NULL OR s.officer_id = ANY($1::int8[]))";

/// What a caller needs for an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Read subjects, their positions, tracks and alerts.
    ReadCaseload,
    /// Acknowledge or resolve alerts.
    ActOnAlerts,
    /// Change a subject's orders (zones, curfews), enrol a subject, assign,
    /// swap or remove its device.
    WriteOrders,
    /// Move a subject to another officer's caseload.
    Transfer,
    /// Manage users and their credentials.
    Administer,
    /// Read the audit log.
    ReadAudit,
}

/// The caller and what it may reach.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Who.
    pub caller: Caller,
    /// The officers whose caseloads are visible; `None`: every subject (the
    /// duty desk); empty: none.
    officers: Option<Vec<i64>>,
}

impl Scope {
    /// The scope of `caller`: an officer's own caseload; a supervisor's and
    /// those of the officers they supervise; everything for the duty desk;
    /// nothing for administrators and auditors.
    pub async fn resolve(pool: &PgPool, caller: Caller) -> Result<Scope, sqlx::Error> {
        let officers = match (caller.role, caller.officer) {
            (Role::Officer, Some(o)) => Some(vec![o]),
            (Role::Supervisor, Some(o)) => Some(
                sqlx::query_scalar(
                    "SELECT $1::int8 UNION SELECT id FROM officers WHERE supervisor_id = $1",
                )
                .bind(o)
                .fetch_all(pool)
                .await?,
            ),
            (Role::Duty, _) => None,
            _ => Some(Vec::new()),
        };
        Ok(Scope { caller, officers })
    }

    /// The officers to bind as `$1` under [`SUBJECT_VISIBLE`].
    pub(crate) fn officers(&self) -> Option<Vec<i64>> {
        self.officers.clone()
    }

    /// 403 unless the caller's role allows `need`.
    pub(crate) fn require(&self, need: Need) -> Result<(), ApiError> {
        let role = self.caller.role;
        let ok = match need {
            Need::ReadCaseload | Need::ActOnAlerts => {
                matches!(role, Role::Officer | Role::Supervisor | Role::Duty)
            }
            Need::WriteOrders => matches!(role, Role::Officer | Role::Supervisor),
            Need::Transfer => role == Role::Supervisor,
            Need::Administer => role == Role::Admin,
            Need::ReadAudit => role == Role::Auditor,
        };
        if ok { Ok(()) } else { Err(ApiError::Forbidden) }
    }

    /// Whether the caller holds officer `officer`'s caseload (an officer
    /// their own, a supervisor their team's); 422 otherwise, without saying
    /// whether such an officer exists.
    pub(crate) fn holds(&self, officer: i64) -> Result<(), ApiError> {
        match &self.officers {
            Some(o) if o.contains(&officer) => Ok(()),
            _ => Err(ApiError::Unprocessable(format!(
                "officer {officer} is not one whose caseload you hold"
            ))),
        }
    }

    /// Whether the subject exists and is within scope.
    async fn sees_subject(&self, pool: &PgPool, subject: i64) -> Result<bool, sqlx::Error> {
        let q = format!(
            "SELECT EXISTS (SELECT 1 FROM subjects s WHERE s.id = $2 AND {SUBJECT_VISIBLE})"
        );
        sqlx::query_scalar(&q)
            .bind(self.officers())
            .bind(subject)
            .fetch_one(pool)
            .await
    }

    /// The subject of the alert, if the alert exists and is within scope.
    async fn alert_subject(&self, pool: &PgPool, alert: i64) -> Result<Option<i64>, sqlx::Error> {
        let q = format!(
            "SELECT a.subject_id FROM alerts a LEFT JOIN subjects s ON s.id = a.subject_id \
             WHERE a.id = $2 AND {SUBJECT_VISIBLE}"
        );
        sqlx::query_scalar(&q)
            .bind(self.officers())
            .bind(alert)
            .fetch_optional(pool)
            .await
    }
}

impl FromRequestParts<ApiState> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &ApiState) -> Result<Scope, ApiError> {
        parts
            .extensions
            .get::<Scope>()
            .cloned()
            .ok_or(ApiError::Unauthenticated)
    }
}

/// An id in the path, as a number (400 otherwise).
async fn path_id(parts: &mut Parts, state: &ApiState) -> Result<i64, ApiError> {
    crate::params::Id::from_request_parts(parts, state)
        .await
        .map(|id| id.0)
}

/// A subject id from the path that is within the caller's scope (404
/// otherwise); the request is audited as a read of this subject's data.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScopedSubject(pub(crate) i64);

impl FromRequestParts<ApiState> for ScopedSubject {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, ApiError> {
        let scope = Scope::from_request_parts(parts, s).await?;
        scope.require(Need::ReadCaseload)?;
        let id = path_id(parts, s).await?;
        if !scope.sees_subject(&s.pool, id).await? {
            return Err(ApiError::NotFound);
        }
        AuditSlot::of(parts).subject(id);
        Ok(ScopedSubject(id))
    }
}

/// An order (rule) id from the path whose subject is within the caller's
/// scope (404 otherwise); the request is audited as a change to that
/// subject's orders.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScopedOrder {
    pub(crate) id: i64,
    pub(crate) subject: i64,
}

impl FromRequestParts<ApiState> for ScopedOrder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, ApiError> {
        let scope = Scope::from_request_parts(parts, s).await?;
        scope.require(Need::ReadCaseload)?;
        let id = path_id(parts, s).await?;
        let q = format!(
            "SELECT r.subject_id FROM rules r JOIN subjects s ON s.id = r.subject_id \
             WHERE r.id = $2 AND {SUBJECT_VISIBLE}"
        );
        let subject: i64 = sqlx::query_scalar(&q)
            .bind(scope.officers())
            .bind(id)
            .fetch_optional(&s.pool)
            .await?
            .ok_or(ApiError::NotFound)?;
        AuditSlot::of(parts).subject(subject);
        Ok(ScopedOrder { id, subject })
    }
}

/// An alert id from the path that is within the caller's scope (404
/// otherwise); the request is audited as a read of its subject's data.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScopedAlert {
    pub(crate) id: i64,
}

impl FromRequestParts<ApiState> for ScopedAlert {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, ApiError> {
        let scope = Scope::from_request_parts(parts, s).await?;
        scope.require(Need::ReadCaseload)?;
        let id = path_id(parts, s).await?;
        let subject = scope
            .alert_subject(&s.pool, id)
            .await?
            .ok_or(ApiError::NotFound)?;
        AuditSlot::of(parts).subject(subject);
        Ok(ScopedAlert { id })
    }
}
