//! The running pipeline: the poll task ([`crate::consumer`]) and the
//! device-sharded workers ([`crate::worker`]), their shared [`Context`], and
//! [`Ingest`], the handle the service starts and stops.

use crate::config::IngestConfig;
use crate::consumer::Consumer;
use crate::metrics::Metrics;
use crate::rebuild::{self, Rebuilt};
use crate::writer::Writer;
use crate::{closures, worker};
use bus::ObservedTx;
use geofence::Transition;
use reference::SharedCore;
use rumqttc::{AsyncClient, Publish};
use sqlx::PgPool;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the pipeline's tasks share.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) cfg: IngestConfig,
    /// The engine and registry (locked to check, judge and rebuild).
    pub(crate) core: SharedCore,
    pub(crate) writer: Writer,
    pub(crate) metrics: Metrics,
    /// What each commit stored, for the alert service.
    pub(crate) observed: ObservedTx,
    /// Connected to the broker and subscribed.
    pub(crate) subscribed: Arc<AtomicBool>,
    /// Reconnections on which the broker had lost the session.
    pub(crate) session: Arc<SessionLoss>,
}

/// Reconnections on which the broker no longer had emtrack's persistent
/// session: someone connected with its client id and a clean session (a
/// takeover), or the broker lost its persistence. Messages the broker held
/// for emtrack then are gone; see README, "The broker lost emtrack's
/// session".
#[derive(Debug, Default)]
pub struct SessionLoss {
    count: AtomicU64,
    /// Wall clock of the last loss (ms).
    last_ms: AtomicI64,
}

impl SessionLoss {
    pub(crate) fn record(&self, at_ms: i64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last_ms.store(at_ms, Ordering::Relaxed);
    }

    /// How many times, and when last (ms); `None` if never.
    pub fn lost(&self) -> Option<(u64, i64)> {
        let n = self.count.load(Ordering::Relaxed);
        (n > 0).then(|| (n, self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Why ingest stopped other than by being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestError {
    /// A worker ended unexpectedly (a panic: a bug). Its messages were never
    /// acked, so the broker redelivers them to the next session.
    WorkerStopped,
}

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngestError::WorkerStopped => write!(
                f,
                "an ingest worker stopped unexpectedly (see the log); unacked messages will be redelivered"
            ),
        }
    }
}

impl std::error::Error for IngestError {}

/// The ingest pipeline, before and while it runs.
#[derive(Clone, Debug)]
pub struct Ingest {
    ctx: Arc<Context>,
}

impl Ingest {
    /// A pipeline on `pool` judging with `core`, publishing on `observed`,
    /// writing while `fence` holds.
    pub fn new(
        cfg: IngestConfig,
        pool: PgPool,
        core: SharedCore,
        metrics: Metrics,
        observed: ObservedTx,
        fence: store::Fence,
    ) -> Ingest {
        Ingest {
            ctx: Arc::new(Context {
                cfg,
                core,
                writer: Writer::new(pool, metrics.clone(), fence),
                metrics,
                observed,
                subscribed: Arc::new(AtomicBool::new(false)),
                session: Arc::default(),
            }),
        }
    }

    /// True while connected to the broker and subscribed (for `/readyz`).
    pub fn subscribed(&self) -> Arc<AtomicBool> {
        self.ctx.subscribed.clone()
    }

    /// Lost broker sessions (for `/readyz`).
    pub fn session_loss(&self) -> Arc<SessionLoss> {
        self.ctx.session.clone()
    }

    /// Ingest's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }

    /// Replays stored fixes into the engine after a restart (see
    /// [`crate::rebuild`]). Call once, before [`Ingest::run`].
    pub async fn rebuild(&self) -> Result<Rebuilt, sqlx::Error> {
        let done = rebuild::rebuild(
            &self.ctx.writer.pool,
            &self.ctx.core,
            self.ctx.cfg.rebuild_lookback,
        )
        .await?;
        self.ctx.metrics.rebuild_fixes.inc_by(done.fixes);
        Ok(done)
    }

    /// Stores and publishes the episodes that reference changes close,
    /// until the reference loader drops `closures` or `stop`.
    pub async fn record_closures(
        &self,
        closures: mpsc::Receiver<Vec<Transition>>,
        stop: CancellationToken,
    ) {
        closures::run(self.ctx.clone(), closures, stop).await;
    }

    /// Consumes until `stop`, then drains: stops taking messages, lets the
    /// workers commit what they hold, flushes their acks, and disconnects.
    /// A worker that ends before `stop` (a panic) would leave its messages
    /// held and the consumer stalled: it cancels `stop` and makes this
    /// return an error, so that a supervisor restarts the service and the
    /// broker redelivers.
    pub async fn run(&self, stop: CancellationToken) -> Result<(), IngestError> {
        let cfg = &self.ctx.cfg;
        let (client, eventloop) = AsyncClient::new(cfg.mqtt_options(), cfg.request_capacity());
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Vec<Publish>>();
        let mut txs = Vec::new();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..cfg.workers.max(1) {
            let (tx, rx) = mpsc::channel::<Publish>(cfg.max_in_flight.max(1));
            txs.push(tx);
            workers.spawn(worker::run(rx, self.ctx.clone(), done_tx.clone()));
        }
        drop(done_tx);
        let watch_stop = stop.clone();
        let watcher = tokio::spawn(async move {
            let mut failed = None;
            while let Some(r) = workers.join_next().await {
                if r.is_err() || !watch_stop.is_cancelled() {
                    tracing::error!(
                        "a worker stopped unexpectedly; shutting down so that the broker redelivers"
                    );
                    failed = Some(IngestError::WorkerStopped);
                    watch_stop.cancel();
                }
            }
            failed
        });
        Consumer::new(self.ctx.clone(), client, txs)
            .run(eventloop, done_rx, stop)
            .await;
        match watcher.await {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e),
            Err(_) => Err(IngestError::WorkerStopped),
        }
    }
}
