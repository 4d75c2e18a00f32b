//! Reference rows as stored, and what the engine takes from them: zone and
//! rule specs, schedules. A row the engine cannot take is an error naming
//! what is wrong with it; the caller skips the row and counts it.

use crate::registry::Registry;
use geofence::jiff::SignedDuration;
use geofence::jiff::civil::{DateTime, Time, Weekday};
use geofence::{
    CategoryId, ExceptionKind, Hysteresis, Position, RuleId, RuleKind, RuleSpec, Schedule, Shape,
    Weekdays, WeeklyWindow, ZoneId, ZoneKind, ZoneScope, ZoneSpec,
};
use serde::Deserialize;
use serde_json::Value;

/// A `zones` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ZoneRow {
    pub(crate) id: i64,
    name: String,
    kind: String,
    category: Option<i32>,
    geometry: Value,
    radius_m: Option<f64>,
    buffer_m: f64,
    schedule: Option<Value>,
}

/// A version of a zone: the current one read from `zones` with the
/// `order_versions` row that holds it (none if that record is missing), or an
/// earlier one read from `order_versions` itself.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ZoneVersionRow {
    #[sqlx(flatten)]
    pub(crate) zone: ZoneRow,
    /// `order_versions.version`: 1 for the zone as first drawn, then 2, ….
    pub(crate) version: Option<i64>,
    pub(crate) version_from: Option<store::Millis>,
}

impl ZoneRow {
    /// A zone about to be written (no id yet).
    pub(crate) fn draft(d: &crate::check::ZoneDraft) -> ZoneRow {
        ZoneRow {
            id: 0,
            name: d.name.clone(),
            kind: d.kind.clone(),
            category: None,
            geometry: d.geometry.clone(),
            radius_m: d.radius_m,
            buffer_m: d.buffer_m,
            schedule: d.schedule.clone(),
        }
    }
}

/// A `rules` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RuleRow {
    pub(crate) id: i64,
    pub(crate) subject_id: i64,
    kind: String,
    zone_id: Option<i64>,
    category: Option<i32>,
    other_device: Option<String>,
    min_distance_m: Option<f64>,
    max_age_s: Option<i32>,
    schedule: Option<Value>,
    tuning: Option<Value>,
}

/// A `devices` row with its current assignment and whether a victim carries it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeviceRow {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) retired: bool,
    pub(crate) subject_id: Option<i64>,
    pub(crate) protects: bool,
    /// The subjects it is protected from (a victim's phone).
    pub(crate) protected: Vec<i64>,
    pub(crate) report_interval_s: i32,
    pub(crate) format: String,
}

/// A `zones` row as the engine takes it.
pub(crate) fn zone_spec(row: ZoneRow) -> Result<ZoneSpec, String> {
    let kind = match row.kind.as_str() {
        "inclusion" => ZoneKind::Inclusion,
        "exclusion" => ZoneKind::Exclusion,
        other => return Err(format!("unknown zone kind {other:?}")),
    };
    Ok(ZoneSpec {
        id: ZoneId(row.id as u64),
        name: row.name,
        kind,
        scope: match row.category {
            Some(c) => ZoneScope::Category(CategoryId(c as u32)),
            None => ZoneScope::Assigned,
        },
        shape: shape(row.geometry, row.radius_m)?,
        buffer_m: row.buffer_m,
        schedule: match row.schedule {
            Some(s) => parse_schedule(&s)?,
            None => Schedule::Always,
        },
    })
}

/// A zone's GeoJSON geometry: a Polygon, a MultiPolygon, or a Point with a
/// radius (a circle).
fn shape(geometry: Value, radius_m: Option<f64>) -> Result<Shape, String> {
    let g = geojson::Geometry::from_json_value(geometry)
        .map_err(|e| format!("not a GeoJSON geometry: {e}"))?;
    match g.value {
        geojson::Value::Point(p) => {
            let [lon, lat, ..] = p[..] else {
                return Err(format!("not a [lon, lat] position: {p:?}"));
            };
            Ok(Shape::Circle {
                centre: Position::new(lon, lat).map_err(|e| e.to_string())?,
                radius_m: radius_m.ok_or("a Point zone needs radius_m")?,
            })
        }
        v @ geojson::Value::Polygon(_) => Ok(Shape::Polygon(
            v.try_into().map_err(|e| format!("bad Polygon: {e}"))?,
        )),
        v @ geojson::Value::MultiPolygon(_) => Ok(Shape::MultiPolygon(
            v.try_into().map_err(|e| format!("bad MultiPolygon: {e}"))?,
        )),
        other => Err(format!("unsupported geometry type {:?}", other.type_name())),
    }
}

