//! Device clocks that disagree with the order fixes arrive in.
//!
//! The engine judges a fix *live* when it is newer than the subject's newest
//! fix, and *late* (historically) otherwise. That rests on the device's
//! clock. A clock that glitches ahead would make every genuine fix after it
//! late, so that a subject walking into an exclusion zone raised nothing; one
//! that jumps back would do the same until real time caught up. So each fix
//! gets a *judged time*, the time the engine sees, and a [`Clock`] verdict:
//!
//! - **Ahead**: dated more than `tolerance` after its arrival (the server's
//!   clock when its batch was checked). No genuine fix can be: the device
//!   cannot have measured it yet. It is judged at its arrival (and never
//!   before the device's newest judged fix): arrival order.
//! - **Behind**: the clock jumped back. One late fix cannot tell that from a
//!   store-and-forward backlog or a message replayed later, so it takes two:
//!   a late fix (older than the device's newest judged fix) becomes a
//!   *candidate*, and the next late fix *confirms* the jump when the two were
//!   sent at real-time pace: their arrivals more than `tolerance` apart, and
//!   their fix times apart by the same as their arrivals (within 2 s of
//!   network jitter). A backlog arrives in a burst, a replay alone or in a
//!   burst, so neither confirms. From the confirming fix on, fixes are judged
//!   at their own time plus the offset seen (their lag), capped at their
//!   arrival and never before the newest judged fix, until a fix is newer
//!   than the newest judged one again (the clock is right) or stops fitting
//!   the offset. The candidate itself stays late.
//! - **Trusted**: everything else, judged at its own time. A genuinely late
//!   fix (a backlog, a replay) stays late, with the engine's exact
//!   late-fix semantics (geofence's crate docs).
//!
//! The fix keeps its own time as evidence (`fixes.fix_time`); the judged time
//! is stored beside it (`fixes.judged_at`) when they differ, so a restart
//! replays the same judgement. Each suspect fix is counted
//! (`emtrack_fixes_clock_suspect_total{direction}`) and raises a device-clock
//! finding for the officer.
//!
//! The rule errs towards "late": a jump back is recognised only from fixes
//! sent one by one at real-time pace (the usual live upload), not within a
//! multi-fix message; after a restart it needs two fixes again. Arrival is
//! the time the batch is checked: after an outage or a backlog it is later
//! than the broker's receipt, so the ahead check is more lenient then.

/// What a fix's clock looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Clock {
    /// Judged at its own time.
    Trusted,
    /// Dated after its arrival.
    Ahead,
    /// Dated back by a confirmed jump of its clock.
    Behind,
}

impl Clock {
    /// The metric label of a suspect verdict.
    pub(crate) fn direction(self) -> Option<&'static str> {
        match self {
            Clock::Trusted => None,
            Clock::Ahead => Some("ahead"),
            Clock::Behind => Some("behind"),
        }
    }
}

/// How far a live device's send delay varies between two fixes: two late
/// fixes whose lags differ by more are not one clock jumped back.
const PACE_JITTER_MS: i64 = 2_000;

/// A device's timeline as judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timeline {
    /// Newest judged time (ms), `i64::MIN` before the first fix.
    pub(crate) head: i64,
    /// A late fix (time, arrival) that may be the first of a jump back.
    candidate: Option<(i64, i64)>,
    /// While the clock is confirmed behind: what is added to its fix times.
    offset: Option<i64>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::resumed(i64::MIN)
    }
}

impl Timeline {
    /// A timeline known only by its newest judged time (after a restart).
    pub(crate) fn resumed(head: i64) -> Timeline {
        Timeline {
            head,
            candidate: None,
            offset: None,
        }
    }

    /// The verdict and judged time of a fix dated `t` (ms) that arrived at
    /// `arrival` (ms); advances the timeline when the fix is judged live.
    pub(crate) fn judge(&mut self, t: i64, arrival: i64, tolerance_ms: i64) -> (Clock, i64) {
        let after_head = self.head.saturating_add(1);
        let (clock, judged) = if t > arrival.saturating_add(tolerance_ms) {
            self.candidate = None;
            self.offset = None;
            (Clock::Ahead, arrival.max(after_head))
        } else if t > self.head {
            self.candidate = None;
            self.offset = None;
            (Clock::Trusted, t)
        } else if let Some(offset) = self.behind_offset(t, arrival, tolerance_ms) {
            self.candidate = None;
            self.offset = Some(offset);
            (
                Clock::Behind,
                t.saturating_add(offset).min(arrival).max(after_head),
            )
        } else {
            self.offset = None;
            self.candidate = Some((t, arrival));
            (Clock::Trusted, t)
        };
        self.head = self.head.max(judged);
        (clock, judged)
    }

