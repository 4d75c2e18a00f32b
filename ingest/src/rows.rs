//! The middle of a batch: from checked messages to the rows it writes.
//!
//! - Each message becomes a [`CustodyRow`] (`messages`) its records name.
//! - A fix whose (device, time) is already stored is dropped when it is the
//!   same record (a redelivery); one that disagrees is a *conflict*: both
//!   versions go to `fix_conflicts`, and the track (`fixes`) keeps the stored
//!   one, unless the stored one was clock-suspect and the new one is not
//!   (see ARCHITECTURE.md, "Conflicting records"). A fix newer than its
//!   device's newest stored fix cannot be stored; older ones are looked up in
//!   one query.
//! - Each fix gets its judged time ([`crate::clock`]); implausible jumps are
//!   flagged `suspect`.
//! - Events are marked `late` when older than one already seen.
//! - Each bracelet message makes one [`Report`] for the alert service, and
//!   clock faults and conflicts make [`Finding`]s.

use crate::check::{Checked, Refusal};
use crate::clock::Clock;
use crate::config::IngestConfig;
use crate::device_state::DevState;
use bus::{Finding, FindingKind, ObservedEvent, Report, StoredTransition};
use geofence::Position;
use protocol::Body;
use reference::DeviceKind;
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Instant;
use store::Millis;

/// A worker's devices, by protocol id.
pub(crate) type States = FxHashMap<Arc<str>, DevState>;

/// `fixes.seq` is message index * this + fix index: more than
/// `protocol::MAX_BATCH` fixes per message, so a replay can find message
/// boundaries again.
pub(crate) const SEQ_PER_MESSAGE: i32 = 2048;

/// A fix row to store.
pub(crate) struct FixRow {
    /// Index into [`Rows::names`].
    pub(crate) dev: u32,
    /// Index into [`Rows::custody`]: the message that carried it.
    pub(crate) msg: u32,
    /// Arrival order within the commit: message index * 2048 + fix index.
    pub(crate) seq: i32,
    pub(crate) time_ms: i64,
    /// The time the engine judges it at ([`crate::clock`]).
    pub(crate) judged_ms: i64,
    pub(crate) clock: Clock,
    pub(crate) fix: protocol::Fix,
    pub(crate) suspect: bool,
    /// It replaces a stored, clock-suspect version of the same instant.
    pub(crate) replaces: bool,
}

/// A version of a fix that conflicts with the one stored (or accepted
/// earlier in the batch) for the same device and time.
pub(crate) struct ConflictRow {
    pub(crate) dev: u32,
    pub(crate) msg: u32,
    pub(crate) time_ms: i64,
    pub(crate) judged_ms: Option<i64>,
    pub(crate) fix: protocol::Fix,
}

/// A device event row to store.
pub(crate) struct EventRow {
    /// Index into [`Rows::names`].
    pub(crate) dev: u32,
    /// Index into [`Rows::custody`].
    pub(crate) msg: u32,
    pub(crate) event: protocol::Event,
    pub(crate) late: bool,
}

/// An accepted message, for `messages` (one per distinct digest).
pub(crate) struct CustodyRow {
    /// Index into [`Rows::names`].
    pub(crate) dev: u32,
    /// Index into the checked messages (its [`crate::check::Custody`]).
    pub(crate) message: usize,
}

/// A finding to store in `device_findings`.
pub(crate) struct FindingRow {
    pub(crate) dev: u32,
    pub(crate) msg: u32,
    pub(crate) kind: FindingKind,
    pub(crate) at_ms: i64,
    pub(crate) detail: String,
}

/// The fixes of one message, to judge together.
pub(crate) struct MessageFixes {
    /// Index into the checked messages.
    pub(crate) message: usize,
    /// Its rows: `Rows::fixes[first..end]`.
    pub(crate) first: usize,
    pub(crate) end: usize,
}

