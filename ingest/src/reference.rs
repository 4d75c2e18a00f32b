//! Reference data (zones, subjects, rules, devices, assignments, victims) from
//! Postgres into the geofence engine and the device registry.
//!
//! [`sync`] loads everything at startup and, while running, applies the rows
//! named by `NOTIFY emtrack_reference` (see `migrations/0002_ingest.sql`).
//! Applying is a diff: a subject whose rules are unchanged keeps its episodes
//! and streaks, a removed rule closes its episode with `rule_removed`, and
//! those closing transitions are returned for the caller to store.

use geofence::jiff::SignedDuration;
use geofence::jiff::civil::Time;
use geofence::{
    CategoryId, DeviceId, Engine, Position, RuleId, RuleKind, RuleSpec, Schedule, Shape, SubjectId,
    Transition, Weekdays, WeeklyWindow, ZoneId, ZoneKind, ZoneScope, ZoneSpec,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use sqlx::PgPool;
use std::fmt;

/// What a device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A subject's ankle bracelet.
    Bracelet,
    /// A protected person's phone (OwnTracks): the other party of proximity rules.
    VictimPhone,
}

/// A known device, as the pipeline needs it.
#[derive(Clone, Debug)]
pub struct DeviceRef {
    /// The engine's id for it (dense, assigned by this process).
    pub engine: DeviceId,
    /// Bracelet or victim phone.
    pub kind: DeviceKind,
    /// Retired devices' messages are refused (`device_retired`).
    pub retired: bool,
    /// The subject it is assigned to now (bracelets).
    pub subject: Option<SubjectId>,
    /// A victim phone registered in `victims` (its fixes feed proximity rules).
    pub protects: bool,
    /// How often it reports (`devices.report_interval_s`); silence detection
    /// allows this plus a buffer.
    pub report_interval_s: u32,
}

/// Text device ids to their registry entries.
#[derive(Debug, Default)]
pub struct Registry {
    devices: FxHashMap<String, DeviceRef>,
    ids: FxHashMap<String, DeviceId>,
    /// `names[id - 1]` is the device whose engine id is `id`.
    names: Vec<String>,
    /// Bumped by every change to the devices (the alert service re-reads
    /// which bracelets to watch when it moves). Shared, so that it can be
    /// read without the core's lock.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Registry {
    /// A device by its protocol id.
    pub fn get(&self, device: &str) -> Option<&DeviceRef> {
        self.devices.get(device)
    }

    /// Known devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// No device known.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Every device.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &DeviceRef)> {
        self.devices.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Changes to the devices so far, readable without the core's lock.
    pub fn generation(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.generation.clone()
    }

    /// The protocol id of an engine device id.
    pub fn name_of(&self, id: DeviceId) -> Option<&str> {
        let i = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.names.get(i).map(String::as_str)
    }

    /// The engine id of `device`, assigned on first use and kept for the life
    /// of the process (proximity rules refer to devices by it).
    fn engine_id(&mut self, device: &str) -> DeviceId {
        if let Some(id) = self.ids.get(device) {
            return *id;
        }
        self.names.push(device.to_owned());
        let id = DeviceId(self.names.len() as u64);
        self.ids.insert(device.to_owned(), id);
        id
    }
}

/// The engine and the registry: the state every worker consults.
#[derive(Default)]
pub struct Core {
    /// Zones, subjects and their rule state.
    pub engine: Engine,
    /// Devices.
    pub registry: Registry,
    zones: FxHashSet<i64>,
    subjects: FxHashSet<i64>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("zones", &self.zones.len())
            .field("subjects", &self.subjects.len())
            .field("devices", &self.registry.len())
            .finish()
    }
}

impl Core {
    /// Zones and subjects loaded.
    pub fn counts(&self) -> (usize, usize) {
        (self.zones.len(), self.subjects.len())
    }
}

/// A row the engine cannot take. The row is skipped (the rest loads) and the
/// error is reported and counted.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// `zones`, `rules` or `subjects`.
    pub table: &'static str,
    /// The row's id.
    pub id: i64,
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
}

type ZoneRow = (
    i64,
    String,
    String,
    Option<i32>,
    Value,
    Option<f64>,
    f64,
    Option<Value>,
);
type RuleRow = (
    i64,
    i64,
    String,
    Option<i64>,
    Option<i32>,
    Option<String>,
    Option<f64>,
    Option<i32>,
    Option<Value>,
);
type DeviceRow = (String, String, bool, Option<i64>, bool, i32);

