//! Alert delivery: the senders behind the outbox (`alert_deliveries`).
//!
//! - **MQTT**: QoS 1 publishes on the service's own connection
//!   (`{client id}-alerts`, clean session). A delivery is `delivered` when the
//!   broker's PUBACK for it arrives. The request channel is a rendezvous
//!   (capacity 0), so at any time at most one publish is between this task
//!   and the event loop; that is what lets PUBACKs be matched to deliveries
//!   in order, and a broken connection forget exactly the publishes it lost
//!   (they are made due at once and the sweeper sends them again).
//! - **Webhooks**: HTTP POST of the JSON, signed with
//!   `X-Emtrack-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//!   with `Idempotency-Key: <alert id>-<version>` and `X-Emtrack-Alert-Id`.
//!   A failure is retried with exponential backoff (`webhook_backoff_ms`,
//!   doubling, capped); after the webhook's `max_attempts` the delivery is
//!   `dead` with its last error: the dead-letter record.
//! - **Sweeper**: sends again what no sender holds (its lease ended: a crash,
//!   a lost connection, a queue that was full). Each send takes a new lease.
//!
//! Every attempt and its outcome is counted and written to the row, so "did
//! the officer get it?" is a query.

use crate::config::AlertConfig;
use crate::metrics::Metrics;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use sha2::Sha256;
use sqlx::PgPool;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// One notification to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// `alert_deliveries.id`.
    pub id: i64,
    /// The alert.
    pub alert: i64,
    /// The alert's version this announces.
    pub version: i32,
    /// `mqtt` or `webhook`.
    pub channel: String,
    /// Topic, or webhook id.
    pub target: String,
    /// The JSON.
    pub payload: Bytes,
    /// Attempts made before this one.
    pub attempts: i32,
    /// Fix or event time of a live alert's raise (ms), for the latency.
    pub live_event_ms: Option<i64>,
}

/// Where alerts are published.
#[derive(Clone, Debug)]
pub struct MqttTarget {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id of the alert connection.
    pub client_id: String,
}

/// What the senders share.
#[derive(Clone, Debug)]
pub struct Senders {
    /// The database.
    pub pool: PgPool,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub cfg: AlertConfig,
    /// Deliveries a sender holds (queued or in flight): the sweeper leaves
    /// them alone even when their lease has run out.
    pub held: Held,
}

/// Delivery ids held in memory by a sender.
pub type Held = Arc<Mutex<rustc_hash::FxHashSet<i64>>>;

/// Marks `id` held; false if it already was.
pub fn hold(held: &Held, id: i64) -> bool {
    held.lock().unwrap_or_else(|e| e.into_inner()).insert(id)
}

/// Releases `ids`.
pub fn release(held: &Held, ids: &[i64]) {
    let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
    for id in ids {
        h.remove(id);
    }
}

/// Releases a held delivery when dropped (whatever way its task ends).
struct Holding<'a>(&'a Held, i64);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        release(self.0, &[self.1]);
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn observe_latency(m: &Metrics, channel: &str, live: Option<i64>) {
    if let Some(t) = live {
        m.alert_latency
            .with_label_values(&[channel])
            .observe((now_ms() - t).max(0) as f64 / 1000.0);
    }
}

