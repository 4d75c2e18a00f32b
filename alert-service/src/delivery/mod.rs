//! Alert delivery: the senders behind the outbox (`alert_deliveries`).
//!
//! Every notification is a row first (written with the alert change, in one
//! transaction), then a [`Delivery`] on the in-memory queue of its
//! [`Channel`]. Each channel has one sender task of the same shape: it takes
//! deliveries from its queue, sends them, and records each outcome on the
//! row through [`Senders`] (delivered, failed with a retry time, or dead).
//! - `mqtt`: QoS 1 publishes; `delivered` on the broker's PUBACK.
//! - `webhook`: signed HTTP POSTs, retried with backoff; `dead` after the
//!   webhook's `max_attempts`.
//! - `sweeper`: sends again, per channel, what no sender holds once its
//!   lease has ended (a crash, a lost connection, a queue that was full).
//!
//! A new channel (SMS, e-mail, push) is a [`Channel`] variant, a sender
//! module, and a queue in [`Queues`]: every `match` on the channel then
//! fails to compile until it is handled, so nothing is silently misrouted.
//!
//! Every attempt and its outcome is counted and written to the row, so "did
//! the officer get it?" is a query. An outcome the database does not take is
//! logged and counted (`emtrack_alert_delivery_record_errors_total`): the
//! row stays pending and may be sent again, a duplicate receivers drop by
//! (alert id, version).

pub(crate) mod mqtt;
pub(crate) mod sweeper;
pub(crate) mod webhook;

use crate::config::AlertConfig;
use crate::metrics::Metrics;
use bytes::Bytes;
use rustc_hash::FxHashSet;
use sqlx::PgPool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use store::now_ms;
use tokio::sync::mpsc;

/// How a notification travels (`alert_deliveries.channel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// MQTT, to an officer's, supervisor's or the duty desk's topic.
    Mqtt,
    /// An HTTP POST to an agency's webhook.
    Webhook,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 2] = [Channel::Mqtt, Channel::Webhook];

    /// The stored label (and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Mqtt => "mqtt",
            Channel::Webhook => "webhook",
        }
    }

    /// The channel whose label is `name`.
    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// One notification to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// `alert_deliveries.id`.
    pub id: i64,
    /// The alert.
    pub alert: i64,
    /// The alert's version this announces.
    pub version: i32,
    /// How it travels.
    pub channel: Channel,
    /// Topic, or webhook id.
    pub target: String,
    /// The JSON.
    pub payload: Bytes,
    /// Attempts made before this one.
    pub attempts: i32,
    /// Fix or event time of a live alert's raise (ms), for the latency.
    pub live_event_ms: Option<i64>,
}

/// A stored delivery row, as read back.
#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: i64,
    alert_id: i64,
    version: i32,
    channel: String,
    target: String,
    payload: String,
    attempts: i32,
    live_event_at: Option<store::Millis>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = store::UnknownLabel;

    fn try_from(r: DeliveryRow) -> Result<Delivery, store::UnknownLabel> {
        Ok(Delivery {
            id: r.id,
            alert: r.alert_id,
            version: r.version,
            channel: store::label("alert_deliveries.channel", &r.channel, Channel::from_name)?,
            target: r.target,
            payload: Bytes::from(r.payload),
            attempts: r.attempts,
            live_event_ms: r.live_event_at.map(i64::from),
        })
    }
}

/// The in-memory queue of each channel.
#[derive(Clone, Debug)]
pub(crate) struct Queues {
    pub(crate) mqtt: mpsc::Sender<Delivery>,
    pub(crate) webhook: mpsc::Sender<Delivery>,
}

/// The receiving ends of [`Queues`], one per sender.
pub(crate) struct Receivers {
    mqtt: mpsc::Receiver<Delivery>,
    webhook: mpsc::Receiver<Delivery>,
}

impl Queues {
    /// Queues of `capacity` deliveries each.
    pub(crate) fn new(capacity: usize) -> (Queues, Receivers) {
        let (mqtt, mqtt_rx) = mpsc::channel(capacity);
        let (webhook, webhook_rx) = mpsc::channel(capacity);
        (
            Queues { mqtt, webhook },
            Receivers {
                mqtt: mqtt_rx,
                webhook: webhook_rx,
            },
        )
    }

    /// The queue of `channel`.
    pub(crate) fn of(&self, channel: Channel) -> &mpsc::Sender<Delivery> {
        match channel {
            Channel::Mqtt => &self.mqtt,
            Channel::Webhook => &self.webhook,
        }
    }
}

/// Where deliveries go: the broker (officers' alert topics) and webhook
/// receivers.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// The broker: address, emtrack's service identity, TLS.
    pub mqtt: link::MqttLink,
    /// Client id of the alert connection.
    pub mqtt_client_id: String,
    /// The TLS of `https://` webhooks: whom to trust (a CA bundle or the
    /// system's roots).
    pub webhook_tls: std::sync::Arc<rustls::ClientConfig>,
    /// The key that opens sealed webhook secrets.
    pub webhook_seal: Option<std::sync::Arc<link::SealKey>>,
}