/// Everything one batch writes, and what it tells the alert service.
#[derive(Default)]
pub(crate) struct Rows {
    pub(crate) fixes: Vec<FixRow>,
    pub(crate) custody: Vec<CustodyRow>,
    pub(crate) conflicts: Vec<ConflictRow>,
    pub(crate) findings: Vec<FindingRow>,
    /// Findings about subjects' bracelets, for the alert service.
    pub(crate) bus_findings: Vec<Finding>,
    /// The batch's distinct devices; rows refer to them by index.
    pub(crate) names: Vec<Arc<str>>,
    pub(crate) events: Vec<EventRow>,
    pub(crate) refused: Vec<Refusal>,
    pub(crate) transitions: Vec<StoredTransition>,
    pub(crate) states: Vec<(u32, DevState)>,
    /// Fix times judged live (for the lag metric).
    pub(crate) live_fix_ms: Vec<i64>,
    pub(crate) alert_events: Vec<ObservedEvent>,
    pub(crate) reports: Vec<Report>,
    /// Protected persons' phones heard from.
    pub(crate) phones: Vec<u32>,
    pub(crate) messages: Vec<MessageFixes>,
    pub(crate) heartbeats: u64,
    /// Fixes dropped as already stored or repeated within the batch.
    pub(crate) duplicates: u64,
}

impl Rows {
    /// Fixes that replace a stored version (not inserted, updated).
    pub(crate) fn replacing(&self) -> usize {
        self.fixes.iter().filter(|f| f.replaces).count()
    }
}

/// The (device, fix time) pairs that may already be stored: those not newer
/// than the device's newest stored fix (or an earlier fix of the batch).
pub(crate) fn maybe_stored(checked: &[Checked], states: &States) -> Vec<(String, i64)> {
    let mut maybe = Vec::new();
    let mut heads: FxHashMap<&str, i64> = FxHashMap::default();
    for c in checked {
        if let Body::Fixes(fixes) = &c.body {
            let name = &*c.dev.name;
            let head = heads
                .entry(name)
                .or_insert_with(|| states.get(name).map_or(i64::MIN, |s| s.head));
            for f in fixes {
                let t = f.time.as_millisecond();
                if t > *head {
                    *head = t;
                } else {
                    maybe.push((name.to_owned(), t));
                }
            }
        }
    }
    maybe
}

/// What a fix says, as stored (the columns `insert_fixes` writes): two
/// versions of one instant are the same record only if all of it agrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Content {
    lat: f64,
    lon: f64,
    accuracy_m: f32,
    speed_m_s: Option<f32>,
    heading_deg: Option<f32>,
    battery_pct: Option<i16>,
    flags: i16,
}

impl Content {
    pub(crate) fn of(f: &protocol::Fix) -> Content {
        Content {
            lat: f.lat(),
            lon: f.lon(),
            accuracy_m: f32::from(f.accuracy_m),
            speed_m_s: f.speed_m_s().map(|v| v as f32),
            heading_deg: f.heading_deg().map(|v| v as f32),
            battery_pct: f.battery_pct.map(i16::from),
            flags: i16::from(f.flags.to_byte()),
        }
    }
}

/// The stored columns of a run of fixes, column by column, for `UNNEST`
/// (`lat`, `lon`, `accuracy_m`, `speed_m_s`, `heading_deg`, `battery_pct`,
/// `flags`, in that order): the one place, with [`Content`], that says how a
/// fix is written.
pub(crate) struct FixColumns {
    lat: Vec<f64>,
    lon: Vec<f64>,
    accuracy_m: Vec<f32>,
    speed_m_s: Vec<Option<f32>>,
    heading_deg: Vec<Option<f32>>,
    battery_pct: Vec<Option<i16>>,
    flags: Vec<i16>,
}

