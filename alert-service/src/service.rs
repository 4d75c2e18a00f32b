//! The alert service's task: it owns the `alerts` core (router and book,
//! silence wheel, GPS watch). Each step:
//! 1. takes what ingest committed ([`bus::Observed`]: transitions, device
//!    events, one report per message), officers' commands, the watched
//!    fleet ([`bus::Fleet`]) and the clock (silence wheel, escalation
//!    deadlines);
//! 2. writes every alert change, its `alert_events` line and its deliveries
//!    (the outbox) in one transaction, and advances `alert_progress`
//!    ([`crate::outbox`]);
//! 3. only then hands the deliveries to the senders ([`crate::delivery`])
//!    and the in-process broadcast (for SSE).

use crate::config::AlertConfig;
use crate::delivery::{Channel, Delivery, Held, Queues};
use crate::handle::{ActionError, Command, Reply};
use crate::metrics::Metrics;
use crate::outbox::{self, Changes, Stored};
use crate::restore;
use alerts::{
    Actor, Alert, AlertEvent, AlertId, AlertState, AlertType, Change, DeviceEvent, GpsEvent,
    GpsWatch, Input, OutageEvent, OutageWatch, Raised, Router, Severity, Silence, SilenceEvent,
    SilenceWheel,
};
use bus::{FindingKind, Fleet, FleetRx, Observed, ObservedRx, Report};
use rustc_hash::{FxHashMap, FxHashSet};
use sqlx::PgPool;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Backoff, Millis, now_ms, retry_transient};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Why the alert service stopped other than by being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertError {
    /// The fence refused its changes: another emtrack is the active node
    /// (two services would assign the same alert ids).
    Fenced,
}

impl fmt::Display for AlertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertError::Fenced => write!(
                f,
                "the alert service's changes were fenced: another emtrack is the active node"
            ),
        }
    }
}

impl std::error::Error for AlertError {}

/// The devices watched for silence, by engine id: bracelets, and the
/// protected persons' phones.
#[derive(Default)]
struct Watchlist {
    /// Engine id → subject (0: none).
    subject_of: Vec<u64>,
    /// A phone's engine id → the subjects it is protected from.
    protects: FxHashMap<u32, Vec<u64>>,
    /// Engine id → protocol id.
    names: FxHashMap<u32, Arc<str>>,
    watched: FxHashSet<u32>,
}

impl Watchlist {
    fn set_subject(&mut self, device: u32, subject: u64) {
        let i = device as usize;
        if self.subject_of.len() <= i {
            self.subject_of.resize(i + 1, 0);
        }
        self.subject_of[i] = subject;
    }

    fn subject(&self, device: u32) -> Option<u64> {
        self.subject_of
            .get(device as usize)
            .copied()
            .filter(|s| *s != 0)
    }
}

/// Where stored deliveries go.
pub(crate) struct Outlets {
    pub(crate) queues: Queues,
    pub(crate) sweep: Arc<Notify>,
    pub(crate) broadcast: broadcast::Sender<Arc<str>>,
    pub(crate) held: Held,
}

/// The task's state.
pub(crate) struct Alerter {
    pub(crate) pool: PgPool,
    pub(crate) metrics: Metrics,
    pub(crate) cfg: AlertConfig,
    pub(crate) router: Router,
    wheel: SilenceWheel,
    /// Silences held, and fleet outages.
    outage: OutageWatch,
    /// Phones whose silence was raised and that have not been heard since.
    silent_phones: FxHashSet<u32>,
    gps: GpsWatch,
    watch: Watchlist,
    fleet: FleetRx,
    /// The bracelet each alert is about (for notifications).
    devices: FxHashMap<AlertId, String>,
    /// The fix or event that confirmed each live alert (ms): its latency
    /// is measured from here.
    triggers: FxHashMap<AlertId, i64>,
    /// Everything committed up to here is in the book.
    watermark: i64,
    stored_watermark: i64,
    out: Outlets,
    open: FxHashMap<AlertId, (AlertType, Severity)>,
    replies: Vec<(Reply, Result<(), ActionError>)>,
    /// A change the database refused: `alert_progress` stays where it is, so
    /// that a restart re-reads from before it.
    refused: bool,
    /// Checked first in each transaction: only the active node writes.
    fence: store::Fence,
    /// The fence refused a change: this node stops.
    fenced: bool,
}

