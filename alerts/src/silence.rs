//! Silence detection: which devices have sent nothing for their expected
//! interval plus a buffer.
//!
//! A hashed timing wheel of one-second slots. Each device has at most one
//! entry in the wheel, at the second its deadline was when the entry was
//! made. A message only moves the device's deadline (O(1), no wheel
//! operation). When the wheel reaches an entry, the device's current deadline
//! decides: later → the entry moves there; reached → `NoCommunication` fires
//! once, and the next message from the device fires `BackOnline`. So a tick
//! costs the entries due, never a scan of every device, and each message costs
//! one store. Deadlines beyond one lap of the wheel are parked at the last
//! slot of the lap and moved on when reached.
//!
//! Devices are dense indices `0..n` (the caller maps its ids to them).

/// What [`SilenceWheel::poll`] and [`SilenceWheel::seen`] report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceEvent {
    /// Nothing from `device` since `last_seen_s`; its deadline `deadline_s` passed.
    NoCommunication {
        /// Device index.
        device: u32,
        /// When it was last heard from (seconds).
        last_seen_s: u64,
        /// When it should have spoken by (seconds).
        deadline_s: u64,
    },
    /// `device`, reported silent, spoke again at `at_s`.
    BackOnline {
        /// Device index.
        device: u32,
        /// When (seconds).
        at_s: u64,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Device {
    /// Last heard from, seconds.
    last_seen: u64,
    /// Expected interval plus buffer, seconds (0: not watched).
    allowance: u32,
    /// The second of this device's wheel entry (`u64::MAX`: none).
    entry: u64,
    /// `NoCommunication` fired and no message since.
    silent: bool,
}

/// The wheel. Memory per device is one `Device` (32 bytes) plus, while
/// watched, one `u32` in a slot.
#[derive(Debug)]
pub struct SilenceWheel {
    slots: Vec<Vec<u32>>,
    devices: Vec<Device>,
    /// Every second before this one has been processed.
    cursor: u64,
}

impl SilenceWheel {
    /// A wheel of `lap_s` one-second slots (rounded up to a power of two),
    /// starting at second `now_s`. Longer allowances work; they cost one extra
    /// move per lap.
    pub fn new(lap_s: u32, now_s: u64) -> SilenceWheel {
        let n = lap_s.max(2).next_power_of_two() as usize;
        SilenceWheel {
            slots: vec![Vec::new(); n],
            devices: Vec::new(),
            cursor: now_s,
        }
    }

    fn slot(&self, t: u64) -> usize {
        (t & (self.slots.len() as u64 - 1)) as usize
    }

    fn place(&mut self, device: u32, deadline: u64) {
        // Never behind the cursor, and at most one lap ahead.
        let lap = self.slots.len() as u64;
        let at = deadline.max(self.cursor).min(self.cursor + lap - 1);
        let s = self.slot(at);
        self.slots[s].push(device);
        self.devices[device as usize].entry = at;
    }

    /// Starts watching `device`: it must speak at least every `allowance_s`
    /// seconds (its reporting interval plus a buffer), counted from `now_s`.
    pub fn watch(&mut self, device: u32, allowance_s: u32, now_s: u64) {
        let i = device as usize;
        if self.devices.len() <= i {
            self.devices.resize(
                i + 1,
                Device {
                    entry: u64::MAX,
                    ..Device::default()
                },
            );
        }
        let d = &mut self.devices[i];
        d.allowance = allowance_s.max(1);
        d.last_seen = d.last_seen.max(now_s);
        if d.entry == u64::MAX {
            let deadline = d.last_seen + u64::from(d.allowance);
            self.place(device, deadline);
        }
    }

    /// Marks a watched `device` as already reported silent (an open
    /// `no_communication` alert restored after a restart): it does not fire
    /// again, and its next message fires `BackOnline`.
    pub fn mark_silent(&mut self, device: u32) {
        if let Some(d) = self.devices.get_mut(device as usize)
            && d.allowance > 0
        {
            d.silent = true;
        }
    }

    /// Stops watching `device` (retired, unassigned). Its entry, if any, is
    /// dropped when reached.
    pub fn unwatch(&mut self, device: u32) {
        if let Some(d) = self.devices.get_mut(device as usize) {
            d.allowance = 0;
            d.silent = false;
        }
    }

    /// `device` sent something at `at_s` (arrival time). O(1). Returns
    /// `BackOnline` if it had been reported silent.
    pub fn seen(&mut self, device: u32, at_s: u64) -> Option<SilenceEvent> {
        let d = self.devices.get_mut(device as usize)?;
        if d.allowance == 0 {
            return None;
        }
        d.last_seen = d.last_seen.max(at_s);
        if d.silent {
            d.silent = false;
            let deadline = d.last_seen + u64::from(d.allowance);
            if d.entry == u64::MAX {
                self.place(device, deadline);
            }
            return Some(SilenceEvent::BackOnline { device, at_s });
        }
        None
    }

    /// Processes every second up to and including `now_s`; appends a
    /// `NoCommunication` for each device whose deadline passed.
    pub fn poll(&mut self, now_s: u64, out: &mut Vec<SilenceEvent>) {
        while self.cursor <= now_s {
            let t = self.cursor;
            let s = self.slot(t);
            let due = std::mem::take(&mut self.slots[s]);
            // Next second first, so that `place` never lands behind us.
            self.cursor += 1;
            let mut keep = Vec::new();
            for device in due {
                let d = self.devices[device as usize];
                if d.entry != t {
                    // An entry of a later lap in the same slot.
                    if d.entry != u64::MAX && d.entry > t {
                        keep.push(device);
                    }
                    continue;
                }
                self.devices[device as usize].entry = u64::MAX;
                if d.allowance == 0 {
                    continue;
                }
                if d.silent {
                    // Already reported; its next message places it again.
                    continue;
                }
                let deadline = d.last_seen + u64::from(d.allowance);
                if deadline > t {
                    self.place(device, deadline);
                } else {
                    self.devices[device as usize].silent = true;
                    out.push(SilenceEvent::NoCommunication {
                        device,
                        last_seen_s: d.last_seen,
                        deadline_s: deadline,
                    });
                }
            }
            // Entries for a later lap stay in their slot.
            self.slots[s].extend(keep);
            if t == u64::MAX {
                break;
            }
        }
    }

    /// Bytes held: the device table plus the slots' capacity.
    pub fn memory_bytes(&self) -> usize {
        self.devices.capacity() * std::mem::size_of::<Device>()
            + self
                .slots
                .iter()
                .map(|s| s.capacity() * 4 + std::mem::size_of::<Vec<u32>>())
                .sum::<usize>()
    }

    /// Devices known.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// No device known.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silent(out: &[SilenceEvent]) -> Vec<u32> {
        out.iter()
            .filter_map(|e| match e {
                SilenceEvent::NoCommunication { device, .. } => Some(*device),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fires_once_at_the_deadline_and_back_online_on_the_next_message() {
        let mut w = SilenceWheel::new(256, 1_000);
        w.watch(0, 90, 1_000);
        let mut out = Vec::new();
        w.poll(1_060, &mut out);
        assert!(w.seen(0, 1_060).is_none(), "a message in time");
        w.poll(1_149, &mut out);
        assert!(out.is_empty(), "deadline 1150 not reached: {out:?}");
        w.poll(1_150, &mut out);
        assert_eq!(
            out,
            vec![SilenceEvent::NoCommunication {
                device: 0,
                last_seen_s: 1_060,
                deadline_s: 1_150
            }]
        );
        out.clear();
        w.poll(5_000, &mut out);
        assert!(out.is_empty(), "fires once, not every lap");
        assert_eq!(
            w.seen(0, 5_001),
            Some(SilenceEvent::BackOnline {
                device: 0,
                at_s: 5_001
            })
        );
        w.poll(5_090, &mut out);
        assert!(out.is_empty());
        w.poll(5_091, &mut out);
        assert_eq!(silent(&out), vec![0], "watched again after coming back");
    }

    #[test]
    fn allowances_longer_than_a_lap_and_unwatched_devices() {
        let mut w = SilenceWheel::new(64, 0);
        w.watch(0, 1_000, 0); // 15+ laps of a 64-slot wheel
        w.watch(1, 30, 0);
        w.unwatch(1);
        let mut out = Vec::new();
        w.poll(999, &mut out);
        assert!(out.is_empty(), "{out:?}");
        w.poll(1_000, &mut out);
        assert_eq!(silent(&out), vec![0]);
        assert!(w.seen(1, 5).is_none(), "an unwatched device is ignored");
    }

    /// A device restored as silent (an open alert after a restart) does not
    /// fire again, and its next message is `BackOnline`.
    #[test]
    fn a_device_marked_silent_fires_back_online_only() {
        let mut w = SilenceWheel::new(64, 0);
        w.watch(4, 10, 0);
        w.mark_silent(4);
        let mut out = Vec::new();
        w.poll(100, &mut out);
        assert!(out.is_empty(), "already reported");
        assert_eq!(
            w.seen(4, 101),
            Some(SilenceEvent::BackOnline {
                device: 4,
                at_s: 101
            })
        );
        w.poll(111, &mut out);
        assert_eq!(silent(&out), vec![4], "and watched again");
    }

    // 100,000 devices on tokio's paused clock: tests/paused_time.rs.
}
