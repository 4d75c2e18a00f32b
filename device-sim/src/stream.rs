//! The message stream: every device's messages, merged in send order, with the
//! ground truth they imply.
//!
//! Devices are state machines that produce their next messages on demand from
//! their day plans, so memory grows with the number of devices, not with the
//! simulated time. A heap merges them by send time (ties by device index), so
//! the stream is deterministic. Ground truth is accounted for as messages are
//! *taken* from the stream: a run cut short by `--fixes` or `--duration` still
//! writes a truthful file.

use crate::plan::{
    BATTERY_CRITICAL, BATTERY_LOW, Clock, DayPlan, Episode, FAST_FIX_INTERVAL_S, FIX_INTERVAL_S,
    GPS_LOSS_HEARTBEAT_S, HEARTBEAT_INTERVAL_S, Hostile, MIN_EPISODE_S, Path, Rates, next_day,
    subject_day, victim_day,
};
use crate::space::{Stream, Xy, rng};
use crate::truth::Record;
use crate::world::{DeviceFormat, World};
use bytes::{Bytes, BytesMut};
use jiff::Timestamp;
use jiff::civil::Date;
use protocol::{
    Body, DeviceId, Event, EventKind, Fix, Flags, Heartbeat, RecordKind, Topic, Uplink,
};
use rand::RngExt;
use rand::rngs::StdRng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    /// Simulated start.
    pub start: Timestamp,
    /// Simulated span, ms.
    pub span_ms: i64,
    /// Behaviour rates.
    pub rates: Rates,
    /// Fixes per message for live uploads (1 = send each fix at once).
    pub batch: usize,
}

impl ScenarioConfig {
    /// `hours` of a busy fleet ([`Rates::busy`]) from `start`, `batch` fixes
    /// per live message: the scenario the ground-truth tests play.
    pub fn busy(start: Timestamp, hours: i64, batch: usize) -> ScenarioConfig {
        ScenarioConfig {
            start,
            span_ms: hours * 3_600_000,
            rates: Rates::busy(),
            batch,
        }
    }
}

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Simulated send time, ms since the epoch.
    pub at: i64,
    /// Index of the sending device (bracelets first, then phones).
    pub device: u32,
    /// MQTT topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// Valid fixes in it.
    pub valid_fixes: u32,
    /// Events in it.
    pub events: u32,
    /// Heartbeats in it.
    pub heartbeats: u32,
    /// Ground truth that holds once this message is sent.
    pub truth: Vec<Record>,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

