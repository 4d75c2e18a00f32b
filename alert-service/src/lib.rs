//! `alert-service`: the runtime of the `alerts` core. It takes what ingest
//! committed from the [`bus`], keeps every alert change in PostgreSQL with
//! its notifications (an outbox), and delivers them over MQTT and signed
//! webhooks, restart-safe.
//!
//! # Layout
//! - `service`: the task that owns the core; one step = take input, store
//!   the changes, then send.
//! - `restore`: the alerts read back after a restart (on the node holding
//!   the service lease, `store::Lease`: one alert service per database), and
//!   the re-read of what was stored since the last processed point.
//! - `outbox`: an alert change, its `alert_events` line and its deliveries
//!   in one transaction.
//! - `notification`: who hears of a change (officer, supervisor, duty desk,
//!   webhooks) and the notification JSON.
//! - `delivery`: the senders: one per [`Channel`] (MQTT, webhook) and the
//!   sweeper, recording every outcome on its row.
//! - `handle`: [`AlertHandle`], what the HTTP API holds: officers' actions
//!   and the broadcast of changes.
//! - `config`: the `[alerts]` settings. `metrics`: the alert metrics.
//!
//! **Architecture Invariant:** this crate never imports `ingest` or
//! `reference` and never locks the engine: everything it needs (transitions,
//! events, reports with device names, the watched fleet) arrives on the bus.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod delivery;
mod handle;
mod metrics;
mod notification;
mod outbox;
mod restore;
mod service;

pub use config::{AlertConfig, PolicyError};
pub use delivery::Outbound;
pub use delivery::webhook::{
    backoff, seal_stored_secrets, signature, signing_key, standard_signature, unopened_secrets,
    whsec_key,
};
pub use delivery::{Channel, Delivery};
pub use handle::{ActionError, AlertHandle};
pub use metrics::Metrics;
pub use notification::{DUTY_TOPIC, officer_topic};
pub use restore::AlertStartError;
pub use service::AlertError;

use alerts::Policy;
use bus::{FleetRx, ObservedRx};
use delivery::{Held, Queues, Senders};
use handle::Command;
use service::{Alerter, Outlets};
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// What the alert service needs to start.
#[derive(Debug)]
pub struct Inputs {
    /// What ingest commits.
    pub observed: ObservedRx,
    /// The bracelets to watch.
    pub fleet: FleetRx,
    /// Checked first in each transaction that stores alert changes: only
    /// the node holding the service lease writes.
    pub fence: store::Fence,
}

/// The loaded alert service, ready to run.
pub struct AlertService {
    alerter: Alerter,
    observed: ObservedRx,
    commands: mpsc::Receiver<Command>,
    stopped: CancellationToken,
}

impl std::fmt::Debug for AlertService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertService").finish_non_exhaustive()
    }
}

/// Loads the alert state, re-reads what may not have been processed, and
/// starts the senders; every change is stored behind `inputs.fence` (the caller
/// holds the service lease, so one alert service runs per database). Call before ingest consumes,
/// so that the re-read sees a settled store. The senders stop on `stop`.
pub async fn start(
    pool: PgPool,
    cfg: AlertConfig,
    policy: Policy,
    outbound: Outbound,
    metrics: Metrics,
    inputs: Inputs,
    stop: CancellationToken,
) -> Result<(AlertHandle, AlertService), AlertStartError> {
    let restored = restore::alerts(&pool, policy, cfg.replay_s).await?;
    let since = restored.processed_to - i64::from(cfg.replay_s) * 1000;
    let (queues, receivers) = Queues::new(cfg.delivery_queue);
    let sweep = Arc::new(Notify::new());
    let (broadcast_tx, _) = broadcast::channel(4_096);
    let held = Held::default();
    let out = Outlets {
        queues: queues.clone(),
        sweep: sweep.clone(),
        broadcast: broadcast_tx.clone(),
        held: held.clone(),
    };
    let mut alerter = Alerter::new(
        pool.clone(),
        metrics.clone(),
        cfg.clone(),
        restored,
        inputs.fleet,
        out,
        inputs.fence.clone(),
    );
    alerter.start_watching(restore::last_fixes(&pool).await?);
    let replay = restore::stored_since(&pool, since).await?;
    let replayed = replay.transitions.len() + replay.events.len();
    alerter.apply(replay, store::now_ms());
    tracing::info!(
        replayed,
        "alert state loaded and recent transitions re-read"
    );
    alerter.flush().await;
    let senders = Senders {
        pool,
        metrics,
        cfg,
        held,
        fence: inputs.fence,
    };
    delivery::spawn(senders, outbound, queues, receivers, sweep, stop);
    let (commands_tx, commands) = mpsc::channel(256);
    let stopped = CancellationToken::new();
    let handle = AlertHandle {
        commands: commands_tx,
        broadcast: broadcast_tx,
        stopped: stopped.clone(),
    };
    Ok((
        handle,
        AlertService {
            alerter,
            observed: inputs.observed,
            commands,
            stopped,
        },
    ))
}

impl AlertService {
    /// Runs until `stop` (or ingest is gone), stores what it took, then
    /// cancels [`AlertHandle::stopped`]. An error means it
    /// stopped on its own (see [`AlertError`]).
    pub async fn run(self, stop: CancellationToken) -> Result<(), AlertError> {
        // However the task ends (a panic too), `stopped` follows.
        let _stopped = self.stopped.drop_guard();
        self.alerter.run(self.observed, self.commands, stop).await
    }
}