/// Reads what `scope` names and applies it to `core`. The database is read
/// first and the lock taken only to apply.
pub async fn sync(
    pool: &PgPool,
    core: &std::sync::Mutex<Core>,
    scope: &Scope,
) -> Result<Synced, sqlx::Error> {
    let all = scope.all;
    let zone_ids: Option<Vec<i64>> = (!all).then(|| scope.zones.clone());
    let subject_ids: Option<Vec<i64>> = (!all).then(|| scope.subjects.clone());
    let zones: Vec<ZoneRow> = if all || !scope.zones.is_empty() {
        sqlx::query_as(
            "SELECT id, name, kind, category, geometry, radius_m, buffer_m, schedule FROM zones \
             WHERE $1::bigint[] IS NULL OR id = ANY($1) ORDER BY id",
        )
        .bind(&zone_ids)
        .fetch_all(pool)
        .await?
    } else {
        Vec::new()
    };
    let (subjects, rules): (Vec<i64>, Vec<RuleRow>) = if all || !scope.subjects.is_empty() {
        let subjects = sqlx::query_scalar(
            "SELECT id FROM subjects WHERE $1::bigint[] IS NULL OR id = ANY($1) ORDER BY id",
        )
        .bind(&subject_ids)
        .fetch_all(pool)
        .await?;
        let rules = sqlx::query_as(
            "SELECT id, subject_id, kind, zone_id, category, other_device, min_distance_m, max_age_s, schedule \
             FROM rules WHERE $1::bigint[] IS NULL OR subject_id = ANY($1) ORDER BY subject_id, id",
        )
        .bind(&subject_ids)
        .fetch_all(pool)
        .await?;
        (subjects, rules)
    } else {
        (Vec::new(), Vec::new())
    };
    // Devices named directly, those assigned to the named subjects, and every
    // phone when the victims changed.
    let devices: Vec<DeviceRow> = if all
        || !scope.devices.is_empty()
        || !scope.subjects.is_empty()
        || scope.victims
    {
        let named: Option<Vec<String>> = (!all).then(|| scope.devices.clone());
        sqlx::query_as(
            "SELECT d.id, d.kind, d.retired_at IS NOT NULL AND d.retired_at <= now(), a.subject_id, \
                    EXISTS (SELECT 1 FROM victims v WHERE v.device_id = d.id), d.report_interval_s \
             FROM devices d \
             LEFT JOIN LATERAL (SELECT subject_id FROM assignments a WHERE a.device_id = d.id \
                 AND a.valid_from <= now() AND (a.valid_to IS NULL OR a.valid_to > now()) \
                 ORDER BY a.valid_from DESC LIMIT 1) a ON true \
             WHERE $1::text[] IS NULL OR d.id = ANY($1) \
                OR d.id IN (SELECT device_id FROM assignments WHERE subject_id = ANY($2)) \
                OR ($3 AND d.kind = 'victim_phone')",
        )
        .bind(&named)
        .bind(&scope.subjects)
        .bind(scope.victims)
        .fetch_all(pool)
        .await?
    } else {
        Vec::new()
    };

    let mut guard = core.lock().unwrap_or_else(|e| e.into_inner());
    let core = &mut *guard;
    let mut done = Synced::default();

    // Zones first: rules refer to them.
    let mut fetched_zones = FxHashSet::default();
    for row in zones {
        let id = row.0;
        fetched_zones.insert(id);
        match zone_spec(row).and_then(|spec| {
            core.engine
                .upsert_zone(spec)
                .map_err(|e| format!("the engine refused it: {e}"))
        }) {
            Ok(()) => {
                core.zones.insert(id);
                done.zones += 1;
            }
            Err(message) => done.errors.push(RowError {
                table: "zones",
                id,
                message,
            }),
        }
    }

    // Subjects: upsert those fetched, remove those named (or known) but gone.
    let mut by_subject: FxHashMap<i64, Vec<RuleRow>> = FxHashMap::default();
    for r in rules {
        by_subject.entry(r.1).or_default().push(r);
    }
    let mut fetched_subjects = FxHashSet::default();
    for sid in subjects {
        fetched_subjects.insert(sid);
        let rows = by_subject.remove(&sid).unwrap_or_default();
        let mut specs = Vec::with_capacity(rows.len());
        let mut bad = None;
        for r in rows {
            let rid = r.0;
            match rule_spec(r, &mut core.registry) {
                Ok(s) => specs.push(s),
                Err(message) => {
                    bad = Some(RowError {
                        table: "rules",
                        id: rid,
                        message,
                    });
                    break;
                }
            }
        }
        if let Some(e) = bad {
            // Keep the subject's previous rules rather than judge it on part of them.
            done.errors.push(e);
            continue;
        }
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
                id: sid,
                message: format!("the engine refused its rules: {e}"),
            }),
        }
    }
    let gone_subjects: Vec<i64> = if all {
        core.subjects
            .iter()
            .filter(|s| !fetched_subjects.contains(*s))
            .copied()
            .collect()
    } else {
        scope
            .subjects
            .iter()
            .filter(|s| !fetched_subjects.contains(*s) && core.subjects.contains(*s))
            .copied()
            .collect()
    };
    for sid in gone_subjects {
        if core
            .engine
            .remove_subject(SubjectId(sid as u64), &mut done.transitions)
            .is_ok()
        {
            done.subjects += 1;
        }
        core.subjects.remove(&sid);
    }

    // Zones that vanished (after the subjects, which no longer name them).
    let gone_zones: Vec<i64> = if all {
        core.zones
            .iter()
            .filter(|z| !fetched_zones.contains(*z))
            .copied()
            .collect()
    } else {
        scope
            .zones
            .iter()
            .filter(|z| !fetched_zones.contains(*z) && core.zones.contains(*z))
            .copied()
            .collect()
    };
    for zid in gone_zones {
        match core.engine.remove_zone(ZoneId(zid as u64)) {
            Ok(()) => {
                core.zones.remove(&zid);
                done.zones += 1;
            }
            Err(e) => done.errors.push(RowError {
                table: "zones",
                id: zid,
                message: format!("cannot remove: {e}"),
            }),
        }
    }

    // Devices.
    let mut fetched_devices = FxHashSet::default();
    if !devices.is_empty() || all || !scope.subjects.is_empty() || !scope.devices.is_empty() {
        core.registry
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
    for (id, kind, retired, subject, protects, interval) in devices {
        let engine = core.registry.engine_id(&id);
        let entry = DeviceRef {
            engine,
            kind: if kind == "victim_phone" {
                DeviceKind::VictimPhone
            } else {
                DeviceKind::Bracelet
            },
            retired,
            subject: subject.map(|s| SubjectId(s as u64)),
            protects,
            report_interval_s: interval.max(1) as u32,
        };
        fetched_devices.insert(id.clone());
        core.registry.devices.insert(id, entry);
        done.devices += 1;
    }
    if all {
        let before = core.registry.devices.len();
        core.registry
            .devices
            .retain(|id, _| fetched_devices.contains(id));
        done.devices += before - core.registry.devices.len();
    } else {
        // A device that was assigned to a named subject and no longer is.
        let named: FxHashSet<u64> = scope.subjects.iter().map(|s| *s as u64).collect();
        for (id, d) in core.registry.devices.iter_mut() {
            if !fetched_devices.contains(id) && d.subject.is_some_and(|s| named.contains(&s.0)) {
                d.subject = None;
                done.devices += 1;
            }
        }
        for id in &scope.devices {
            if !fetched_devices.contains(id) && core.registry.devices.remove(id).is_some() {
                done.devices += 1;
            }
        }
    }
    Ok(done)
}