/// A stored schedule: `{"tz": "Asia/Almaty", "windows": [{"days": ["mon", ...],
/// "start": "21:00", "end": "06:00"}], "exceptions": [{"kind": "suspended",
/// "start": "2026-12-24T18:00", "end": "2026-12-25T09:00"}]}`.
///
/// `exceptions` (optional) are dated one-off windows in the schedule's time
/// zone: `extra` puts it in force (an extra curfew night), `suspended` takes
/// it out (an approved absence). A key this does not know, at any level, is
/// an error, never ignored: an order the engine would silently not apply is
/// worse than one refused.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleDoc {
    tz: String,
    windows: Vec<WindowDoc>,
    #[serde(default)]
    exceptions: Vec<ExceptionDoc>,
}

/// A weekly window: days, and local start and end (`HH:MM`; an end before
/// the start runs into the next day).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowDoc {
    days: Vec<Day>,
    start: String,
    end: String,
}

#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A dated exception, from `start` to `end` (local `YYYY-MM-DDTHH:MM`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionDoc {
    kind: Exception,
    start: String,
    end: String,
}

#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Exception {
    Extra,
    Suspended,
}

/// A stored schedule (see [`ScheduleDoc`]) as the engine takes it.
pub(crate) fn parse_schedule(v: &Value) -> Result<Schedule, String> {
    let doc = ScheduleDoc::deserialize(v).map_err(|e| e.to_string())?;
    let mut windows = Vec::with_capacity(doc.windows.len());
    for (i, w) in doc.windows.iter().enumerate() {
        let time = |key: &str, s: &str| -> Result<Time, String> {
            s.parse::<Time>()
                .map_err(|e| format!("window {i}: {key} {s:?} is not HH:MM: {e}"))
        };
        windows.push(WeeklyWindow {
            days: Weekdays::of(w.days.iter().map(|d| d.weekday())),
            start: time("start", &w.start)?,
            end: time("end", &w.end)?,
        });
    }
    let mut schedule = Schedule::weekly(&doc.tz, windows).map_err(|e| e.to_string())?;
    for (i, e) in doc.exceptions.iter().enumerate() {
        let at = |key: &str, s: &str| -> Result<DateTime, String> {
            s.parse::<DateTime>().map_err(|err| {
                format!(
                    "exception {i}: {key} {s:?} is not a local date-time (YYYY-MM-DDTHH:MM): {err}"
                )
            })
        };
        let kind = match e.kind {
            Exception::Extra => ExceptionKind::Extra,
            Exception::Suspended => ExceptionKind::Suspended,
        };
        schedule = schedule
            .with_exception(kind, at("start", &e.start)?, at("end", &e.end)?)
            .map_err(|err| format!("exception {i}: {err}"))?;
    }
    Ok(schedule)
}

impl Day {
    fn weekday(self) -> Weekday {
        match self {
            Day::Mon => Weekday::Monday,
            Day::Tue => Weekday::Tuesday,
            Day::Wed => Weekday::Wednesday,
            Day::Thu => Weekday::Thursday,
            Day::Fri => Weekday::Friday,
            Day::Sat => Weekday::Saturday,
            Day::Sun => Weekday::Sunday,
        }
    }
}

/// A `rules` row as the engine takes it. A proximity rule's other device
/// gets its engine id here (assigned on first use).
pub(crate) fn rule_spec(row: RuleRow, registry: &mut Registry) -> Result<RuleSpec, String> {
    let rid = RuleId(row.id as u64);
    let kind = row.kind.as_str();
    let zone = || {
        row.zone_id
            .map(|z| ZoneId(z as u64))
            .ok_or_else(|| format!("a {kind} rule needs zone_id"))
    };
    let spec = match kind {
        "zone" => RuleSpec::new(rid, RuleKind::Zone(zone()?)),
        "curfew" => RuleSpec::new(rid, RuleKind::Curfew(zone()?)),
        "category" => RuleSpec::new(
            rid,
            RuleKind::Category(CategoryId(
                row.category.ok_or("a category rule needs category")? as u32,
            )),
        ),
        "proximity" => {
            let other = row
                .other_device
                .as_deref()
                .ok_or("a proximity rule needs other_device")?;
            RuleSpec::new(
                rid,
                RuleKind::Proximity {
                    device: registry.engine_id(other).0,
                    min_distance_m: row
                        .min_distance_m
                        .ok_or("a proximity rule needs min_distance_m")?,
                    max_age: SignedDuration::from_secs(i64::from(
                        row.max_age_s.ok_or("a proximity rule needs max_age_s")?,
                    )),
                },
            )
        }
        other => return Err(format!("unknown rule kind {other:?}")),
    };
    let spec = match &row.schedule {
        Some(s) => spec.with_schedule(parse_schedule(s)?),
        None => spec,
    };
    Ok(match &row.tuning {
        Some(t) => spec.with_hysteresis(parse_tuning(t)?),
        None => spec,
    })
}

/// A rule's tuning: how much evidence opens and closes an episode, replacing
/// the defaults of its kind. Every key is required, none other is taken.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TuningDoc {
    /// Consecutive violating fixes that open an episode (1–20).
    enter_fixes: u16,
    /// Least time from the first to the last of them, in seconds (0–3600).
    enter_span_s: u32,
    /// Consecutive compliant fixes that close it (1–20).
    exit_fixes: u16,
    /// Fixes in the first this many seconds of each in-force period count
    /// for nothing (0–3600).
    grace_s: u32,
    /// Strict mode: a fix whose accuracy disc straddles the boundary counts
    /// as violating (high-risk cases).
    strict: bool,
}

