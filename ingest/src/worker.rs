//! A worker: one shard of devices, so one device's messages are handled in
//! the order the broker delivered them. It closes a batch on `max_batch`
//! messages or a `linger` that starts at the batch's first message, then
//! takes it through the stages: [`check`] → [`rows`] → [`judge`] →
//! [`writer`] → the bus, and hands it back for acking.

use crate::check;
use crate::device_state::{self, DevState};
use crate::judge;
use crate::pipeline::Context;
use crate::rows::{self, Rows, States};
use crate::writer::Fenced;
use bus::Observed;
use rumqttc::Publish;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::now_ms;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Batches numbered across the workers, for the logs.
static NEXT_BATCH: AtomicU64 = AtomicU64::new(1);

/// Batches until the queue closes; each committed batch goes to `done`.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<Publish>,
    ctx: Arc<Context>,
    done: mpsc::UnboundedSender<Vec<Publish>>,
) {
    let mut states = States::default();
    let mut last_census = Instant::now();
    // This worker's share of the devices-seen gauge.
    let mut counted = 0i64;
    loop {
        // The census runs every 10 s, batches or not: a fleet gone quiet
        // must show as no device online.
        if last_census.elapsed() > CENSUS_EVERY {
            last_census = Instant::now();
            let n = device_state::census(&states);
            ctx.metrics.devices_online.add(n - counted);
            counted = n;
        }
        let batch = match tokio::time::timeout(CENSUS_EVERY, rx.recv()).await {
            Ok(Some(first)) => next_batch(first, &mut rx, &ctx).await,
            Ok(None) => break,
            Err(_) => continue,
        };
        // Every log line of the batch carries its number and size.
        let span = tracing::info_span!(
            "batch",
            n = NEXT_BATCH.fetch_add(1, Ordering::Relaxed),
            messages = batch.len()
        );
        if process(&ctx, &mut states, &batch)
            .instrument(span)
            .await
            .is_err()
        {
            // Fenced: another node is active. Never acked, the batch goes
            // to that node; this one stops with its lease.
            continue;
        }
        // Committed: the poll task acks them.
        if done.send(batch).is_err() {
            break;
        }
    }
    ctx.metrics.devices_online.sub(counted);
}

/// How often the devices-online census runs.
const CENSUS_EVERY: Duration = Duration::from_secs(10);

