//! The poll task: it owns the rumqttc event loop.
//!
//! It puts each publish on the bounded queue of the worker that owns its
//! device (FNV hash of the device id), at most `max_in_flight` messages
//! across the workers. Beyond that it keeps a backlog, and stops reading the
//! socket once the backlog is full too (unless acks wait to be written): TCP
//! backpressure then reaches the broker, whose in-flight window stops it.
//!
//! # Acks
//! rumqttc's request channel is drained only while the event loop is polled,
//! so only this task puts acks on it (`try_ack`, keeping the rest for its
//! next turn). A worker never waits on that channel, and this task never
//! waits on a worker: neither can stall the other.

use crate::pipeline::Context;
use backon::ExponentialBackoff;
use link::mqtt::reconnect_waits;
use protocol::Topic;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, QoS};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The worker that owns the device of `topic`.
pub(crate) fn shard_of(topic: &str, workers: usize) -> usize {
    let device = match Topic::parse(topic) {
        Ok(t) => t.device().as_str().to_owned(),
        Err(_) => topic.to_owned(),
    };
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// How the broker connection is doing.
struct Session {
    connected_once: bool,
    /// A ConnAck came; the subscription waits for room in the request
    /// channel (full of acks after a reconnect).
    subscribe_pending: bool,
    /// Reconnect waits: capped exponential backoff with jitter.
    waits: ExponentialBackoff,
}

/// Shutting down: the workers commit what they hold, then acks are flushed.
struct Drain {
    deadline: Instant,
}

/// The poll task's state.
pub(crate) struct Consumer {
    ctx: Arc<Context>,
    client: AsyncClient,
    /// Worker queues; `None` once draining.
    txs: Option<Vec<tokio::sync::mpsc::Sender<Publish>>>,
    /// Received, not yet given to a worker (workers hold `max_in_flight`).
    backlog: VecDeque<Publish>,
    /// Committed, ack not yet queued in rumqttc's request channel.
    acks: VecDeque<Publish>,
    /// Given to workers, not yet committed.
    in_workers: usize,
    /// Acks queued in the request channel, not yet written to the socket.
    in_channel: usize,
    /// Every worker has ended (their `done` channel closed).
    workers_done: bool,
    session: Session,
    drain: Option<Drain>,
}

/// Committed batches, from the workers, for acking.
pub(crate) type Done = tokio::sync::mpsc::UnboundedReceiver<Vec<Publish>>;

impl Consumer {
    pub(crate) fn new(
        ctx: Arc<Context>,
        client: AsyncClient,
        txs: Vec<tokio::sync::mpsc::Sender<Publish>>,
    ) -> Consumer {
        Consumer {
            ctx,
            client,
            txs: Some(txs),
            backlog: VecDeque::new(),
            acks: VecDeque::new(),
            in_workers: 0,
            in_channel: 0,
            workers_done: false,
            session: Session {
                connected_once: false,
                subscribe_pending: false,
                waits: reconnect_waits(),
            },
            drain: None,
        }
    }

    fn depth(&self) -> i64 {
        (self.backlog.len() + self.in_workers + self.acks.len() + self.in_channel) as i64
    }

    fn max_in_flight(&self) -> usize {
        self.ctx.cfg.max_in_flight.max(1)
    }

    /// Runs until `stop` and the drain are done (see the module docs).
    pub(crate) async fn run(
        mut self,
        mut eventloop: EventLoop,
        mut done: Done,
        stop: CancellationToken,
    ) {
        loop {
            self.queue_acks();
            self.feed_workers();
            self.ctx.metrics.messages_unacked.set(self.depth());
            if stop.is_cancelled() && self.txs.is_some() {
                self.begin_drain();
            }
            if self.drain_over() {
                self.disconnect(&mut eventloop).await;
                return;
            }
            if self.session.subscribe_pending {
                let topics = protocol::SUBSCRIPTIONS
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new((*t).to_owned(), QoS::AtLeastOnce));
                self.session.subscribe_pending = self.client.try_subscribe_many(topics).is_err();
            }
            // Stop reading the socket when the backlog is full and no ack is
            // waiting to go out: TCP backpressure then reaches the broker.
            let read = self.backlog.len() < self.max_in_flight()
                || self.in_channel > 0
                || !self.acks.is_empty();
            let event = tokio::select! {
                e = eventloop.poll(), if read => e,
                d = done.recv(), if !self.workers_done => {
                    self.committed(d);
                    continue;
                }
                _ = stop.cancelled(), if self.txs.is_some() => continue,
                _ = tokio::time::sleep(Duration::from_millis(50)), if self.drain.is_some() => continue,
            };
            match event {
                Ok(e) => self.on_event(e),
                Err(e) => self.on_error(e, &stop).await,
            }
        }
    }

    /// Queues what acks fit; the event loop writes them out as it is polled.
    fn queue_acks(&mut self) {
        while let Some(p) = self.acks.front() {
            if self.client.try_ack(p).is_err() {
                break;
            }
            // QoS 0 needs no ack: nothing goes on the channel.
            if p.qos != QoS::AtMostOnce {
                self.in_channel += 1;
            }
            self.acks.pop_front();
            self.ctx.metrics.messages_acked.inc();
        }
    }

    /// Gives workers what they can take.
    fn feed_workers(&mut self) {
        let max = self.max_in_flight();
        let Some(txs) = &self.txs else { return };
        while self.in_workers < max {
            let Some(p) = self.backlog.pop_front() else {
                break;
            };
            let shard = shard_of(&p.topic, txs.len());
            // Never full: a queue holds max_in_flight.
            if txs[shard].try_send(p).is_err() {
                tracing::error!("worker {shard} has stopped");
            } else {
                self.in_workers += 1;
            }
        }
    }

    /// A committed batch, or the end of the workers.
    fn committed(&mut self, batch: Option<Vec<Publish>>) {
        match batch {
            Some(batch) => {
                self.in_workers -= batch.len();
                self.acks.extend(batch);
            }
            None => self.workers_done = true,
        }
    }

    fn begin_drain(&mut self) {
        tracing::info!("shutting down: the workers commit what they hold");
        // Not acked, so the broker redelivers them to the next session.
        self.backlog.clear();
        self.txs = None;
        self.drain = Some(Drain {
            deadline: Instant::now() + Duration::from_millis(9_500),
        });
    }

    /// Draining, and either everything is committed and acked or time is up.
    fn drain_over(&self) -> bool {
        let Some(d) = &self.drain else { return false };
        let flushed = self.workers_done && self.acks.is_empty() && self.in_channel == 0;
        if flushed {
            return true;
        }
        if Instant::now() >= d.deadline {
            tracing::warn!(
                unacked = self.depth(),
                "shutdown deadline: leaving messages unacked (the broker redelivers them)"
            );
            return true;
        }
        false
    }

    async fn disconnect(&mut self, eventloop: &mut EventLoop) {
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        self.ctx.metrics.mqtt_connected.set(0);
        self.ctx.subscribed.store(false, Ordering::Relaxed);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Incoming(Packet::Publish(p)) => {
                self.ctx.metrics.messages_received.inc();
                if self.txs.is_some() {
                    self.backlog.push_back(p);
                }
            }
            Event::Outgoing(Outgoing::PubAck(_)) => {
                self.in_channel = self.in_channel.saturating_sub(1);
            }
            Event::Incoming(Packet::ConnAck(ack)) => {
                if self.session.connected_once {
                    self.ctx.metrics.mqtt_reconnects.inc();
                }
                if self.session.connected_once && !ack.session_present {
                    self.session_lost();
                }
                self.session.connected_once = true;
                self.session.waits = reconnect_waits();
                self.ctx.metrics.mqtt_connected.set(1);
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                self.session.subscribe_pending = true;
            }
            Event::Incoming(Packet::SubAck(_)) => {
                self.ctx.subscribed.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Reconnected, and the broker no longer had the session it kept for
    /// emtrack (see [`crate::pipeline::SessionLoss`]).
    fn session_lost(&self) {
        self.ctx.metrics.mqtt_sessions_lost.inc();
        self.ctx.session.record(store::now_ms());
        tracing::error!(
            client_id = %self.ctx.cfg.client_id,
            "the broker lost emtrack's persistent session on reconnect: another client may have \
             connected with this client id and a clean session; messages the broker held for \
             emtrack may be lost"
        );
    }

    async fn on_error(&mut self, e: ConnectionError, stop: &CancellationToken) {
        // rumqttc drops the acks still in its channel: the broker redelivers
        // those messages, and storage is idempotent.
        self.in_channel = 0;
        self.ctx.metrics.mqtt_connected.set(0);
        self.ctx.subscribed.store(false, Ordering::Relaxed);
        if self.drain.is_some() {
            // Nothing more can be acked on this connection.
            self.acks.clear();
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        let wait = self.session.waits.next().unwrap_or(Duration::from_secs(30));
        if self.session.connected_once {
            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "broker connection lost");
        } else {
            tracing::warn!(
                error = %e,
                broker = %self.ctx.cfg.link.address(),
                retry_in_ms = wait.as_millis() as u64,
                "cannot reach the MQTT broker (is mosquitto running? check mqtt_host / mqtt_port, and mqtt_username / mqtt_password_file if it refused us)"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashSet;

    #[test]
    fn a_device_always_lands_on_the_same_shard() {
        let a = shard_of("em/v1/dev/EM-000001/fix", 4);
        assert_eq!(a, shard_of("em/v1/dev/EM-000001/event", 4));
        assert_eq!(a, shard_of("em/v1/dev/EM-000001/hb", 4));
        let spread: FxHashSet<usize> = (0..64)
            .map(|i| shard_of(&format!("em/v1/dev/EM-{i:06}/fix"), 4))
            .collect();
        assert_eq!(spread.len(), 4, "64 devices use all 4 shards");
    }
}
