//! `emtrack import-world DIR`: loads the `zones.geojson` and `world.json`
//! that `device-sim world` exports (officers, zones, subjects, devices,
//! assignments, victims, rules) in one transaction. Rows are upserted by id,
//! so importing the same world twice changes nothing, and unchanged zones
//! are left untouched (no NOTIFY, no engine work).

use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::fmt;
use std::path::Path;

/// Why a world could not be imported.
#[derive(Debug)]
pub enum ImportError {
    /// A file could not be read.
    Read(String, std::io::Error),
    /// A file is not the expected JSON.
    Format(String),
    /// The database refused the data.
    Db(sqlx::Error),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Read(p, e) => write!(f, "cannot read {p}: {e}"),
            ImportError::Format(m) => write!(f, "not a device-sim world export: {m}"),
            ImportError::Db(e) => write!(f, "the database refused the world: {e}"),
        }
    }
}

impl std::error::Error for ImportError {}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> ImportError {
        ImportError::Db(e)
    }
}

/// Rows imported, by table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Officers, supervisors, duty desk.
    pub officers: usize,
    /// Zones.
    pub zones: usize,
    /// Subjects.
    pub subjects: usize,
    /// Devices.
    pub devices: usize,
    /// Assignments.
    pub assignments: usize,
    /// Rules.
    pub rules: usize,
    /// Victims.
    pub victims: usize,
}

type Tx = Transaction<'static, Postgres>;

/// Imports the world in `dir`.
pub async fn import(pool: &PgPool, dir: &Path) -> Result<Imported, ImportError> {
    let zones = read(dir, "zones.geojson")?;
    let world = read(dir, "world.json")?;
    let mut tx = pool.begin().await?;
    let n = Imported {
        officers: officers(&mut tx, &world).await?,
        zones: import_zones(&mut tx, &zones).await?,
        subjects: subjects(&mut tx, &world).await?,
        devices: devices(&mut tx, &world).await?,
        assignments: assignments(&mut tx, &world).await?,
        victims: victims(&mut tx, &world).await?,
        rules: rules(&mut tx, &world).await?,
    };
    tx.commit().await?;
    Ok(n)
}

fn read(dir: &Path, name: &str) -> Result<Value, ImportError> {
    let path = dir.join(name);
    let p = path.display().to_string();
    let bytes = std::fs::read(&path).map_err(|e| ImportError::Read(p.clone(), e))?;
    serde_json::from_slice(&bytes).map_err(|e| ImportError::Format(format!("{p}: {e}")))
}

fn arr<'a>(v: &'a Value, key: &str) -> Result<&'a Vec<Value>, ImportError> {
    v[key]
        .as_array()
        .ok_or_else(|| ImportError::Format(format!("missing array {key:?}")))
}

fn int(v: &Value, key: &str) -> Result<i64, ImportError> {
    v[key]
        .as_i64()
        .ok_or_else(|| ImportError::Format(format!("missing integer {key:?} in {v}")))
}

fn text(v: &Value, key: &str) -> Result<String, ImportError> {
    v[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ImportError::Format(format!("missing string {key:?} in {v}")))
}

/// Officers first without supervisors, then the supervisor links.
async fn officers(tx: &mut Tx, world: &Value) -> Result<usize, ImportError> {
    let (mut ids, mut names, mut roles, mut sups) = (vec![], vec![], vec![], vec![]);
    for o in arr(world, "officers")? {
        ids.push(int(o, "id")?);
        names.push(text(o, "name")?);
        roles.push(text(o, "role")?);
        sups.push(o["supervisor"].as_i64());
    }
    sqlx::query(
        "INSERT INTO officers (id, name, role) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[]) \
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&roles)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE officers o SET supervisor_id = u.sup FROM UNNEST($1::bigint[], $2::bigint[]) AS u(id, sup) WHERE o.id = u.id",
    )
    .bind(&ids)
    .bind(&sups)
    .execute(&mut **tx)
    .await?;
    Ok(ids.len())
}

/// Zones from the GeoJSON features; a zone whose row would not change is
/// not written (its trigger would make every emtrack reload it).
async fn import_zones(tx: &mut Tx, doc: &Value) -> Result<usize, ImportError> {
    let (mut ids, mut names, mut kinds, mut cats, mut geoms, mut radii, mut buffers) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for f in arr(doc, "features")? {
        let p = &f["properties"];
        ids.push(int(p, "id")?);
        names.push(text(p, "name")?);
        kinds.push(text(p, "kind")?);
        cats.push(p["category"].as_i64().map(|c| c as i32));
        geoms.push(f["geometry"].clone());
        radii.push(p["radius_m"].as_f64());
        buffers.push(p["buffer_m"].as_f64().unwrap_or(0.0));
    }
    sqlx::query(
        "INSERT INTO zones (id, name, kind, category, geometry, radius_m, buffer_m) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::int[], $5::jsonb[], $6::float8[], $7::float8[]) \
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind, category = EXCLUDED.category, \
         geometry = EXCLUDED.geometry, radius_m = EXCLUDED.radius_m, buffer_m = EXCLUDED.buffer_m, updated_at = now() \
         WHERE (zones.name, zones.kind, zones.category, zones.geometry, zones.radius_m, zones.buffer_m) \
           IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.kind, EXCLUDED.category, EXCLUDED.geometry, EXCLUDED.radius_m, EXCLUDED.buffer_m)",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&kinds)
    .bind(&cats)
    .bind(&geoms)
    .bind(&radii)
    .bind(&buffers)
    .execute(&mut **tx)
    .await?;
    Ok(ids.len())
}