/// A query being bound.
type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl FixColumns {
    pub(crate) fn of<'a>(fixes: impl Iterator<Item = &'a protocol::Fix>) -> FixColumns {
        let mut c = FixColumns {
            lat: Vec::new(),
            lon: Vec::new(),
            accuracy_m: Vec::new(),
            speed_m_s: Vec::new(),
            heading_deg: Vec::new(),
            battery_pct: Vec::new(),
            flags: Vec::new(),
        };
        for f in fixes.map(Content::of) {
            c.lat.push(f.lat);
            c.lon.push(f.lon);
            c.accuracy_m.push(f.accuracy_m);
            c.speed_m_s.push(f.speed_m_s);
            c.heading_deg.push(f.heading_deg);
            c.battery_pct.push(f.battery_pct);
            c.flags.push(f.flags);
        }
        c
    }

    /// Binds the seven columns, in order, as the query's next parameters.
    pub(crate) fn bind(self, q: Query<'_>) -> Query<'_> {
        q.bind(self.lat)
            .bind(self.lon)
            .bind(self.accuracy_m)
            .bind(self.speed_m_s)
            .bind(self.heading_deg)
            .bind(self.battery_pct)
            .bind(self.flags)
    }
}

/// A stored version of a fix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prior {
    pub(crate) content: Content,
    /// It was judged at another time than its own (its clock was suspect).
    pub(crate) clock_suspect: bool,
}

/// Fixes already stored, by device then time: looked up by `&str`, so
/// checking a fix allocates nothing.
pub(crate) type StoredFixes = FxHashMap<String, FxHashMap<i64, Prior>>;

/// A stored fix, read back for comparison.
#[derive(sqlx::FromRow)]
struct PriorRow {
    device_id: String,
    fix_time: Millis,
    lat: f64,
    lon: f64,
    accuracy_m: f32,
    speed_m_s: Option<f32>,
    heading_deg: Option<f32>,
    battery_pct: Option<i16>,
    flags: i16,
    clock_suspect: bool,
}

/// The stored versions of those of `keys` that are in `fixes`.
pub(crate) async fn stored_among(
    pool: &PgPool,
    keys: &[(String, i64)],
) -> Result<StoredFixes, sqlx::Error> {
    let devs: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
    let times: Vec<Millis> = keys.iter().map(|k| Millis(k.1)).collect();
    let rows: Vec<PriorRow> = sqlx::query_as(
        "SELECT f.device_id, f.fix_time, f.lat, f.lon, f.accuracy_m, f.speed_m_s, f.heading_deg, \
                f.battery_pct, f.flags, f.judged_at IS NOT NULL AS clock_suspect \
         FROM UNNEST($1::text[], $2::timestamptz[]) AS u(d, t) \
         JOIN fixes f ON f.device_id = u.d AND f.fix_time = u.t",
    )
    .bind(&devs)
    .bind(&times)
    .fetch_all(pool)
    .await?;
    let mut stored = StoredFixes::default();
    for r in rows {
        let prior = Prior {
            content: Content {
                lat: r.lat,
                lon: r.lon,
                accuracy_m: r.accuracy_m,
                speed_m_s: r.speed_m_s,
                heading_deg: r.heading_deg,
                battery_pct: r.battery_pct,
                flags: r.flags,
            },
            clock_suspect: r.clock_suspect,
        };
        stored
            .entry(r.device_id)
            .or_default()
            .insert(r.fix_time.0, prior);
    }
    Ok(stored)
}

/// A message's key in `messages`: its digest and topic.
pub(crate) type MessageKey = ([u8; 32], String);

