//! The evidence around the fixes, written in the batch's transaction:
//! - `messages`: each accepted message's SHA-256, topic, arrival and format
//!   (chain of custody); fixes and events name it by `message_id`;
//! - `fix_conflicts`: both versions of an instant whose records disagree,
//!   and the replacement of a clock-suspect version in the track;
//! - `device_findings`: clock faults and conflicts, for the officer.

use crate::check::Checked;
use crate::rows::{FixColumns, Rows};
use sqlx::PgConnection;
use store::Millis;

/// `judged_at` as stored: NULL when the fix was judged at its own time.
pub(crate) fn judged_at(time_ms: i64, judged_ms: i64) -> Option<Millis> {
    (judged_ms != time_ms).then_some(Millis(judged_ms))
}

/// Stores the batch's messages (a copy already stored keeps its row) and
/// returns their ids, by custody row.
pub(crate) async fn insert_messages(
    tx: &mut PgConnection,
    rows: &Rows,
    checked: &[Checked],
) -> Result<Vec<i64>, sqlx::Error> {
    if rows.custody.is_empty() {
        return Ok(Vec::new());
    }
    let c: Vec<&crate::check::Custody> = rows
        .custody
        .iter()
        .map(|r| &checked[r.message].custody)
        .collect();
    let tracker = |get: fn(&protocol::Tracker) -> &Option<String>| {
        c.iter()
            .map(|m| m.tracker.as_ref().and_then(|t| get(t).as_deref()))
            .collect::<Vec<Option<&str>>>()
    };
    // DO UPDATE (a no-op) so that a stored copy's id comes back too; (digest,
    // topic) pairs are distinct within the batch (rows::Builder::custody_index).
    let got: Vec<(i64, Vec<u8>, String)> = sqlx::query_as(
        "INSERT INTO messages (sha256, received_at, topic, device_id, format, bytes, tid, trigger) \
         SELECT * FROM UNNEST($1::bytea[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::int4[], \
                              $7::text[], $8::text[]) \
         ON CONFLICT (sha256, topic) DO UPDATE SET sha256 = EXCLUDED.sha256 \
         RETURNING id, sha256, topic",
    )
    .bind(c.iter().map(|m| &m.sha256[..]).collect::<Vec<&[u8]>>())
    .bind(c.iter().map(|m| Millis(m.arrival_ms)).collect::<Vec<_>>())
    .bind(c.iter().map(|m| m.stored_topic()).collect::<Vec<_>>())
    .bind(
        rows.custody
            .iter()
            .map(|r| &*rows.names[r.dev as usize])
            .collect::<Vec<&str>>(),
    )
    .bind(c.iter().map(|m| m.format.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|m| m.bytes).collect::<Vec<_>>())
    .bind(tracker(|t| &t.tid))
    .bind(tracker(|t| &t.trigger))
    .fetch_all(&mut *tx)
    .await?;
    let by_key: rustc_hash::FxHashMap<(&[u8], &str), i64> = got
        .iter()
        .map(|(id, d, t)| ((&d[..], t.as_str()), *id))
        .collect();
    c.iter()
        .map(|m| {
            let key = (&m.sha256[..], m.stored_topic());
            by_key.get(&key).copied().ok_or_else(|| {
                sqlx::Error::Protocol("a stored message's id did not come back".into())
            })
        })
        .collect()
}

