//! The service lease on a real PostgreSQL: one holder at a time, takeover
//! when the holder's sessions are gone or its lease expired, and the fence
//! refusing every write of a node that lost it.

use sqlx::{Connection, PgPool};
use std::time::Duration;
use store::{Lease, LeaseLost, fenced};
use tokio_util::sync::CancellationToken;

const PERIOD: Duration = Duration::from_secs(8);

/// Writes one row through `lease`'s fence, as ingest and the alert service do.
async fn fenced_write(pool: &PgPool, fence: &store::Fence) -> Result<(), sqlx::Error> {
    let mut tx = fence.begin(pool).await?;
    sqlx::query("INSERT INTO probe VALUES (1)")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

async fn probe_table(pool: &PgPool) {
    sqlx::query("CREATE TABLE probe (n int)")
        .execute(pool)
        .await
        .expect("probe table");
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn one_holder_at_a_time_and_the_loser_is_fenced(pool: PgPool) {
    probe_table(&pool).await;
    let a = Lease::try_take(&pool, "emtrack test a", PERIOD)
        .await
        .expect("reads the lease")
        .expect("a free lease is taken");
    assert_eq!(a.epoch(), 1);
    assert!(
        Lease::try_take(&pool, "emtrack test b", PERIOD)
            .await
            .expect("reads the lease")
            .is_none(),
        "held, unexpired, its holder's session alive: no takeover"
    );
    fenced_write(&pool, &a.fence())
        .await
        .expect("the holder writes");

    // The holder's process dies: the server closes its sessions, and a
    // standby takes over once the holder has also missed a renewal (2 s) and
    // a second, long before the period (8 s) runs out; a holder whose
    // connection merely dropped would have reconnected within that grace.
    let a_fence = a.fence();
    let took = std::time::Instant::now();
    drop(a);
    let mut b = None;
    while b.is_none() && took.elapsed() < Duration::from_secs(6) {
        b = Lease::try_take(&pool, "emtrack test b", PERIOD)
            .await
            .expect("reads the lease");
        if b.is_none() {
            assert!(
                took.elapsed() < Duration::from_millis(3_500),
                "not taken within the grace"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        took.elapsed() >= Duration::from_millis(2_900),
        "not before the holder missed a renewal: {:?}",
        took.elapsed()
    );
    let mut b = b.expect("taken over once a's session is gone");
    assert_eq!(b.epoch(), 2);
    let refused = fenced_write(&pool, &a_fence)
        .await
        .expect_err("the old holder's write is refused");
    assert!(fenced(&refused), "refused by the fence: {refused}");
    fenced_write(&pool, &b.fence())
        .await
        .expect("the new holder writes");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM probe")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 2, "only the holders' writes landed");

    // A clean stop releases it: the next node takes it at once.
    b.release().await;
    let c = Lease::try_take(&pool, "emtrack test c", PERIOD)
        .await
        .expect("reads the lease");
    assert_eq!(c.map(|l| l.epoch()), Some(3));
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn an_expired_lease_is_taken_and_its_old_holder_stops(pool: PgPool) {
    probe_table(&pool).await;
    // The holder is alive (its session stays) but stopped renewing: a
    // paused or partitioned host.
    let mut a = Lease::try_take(&pool, "emtrack test a", Duration::from_secs(2))
        .await
        .expect("reads the lease")
        .expect("taken");
    let took = std::time::Instant::now();
    let b = loop {
        if let Some(b) = Lease::try_take(&pool, "emtrack test b", PERIOD)
            .await
            .expect("reads the lease")
        {
            break b;
        }
        assert!(took.elapsed() < Duration::from_secs(10), "expires");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Taken no earlier than its period after it was taken (less the
    // round trip between the server's clock and ours).
    assert!(
        took.elapsed() >= Duration::from_millis(1_900),
        "not before its period ran out ({:?})",
        took.elapsed()
    );
    let refused = fenced_write(&pool, &a.fence()).await.expect_err("fenced");
    assert!(fenced(&refused), "{refused}");
    fenced_write(&pool, &b.fence()).await.expect("b writes");

    // The old holder resumes: its next renewal finds b there, and it stops.
    let stop = CancellationToken::new();
    match tokio::time::timeout(Duration::from_secs(5), a.keep(&stop)).await {
        Ok(Err(LeaseLost::TakenBy(holder))) => assert_eq!(holder, "emtrack test b"),
        other => panic!("a must learn that b holds the lease: {other:?}"),
    }
    // Its release does not free b's lease.
    a.release().await;
    assert!(
        Lease::try_take(&pool, "emtrack test c", PERIOD)
            .await
            .expect("reads the lease")
            .is_none(),
        "b still holds it"
    );
    drop(b);
    let mut conn = pool.acquire().await.expect("conn");
    conn.ping().await.expect("the database is fine");
}

/// The session named `name`: (its backend's pid, when its last query
/// started: none yet just after it connected), one row at most.
async fn session_of(pool: &PgPool, name: &str) -> Option<(i32, Option<String>)> {
    let rows: Vec<(i32, Option<String>)> = sqlx::query_as(
        "SELECT pid, query_start::text FROM pg_stat_activity \
          WHERE datname = current_database() AND application_name = $1",
    )
    .bind(name)
    .fetch_all(pool)
    .await
    .expect("pg_stat_activity");
    assert!(rows.len() <= 1, "one session for {name}: {rows:?}");
    rows.into_iter().next()
}

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_standby_polls_on_one_session_which_becomes_its_lease(pool: PgPool) {
    let mut a = Lease::try_take(&pool, "emtrack test a", PERIOD)
        .await
        .expect("reads the lease")
        .expect("taken");
    let stop = CancellationToken::new();
    let waiting = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop.clone());
        async move {
            Lease::wait(
                &pool,
                "emtrack test b",
                PERIOD,
                Duration::from_millis(20),
                &stop,
            )
            .await
        }
    });
    // Polls that a keeps refusing, all on the same backend.
    let started = std::time::Instant::now();
    let mut pid = None;
    let mut polls = std::collections::BTreeSet::new();
    while polls.len() < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the standby polls: {polls:?}"
        );
        if let Some((p, at)) = session_of(&pool, "emtrack test b").await {
            assert_eq!(*pid.get_or_insert(p), p, "the standby's session changed");
            polls.extend(at);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!waiting.is_finished(), "a still holds the lease");
    a.release().await;
    let b = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("takes the released lease")
        .expect("joined")
        .expect("not stopped");
    assert_eq!(b.epoch(), 2);
    let (lease_pid, _) = session_of(&pool, "emtrack test b")
        .await
        .expect("the lease's session");
    assert_eq!(Some(lease_pid), pid, "the polling session is the lease's");
    drop(b);
}
