//! Location failure: a bracelet that keeps reporting motion but has had no
//! fix for too long (Attenti's "Motion No GPS"). A bracelet at rest indoors
//! without GPS is normal (asleep at home); one that moves without a fix is
//! shielded, broken or somewhere the rules cannot see.
//!
//! O(1) per report, 9 bytes per device; no timer: the report that shows the
//! gap is the one that raises it.

/// What [`GpsWatch::report`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpsEvent {
    /// Motion at `at_s` with no fix since `last_fix_s` (the limit passed).
    Failure {
        /// Device index.
        device: u32,
        /// Last fix (seconds; the watch's start when none yet).
        last_fix_s: u64,
        /// The report that showed it (seconds).
        at_s: u64,
    },
    /// A fix again after a failure.
    Restored {
        /// Device index.
        device: u32,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Device {
    last_fix: u64,
    failing: bool,
}

/// Per device: the last fix and whether a failure is open.
#[derive(Debug)]
pub struct GpsWatch {
    limit_s: u64,
    devices: Vec<Device>,
}

impl GpsWatch {
    /// Motion with no fix for `limit_s` seconds is a location failure.
    pub fn new(limit_s: u32) -> GpsWatch {
        GpsWatch {
            limit_s: u64::from(limit_s.max(1)),
            devices: Vec::new(),
        }
    }

    fn device(&mut self, device: u32, now_s: u64) -> &mut Device {
        let i = device as usize;
        if self.devices.len() <= i {
            self.devices.resize(
                i + 1,
                Device {
                    last_fix: now_s,
                    failing: false,
                },
            );
        }
        &mut self.devices[i]
    }

    /// Sets the last fix known (from the store, at startup).
    pub fn start(&mut self, device: u32, last_fix_s: u64) {
        let d = self.device(device, last_fix_s);
        d.last_fix = last_fix_s;
    }

    /// Marks `device` as failing already (an open `location_failure` alert
    /// restored after a restart): its next fix reports `Restored`.
    pub fn mark_failing(&mut self, device: u32) {
        let d = self.device(device, 0);
        d.failing = true;
    }

    /// A report from `device` at `at_s` (device time): `fix` when it carried
    /// a position, `motion` when it showed movement without one.
    pub fn report(&mut self, device: u32, at_s: u64, fix: bool, motion: bool) -> Option<GpsEvent> {
        let limit = self.limit_s;
        let d = self.device(device, at_s);
        if fix {
            d.last_fix = d.last_fix.max(at_s);
            if d.failing {
                d.failing = false;
                return Some(GpsEvent::Restored { device });
            }
            return None;
        }
        if motion && !d.failing && at_s >= d.last_fix + limit {
            d.failing = true;
            return Some(GpsEvent::Failure {
                device,
                last_fix_s: d.last_fix,
                at_s,
            });
        }
        None
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.devices.capacity() * std::mem::size_of::<Device>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn motion_without_a_fix_past_the_limit_fails_once_until_a_fix() {
        let mut w = GpsWatch::new(600);
        w.start(3, 1_000);
        assert_eq!(w.report(3, 1_500, false, true), None, "within the limit");
        assert_eq!(w.report(3, 1_700, false, false), None, "at rest: normal");
        assert_eq!(
            w.report(3, 1_600, false, true),
            Some(GpsEvent::Failure {
                device: 3,
                last_fix_s: 1_000,
                at_s: 1_600
            })
        );
        assert_eq!(w.report(3, 1_900, false, true), None, "once");
        assert_eq!(
            w.report(3, 2_000, true, false),
            Some(GpsEvent::Restored { device: 3 })
        );
        assert_eq!(w.report(3, 2_100, false, true), None, "new fix resets");
        assert_eq!(
            w.report(3, 2_600, false, true),
            Some(GpsEvent::Failure {
                device: 3,
                last_fix_s: 2_000,
                at_s: 2_600
            })
        );
    }

    #[test]
    fn an_unknown_device_counts_from_its_first_report() {
        let mut w = GpsWatch::new(60);
        assert_eq!(w.report(9, 100, false, true), None);
        assert!(matches!(
            w.report(9, 160, false, true),
            Some(GpsEvent::Failure {
                last_fix_s: 100,
                ..
            })
        ));
    }

    #[test]
    fn a_device_marked_failing_is_restored_by_its_next_fix() {
        let mut w = GpsWatch::new(600);
        w.start(2, 1_000);
        w.mark_failing(2);
        assert_eq!(w.report(2, 5_000, false, true), None, "not raised again");
        assert_eq!(
            w.report(2, 5_100, true, false),
            Some(GpsEvent::Restored { device: 2 })
        );
    }
}
