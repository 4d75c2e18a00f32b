//! Reading reference rows and applying them to the engine and registry.
//!
//! [`sync`] loads everything at startup and, while running, the rows named
//! by `NOTIFY emtrack_reference` (see `migrations/0002_ingest.sql`). The
//! database is read first and the lock taken only to apply. Applying is a
//! diff: a subject whose rules are unchanged keeps its episodes and streaks,
//! a removed rule closes its episode with `rule_removed`, and those closing
//! transitions are returned for ingest to store.

use crate::registry::{Core, DeviceKind, DeviceRef, SharedCore};
use crate::rows::{DeviceRow, RuleRow, ZoneVersionRow, rule_spec, zone_spec};
use bus::Fleet;
use geofence::jiff::Timestamp;
use geofence::{SubjectId, Transition, ZoneId, ZoneSpec, ZoneVersion};
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::PgPool;
use std::fmt;
use std::time::Duration;

/// A row the engine cannot take. The row is skipped (the rest loads) and the
/// error is reported and counted.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// `zones`, `order_versions`, `rules`, `subjects` or `devices`.
    pub table: &'static str,
    /// The row's id.
    pub id: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} row {}: {}", self.table, self.id, self.message)
    }
}

/// What to reload.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Everything (startup, or after the listener lost notifications).
    pub all: bool,
    /// Zone ids.
    pub zones: Vec<i64>,
    /// Subject ids (their rules and devices).
    pub subjects: Vec<i64>,
    /// Device ids.
    pub devices: Vec<String>,
    /// The victims table changed.
    pub victims: bool,
}

impl Scope {
    /// Everything.
    pub fn all() -> Scope {
        Scope {
            all: true,
            ..Scope::default()
        }
    }

    /// Adds one `table:key` notification payload; false if it is not one.
    pub fn add(&mut self, payload: &str) -> bool {
        let Some((table, key)) = payload.split_once(':') else {
            return false;
        };
        match table {
            "zones" => key.parse().map(|id| self.zones.push(id)).is_ok(),
            "rules" | "assignments" | "subjects" => {
                key.parse().map(|id| self.subjects.push(id)).is_ok()
            }
            "victims" => {
                self.victims = true;
                key.parse().map(|id| self.subjects.push(id)).is_ok()
            }
            "devices" => {
                self.devices.push(key.to_owned());
                true
            }
            _ => false,
        }
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.all
            && !self.victims
            && self.zones.is_empty()
            && self.subjects.is_empty()
            && self.devices.is_empty()
    }

    /// Rows named so far.
    pub fn len(&self) -> usize {
        self.zones.len() + self.subjects.len() + self.devices.len()
    }

