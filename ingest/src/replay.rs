//! `emtrack rejected replay`: refused messages published again, so that the
//! running service takes them through the normal path (check → judge →
//! store → ack) once their cause is fixed (a batch the database refused, a
//! device registered late).
//!
//! Each message goes back to its own topic, at QoS 1, under its own client id
//! (`{client_id}-replay`). A page of rows is marked `replayed_at` once the
//! broker has acknowledged every message of it (an acknowledgement says the
//! broker took it, not that the service stored it: see its outcome in
//! `fixes` or in a new `rejected_messages` row). A crash in between publishes
//! them again on the next run, which storage absorbs (a fix stored twice is
//! one row). Only rows not yet replayed are taken, unless `again`, and only
//! those there when the run began: a message still refused is refused again,
//! as a new row, left for a later run.

use crate::config::IngestConfig;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use sqlx::PgPool;
use std::fmt;
use std::time::Duration;
use store::Millis;

/// Which refused messages to replay.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Their refusal reason (e.g. `storage_failed`).
    pub reason: String,
    /// Received at or after (ms).
    pub since_ms: Option<i64>,
    /// Received before (ms).
    pub until_ms: Option<i64>,
    /// Also those replayed before.
    pub again: bool,
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Messages published and acknowledged by the broker.
    pub messages: u64,
}

/// Why a replay stopped.
#[derive(Debug)]
pub enum ReplayError {
    /// The database.
    Db(sqlx::Error),
    /// The broker refused or dropped the connection.
    Broker(String),
    /// The broker did not acknowledge a page in time.
    Timeout,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Db(e) => write!(f, "database: {e}"),
            ReplayError::Broker(e) => write!(f, "broker: {e}"),
            ReplayError::Timeout => write!(
                f,
                "the broker did not acknowledge the messages within 30 s; nothing of this page was marked replayed"
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

impl From<sqlx::Error> for ReplayError {
    fn from(e: sqlx::Error) -> Self {
        ReplayError::Db(e)
    }
}

/// Rows per page: published, acknowledged, then marked.
const PAGE: i64 = 500;

/// Publishes the selected refused messages again (see the module docs).
pub async fn replay(
    pool: &PgPool,
    cfg: &IngestConfig,
    sel: &Selection,
) -> Result<Replayed, ReplayError> {
    let mut opts = cfg.link.options(format!("{}-replay", cfg.client_id));
    opts.set_clean_session(true);
    opts.set_keep_alive(Duration::from_secs(15));
    opts.set_max_packet_size(crate::MAX_PACKET_BYTES, crate::MAX_PACKET_BYTES);
    let (client, mut eventloop) = AsyncClient::new(opts, PAGE as usize + 16);
    // Only what is refused now: a message refused again while replaying is a
    // new row, for the next replay, never this one (no loop).
    let last_id: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM rejected_messages")
        .fetch_one(pool)
        .await?;
    let mut done = Replayed::default();
    let mut after_id = 0i64;
    loop {
        let page: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, topic, payload FROM rejected_messages \
             WHERE reason = $1 AND id > $2 AND id <= $7 \
               AND ($3::timestamptz IS NULL OR received_at >= $3) \
               AND ($4::timestamptz IS NULL OR received_at < $4) \
               AND ($5 OR replayed_at IS NULL) \
             ORDER BY id LIMIT $6",
        )
        .bind(&sel.reason)
        .bind(after_id)
        .bind(sel.since_ms.map(Millis))
        .bind(sel.until_ms.map(Millis))
        .bind(sel.again)
        .bind(PAGE)
        .bind(last_id)
        .fetch_all(pool)
        .await?;
        let Some(last) = page.last() else { break };
        after_id = last.0;
        for (_, topic, payload) in &page {
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                .await
                .map_err(|e| ReplayError::Broker(e.to_string()))?;
        }
        acked(&mut eventloop, page.len()).await?;
        let ids: Vec<i64> = page.iter().map(|r| r.0).collect();
        sqlx::query("UPDATE rejected_messages SET replayed_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(pool)
            .await?;
        done.messages += page.len() as u64;
        tracing::info!(messages = done.messages, "replayed");
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    Ok(done)
}

/// Polls the connection until the broker has acknowledged `n` publishes.
async fn acked(eventloop: &mut rumqttc::EventLoop, n: usize) -> Result<(), ReplayError> {
    let mut acks = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while acks < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acks += 1,
                Ok(Event::Incoming(Packet::Disconnect)) => {
                    return Err(ReplayError::Broker("disconnected".into()));
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    return Err(ReplayError::Broker("disconnected".into()));
                }
                Ok(_) => {}
                Err(e) => return Err(ReplayError::Broker(e.to_string())),
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| ReplayError::Timeout)?
}