struct Bracelet {
    subject: usize,
    device: DeviceId,
    day: Date,
    plan: DayPlan,
    noise: StdRng,
    next_fix: i64,
    next_hb: i64,
    ev_i: usize,
    host_i: usize,
    battery: f64,
    battery_t: i64,
    low_armed: bool,
    critical_armed: bool,
    charging: bool,
    dead: bool,
    /// Open silence: (from, cause).
    silence: Option<(i64, &'static str)>,
    batch: Vec<Fix>,
    backlog: Vec<Fix>,
    backlog_events: Vec<Event>,
    pending_truth: Vec<Record>,
    /// Live episodes, judged against the fixes taken when the run finishes.
    episodes: Vec<Episode>,
    /// Episodes inside a store-and-forward gap, not yet uploaded.
    historical: Vec<Episode>,
}

struct Phone {
    victim: usize,
    device: DeviceId,
    day: Date,
    path: Path,
    noise: StdRng,
    next_fix: i64,
}

enum Machine {
    Bracelet(Box<Bracelet>),
    Phone(Box<Phone>),
}

struct Slot {
    machine: Machine,
    out: VecDeque<Outgoing>,
    done: bool,
    /// Send time of the newest message with fixes taken from this device.
    last_fix: i64,
    valid_fixes: u64,
    events: u64,
    heartbeats: u64,
}

/// The merged, deterministic stream of every device's messages.
pub struct Scenario {
    world: Arc<World>,
    cfg: ScenarioConfig,
    clock: Clock,
    end: i64,
    slots: Vec<Slot>,
    heap: BinaryHeap<Reverse<(i64, u32)>>,
    truth: Vec<Record>,
    messages: u64,
    reached: i64,
    dropped: u64,
}

impl Scenario {
    /// Sets up every device of `world`.
    pub fn new(world: Arc<World>, cfg: ScenarioConfig) -> Scenario {
        let clock = Clock::default();
        let start = cfg.start.as_millisecond();
        let day = clock.day_of(start);
        let seed = world.config.seed;
        let mut slots = Vec::new();
        for (i, s) in world.subjects.iter().enumerate() {
            let mut noise = rng(seed, Stream::Device, s.id, 0);
            let phase = noise.random_range(0..FIX_INTERVAL_S * 1000);
            let plan = subject_day(&world, &clock, s, day, &cfg.rates, start);
            let mut b = Bracelet {
                subject: i,
                device: DeviceId::parse(&s.device).expect("world device ids are valid"),
                day,
                plan: DayPlan::default(),
                next_fix: start + phase,
                next_hb: start + phase + noise.random_range(0..HEARTBEAT_INTERVAL_S * 1000),
                noise,
                ev_i: 0,
                host_i: 0,
                battery: 0.0,
                battery_t: start,
                low_armed: true,
                critical_armed: true,
                charging: false,
                dead: false,
                silence: None,
                batch: Vec::new(),
                backlog: Vec::new(),
                backlog_events: Vec::new(),
                pending_truth: Vec::new(),
                episodes: Vec::new(),
                historical: Vec::new(),
            };
            b.battery = b.noise.random_range(60.0..95.0);
            b.adopt(plan, start);
            slots.push(Slot::new(Machine::Bracelet(Box::new(b))));
        }
        for (i, v) in world.victims.iter().enumerate() {
            let mut noise = rng(seed, Stream::Device, (1 << 32) | v.id, 0);
            let phase = noise.random_range(0..FIX_INTERVAL_S * 1000);
            slots.push(Slot::new(Machine::Phone(Box::new(Phone {
                victim: i,
                device: DeviceId::parse_any(&v.device).expect("world device ids are valid"),
                day,
                path: victim_day(seed, &clock, v, day),
                noise,
                next_fix: start + phase,
            }))));
        }
        let end = start + cfg.span_ms;
        let mut sc = Scenario {
            world,
            cfg,
            clock,
            end,
            slots,
            heap: BinaryHeap::new(),
            truth: Vec::new(),
            messages: 0,
            reached: start,
            dropped: 0,
        };
        for i in 0..sc.slots.len() {
            sc.refill(i);
            if let Some(m) = sc.slots[i].out.front() {
                sc.heap.push(Reverse((m.at, i as u32)));
            }
        }
        sc
    }

    /// Number of devices (bracelets, then phones).
    pub fn device_count(&self) -> usize {
        self.slots.len()
    }

    /// The device id of slot `i`.
    pub fn device_id(&self, i: u32) -> &DeviceId {
        match &self.slots[i as usize].machine {
            Machine::Bracelet(b) => &b.device,
            Machine::Phone(p) => &p.device,
        }
    }

    fn refill(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        while slot.out.is_empty() && !slot.done {
            let more = match &mut slot.machine {
                Machine::Bracelet(b) => b.step(
                    &self.world,
                    &self.clock,
                    &self.cfg,
                    self.end,
                    i as u32,
                    &mut slot.out,
                ),
                Machine::Phone(p) => {
                    p.step(&self.world, &self.clock, self.end, i as u32, &mut slot.out)
                }
            };
            if !more {
                slot.done = true;
            }
        }
    }