/// The keys of the `repeat` messages of `checked` (DUP or retained) that are
/// already in `messages`: handled before, so not handled again.
pub(crate) async fn handled_before(
    pool: &PgPool,
    checked: &[Checked],
) -> Result<FxHashSet<MessageKey>, sqlx::Error> {
    let repeats: Vec<&Checked> = checked.iter().filter(|c| c.custody.repeat).collect();
    if repeats.is_empty() {
        return Ok(FxHashSet::default());
    }
    let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(
        "SELECT m.sha256, m.topic FROM UNNEST($1::bytea[], $2::text[]) AS u(d, t) \
         JOIN messages m ON m.sha256 = u.d AND m.topic = u.t",
    )
    .bind(
        repeats
            .iter()
            .map(|c| &c.custody.sha256[..])
            .collect::<Vec<_>>(),
    )
    .bind(
        repeats
            .iter()
            .map(|c| c.custody.stored_topic())
            .collect::<Vec<_>>(),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(d, t)| Some((<[u8; 32]>::try_from(d).ok()?, t)))
        .collect())
}

/// Builds the rows of `checked`, updating each device's state.
pub(crate) fn build(
    checked: &[Checked],
    states: &mut States,
    stored: &StoredFixes,
    cfg: &IngestConfig,
    refused: Vec<Refusal>,
) -> Rows {
    let mut rows = Rows {
        refused,
        ..Rows::default()
    };
    let mut b = Builder {
        stored,
        max_speed_m_s: cfg.max_speed_kmh / 3.6,
        tolerance_ms: i64::try_from(cfg.clock_tolerance.as_millis()).unwrap_or(i64::MAX),
        in_batch: FxHashMap::default(),
        index: FxHashMap::default(),
        digests: FxHashMap::default(),
        now: Instant::now(),
    };
    for (ci, c) in checked.iter().enumerate() {
        let dev = b.device_index(&mut rows, &c.dev.name);
        let msg = b.custody_index(&mut rows, dev, ci, c);
        let st = states.entry(c.dev.name.clone()).or_default();
        st.seen = Some(b.now);
        match &c.body {
            Body::Fixes(fixes) => b.fixes(&mut rows, st, (ci, dev, msg), c, fixes),
            Body::Events(events) => events_rows(&mut rows, st, (dev, msg), c, events),
            Body::Heartbeats(hbs) => {
                rows.heartbeats += hbs.len() as u64;
                if let Some(h) = hbs.iter().max_by_key(|h| h.time) {
                    st.pending = Some(h.pending);
                }
            }
        }
        rows.reports.extend(report(c));
        if c.dev.kind == DeviceKind::VictimPhone
            && !c.dev.protected.is_empty()
            && let Ok(id) = u32::try_from(c.dev.engine.0)
        {
            rows.phones.push(id);
        }
    }
    for (i, d) in rows.names.iter().enumerate() {
        if let Some(s) = states.get(d) {
            rows.states.push((i as u32, *s));
        }
    }
    rows
}

/// The batch-wide bookkeeping of [`build`].
struct Builder<'a> {
    stored: &'a StoredFixes,
    max_speed_m_s: f64,
    tolerance_ms: i64,
    /// Fixes accepted in this batch, by (device index, time).
    in_batch: FxHashMap<(u32, i64), Prior>,
    index: FxHashMap<Arc<str>, u32>,
    /// Custody rows by digest and topic: one per distinct message.
    digests: FxHashMap<([u8; 32], &'a str), u32>,
    now: Instant,
}

/// Where a fix stands against what is stored for its instant.
enum Standing {
    /// Nothing stored: a new fix.
    New,
    /// The same record again: dropped.
    Same,
    /// A different record; `true` if it takes the stored one's place.
    Conflict(bool),
}

impl<'a> Builder<'a> {
    fn device_index(&mut self, rows: &mut Rows, name: &Arc<str>) -> u32 {
        *self.index.entry(name.clone()).or_insert_with(|| {
            rows.names.push(name.clone());
            (rows.names.len() - 1) as u32
        })
    }

    fn custody_index(&mut self, rows: &mut Rows, dev: u32, ci: usize, c: &'a Checked) -> u32 {
        let key = (c.custody.sha256, c.custody.stored_topic());
        *self.digests.entry(key).or_insert_with(|| {
            rows.custody.push(CustodyRow { dev, message: ci });
            (rows.custody.len() - 1) as u32
        })
    }