impl Alerter {
    /// The service on a restored book; watching starts from the fleet as it
    /// is now (see [`Alerter::start_watching`]).
    pub(crate) fn new(
        pool: PgPool,
        metrics: Metrics,
        cfg: AlertConfig,
        restored: restore::Restored,
        fleet: FleetRx,
        out: Outlets,
        fence: store::Fence,
    ) -> Alerter {
        let now = now_ms();
        let open: FxHashMap<AlertId, (AlertType, Severity)> = restored
            .router
            .book()
            .alerts()
            .filter(|a| a.state != AlertState::Resolved)
            .map(|a| (a.id, (a.key.kind, a.severity)))
            .collect();
        let a = Alerter {
            wheel: SilenceWheel::new(4_096, (now / 1000) as u64),
            outage: OutageWatch::new(cfg.outage()),
            silent_phones: FxHashSet::default(),
            gps: GpsWatch::new(cfg.location_failure_after_s),
            router: restored.router,
            devices: restored.devices,
            watermark: restored.processed_to,
            stored_watermark: restored.processed_to,
            pool,
            metrics,
            cfg,
            watch: Watchlist::default(),
            fleet,
            triggers: FxHashMap::default(),
            out,
            open,
            replies: Vec::new(),
            refused: false,
            fence,
            fenced: false,
        };
        a.count_open();
        a
    }

    /// Watches every assigned bracelet from now: after an outage of emtrack,
    /// a device gets one allowance to be heard (its backlog is still in the
    /// broker) before it counts as silent. Each device's location-failure
    /// clock starts from its last stored fix. Devices with an open
    /// `no_communication`, `protection_degraded` (the phone) or
    /// `location_failure` alert are marked, so that
    /// their next message or fix resolves it.
    pub(crate) fn start_watching(&mut self, last_fixes: Vec<(String, Option<Millis>)>) {
        let fleet = self.fleet.borrow_and_update().clone();
        self.sync_fleet(&fleet);
        let by_name: FxHashMap<&str, u32> = fleet
            .bracelets
            .iter()
            .map(|w| (&*w.name, w.device))
            .chain(fleet.phones.iter().map(|p| (&*p.name, p.device)))
            .collect();
        for (d, last_fix) in last_fixes {
            if let (Some(id), Some(f)) = (by_name.get(d.as_str()), last_fix) {
                self.gps.start(*id, (f.0 / 1000).max(0) as u64);
            }
        }
        // The subject's bracelet now, for alerts stored without a device.
        let bracelet: FxHashMap<u64, u32> = fleet
            .bracelets
            .iter()
            .map(|w| (w.subject, w.device))
            .collect();
        for (kind, silence) in [
            (AlertType::NoCommunication, true),
            (AlertType::ProtectionDegraded, true),
            (AlertType::LocationFailure, false),
        ] {
            for id in self.router.book().ids_of(kind) {
                let Some(a) = self.router.book().get(id) else {
                    continue;
                };
                if a.state == AlertState::Resolved {
                    continue;
                }
                // The alert's own bracelet if it named one (it may be
                // retired or reassigned since: then nothing is marked), else
                // the subject's bracelet now.
                let dev = match self.devices.get(&id) {
                    Some(d) => by_name.get(d.as_str()).copied(),
                    None if kind == AlertType::ProtectionDegraded => None,
                    None => bracelet.get(&a.key.subject).copied(),
                };
                match (dev, silence) {
                    (Some(d), true) => self.wheel.mark_silent(d),
                    (Some(d), false) => self.gps.mark_failing(d),
                    (None, _) => {}
                }
            }
        }
    }

    /// Follows the fleet: newly assigned bracelets are watched from now,
    /// unassigned or retired ones no longer.
    fn sync_fleet(&mut self, fleet: &Fleet) {
        let now_s = (now_ms() / 1000) as u64;
        let mut now_watched = FxHashSet::default();
        let devices = fleet
            .bracelets
            .iter()
            .map(|w| (w.device, &w.name, w.report_interval_s))
            .chain(
                fleet
                    .phones
                    .iter()
                    .map(|p| (p.device, &p.name, p.report_interval_s)),
            );
        for (device, name, interval) in devices {
            let allowance = interval.saturating_add(self.cfg.silence_buffer_s);
            let from = if self.watch.watched.contains(&device) {
                0
            } else {
                now_s
            };
            self.wheel.watch(device, allowance, from);
            self.watch.names.insert(device, name.clone());
            now_watched.insert(device);
        }
        for w in &fleet.bracelets {
            self.watch.set_subject(w.device, w.subject);
        }
        self.watch.protects = fleet
            .phones
            .iter()
            .map(|p| (p.device, p.protects.clone()))
            .collect();
        for id in self.watch.watched.difference(&now_watched) {
            self.wheel.unwatch(*id);
            self.outage.forget(*id);
            self.silent_phones.remove(id);
        }
        self.watch.watched = now_watched;
    }