/// Starts one sender per channel and the sweeper; they stop on `stop`.
pub(crate) fn spawn(
    s: Senders,
    outbound: Outbound,
    queues: Queues,
    receivers: Receivers,
    sweep: Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    let (webhook_tls, seal) = (outbound.webhook_tls.clone(), outbound.webhook_seal.clone());
    tokio::spawn(mqtt::run(
        s.clone(),
        outbound,
        receivers.mqtt,
        sweep.clone(),
        stop.clone(),
    ));
    tokio::spawn(webhook::run(
        s.clone(),
        webhook_tls,
        seal,
        receivers.webhook,
        stop.clone(),
    ));
    tokio::spawn(sweeper::run(s, queues, sweep, stop));
}

/// Delivery ids held in memory by a sender (queued or in flight): the
/// sweeper leaves them alone even when their lease has run out.
#[derive(Clone, Debug, Default)]
pub(crate) struct Held(Arc<Mutex<FxHashSet<i64>>>);

impl Held {
    /// Marks `id` held; false if it already was.
    pub(crate) fn hold(&self, id: i64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }

    /// Releases `ids`.
    pub(crate) fn release(&self, ids: &[i64]) {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            h.remove(id);
        }
    }
}

/// Releases a held delivery when dropped (whatever way its task ends).
pub(crate) struct Holding<'a>(pub(crate) &'a Held, pub(crate) i64);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.release(&[self.1]);
    }
}

/// What the senders share: the database, where outcomes are recorded.
#[derive(Clone, Debug)]
pub(crate) struct Senders {
    pub(crate) pool: PgPool,
    pub(crate) metrics: Metrics,
    pub(crate) cfg: AlertConfig,
    pub(crate) held: Held,
    /// Checked before the sweeper claims deliveries and before each webhook
    /// attempt: a node that lost the service lease stops sending.
    pub(crate) fence: store::Fence,
}

impl Senders {
    /// Observes the latency of a live alert's first notification.
    pub(crate) fn observe_latency(&self, channel: Channel, live_event_ms: Option<i64>) {
        if let Some(t) = live_event_ms {
            self.metrics
                .alert_latency
                .with_label_values(&[channel.as_str()])
                .observe((now_ms() - t).max(0) as f64 / 1000.0);
        }
    }

    /// Logs and counts an outcome the database did not take.
    fn not_recorded(&self, channel: Channel, what: &str, n: usize, e: &sqlx::Error) {
        self.metrics
            .delivery_record_errors
            .with_label_values(&[channel.as_str()])
            .inc();
        tracing::warn!(error = %e, channel = channel.as_str(), n, "cannot record {what}");
    }

    /// Marks `ids` delivered after `attempts` (`None`: one more than so far).
    pub(crate) async fn delivered(
        &self,
        channel: Channel,
        ids: &[i64],
        attempts: Option<i32>,
    ) -> Result<(), sqlx::Error> {
        let r = sqlx::query(
            "UPDATE alert_deliveries SET state = 'delivered', delivered_at = now(), \
                 attempts = coalesce($2, attempts + 1), last_error = NULL \
             WHERE id = ANY($1) AND state = 'pending'",
        )
        .bind(ids)
        .bind(attempts)
        .execute(&self.pool)
        .await;
        if let Err(e) = &r {
            self.not_recorded(channel, "deliveries", ids.len(), e);
        }
        r.map(|_| ())
    }

    /// Records a failed attempt: due again after `retry_in`, or `dead`.
    pub(crate) async fn failed(&self, d: &Delivery, error: &str, dead: bool, retry_in: Duration) {
        let r = sqlx::query(
            "UPDATE alert_deliveries SET attempts = $2, last_error = $3, \
                 state = CASE WHEN $4 THEN 'dead' ELSE state END, \
                 next_attempt_at = now() + ($5::int8 + $6::int8 * 1000) * interval '1 millisecond' \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(d.id)
        .bind(d.attempts)
        .bind(error)
        .bind(dead)
        .bind(retry_in.as_millis() as i64)
        .bind(i64::from(self.cfg.delivery_lease_s))
        .execute(&self.pool)
        .await;
        if let Err(e) = r {
            self.not_recorded(d.channel, "a failed attempt", 1, &e);
        }
    }

    /// Gives a delivery up for good (`dead`), with why.
    pub(crate) async fn dead(&self, d: &Delivery, why: &str) {
        let r = sqlx::query(
            "UPDATE alert_deliveries SET state = 'dead', last_error = $2 WHERE id = $1 AND state = 'pending'",
        )
        .bind(d.id)
        .bind(why)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => self
                .metrics
                .delivery_dead
                .with_label_values(&[d.channel.as_str()])
                .inc(),
            Err(e) => self.not_recorded(d.channel, "a dead letter", 1, &e),
        }
    }

    /// Moves deliveries' next attempt to `in_` from now.
    pub(crate) async fn due_in(&self, channel: Channel, ids: &[i64], in_: Duration) {
        if let Err(e) = due_in(&self.pool, ids, in_).await {
            self.not_recorded(channel, "a new attempt time", ids.len(), &e);
        }
    }
}

/// Moves pending deliveries' next attempt to `in_` from now (now: the
/// sweeper sends them at its next pass instead of at the end of their lease).
pub(crate) async fn due_in(pool: &PgPool, ids: &[i64], in_: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alert_deliveries SET next_attempt_at = now() + $2::int8 * interval '1 millisecond' \
         WHERE id = ANY($1) AND state = 'pending'",
    )
    .bind(ids)
    .bind(in_.as_millis() as i64)
    .execute(pool)
    .await?;
    Ok(())
}
