//! Storing alert changes with their notifications, in one transaction: the
//! new alerts, the updated ones, their `alert_events` lines, their
//! deliveries (the outbox) and the re-read point (`alert_progress`). Only
//! after the commit is anything sent.

use crate::delivery::{Delivery, DeliveryRow};
use crate::notification::{About, Chain, Context, NewDelivery, fan_out};
use alerts::{Actor, Alert, AlertEvent, AlertId, AlertKey, Change};
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::{PgConnection, PgPool};
use store::Millis;

/// One flush of the book: its new log lines and the alerts they concern.
pub(crate) struct Changes<'a> {
    pub(crate) events: &'a [AlertEvent],
    pub(crate) alerts: &'a FxHashMap<AlertId, Alert>,
    /// The bracelet of each alert.
    pub(crate) devices: &'a FxHashMap<AlertId, String>,
    /// The fix or event that confirmed each live alert (ms).
    pub(crate) triggers: &'a FxHashMap<AlertId, i64>,
    /// Everything committed up to here is in the book (`None`: leave
    /// `alert_progress` where it is, a change was refused before).
    pub(crate) processed_to: Option<i64>,
    /// How long a written delivery is left to its sender before the sweeper
    /// takes it (s).
    pub(crate) lease_s: u32,
}

/// What a store did.
pub(crate) struct Stored {
    /// The deliveries written, to send.
    pub(crate) deliveries: Vec<Delivery>,
    /// New alerts whose key the store already had under another id: the
    /// stored one stands, these are not written.
    pub(crate) conflicts: Vec<AlertId>,
}

/// Writes `c` in one transaction.
pub(crate) async fn store(
    pool: &PgPool,
    fence: &store::Fence,
    c: &Changes<'_>,
) -> Result<Stored, sqlx::Error> {
    let chains = chains(pool, c.alerts).await?;
    let about = about(pool, c).await?;
    let webhooks: Vec<i64> = sqlx::query_scalar("SELECT id FROM webhooks WHERE active ORDER BY id")
        .fetch_all(pool)
        .await?;
    let mut tx = fence.begin(pool).await?;
    let conflicts = insert_new(&mut tx, c).await?;
    let kept: Vec<&Alert> = c
        .alerts
        .values()
        .filter(|a| !conflicts.contains(&a.id))
        .collect();
    update(&mut tx, &kept).await?;
    let events: Vec<&AlertEvent> = c
        .events
        .iter()
        .filter(|e| !conflicts.contains(&e.alert))
        .collect();
    insert_events(&mut tx, &events).await?;
    let mut out = Vec::new();
    for e in &events {
        let Some(a) = c.alerts.get(&e.alert) else {
            continue;
        };
        let cx = Context {
            device: c.devices.get(&a.id).map(String::as_str),
            trigger_ms: c.triggers.get(&a.id).copied(),
            chain: chains.get(&a.key.subject).copied().unwrap_or_default(),
            about: about.get(&a.id),
        };
        fan_out(a, e, cx, &webhooks, &mut out);
    }
    let deliveries = insert_deliveries(&mut tx, &out, c.lease_s).await?;
    if let Some(t) = c.processed_to {
        advance(&mut *tx, t).await?;
    }
    tx.commit().await?;
    Ok(Stored {
        deliveries,
        conflicts,
    })
}

/// Moves the re-read point to `processed_to` (never back).
pub(crate) async fn advance(
    conn: impl sqlx::PgExecutor<'_>,
    processed_to: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE alert_progress SET processed_to = greatest(processed_to, $1) WHERE id = 1")
        .bind(Millis(processed_to))
        .execute(conn)
        .await?;
    Ok(())
}

/// The recipient chains of the alerts' subjects.
async fn chains(
    pool: &PgPool,
    alerts: &FxHashMap<AlertId, Alert>,
) -> Result<FxHashMap<u64, Chain>, sqlx::Error> {
    let subjects: Vec<i64> = alerts
        .values()
        .map(|a| a.key.subject as i64)
        .collect::<FxHashSet<_>>()
        .into_iter()
        .collect();
    let rows: Vec<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT s.id, s.officer_id, o.supervisor_id FROM subjects s LEFT JOIN officers o ON o.id = s.officer_id \
         WHERE s.id = ANY($1)",
    )
    .bind(&subjects)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, officer, supervisor)| {
            (
                s as u64,
                Chain {
                    officer,
                    supervisor,
                },
            )
        })
        .collect())
}

/// One alert's where and what, as read.
#[derive(sqlx::FromRow)]
struct AboutRow {
    id: i64,
    reference: Option<String>,
    name: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    accuracy_m: Option<f32>,
}