    /// Runs until `stop` or the end of the commit stream; stores what it
    /// took, then releases the lock.
    pub(crate) async fn run(
        mut self,
        mut rx: ObservedRx,
        mut commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
    ) -> Result<(), AlertError> {
        let mut buf = Vec::with_capacity(256);
        let mut last_evict = Instant::now();
        let mut result = Ok(());
        loop {
            let now = now_ms();
            // Wake at the next second (silence wheel) or escalation deadline.
            let next = self
                .router
                .book()
                .next_deadline()
                .unwrap_or(i64::MAX)
                .min((now / 1000 + 1) * 1000);
            let wait = Duration::from_millis((next - now).clamp(1, 1000) as u64);
            tokio::select! {
                n = rx.recv_many(&mut buf, 256) => {
                    if n == 0 {
                        break;
                    }
                    let now = now_ms();
                    for o in buf.drain(..) {
                        self.apply(o, now);
                    }
                }
                c = commands.recv() => {
                    if let Some(c) = c {
                        self.command(c, now_ms());
                    }
                }
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => break,
            }
            self.tick(now_ms());
            self.flush().await;
            if self.fenced {
                tracing::error!("another emtrack is the active node; the alert service stops");
                result = Err(AlertError::Fenced);
                break;
            }
            if last_evict.elapsed() > Duration::from_secs(600) {
                last_evict = Instant::now();
                self.evict(now_ms());
            }
        }
        // What was received but not stored is re-read after a restart.
        if !self.fenced {
            self.flush().await;
        }
        result
    }

    /// Drops long-resolved alerts from memory (the store keeps them).
    fn evict(&mut self, now: i64) {
        let before = now - 3_600_000 - i64::from(self.cfg.replay_s) * 1000;
        if self.router.forget_resolved(before) > 0 {
            let book = self.router.book();
            self.devices.retain(|id, _| book.get(*id).is_some());
            self.triggers.retain(|id, _| book.get(*id).is_some());
        }
    }

    /// Takes what one commit stored.
    pub(crate) fn apply(&mut self, o: Observed, now: i64) {
        for t in &o.transitions {
            let tr = t.transition;
            let raised = self.router.handle(Input::violation(&tr), now);
            self.note(
                raised,
                t.device.as_deref(),
                Some(tr.confirmed_at.as_millisecond()),
            );
        }
        for e in &o.events {
            let Some(event) = DeviceEvent::of(e.kind) else {
                continue;
            };
            let input = Input::Event {
                subject: e.subject,
                event,
                at_ms: e.at_ms,
                historical: e.late,
            };
            let raised = self.router.handle(input, now);
            self.note(raised, Some(&e.device), Some(e.at_ms));
        }
        for f in &o.findings {
            let event = match f.kind {
                FindingKind::ClockAhead | FindingKind::ClockBehind => DeviceEvent::ClockFault,
                FindingKind::ConflictingFix => DeviceEvent::ConflictingRecord,
            };
            let input = Input::Event {
                subject: f.subject,
                event,
                at_ms: f.at_ms,
                historical: false,
            };
            let raised = self.router.handle(input, now);
            self.note(raised, Some(&f.device), Some(f.at_ms));
        }
        let arrived_s = (o.committed_ms / 1000).max(0) as u64;
        for r in &o.reports {
            self.report(r, arrived_s, now);
        }
        for phone in &o.phones {
            self.heard(*phone, arrived_s, now);
        }
        self.watermark = self.watermark.max(o.committed_ms);
    }

