//! Mass silence: when a large share of the fleet goes silent at once, the
//! cause is the link (the broker, the network, emtrack itself), not each
//! subject. The duty desk gets one fleet incident, not an alert per
//! bracelet.
//!
//! A bracelet's silence (from the [`crate::SilenceWheel`]) is held for
//! `hold_s` before it becomes its own alert. When the silences of the last
//! `hold_s` reach the threshold, `max(min_devices, share × watched)`, an
//! outage starts: every held silence, and every later one, is absorbed into
//! it. A bracelet absorbed that speaks again leaves it. The outage ends when
//! fewer than half the threshold remain silent, or when fewer than the
//! threshold remain and none has come back or gone silent for `hold_s` (the
//! rest are not one event: a dead battery, an absconder), or when the duty
//! desk resolves the incident ([`OutageWatch::end`]); those still silent are held
//! once more, from the end: a bracelet that speaks within that hold was part
//! of the outage (no alert of its own), one still silent after it gets its
//! own alert: its silence outlived the outage. A held bracelet that speaks
//! again before its hold is over (no outage) gets its alert at once, so
//! every silence outside an outage still gives exactly one alert, at most
//! `hold_s` late.
//!
//! Pure: time is passed in (seconds), the caller raises what
//! [`OutageEvent`]s say.

use std::collections::{HashMap, VecDeque};

/// When silences are a fleet incident (`[alerts]` `outage_*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutageConfig {
    /// How long a silence waits before it is a bracelet's own alert, and
    /// the window in which silences are counted, in seconds.
    pub hold_s: u64,
    /// At least this many silences within the window …
    pub min_devices: usize,
    /// … and at least this share of the watched bracelets (0–1).
    pub share: f64,
}

impl Default for OutageConfig {
    fn default() -> Self {
        OutageConfig {
            hold_s: 60,
            min_devices: 20,
            share: 0.2,
        }
    }
}

/// A device's silence, as the silence wheel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Silence {
    /// The subject (of a bracelet; 0 for a protected person's phone).
    pub subject: u64,
    /// The device (engine id): a bracelet or a protected person's phone.
    pub device: u32,
    /// Last heard from (s).
    pub last_seen_s: u64,
    /// When the silence was noticed (s).
    pub at_s: u64,
}

/// What the caller does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutageEvent {
    /// Raise this device's own alert (a bracelet's `no_communication`, a
    /// phone's `protection_degraded`).
    Silent(Silence),
    /// A fleet outage started: raise the fleet incident.
    Started {
        /// When (s): the first silence it absorbed.
        at_s: u64,
        /// Bracelets silent when it started.
        silent: usize,
    },
    /// A silence left over from an outage ended: the bracelet spoke within
    /// the hold after it (no alert of its own).
    Quiet(Silence),
    /// The outage is over: resolve the fleet incident. The silences still
    /// going on are held once more.
    Ended {
        /// When (s).
        at_s: u64,
        /// Silences that ended within the outage (no alert of their own).
        absorbed: usize,
    },
}

#[derive(Debug)]
struct Outage {
    threshold: usize,
    /// By device.
    absorbed: HashMap<u32, Silence>,
    /// When a silence last joined or left it (s).
    changed_s: u64,
    came_back: usize,
}

/// A silence waiting for its hold to end.
#[derive(Clone, Copy, Debug)]
struct Held {
    silence: Silence,
    /// When the hold started (s).
    from_s: u64,
    /// Left over from an outage: speaking again ends it without an alert.
    after_outage: bool,
}

/// The mass-silence detector. About 40 bytes per held or absorbed silence.
#[derive(Debug)]
pub struct OutageWatch {
    cfg: OutageConfig,
    /// Silences not yet released, oldest hold first.
    held: VecDeque<Held>,
    /// When each silence of the window was noticed, oldest first.
    recent: VecDeque<u64>,
    outage: Option<Outage>,
}

impl OutageWatch {
    /// A watch with `cfg`.
    pub fn new(cfg: OutageConfig) -> OutageWatch {
        OutageWatch {
            cfg,
            held: VecDeque::new(),
            recent: VecDeque::new(),
            outage: None,
        }
    }

    /// Whether an outage is going on.
    pub fn in_outage(&self) -> bool {
        self.outage.is_some()
    }

    /// Bracelets silent in the outage going on (0 if none).
    pub fn outage_silent(&self) -> usize {
        self.outage.as_ref().map_or(0, |o| o.absorbed.len())
    }