    /// `f` (trusted clock or not) against the stored or earlier-in-batch
    /// version of its instant. The track keeps the first version, unless
    /// that one's clock was suspect and this one's is not.
    fn standing(&self, name: &str, dev: u32, t: i64, f: &protocol::Fix, trusted: bool) -> Standing {
        // An earlier version in this batch is already a row: it stays.
        if let Some(p) = self.in_batch.get(&(dev, t)) {
            return if p.content == Content::of(f) {
                Standing::Same
            } else {
                Standing::Conflict(false)
            };
        }
        match self.stored.get(name).and_then(|times| times.get(&t)) {
            None => Standing::New,
            Some(p) if p.content == Content::of(f) => Standing::Same,
            Some(p) => Standing::Conflict(p.clock_suspect && trusted),
        }
    }

    /// One message's fixes: duplicates dropped, conflicts kept aside, clocks
    /// judged, jumps flagged.
    fn fixes(
        &mut self,
        rows: &mut Rows,
        st: &mut DevState,
        (ci, dev, msg): (usize, u32, u32),
        c: &Checked,
        fixes: &[protocol::Fix],
    ) {
        let first = rows.fixes.len();
        let mut found = Found::default();
        for (k, f) in fixes.iter().enumerate() {
            let t = f.time.as_millisecond();
            // Judged against the timeline only once known to be new: a
            // redelivery must not move it.
            let mut timeline = st.timeline;
            let (clock, judged_ms) = timeline.judge(t, c.custody.arrival_ms, self.tolerance_ms);
            let trusted = clock == Clock::Trusted;
            let replaces = match self.standing(&c.dev.name, dev, t, f, trusted) {
                Standing::Same => {
                    rows.duplicates += 1;
                    continue;
                }
                Standing::New => false,
                Standing::Conflict(wins) => {
                    rows.conflicts.push(ConflictRow {
                        dev,
                        msg,
                        time_ms: t,
                        judged_ms: (!trusted).then_some(judged_ms),
                        fix: *f,
                    });
                    found.conflict.get_or_insert(t);
                    if !wins {
                        continue;
                    }
                    true
                }
            };
            st.timeline = timeline;
            if !trusted && !st.clock_faulty {
                found.clock.get_or_insert((clock, t, judged_ms));
            }
            st.clock_faulty = !trusted;
            let content = Content::of(f);
            let prior = Prior {
                content,
                clock_suspect: !trusted,
            };
            self.in_batch.insert((dev, t), prior);
            let suspect = self.jump_or_vague(st, f, judged_ms, trusted);
            st.head = st.head.max(t);
            rows.fixes.push(FixRow {
                dev,
                msg,
                seq: (ci as i32).saturating_mul(SEQ_PER_MESSAGE) + k as i32,
                time_ms: t,
                judged_ms,
                clock,
                fix: *f,
                suspect,
                replaces,
            });
        }
        found.record(rows, c, (dev, msg));
        rows.messages.push(MessageFixes {
            message: ci,
            first,
            end: rows.fixes.len(),
        });
    }

    /// Whether `f` is suspect: an implausible jump from the last good fix (by
    /// judged times), or an accuracy the engine refuses. A good one becomes
    /// the reference, unless its clock is suspect: a speed needs a true time
    /// (a forged or glitched fix must not make the genuine ones look like
    /// jumps).
    fn jump_or_vague(
        &self,
        st: &mut DevState,
        f: &protocol::Fix,
        judged_ms: i64,
        clock_trusted: bool,
    ) -> bool {
        // protocol bounds coordinates, so `pos` is always Some; a fix
        // without one would be stored but never judged.
        let pos = Position::new(f.lon(), f.lat()).ok();
        let jump = match (st.good, pos) {
            (Some((p, gt)), Some(pos)) => {
                let dt = (judged_ms - gt).abs().max(1) as f64 / 1000.0;
                p.distance_m(pos) / dt > self.max_speed_m_s
            }
            _ => false,
        };
        // An accuracy radius the engine refuses: evidence, not a location.
        let vague = f64::from(f.accuracy_m) > geofence::MAX_ACCURACY_M;
        let suspect = jump || vague || pos.is_none();
        if let (false, true, Some(pos)) = (suspect, clock_trusted, pos) {
            st.good = Some((pos, judged_ms));
        }
        suspect
    }
}

