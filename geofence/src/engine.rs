//! The engine: zones, subjects with their rules, and `evaluate`.
//!
//! The engine owns every piece of decision state, so a fix is judged by
//! `Engine::evaluate(handle, fix, out)`. The handle is a dense index (O(1)
//! lookup). Transitions are appended to a caller-owned `Vec` that the caller
//! reuses, so the steady path allocates nothing.

use crate::coord::{Envelope, Position, Probe};
use crate::error::EngineError;
use crate::id::{CategoryId, DeviceId, RuleId, SubjectHandle, SubjectId, ZoneId};
use crate::index::GlobalIndex;
use crate::rule::{RuleKind, RuleSpec, Thresholds};
use crate::schedule::{Schedule, ScheduleCursor, ScheduleState};
use crate::track::{Edge, EndCause, Track, Verdict};
use crate::zone::{Presence, Zone, ZoneKind, ZoneScope, ZoneSpec, ZoneVersion, classify_signed};
use jiff::Timestamp;
use rustc_hash::{FxHashMap, FxHashSet};

/// Largest accepted accuracy radius, in metres. A fix claiming worse is not a
/// location at all; ingest should reject it before it reaches the engine.
pub const MAX_ACCURACY_M: f64 = 10_000.0;

/// One position report of a device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fix {
    /// When the device took the fix (device clock, not arrival time).
    pub time: Timestamp,
    /// Where.
    pub position: Position,
    /// Horizontal accuracy radius in metres (0 = exact).
    pub accuracy_m: f64,
    /// Flagged by ingest (implausible jump): stored as evidence, never judged.
    pub suspect: bool,
}

/// What a transition says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransitionKind {
    /// The subject entered an exclusion zone.
    ExclusionEntered,
    /// The subject left an exclusion zone (or the obligation ended).
    ExclusionLeft,
    /// The subject left an inclusion zone.
    InclusionLeft,
    /// The subject returned to an inclusion zone (or the obligation ended).
    InclusionReturned,
    /// The subject was away from home during curfew.
    CurfewViolationStarted,
    /// The curfew violation ended (back home, or the curfew ended).
    CurfewViolationEnded,
    /// The subject came within the protected distance of another device.
    ProximityEntered,
    /// The subject is again beyond the protected distance (or the rule ended).
    ProximityLeft,
}

impl TransitionKind {
    /// Every kind.
    pub const ALL: [TransitionKind; 8] = [
        TransitionKind::ExclusionEntered,
        TransitionKind::ExclusionLeft,
        TransitionKind::InclusionLeft,
        TransitionKind::InclusionReturned,
        TransitionKind::CurfewViolationStarted,
        TransitionKind::CurfewViolationEnded,
        TransitionKind::ProximityEntered,
        TransitionKind::ProximityLeft,
    ];

    /// The kind whose [`TransitionKind::as_str`] label is `name`.
    pub fn from_name(name: &str) -> Option<TransitionKind> {
        TransitionKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// A stable snake_case label, for storage and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::ExclusionEntered => "exclusion_entered",
            TransitionKind::ExclusionLeft => "exclusion_left",
            TransitionKind::InclusionLeft => "inclusion_left",
            TransitionKind::InclusionReturned => "inclusion_returned",
            TransitionKind::CurfewViolationStarted => "curfew_violation_started",
            TransitionKind::CurfewViolationEnded => "curfew_violation_ended",
            TransitionKind::ProximityEntered => "proximity_entered",
            TransitionKind::ProximityLeft => "proximity_left",
        }
    }

    /// Whether this opens a violation episode.
    pub fn is_start(self) -> bool {
        matches!(
            self,
            TransitionKind::ExclusionEntered
                | TransitionKind::InclusionLeft
                | TransitionKind::CurfewViolationStarted
                | TransitionKind::ProximityEntered
        )
    }
}

/// A violation episode opening or closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Whose episode.
    pub subject: SubjectId,
    /// Which rule.
    pub rule: RuleId,
    /// The zone involved (`None` for proximity).
    pub zone: Option<ZoneId>,
    /// The other party's device (proximity only).
    pub device: Option<DeviceId>,
    /// What happened.
    pub kind: TransitionKind,
    /// Fix time at which it happened: for a start, the first fix of the violating
    /// streak that confirmed it; for an end, the first fix of the compliant streak
    /// (or the fix at which the obligation went away).
    pub at: Timestamp,
    /// Fix time of the fix that confirmed it.
    pub confirmed_at: Timestamp,
    /// Found among late fixes (see the crate docs): a past episode, not a live one.
    pub historical: bool,
    /// Why it ended (ends only).
    pub end_cause: Option<EndCause>,
    /// The version of the zone the confirming fix was judged under
    /// ([`ZoneVersion::id`]); `None` for an unversioned zone, a proximity
    /// rule, or an end no fix was judged for (a closed run, a removed rule).
    pub zone_version: Option<u64>,
}

/// Whose fixes a message carries, for [`Engine::judge_message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A subject's own device: judged against the subject's rules.
    Subject(SubjectHandle),
    /// A watched device (a victim's phone): feeds the proximity rules that
    /// name it.
    Watched(DeviceId),
    /// Neither (a device whose subject has no rules loaded): stored, not judged.
    Unjudged,
}

/// What `evaluate` did with a fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Newer than every fix before: judged on the live state.
    Live,
    /// Older than the subject's newest fix: judged on the historical track.
    Late,
    /// Same time as the newest live fix or the current late run's newest fix.
    Duplicate,
    /// Suspect fix, or a watched device's fix older than its newest: not judged.
    Skipped,
}

#[derive(Clone, Copy, Debug)]
struct LastFix {
    pos: Position,
    accuracy_m: f64,
    t: i64,
}