    /// Devices may have changed: those named, those of the named subjects,
    /// or every phone.
    fn touches_devices(&self) -> bool {
        self.all || self.victims || !self.subjects.is_empty() || !self.devices.is_empty()
    }
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct Synced {
    /// Zones upserted or removed.
    pub zones: usize,
    /// Subjects upserted or removed.
    pub subjects: usize,
    /// Device entries changed.
    pub devices: usize,
    /// Episodes closed because a rule or subject went away.
    pub transitions: Vec<Transition>,
    /// Rows skipped.
    pub errors: Vec<RowError>,
    /// The bracelets to watch, when devices may have changed.
    pub fleet: Option<Fleet>,
}

/// Reads what `scope` names and applies it to `core`.
pub async fn sync(pool: &PgPool, core: &SharedCore, scope: &Scope) -> Result<Synced, sqlx::Error> {
    let history = core.lock().history;
    let rows = Fetched::read(pool, scope, history).await?;
    let mut core = core.lock();
    Ok(rows.apply(&mut core, scope))
}

/// The rows a scope names.
#[derive(Default)]
struct Fetched {
    zones: Vec<ZoneVersionRow>,
    /// Earlier versions of the fetched zones, in force within the history.
    earlier: Vec<ZoneVersionRow>,
    subjects: Vec<i64>,
    rules: Vec<RuleRow>,
    devices: Vec<DeviceRow>,
}

impl Fetched {
    async fn read(pool: &PgPool, scope: &Scope, history: Duration) -> Result<Fetched, sqlx::Error> {
        let all = scope.all;
        let mut f = Fetched::default();
        if all || !scope.zones.is_empty() {
            let ids = (!all).then_some(&scope.zones);
            f.zones = sqlx::query_as(
                "SELECT z.id, z.name, z.kind, z.category, z.geometry, z.radius_m, z.buffer_m, z.schedule, \
                        v.version::int8 AS version, v.valid_from AS version_from \
                 FROM zones z LEFT JOIN order_versions v \
                   ON v.object = 'zone' AND v.object_id = z.id AND v.valid_to IS NULL \
                 WHERE $1::bigint[] IS NULL OR z.id = ANY($1) ORDER BY z.id",
            )
            .bind(ids)
            .fetch_all(pool)
            .await?;
            // Earlier versions a fix that may still arrive could fall in
            // (zero-length ones, from two changes in one transaction, never).
            f.earlier = sqlx::query_as(
                "SELECT z.id, z.name, z.kind, z.category, z.geometry, z.radius_m, z.buffer_m, z.schedule, \
                        v.version::int8 AS version, v.valid_from AS version_from \
                 FROM order_versions v CROSS JOIN LATERAL jsonb_populate_record(NULL::zones, v.row) z \
                 WHERE v.object = 'zone' AND v.row IS NOT NULL AND v.valid_to > v.valid_from \
                   AND v.valid_to > now() - make_interval(secs => $2) \
                   AND ($1::bigint[] IS NULL OR v.object_id = ANY($1)) \
                 ORDER BY v.object_id, v.version",
            )
            .bind(ids)
            .bind(history.as_secs_f64())
            .fetch_all(pool)
            .await?;
        }
        if all || !scope.subjects.is_empty() {
            let ids = (!all).then_some(&scope.subjects);
            f.subjects = sqlx::query_scalar(
                "SELECT id FROM subjects WHERE $1::bigint[] IS NULL OR id = ANY($1) ORDER BY id",
            )
            .bind(ids)
            .fetch_all(pool)
            .await?;
            f.rules = sqlx::query_as(
                "SELECT id, subject_id, kind, zone_id, category, other_device, min_distance_m, max_age_s, schedule, tuning \
                 FROM rules WHERE $1::bigint[] IS NULL OR subject_id = ANY($1) ORDER BY subject_id, id",
            )
            .bind(ids)
            .fetch_all(pool)
            .await?;
        }
        if scope.touches_devices() {
            // Devices named directly, those assigned to the named subjects,
            // and every phone when the victims changed.
            f.devices = sqlx::query_as(
                "SELECT d.id, d.kind, d.retired_at IS NOT NULL AND d.retired_at <= now() AS retired, \
                        a.subject_id, EXISTS (SELECT 1 FROM victims v WHERE v.device_id = d.id) AS protects, \
                        ARRAY(SELECT DISTINCT v.protected_from FROM victims v WHERE v.device_id = d.id) AS protected, \
                        d.report_interval_s, d.format \
                 FROM devices d \
                 LEFT JOIN LATERAL (SELECT subject_id FROM assignments a WHERE a.device_id = d.id \
                     AND a.valid_from <= now() AND (a.valid_to IS NULL OR a.valid_to > now()) \
                     ORDER BY a.valid_from DESC LIMIT 1) a ON true \
                 WHERE $1::text[] IS NULL OR d.id = ANY($1) \
                    OR d.id IN (SELECT device_id FROM assignments WHERE subject_id = ANY($2)) \
                    OR ($3 AND d.kind = 'victim_phone')",
            )
            .bind((!all).then_some(&scope.devices))
            .bind(&scope.subjects)
            .bind(scope.victims)
            .fetch_all(pool)
            .await?;
        }
        Ok(f)
    }