    /// Consumes the stream and returns the ground truth of everything taken.
    pub fn finish(mut self) -> Vec<Record> {
        let reached = self.reached;
        for slot in &mut self.slots {
            if let Machine::Bracelet(b) = &mut slot.machine {
                let dev = b.device.as_str();
                // Judged against the newest fix taken: a heartbeat or event
                // says nothing about where the subject was.
                let last = slot.last_fix;
                for e in &b.episodes {
                    if e.start > last {
                        continue;
                    }
                    let s = &self.world.subjects[b.subject];
                    // An end counts once a backend had time to confirm it.
                    let end = (e.end + 180_000 <= last).then_some(e.end);
                    let cut_short = e.start + MIN_EPISODE_S * 1000 > last;
                    self.truth
                        .push(episode_record(s, &b.device, e, end, cut_short));
                }
                if let Some((from, cause)) = b.silence
                    && from <= reached
                {
                    self.truth.push(Record::Silence {
                        device: dev.to_owned(),
                        from: ts(from),
                        to: None,
                        cause,
                    });
                }
            }
            let device = match &slot.machine {
                Machine::Bracelet(b) => b.device.as_str().to_owned(),
                Machine::Phone(p) => p.device.as_str().to_owned(),
            };
            self.truth.push(Record::Device {
                device,
                valid_fixes: slot.valid_fixes,
                events: slot.events,
                heartbeats: slot.heartbeats,
            });
        }
        let valid_fixes = self.slots.iter().map(|s| s.valid_fixes).sum();
        let episodes = self
            .truth
            .iter()
            .filter(|r| matches!(r, Record::Episode { .. }))
            .count() as u64;
        let malformed = self
            .truth
            .iter()
            .filter(|r| matches!(r, Record::Malformed { .. }))
            .count() as u64;
        let dropped = self.dropped;
        self.truth.push(Record::Summary {
            seed: self.world.config.seed,
            start: self.cfg.start,
            end: ts(reached),
            messages: self.messages,
            valid_fixes,
            episodes,
            malformed,
            behaviours_dropped: dropped,
        });
        self.truth
    }
}

impl Iterator for Scenario {
    type Item = Outgoing;