/// A stored tuning (see [`TuningDoc`]) as the engine takes it.
pub(crate) fn parse_tuning(v: &Value) -> Result<Hysteresis, String> {
    let t = TuningDoc::deserialize(v).map_err(|e| format!("tuning: {e}"))?;
    if !(1..=20).contains(&t.enter_fixes) || !(1..=20).contains(&t.exit_fixes) {
        return Err("tuning: enter_fixes and exit_fixes must be 1–20".into());
    }
    if t.enter_span_s > 3600 || t.grace_s > 3600 {
        return Err("tuning: enter_span_s and grace_s must be 0–3600".into());
    }
    Ok(Hysteresis {
        enter_fixes: t.enter_fixes,
        enter_span: SignedDuration::from_secs(i64::from(t.enter_span_s)),
        exit_fixes: t.exit_fixes,
        grace: SignedDuration::from_secs(i64::from(t.grace_s)),
        count_uncertain: t.strict,
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

    /// An approved absence and an extra curfew night reach the engine; a
    /// malformed one, or a key nobody reads, is refused.
    #[test]
    fn schedule_exceptions_are_kept_and_bad_ones_refused() {
        let curfew = |exceptions: serde_json::Value| {
            parse_schedule(&serde_json::json!({"tz": "Asia/Almaty",
                "windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "21:00", "end": "06:00"}],
                "exceptions": exceptions}))
        };
        let at = |s: &str| {
            s.parse::<geofence::jiff::Zoned>()
                .expect("time")
                .timestamp()
        };
        let s = curfew(serde_json::json!([
            {"kind": "suspended", "start": "2026-12-24T18:00", "end": "2026-12-25T09:00"},
            {"kind": "extra", "start": "2026-12-26T12:00", "end": "2026-12-26T18:00"},
        ]))
        .expect("parses");
        assert!(
            s.is_active(at("2026-12-23T23:00+05:00[Asia/Almaty]")),
            "a normal night"
        );
        assert!(
            !s.is_active(at("2026-12-24T23:00+05:00[Asia/Almaty]")),
            "the approved absence"
        );
        assert!(
            s.is_active(at("2026-12-26T13:00+05:00[Asia/Almaty]")),
            "the extra window"
        );
        assert!(
            !s.is_active(at("2026-12-27T13:00+05:00[Asia/Almaty]")),
            "not the day after"
        );
        for bad in [
            serde_json::json!([{"kind": "holiday", "start": "2026-12-24T18:00", "end": "2026-12-25T09:00"}]),
            serde_json::json!([{"kind": "extra", "start": "24/12/2026", "end": "2026-12-25T09:00"}]),
            serde_json::json!([{"kind": "extra", "start": "2026-12-25T09:00", "end": "2026-12-24T18:00"}]),
            serde_json::json!({"kind": "extra"}),
        ] {
            assert!(curfew(bad.clone()).is_err(), "{bad} is refused");
        }
        let typo = serde_json::json!({"tz": "Asia/Almaty", "windows": [], "exeptions": []});
        assert!(
            parse_schedule(&typo)
                .expect_err("a misspelt key")
                .contains("exeptions")
        );
        // At every level: a window's and an exception's keys too.
        let window = serde_json::json!({"tz": "Asia/Almaty", "windows": [
            {"days": ["mon"], "start": "21:00", "end": "06:00", "strict": true}]});
        assert!(
            parse_schedule(&window)
                .expect_err("window key")
                .contains("strict")
        );
        let exception = curfew(serde_json::json!([
            {"kind": "extra", "start": "2026-12-26T12:00", "end": "2026-12-26T18:00", "note": "x"}]));
        assert!(exception.expect_err("exception key").contains("note"));
    }

    #[test]
    fn geometries_parse_and_refuse() {
        let circle = shape(
            serde_json::json!({"type": "Point", "coordinates": [76.9, 43.2]}),
            Some(100.0),
        );
        assert!(matches!(circle, Ok(Shape::Circle { radius_m, .. }) if radius_m == 100.0));
        let square = serde_json::json!({"type": "Polygon", "coordinates":
            [[[76.0, 43.0], [76.1, 43.0], [76.1, 43.1], [76.0, 43.1], [76.0, 43.0]]]});
        assert!(matches!(shape(square, None), Ok(Shape::Polygon(_))));
        let no_radius = shape(
            serde_json::json!({"type": "Point", "coordinates": [76.9, 43.2]}),
            None,
        );
        assert_eq!(
            no_radius.err().as_deref(),
            Some("a Point zone needs radius_m")
        );
        let line = shape(
            serde_json::json!({"type": "LineString", "coordinates": [[76.0, 43.0], [76.1, 43.0]]}),
            None,
        );
        assert!(line.is_err_and(|e| e.contains("LineString")));
    }
}