/// The batch that `first` opens: up to `max_batch` messages, waiting at
/// most `linger` after the first.
async fn next_batch(
    first: Publish,
    rx: &mut mpsc::Receiver<Publish>,
    ctx: &Context,
) -> Vec<Publish> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + ctx.cfg.linger;
    while batch.len() < ctx.cfg.max_batch {
        match rx.try_recv() {
            Ok(m) => {
                batch.push(m);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => batch.push(m),
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

/// One batch, from payloads to committed rows and the bus; `Fenced` if this
/// node is no longer the active one (nothing was written: do not ack).
async fn process(ctx: &Context, states: &mut States, batch: &[Publish]) -> Result<(), Fenced> {
    let mut refused = Vec::new();
    let decoded = check::decode(batch, &mut refused);
    let checked = {
        let core = ctx.core.lock();
        check::check(
            &ctx.cfg,
            &core.registry,
            batch,
            decoded,
            now_ms(),
            &mut refused,
        )
    };
    let checked = drop_handled(ctx, checked).await;
    load_unseen(ctx, states, &checked).await;
    let maybe = rows::maybe_stored(&checked, states);
    let stored = if maybe.is_empty() {
        rows::StoredFixes::default()
    } else {
        ctx.writer
            .held("look up duplicates", || {
                rows::stored_among(&ctx.writer.pool, &maybe)
            })
            .await
            .unwrap_or_else(|e| {
                // Storage still refuses duplicate rows; only the judging may see them.
                tracing::error!(error = %e, "cannot look up duplicates");
                rows::StoredFixes::default()
            })
    };
    // What the batch changes in its devices' state is undone if the
    // database refuses it: its fixes were never stored, and a replay must
    // find the devices as they were.
    let before: Vec<(Arc<str>, DevState)> = checked
        .iter()
        .filter_map(|c| Some((c.dev.name.clone(), *states.get(&*c.dev.name)?)))
        .collect();
    let mut rows = rows::build(&checked, states, &stored, &ctx.cfg, refused);
    let eval_start = Instant::now();
    if !rows.messages.is_empty() {
        judge::batch(&mut ctx.core.lock(), &checked, &mut rows);
    }
    ctx.metrics
        .evaluation_seconds
        .observe(eval_start.elapsed().as_secs_f64());
    let commit_start = Instant::now();
    let written = match ctx.writer.commit(&rows, &checked).await {
        Ok(w) => w,
        Err(e) => {
            for (name, st) in before {
                states.insert(name, st);
            }
            if store::fenced(&e) {
                tracing::error!(error = %e, messages = batch.len(), "not the active node any more: batch left unacked");
                return Err(Fenced);
            }
            return ctx.writer.quarantine(batch, &e).await;
        }
    };
    ctx.metrics
        .commit_seconds
        .observe(commit_start.elapsed().as_secs_f64());
    let committed = now_ms();
    record(ctx, batch.len(), &rows, written, committed);
    publish(ctx, rows, committed).await;
    Ok(())
}

/// Drops the messages the broker sent again (DUP, or retained on a new
/// subscription) that are already in `messages`: handled before, they are
/// neither stored nor judged nor counted again.
async fn drop_handled(ctx: &Context, mut checked: Vec<check::Checked>) -> Vec<check::Checked> {
    if !checked.iter().any(|c| c.custody.repeat) {
        return checked;
    }
    let handled = ctx
        .writer
        .held("look up repeated messages", || {
            rows::handled_before(&ctx.writer.pool, &checked)
        })
        .await
        .unwrap_or_else(|e| {
            // Storage is idempotent: they are only judged again.
            tracing::error!(error = %e, "cannot look up repeated messages");
            FxHashSet::default()
        });
    let before = checked.len();
    // Only a repeat can have been handled: the others build no key.
    checked.retain(|c| {
        !c.custody.repeat
            || !handled.contains(&(c.custody.sha256, c.custody.stored_topic().to_owned()))
    });
    ctx.metrics
        .messages_repeated
        .inc_by((before - checked.len()) as u64);
    checked
}

/// Loads the stored state of devices this worker has not seen yet in this
/// process.
async fn load_unseen(ctx: &Context, states: &mut States, checked: &[check::Checked]) {
    let unseen: Vec<String> = checked
        .iter()
        .filter(|c| !states.contains_key(&*c.dev.name))
        .map(|c| c.dev.name.to_string())
        .collect::<FxHashSet<_>>()
        .into_iter()
        .collect();
    if unseen.is_empty() {
        return;
    }
    let loaded = ctx
        .writer
        .held("load device state", || {
            device_state::load(&ctx.writer.pool, &unseen)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot load device state; starting these devices afresh");
            FxHashMap::default()
        });
    for c in checked {
        if !states.contains_key(&*c.dev.name) {
            let s: DevState = loaded.get(&*c.dev.name).copied().unwrap_or_default();
            states.insert(c.dev.name.clone(), s);
        }
    }
}

/// Counts a committed batch (once per batch, not per row).
fn record(
    ctx: &Context,
    messages: usize,
    rows: &Rows,
    written: crate::writer::Written,
    committed: i64,
) {
    let m = &ctx.metrics;
    m.batch_size.observe(messages as f64);
    for t in &rows.live_fix_ms {
        m.ingest_lag_seconds
            .observe((committed - t).max(0) as f64 / 1000.0);
    }
    m.fixes_accepted.inc_by(written.fixes);
    let inserted_or_not = (rows.fixes.len() - rows.replacing()) as u64;
    m.fixes_duplicate
        .inc_by(rows.duplicates + inserted_or_not.saturating_sub(written.fixes));
    for f in &rows.fixes {
        if let Some(direction) = f.clock.direction() {
            m.fixes_clock_suspect.with_label_values(&[direction]).inc();
        }
    }
    for f in &rows.findings {
        m.findings.with_label_values(&[f.kind.as_str()]).inc();
    }
    m.fix_conflicts.inc_by(written.conflicts);
    m.fixes_suspect
        .inc_by(rows.fixes.iter().filter(|f| f.suspect).count() as u64);
    m.events_stored.inc_by(written.events);
    m.heartbeats.inc_by(rows.heartbeats);
    for reason in &written.refused {
        m.rejected.with_label_values(&[reason]).inc();
    }
    for t in &rows.transitions {
        m.transitions
            .with_label_values(&[t.transition.kind.as_str()])
            .inc();
    }
}

/// Tells the alert service what the commit stored. Bounded: a slow alert
/// service holds the worker (and so the acks) back.
async fn publish(ctx: &Context, rows: Rows, committed: i64) {
    let observed = Observed {
        committed_ms: committed,
        transitions: rows.transitions,
        events: rows.alert_events,
        reports: rows.reports,
        findings: rows.bus_findings,
        phones: rows.phones,
    };
    if !observed.is_empty() {
        // Closed only when the alert service stopped; the store has it all
        // and a restart re-reads it.
        let _ = ctx.observed.send(observed).await;
    }
}