    fn next(&mut self) -> Option<Outgoing> {
        let Reverse((_, i)) = self.heap.pop()?;
        let slot = &mut self.slots[i as usize];
        let mut msg = slot.out.pop_front()?;
        if msg.valid_fixes > 0 {
            slot.last_fix = slot.last_fix.max(msg.at);
        }
        slot.valid_fixes += u64::from(msg.valid_fixes);
        slot.events += u64::from(msg.events);
        slot.heartbeats += u64::from(msg.heartbeats);
        self.truth.append(&mut msg.truth);
        self.messages += 1;
        self.reached = self.reached.max(msg.at);
        if let Machine::Bracelet(b) = &mut slot.machine {
            self.dropped += std::mem::take(&mut b.plan.dropped);
        }
        self.refill(i as usize);
        if let Some(m) = self.slots[i as usize].out.front() {
            self.heap.push(Reverse((m.at, i)));
        }
        Some(msg)
    }
}

impl Slot {
    fn new(machine: Machine) -> Slot {
        Slot {
            machine,
            out: VecDeque::new(),
            done: false,
            last_fix: i64::MIN,
            valid_fixes: 0,
            events: 0,
            heartbeats: 0,
        }
    }
}

/// The ground-truth line of an episode, in the device's clock.
fn episode_record(
    s: &crate::world::Subject,
    device: &DeviceId,
    e: &Episode,
    end: Option<i64>,
    cut_short: bool,
) -> Record {
    Record::Episode {
        subject: s.id,
        device: device.as_str().to_owned(),
        rule: e.rule,
        zone: e.zone,
        other_device: e.other.clone(),
        kind: e.kind,
        start: ts(e.start + s.skew_ms),
        end: end.map(|t| ts(t + s.skew_ms)),
        window_s: if e.other.is_some() {
            [-120, 180]
        } else {
            [0, 180]
        },
        historical: e.historical,
        cut_short,
        behaviour: e.behaviour,
    }
}

/// A measured fix: true position plus noise within 0.8 × the accuracy radius,
/// so the true position always lies inside the fix's accuracy disc.
fn measure(
    noise: &mut StdRng,
    p: Xy,
    speed: f64,
    heading: f64,
    indoor: bool,
) -> (Xy, u16, bool, Option<u16>, Option<u16>) {
    let network = indoor && noise.random_bool(0.03);
    let acc: u16 = if network {
        noise.random_range(80..150)
    } else if indoor {
        noise.random_range(12..26)
    } else {
        noise.random_range(4..11)
    };
    let r = f64::from(acc) * 0.8 * noise.random_range(0.0f64..1.0).sqrt();
    let q = p.offset(r, noise.random_range(0.0..std::f64::consts::TAU));
    let moving = speed > 0.3;
    (
        q,
        acc,
        network,
        moving.then(|| (speed * 100.0).round().min(65_534.0) as u16),
        moving.then(|| ((heading * 100.0).round() as u32 % 36_000) as u16),
    )
}

fn e7(p: Xy) -> (i32, i32) {
    let (lon, lat) = p.lonlat();
    ((lat * 1e7).round() as i32, (lon * 1e7).round() as i32)
}

fn encode(format: DeviceFormat, msg: &Uplink) -> Bytes {
    match format {
        DeviceFormat::Json => Bytes::from(protocol::json::encode(msg)),
        _ => {
            let mut buf = BytesMut::new();
            protocol::binary::encode(msg, &mut buf)
                .expect("simulated records are in range and batches bounded");
            buf.freeze()
        }
    }
}

impl Bracelet {
    fn adopt(&mut self, plan: DayPlan, now: i64) {
        for e in &plan.episodes {
            if e.historical {
                // Recorded with the backlog message that carries it.
                self.historical.push(e.clone());
            } else if e.start >= now {
                self.episodes.push(e.clone());
            }
        }
        self.plan = plan;
        self.ev_i = 0;
        self.host_i = 0;
    }

    fn skew(&self, world: &World) -> i64 {
        world.subjects[self.subject].skew_ms
    }

    fn format(&self, world: &World) -> DeviceFormat {
        world.subjects[self.subject].format
    }

    fn flags(&self, motion: bool, network: bool) -> Flags {
        Flags {
            motion,
            charging: self.charging,
            network_location: network,
        }
    }

    fn battery_pct(&self) -> Option<u8> {
        Some(self.battery.clamp(0.0, 100.0).round() as u8)
    }

    fn off(&self, t: i64) -> bool {
        self.dead || self.plan.powered_off.is_some_and(|w| w.contains(t))
    }

    fn in_gap(&self, t: i64) -> bool {
        self.plan.sf_gap.is_some_and(|w| w.contains(t))
    }

    /// Advances the battery to `t`, emitting threshold and charger events.
    fn battery_to(&mut self, t: i64, events: &mut Vec<(i64, EventKind)>) {
        let charging_now = self.plan.charging.is_some_and(|w| w.contains(t));
        let dt_h = (t - self.battery_t).max(0) as f64 / 3_600_000.0;
        self.battery_t = t;
        if self.charging {
            self.battery = (self.battery + 35.0 * dt_h).min(100.0);
        } else {
            self.battery = (self.battery - self.plan.drain_pct_h * dt_h).max(0.0);
        }
        if charging_now != self.charging {
            self.charging = charging_now;
            if charging_now {
                // A dead device boots as soon as it is on the charger.
                self.dead = false;
            }
            events.push((
                t,
                if charging_now {
                    EventKind::ChargerConnected
                } else {
                    EventKind::ChargerDisconnected
                },
            ));
        }
        if self.dead {
            return;
        }
        if self.battery > 30.0 {
            self.low_armed = true;
        }
        if self.battery > 15.0 {
            self.critical_armed = true;
        }
        if self.battery < BATTERY_LOW && self.low_armed {
            self.low_armed = false;
            events.push((t, EventKind::BatteryLow));
        }
        if self.battery < BATTERY_CRITICAL && self.critical_armed {
            self.critical_armed = false;
            events.push((t, EventKind::BatteryCritical));
        }
        if self.battery <= 0.0 && !self.charging {
            self.dead = true;
        }
    }

