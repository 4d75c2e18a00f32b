//! The webhook sender: an HTTP POST of the JSON (`https://` verified against
//! `alerts.webhook_ca_file`, or the system's roots), signed per Standard
//! Webhooks (`webhook-id: <alert id>-<version>`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<t>.<body>")>`, the
//! key from [`signing_key`]), so that a receiver verifies it with a stock
//! library; also the legacy
//! `X-Emtrack-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! `Idempotency-Key` (the same id) and `X-Emtrack-Alert-Id`.
//! A failure is retried with exponential backoff (`webhook_backoff_ms`,
//! doubling, capped); after the webhook's `max_attempts` the delivery is
//! `dead` with its last error: the dead-letter record. A webhook marked
//! inactive keeps its notifications pending and is looked at again every 5
//! minutes.

use super::{Channel, Delivery, Holding, Senders};
use crate::config::AlertConfig;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use store::now_ms;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// How long a paused webhook's notifications wait before it is looked at again.
const PAUSED_RECHECK: Duration = Duration::from_secs(300);

/// The HMAC key of a webhook's secret, as Standard Webhooks libraries take
/// it: a `whsec_<base64>` secret is the bytes it encodes; any other secret
/// is its own bytes (a receiver's library then takes it base64-encoded).
pub fn signing_key(secret: &str) -> Vec<u8> {
    whsec_key(secret).unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The key a `whsec_<base64>` secret encodes; none for any other secret,
/// or for a `whsec_` one that is not base64.
pub fn whsec_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
}

