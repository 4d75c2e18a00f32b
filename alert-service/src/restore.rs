//! Starting again after a restart: the
//! unresolved alerts (and those resolved within the replay window) with
//! their escalation deadlines, and what was stored since a little before the
//! re-read point (`alert_progress`), re-read as the bus would have carried
//! it. The alerts' unique key makes the re-read idempotent: no alert is
//! lost, none is made twice.

use alerts::{
    Alert, AlertBook, AlertId, AlertKey, AlertState, AlertType, Policy, Router, Severity,
};
use bus::{Finding, FindingKind, Observed, ObservedEvent, StoredTransition};
use geofence::{RuleId, SubjectId, Transition, TransitionKind, ZoneId};
use rustc_hash::FxHashMap;
use sqlx::PgPool;
use std::fmt;
use store::{Millis, UnknownLabel, label};

/// Why the alert service could not start.
#[derive(Debug)]
pub enum AlertStartError {
    /// A database step failed (an unknown label names its column and value).
    Db(sqlx::Error),
}

impl fmt::Display for AlertStartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertStartError::Db(e) => write!(f, "cannot load the alert state: {e}"),
        }
    }
}

impl std::error::Error for AlertStartError {}

impl From<sqlx::Error> for AlertStartError {
    fn from(e: sqlx::Error) -> Self {
        AlertStartError::Db(e)
    }
}

impl From<UnknownLabel> for AlertStartError {
    fn from(e: UnknownLabel) -> Self {
        AlertStartError::Db(e.into())
    }
}

/// An `alerts` row.
#[derive(sqlx::FromRow)]
struct AlertRow {
    id: i64,
    subject_id: i64,
    kind: String,
    scope: i64,
    episode_at: Millis,
    severity: String,
    state: String,
    event_at: Millis,
    raised_at: Millis,
    historical: bool,
    repeats: i32,
    level: i16,
    escalate_at: Option<Millis>,
    device_id: Option<String>,
    version: i32,
    resolved_at: Option<Millis>,
    condition_ended_at: Option<Millis>,
}

impl AlertRow {
    fn alert(&self) -> Result<Alert, UnknownLabel> {
        Ok(Alert {
            id: AlertId(self.id as u64),
            key: AlertKey {
                subject: self.subject_id as u64,
                kind: label("alerts.kind", &self.kind, AlertType::from_name)?,
                scope: self.scope as u64,
                episode_ms: self.episode_at.0,
            },
            severity: label("alerts.severity", &self.severity, Severity::from_name)?,
            state: label("alerts.state", &self.state, AlertState::from_name)?,
            event_ms: self.event_at.0,
            raised_ms: self.raised_at.0,
            historical: self.historical,
            repeats: self.repeats.max(0) as u32,
            level: self.level.clamp(0, 2) as u8,
            escalate_at_ms: self.escalate_at.map(i64::from),
            version: self.version.max(0) as u32,
            resolved_ms: self.resolved_at.map(i64::from),
            condition_ended_ms: self.condition_ended_at.map(i64::from),
        })
    }
}

/// The alert state read back.
pub(crate) struct Restored {
    pub(crate) router: Router,
    /// The bracelet of each restored alert.
    pub(crate) devices: FxHashMap<AlertId, String>,
    /// Everything committed up to here was in the book before the restart.
    pub(crate) processed_to: i64,
}