/// A rule's or track's reference to a zone: the id is the truth, the slot a
/// cache that is re-resolved when the zone moved or vanished.
#[derive(Clone, Copy, Debug)]
struct ZoneRef {
    id: ZoneId,
    slot: u32,
    /// The zone's kind when last seen, so a kind change closes the old episode.
    kind: ZoneKind,
    /// The zone's buffered envelope and whether its schedule is `Always`, valid
    /// while `epoch` equals the engine's zone epoch. A fix outside the envelope is
    /// then judged `Outside` without touching the zone (one cache miss saved per
    /// far zone per fix).
    env: Envelope,
    always: bool,
    epoch: u64,
}

impl ZoneRef {
    fn of(zone: &Zone, slot: u32, epoch: u64) -> ZoneRef {
        ZoneRef {
            id: zone.id,
            slot,
            kind: zone.kind,
            env: zone.envelope,
            // A zone with earlier versions never takes the fast path: the
            // envelope is the current version's.
            always: matches!(zone.schedule, Schedule::Always) && zone.earlier.is_empty(),
            epoch,
        }
    }
}

#[derive(Default)]
struct ZoneStore {
    slots: Vec<Option<Zone>>,
    by_id: FxHashMap<ZoneId, u32>,
    free: Vec<u32>,
}

impl ZoneStore {
    fn resolve(&mut self, r: &mut ZoneRef) -> Option<&mut Zone> {
        let current = matches!(self.slots.get(r.slot as usize), Some(Some(z)) if z.id == r.id);
        if !current {
            r.slot = *self.by_id.get(&r.id)?;
        }
        self.slots.get_mut(r.slot as usize)?.as_mut()
    }

    fn get(&self, id: ZoneId) -> Option<&Zone> {
        let slot = *self.by_id.get(&id)?;
        self.slots.get(slot as usize)?.as_ref()
    }
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Zone(ZoneRef),
    Curfew(ZoneRef),
    Category(CategoryId),
    Proximity {
        device: DeviceId,
        min_distance_m: f64,
        max_age_ms: i64,
    },
}

#[derive(Clone, Debug)]
struct ZoneTrack {
    zone: ZoneRef,
    track: Track,
}

#[derive(Clone, Debug)]
enum Tracks {
    One(Track),
    /// Category rules: one track per zone with something to remember.
    PerZone(Vec<ZoneTrack>),
}

/// One rule's state. Hot fields inline; the definition and the historical
/// tracks (needed only for transitions and late fixes) sit behind boxes.
struct RuleState {
    spec: Box<RuleSpec>,
    schedule: Schedule,
    target: Target,
    th: Thresholds,
    cursor: ScheduleCursor,
    live: Tracks,
    hist: Option<Box<Hist>>,
}

/// Historical tracks of a rule, allocated at its first late fix.
struct Hist {
    tracks: Tracks,
    cursor: ScheduleCursor,
}

impl RuleState {
    fn fresh_tracks(target: &Target) -> Tracks {
        match target {
            Target::Category(_) => Tracks::PerZone(Vec::new()),
            _ => Tracks::One(Track::default()),
        }
    }

    fn schedule_state(&mut self, t: i64, historical: bool) -> ScheduleState {
        let cursor = match (historical, &mut self.hist) {
            (true, Some(h)) => &mut h.cursor,
            _ => &mut self.cursor,
        };
        self.schedule.state(t, cursor)
    }

    fn hist_mut(&mut self) -> &mut Hist {
        let target = &self.target;
        self.hist.get_or_insert_with(|| {
            Box::new(Hist {
                tracks: RuleState::fresh_tracks(target),
                cursor: ScheduleCursor::default(),
            })
        })
    }
}

struct Subject {
    id: SubjectId,
    /// Newest live fix time (`i64::MIN` before the first).
    head: i64,
    /// Newest live position, for proximity rules evaluated on the other party's fixes.
    last: Option<LastFix>,
    /// Newest fix of the current late run.
    late_head: Option<i64>,
    categories: Vec<CategoryId>,
    rules: Vec<RuleState>,
}

struct SubjectSlot {
    generation: u32,
    subject: Option<Subject>,
}

#[derive(Default)]
struct Watched {
    last: Option<LastFix>,
    watchers: Vec<(SubjectHandle, RuleId)>,
}

/// Everything one fix's evaluation reads besides the rule itself.
struct StepCx<'a> {
    subject: SubjectId,
    zone_epoch: u64,
    t: i64,
    historical: bool,
    probe: &'a Probe,
    hits: &'a [(u32, Presence)],
    own: Option<LastFix>,
    watched: &'a FxHashMap<DeviceId, Watched>,
}

/// The geofence engine. See the crate docs for the model and its semantics.
#[derive(Default)]
pub struct Engine {
    zones: ZoneStore,
    global: GlobalIndex,
    subjects: Vec<SubjectSlot>,
    free_subjects: Vec<u32>,
    subject_ids: FxHashMap<SubjectId, SubjectHandle>,
    watched: FxHashMap<DeviceId, Watched>,
    /// Bumped by every zone change; invalidates the envelopes cached in rules.
    zone_epoch: u64,
    /// Scratch: global zones near the current fix.
    hits: Vec<(u32, Presence)>,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MIN)
}

fn presence_verdict(kind: ZoneKind, p: Presence, th: &Thresholds) -> Verdict {
    match (kind, p) {
        (ZoneKind::Exclusion, Presence::Inside) | (ZoneKind::Inclusion, Presence::Outside) => {
            Verdict::Violating
        }
        (ZoneKind::Exclusion, Presence::Outside) | (ZoneKind::Inclusion, Presence::Inside) => {
            Verdict::Compliant
        }
        (_, Presence::Uncertain) if th.count_uncertain => Verdict::Violating,
        (_, Presence::Uncertain) => Verdict::Neutral,
    }
}

