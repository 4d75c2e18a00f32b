//! emtrack's decision core: is this fix a violation, and does it open or close an
//! episode?
//!
//! `geofence` does no I/O and has no async, database or serialization dependency.
//! Every input arrives as a value, every output leaves as a value, and the same
//! inputs give the same outputs.
//!
//! # Layout
//! - `coord`: validated WGS84 positions, metres, the per-fix probe.
//! - `polygon`: prepared polygons (grid-indexed point-in-polygon and boundary distance).
//! - `zone`: zone definitions and the Inside / Outside / Uncertain test, with its
//!   boundary semantics.
//! - `index`: the spatial index of global zones (R-tree plus a cell table).
//! - `schedule`: weekly windows in IANA time zones, dated exceptions, DST.
//! - `rule`: what a subject must do, and the evidence thresholds (hysteresis).
//! - `track`: the per-(subject, rule, zone) hysteresis state machine.
//! - `engine`: subjects, `evaluate`, proximity, and zone and rule changes.
//!
//! # The model
//! A [`ZoneSpec`] is a polygon, multipolygon or circle with a kind (inclusion or
//! exclusion), a buffer in metres and a [`Schedule`]. It is either *assigned* (rules
//! name it by id) or *global* for a [`CategoryId`] ("schools"). A subject has
//! [`RuleSpec`]s: obey a zone, a curfew at home, stay out of a category's zones, or
//! keep a distance from another device. Each rule has its own schedule and
//! [`Hysteresis`]. [`Engine::evaluate`] takes one fix and appends [`Transition`]s,
//! stamped with fix times.
//!
//! # Episodes
//! For each (subject, rule, zone) a track turns per-fix verdicts into episodes:
//! - a fix is *violating*, *compliant* or *neutral*. It is neutral when its
//!   accuracy disc straddles the boundary ([`Presence::Uncertain`]), when it falls in
//!   a grace period, or when a proximity rule lacks a fresh position of either party;
//! - an episode starts after `enter_fixes` consecutive violating fixes spanning
//!   `enter_span`; `at` is the first of them;
//! - it ends after `exit_fixes` consecutive compliant fixes; `at` is the first of them;
//! - neutral fixes neither count nor break a streak;
//! - when a schedule goes out of force (the curfew is over) or the zone is removed,
//!   an open episode ends at once, at the first fix that shows it.
//!
//! # Late and out-of-order fixes
//! Bracelets buffer fixes while out of coverage and upload them later, so fixes
//! arrive late and in batches. The engine keeps, per subject:
//! - **Live state.** A fix newer than the subject's newest fix is *live*. It steps
//!   the live tracks, and its transitions have `historical: false`. Late fixes never
//!   touch live tracks, live streaks or the position used for proximity.
//! - **Late runs.** A fix older than the newest live fix is *late*. Late fixes are
//!   judged against the schedules in force at **their own** time. They go, in
//!   arrival order, through a separate set of *historical* tracks that start empty
//!   (no streak, no episode). Consecutive late fixes with increasing times form one
//!   *run*. A late fix not newer than the run's newest fix starts a new run (a
//!   second backlog, or a reordered one). Starting a run first closes the previous
//!   one.
//! - **Historical episodes.** A run opens and closes episodes by the same
//!   hysteresis as live ones; their transitions have `historical: true`. When a run
//!   closes with an episode still open, the episode ends with
//!   [`EndCause::EvidenceEnded`] at the run's last fix. A run closes when the next
//!   run starts, or through [`Engine::close_late_run`], which ingest calls once a
//!   device's backlog has been drained. The engine has no clock of its own to
//!   decide that.
//! - **No double reporting.** A late fix that falls inside an episode the live
//!   track already reported (open, or the last closed one) is neutral for that
//!   track. A backlog covering a violation the live data already showed adds
//!   nothing, and one covering an unseen violation reports it once, as historical.
//! - **Duplicates.** A fix with the same time as the newest live fix, or as the
//!   current run's newest fix, is [`Outcome::Duplicate`] and changes nothing.
//!   Other repeats cannot be recognised without keeping every fix time. Ingest
//!   de-duplicates on `(device, fix time)` before calling the engine.
//! - **Versions.** A zone given with its earlier versions
//!   ([`Engine::upsert_zone_versions`]) judges every fix, live or late, by the
//!   version in force at the fix's own time (geometry, kind, buffer and
//!   schedule), and the transitions name that version
//!   ([`Transition::zone_version`]). A zone given alone
//!   ([`Engine::upsert_zone`]) judges every fix as it is now. Schedules are
//!   evaluated at the fix's own time either way; a rule's own schedule has no
//!   versions here.
//! - Proximity on a late fix needs the other party's newest position to lie
//!   within `max_age` of the late fix's time; otherwise the fix is neutral for
//!   that rule.
//!
//! # Proximity
//! A [`RuleKind::Proximity`] rule is a circle of `min_distance_m` around another
//! device, usually the device a protected victim carries. It is judged on each
//! subject fix, against the device's newest fix ([`Engine::observe_device`]).
//! It is also judged on each device fix, against the subject's newest live fix.
//! Either position older than `max_age` relative to the judged fix makes the
//! result neutral (uncertain).
//!
//! # Changes while running
//! [`Engine::upsert_zone`], [`Engine::remove_zone`], [`Engine::upsert_subject`]
//! and [`Engine::remove_subject`] apply to the next fix. Only the changed zone is
//! re-prepared and re-indexed, and rule state survives changes that keep a rule's
//! id and kind.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod coord;
mod engine;
mod error;
mod id;
mod index;
mod polygon;
mod rule;
mod schedule;
mod track;
mod zone;

pub use coord::{EARTH_RADIUS_M, Position};
pub use engine::{Engine, Fix, MAX_ACCURACY_M, Outcome, Source, Transition, TransitionKind};
pub use error::{CoordError, EngineError, ScheduleError, ZoneError};
pub use id::{CategoryId, DeviceId, RuleId, SubjectHandle, SubjectId, ZoneId};
pub use rule::{Hysteresis, RuleKind, RuleSpec};
pub use schedule::{DatedException, ExceptionKind, Schedule, Weekdays, WeeklyWindow};
pub use track::EndCause;
pub use zone::{
    MAX_BUFFER_M, MAX_RADIUS_M, Presence, Shape, ZoneKind, ZoneScope, ZoneSpec, ZoneVersion,
};

/// Re-exported so callers build shapes and times with the same versions.
pub use geo;
/// Re-exported so callers build shapes and times with the same versions.
pub use jiff;
