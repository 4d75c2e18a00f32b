//! Ingest's settings (from the service's configuration) and its MQTT
//! session options.

use rumqttc::MqttOptions;
use std::time::Duration;

/// Tuning of the pipeline.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// The broker: address, emtrack's service identity, TLS.
    pub link: link::MqttLink,
    /// Stable client id: the broker keeps the session (subscriptions and
    /// unacked messages) across restarts.
    pub client_id: String,
    /// Worker tasks (device shards).
    pub workers: usize,
    /// Messages received and not yet acked, at most.
    pub max_in_flight: usize,
    /// Messages per batch, at most.
    pub max_batch: usize,
    /// How long a batch waits for more messages after its first.
    pub linger: Duration,
    /// Fixes and events dated further ahead than this are refused.
    pub future_skew: Duration,
    /// A fix dated further than this after its arrival is clock-suspect
    /// (see [`crate::clock`]).
    pub clock_tolerance: Duration,
    /// Records older than this are refused (`timestamp_too_old`): their
    /// day's partition is past retention, or about to be dropped.
    pub max_age: Duration,
    /// Above this speed from the last good fix, a fix is suspect.
    pub max_speed_kmh: f64,
    /// On restart, fixes this far before each device's newest are replayed.
    pub rebuild_lookback: Duration,
}

/// Largest MQTT packet taken from the broker (4 MiB).
pub const MAX_PACKET_BYTES: usize = 4 << 20;

impl IngestConfig {
    /// The MQTT options of the ingest session: persistent (the broker keeps
    /// unacked messages across restarts), manual acks.
    pub fn mqtt_options(&self) -> MqttOptions {
        let mut o = self.link.options(self.client_id.clone());
        o.set_keep_alive(Duration::from_secs(15));
        o.set_clean_session(false);
        o.set_manual_acks(true);
        // Far above what the protocol accepts: an oversized payload must reach the
        // decoder and be refused (`payload_too_large`). A packet over rumqttc's
        // limit would drop the connection, and the broker would redeliver it
        // forever. Keep the broker's `max_packet_size` below this.
        o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        o.set_request_channel_capacity(self.request_capacity());
        o
    }

    /// rumqttc's request channel: every ack that may be pending, and room
    /// for a subscribe.
    pub(crate) fn request_capacity(&self) -> usize {
        self.max_in_flight * 2 + 64
    }
}