/// Reads the alerts that matter after a restart into a new router.
pub(crate) async fn alerts(
    pool: &PgPool,
    policy: Policy,
    replay_s: u32,
) -> Result<Restored, AlertStartError> {
    let processed_to: Millis =
        sqlx::query_scalar("SELECT processed_to FROM alert_progress WHERE id = 1")
            .fetch_one(pool)
            .await?;
    let since = Millis(processed_to.0 - i64::from(replay_s) * 1000);
    let rows: Vec<AlertRow> = sqlx::query_as(
        "SELECT id, subject_id, kind, scope, episode_at, severity, state, event_at, raised_at, \
                historical, repeats, level, escalate_at, device_id, version, resolved_at, condition_ended_at \
         FROM alerts WHERE state <> 'resolved' OR resolved_at >= $1",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let max_id: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM alerts")
        .fetch_one(pool)
        .await?;
    let mut router = Router::new(AlertBook::new(policy, max_id.unwrap_or(0) as u64));
    let mut devices = FxHashMap::default();
    for r in rows {
        let a = r.alert()?;
        if let Some(d) = r.device_id {
            devices.insert(a.id, d);
        }
        router.restore(a);
    }
    Ok(Restored {
        router,
        devices,
        processed_to: processed_to.0,
    })
}

/// A stored transition to re-read, with the subject's bracelet at the time
/// (`rule_transitions` does not name it).
#[derive(sqlx::FromRow)]
struct TransitionRow {
    subject_id: i64,
    rule_id: i64,
    zone_id: i64,
    kind: String,
    at: Millis,
    historical: bool,
    confirmed_at: Millis,
    zone_version: Option<i64>,
    device: Option<String>,
}

impl TransitionRow {
    fn stored(self) -> Result<StoredTransition, sqlx::Error> {
        let time = |m: Millis, column: &str| {
            geofence::jiff::Timestamp::from_millisecond(m.0).map_err(|e| {
                sqlx::Error::ColumnDecode {
                    index: column.to_owned(),
                    source: Box::new(e),
                }
            })
        };
        Ok(StoredTransition {
            transition: Transition {
                subject: SubjectId(self.subject_id as u64),
                rule: RuleId(self.rule_id as u64),
                zone: (self.zone_id != 0).then_some(ZoneId(self.zone_id as u64)),
                device: None,
                kind: label(
                    "rule_transitions.kind",
                    &self.kind,
                    TransitionKind::from_name,
                )?,
                at: time(self.at, "rule_transitions.at")?,
                confirmed_at: time(self.confirmed_at, "rule_transitions.confirmed_at")?,
                historical: self.historical,
                end_cause: None,
                zone_version: self.zone_version.map(|v| v as u64),
            },
            device: self.device,
            other_device: None,
        })
    }
}

/// A stored event of a subject's bracelet to re-read.
#[derive(sqlx::FromRow)]
struct EventRow {
    device_id: String,
    subject_id: i64,
    kind: String,
    event_time: Millis,
    late: bool,
}

/// A stored finding about a subject's bracelet to re-read.
#[derive(sqlx::FromRow)]
struct FindingRow {
    device_id: String,
    subject_id: i64,
    kind: String,
    at: Millis,
}

/// Transitions, bracelet events and findings stored since `since_ms`, as the bus
/// carried them when they were committed.
pub(crate) async fn stored_since(pool: &PgPool, since_ms: i64) -> Result<Observed, sqlx::Error> {
    let transitions: Vec<TransitionRow> = sqlx::query_as(
        "SELECT t.subject_id, t.rule_id, t.zone_id, t.kind, t.at, t.historical, t.confirmed_at, t.zone_version, \
                (SELECT a.device_id FROM assignments a JOIN devices d ON d.id = a.device_id AND d.kind = 'bracelet' \
                 WHERE a.subject_id = t.subject_id AND a.valid_from <= t.at \
                   AND (a.valid_to IS NULL OR a.valid_to > t.at) ORDER BY a.valid_from DESC LIMIT 1) AS device \
         FROM rule_transitions t WHERE t.recorded_at >= $1 \
         ORDER BY t.recorded_at, t.at",
    )
    .bind(Millis(since_ms))
    .fetch_all(pool)
    .await?;
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT e.device_id, a.subject_id, e.kind, e.event_time, e.late \
         FROM device_events e \
         JOIN devices d ON d.id = e.device_id AND d.kind = 'bracelet' \
         JOIN assignments a ON a.device_id = e.device_id AND a.valid_from <= e.event_time \
              AND (a.valid_to IS NULL OR a.valid_to > e.event_time) \
         WHERE e.received_at >= $1 \
         ORDER BY e.received_at, e.event_time",
    )
    .bind(Millis(since_ms))
    .fetch_all(pool)
    .await?;
    let findings: Vec<FindingRow> = sqlx::query_as(
        "SELECT f.device_id, a.subject_id, f.kind, f.at \
         FROM device_findings f \
         JOIN devices d ON d.id = f.device_id AND d.kind = 'bracelet' \
         JOIN assignments a ON a.device_id = f.device_id AND a.valid_from <= f.at \
              AND (a.valid_to IS NULL OR a.valid_to > f.at) \
         WHERE f.recorded_at >= $1 \
         ORDER BY f.recorded_at, f.at",
    )
    .bind(Millis(since_ms))
    .fetch_all(pool)
    .await?;
    Ok(Observed {
        // Watching phones starts afresh after a restart.
        phones: Vec::new(),
        committed_ms: 0,
        findings: findings
            .into_iter()
            .map(|f| {
                Ok(Finding {
                    subject: f.subject_id as u64,
                    device: f.device_id,
                    kind: label("device_findings.kind", &f.kind, FindingKind::from_name)?,
                    at_ms: f.at.0,
                })
            })
            .collect::<Result<_, UnknownLabel>>()?,
        transitions: transitions
            .into_iter()
            .map(TransitionRow::stored)
            .collect::<Result<_, _>>()?,
        events: events
            .into_iter()
            .map(|e| {
                Ok(ObservedEvent {
                    subject: e.subject_id as u64,
                    device: e.device_id,
                    kind: label(
                        "device_events.kind",
                        &e.kind,
                        protocol::EventKind::from_name,
                    )?,
                    at_ms: e.event_time.0,
                    late: e.late,
                })
            })
            .collect::<Result<_, UnknownLabel>>()?,
        reports: Vec::new(),
    })
}

/// The newest good (else newest) fix time of each device (ms), for
/// location-failure detection from the start.
pub(crate) async fn last_fixes(
    pool: &PgPool,
) -> Result<Vec<(String, Option<Millis>)>, sqlx::Error> {
    sqlx::query_as("SELECT device_id, coalesce(good_time, head_time) FROM device_state")
        .fetch_all(pool)
        .await
}