async fn subjects(tx: &mut Tx, world: &Value) -> Result<usize, ImportError> {
    let (mut ids, mut refs, mut offs) = (vec![], vec![], vec![]);
    for s in arr(world, "subjects")? {
        ids.push(int(s, "id")?);
        refs.push(text(s, "reference")?);
        offs.push(s["officer"].as_i64());
    }
    sqlx::query(
        "INSERT INTO subjects (id, reference, officer_id) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) \
         ON CONFLICT (id) DO UPDATE SET reference = EXCLUDED.reference, officer_id = EXCLUDED.officer_id",
    )
    .bind(&ids)
    .bind(&refs)
    .bind(&offs)
    .execute(&mut **tx)
    .await?;
    Ok(ids.len())
}

async fn devices(tx: &mut Tx, world: &Value) -> Result<usize, ImportError> {
    let (mut ids, mut kinds, mut formats, mut intervals) = (vec![], vec![], vec![], vec![]);
    for d in arr(world, "devices")? {
        ids.push(text(d, "id")?);
        kinds.push(text(d, "kind")?);
        formats.push(text(d, "format")?);
        intervals.push(int(d, "report_interval_s")? as i32);
    }
    sqlx::query(
        "INSERT INTO devices (id, kind, format, report_interval_s) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[]) \
         ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, format = EXCLUDED.format, report_interval_s = EXCLUDED.report_interval_s",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&formats)
    .bind(&intervals)
    .execute(&mut **tx)
    .await?;
    Ok(ids.len())
}

async fn assignments(tx: &mut Tx, world: &Value) -> Result<usize, ImportError> {
    let (mut devs, mut subs) = (vec![], vec![]);
    for a in arr(world, "assignments")? {
        devs.push(text(a, "device")?);
        subs.push(int(a, "subject")?);
    }
    sqlx::query(
        "INSERT INTO assignments (device_id, subject_id) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
         ON CONFLICT (device_id, valid_from) DO UPDATE SET subject_id = EXCLUDED.subject_id",
    )
    .bind(&devs)
    .bind(&subs)
    .execute(&mut **tx)
    .await?;
    Ok(devs.len())
}

async fn victims(tx: &mut Tx, world: &Value) -> Result<usize, ImportError> {
    let (mut ids, mut devs, mut prot, mut homes) = (vec![], vec![], vec![], vec![]);
    for v in arr(world, "victims")? {
        ids.push(int(v, "id")?);
        devs.push(text(v, "device")?);
        prot.push(int(v, "protected_from")?);
        homes.push(v["home_zone"].as_i64());
    }
    sqlx::query(
        "INSERT INTO victims (id, device_id, protected_from, home_zone_id) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) \
         ON CONFLICT (id) DO UPDATE SET device_id = EXCLUDED.device_id, protected_from = EXCLUDED.protected_from, home_zone_id = EXCLUDED.home_zone_id",
    )
    .bind(&ids)
    .bind(&devs)
    .bind(&prot)
    .bind(&homes)
    .execute(&mut **tx)
    .await?;
    Ok(ids.len())
}

/// The `rules` columns, one vector each (bound as arrays).
#[derive(Default)]
struct RuleColumns {
    ids: Vec<i64>,
    subjects: Vec<i64>,
    kinds: Vec<String>,
    zones: Vec<Option<i64>>,
    categories: Vec<Option<i32>>,
    others: Vec<Option<String>>,
    distances: Vec<Option<f64>>,
    ages: Vec<Option<i32>>,
    schedules: Vec<Option<Value>>,
}

impl RuleColumns {
    /// One rule of `subject`. A curfew's nightly window becomes a weekly
    /// schedule in the world's time zone.
    fn push(&mut self, subject: i64, r: &Value, tz: &str) -> Result<(), ImportError> {
        let kind = text(r, "kind")?;
        self.ids.push(int(r, "id")?);
        self.subjects.push(subject);
        self.zones.push(r["zone"].as_i64());
        self.categories
            .push(r["category"].as_i64().map(|c| c as i32));
        self.others.push(r["device"].as_str().map(str::to_owned));
        self.distances.push(r["min_distance_m"].as_f64());
        self.ages.push(r["max_age_s"].as_i64().map(|a| a as i32));
        self.schedules.push((kind == "curfew").then(|| {
            serde_json::json!({
                "tz": tz,
                "windows": [{
                    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "start": r["start"],
                    "end": r["end"],
                }],
            })
        }));
        self.kinds.push(kind);
        Ok(())
    }
}

async fn rules(tx: &mut Tx, world: &Value) -> Result<usize, ImportError> {
    let tz = text(world, "time_zone")?;
    let mut c = RuleColumns::default();
    for s in arr(world, "subjects")? {
        let subject = int(s, "id")?;
        for r in arr(s, "rules")? {
            c.push(subject, r, &tz)?;
        }
    }
    sqlx::query(
        "INSERT INTO rules (id, subject_id, kind, zone_id, category, other_device, min_distance_m, max_age_s, schedule) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::int[], $6::text[], $7::float8[], $8::int[], $9::jsonb[]) \
         ON CONFLICT (id) DO UPDATE SET subject_id = EXCLUDED.subject_id, kind = EXCLUDED.kind, zone_id = EXCLUDED.zone_id, \
         category = EXCLUDED.category, other_device = EXCLUDED.other_device, min_distance_m = EXCLUDED.min_distance_m, \
         max_age_s = EXCLUDED.max_age_s, schedule = EXCLUDED.schedule",
    )
    .bind(&c.ids)
    .bind(&c.subjects)
    .bind(&c.kinds)
    .bind(&c.zones)
    .bind(&c.categories)
    .bind(&c.others)
    .bind(&c.distances)
    .bind(&c.ages)
    .bind(&c.schedules)
    .execute(&mut **tx)
    .await?;
    Ok(c.ids.len())
}
