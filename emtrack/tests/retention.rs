//! Retention for every table that holds personal data (`store::expire`),
//! on real PostgreSQL: each table keeps rows within its own period and
//! loses those beyond it; unresolved alerts, pending deliveries, current
//! orders and live credentials stay whatever their age; the audit log stays
//! append-only for everything but retention, which audits its own purge.

use sqlx::PgPool;

/// Rows per table: (old, recent), each old one beyond its period and each
/// recent one within it.
async fn seed(pool: &PgPool) {
    let statements = [
        "INSERT INTO users (id, username, role) VALUES (1, 'admin', 'admin')",
        "INSERT INTO rule_transitions (subject_id, rule_id, kind, at, historical, confirmed_at) VALUES \
         (1, 1, 'exclusion_entered', now() - interval '20 days', false, now() - interval '20 days'), \
         (1, 1, 'exclusion_entered', now() - interval '1 day', false, now() - interval '1 day')",
        "INSERT INTO messages (sha256, received_at, topic, device_id, format, bytes) VALUES \
         (sha256('old'), now() - interval '20 days', 't', 'd', 'json', 1), \
         (sha256('new'), now() - interval '1 day', 't', 'd', 'json', 1)",
        "INSERT INTO fix_conflicts (device_id, fix_time, message_id, lat, lon, accuracy_m, flags) VALUES \
         ('d', now() - interval '20 days', 1, 0, 0, 5, 0), ('d', now() - interval '1 day', 1, 0, 0, 5, 0)",
        "INSERT INTO device_findings (device_id, kind, at, detail) VALUES \
         ('d', 'clock_ahead', now() - interval '20 days', 'x'), ('d', 'clock_ahead', now() - interval '1 day', 'x')",
        // Rejected payloads: 5 days is within the evidence period (10) but
        // beyond their own (2).
        "INSERT INTO rejected_messages (received_at, topic, reason, payload) VALUES \
         (now() - interval '5 days', 't', 'bad_json', '\\x00'), (now() - interval '1 day', 't', 'bad_json', '\\x00')",
        // Alerts: 1 resolved long ago (goes, with its history and
        // deliveries), 2 open and as old (stays), 3 resolved lately (stays).
        "INSERT INTO alerts (id, subject_id, kind, scope, episode_at, severity, state, event_at, raised_at, historical, version, resolved_at) VALUES \
         (1, 1, 'strap_tamper', 0, now() - interval '30 days', 'critical', 'resolved', now() - interval '30 days', now() - interval '30 days', false, 2, now() - interval '20 days'), \
         (2, 1, 'case_tamper', 0, now() - interval '30 days', 'critical', 'open', now() - interval '30 days', now() - interval '30 days', false, 1, NULL), \
         (3, 1, 'no_communication', 0, now() - interval '3 days', 'serious', 'resolved', now() - interval '3 days', now() - interval '3 days', false, 2, now() - interval '1 day')",
        "INSERT INTO alert_events (alert_id, version, at, change) VALUES \
         (1, 1, now() - interval '30 days', 'raised'), (1, 2, now() - interval '20 days', 'resolved'), \
         (2, 1, now() - interval '30 days', 'raised'), (3, 1, now() - interval '3 days', 'raised')",
        // Deliveries: of alert 2, one delivered long ago (goes), one still
        // pending as old (stays); of alert 3, one delivered lately (stays).
        "INSERT INTO alert_deliveries (alert_id, version, channel, target, payload, state, next_attempt_at, created_at) VALUES \
         (1, 1, 'mqtt', 'x', '{}', 'delivered', now(), now() - interval '30 days'), \
         (2, 1, 'mqtt', 'x', '{}', 'delivered', now(), now() - interval '30 days'), \
         (2, 1, 'webhook', '9', '{}', 'pending', now(), now() - interval '30 days'), \
         (3, 1, 'mqtt', 'x', '{}', 'delivered', now(), now() - interval '1 day')",
        "INSERT INTO order_versions (object, object_id, version, row, valid_from, valid_to, changed_by) VALUES \
         ('zone', 7, 1, '{}', now() - interval '40 days', now() - interval '20 days', 'test'), \
         ('zone', 7, 2, '{}', now() - interval '20 days', NULL, 'test'), \
         ('zone', 8, 1, '{}', now() - interval '3 days', now() - interval '1 day', 'test')",
        "INSERT INTO credentials (user_id, kind, token_sha256, created_at, expires_at, revoked_at) VALUES \
         (1, 'session', sha256('a'), now() - interval '30 days', now() - interval '29 days', NULL), \
         (1, 'session', sha256('b'), now() - interval '30 days', now() + interval '1 day', now() - interval '20 days'), \
         (1, 'api_token', sha256('c'), now() - interval '30 days', now() + interval '60 days', NULL), \
         (1, 'session', sha256('d'), now() - interval '2 days', now() - interval '1 day', NULL)",
        "INSERT INTO audit_log (at, action) VALUES (now() - interval '20 days', 'old'), (now() - interval '1 day', 'new')",
    ];
    for q in statements {
        sqlx::query(q).execute(pool).await.expect(q);
    }
}