/// Applies the rule's and the zone's schedules and grace, then the zone test.
fn zone_verdict(
    zone: &mut Zone,
    presence: impl FnOnce(&Zone) -> Presence,
    rule_state: ScheduleState,
    t: i64,
    th: &Thresholds,
    historical: bool,
) -> Verdict {
    if !rule_state.active {
        return Verdict::Void(EndCause::ScheduleEnded);
    }
    let zone_state = if historical {
        zone.schedule.state(t, &mut ScheduleCursor::default())
    } else {
        zone.schedule.state(t, &mut zone.cursor)
    };
    if !zone_state.active {
        return Verdict::Void(EndCause::ScheduleEnded);
    }
    if in_grace(rule_state.period_start.max(zone_state.period_start), t, th) {
        return Verdict::Neutral;
    }
    presence_verdict(zone.kind, presence(zone), th)
}

fn in_grace(period_start: i64, t: i64, th: &Thresholds) -> bool {
    period_start != i64::MIN && t < period_start.saturating_add(th.grace_ms)
}

fn proximity_verdict(
    own: Option<LastFix>,
    other: Option<LastFix>,
    t: i64,
    min_distance_m: f64,
    max_age_ms: i64,
    th: &Thresholds,
) -> Verdict {
    let (Some(a), Some(b)) = (own, other) else {
        return Verdict::Neutral;
    };
    if (t - a.t).abs() > max_age_ms || (t - b.t).abs() > max_age_ms {
        return Verdict::Neutral;
    }
    // A disc of radius min_distance_m moving with the other party: an exclusion
    // zone whose accuracy is the two fixes' accuracies combined.
    let p = classify_signed(
        a.pos.distance_m(b.pos) - min_distance_m,
        a.accuracy_m + b.accuracy_m,
        0.0,
    );
    presence_verdict(ZoneKind::Exclusion, p, th)
}

#[allow(clippy::too_many_arguments)]
fn push_edge(
    out: &mut Vec<Transition>,
    subject: SubjectId,
    spec: &RuleSpec,
    zone: Option<ZoneRef>,
    edge: Edge,
    confirmed_at: i64,
    historical: bool,
    zone_version: Option<u64>,
) {
    let (started, at, end_cause) = match edge {
        Edge::Started { at } => (true, at, None),
        Edge::Ended { at, cause } => (false, at, Some(cause)),
    };
    let kind = match (&spec.kind, zone.map(|z| z.kind), started) {
        (RuleKind::Curfew(_), _, true) => TransitionKind::CurfewViolationStarted,
        (RuleKind::Curfew(_), _, false) => TransitionKind::CurfewViolationEnded,
        (RuleKind::Proximity { .. }, _, true) => TransitionKind::ProximityEntered,
        (RuleKind::Proximity { .. }, _, false) => TransitionKind::ProximityLeft,
        (_, Some(ZoneKind::Inclusion), true) => TransitionKind::InclusionLeft,
        (_, Some(ZoneKind::Inclusion), false) => TransitionKind::InclusionReturned,
        (_, _, true) => TransitionKind::ExclusionEntered,
        (_, _, false) => TransitionKind::ExclusionLeft,
    };
    let device = match spec.kind {
        RuleKind::Proximity { device, .. } => Some(device),
        _ => None,
    };
    out.push(Transition {
        subject,
        rule: spec.id,
        zone: zone.map(|z| z.id),
        device,
        kind,
        at: ts(at),
        confirmed_at: ts(confirmed_at),
        historical,
        end_cause,
        zone_version,
    });
}

/// Steps one rule with one fix (live or late).
// Over 80 lines: the hot path of every rule kind; one function keeps the
// envelope fast path, the version choice and the edge's naming together.
fn step_rule(
    rule: &mut RuleState,
    zones: &mut ZoneStore,
    cx: &StepCx<'_>,
    out: &mut Vec<Transition>,
) {
    let t = cx.t;
    if cx.historical {
        // Before the schedule lookup, so late fixes use the historical cursor and
        // leave the live one on the live segment.
        rule.hist_mut();
    }
    let sched = rule.schedule_state(t, cx.historical);
    let th = rule.th;
    match &mut rule.target {
        Target::Zone(zref) | Target::Curfew(zref) => {
            let is_curfew = matches!(rule.spec.kind, RuleKind::Curfew(_));
            let seen_kind = zref.kind;
            // The version that judged the fix, when the zone was read.
            let mut version = None;
            let mut edge_kind = seen_kind;
            let verdict = if !sched.active {
                Verdict::Void(EndCause::ScheduleEnded)
            } else if zref.epoch == cx.zone_epoch
                && zref.always
                && !zref.env.intersects(&cx.probe.env)
            {
                if in_grace(sched.period_start, t, &th) {
                    Verdict::Neutral
                } else {
                    presence_verdict(zref.kind, Presence::Outside, &th)
                }
            } else {
                match zones.resolve(zref) {
                    None => Verdict::Void(EndCause::ZoneRemoved),
                    // The zone changed kind: close the episode under the old kind first.
                    Some(zone)
                        if zone.kind != seen_kind
                            || (is_curfew && zone.kind != ZoneKind::Inclusion) =>
                    {
                        *zref = ZoneRef::of(zone, zref.slot, cx.zone_epoch);
                        Verdict::Void(EndCause::ZoneRemoved)
                    }
                    Some(zone) => {
                        *zref = ZoneRef::of(zone, zref.slot, cx.zone_epoch);
                        // The version in force at the fix's own time, whose
                        // kind also names the edge if it is an earlier one.
                        let current = zone.version;
                        let zone = zone.at(t);
                        version = zone.version;
                        if version != current {
                            edge_kind = zone.kind;
                        }
                        zone_verdict(zone, |z| z.presence(cx.probe), sched, t, &th, cx.historical)
                    }
                }
            };
            let zone_for_edge = ZoneRef {
                kind: edge_kind,
                ..*zref
            };
            let before = out.len();
            step_one(rule, cx, out, verdict, Some(zone_for_edge), version);
            // An edge from the fast path (or a void verdict): the current
            // version, read only now, off the hot path.
            if out.len() > before && version.is_none() {
                let current = zones.get(zone_for_edge.id).and_then(|z| z.version);
                for e in &mut out[before..] {
                    e.zone_version = current;
                }
            }
        }
        Target::Proximity {
            device,
            min_distance_m,
            max_age_ms,
        } => {
            let verdict = if !sched.active {
                Verdict::Void(EndCause::ScheduleEnded)
            } else if in_grace(sched.period_start, t, &th) {
                Verdict::Neutral
            } else {
                let other = cx.watched.get(device).and_then(|w| w.last);
                proximity_verdict(cx.own, other, t, *min_distance_m, *max_age_ms, &th)
            };
            step_one(rule, cx, out, verdict, None, None);
        }
        Target::Category(cat) => {
            let cat = *cat;
            step_category(rule, cat, sched, zones, cx, out);
        }
    }
}

