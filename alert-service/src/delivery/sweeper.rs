//! The sweeper: sends again what no sender holds once its lease has ended
//! (a crash, a lost connection, a queue that was full), every second or when
//! woken, per channel. Each send takes a new lease, claimed behind the
//! service lease's fence: a node that lost it claims nothing more. It also
//! keeps the backlog gauges (pending deliveries, the oldest one's age)
//! current.

use super::{Channel, Delivery, DeliveryRow, Queues, Senders};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Sweeps every channel until `stop` (or a sender is gone, or the fence
/// refused a claim), and keeps the backlog gauges (pending deliveries and
/// the oldest one's age) current.
pub(crate) async fn run(s: Senders, queues: Queues, wake: Arc<Notify>, stop: CancellationToken) {
    let mut next_backlog = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = wake.notified() => {}
            _ = stop.cancelled() => return,
        }
        if tokio::time::Instant::now() >= next_backlog {
            backlog(&s).await;
            next_backlog = tokio::time::Instant::now() + BACKLOG_EVERY;
        }
        for channel in Channel::ALL {
            if !sweep(&s, channel, queues.of(channel)).await {
                return;
            }
        }
    }
}

/// Sets the backlog gauges from the outbox: what is pending per channel and
/// how old the oldest is. A failed read leaves them as they were (and the
/// sweep's own failure is logged).
async fn backlog(s: &Senders) {
    let rows: Result<Vec<(String, i64, f64)>, _> = sqlx::query_as(
        "SELECT channel, count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 \
         FROM alert_deliveries WHERE state = 'pending' GROUP BY channel",
    )
    .fetch_all(&s.pool)
    .await;
    let Ok(rows) = rows else { return };
    for channel in Channel::ALL {
        let (n, age) = rows
            .iter()
            .find(|(c, ..)| c == channel.as_str())
            .map_or((0, 0.0), |(_, n, age)| (*n, *age));
        let label = [channel.as_str()];
        s.metrics
            .deliveries_pending
            .with_label_values(&label)
            .set(n);
        s.metrics
            .delivery_oldest_pending
            .with_label_values(&label)
            .set(age.max(0.0));
    }
}

/// Claims up to `room` due deliveries of `channel`, each with a lease of
/// `delivery_lease_s`, behind the fence: a node that lost the service lease
/// (paused, partitioned) claims nothing more.
async fn claim(s: &Senders, channel: Channel, room: i64) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let mut tx = s.fence.begin(&s.pool).await?;
    let rows = sqlx::query_as(
        "UPDATE alert_deliveries d SET next_attempt_at = now() + $1 * interval '1 second' \
         FROM (SELECT id FROM alert_deliveries WHERE state = 'pending' AND next_attempt_at <= now() \
               AND channel = $3 ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) due \
         WHERE d.id = due.id \
         RETURNING d.id, d.alert_id, d.version, d.channel, d.target, d.payload, d.attempts, d.live_event_at",
    )
    .bind(i64::from(s.cfg.delivery_lease_s))
    .bind(room)
    .bind(channel.as_str())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Sends what is due on one channel, as much as its queue has room for (a
/// lease runs while queued). False when the sender is gone or this node was
/// fenced.
async fn sweep(s: &Senders, channel: Channel, q: &mpsc::Sender<Delivery>) -> bool {
    loop {
        let room = q.capacity().min(1_000) as i64;
        if room == 0 {
            return true;
        }
        let rows = match claim(s, channel, room).await {
            Ok(r) => r,
            Err(e) if store::fenced(&e) => {
                tracing::error!(
                    "the delivery sweeps were fenced: another emtrack is the active node; this one claims no more deliveries"
                );
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, channel = channel.as_str(), "delivery sweep failed; will retry");
                return true;
            }
        };
        let n = rows.len();
        for row in rows {
            let d = match Delivery::try_from(row) {
                Ok(d) => d,
                Err(e) => {
                    // Not ours to send: its lease keeps it from every sweep
                    // for a while, and the error says which value is wrong.
                    tracing::error!(error = %e, "delivery skipped");
                    continue;
                }
            };
            // Still with a sender (slow, not lost): its lease was just renewed.
            if !s.held.hold(d.id) {
                continue;
            }
            if q.send(d).await.is_err() {
                return false;
            }
        }
        if (n as i64) < room {
            return true;
        }
    }
}