    /// Produces the messages of the next moment; false when past `end`.
    // Over 80 lines: one moment of one device's state machine. Its updates
    // (battery, GPS, store-and-forward, events, fixes) run in the order a
    // bracelet acts, and the ground truth is counted as messages are taken;
    // the order is the specification, so it reads top to bottom.
    fn step(
        &mut self,
        world: &World,
        clock: &Clock,
        cfg: &ScenarioConfig,
        end: i64,
        idx: u32,
        out: &mut VecDeque<Outgoing>,
    ) -> bool {
        let next_event = self.plan.events.get(self.ev_i).map_or(i64::MAX, |e| e.0);
        let next_hostile = self.plan.hostile.get(self.host_i).map_or(i64::MAX, |h| h.0);
        let charge_edge = self
            .plan
            .charging
            .map(|w| {
                if self.battery_t < w.from {
                    w.from
                } else if self.battery_t < w.to {
                    w.to
                } else {
                    i64::MAX
                }
            })
            .unwrap_or(i64::MAX);
        let t = self
            .next_fix
            .min(self.next_hb)
            .min(next_event)
            .min(next_hostile)
            .min(charge_edge)
            .min(self.plan.to);
        if t >= end {
            self.flush_batch(world, idx, t.min(end), out);
            return false;
        }
        if t == self.plan.to {
            self.day = next_day(self.day);
            let s = &world.subjects[self.subject];
            let plan = subject_day(world, clock, s, self.day, &cfg.rates, i64::MIN);
            self.adopt(plan, t);
            return true;
        }
        let mut events = Vec::new();
        self.battery_to(t, &mut events);
        let skew = self.skew(world);
        let device = self.device.as_str().to_owned();

        // Silence bookkeeping: open when the device goes quiet, close on the
        // first message after.
        let off = self.off(t);
        if off && self.silence.is_none() {
            let cause = if self.dead {
                "battery_dead"
            } else {
                "powered_off"
            };
            let from = if self.dead {
                t
            } else {
                self.plan.powered_off.map_or(t, |w| w.from)
            };
            self.silence = Some((from, cause));
        }
        if self.in_gap(t) && self.silence.is_none() && !off {
            self.silence = Some((self.plan.sf_gap.map_or(t, |w| w.from), "coverage_gap"));
        }

        if t == next_event {
            events.push(self.plan.events[self.ev_i]);
            self.ev_i += 1;
        }
        for &(et, kind) in &events {
            match kind {
                EventKind::GpsLost => {
                    // Heartbeats every 5 minutes from now: motion without fixes.
                    self.next_hb = self.next_hb.min(et + GPS_LOSS_HEARTBEAT_S * 1000);
                }
                EventKind::GpsAcquired => {
                    if let Some(w) = self.plan.gps_loss {
                        self.pending_truth.push(Record::GpsLoss {
                            device: device.clone(),
                            from: ts(w.from + skew),
                            to: ts(et + skew),
                        });
                    }
                }
                _ => {}
            }
        }
        if !events.is_empty() && !off {
            let recs: Vec<Event> = events
                .iter()
                .map(|&(et, kind)| Event {
                    time: ts(et + skew),
                    kind,
                    battery_pct: self.battery_pct(),
                    flags: self.flags(false, false),
                })
                .collect();
            if self.in_gap(t) {
                self.backlog_events.extend(recs);
            } else {
                self.emit_events(world, idx, t, recs, false, out);
            }
        }

        if t == next_hostile {
            let (_, kind) = self.plan.hostile[self.host_i];
            self.host_i += 1;
            if !off && !self.in_gap(t) {
                self.emit_hostile(world, idx, t, kind, out);
            }
        }

        if t == self.next_hb {
            let gps_lost = self.plan.gps_loss.is_some_and(|w| w.contains(t));
            self.next_hb = t + 1000
                * if gps_lost {
                    GPS_LOSS_HEARTBEAT_S
                } else {
                    HEARTBEAT_INTERVAL_S
                };
            if !off && !self.in_gap(t) {
                let hb = Heartbeat {
                    time: ts(t + skew),
                    battery_pct: self.battery_pct(),
                    flags: self.flags(gps_lost, false),
                    pending: 0,
                };
                self.send(world, idx, t, Body::Heartbeats(vec![hb]), Vec::new(), out);
            }
        }

        if t == self.next_fix {
            let fast = self
                .plan
                .fast
                .is_some_and(|w| w.contains(t + FAST_FIX_INTERVAL_S * 1000));
            self.next_fix = t + 1000
                * if fast {
                    FAST_FIX_INTERVAL_S
                } else {
                    FIX_INTERVAL_S
                };
            let gps_lost = self.plan.gps_loss.is_some_and(|w| w.contains(t));
            if !off && !gps_lost {
                let s = self.plan.path.at(t);
                let (q, acc, network, speed, heading) =
                    measure(&mut self.noise, s.p, s.speed, s.heading, s.indoor);
                let (lat_e7, lon_e7) = e7(q);
                let fix = Fix {
                    time: ts(t + skew),
                    lat_e7,
                    lon_e7,
                    accuracy_m: acc,
                    speed_cm_s: speed,
                    heading_cdeg: heading,
                    battery_pct: self.battery_pct(),
                    flags: self.flags(s.speed > 0.3, network),
                };
                if self.in_gap(t) {
                    // Out of coverage: a partial batch waits with the backlog.
                    self.backlog.append(&mut self.batch);
                    self.backlog.push(fix);
                } else if !self.backlog.is_empty() {
                    // Back in coverage: the current fix first, then the backlog.
                    self.flush_batch(world, idx, t, out);
                    self.batch.push(fix);
                    self.flush_batch(world, idx, t, out);
                    let backlog = std::mem::take(&mut self.backlog);
                    let chunks = backlog.chunks(protocol::MAX_BATCH).count();
                    for (i, chunk) in backlog.chunks(protocol::MAX_BATCH).enumerate() {
                        // The last chunk completes the backlog: the episodes
                        // inside the gap become visible with it.
                        let truth = if i + 1 == chunks {
                            let s = &world.subjects[self.subject];
                            let (done, rest): (Vec<_>, Vec<_>) =
                                std::mem::take(&mut self.historical)
                                    .into_iter()
                                    .partition(|e| e.end < t);
                            self.historical = rest;
                            done.iter()
                                .map(|e| episode_record(s, &self.device, e, Some(e.end), false))
                                .collect()
                        } else {
                            Vec::new()
                        };
                        self.send(world, idx, t, Body::Fixes(chunk.to_vec()), truth, out);
                    }
                    let late_events = std::mem::take(&mut self.backlog_events);
                    if !late_events.is_empty() {
                        self.emit_events(world, idx, t, late_events, true, out);
                    }
                } else {
                    self.batch.push(fix);
                    if self.batch.len() >= cfg.batch {
                        self.flush_batch(world, idx, t, out);
                    }
                }
            }
        }
        true
    }