    /// For a late fix: the offset of a confirmed jump back it fits, if any.
    fn behind_offset(&self, t: i64, arrival: i64, tolerance_ms: i64) -> Option<i64> {
        let fits = |offset: i64| (t.saturating_add(offset) - arrival).abs() <= tolerance_ms;
        if let Some(offset) = self.offset {
            return fits(offset).then_some(offset);
        }
        let (ct, ca) = self.candidate?;
        let paced = arrival - ca > tolerance_ms;
        let in_step = ((t - ct) - (arrival - ca)).abs() <= PACE_JITTER_MS;
        (paced && in_step).then_some(arrival - t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const TOL: i64 = 10 * S;

    fn feed(tl: &mut Timeline, fixes: &[(i64, i64)]) -> Vec<(Clock, i64)> {
        fixes
            .iter()
            .map(|&(t, arrival)| tl.judge(t, arrival, TOL))
            .collect()
    }

    /// One fix 290 s ahead is judged at its arrival; the genuine fixes after
    /// it stay live, at their own times.
    #[test]
    fn a_clock_glitch_ahead_does_not_make_later_fixes_late() {
        let mut tl = Timeline::default();
        let got = feed(
            &mut tl,
            &[
                (0, S),
                (30 * S + 290 * S, 31 * S),
                (60 * S, 61 * S),
                (90 * S, 91 * S),
            ],
        );
        assert_eq!(
            got,
            vec![
                (Clock::Trusted, 0),
                (Clock::Ahead, 31 * S),
                (Clock::Trusted, 60 * S),
                (Clock::Trusted, 90 * S),
            ]
        );
    }

    /// A clock that jumps 200 s back while the device sends every 30 s: the
    /// first fix after the jump is late (one fix cannot tell), the next
    /// confirms it, and from then on fixes are judged at their arrival, 30 s
    /// apart, until the clock is right again.
    #[test]
    fn a_clock_jumping_back_is_judged_in_arrival_order() {
        let mut tl = Timeline::default();
        let live = |k: i64| (k * 30 * S, k * 30 * S + 500);
        let jumped = |k: i64| (k * 30 * S - 200 * S, k * 30 * S + 500);
        let mut fixes: Vec<(i64, i64)> = (0..10).map(live).collect();
        fixes.extend((10..14).map(jumped));
        fixes.push(live(14));
        let got = feed(&mut tl, &fixes);
        assert!(got[..10].iter().all(|(c, _)| *c == Clock::Trusted));
        assert_eq!(
            &got[10..],
            &[
                (Clock::Trusted, 100 * S),
                (Clock::Behind, 330 * S + 500),
                (Clock::Behind, 360 * S + 500),
                (Clock::Behind, 390 * S + 500),
                (Clock::Trusted, 420 * S),
            ]
        );
    }

    /// A backlog after a gap in coverage (the current fix first, then the
    /// buffered ones in a burst, whatever the device's fix rate, in either
    /// order) is late, judged at its own times: never "behind".
    #[test]
    fn a_store_and_forward_backlog_stays_late() {
        let mut tl = Timeline::default();
        // A device fixing every 15 s, out of coverage for 45 s.
        let mut fixes: Vec<(i64, i64)> = (0..8).map(|k| (k * 15 * S, k * 15 * S)).collect();
        fixes.push((165 * S, 165 * S));
        fixes.extend((8..11).map(|k| (k * 15 * S, 165 * S + 20)));
        // Newest first, too.
        fixes.extend((0..3).map(|k| (160 * S - k * 1000, 166 * S)));
        let got = feed(&mut tl, &fixes);
        assert!(got.iter().all(|(c, _)| *c == Clock::Trusted), "{got:?}");
        assert_eq!(tl.head, 165 * S);
    }

    /// Quarantined messages replayed an hour later, one by one or together,
    /// are late: their lag is not the pace they arrive at.
    #[test]
    fn a_replay_of_old_messages_stays_late() {
        let mut tl = Timeline::default();
        let mut fixes: Vec<(i64, i64)> = (0..100).map(|k| (k * 30 * S, k * 30 * S)).collect();
        fixes.extend((0..5).map(|k| (k * 30 * S, 3600 * S + k * 20 * S)));
        let got = feed(&mut tl, &fixes);
        assert!(got.iter().all(|(c, _)| *c == Clock::Trusted), "{got:?}");
    }

    /// After a restart the timeline knows only its head: an older fix is late.
    #[test]
    fn after_a_restart_older_fixes_are_late() {
        let mut tl = Timeline::resumed(1000 * S);
        assert_eq!(tl.judge(900 * S, 1001 * S, TOL), (Clock::Trusted, 900 * S));
        assert_eq!(tl.head, 1000 * S);
    }
}