    /// Silences held or absorbed.
    pub fn len(&self) -> usize {
        self.held.len() + self.outage.as_ref().map_or(0, |o| o.absorbed.len())
    }

    /// Nothing held or absorbed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn threshold(&self, watched: usize) -> usize {
        let share = (self.cfg.share.clamp(0.0, 1.0) * watched as f64).ceil() as usize;
        self.cfg.min_devices.max(share).max(1)
    }

    /// A bracelet went silent; `watched` is the number of bracelets watched.
    pub fn silent(&mut self, s: Silence, watched: usize, out: &mut Vec<OutageEvent>) {
        self.recent.push_back(s.at_s);
        if let Some(o) = self.outage.as_mut() {
            o.absorbed.insert(s.device, s);
            o.changed_s = s.at_s;
            return;
        }
        self.held.push_back(Held {
            silence: s,
            from_s: s.at_s,
            after_outage: false,
        });
        self.forget_before(s.at_s);
        let threshold = self.threshold(watched);
        if self.recent.len() >= threshold {
            let absorbed: HashMap<u32, Silence> = self
                .held
                .drain(..)
                .map(|h| (h.silence.device, h.silence))
                .collect();
            let at_s = absorbed.values().map(|h| h.at_s).min().unwrap_or(s.at_s);
            out.push(OutageEvent::Started {
                at_s,
                silent: absorbed.len(),
            });
            self.outage = Some(Outage {
                threshold,
                absorbed,
                changed_s: s.at_s,
                came_back: 0,
            });
        }
    }

    /// The device spoke again at `now_s`.
    pub fn back(&mut self, device: u32, now_s: u64, out: &mut Vec<OutageEvent>) {
        if let Some(o) = self.outage.as_mut() {
            if o.absorbed.remove(&device).is_some() {
                o.came_back += 1;
                o.changed_s = now_s;
            }
            if o.absorbed.len() < o.threshold.div_ceil(2) {
                self.end(now_s, out);
            }
            return;
        }
        if let Some(i) = self.held.iter().position(|h| h.silence.device == device)
            && let Some(h) = self.held.remove(i)
        {
            out.push(if h.after_outage {
                OutageEvent::Quiet(h.silence)
            } else {
                OutageEvent::Silent(h.silence)
            });
        }
    }

    /// Releases the silences whose hold is over (none during an outage),
    /// and ends an outage that has dwindled below the threshold and stood
    /// still for `hold_s`.
    pub fn poll(&mut self, now_s: u64, out: &mut Vec<OutageEvent>) {
        self.forget_before(now_s);
        if let Some(o) = &self.outage {
            let dwindled = o.absorbed.len() < o.threshold
                && o.changed_s.saturating_add(self.cfg.hold_s) <= now_s;
            if !dwindled {
                return;
            }
            self.end(now_s, out);
        }
        while let Some(h) = self.held.front() {
            if h.from_s.saturating_add(self.cfg.hold_s) > now_s {
                break;
            }
            if let Some(h) = self.held.pop_front() {
                out.push(OutageEvent::Silent(h.silence));
            }
        }
    }

    fn forget_before(&mut self, now_s: u64) {
        let from = now_s.saturating_sub(self.cfg.hold_s);
        while self.recent.front().is_some_and(|t| *t < from) {
            self.recent.pop_front();
        }
    }

    /// A device no longer watched (unassigned, retired): its silence is
    /// forgotten, held or absorbed.
    pub fn forget(&mut self, device: u32) {
        self.held.retain(|h| h.silence.device != device);
        if let Some(o) = self.outage.as_mut() {
            o.absorbed.remove(&device);
        }
    }

    /// Ends the outage going on, if any (the duty desk resolved the
    /// incident): those still silent are held once more, as after any end.
    pub fn end(&mut self, now_s: u64, out: &mut Vec<OutageEvent>) {
        let Some(o) = self.outage.take() else {
            return;
        };
        out.push(OutageEvent::Ended {
            at_s: now_s,
            absorbed: o.came_back,
        });
        let mut still: Vec<Silence> = o.absorbed.into_values().collect();
        still.sort_by_key(|s| (s.at_s, s.device));
        self.held.extend(still.into_iter().map(|silence| Held {
            silence,
            from_s: now_s,
            after_outage: true,
        }));
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutageConfig {
        OutageConfig {
            hold_s: 60,
            min_devices: 5,
            share: 0.2,
        }
    }

    fn silence(subject: u64, at_s: u64) -> Silence {
        Silence {
            subject,
            device: subject as u32,
            last_seen_s: at_s - 30,
            at_s,
        }
    }

    fn silent_subjects(out: &[OutageEvent]) -> Vec<u64> {
        out.iter()
            .filter_map(|e| match e {
                OutageEvent::Silent(s) => Some(s.subject),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_few_silences_are_each_their_own_alert_after_the_hold() {
        let mut w = OutageWatch::new(cfg());
        let mut out = Vec::new();
        // 100 watched: the threshold is 20; 3 go silent.
        for s in 1..=3 {
            w.silent(silence(s, 1_000 + s), 100, &mut out);
        }
        w.poll(1_059, &mut out);
        assert!(out.is_empty(), "held for 60 s");
        w.poll(1_062, &mut out);
        assert_eq!(silent_subjects(&out), vec![1, 2]);
        // Speaking again before the hold ends: its alert at once.
        out.clear();
        w.back(3, 1_062, &mut out);
        assert_eq!(silent_subjects(&out), vec![3]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_mass_silence_is_one_incident_and_those_still_silent_after_it_get_their_alerts() {
        let mut w = OutageWatch::new(cfg());
        let mut out = Vec::new();
        // 100 watched; 30 fall silent within 30 s (the broker went away).
        for s in 1..=30 {
            w.silent(silence(s, 1_000 + s), 100, &mut out);
        }
        assert_eq!(
            out,
            vec![OutageEvent::Started {
                at_s: 1_001,
                silent: 20
            }],
            "the 20th silence starts it, absorbing the held ones"
        );
        out.clear();
        w.poll(2_000, &mut out);
        assert!(out.is_empty(), "nothing released during the outage");
        // 25 come back; when fewer than 10 remain silent it ends; of the 9
        // still silent then, 4 speak within the hold (part of the outage)
        // and 5 get their own alerts when it is over.
        for s in 1..=20 {
            w.back(s, 2_100, &mut out);
        }
        assert!(out.is_empty(), "10 still silent");
        w.back(21, 2_101, &mut out);
        assert_eq!(
            out,
            vec![OutageEvent::Ended {
                at_s: 2_101,
                absorbed: 21
            }]
        );
        out.clear();
        for s in 22..=25 {
            w.back(s, 2_130, &mut out);
        }
        w.poll(2_160, &mut out);
        assert!(
            out.iter().all(|e| matches!(e, OutageEvent::Quiet(_))) && out.len() == 4,
            "no alert for those that spoke within the hold: {out:?}"
        );
        out.clear();
        w.poll(2_161, &mut out);
        assert_eq!(silent_subjects(&out), (26..=30).collect::<Vec<_>>());
        assert!(!w.in_outage() && w.is_empty());
    }

    #[test]
    fn an_outage_that_dwindles_below_the_threshold_ends_and_the_rest_get_alerts() {
        let mut w = OutageWatch::new(cfg());
        let mut out = Vec::new();
        for s in 1..=25 {
            w.silent(silence(s, 1_000), 100, &mut out);
        }
        assert!(w.in_outage());
        // 15 come back; 10 stay silent (dead batteries, an absconder):
        // fewer than the threshold (20), not fewer than half of it.
        for s in 1..=15 {
            w.back(s, 1_100, &mut out);
        }
        out.clear();
        w.poll(1_159, &mut out);
        assert!(w.in_outage(), "still changing within the hold");
        w.poll(1_160, &mut out);
        assert!(!w.in_outage(), "stood still for the hold");
        w.poll(1_220, &mut out);
        assert_eq!(silent_subjects(&out), (16..=25).collect::<Vec<_>>());
        // A device no longer watched is forgotten; the desk can end one.
        for s in 1..=25 {
            w.silent(silence(s, 2_000), 100, &mut out);
        }
        w.forget(25);
        out.clear();
        w.end(2_010, &mut out);
        w.poll(2_070, &mut out);
        assert_eq!(silent_subjects(&out).len(), 24);
    }

    #[test]
    fn silences_spread_over_time_never_add_up_to_an_outage() {
        let mut w = OutageWatch::new(cfg());
        let mut out = Vec::new();
        // One silence every 20 s among 20 watched (threshold 5): never 5
        // within 60 s... until they come faster.
        for s in 0..20u64 {
            w.silent(silence(s, 1_000 + 20 * s), 20, &mut out);
            w.poll(1_000 + 20 * s, &mut out);
        }
        assert!(!w.in_outage());
        assert_eq!(
            silent_subjects(&out).len(),
            17,
            "each released after its hold"
        );
    }
}