/// The `webhook-signature` header value (Standard Webhooks, v1):
/// `v1,<base64 HMAC-SHA256(key, "{id}.{unix_s}.{body}")>`.
pub fn standard_signature(key: &[u8], id: &str, unix_s: i64, body: &[u8]) -> String {
    use base64::Engine;
    // HMAC takes keys of any length: this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return "v1,".to_owned();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(unix_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// The legacy `X-Emtrack-Signature` value for `body` at `unix_s` (kept
/// beside the standard headers for receivers written against it).
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

/// The delay after the `attempts`-th failure: base × 2^(attempts − 1),
/// capped, plus up to as much again of jitter (the shared policy,
/// [`store::Backoff`]), so that deliveries failed together by one outage
/// do not all retry at the same instant.
pub fn backoff(cfg: &AlertConfig, attempts: i32) -> Duration {
    store::Backoff::new(
        Duration::from_millis(cfg.webhook_backoff_ms),
        Duration::from_millis(cfg.webhook_backoff_max_s.saturating_mul(1000)),
    )
    .after(u32::try_from(attempts).unwrap_or(1))
}

async fn post(
    client: &Client,
    url: &str,
    secret: &str,
    d: &Delivery,
    timeout: Duration,
) -> Result<(), String> {
    let t = now_ms() / 1000;
    // The same id on every attempt: the receiver's de-duplication key.
    let id = format!("{}-{}", d.alert, d.version);
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", t.to_string())
        .header(
            "webhook-signature",
            standard_signature(&signing_key(secret), &id, t, &d.payload),
        )
        .header(
            "x-emtrack-signature",
            signature(secret.as_bytes(), t, &d.payload),
        )
        .header("idempotency-key", &id)
        .header("x-emtrack-alert-id", d.alert.to_string())
        .body(Full::new(d.payload.clone()))
        .map_err(|e| format!("bad request: {e}"))?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
        .map_err(|e| format!("request failed: {}", causes(&e)))?;
    let status = resp.status();
    // Read the (bounded) body so that the connection can be reused.
    let _ = tokio::time::timeout(timeout, resp.into_body().collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// An error with its causes (`client error (Connect): invalid peer
/// certificate: UnknownIssuer`): hyper's own message names none.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Sends webhook deliveries until `stop`: each in its own task, at most
/// `webhook_concurrency` requests at once and `delivery_queue` deliveries
/// held (the rest wait in the queue, then in the database).
pub(crate) async fn run(
    s: Senders,
    tls: Arc<rustls::ClientConfig>,
    seal: Option<Arc<link::SealKey>>,
    mut rx: mpsc::Receiver<Delivery>,
    stop: CancellationToken,
) {
    // `https://` verified against `tls`'s roots; `http://` stays for
    // receivers on the same host or network.
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
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
        let (s, client, requests, stop, seal) = (
            s.clone(),
            client.clone(),
            requests.clone(),
            stop.clone(),
            seal.clone(),
        );
        tokio::spawn(async move {
            let _held = permit;
            deliver(&s, &client, &requests, seal.as_deref(), d, &stop).await;
        });
    }
}

/// A webhook row.
#[derive(sqlx::FromRow)]
struct Hook {
    id: i64,
    url: String,
    secret: Option<String>,
    secret_sealed: Option<Vec<u8>>,
    max_attempts: i32,
    active: bool,
}

impl Hook {
    /// Its secret: opened with `seal`, or as stored in plain text.
    fn secret(&self, seal: Option<&link::SealKey>) -> Result<String, String> {
        match (&self.secret_sealed, &self.secret) {
            (Some(sealed), _) => {
                let key =
                    seal.ok_or("its secret is sealed and alerts.webhook_key_file is not set")?;
                let plain = key
                    .open(sealed, self.id.to_string().as_bytes())
                    .map_err(|e| format!("{e}: check alerts.webhook_key_file"))?;
                String::from_utf8(plain).map_err(|_| "its sealed secret is not UTF-8".to_owned())
            }
            (None, Some(plain)) => Ok(plain.clone()),
            (None, None) => Err("it has no secret".to_owned()),
        }
    }
}

/// The webhooks whose sealed secret does not open with `key` (another
/// key's, or tampered with): their deliveries would all fail.
pub async fn unopened_secrets(
    pool: &sqlx::PgPool,
    key: &link::SealKey,
) -> Result<Vec<i64>, sqlx::Error> {
    let sealed: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, secret_sealed FROM webhooks WHERE secret_sealed IS NOT NULL")
            .fetch_all(pool)
            .await?;
    Ok(sealed
        .into_iter()
        .filter(|(id, s)| key.open(s, id.to_string().as_bytes()).is_err())
        .map(|(id, _)| id)
        .collect())
}

/// Seals the webhook secrets stored in plain text (rows written by hand or
/// by a run without a key); returns how many.
pub async fn seal_stored_secrets(
    pool: &sqlx::PgPool,
    key: &link::SealKey,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let plain: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, secret FROM webhooks WHERE secret IS NOT NULL FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
    for (id, secret) in &plain {
        sqlx::query("UPDATE webhooks SET secret = NULL, secret_sealed = $2 WHERE id = $1")
            .bind(id)
            .bind(key.seal(secret.as_bytes(), id.to_string().as_bytes()))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(plain.len() as u64)
}

/// Reads the webhook `target` behind the service lease's fence, before each
/// attempt: a node that lost the lease (paused, partitioned) makes no more
/// attempts, its retries included.
async fn read_hook(s: &Senders, target: &str) -> Result<Option<Hook>, sqlx::Error> {
    let mut tx = s.fence.begin(&s.pool).await?;
    let hook = sqlx::query_as(
        "SELECT id, url, secret, secret_sealed, max_attempts, active FROM webhooks WHERE id = $1::text::int8",
    )
    .bind(target)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(hook)
}

/// Tries `d` until it is delivered, dead, or its webhook paused; stops if
/// this node was fenced.
async fn deliver(
    s: &Senders,
    client: &Client,
    requests: &Semaphore,
    seal: Option<&link::SealKey>,
    mut d: Delivery,
    stop: &CancellationToken,
) {
    let _holding = Holding(&s.held, d.id);
    loop {
        let hook = match read_hook(s, &d.target).await {
            Ok(h) => h,
            Err(e) if store::fenced(&e) => {
                tracing::error!(alert = d.alert, webhook = %d.target, "webhook attempt fenced: another emtrack is the active node and sends it");
                return;
            }
            Err(e) => {
                // The lease runs out and the sweeper tries again.
                tracing::warn!(error = %e, webhook = %d.target, "cannot read the webhook; its delivery waits for its lease to end");
                return;
            }
        };
        let Some(hook) = hook else {
            s.dead(&d, "webhook deleted").await;
            return;
        };
        if !hook.active {
            s.due_in(Channel::Webhook, &[d.id], PAUSED_RECHECK).await;
            return;
        }
        let r = {
            let Ok(_slot) = requests.acquire().await else {
                return;
            };
            s.metrics
                .delivery_attempts
                .with_label_values(&[Channel::Webhook.as_str()])
                .inc();
            let timeout = Duration::from_secs(s.cfg.webhook_timeout_s);
            match hook.secret(seal) {
                Ok(secret) => post(client, &hook.url, &secret, &d, timeout).await,
                Err(e) => Err(format!("cannot sign: {e}")),
            }
        };
        d.attempts += 1;
        let Err(e) = r else {
            s.observe_latency(Channel::Webhook, d.live_event_ms);
            let _ = s
                .delivered(Channel::Webhook, &[d.id], Some(d.attempts))
                .await;
            return;
        };
        s.metrics
            .delivery_failures
            .with_label_values(&[Channel::Webhook.as_str()])
            .inc();
        let dead = d.attempts >= hook.max_attempts;
        let wait = backoff(&s.cfg, d.attempts);
        s.failed(&d, &e, dead, wait).await;
        if dead {
            s.metrics
                .delivery_dead
                .with_label_values(&[Channel::Webhook.as_str()])
                .inc();
            tracing::warn!(alert = d.alert, webhook = %d.target, attempts = d.attempts, error = %e, "webhook delivery given up (dead letter)");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
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
    fn a_stock_standard_webhooks_library_verifies_our_signatures() {
        use base64::Engine;
        let body = br#"{"alert_id":7}"#;
        let t = now_ms() / 1000;
        let headers = |sig: String| {
            let mut h = hyper::HeaderMap::new();
            for (k, v) in [
                ("webhook-id", "7-1".to_owned()),
                ("webhook-timestamp", t.to_string()),
                ("webhook-signature", sig),
            ] {
                h.insert(k, v.parse().expect("header value"));
            }
            h
        };
        // A `whsec_` secret, as Standard Webhooks libraries expect it.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let ok = headers(standard_signature(&signing_key(secret), "7-1", t, body));
        let wh = standardwebhooks::Webhook::new(secret).expect("secret");
        wh.verify(body, &ok).expect("verified by the stock library");
        assert!(
            wh.verify(br#"{"alert_id":8}"#, &ok).is_err(),
            "another body fails"
        );
        // Any other secret: the receiver gives the library its base64.
        let plain = "a plain secret, 32 bytes or longer";
        let ok = headers(standard_signature(&signing_key(plain), "7-1", t, body));
        let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
        standardwebhooks::Webhook::new(&encoded)
            .expect("secret")
            .verify(body, &ok)
            .expect("verified by the stock library");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let cfg = AlertConfig {
            webhook_backoff_ms: 100,
            webhook_backoff_max_s: 1,
            ..AlertConfig::default()
        };
        for (attempt, base) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (6, 1000)] {
            let waits: Vec<u128> = (0..200)
                .map(|_| backoff(&cfg, attempt).as_millis())
                .collect();
            let (lo, hi) = (waits.iter().min(), waits.iter().max());
            assert!(
                waits.iter().all(|w| (base..=2 * base).contains(w)),
                "attempt {attempt}: {base} ms plus up to as much again, got {lo:?}..{hi:?}"
            );
            // Spread, not in step: 200 deliveries do not share one instant.
            let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
            assert!(
                distinct.len() > 50,
                "attempt {attempt}: {} distinct waits",
                distinct.len()
            );
        }
    }
}