fn step_one(
    rule: &mut RuleState,
    cx: &StepCx<'_>,
    out: &mut Vec<Transition>,
    mut verdict: Verdict,
    zone: Option<ZoneRef>,
    version: Option<u64>,
) {
    // `step_rule` created the historical tracks if this fix is late.
    let hist = rule.hist.as_deref_mut().map(|h| &mut h.tracks);
    let (Tracks::One(live), hist) = (&mut rule.live, hist) else {
        return;
    };
    let track = if let Some(Tracks::One(hist)) = hist.filter(|_| cx.historical) {
        if live.covers(cx.t) {
            verdict = Verdict::Neutral;
        }
        hist
    } else if cx.historical {
        return;
    } else {
        // A proximity rule may already have been judged at a later time on the
        // other party's fix; this fix is then too old to move the live state.
        if cx.t <= live.head {
            return;
        }
        live
    };
    if let Some(edge) = track.step(cx.t, verdict, &rule.th) {
        push_edge(
            out,
            cx.subject,
            &rule.spec,
            zone,
            edge,
            cx.t,
            cx.historical,
            version,
        );
    }
}

// Over 80 lines: the hot path of category zones; one function keeps the
// cell lookup, the per-zone streaks and the edges in one place for the compiler.
fn step_category(
    rule: &mut RuleState,
    cat: CategoryId,
    sched: ScheduleState,
    zones: &mut ZoneStore,
    cx: &StepCx<'_>,
    out: &mut Vec<Transition>,
) {
    // `step_rule` created the historical tracks if this fix is late.
    let hist = rule.hist.as_deref_mut().map(|h| &mut h.tracks);
    let (Tracks::PerZone(live), hist) = (&mut rule.live, hist) else {
        return;
    };
    let th = rule.th;
    let covered = |live: &[ZoneTrack], id: ZoneId| {
        live.iter()
            .any(|zt| zt.zone.id == id && zt.track.covers(cx.t))
    };
    let (tracks, live_ref): (&mut Vec<ZoneTrack>, &[ZoneTrack]) = match hist {
        Some(Tracks::PerZone(hist)) if cx.historical => (hist, live.as_slice()),
        _ if cx.historical => return,
        _ => (live, &[]),
    };

    // Zones already tracked: they may have been left, so judge them whatever the hits say.
    for zt in tracks.iter_mut() {
        let mut verdict = match zones.resolve(&mut zt.zone) {
            Some(zone) if zone.scope == ZoneScope::Category(cat) => {
                let slot = zt.zone.slot;
                let p = cx
                    .hits
                    .iter()
                    .find(|h| h.0 == slot)
                    .map_or(Presence::Outside, |h| h.1);
                zone_verdict(zone, |_| p, sched, cx.t, &th, cx.historical)
            }
            _ => Verdict::Void(EndCause::ZoneRemoved),
        };
        if cx.historical && covered(live_ref, zt.zone.id) {
            verdict = Verdict::Neutral;
        }
        if let Some(edge) = zt.track.step(cx.t, verdict, &th) {
            push_edge(
                out,
                cx.subject,
                &rule.spec,
                Some(zt.zone),
                edge,
                cx.t,
                cx.historical,
                zones.get(zt.zone.id).and_then(|z| z.version),
            );
        }
    }

    // Zones hit for the first time: a track starts with a violating fix.
    for &(slot, p) in cx.hits {
        if tracks.iter().any(|zt| zt.zone.slot == slot) {
            continue;
        }
        let Some(Some(zone)) = zones.slots.get_mut(slot as usize) else {
            continue;
        };
        if zone.scope != ZoneScope::Category(cat) {
            continue;
        }
        let zref = ZoneRef::of(zone, slot, cx.zone_epoch);
        let verdict = zone_verdict(zone, |_| p, sched, cx.t, &th, cx.historical);
        if verdict != Verdict::Violating || (cx.historical && covered(live_ref, zref.id)) {
            continue;
        }
        let mut zt = ZoneTrack {
            zone: zref,
            track: Track::default(),
        };
        if let Some(edge) = zt.track.step(cx.t, verdict, &th) {
            push_edge(
                out,
                cx.subject,
                &rule.spec,
                Some(zref),
                edge,
                cx.t,
                cx.historical,
                zone.version,
            );
        }
        tracks.push(zt);
    }

    // Live tracks keep their last closed episode while the zone is still near,
    // so late fixes in it are recognised as covered; idle tracks go.
    tracks.retain(|zt| !zt.track.is_idle());
}

