//! What operators watch of the delivery outbox: the backlog gauges
//! (`emtrack_alert_deliveries_pending`,
//! `emtrack_alert_delivery_oldest_pending_seconds`), on a running service
//! whose webhook receiver is down, so that its notification waits.

mod common;

use common::*;
use device_sim::testbed::Broker;
use sqlx::PgPool;
use std::time::Duration;

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_waiting_notification_shows_in_the_backlog_gauges(pool: PgPool) {
    let broker = Broker::start().expect("broker");
    let setup = [
        "INSERT INTO officers (id, name, role) VALUES (1, 'Officer One', 'officer')",
        "INSERT INTO subjects (id, reference, officer_id) VALUES (1, 'S-1', 1)",
        "INSERT INTO devices (id, kind, format, report_interval_s) VALUES ('dev-a', 'bracelet', 'json', 30)",
        "INSERT INTO assignments (device_id, subject_id) VALUES ('dev-a', 1)",
        // Nobody listens on port 9: every attempt fails and the
        // notification waits for its next one (100 attempts).
        "INSERT INTO webhooks (id, url, secret, max_attempts) VALUES (1, 'http://127.0.0.1:9/hook', 'a secret of thirty-two bytes or more', 100)",
    ];
    for q in setup {
        sqlx::query(q).execute(&pool).await.expect(q);
    }
    let svc = Running::start(pool.clone(), broker.port, "emtrack-backlog").await;
    let http = svc.svc.http.port();
    // The service runs on this test's runtime: the blocking GET runs beside it.
    let gauge = |name: &'static str, channel: &'static str| async move {
        let body = tokio::task::spawn_blocking(move || http_get(http, "/metrics"))
            .await
            .ok()??
            .1;
        metric(&body, &format!("{name}{{channel=\"{channel}\"}}"))
    };
    strap_opened(broker.port, "dev-a").await;
    wait_until(
        Duration::from_secs(20),
        "the failing webhook's notification in the gauges",
        || async {
            gauge("emtrack_alert_deliveries_pending", "webhook").await == Some(1.0)
                && gauge("emtrack_alert_delivery_oldest_pending_seconds", "webhook")
                    .await
                    .is_some_and(|a| a > 0.0)
        },
    )
    .await;
    // The officer's MQTT notification went out: nothing waits there.
    wait_until(
        Duration::from_secs(20),
        "the MQTT channel drained",
        || async {
            gauge("emtrack_alert_deliveries_pending", "mqtt").await == Some(0.0)
                && gauge("emtrack_alert_delivery_oldest_pending_seconds", "mqtt").await == Some(0.0)
        },
    )
    .await;
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM alert_deliveries WHERE channel = 'webhook' AND state = 'pending'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(stored, 1, "the gauge says what the outbox holds");
    svc.shut_down().await;
}