/// Where and what of each alert changed in `c`: the subject's reference,
/// the zone's name (zone, inclusion and curfew alerts, whose scope is the
/// zone), and the confirming fix's position (alerts with a bracelet and a
/// trigger time).
async fn about(pool: &PgPool, c: &Changes<'_>) -> Result<FxHashMap<AlertId, About>, sqlx::Error> {
    use alerts::AlertType::{CurfewViolation, ExclusionZoneEntered, InclusionZoneLeft};
    let ids: FxHashSet<AlertId> = c.events.iter().map(|e| e.alert).collect();
    let alerts: Vec<&Alert> = ids.iter().filter_map(|id| c.alerts.get(id)).collect();
    let (mut ids, mut subjects, mut zones, mut devices, mut times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for a in &alerts {
        ids.push(a.id.0 as i64);
        subjects.push(a.key.subject as i64);
        let zoned = matches!(
            a.key.kind,
            ExclusionZoneEntered | InclusionZoneLeft | CurfewViolation
        );
        zones.push(zoned.then_some(a.key.scope as i64));
        devices.push(c.devices.get(&a.id).cloned());
        times.push(c.triggers.get(&a.id).map(|t| Millis(*t)));
    }
    let rows: Vec<AboutRow> = sqlx::query_as(
        "SELECT u.id, s.reference, z.name, f.lat, f.lon, f.accuracy_m \
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::timestamptz[]) \
                  AS u(id, subject, zone, device, at) \
             LEFT JOIN subjects s ON s.id = u.subject \
             LEFT JOIN zones z ON z.id = u.zone \
             LEFT JOIN fixes f ON f.device_id = u.device AND f.fix_time = u.at",
    )
    .bind(&ids)
    .bind(&subjects)
    .bind(&zones)
    .bind(&devices)
    .bind(&times)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let position = match (r.lat, r.lon, r.accuracy_m) {
                (Some(lat), Some(lon), Some(acc)) => Some((lat, lon, acc)),
                _ => None,
            };
            (
                AlertId(r.id as u64),
                About {
                    subject_reference: r.reference,
                    zone_name: r.name,
                    position,
                },
            )
        })
        .collect())
}

/// Inserts the raised alerts on their own: one whose key the store already
/// has (under another id) is a conflict, returned; the stored one stands.
async fn insert_new(tx: &mut PgConnection, c: &Changes<'_>) -> Result<Vec<AlertId>, sqlx::Error> {
    let new: Vec<&Alert> = c
        .events
        .iter()
        .filter(|e| e.what == Change::Raised)
        .filter_map(|e| c.alerts.get(&e.alert))
        .collect();
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = new.iter().map(|a| a.id.0 as i64).collect();
    let inserted: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO alerts (id, subject_id, kind, scope, episode_at, severity, state, event_at, raised_at, historical, device_id, version) \
         SELECT id, subject_id, kind, scope, episode, severity, 'open', ev, raised, historical, device, 1 \
         FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::timestamptz[], $6::text[], $7::timestamptz[], \
                     $8::timestamptz[], $9::bool[], $10::text[]) \
              AS u(id, subject_id, kind, scope, episode, severity, ev, raised, historical, device) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(new.iter().map(|a| a.key.subject as i64).collect::<Vec<_>>())
    .bind(new.iter().map(|a| a.key.kind.as_str()).collect::<Vec<_>>())
    .bind(new.iter().map(|a| a.key.scope as i64).collect::<Vec<_>>())
    .bind(new.iter().map(|a| Millis(a.key.episode_ms)).collect::<Vec<_>>())
    .bind(new.iter().map(|a| a.severity.as_str()).collect::<Vec<_>>())
    .bind(new.iter().map(|a| Millis(a.event_ms)).collect::<Vec<_>>())
    .bind(new.iter().map(|a| Millis(a.raised_ms)).collect::<Vec<_>>())
    .bind(new.iter().map(|a| a.historical).collect::<Vec<_>>())
    .bind(new.iter().map(|a| c.devices.get(&a.id).cloned()).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let got: FxHashSet<i64> = inserted.into_iter().collect();
    let missing: Vec<i64> = ids.into_iter().filter(|i| !got.contains(i)).collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    // Ours already (an earlier attempt committed after all), or a conflict.
    let keys: Vec<AlertKey> = missing
        .iter()
        .filter_map(|i| c.alerts.get(&AlertId(*i as u64)).map(|a| a.key))
        .collect();
    let ours: FxHashSet<i64> = sqlx::query_scalar(
        "SELECT a.id FROM alerts a JOIN UNNEST($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::timestamptz[]) \
             AS u(id, subject_id, kind, scope, episode) \
         ON a.id = u.id AND a.subject_id = u.subject_id AND a.kind = u.kind AND a.scope = u.scope \
            AND a.episode_at = u.episode",
    )
    .bind(&missing)
    .bind(keys.iter().map(|k| k.subject as i64).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.kind.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.scope as i64).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| Millis(k.episode_ms)).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    Ok(missing
        .into_iter()
        .filter(|i| !ours.contains(i))
        .map(|i| AlertId(i as u64))
        .collect())
}

