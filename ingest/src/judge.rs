//! Judging: the engine's verdict on a message's fixes. One function,
//! [`message`], serves live processing and the restart replay, so the two
//! cannot drift apart; [`stored`] is the one mapping from an engine
//! transition to what is stored and published.

use crate::check::Checked;
use crate::rows::{FixRow, Rows};
use bus::StoredTransition;
use geofence::{Engine, Outcome, Position, Source, Transition};
use reference::{Core, DeviceKind, DeviceRef, Registry};

/// Whose fixes `dev` sends: a bracelet's are judged against its subject's
/// rules, a victim's phone's feed the proximity rules that name it.
fn source(engine: &Engine, dev: &DeviceRef) -> Source {
    match (dev.kind, dev.subject) {
        (DeviceKind::VictimPhone, _) => Source::Watched(dev.engine),
        (DeviceKind::Bracelet, Some(s)) => engine
            .subject_handle(s)
            .map_or(Source::Unjudged, Source::Subject),
        (DeviceKind::Bracelet, None) => Source::Unjudged,
    }
}

/// Judges one message of `dev` (its fixes in order, then its late run
/// closed, see [`Engine::judge_message`]); transitions are appended to
/// `out`, and `live` sees the time of each fix judged live.
pub(crate) fn message(
    core: &mut Core,
    dev: &DeviceRef,
    fixes: &[geofence::Fix],
    out: &mut Vec<Transition>,
    mut live: impl FnMut(i64),
) {
    let source = source(&core.engine, dev);
    core.engine
        .judge_message(source, fixes, out, |fix, outcome| match outcome {
            Ok(Outcome::Live) => live(fix.time.as_millisecond()),
            Ok(_) => {}
            Err(e) => tracing::warn!(device = %dev.name, error = %e, "fix not judged"),
        });
}

/// A transition as stored: with the device whose fix caused it (none when a
/// reference change closed the episode) and, for proximity, the other
/// party's device.
pub(crate) fn stored(t: Transition, device: Option<&str>, registry: &Registry) -> StoredTransition {
    StoredTransition {
        transition: t,
        device: device.map(str::to_owned),
        other_device: t
            .device
            .and_then(|d| registry.name_of(d))
            .map(str::to_owned),
    }
}

/// The engine's view of a stored fix row, at its judged time
/// ([`crate::clock`]); `None` for a position or time the engine cannot take
/// (never for a decoded fix: the protocol bounds coordinates and times).
pub(crate) fn engine_fix(row: &FixRow) -> Option<geofence::Fix> {
    Some(geofence::Fix {
        time: geofence::jiff::Timestamp::from_millisecond(row.judged_ms).ok()?,
        position: Position::new(row.fix.lon(), row.fix.lat()).ok()?,
        accuracy_m: f64::from(row.fix.accuracy_m),
        suspect: row.suspect,
    })
}

/// Judges every message of the batch, in order, under one lock.
pub(crate) fn batch(core: &mut Core, checked: &[Checked], rows: &mut Rows) {
    let mut out = Vec::new();
    let mut fixes = Vec::new();
    for m in &rows.messages {
        let dev = &checked[m.message].dev;
        fixes.clear();
        fixes.extend(rows.fixes[m.first..m.end].iter().filter_map(engine_fix));
        message(core, dev, &fixes, &mut out, |t| rows.live_fix_ms.push(t));
        for t in out.drain(..) {
            rows.transitions
                .push(stored(t, Some(&dev.name), &core.registry));
        }
    }
}