    /// One message of a bracelet: it is alive, and it did or did not fix.
    fn report(&mut self, r: &Report, arrived_s: u64, now: i64) {
        self.watch.set_subject(r.device, r.subject);
        if let Some(SilenceEvent::BackOnline { .. }) = self.wheel.seen(r.device, arrived_s) {
            // A silence still held is raised first, then resolved.
            let mut ev = Vec::new();
            self.outage.back(r.device, arrived_s, &mut ev);
            self.outage_events(ev, now);
            self.router
                .handle(Input::BackOnline { subject: r.subject }, now);
        }
        let at_s = (r.time_ms / 1000).max(0) as u64;
        match self.gps.report(r.device, at_s, r.fix, r.motion) {
            Some(GpsEvent::Failure {
                last_fix_s, at_s, ..
            }) => {
                let input = Input::LocationFailure {
                    subject: r.subject,
                    last_fix_ms: last_fix_s as i64 * 1000,
                    at_ms: at_s as i64 * 1000,
                };
                let raised = self.router.handle(input, now);
                self.note(raised, Some(&r.name), None);
            }
            Some(GpsEvent::Restored { .. }) => {
                self.router
                    .handle(Input::LocationRestored { subject: r.subject }, now);
            }
            None => {}
        }
    }

    /// A protected person's phone was heard from: if it had been silent,
    /// the protection of the subjects it is protected from is restored.
    fn heard(&mut self, phone: u32, arrived_s: u64, now: i64) {
        if let Some(SilenceEvent::BackOnline { .. }) = self.wheel.seen(phone, arrived_s) {
            let mut ev = Vec::new();
            self.outage.back(phone, arrived_s, &mut ev);
            self.outage_events(ev, now);
            self.silent_phones.remove(&phone);
            // Restored for a subject once none of the phones protected from
            // them is silent.
            for subject in self.watch.protects.get(&phone).cloned().unwrap_or_default() {
                let other_silent = self.silent_phones.iter().any(|p| {
                    self.watch
                        .protects
                        .get(p)
                        .is_some_and(|s| s.contains(&subject))
                });
                if !other_silent {
                    self.router
                        .handle(Input::ProtectionRestored { subject }, now);
                }
            }
        }
    }

    /// Remembers the bracelet of a new alert (the notification names it, and
    /// a restart marks it) and what confirmed it.
    fn note(&mut self, raised: Option<Raised>, device: Option<&str>, trigger_ms: Option<i64>) {
        if let Some(Raised::New(id)) = raised {
            if let Some(d) = device {
                self.devices.insert(id, d.to_owned());
            }
            if let Some(t) = trigger_ms {
                self.triggers.insert(id, t);
            }
        }
    }

    fn command(&mut self, c: Command, now: i64) {
        let result = self
            .router
            .act(c.alert, c.officer, c.action, c.note, now)
            .map_err(ActionError::Book);
        self.replies.push((c.reply, result));
        // The duty desk resolved the fleet incident: the outage is over for
        // the watch too, and the silences still going on get their own
        // alerts after the hold.
        if self.outage.in_outage() && !self.router.has_open(alerts::FLEET, AlertType::FleetSilent) {
            let mut ev = Vec::new();
            self.outage.end((now / 1000).max(0) as u64, &mut ev);
            self.outage_events(ev, now);
        }
    }

    fn tick(&mut self, now: i64) {
        if self.fleet.has_changed().unwrap_or(false) {
            let fleet = self.fleet.borrow_and_update().clone();
            self.sync_fleet(&fleet);
        }
        let now_s = (now / 1000).max(0) as u64;
        let mut silent = Vec::new();
        self.wheel.poll(now_s, &mut silent);
        let mut ev = Vec::new();
        for s in silent {
            let SilenceEvent::NoCommunication {
                device,
                last_seen_s,
                ..
            } = s
            else {
                continue;
            };
            let subject = match self.watch.subject(device) {
                Some(s) => s,
                None if self.watch.protects.contains_key(&device) => 0,
                None => continue,
            };
            let s = Silence {
                subject,
                device,
                last_seen_s,
                at_s: now_s,
            };
            self.outage.silent(s, self.watch.watched.len(), &mut ev);
        }
        self.outage.poll(now_s, &mut ev);
        self.outage_events(ev, now);
        self.router.escalate_due(now);
    }

    /// A device's own silence: a bracelet's `no_communication`, or a
    /// phone's `protection_degraded` for each subject it is protected from.
    fn silent(&mut self, s: Silence, now: i64) {
        let last_seen_ms = s.last_seen_s as i64 * 1000;
        let inputs: Vec<Input> = match self.watch.protects.get(&s.device) {
            Some(subjects) => {
                self.silent_phones.insert(s.device);
                subjects
                    .iter()
                    .map(|&subject| Input::ProtectionDegraded {
                        subject,
                        last_seen_ms,
                    })
                    .collect()
            }
            // A phone no longer protecting anyone: nothing to raise.
            None if s.subject == alerts::FLEET => Vec::new(),
            None => vec![Input::Silent {
                subject: s.subject,
                last_seen_ms,
            }],
        };
        let name = self.watch.names.get(&s.device).cloned();
        for input in inputs {
            let raised = self.router.handle(input, now);
            self.note(raised, name.as_deref(), None);
        }
    }