/// Closes every historical track of a subject (end of a late run).
fn close_runs(subject: &mut Subject, out: &mut Vec<Transition>) {
    for rule in &mut subject.rules {
        let Some(hist) = rule.hist.as_deref_mut() else {
            continue;
        };
        match &mut hist.tracks {
            Tracks::One(track) => {
                if let Some(edge) = track.close(EndCause::EvidenceEnded) {
                    let zone = match rule.target {
                        Target::Zone(z) | Target::Curfew(z) => Some(z),
                        _ => None,
                    };
                    push_edge(
                        out, subject.id, &rule.spec, zone, edge, track.head, true, None,
                    );
                }
                *track = Track::default();
            }
            Tracks::PerZone(tracks) => {
                for zt in tracks.iter_mut() {
                    if let Some(edge) = zt.track.close(EndCause::EvidenceEnded) {
                        push_edge(
                            out,
                            subject.id,
                            &rule.spec,
                            Some(zt.zone),
                            edge,
                            zt.track.head,
                            true,
                            None,
                        );
                    }
                }
                tracks.clear();
            }
        }
    }
    subject.late_head = None;
}

/// Closes every open episode of a rule that is going away.
fn close_rule(
    subject: SubjectId,
    rule: &mut RuleState,
    cause: EndCause,
    out: &mut Vec<Transition>,
) {
    let zone = match rule.target {
        Target::Zone(z) | Target::Curfew(z) => Some(z),
        _ => None,
    };
    let hist = rule.hist.as_deref_mut().map(|h| &mut h.tracks);
    for (tracks, historical) in [(Some(&mut rule.live), false), (hist, true)] {
        let Some(tracks) = tracks else {
            continue;
        };
        match tracks {
            Tracks::One(track) => {
                if let Some(edge) = track.close(cause) {
                    push_edge(
                        out, subject, &rule.spec, zone, edge, track.head, historical, None,
                    );
                }
            }
            Tracks::PerZone(list) => {
                for zt in list.iter_mut() {
                    if let Some(edge) = zt.track.close(cause) {
                        push_edge(
                            out,
                            subject,
                            &rule.spec,
                            Some(zt.zone),
                            edge,
                            zt.track.head,
                            historical,
                            None,
                        );
                    }
                }
            }
        }
    }
}

impl Engine {
    /// An empty engine.
    pub fn new() -> Engine {
        Engine::default()
    }

    // ----- zones -------------------------------------------------------------

    /// Adds a zone, or replaces the zone with the same id (and any earlier
    /// versions it had). The change applies to the next fix: rules that name
    /// the zone keep their episode state.
    pub fn upsert_zone(&mut self, spec: ZoneSpec) -> Result<(), EngineError> {
        let zone = Zone::prepare(spec)?;
        self.install_zone(zone);
        Ok(())
    }

    /// Adds or replaces an assigned zone with its record of versions: the
    /// current one, in force since `version.since`, and the earlier ones
    /// still needed (those a fix that may yet arrive could fall in), each in
    /// force from its `since` until the next one's. A fix, live or late, is
    /// judged against the version in force at its own time, and its
    /// transitions name that version; a fix older than every version given is
    /// judged against the oldest. Global (category) zones keep no earlier
    /// versions: they are always judged as they are now.
    pub fn upsert_zone_versions(
        &mut self,
        spec: ZoneSpec,
        version: ZoneVersion,
        earlier: Vec<(ZoneVersion, ZoneSpec)>,
    ) -> Result<(), EngineError> {
        let id = spec.id;
        let mut zone = Zone::prepare(spec)?;
        zone.version = Some(version.id);
        zone.since = version.since.as_millisecond();
        if zone.scope == ZoneScope::Assigned {
            for (v, spec) in earlier {
                let mismatch = |why| crate::error::ZoneError::VersionMismatch { zone: id, why };
                if spec.id != id || spec.scope != ZoneScope::Assigned {
                    return Err(mismatch("an earlier version is of another zone").into());
                }
                let since = v.since.as_millisecond();
                if since >= zone.since {
                    return Err(mismatch("an earlier version starts after the current one").into());
                }
                let mut old = Zone::prepare(spec)?;
                old.version = Some(v.id);
                old.since = since;
                zone.earlier.push(old);
            }
            zone.earlier.sort_by_key(|z| z.since);
        }
        if zone.earlier.is_empty() {
            // Nothing else to choose from: every fix is judged by this one.
            zone.since = i64::MIN;
        }
        self.install_zone(zone);
        Ok(())
    }

    fn install_zone(&mut self, zone: Zone) {
        let id = zone.id;
        self.zone_epoch += 1;
        let slot = match self.zones.by_id.get(&id) {
            Some(&slot) => {
                if let Some(old) = self.zones.slots[slot as usize].take()
                    && matches!(old.scope, ZoneScope::Category(_))
                {
                    self.global.remove(slot, old.envelope);
                }
                slot
            }
            None => {
                let slot = match self.zones.free.pop() {
                    Some(s) => s,
                    None => {
                        self.zones.slots.push(None);
                        (self.zones.slots.len() - 1) as u32
                    }
                };
                self.zones.by_id.insert(id, slot);
                slot
            }
        };
        if matches!(zone.scope, ZoneScope::Category(_)) {
            self.global.insert(slot, zone.envelope);
        }
        self.zones.slots[slot as usize] = Some(zone);
    }

    /// Removes a zone. Rules that name it close any open episode
    /// ([`EndCause::ZoneRemoved`]) at their next fix and then impose nothing
    /// until a zone with that id is added again.
    pub fn remove_zone(&mut self, id: ZoneId) -> Result<(), EngineError> {
        let slot = self
            .zones
            .by_id
            .remove(&id)
            .ok_or(crate::error::ZoneError::Unknown(id))?;
        self.zone_epoch += 1;
        if let Some(old) = self.zones.slots[slot as usize].take()
            && matches!(old.scope, ZoneScope::Category(_))
        {
            self.global.remove(slot, old.envelope);
        }
        self.zones.free.push(slot);
        Ok(())
    }

    /// The definition of a zone.
    pub fn zone(&self, id: ZoneId) -> Option<&ZoneSpec> {
        self.zones.get(id).map(Zone::spec)
    }

    /// Number of distinct vertices of a zone (0 for circles).
    pub fn zone_vertex_count(&self, id: ZoneId) -> Option<usize> {
        self.zones.get(id).map(Zone::vertex_count)
    }