    fn apply(self, core: &mut Core, scope: &Scope) -> Synced {
        let mut done = Synced::default();
        // Zones first: rules refer to them. Vanished zones last: the subjects
        // no longer name them by then.
        let fetched_zones = apply_zones(core, self.zones, self.earlier, &mut done);
        apply_subjects(core, self.subjects, self.rules, scope, &mut done);
        remove_zones(core, &fetched_zones, scope, &mut done);
        if scope.touches_devices() {
            apply_devices(core, self.devices, scope, &mut done);
            done.fleet = Some(core.registry.fleet());
        }
        done
    }
}

/// Upserts the fetched zones, each with its earlier versions; returns their ids.
fn apply_zones(
    core: &mut Core,
    zones: Vec<ZoneVersionRow>,
    earlier: Vec<ZoneVersionRow>,
    done: &mut Synced,
) -> FxHashSet<i64> {
    let mut before: FxHashMap<i64, Vec<(ZoneVersion, ZoneSpec)>> = FxHashMap::default();
    for row in earlier {
        let (id, version) = (row.zone.id, row.version.unwrap_or_default());
        match versioned(row) {
            Ok((Some(v), spec)) => before.entry(id).or_default().push((v, spec)),
            Ok((None, _)) => {}
            // The version before it then stands for its interval too.
            Err(message) => done.errors.push(RowError {
                table: "order_versions",
                id: format!("zone {id} version {version}"),
                message,
            }),
        }
    }
    let mut fetched = FxHashSet::default();
    for row in zones {
        let id = row.zone.id;
        fetched.insert(id);
        let earlier = before.remove(&id).unwrap_or_default();
        match versioned(row).and_then(|(version, spec)| {
            match version {
                Some(v) => core.engine.upsert_zone_versions(spec, v, earlier),
                // No record of its versions (written with the trigger off).
                None => core.engine.upsert_zone(spec),
            }
            .map_err(|e| format!("the engine refused it: {e}"))
        }) {
            Ok(()) => {
                core.zones.insert(id);
                done.zones += 1;
            }
            Err(message) => done.errors.push(RowError {
                table: "zones",
                id: id.to_string(),
                message,
            }),
        }
    }
    fetched
}

/// A zone version as the engine takes it.
fn versioned(row: ZoneVersionRow) -> Result<(Option<ZoneVersion>, ZoneSpec), String> {
    let version = match (row.version, row.version_from) {
        (Some(n), Some(from)) => Some(ZoneVersion {
            id: n as u64,
            since: Timestamp::from_millisecond(from.0)
                .map_err(|e| format!("version {n} starts at an impossible time: {e}"))?,
        }),
        _ => None,
    };
    Ok((version, zone_spec(row.zone)?))
}

/// Upserts the fetched subjects with their rules, and removes those named
/// (or, for everything, known) that are gone.
fn apply_subjects(
    core: &mut Core,
    subjects: Vec<i64>,
    rules: Vec<RuleRow>,
    scope: &Scope,
    done: &mut Synced,
) {
    let mut by_subject: FxHashMap<i64, Vec<RuleRow>> = FxHashMap::default();
    for r in rules {
        by_subject.entry(r.subject_id).or_default().push(r);
    }
    let mut fetched = FxHashSet::default();
    for sid in subjects {
        fetched.insert(sid);
        let rows = by_subject.remove(&sid).unwrap_or_default();
        let specs = match rows
            .into_iter()
            .map(|r| {
                let id = r.id;
                rule_spec(r, &mut core.registry).map_err(|message| RowError {
                    table: "rules",
                    id: id.to_string(),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(specs) => specs,
            Err(e) => {
                // Keep the subject's previous rules rather than judge it on part of them.
                done.errors.push(e);
                continue;
            }
        };
        match core
            .engine
            .upsert_subject(SubjectId(sid as u64), specs, &mut done.transitions)
        {
            Ok(_) => {
                core.subjects.insert(sid);
                done.subjects += 1;
            }
            Err(e) => done.errors.push(RowError {
                table: "subjects",
                id: sid.to_string(),
                message: format!("the engine refused its rules: {e}"),
            }),
        }
    }
    for sid in gone(&core.subjects, &fetched, &scope.subjects, scope.all) {
        if core
            .engine
            .remove_subject(SubjectId(sid as u64), &mut done.transitions)
            .is_ok()
        {
            done.subjects += 1;
        }
        core.subjects.remove(&sid);
    }
}

/// Removes the zones named (or, for everything, known) that are gone.
fn remove_zones(core: &mut Core, fetched: &FxHashSet<i64>, scope: &Scope, done: &mut Synced) {
    for zid in gone(&core.zones, fetched, &scope.zones, scope.all) {
        match core.engine.remove_zone(ZoneId(zid as u64)) {
            Ok(()) => {
                core.zones.remove(&zid);
                done.zones += 1;
            }
            Err(e) => done.errors.push(RowError {
                table: "zones",
                id: zid.to_string(),
                message: format!("cannot remove: {e}"),
            }),
        }
    }
}

/// The ids loaded but not fetched again: every such id for a full load, the
/// named ones otherwise.
fn gone(loaded: &FxHashSet<i64>, fetched: &FxHashSet<i64>, named: &[i64], all: bool) -> Vec<i64> {
    let candidates: Vec<i64> = if all {
        loaded.iter().copied().collect()
    } else {
        named.to_vec()
    };
    candidates
        .into_iter()
        .filter(|id| !fetched.contains(id) && loaded.contains(id))
        .collect()
}

/// Puts the fetched devices in the registry, and drops or unassigns those
/// named that are gone.
fn apply_devices(core: &mut Core, devices: Vec<DeviceRow>, scope: &Scope, done: &mut Synced) {
    let mut fetched = FxHashSet::default();
    for row in devices {
        let Some(kind) = DeviceKind::from_name(&row.kind) else {
            done.errors.push(RowError {
                table: "devices",
                id: row.id,
                message: format!("unknown device kind {:?}", row.kind),
            });
            continue;
        };
        let Some(format) = protocol::Format::from_name(&row.format) else {
            done.errors.push(RowError {
                table: "devices",
                id: row.id,
                message: format!("unknown device format {:?}", row.format),
            });
            continue;
        };
        let (engine, name) = core.registry.engine_id(&row.id);
        let entry = DeviceRef {
            format,
            name,
            engine,
            kind,
            retired: row.retired,
            subject: row.subject_id.map(|s| SubjectId(s as u64)),
            protects: row.protects,
            protected: row.protected.iter().map(|s| *s as u64).collect(),
            report_interval_s: row.report_interval_s.max(1) as u32,
        };
        fetched.insert(row.id.clone());
        core.registry.devices.insert(row.id, entry);
        done.devices += 1;
    }
    let registry = &mut core.registry;
    if scope.all {
        let before = registry.devices.len();
        registry.devices.retain(|id, _| fetched.contains(id));
        done.devices += before - registry.devices.len();
        return;
    }
    // A device that was assigned to a named subject and no longer is.
    let named: FxHashSet<u64> = scope.subjects.iter().map(|s| *s as u64).collect();
    for (id, d) in registry.devices.iter_mut() {
        if !fetched.contains(id) && d.subject.is_some_and(|s| named.contains(&s.0)) {
            d.subject = None;
            done.devices += 1;
        }
    }
    for id in &scope.devices {
        if !fetched.contains(id) && registry.devices.remove(id).is_some() {
            done.devices += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payloads() {
        let mut s = Scope::default();
        assert!(s.add("zones:7"));
        assert!(s.add("rules:3"));
        assert!(s.add("devices:EM-000001"));
        assert!(s.add("victims:4"));
        assert!(!s.add("zones:x"));
        assert!(!s.add("nonsense"));
        assert_eq!(s.zones, vec![7]);
        assert_eq!(s.subjects, vec![3, 4]);
        assert_eq!(s.devices, vec!["EM-000001".to_owned()]);
        assert!(s.victims);
    }
}