/// Writes the alerts' current state (never an older version over a newer).
async fn update(tx: &mut PgConnection, alerts: &[&Alert]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alerts a SET state = u.state, repeats = u.repeats, level = u.level, \
             escalate_at = u.escalate, resolved_at = u.resolved, condition_ended_at = u.ended, \
             version = greatest(a.version, u.version), updated_at = now() \
         FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::int2[], $5::timestamptz[], $6::timestamptz[], $7::int4[], \
                     $8::timestamptz[]) \
              AS u(id, state, repeats, level, escalate, resolved, version, ended) \
         WHERE a.id = u.id",
    )
    .bind(alerts.iter().map(|a| a.id.0 as i64).collect::<Vec<_>>())
    .bind(alerts.iter().map(|a| a.state.as_str()).collect::<Vec<_>>())
    .bind(alerts.iter().map(|a| a.repeats as i32).collect::<Vec<_>>())
    .bind(alerts.iter().map(|a| i16::from(a.level)).collect::<Vec<_>>())
    .bind(alerts.iter().map(|a| a.escalate_at_ms.map(Millis)).collect::<Vec<_>>())
    .bind(alerts.iter().map(|a| a.resolved_ms.map(Millis)).collect::<Vec<_>>())
    .bind(alerts.iter().map(|a| a.version as i32).collect::<Vec<_>>())
    .bind(alerts.iter().map(|a| a.condition_ended_ms.map(Millis)).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

/// Appends the log lines (a repeat of a line already stored adds nothing).
async fn insert_events(tx: &mut PgConnection, events: &[&AlertEvent]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_events (alert_id, version, at, user_id, change, level, automatic, note, disposition) \
         SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::timestamptz[], $4::int8[], $5::text[], $6::int2[], \
                              $7::bool[], $8::text[], $9::text[]) \
         ON CONFLICT (alert_id, version) DO NOTHING",
    )
    .bind(events.iter().map(|e| e.alert.0 as i64).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.version as i32).collect::<Vec<_>>())
    .bind(events.iter().map(|e| Millis(e.at_ms)).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| match e.who {
                Actor::System => None,
                Actor::User(o) => Some(o as i64),
            })
            .collect::<Vec<_>>(),
    )
    .bind(events.iter().map(|e| e.what.as_str()).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| match e.what {
                Change::Escalated(l) => Some(i16::from(l)),
                _ => None,
            })
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| match e.what {
                Change::Resolved { automatic, .. } => Some(automatic),
                _ => None,
            })
            .collect::<Vec<_>>(),
    )
    .bind(events.iter().map(|e| e.note.as_deref()).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| match e.what {
                Change::Resolved { disposition, .. } => disposition.map(|d| d.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>(),
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Writes the notifications, leased to their senders for `lease_s`; a
/// notification already written (same alert, version, channel, target) is
/// not written or returned again.
async fn insert_deliveries(
    tx: &mut PgConnection,
    out: &[NewDelivery],
    lease_s: u32,
) -> Result<Vec<Delivery>, sqlx::Error> {
    if out.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "INSERT INTO alert_deliveries (alert_id, version, channel, target, payload, next_attempt_at, live_event_at) \
         SELECT id, version, channel, target, payload, now() + $7 * interval '1 second', live \
         FROM UNNEST($1::int8[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) \
              AS u(id, version, channel, target, payload, live) \
         ON CONFLICT (alert_id, version, channel, target) DO NOTHING \
         RETURNING id, alert_id, version, channel, target, payload, attempts, live_event_at",
    )
    .bind(out.iter().map(|d| d.alert).collect::<Vec<_>>())
    .bind(out.iter().map(|d| d.version).collect::<Vec<_>>())
    .bind(out.iter().map(|d| d.channel.as_str()).collect::<Vec<_>>())
    .bind(out.iter().map(|d| d.target.as_str()).collect::<Vec<_>>())
    .bind(out.iter().map(|d| d.payload.as_str()).collect::<Vec<_>>())
    .bind(out.iter().map(|d| d.live_event_ms.map(Millis)).collect::<Vec<_>>())
    .bind(i64::from(lease_s))
    .fetch_all(&mut *tx)
    .await?;
    rows.into_iter()
        .map(|r| Delivery::try_from(r).map_err(sqlx::Error::from))
        .collect()
}
