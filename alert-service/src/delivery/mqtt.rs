//! The MQTT sender: QoS 1 publishes on the service's own connection
//! (`{client id}-alerts`, clean session). A delivery is `delivered` when the
//! broker's PUBACK for it arrives.
//!
//! The request channel is a rendezvous (capacity 0), so at any time at most
//! one publish is between the publisher and the event loop; that is what
//! lets PUBACKs be matched to deliveries in order, and a broken connection
//! forget exactly the publishes it lost (they are made due at once and the
//! sweeper sends them again).

use super::{Channel, Delivery, Senders};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use store::{Backoff, retry_always};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// A publish on its way: delivery id and live trigger time.
type Pending = (i64, Option<i64>);

/// Which publish is where, shared by the publisher and the poll task.
#[derive(Default)]
struct Tracking {
    /// Publishes handed to the event loop, not yet written (in order).
    queued: VecDeque<Pending>,
    /// Written, awaiting PUBACK, by packet id.
    inflight: HashMap<u16, Pending>,
    /// The publisher is inside `publish().await`: the last `queued` entry
    /// may not have reached the event loop yet.
    handing_over: bool,
}

impl Tracking {
    /// Everything a lost connection took, except a publish still being
    /// handed over (it goes to the next connection).
    fn lost(&mut self) -> Vec<i64> {
        let keep = if self.handing_over {
            self.queued.pop_back()
        } else {
            None
        };
        let lost = self
            .inflight
            .drain()
            .map(|(_, d)| d.0)
            .chain(self.queued.drain(..).map(|d| d.0))
            .collect();
        self.queued.extend(keep);
        lost
    }
}

type Shared = Arc<Mutex<Tracking>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Tracking> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes MQTT deliveries until `stop`; `wake` tells the sweeper that
/// lost publishes are due.
pub(crate) async fn run(
    s: Senders,
    target: super::Outbound,
    mut rx: mpsc::Receiver<Delivery>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut o = target.mqtt.options(target.mqtt_client_id);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_clean_session(true);
    o.set_inflight(100);
    let (client, eventloop) = AsyncClient::new(o, 0);
    let track = Shared::default();
    let (acked_tx, acked_rx) = mpsc::unbounded_channel();
    tokio::spawn(record_delivered(s.clone(), acked_rx));
    let (lost_tx, lost_rx) = mpsc::unbounded_channel();
    tokio::spawn(requeue_lost(s.clone(), lost_rx, wake));
    tokio::spawn(poll(
        eventloop,
        track.clone(),
        s.clone(),
        acked_tx,
        lost_tx,
        stop.clone(),
    ));
    loop {
        let d = tokio::select! {
            d = rx.recv() => d,
            _ = stop.cancelled() => None,
        };
        let Some(d) = d else { break };
        {
            let mut t = lock(&track);
            t.queued.push_back((d.id, d.live_event_ms));
            t.handing_over = true;
        }
        s.metrics
            .delivery_attempts
            .with_label_values(&[Channel::Mqtt.as_str()])
            .inc();
        let r = tokio::select! {
            r = client.publish_bytes(d.target.clone(), QoS::AtLeastOnce, false, d.payload.clone()) => r,
            _ = stop.cancelled() => break,
        };
        let mut t = lock(&track);
        t.handing_over = false;
        if r.is_err() {
            // The event loop is gone: nothing will be written.
            t.queued.pop_back();
            s.held.release(&[d.id]);
        }
    }
}

/// Drives the event loop: matches PUBACKs to deliveries, and hands what a
/// lost connection took to `lost`.
async fn poll(
    mut eventloop: EventLoop,
    track: Shared,
    s: Senders,
    acked: mpsc::UnboundedSender<i64>,
    lost: mpsc::UnboundedSender<Vec<i64>>,
    stop: CancellationToken,
) {
    let mut waits = link::mqtt::reconnect_waits();
    loop {
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            _ = stop.cancelled() => return,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => waits = link::mqtt::reconnect_waits(),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut t = lock(&track);
                if let Some(d) = t.queued.pop_front() {
                    t.inflight.insert(pkid, d);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let d = lock(&track).inflight.remove(&ack.pkid);
                if let Some((id, live)) = d {
                    s.observe_latency(Channel::Mqtt, live);
                    s.held.release(&[id]);
                    let _ = acked.send(id);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let wait = link::mqtt::next_wait(&mut waits);
                connection_lost(&mut eventloop, &track, &s, &lost, e, wait).await;
            }
        }
    }
}

async fn connection_lost(
    eventloop: &mut EventLoop,
    track: &Shared,
    s: &Senders,
    lost: &mpsc::UnboundedSender<Vec<i64>>,
    e: ConnectionError,
    wait: Duration,
) {
    // An `Outgoing::Publish` queued before a failed write would surface
    // after the reconnect and shift the matching.
    eventloop.state.events.clear();
    // The event loop dropped what was unacknowledged (clean session): due
    // again at once, for the sweeper.
    let ids = lock(track).lost();
    let n = ids.len();
    if n > 0 {
        s.held.release(&ids);
        let _ = lost.send(ids);
    }
    s.metrics
        .delivery_failures
        .with_label_values(&[Channel::Mqtt.as_str()])
        .inc_by(n as u64);
    tracing::warn!(error = %e, lost = n, retry_in_ms = wait.as_millis() as u64, "alert MQTT connection lost; reconnecting");
    tokio::time::sleep(wait).await;
}

/// Marks acknowledged publishes delivered, in batches. Until recorded, the
/// sweeper would send them again (a duplicate the receiver drops by alert
/// id and version), so a refusal is retried.
async fn record_delivered(s: Senders, mut rx: mpsc::UnboundedReceiver<i64>) {
    let mut buf = Vec::new();
    while rx.recv_many(&mut buf, 1024).await > 0 {
        retry_always(
            Backoff::STEADY,
            || s.delivered(Channel::Mqtt, &buf, None),
            |_: &sqlx::Error, _| {},
        )
        .await;
        buf.clear();
    }
}

/// Makes the publishes a lost connection took due at once (not at the end
/// of their lease), and wakes the sweeper.
async fn requeue_lost(s: Senders, mut rx: mpsc::UnboundedReceiver<Vec<i64>>, wake: Arc<Notify>) {
    while let Some(ids) = rx.recv().await {
        s.due_in(Channel::Mqtt, &ids, Duration::ZERO).await;
        wake.notify_one();
    }
}