fn position(v: &Value) -> Result<(f64, f64), String> {
    match (
        v.get(0).and_then(Value::as_f64),
        v.get(1).and_then(Value::as_f64),
    ) {
        (Some(lon), Some(lat)) => Ok((lon, lat)),
        _ => Err(format!("not a [lon, lat] position: {v}")),
    }
}

fn polygon(rings: &Value) -> Result<geofence::geo::Polygon<f64>, String> {
    let rings = rings
        .as_array()
        .ok_or("a Polygon's coordinates are an array of rings")?;
    let mut out = Vec::with_capacity(rings.len());
    for ring in rings {
        let pts = ring
            .as_array()
            .ok_or("a ring is an array of positions")?
            .iter()
            .map(position)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(geofence::geo::LineString::from(pts));
    }
    let mut it = out.into_iter();
    let exterior = it.next().ok_or("a Polygon needs an exterior ring")?;
    Ok(geofence::geo::Polygon::new(exterior, it.collect()))
}

/// A `zones` row as the engine takes it.
fn zone_spec(row: ZoneRow) -> Result<ZoneSpec, String> {
    let (id, name, kind, category, geometry, radius_m, buffer_m, schedule) = row;
    let coords = &geometry["coordinates"];
    let shape = match geometry["type"].as_str() {
        Some("Polygon") => Shape::Polygon(polygon(coords)?),
        Some("MultiPolygon") => Shape::MultiPolygon(geofence::geo::MultiPolygon::new(
            coords
                .as_array()
                .ok_or("a MultiPolygon's coordinates are an array of polygons")?
                .iter()
                .map(polygon)
                .collect::<Result<_, _>>()?,
        )),
        Some("Point") => {
            let (lon, lat) = position(coords)?;
            Shape::Circle {
                centre: Position::new(lon, lat).map_err(|e| e.to_string())?,
                radius_m: radius_m.ok_or("a Point zone needs radius_m")?,
            }
        }
        other => return Err(format!("unsupported geometry type {other:?}")),
    };
    Ok(ZoneSpec {
        id: ZoneId(id as u64),
        name,
        kind: if kind == "inclusion" {
            ZoneKind::Inclusion
        } else {
            ZoneKind::Exclusion
        },
        scope: match category {
            Some(c) => ZoneScope::Category(CategoryId(c as u32)),
            None => ZoneScope::Assigned,
        },
        shape,
        buffer_m,
        schedule: match schedule {
            Some(s) => parse_schedule(&s)?,
            None => Schedule::Always,
        },
    })
}