    /// Encodes `body` in the device's format and queues it on its topic.
    fn send(
        &mut self,
        world: &World,
        idx: u32,
        t: i64,
        body: Body,
        truth: Vec<Record>,
        out: &mut VecDeque<Outgoing>,
    ) {
        let (kind, n) = (body.kind(), body.len() as u32);
        let msg = Uplink {
            device: self.device.clone(),
            body,
        };
        let count = |k: RecordKind| if k == kind { n } else { 0 };
        self.push(
            out,
            Outgoing {
                at: t,
                device: idx,
                topic: Topic::for_device(&self.device, kind),
                payload: encode(self.format(world), &msg),
                valid_fixes: count(RecordKind::Fix),
                events: count(RecordKind::Event),
                heartbeats: count(RecordKind::Heartbeat),
                truth,
            },
        );
    }

    /// Queues a message, closing an open silence and attaching pending truth.
    fn push(&mut self, out: &mut VecDeque<Outgoing>, mut msg: Outgoing) {
        if let Some((from, cause)) = self.silence.take() {
            msg.truth.push(Record::Silence {
                device: self.device.as_str().to_owned(),
                from: ts(from),
                to: Some(ts(msg.at)),
                cause,
            });
        }
        msg.truth.append(&mut self.pending_truth);
        out.push_back(msg);
    }