/// Marks deliveries delivered, in batches.
async fn record_delivered(pool: PgPool, mut rx: mpsc::UnboundedReceiver<i64>) {
    let mut buf = Vec::new();
    while rx.recv_many(&mut buf, 1024).await > 0 {
        loop {
            let r = sqlx::query(
                "UPDATE alert_deliveries SET state = 'delivered', delivered_at = now(), attempts = attempts + 1, \
                     last_error = NULL WHERE id = ANY($1) AND state = 'pending'",
            )
            .bind(&buf)
            .execute(&pool)
            .await;
            match r {
                Ok(_) => break,
                Err(e) => {
                    // Not recorded yet: the sweeper would send them again
                    // (a duplicate the receiver drops by alert id and version).
                    tracing::warn!(error = %e, n = buf.len(), "cannot record deliveries; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        buf.clear();
    }
}

#[derive(Default)]
struct Tracking {
    /// Publishes handed to the event loop, not yet written (in order).
    queued: VecDeque<(i64, Option<i64>)>,
    /// Written, awaiting PUBACK, by packet id.
    inflight: HashMap<u16, (i64, Option<i64>)>,
    /// The publisher is inside `publish().await`: the last `queued` entry
    /// may not have reached the event loop yet.
    handing_over: bool,
}

/// Publishes MQTT deliveries until `stop`.
pub async fn mqtt(
    s: Senders,
    target: MqttTarget,
    mut rx: mpsc::Receiver<Delivery>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut o = MqttOptions::new(target.client_id, target.host, target.port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_clean_session(true);
    o.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(o, 0);
    let track = Arc::new(Mutex::new(Tracking::default()));
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tokio::spawn(record_delivered(s.pool.clone(), done_rx));

    // Publishes a lost connection took: due again at once (not at the end
    // of their lease), and the sweeper woken.
    let (lost_tx, mut lost_rx) = mpsc::unbounded_channel::<Vec<i64>>();
    let requeue_pool = s.pool.clone();
    tokio::spawn(async move {
        while let Some(ids) = lost_rx.recv().await {
            let r = sqlx::query(
                "UPDATE alert_deliveries SET next_attempt_at = now() WHERE id = ANY($1) AND state = 'pending'",
            )
            .bind(&ids)
            .execute(&requeue_pool)
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, n = ids.len(), "lost notifications wait for their lease to end");
            }
            wake.notify_one();
        }
    });
    let poll_track = track.clone();
    let poll_held = s.held.clone();
    let m = s.metrics.clone();
    let poll_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                ev = eventloop.poll() => ev,
                _ = poll_stop.cancelled() => return,
            };
            match ev {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let mut t = poll_track.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(d) = t.queued.pop_front() {
                        t.inflight.insert(pkid, d);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let d = poll_track
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .inflight
                        .remove(&ack.pkid);
                    if let Some((id, live)) = d {
                        observe_latency(&m, "mqtt", live);
                        release(&poll_held, &[id]);
                        let _ = done_tx.send(id);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // An `Outgoing::Publish` queued before a failed write would
                    // surface after the reconnect and shift the matching.
                    eventloop.state.events.clear();
                    // The event loop dropped what was unacknowledged (clean
                    // session): due again at once, for the sweeper.
                    let lost: Vec<i64> = {
                        let mut guard = poll_track.lock().unwrap_or_else(|e| e.into_inner());
                        let t: &mut Tracking = &mut guard;
                        let keep = if t.handing_over {
                            t.queued.pop_back()
                        } else {
                            None
                        };
                        let lost = t
                            .inflight
                            .drain()
                            .map(|(_, d)| d.0)
                            .chain(t.queued.drain(..).map(|d| d.0))
                            .collect();
                        t.queued.extend(keep);
                        lost
                    };
                    let n = lost.len();
                    if n > 0 {
                        release(&poll_held, &lost);
                        let _ = lost_tx.send(lost);
                    }
                    m.delivery_failures
                        .with_label_values(&["mqtt"])
                        .inc_by(n as u64);
                    tracing::warn!(error = %e, lost = n, "alert MQTT connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });

    loop {
        let d = tokio::select! {
            d = rx.recv() => d,
            _ = stop.cancelled() => None,
        };
        let Some(d) = d else { break };
        {
            let mut t = track.lock().unwrap_or_else(|e| e.into_inner());
            t.queued.push_back((d.id, d.live_event_ms));
            t.handing_over = true;
        }
        s.metrics
            .delivery_attempts
            .with_label_values(&["mqtt"])
            .inc();
        let r = tokio::select! {
            r = client.publish_bytes(d.target.clone(), QoS::AtLeastOnce, false, d.payload.clone()) => r,
            _ = stop.cancelled() => break,
        };
        let mut t = track.lock().unwrap_or_else(|e| e.into_inner());
        t.handing_over = false;
        if r.is_err() {
            // The event loop is gone: nothing will be written.
            t.queued.pop_back();
            release(&s.held, &[d.id]);
        }
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// The signature header value for `body` at `unix_s`.
pub fn signature(secret: &[u8], unix_s: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return format!("t={unix_s},v1=");
    };
    mac.update(unix_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for b in tag {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={unix_s},v1={hex}")
}

async fn post(
    client: &Client,
    url: &str,
    secret: &str,
    d: &Delivery,
    timeout: Duration,
) -> Result<(), String> {
    let t = now_ms() / 1000;
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header(
            "x-emtrack-signature",
            signature(secret.as_bytes(), t, &d.payload),
        )
        .header("idempotency-key", format!("{}-{}", d.alert, d.version))
        .header("x-emtrack-alert-id", d.alert.to_string())
        .body(Full::new(d.payload.clone()))
        .map_err(|e| format!("bad request: {e}"))?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    // Read the (bounded) body so that the connection can be reused.
    let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// Sends webhook deliveries until `stop`: each in its own task, at most
/// `webhook_concurrency` requests at once and `delivery_queue` deliveries
/// held (the rest wait in the queue, then in the database).
pub async fn webhooks(s: Senders, mut rx: mpsc::Receiver<Delivery>, stop: CancellationToken) {
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let requests = Arc::new(Semaphore::new(s.cfg.webhook_concurrency));
    let held = Arc::new(Semaphore::new(s.cfg.delivery_queue));
    loop {
        let permit = tokio::select! {
            p = held.clone().acquire_owned() => p,
            _ = stop.cancelled() => return,
        };
        let Ok(permit) = permit else { return };
        let d = tokio::select! {
            d = rx.recv() => d,
            _ = stop.cancelled() => return,
        };
        let Some(d) = d else { return };
        let (s, client, requests, stop) =
            (s.clone(), client.clone(), requests.clone(), stop.clone());
        tokio::spawn(async move {
            let _held = permit;
            deliver_webhook(&s, &client, &requests, d, &stop).await;
        });
    }
}

async fn deliver_webhook(
    s: &Senders,
    client: &Client,
    requests: &Semaphore,
    mut d: Delivery,
    stop: &CancellationToken,
) {
    let m = &s.metrics;
    let _holding = Holding(&s.held, d.id);
    loop {
        let hook: Option<(String, String, i32, bool)> = match sqlx::query_as(
            "SELECT url, secret, max_attempts, active FROM webhooks WHERE id = $1::text::int8",
        )
        .bind(&d.target)
        .fetch_optional(&s.pool)
        .await
        {
            Ok(h) => h,
            // The lease runs out and the sweeper tries again.
            Err(_) => return,
        };
        let Some((url, secret, max_attempts, active)) = hook else {
            let _ = sqlx::query(
                "UPDATE alert_deliveries SET state = 'dead', last_error = 'webhook deleted' WHERE id = $1 AND state = 'pending'",
            )
            .bind(d.id)
            .execute(&s.pool)
            .await;
            m.delivery_dead.with_label_values(&["webhook"]).inc();
            return;
        };
        if !active {
            // Paused by the agency: look again in 5 minutes.
            let _ = sqlx::query(
                "UPDATE alert_deliveries SET next_attempt_at = now() + interval '5 minutes' \
                 WHERE id = $1 AND state = 'pending'",
            )
            .bind(d.id)
            .execute(&s.pool)
            .await;
            return;
        }
        let r = {
            let Ok(_slot) = requests.acquire().await else {
                return;
            };
            m.delivery_attempts.with_label_values(&["webhook"]).inc();
            post(
                client,
                &url,
                &secret,
                &d,
                Duration::from_secs(s.cfg.webhook_timeout_s),
            )
            .await
        };
        d.attempts += 1;
        match r {
            Ok(()) => {
                observe_latency(m, "webhook", d.live_event_ms);
                let _ = sqlx::query(
                    "UPDATE alert_deliveries SET state = 'delivered', delivered_at = now(), attempts = $2, last_error = NULL \
                     WHERE id = $1 AND state = 'pending'",
                )
                .bind(d.id)
                .bind(d.attempts)
                .execute(&s.pool)
                .await;
                return;
            }
            Err(e) => {
                m.delivery_failures.with_label_values(&["webhook"]).inc();
                let dead = d.attempts >= max_attempts;
                let backoff = backoff(&s.cfg, d.attempts);
                let _ = sqlx::query(
                    "UPDATE alert_deliveries SET attempts = $2, last_error = $3, \
                         state = CASE WHEN $4 THEN 'dead' ELSE state END, \
                         next_attempt_at = now() + ($5::int8 + $6::int8 * 1000) * interval '1 millisecond' \
                     WHERE id = $1 AND state = 'pending'",
                )
                .bind(d.id)
                .bind(d.attempts)
                .bind(&e)
                .bind(dead)
                .bind(backoff.as_millis() as i64)
                .bind(i64::from(s.cfg.delivery_lease_s))
                .execute(&s.pool)
                .await;
                if dead {
                    m.delivery_dead.with_label_values(&["webhook"]).inc();
                    tracing::warn!(alert = d.alert, webhook = %d.target, attempts = d.attempts, error = %e, "webhook delivery given up (dead letter)");
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// The delay after the `attempts`-th failure: base × 2^(attempts − 1), capped.
pub fn backoff(cfg: &AlertConfig, attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 30) as u32 - 1;
    let ms = cfg.webhook_backoff_ms.saturating_mul(1u64 << exp.min(20));
    Duration::from_millis(ms.min(cfg.webhook_backoff_max_s.saturating_mul(1000)))
}

/// id, alert, version, channel, target, JSON, attempts, live trigger time.
type SweptRow = (i64, i64, i32, String, String, String, i32, Option<i64>);

/// Re-sends pending deliveries whose lease ended, every second or when woken.
pub async fn sweeper(
    s: Senders,
    mqtt: mpsc::Sender<Delivery>,
    webhook: mpsc::Sender<Delivery>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = wake.notified() => {}
            _ = stop.cancelled() => return,
        }
        for (channel, q) in [("mqtt", &mqtt), ("webhook", &webhook)] {
            if !sweep(&s, channel, q).await {
                return;
            }
        }
    }
}

/// Sends what is due on one channel, as much as its queue has room for (a
/// lease runs while queued). False when the sender is gone.
async fn sweep(s: &Senders, channel: &str, q: &mpsc::Sender<Delivery>) -> bool {
    loop {
        let room = q.capacity().min(1_000) as i64;
        if room == 0 {
            return true;
        }
        let rows: Result<Vec<SweptRow>, _> = sqlx::query_as(
            "UPDATE alert_deliveries d SET next_attempt_at = now() + $1 * interval '1 second' \
             FROM (SELECT id FROM alert_deliveries WHERE state = 'pending' AND next_attempt_at <= now() \
                   AND channel = $3 ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) due \
             WHERE d.id = due.id \
             RETURNING d.id, d.alert_id, d.version, d.channel, d.target, d.payload, d.attempts, \
                       (extract(epoch FROM d.live_event_at) * 1000)::int8",
        )
        .bind(i64::from(s.cfg.delivery_lease_s))
        .bind(room)
        .bind(channel)
        .fetch_all(&s.pool)
        .await;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, channel, "delivery sweep failed; will retry");
                return true;
            }
        };
        let n = rows.len();
        for (id, alert, version, channel, target, payload, attempts, live) in rows {
            // Still with a sender (slow, not lost): its lease was just renewed.
            if !hold(&s.held, id) {
                continue;
            }
            let d = Delivery {
                id,
                alert,
                version,
                channel,
                target,
                payload: Bytes::from(payload),
                attempts,
                live_event_ms: live,
            };
            if q.send(d).await.is_err() {
                return false;
            }
        }
        if (n as i64) < room {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"s3cret", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"s3cret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = AlertConfig {
            webhook_backoff_ms: 100,
            webhook_backoff_max_s: 1,
            ..AlertConfig::default()
        };
        let got: Vec<u64> = (1..=6)
            .map(|a| backoff(&cfg, a).as_millis() as u64)
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