/// What one message's fixes showed about its device: the first fix whose
/// clock turned suspect (verdict, time, judged time) and the first
/// conflicting fix time.
#[derive(Default)]
struct Found {
    clock: Option<(Clock, i64, i64)>,
    conflict: Option<i64>,
}

impl Found {
    /// One finding of each kind found.
    fn record(self, rows: &mut Rows, c: &Checked, at: (u32, u32)) {
        if let Some((clock, t, judged)) = self.clock {
            let (kind, detail) = match clock {
                Clock::Ahead => (
                    FindingKind::ClockAhead,
                    format!(
                        "a fix dated {} s after its arrival",
                        (t - c.custody.arrival_ms) / 1000
                    ),
                ),
                _ => (
                    FindingKind::ClockBehind,
                    format!(
                        "a fix dated {} s behind, its clock jumped back",
                        (judged - t) / 1000
                    ),
                ),
            };
            finding(rows, c, at, kind, t, detail);
        }
        if let Some(t) = self.conflict {
            let detail =
                "a fix disagreeing with the one stored for the same device and time".to_owned();
            finding(rows, c, at, FindingKind::ConflictingFix, t, detail);
        }
    }
}

/// Records a finding about the device of `c` (stored; a subject's bracelet's
/// also goes to the alert service).
fn finding(
    rows: &mut Rows,
    c: &Checked,
    (dev, msg): (u32, u32),
    kind: FindingKind,
    at_ms: i64,
    detail: String,
) {
    tracing::warn!(device = %c.dev.name, finding = kind.as_str(), %detail, "device record finding");
    rows.findings.push(FindingRow {
        dev,
        msg,
        kind,
        at_ms,
        detail,
    });
    if let (DeviceKind::Bracelet, Some(subject)) = (c.dev.kind, c.dev.subject) {
        rows.bus_findings.push(Finding {
            subject: subject.0,
            device: c.dev.name.to_string(),
            kind,
            at_ms,
        });
    }
}

/// One message's events; a bracelet's also go to the alert service.
fn events_rows(
    rows: &mut Rows,
    st: &mut DevState,
    (dev, msg): (u32, u32),
    c: &Checked,
    events: &[protocol::Event],
) {
    for e in events {
        let t = e.time.as_millisecond();
        let late = t < st.event_head;
        st.event_head = st.event_head.max(t);
        rows.events.push(EventRow {
            dev,
            msg,
            event: *e,
            late,
        });
        if let (DeviceKind::Bracelet, Some(subject)) = (c.dev.kind, c.dev.subject) {
            rows.alert_events.push(ObservedEvent {
                subject: subject.0,
                device: c.dev.name.to_string(),
                kind: e.kind,
                at_ms: t,
                late,
            });
        }
    }
}

/// The report of a subject's bracelet message (silence, location failure).
fn report(c: &Checked) -> Option<Report> {
    let (DeviceKind::Bracelet, Some(subject)) = (c.dev.kind, c.dev.subject) else {
        return None;
    };
    Some(Report {
        // An id the silence wheel cannot index is not watched either.
        device: u32::try_from(c.dev.engine.0).ok()?,
        name: c.dev.name.clone(),
        subject: subject.0,
        time_ms: c.newest_ms,
        fix: matches!(c.body, Body::Fixes(_)),
        motion: matches!(&c.body, Body::Heartbeats(v) if v.iter().any(|h| h.flags.motion)),
    })
}