    fn flush_batch(&mut self, world: &World, idx: u32, t: i64, out: &mut VecDeque<Outgoing>) {
        if self.batch.is_empty() {
            return;
        }
        let fixes = std::mem::take(&mut self.batch);
        self.send(world, idx, t, Body::Fixes(fixes), Vec::new(), out);
    }

    fn emit_events(
        &mut self,
        world: &World,
        idx: u32,
        t: i64,
        recs: Vec<Event>,
        late: bool,
        out: &mut VecDeque<Outgoing>,
    ) {
        let truth = recs
            .iter()
            .map(|e| Record::Event {
                device: self.device.as_str().to_owned(),
                event: e.kind.as_str(),
                t: e.time,
                late,
            })
            .collect();
        self.send(world, idx, t, Body::Events(recs), truth, out);
    }

    // Over 80 lines: it draws from a seeded random stream in one fixed order, and
    // the same seed must give the same bytes (ARCHITECTURE.md). One straight
    // function keeps that order visible; split, a reordered draw would hide in a call.
    fn emit_hostile(
        &mut self,
        world: &World,
        idx: u32,
        t: i64,
        kind: Hostile,
        out: &mut VecDeque<Outgoing>,
    ) {
        let skew = self.skew(world);
        let s = self.plan.path.at(t);
        let (lat_e7, lon_e7) = e7(s.p);
        let fix = Fix {
            time: ts(t + skew),
            lat_e7,
            lon_e7,
            accuracy_m: 10,
            speed_cm_s: None,
            heading_cdeg: None,
            battery_pct: self.battery_pct(),
            flags: Flags::default(),
        };
        let topic = Topic::for_device(&self.device, RecordKind::Fix);
        let frame = |device: &DeviceId, fixes: Vec<Fix>| {
            let mut buf = BytesMut::new();
            let msg = Uplink {
                device: device.clone(),
                body: Body::Fixes(fixes),
            };
            protocol::binary::encode_oversized(&msg, &mut buf)
                .expect("simulated records are in range");
            buf.to_vec()
        };
        let device_json = self.device.as_str().to_owned();
        let time = format!("{:.3}", fix.time);
        let mut valid = 0;
        let mut fix_time = None;
        let mut position = None;
        let payload: Vec<u8> = match kind {
            Hostile::BadCrc => {
                let mut b = frame(&self.device, vec![fix]);
                let i = b.len() - 10;
                b[i] ^= 0x5A;
                b
            }
            Hostile::DeviceMismatch => {
                // Ids start at 1, so EM-000000 is never a real bracelet.
                let other = DeviceId::parse("EM-000000").expect("valid id");
                frame(&other, vec![fix])
            }
            Hostile::NanJson => format!(
                r#"{{"v":1,"device":"{device_json}","fixes":[{{"t":"{time}","lat":NaN,"lon":76.9,"acc":10}}]}}"#
            )
            .into_bytes(),
            Hostile::LatOutOfRange => format!(
                r#"{{"v":1,"device":"{device_json}","fixes":[{{"t":"{time}","lat":95.0,"lon":76.9,"acc":10}}]}}"#
            )
            .into_bytes(),
            Hostile::Truncated => {
                let mut b = frame(&self.device, vec![fix]);
                b.truncate(b.len() - 7);
                b
            }
            Hostile::UnknownVersion => {
                let mut b = frame(&self.device, vec![fix]);
                b[0] = 7;
                b
            }
            Hostile::HugeBatch => {
                let fixes = (0..1_500).map(|k| Fix { time: ts(t + skew - 1_500_000 + k * 1000), ..fix }).collect();
                frame(&self.device, fixes)
            }
            Hostile::Teleport => {
                // 20° north: about 2,200 km away, then back a minute later.
                // Regular fixes fall on whole seconds after the device's phase;
                // keep the teleport off that grid so it never shares a fix time.
                let nudge = i64::from((t - self.next_fix).rem_euclid(1000) == 0);
                let far = Fix {
                    time: ts(t + skew + nudge),
                    lat_e7: lat_e7 + 200_000_000,
                    ..fix
                };
                valid = 1;
                fix_time = Some(far.time);
                position = Some([f64::from(far.lon_e7) / 1e7, f64::from(far.lat_e7) / 1e7]);
                // A valid message: in the device's own format (another is
                // refused, `format_mismatch`).
                let msg = Uplink {
                    device: self.device.clone(),
                    body: Body::Fixes(vec![far]),
                };
                encode(self.format(world), &msg).to_vec()
            }
        };
        let truth = vec![Record::Malformed {
            device: self.device.as_str().to_owned(),
            topic: topic.clone(),
            at: ts(t),
            reason: kind.reason(),
            fix_time,
            position,
        }];
        self.push(
            out,
            Outgoing {
                at: t,
                device: idx,
                topic,
                payload: Bytes::from(payload),
                valid_fixes: valid,
                events: 0,
                heartbeats: 0,
                truth,
            },
        );
    }
}

impl Phone {
    fn step(
        &mut self,
        world: &World,
        clock: &Clock,
        end: i64,
        idx: u32,
        out: &mut VecDeque<Outgoing>,
    ) -> bool {
        let t = self.next_fix;
        if t >= end {
            return false;
        }
        let day = clock.day_of(t);
        if day != self.day {
            self.day = day;
            self.path = victim_day(world.config.seed, clock, &world.victims[self.victim], day);
        }
        self.next_fix = t + FIX_INTERVAL_S * 1000;
        let s = self.path.at(t);
        let (q, acc, _, speed, heading) =
            measure(&mut self.noise, s.p, s.speed, s.heading, s.indoor);
        let (lat_e7, lon_e7) = e7(q);
        let fix = Fix {
            // OwnTracks carries whole seconds.
            time: ts(t - t.rem_euclid(1000)),
            lat_e7,
            lon_e7,
            accuracy_m: acc,
            // OwnTracks carries whole km/h.
            speed_cm_s: speed
                .map(|v| ((f64::from(v) * 0.036).round() * 100_000.0 / 3_600.0).round() as u16),
            heading_cdeg: heading.map(|h| (h / 100) * 100),
            battery_pct: Some(80),
            flags: Flags::default(),
        };
        let loc = protocol::owntracks::Location {
            fix,
            tid: Some("vp".into()),
            trigger: Some("t".into()),
        };
        out.push_back(Outgoing {
            at: t,
            device: idx,
            topic: Topic::for_device(&self.device, RecordKind::Fix),
            payload: Bytes::from(protocol::owntracks::encode(&loc)),
            valid_fixes: 1,
            events: 0,
            heartbeats: 0,
            truth: Vec::new(),
        });
        true
    }
}