async fn count(pool: &PgPool, q: &str) -> i64 {
    sqlx::query_scalar(q).fetch_one(pool).await.expect(q)
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn each_table_keeps_its_own_period_and_no_more(pool: PgPool) {
    seed(&pool).await;
    let retention = store::Retention {
        rejected_messages_days: 2,
        alerts_days: 10,
        deliveries_days: 10,
        audit_log_days: 10,
        order_versions_days: 10,
        credentials_days: 10,
    };
    let expired = store::expire(&pool, jiff::Timestamp::now(), 10, &retention)
        .await
        .expect("retention runs");
    let deleted: std::collections::BTreeMap<_, _> = expired.into_iter().collect();
    let want = [
        ("rule_transitions", 1),
        ("messages", 1),
        ("fix_conflicts", 1),
        ("device_findings", 1),
        ("rejected_messages", 1),
        // Delivered ones beyond their period (alert 1's, alert 2's); the
        // pending one stays.
        ("alert_deliveries", 2),
        ("order_versions", 1),
        ("credentials", 2),
        ("audit_log", 1),
        ("alerts", 1),
    ];
    for (table, n) in want {
        assert_eq!(deleted.get(table), Some(&n), "{table}: {deleted:?}");
    }
    for (q, n) in [
        ("SELECT count(*) FROM rule_transitions", 1),
        ("SELECT count(*) FROM messages", 1),
        ("SELECT count(*) FROM fix_conflicts", 1),
        ("SELECT count(*) FROM device_findings", 1),
        ("SELECT count(*) FROM rejected_messages", 1),
        ("SELECT count(*) FROM alerts WHERE id IN (2, 3)", 2),
        ("SELECT count(*) FROM alerts", 2),
        ("SELECT count(*) FROM alert_events WHERE alert_id = 1", 0),
        ("SELECT count(*) FROM alert_events", 2),
        (
            "SELECT count(*) FROM alert_deliveries WHERE alert_id = 1",
            0,
        ),
        (
            "SELECT count(*) FROM alert_deliveries WHERE state = 'pending'",
            1,
        ),
        ("SELECT count(*) FROM alert_deliveries", 2),
        (
            "SELECT count(*) FROM order_versions WHERE valid_to IS NULL",
            1,
        ),
        ("SELECT count(*) FROM order_versions", 2),
        ("SELECT count(*) FROM credentials", 2),
        (
            "SELECT count(*) FROM audit_log WHERE action IN ('old', 'new')",
            1,
        ),
        ("SELECT count(*) FROM audit_log WHERE action = 'new'", 1),
        (
            "SELECT count(*) FROM audit_log WHERE action = 'retention' AND (detail ->> 'deleted')::int = 1",
            1,
        ),
    ] {
        assert_eq!(count(&pool, q).await, n, "{q}");
    }
    // Run again: nothing more is due.
    let again = store::expire(&pool, jiff::Timestamp::now(), 10, &retention)
        .await
        .expect("runs again");
    assert!(again.iter().all(|(_, n)| *n == 0), "{again:?}");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn the_audit_log_stays_append_only_for_all_but_retention(pool: PgPool) {
    seed(&pool).await;
    for q in [
        "DELETE FROM audit_log WHERE action = 'old'",
        "UPDATE audit_log SET action = 'x' WHERE action = 'old'",
        "TRUNCATE audit_log",
    ] {
        let e = sqlx::query(q).execute(&pool).await.expect_err(q);
        assert!(e.to_string().contains("append-only"), "{q}: {e}");
    }
    // A transaction that declares a cutoff may delete only rows before it.
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("SELECT set_config('emtrack.audit_retention_before', (now() - interval '10 days')::text, true)")
        .execute(&mut *tx)
        .await
        .expect("set");
    let e = sqlx::query("DELETE FROM audit_log WHERE action = 'new'")
        .execute(&mut *tx)
        .await
        .expect_err("a row newer than the cutoff");
    assert!(e.to_string().contains("append-only"), "{e}");
    drop(tx);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM audit_log").await,
        2,
        "nothing gone"
    );
}
