//! Episodes closed by a reference change (a rule or subject removed): the
//! reference loader hands them over, and they are stored and published like
//! every other transition (through [`insert_transitions`] and the bus), so
//! there is one road from the engine to `rule_transitions` and the alert
//! service.

use crate::judge;
use crate::pipeline::Context;
use crate::writer::insert_transitions;
use bus::{Observed, StoredTransition};
use geofence::Transition;
use std::sync::Arc;
use store::{Backoff, now_ms, retry_transient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Stores and publishes what `closures` brings, until its sender is gone or
/// `stop`. A stop while the database is down drops what is being retried, as
/// a kill would.
pub(crate) async fn run(
    ctx: Arc<Context>,
    mut closures: mpsc::Receiver<Vec<Transition>>,
    stop: CancellationToken,
) {
    while let Some(ts) = closures.recv().await {
        tokio::select! {
            _ = record(&ctx, ts) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn record(ctx: &Context, ts: Vec<Transition>) {
    let stored: Vec<StoredTransition> = {
        let core = ctx.core.lock();
        ts.into_iter()
            .map(|t| judge::stored(t, None, &core.registry))
            .collect()
    };
    let pool = &ctx.writer.pool;
    let r = retry_transient(
        Backoff::STEADY,
        || async {
            let mut tx = ctx.writer.fence.begin(pool).await?;
            insert_transitions(&mut tx, &stored).await?;
            tx.commit().await
        },
        |e, _| tracing::warn!(error = %e, "cannot store closed episodes; retrying"),
    )
    .await;
    if let Err(e) = r {
        // Refused outright: retrying would block every later change.
        tracing::error!(error = %e, closures = stored.len(), "the database refused the episodes closed by a reference change; they are not stored");
        return;
    }
    for t in &stored {
        ctx.metrics
            .transitions
            .with_label_values(&[t.transition.kind.as_str()])
            .inc();
    }
    // Closed only when the alert service stopped; a restart re-reads the store.
    let _ = ctx
        .observed
        .send(Observed {
            committed_ms: now_ms(),
            transitions: stored,
            ..Observed::default()
        })
        .await;
}