    /// Raises what the outage watch released: a device's own silence, or
    /// the start or end of a fleet outage.
    fn outage_events(&mut self, events: Vec<OutageEvent>, now: i64) {
        for e in events {
            match e {
                OutageEvent::Silent(s) => self.silent(s, now),
                OutageEvent::Started { at_s, silent } => {
                    tracing::error!(
                        silent,
                        "fleet outage: many bracelets went silent at once (broker, network or emtrack); one incident for the duty desk"
                    );
                    self.metrics.fleet_outages.inc();
                    let input = Input::FleetSilence {
                        start: true,
                        at_ms: at_s as i64 * 1000,
                    };
                    self.router.handle(input, now);
                }
                OutageEvent::Quiet(_) => self.metrics.silences_absorbed.inc(),
                OutageEvent::Ended { at_s, absorbed } => {
                    tracing::warn!(absorbed, "fleet outage over");
                    self.metrics.silences_absorbed.inc_by(absorbed as u64);
                    let input = Input::FleetSilence {
                        start: false,
                        at_ms: at_s as i64 * 1000,
                    };
                    self.router.handle(input, now);
                }
            }
        }
        self.metrics
            .outage_silent
            .set(self.outage.outage_silent() as i64);
    }

    /// Stores the book's new events with their deliveries, then sends.
    pub(crate) async fn flush(&mut self) {
        let events = self.router.take_events();
        let replies = std::mem::take(&mut self.replies);
        if events.is_empty() {
            self.advance_idle().await;
            answer(replies, Ok(()));
            return;
        }
        // Every log line of this step carries its first alert and size.
        let span = tracing::info_span!(
            "alert_changes",
            first_alert = events.first().map(|e| e.alert.0),
            changes = events.len()
        );
        self.store_and_send(events, replies).instrument(span).await;
    }

    async fn store_and_send(
        &mut self,
        events: Vec<AlertEvent>,
        replies: Vec<(Reply, Result<(), ActionError>)>,
    ) {
        let alerts: FxHashMap<AlertId, Alert> = events
            .iter()
            .filter_map(|e| {
                self.router
                    .book()
                    .get(e.alert)
                    .cloned()
                    .map(|a| (e.alert, a))
            })
            .collect();
        let Some(stored) = self.store(&events, &alerts).await else {
            self.refuse(&events);
            answer(replies, Err(ActionError::NotStored));
            return;
        };
        if !self.refused {
            self.stored_watermark = self.stored_watermark.max(self.watermark);
        }
        for id in &stored.conflicts {
            self.metrics.alert_key_conflicts.inc();
            self.forget(*id);
        }
        self.count(&events, &alerts, &stored.conflicts);
        answer(replies, Ok(()));
        self.send(stored.deliveries).await;
    }

    /// Moves the re-read point along now and then even when nothing happens.
    async fn advance_idle(&mut self) {
        if self.refused || self.watermark <= self.stored_watermark + 10_000 {
            return;
        }
        let advanced = async {
            let mut tx = self.fence.begin(&self.pool).await?;
            outbox::advance(&mut *tx, self.watermark).await?;
            tx.commit().await
        };
        match advanced.await {
            Ok(()) => self.stored_watermark = self.watermark,
            Err(e) if store::fenced(&e) => self.fenced = true,
            Err(_) => {}
        }
    }

    /// Stores the changes, retrying transient errors; `None` if the
    /// database refused them.
    async fn store(
        &mut self,
        events: &[AlertEvent],
        alerts: &FxHashMap<AlertId, Alert>,
    ) -> Option<Stored> {
        let changes = Changes {
            events,
            alerts,
            devices: &self.devices,
            triggers: &self.triggers,
            processed_to: (!self.refused).then_some(self.watermark),
            lease_s: self.cfg.delivery_lease_s,
        };
        let r = retry_transient(
            Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            || outbox::store(&self.pool, &self.fence, &changes),
            |e, _| {
                self.metrics.alert_store_retries.inc();
                tracing::warn!(error = %e, "cannot store alerts; retrying");
            },
        )
        .await;
        match r {
            Ok(s) => Some(s),
            Err(e) if store::fenced(&e) => {
                // The node taking over re-reads these from the store.
                self.fenced = true;
                None
            }
            Err(e) => {
                tracing::error!(error = %e, alerts = alerts.len(), "the database refused alert changes; they are not stored and not sent");
                None
            }
        }
    }