/// `{"tz": "Asia/Almaty", "windows": [{"days": ["mon", ...], "start": "21:00", "end": "06:00"}]}`.
fn parse_schedule(v: &Value) -> Result<Schedule, String> {
    let tz = v["tz"].as_str().ok_or("a schedule needs \"tz\"")?;
    let mut windows = Vec::new();
    for w in v["windows"]
        .as_array()
        .ok_or("a schedule needs \"windows\"")?
    {
        let mut days = Vec::new();
        for d in w["days"].as_array().ok_or("a window needs \"days\"")? {
            use geofence::jiff::civil::Weekday::*;
            days.push(match d.as_str() {
                Some("mon") => Monday,
                Some("tue") => Tuesday,
                Some("wed") => Wednesday,
                Some("thu") => Thursday,
                Some("fri") => Friday,
                Some("sat") => Saturday,
                Some("sun") => Sunday,
                _ => return Err(format!("not a weekday (mon..sun): {d}")),
            });
        }
        let time = |key: &str| -> Result<Time, String> {
            let s = w[key]
                .as_str()
                .ok_or_else(|| format!("a window needs {key:?} as \"HH:MM\""))?;
            s.parse::<Time>()
                .map_err(|e| format!("{key} {s:?} is not HH:MM: {e}"))
        };
        windows.push(WeeklyWindow {
            days: Weekdays::of(days),
            start: time("start")?,
            end: time("end")?,
        });
    }
    Schedule::weekly(tz, windows).map_err(|e| e.to_string())
}

/// A `rules` row as the engine takes it.
fn rule_spec(row: RuleRow, registry: &mut Registry) -> Result<RuleSpec, String> {
    let (id, _subject, kind, zone, category, other, min_distance, max_age, schedule) = row;
    let rid = RuleId(id as u64);
    let zone = || {
        zone.map(|z| ZoneId(z as u64))
            .ok_or_else(|| format!("a {kind} rule needs zone_id"))
    };
    let spec = match kind.as_str() {
        "zone" => RuleSpec::new(rid, RuleKind::Zone(zone()?)),
        "curfew" => RuleSpec::new(rid, RuleKind::Curfew(zone()?)),
        "category" => RuleSpec::new(
            rid,
            RuleKind::Category(CategoryId(
                category.ok_or("a category rule needs category")? as u32,
            )),
        ),
        "proximity" => RuleSpec::new(
            rid,
            RuleKind::Proximity {
                device: registry.engine_id(
                    other
                        .as_deref()
                        .ok_or("a proximity rule needs other_device")?,
                ),
                min_distance_m: min_distance.ok_or("a proximity rule needs min_distance_m")?,
                max_age: SignedDuration::from_secs(i64::from(
                    max_age.ok_or("a proximity rule needs max_age_s")?,
                )),
            },
        ),
        other => return Err(format!("unknown rule kind {other:?}")),
    };
    Ok(match schedule {
        Some(s) => spec.with_schedule(parse_schedule(&s)?),
        None => spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_refuse() {
        let ok = serde_json::json!({"tz": "Asia/Almaty", "windows": [{"days": ["mon", "sun"], "start": "21:00", "end": "06:00"}]});
        assert!(matches!(parse_schedule(&ok), Ok(Schedule::Windows(_))));
        let bad_day = serde_json::json!({"tz": "Asia/Almaty", "windows": [{"days": ["xyz"], "start": "21:00", "end": "06:00"}]});
        assert!(parse_schedule(&bad_day).is_err());
        let bad_tz = serde_json::json!({"tz": "Mars/Olympus", "windows": []});
        assert!(parse_schedule(&bad_tz).is_err());
    }

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