    /// Number of zones, and of global (category) zones.
    pub fn zone_counts(&self) -> (usize, usize) {
        (self.zones.by_id.len(), self.global.len())
    }

    /// Tests one zone, ignoring schedules.
    pub fn zone_presence(
        &self,
        id: ZoneId,
        position: Position,
        accuracy_m: f64,
    ) -> Result<Presence, EngineError> {
        check_accuracy(accuracy_m)?;
        let zone = self
            .zones
            .get(id)
            .ok_or(crate::error::ZoneError::Unknown(id))?;
        Ok(zone.presence(&Probe::new(position, accuracy_m)))
    }

    /// Every global zone that a fix is `Inside` or `Uncertain` of, ignoring
    /// schedules and categories: the spatial hot path on its own.
    pub fn global_presence(
        &self,
        position: Position,
        accuracy_m: f64,
        out: &mut Vec<(ZoneId, Presence)>,
    ) -> Result<(), EngineError> {
        check_accuracy(accuracy_m)?;
        let probe = Probe::new(position, accuracy_m);
        let slots = &self.zones.slots;
        self.global.for_each_candidate(&probe.env, |slot| {
            if let Some(Some(zone)) = slots.get(slot as usize) {
                let p = zone.presence(&probe);
                if p != Presence::Outside {
                    out.push((zone.id, p));
                }
            }
        });
        Ok(())
    }

    // ----- subjects ----------------------------------------------------------

    /// Registers a subject with its rules, or replaces its rules.
    ///
    /// A rule whose id and kind are unchanged keeps its state (episodes, streaks)
    /// even if its schedule or hysteresis changed. Rules that disappear, or whose
    /// kind changed, close their open episodes with [`EndCause::RuleRemoved`];
    /// those transitions are appended to `out`.
    // Over 80 lines: one diff of old rules against new, keeping each kept
    // rule's state; the matching and the closing share its locals.
    pub fn upsert_subject(
        &mut self,
        id: SubjectId,
        rules: Vec<RuleSpec>,
        out: &mut Vec<Transition>,
    ) -> Result<SubjectHandle, EngineError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut seen = FxHashSet::default();
        for spec in rules {
            if !seen.insert(spec.id) {
                return Err(EngineError::DuplicateRule(spec.id));
            }
            compiled.push(self.compile_rule(id, spec)?);
        }
        let mut categories: Vec<CategoryId> = compiled
            .iter()
            .filter_map(|r| match r.target {
                Target::Category(c) => Some(c),
                _ => None,
            })
            .collect();
        categories.sort_unstable();
        categories.dedup();