    /// Not stored, so not sent. New alerts leave the book (a later change of
    /// theirs would refer to nothing); the re-read point stays, so a restart
    /// raises them again.
    fn refuse(&mut self, events: &[AlertEvent]) {
        self.refused = true;
        for e in events.iter().filter(|e| e.what == Change::Raised) {
            self.forget(e.alert);
        }
    }

    fn forget(&mut self, id: AlertId) {
        self.router.forget(id);
        self.devices.remove(&id);
        self.triggers.remove(&id);
    }

    /// Counts what was stored (raised, open, escalated, acknowledged).
    fn count(
        &mut self,
        events: &[AlertEvent],
        alerts: &FxHashMap<AlertId, Alert>,
        conflicts: &[AlertId],
    ) {
        let m = &self.metrics;
        for e in events.iter().filter(|e| !conflicts.contains(&e.alert)) {
            let Some(a) = alerts.get(&e.alert) else {
                continue;
            };
            match e.what {
                Change::Raised => {
                    m.alerts_raised
                        .with_label_values(&[a.key.kind.as_str(), a.severity.as_str()])
                        .inc();
                    self.open.insert(a.id, (a.key.kind, a.severity));
                }
                Change::Resolved { .. } => {
                    self.open.remove(&a.id);
                }
                Change::Escalated(l) => {
                    m.alert_escalations
                        .with_label_values(&[&l.to_string()])
                        .inc();
                }
                Change::Acknowledged if e.who != Actor::System => {
                    m.alert_ack_seconds
                        .observe((e.at_ms - a.raised_ms).max(0) as f64 / 1000.0);
                }
                Change::Acknowledged | Change::Repeated | Change::ConditionEnded => {}
            }
        }
        self.count_open();
    }

    fn count_open(&self) {
        let mut counts: FxHashMap<(AlertType, Severity), i64> = FxHashMap::default();
        for k in self.open.values() {
            *counts.entry(*k).or_default() += 1;
        }
        // Every type and severity, so a count that falls to 0 reads 0.
        for t in AlertType::ALL {
            for s in Severity::ALL {
                let n = counts.get(&(t, s)).copied().unwrap_or(0);
                self.metrics
                    .alerts_open
                    .with_label_values(&[t.as_str(), s.as_str()])
                    .set(n);
            }
        }
    }

    /// Hands stored deliveries to their senders and the broadcast. A full
    /// queue leaves the delivery to the sweeper (counted, never dropped).
    pub(crate) async fn send(&mut self, deliveries: Vec<Delivery>) {
        let mut spilled: Vec<i64> = Vec::new();
        // One broadcast per change (an MQTT change may go to several topics).
        let mut told: FxHashSet<(i64, i32)> = FxHashSet::default();
        for d in deliveries {
            if d.channel == Channel::Mqtt && told.insert((d.alert, d.version)) {
                let _ = self
                    .out
                    .broadcast
                    .send(Arc::from(String::from_utf8_lossy(&d.payload).into_owned()));
            }
            let channel = d.channel;
            let id = d.id;
            self.out.held.hold(id);
            match self.out.queues.of(channel).try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.out.held.release(&[id]);
                    self.metrics
                        .delivery_overflow
                        .with_label_values(&[channel.as_str()])
                        .inc();
                    spilled.push(id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.out.held.release(&[id]);
                }
            }
        }
        if !spilled.is_empty() {
            // The sweeper sends them as soon as the queue has room.
            if let Err(e) = crate::delivery::due_in(&self.pool, &spilled, Duration::ZERO).await {
                tracing::warn!(error = %e, n = spilled.len(), "overflowed deliveries wait for their lease to end");
            }
            self.out.sweep.notify_one();
        }
    }
}

fn answer(replies: Vec<(Reply, Result<(), ActionError>)>, stored: Result<(), ActionError>) {
    for (reply, result) in replies {
        let _ = reply.send(result.and(stored.clone()));
    }
}