/// Keeps both versions of every conflicting instant in `fix_conflicts`: the
/// one in the track now, then the batch's. Returns how many of the batch's
/// were new (a message sent again adds none).
pub(crate) async fn keep_conflicts(
    tx: &mut PgConnection,
    rows: &Rows,
    ids: &[i64],
) -> Result<u64, sqlx::Error> {
    let c = &rows.conflicts;
    if c.is_empty() {
        return Ok(0);
    }
    let devs: Vec<&str> = c.iter().map(|r| &*rows.names[r.dev as usize]).collect();
    let times: Vec<Millis> = c.iter().map(|r| Millis(r.time_ms)).collect();
    sqlx::query(
        "INSERT INTO fix_conflicts (device_id, fix_time, message_id, lat, lon, accuracy_m, speed_m_s, heading_deg, \
                                    battery_pct, flags, judged_at) \
         SELECT f.device_id, f.fix_time, coalesce(f.message_id, 0), f.lat, f.lon, f.accuracy_m, f.speed_m_s, \
                f.heading_deg, f.battery_pct, f.flags, f.judged_at \
         FROM fixes f JOIN UNNEST($1::text[], $2::timestamptz[]) AS u(d, t) ON f.device_id = u.d AND f.fix_time = u.t \
         ON CONFLICT DO NOTHING",
    )
    .bind(&devs)
    .bind(&times)
    .execute(&mut *tx)
    .await?;
    let q = sqlx::query(
        "INSERT INTO fix_conflicts (device_id, fix_time, message_id, lat, lon, accuracy_m, speed_m_s, heading_deg, \
                                    battery_pct, flags, judged_at) \
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::int8[], $4::float8[], $5::float8[], $6::float4[], \
                              $7::float4[], $8::float4[], $9::int2[], $10::int2[], $11::timestamptz[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&devs)
    .bind(&times)
    .bind(c.iter().map(|r| ids[r.msg as usize]).collect::<Vec<_>>());
    let new = FixColumns::of(c.iter().map(|r| &r.fix))
        .bind(q)
        .bind(
            c.iter()
                .map(|r| r.judged_ms.map(Millis))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    Ok(new.rows_affected())
}

/// Puts the batch's trusted version in the track in place of a stored
/// clock-suspect one (both are in `fix_conflicts` already).
pub(crate) async fn replace_fixes(
    tx: &mut PgConnection,
    rows: &Rows,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    let f: Vec<&crate::rows::FixRow> = rows.fixes.iter().filter(|r| r.replaces).collect();
    if f.is_empty() {
        return Ok(());
    }
    let q = sqlx::query(
        "UPDATE fixes SET lat = u.la, lon = u.lo, accuracy_m = u.acc, speed_m_s = u.sp, heading_deg = u.hd, \
                battery_pct = u.bat, flags = u.fl, suspect = u.sus, message_id = u.m, judged_at = NULL, \
                received_at = now(), seq = u.seq \
         FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::float8[], $5::float4[], $6::float4[], \
                     $7::float4[], $8::int2[], $9::int2[], $10::bool[], $11::int8[], $12::int4[]) \
              AS u(d, t, la, lo, acc, sp, hd, bat, fl, sus, m, seq) \
         WHERE fixes.device_id = u.d AND fixes.fix_time = u.t",
    )
    .bind(f.iter().map(|r| &*rows.names[r.dev as usize]).collect::<Vec<&str>>())
    .bind(f.iter().map(|r| Millis(r.time_ms)).collect::<Vec<_>>());
    FixColumns::of(f.iter().map(|r| &r.fix))
        .bind(q)
        .bind(f.iter().map(|r| r.suspect).collect::<Vec<_>>())
        .bind(f.iter().map(|r| ids[r.msg as usize]).collect::<Vec<_>>())
        .bind(f.iter().map(|r| r.seq).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Stores the batch's findings (one per device, kind and time).
pub(crate) async fn insert_findings(
    tx: &mut PgConnection,
    rows: &Rows,
    ids: &[i64],
) -> Result<(), sqlx::Error> {
    let f = &rows.findings;
    if f.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO device_findings (device_id, kind, at, message_id, detail) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::int8[], $5::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(
        f.iter()
            .map(|r| &*rows.names[r.dev as usize])
            .collect::<Vec<&str>>(),
    )
    .bind(f.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
    .bind(f.iter().map(|r| Millis(r.at_ms)).collect::<Vec<_>>())
    .bind(f.iter().map(|r| ids[r.msg as usize]).collect::<Vec<_>>())
    .bind(f.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}