        let handle = match self.subject_ids.get(&id).copied() {
            Some(handle) => {
                self.unwatch(handle);
                let slot = &mut self.subjects[handle.index()];
                let Some(subject) = slot.subject.as_mut() else {
                    return Err(EngineError::UnknownSubject);
                };
                let mut old_rules = std::mem::take(&mut subject.rules);
                for new in &mut compiled {
                    if let Some(pos) = old_rules
                        .iter()
                        .position(|o| o.spec.id == new.spec.id && o.spec.kind == new.spec.kind)
                    {
                        let old = old_rules.swap_remove(pos);
                        new.live = old.live;
                        new.hist = old.hist;
                        if let (
                            Target::Zone(n) | Target::Curfew(n),
                            Target::Zone(o) | Target::Curfew(o),
                        ) = (&mut new.target, old.target)
                        {
                            n.kind = o.kind;
                        }
                    }
                }
                for mut old in old_rules {
                    close_rule(id, &mut old, EndCause::RuleRemoved, out);
                }
                subject.rules = compiled;
                subject.categories = categories;
                handle
            }
            None => {
                let subject = Subject {
                    id,
                    head: i64::MIN,
                    last: None,
                    late_head: None,
                    categories,
                    rules: compiled,
                };
                let handle = match self.free_subjects.pop() {
                    Some(index) => {
                        let slot = &mut self.subjects[index as usize];
                        slot.subject = Some(subject);
                        SubjectHandle::new(index, slot.generation)
                    }
                    None => {
                        self.subjects.push(SubjectSlot {
                            generation: 0,
                            subject: Some(subject),
                        });
                        SubjectHandle::new((self.subjects.len() - 1) as u32, 0)
                    }
                };
                self.subject_ids.insert(id, handle);
                handle
            }
        };
        self.watch(handle);
        Ok(handle)
    }

    /// Removes a subject. Its open episodes close with [`EndCause::RuleRemoved`].
    pub fn remove_subject(
        &mut self,
        id: SubjectId,
        out: &mut Vec<Transition>,
    ) -> Result<(), EngineError> {
        let handle = self
            .subject_ids
            .remove(&id)
            .ok_or(EngineError::UnknownSubject)?;
        self.unwatch(handle);
        let slot = &mut self.subjects[handle.index()];
        if let Some(mut subject) = slot.subject.take() {
            for rule in &mut subject.rules {
                close_rule(id, rule, EndCause::RuleRemoved, out);
            }
        }
        slot.generation = slot.generation.wrapping_add(1);
        self.free_subjects.push(handle.0);
        Ok(())
    }

    /// The handle of a registered subject.
    pub fn subject_handle(&self, id: SubjectId) -> Option<SubjectHandle> {
        self.subject_ids.get(&id).copied()
    }

    /// Number of registered subjects.
    pub fn subject_count(&self) -> usize {
        self.subject_ids.len()
    }

    fn compile_rule(&self, subject: SubjectId, spec: RuleSpec) -> Result<RuleState, EngineError> {
        let zone_ref = |zid: ZoneId| {
            let slot = *self
                .zones
                .by_id
                .get(&zid)
                .ok_or(EngineError::RuleZoneUnknown {
                    subject,
                    rule: spec.id,
                    zone: zid,
                })?;
            let zone =
                self.zones.slots[slot as usize]
                    .as_ref()
                    .ok_or(EngineError::RuleZoneUnknown {
                        subject,
                        rule: spec.id,
                        zone: zid,
                    })?;
            Ok::<_, EngineError>(ZoneRef::of(zone, slot, self.zone_epoch))
        };
        let target = match &spec.kind {
            RuleKind::Zone(zid) => Target::Zone(zone_ref(*zid)?),
            RuleKind::Curfew(zid) => {
                let z = zone_ref(*zid)?;
                if z.kind != ZoneKind::Inclusion {
                    return Err(EngineError::CurfewZoneNotInclusion {
                        rule: spec.id,
                        zone: *zid,
                    });
                }
                Target::Curfew(z)
            }
            RuleKind::Category(c) => Target::Category(*c),
            RuleKind::Proximity {
                device,
                min_distance_m,
                max_age,
            } => {
                let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(0);
                if !min_distance_m.is_finite() || *min_distance_m <= 0.0 || max_age_ms <= 0 {
                    return Err(EngineError::BadProximity(spec.id));
                }
                Target::Proximity {
                    device: *device,
                    min_distance_m: *min_distance_m,
                    max_age_ms,
                }
            }
        };
        let zone_kind = match target {
            Target::Zone(z) | Target::Curfew(z) => Some(z.kind),
            _ => None,
        };
        let th = spec
            .effective_hysteresis(zone_kind)
            .thresholds()
            .ok_or(EngineError::BadHysteresis(spec.id))?;
        Ok(RuleState {
            live: RuleState::fresh_tracks(&target),
            hist: None,
            schedule: spec.schedule.clone(),
            spec: Box::new(spec),
            target,
            th,
            cursor: ScheduleCursor::default(),
        })
    }

    fn subject_mut(&mut self, handle: SubjectHandle) -> Option<&mut Subject> {
        let slot = self.subjects.get_mut(handle.index())?;
        if slot.generation != handle.generation() {
            return None;
        }
        slot.subject.as_mut()
    }

    fn watch(&mut self, handle: SubjectHandle) {
        let Some(Some(subject)) = self
            .subjects
            .get(handle.index())
            .map(|s| s.subject.as_ref())
        else {
            return;
        };
        for rule in &subject.rules {
            if let Target::Proximity { device, .. } = rule.target {
                self.watched
                    .entry(device)
                    .or_default()
                    .watchers
                    .push((handle, rule.spec.id));
            }
        }
    }

    /// Drops the subject's proximity registrations (before its rules change).
    fn unwatch(&mut self, handle: SubjectHandle) {
        let Some(Some(subject)) = self
            .subjects
            .get(handle.index())
            .map(|s| s.subject.as_ref())
        else {
            return;
        };
        for rule in &subject.rules {
            if let Target::Proximity { device, .. } = rule.target
                && let Some(w) = self.watched.get_mut(&device)
            {
                w.watchers.retain(|(h, _)| *h != handle);
                if w.watchers.is_empty() {
                    self.watched.remove(&device);
                }
            }
        }
    }

    // ----- fixes -------------------------------------------------------------

    /// Judges one fix of a subject's own device. Transitions are appended to `out`.
    ///
    /// A fix newer than the subject's newest is *live*; an older one is *late* and
    /// goes to the historical track (see the crate docs for the exact semantics).
    // Over 80 lines: the per-fix hot path (live or late, every rule, the
    // newest fix), kept in one function so the steady path allocates nothing.
    pub fn evaluate(
        &mut self,
        handle: SubjectHandle,
        fix: &Fix,
        out: &mut Vec<Transition>,
    ) -> Result<Outcome, EngineError> {
        check_accuracy(fix.accuracy_m)?;
        let Engine {
            zones,
            global,
            subjects,
            watched,
            hits,
            zone_epoch,
            ..
        } = self;
        let subject = subjects
            .get_mut(handle.index())
            .filter(|s| s.generation == handle.generation())
            .and_then(|s| s.subject.as_mut())
            .ok_or(EngineError::UnknownSubject)?;
        if fix.suspect {
            return Ok(Outcome::Skipped);
        }
        let t = fix.time.as_millisecond();
        if t == subject.head {
            return Ok(Outcome::Duplicate);
        }
        let historical = t < subject.head;
        if historical {
            match subject.late_head {
                Some(run_head) if t == run_head => return Ok(Outcome::Duplicate),
                Some(run_head) if t > run_head => {}
                Some(_) => close_runs(subject, out),
                None => {}
            }
        }

        let probe = Probe::new(fix.position, fix.accuracy_m);
        hits.clear();
        if !subject.categories.is_empty() {
            let slots = &zones.slots;
            let categories = &subject.categories;
            global.for_each_candidate(&probe.env, |slot| {
                if let Some(Some(zone)) = slots.get(slot as usize)
                    && let ZoneScope::Category(c) = zone.scope
                    && categories.contains(&c)
                {
                    let p = zone.presence(&probe);
                    if p != Presence::Outside {
                        hits.push((slot, p));
                    }
                }
            });
        }
        let own = LastFix {
            pos: fix.position,
            accuracy_m: fix.accuracy_m,
            t,
        };
        let cx = StepCx {
            subject: subject.id,
            zone_epoch: *zone_epoch,
            t,
            historical,
            probe: &probe,
            hits,
            own: Some(own),
            watched,
        };
        for rule in &mut subject.rules {
            step_rule(rule, zones, &cx, out);
        }
        if historical {
            subject.late_head = Some(t);
            Ok(Outcome::Late)
        } else {
            subject.head = t;
            subject.last = Some(own);
            Ok(Outcome::Live)
        }
    }

    /// Judges a batch of fixes, in order; the same as calling [`Engine::evaluate`]
    /// on each, with results appended to `outcomes` and transitions to `out`.
    ///
    /// Before judging each group of fixes it reads the state those subjects will
    /// need. The reads are independent of one another, so their cache misses
    /// overlap instead of queueing one per fix. With 100k subjects the state is far
    /// larger than the cache, and that wait is most of a fix's cost.
    ///
    /// The benches measure it (`benches/`, `geofence-report`) against
    /// [`Engine::evaluate`] one by one. Ingest does not use it: it judges a
    /// message at a time with [`Engine::judge_message`], and a message's fixes
    /// are one subject's, so there are no independent reads to overlap.
    pub fn evaluate_batch(
        &mut self,
        fixes: &[(SubjectHandle, Fix)],
        out: &mut Vec<Transition>,
        outcomes: &mut Vec<Result<Outcome, EngineError>>,
    ) {
        const GROUP: usize = 8;
        for group in fixes.chunks(GROUP) {
            let mut touched = 0i64;
            for (handle, _) in group {
                if let Some(Some(subject)) = self
                    .subjects
                    .get(handle.index())
                    .map(|s| s.subject.as_ref())
                {
                    touched ^= subject.head;
                    for rule in &subject.rules {
                        touched ^= rule.th.enter_span_ms;
                    }
                }
            }
            std::hint::black_box(touched);
            for (handle, fix) in group {
                outcomes.push(self.evaluate(*handle, fix, out));
            }
        }
    }

    /// Ends the subject's current late run: historical episodes still open close
    /// with [`EndCause::EvidenceEnded`] at the run's last fix. Ingest calls this once
    /// a device's backlog has been drained (see the crate docs).
    pub fn close_late_run(
        &mut self,
        handle: SubjectHandle,
        out: &mut Vec<Transition>,
    ) -> Result<(), EngineError> {
        let subject = self
            .subject_mut(handle)
            .ok_or(EngineError::UnknownSubject)?;
        if subject.late_head.is_some() {
            close_runs(subject, out);
        }
        Ok(())
    }

    /// Judges one message's fixes in order, the way ingest does live and on a
    /// restart replay: a subject's own fixes with [`Engine::evaluate`], a
    /// watched device's with [`Engine::observe_device`]; then, if any fix was
    /// late, [`Engine::close_late_run`] (a message is one upload, so its late
    /// fixes are one run). `each` sees every fix with its outcome, in order.
    /// Returns whether a late run was closed.
    pub fn judge_message<'f>(
        &mut self,
        source: Source,
        fixes: impl IntoIterator<Item = &'f Fix>,
        out: &mut Vec<Transition>,
        mut each: impl FnMut(&'f Fix, Result<Outcome, EngineError>),
    ) -> bool {
        let mut any_late = false;
        for fix in fixes {
            let outcome = match source {
                Source::Subject(h) => self.evaluate(h, fix, out),
                Source::Watched(d) => self.observe_device(d, fix, out),
                Source::Unjudged => Ok(Outcome::Skipped),
            };
            any_late |= matches!(outcome, Ok(Outcome::Late));
            each(fix, outcome);
        }
        match source {
            // The handle judged these fixes a moment ago: it cannot be stale.
            Source::Subject(h) if any_late => self.close_late_run(h, out).is_ok(),
            _ => false,
        }
    }

    /// Whether `device` is the other party of any proximity rule.
    pub fn is_watched(&self, device: DeviceId) -> bool {
        self.watched.contains_key(&device)
    }

    /// Takes a fix of a watched device (e.g. a victim's phone) and judges every
    /// proximity rule that protects it against that subject's newest position.
    ///
    /// Only the device's newest position matters: an older fix is
    /// [`Outcome::Skipped`].
    pub fn observe_device(
        &mut self,
        device: DeviceId,
        fix: &Fix,
        out: &mut Vec<Transition>,
    ) -> Result<Outcome, EngineError> {
        check_accuracy(fix.accuracy_m)?;
        let Engine {
            zones,
            subjects,
            watched,
            zone_epoch,
            ..
        } = self;
        let Some(w) = watched.get_mut(&device) else {
            return Ok(Outcome::Skipped);
        };
        let t = fix.time.as_millisecond();
        if fix.suspect || w.last.is_some_and(|l| t <= l.t) {
            return Ok(if w.last.is_some_and(|l| t == l.t) {
                Outcome::Duplicate
            } else {
                Outcome::Skipped
            });
        }
        w.last = Some(LastFix {
            pos: fix.position,
            accuracy_m: fix.accuracy_m,
            t,
        });
        // Taken out and put back so the loop can read `watched` without a copy.
        let watchers = std::mem::take(&mut w.watchers);
        let probe = Probe::new(fix.position, fix.accuracy_m);
        for &(handle, rule_id) in &watchers {
            let Some(subject) = subjects
                .get_mut(handle.index())
                .filter(|s| s.generation == handle.generation())
                .and_then(|s| s.subject.as_mut())
            else {
                continue;
            };
            let cx = StepCx {
                subject: subject.id,
                zone_epoch: *zone_epoch,
                t,
                historical: false,
                probe: &probe,
                hits: &[],
                own: subject.last,
                watched,
            };
            if let Some(rule) = subject.rules.iter_mut().find(|r| r.spec.id == rule_id) {
                step_rule(rule, zones, &cx, out);
            }
        }
        if let Some(w) = watched.get_mut(&device) {
            w.watchers = watchers;
        }
        Ok(Outcome::Live)
    }
}

fn check_accuracy(a: f64) -> Result<(), EngineError> {
    if a.is_finite() && (0.0..=MAX_ACCURACY_M).contains(&a) {
        Ok(())
    } else {
        Err(EngineError::BadAccuracy(a))
    }
}

impl SubjectHandle {
    fn new(index: u32, generation: u32) -> SubjectHandle {
        SubjectHandle(index, generation)
    }

    fn index(self) -> usize {
        self.0 as usize
    }

    fn generation(self) -> u32 {
        self.1
    }
}
