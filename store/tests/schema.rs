//! The schema on real PostgreSQL: migrations, daily partitions and retention,
//! idempotent storage keys, creating a missing database.
//! Each `#[sqlx::test]` runs in a fresh database (see `.cargo/config.toml`).

use jiff::civil::date;
use sqlx::PgPool;
use store::{Maintenance, maintain_partitions};

async fn partitions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'fixes'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("partitions")
}

async fn insert_fix(pool: &PgPool, device: &str, time: &str) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO fixes (device_id, fix_time, lat, lon, accuracy_m) VALUES ($1, $2::text::timestamptz, 43.2, 76.9, 8) \
         ON CONFLICT (device_id, fix_time) DO NOTHING",
    )
    .bind(device)
    .bind(time)
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn daily_partitions_are_created_ahead_and_dropped_after_retention(pool: PgPool) {
    // Yesterday, today and three days ahead: five days, two tables each.
    let m = maintain_partitions(&pool, date(2026, 11, 23), 3, 30)
        .await
        .expect("maintains");
    assert_eq!(
        m,
        Maintenance {
            created: 10,
            dropped: 0
        }
    );
    assert_eq!(
        maintain_partitions(&pool, date(2026, 11, 23), 3, 30)
            .await
            .expect("again"),
        Maintenance {
            created: 0,
            dropped: 0
        },
        "idempotent"
    );
    assert_eq!(
        partitions(&pool).await.first().map(String::as_str),
        Some("fixes_p20261122")
    );

    // Partition bounds are UTC days.
    assert_eq!(
        insert_fix(&pool, "EM-1", "2026-11-22T00:00:00Z")
            .await
            .expect("first instant"),
        1
    );
    assert_eq!(
        insert_fix(&pool, "EM-1", "2026-11-26T23:59:59.999Z")
            .await
            .expect("last instant"),
        1
    );
    assert!(
        insert_fix(&pool, "EM-1", "2026-11-27T00:00:00Z")
            .await
            .is_err(),
        "no partition yet"
    );
    // The same (device, fix time) again inserts nothing: redelivery is idempotent.
    assert_eq!(
        insert_fix(&pool, "EM-1", "2026-11-22T00:00:00Z")
            .await
            .expect("duplicate"),
        0
    );

    // 40 days later with 30 days of retention, the November partitions go, and
    // their rows with them.
    let m = maintain_partitions(&pool, date(2027, 1, 1), 3, 30)
        .await
        .expect("maintains");
    assert_eq!(m.dropped, 10);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM fixes")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
    let names = partitions(&pool).await;
    assert_eq!(names.first().map(String::as_str), Some("fixes_p20261231"));
    assert_eq!(names.len(), 5);
}

#[tokio::test]
async fn only_connect_creates_a_missing_database() {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (set in .cargo/config.toml)");
    let name = format!("emtrack_create_{}", std::process::id());
    let url = format!(
        "{}/{name}",
        base.rsplit_once('/').expect("url has a path").0
    );
    // Every command but `migrate`: a missing database is an error naming
    // it, and it is not created (a typo in database_url).
    match store::connect_existing(&url).await {
        Err(e @ store::DbError::Missing(_)) => {
            assert!(e.to_string().contains(&name), "names the database: {e}");
        }
        other => panic!("a missing database is an error: {other:?}"),
    }
    let pool = store::connect(&url).await.expect("creates and connects");
    store::migrate(&pool).await.expect("migrates");
    let current: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&pool)
        .await
        .expect("db");
    assert_eq!(current, name);
    pool.close().await;
    let admin = PgPool::connect(&base).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE \"{name}\""))
        .execute(&admin)
        .await
        .expect("drop");
}
