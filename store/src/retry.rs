//! Which database errors go away by themselves, and the retry loops every
//! service uses (capped exponential backoff, by `backon`).

use crate::partitions::no_partition;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::Duration;

/// Whether a database error may go away by itself (connection lost, server
/// restarting, lock conflict) rather than be refused again (bad data, a bug).
pub fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // Connection-class failures, which say nothing about the data:
            // 08 connection exception, 53 insufficient resources (53300 too
            // many connections), 57000/57P0x operator intervention (shutdown,
            // crash, cannot connect now, database dropped), 55000 "database
            // is not currently accepting connections", 28000/28P01
            // authentication (a password being rotated), 3D000 database
            // missing (a restore in progress). Not 57014 (a statement
            // cancelled or timed out): the same batch would time out again
            // and hold the pipeline forever.
            // Also 40001/40P01 serialization failure or deadlock, 55P03 lock
            // not available. Anything else (bad data, a constraint, an index
            // row too large, a bug) fails again.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || matches!(
                    code,
                    "57000"
                        | "55000"
                        | "28000"
                        | "28P01"
                        | "3D000"
                        | "40001"
                        | "40P01"
                        | "55P03"
                        // The server ended a session idle in a transaction
                        // (a frozen client): the connection is gone.
                        | "25P03"
                )
                // A day's partition dropped by retention after it was cached:
                // the cache is cleared and the retry recreates it.
                || no_partition(db.as_ref())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

/// The waits between attempts: `first`, doubling, capped at `max`, each
/// plus a random jitter of up to as much again (so at most `2 × max`), for
/// as many attempts as it takes. The jitter keeps many waiters (every
/// worker after a database restart, thousands of webhook deliveries after a
/// receiver's outage) from retrying in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// A batch whose acks are held: 50 ms, doubling up to 5 s (jittered).
    pub const HELD: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    /// Work that waits for the database, nothing held: 1 s, doubling up to 60 s.
    pub const PATIENT: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    /// A steady 1 s, plus up to 1 s of jitter (background work that must
    /// not fall behind much).
    pub const STEADY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));

    /// `first`, doubling, capped at `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The wait after the `failures`-th consecutive failure (1-based), for
    /// work whose failures are counted in a table rather than in a loop
    /// (webhook deliveries): the same waits as the retry loops'.
    pub fn after(self, failures: u32) -> Duration {
        let n = failures.clamp(1, 64) as usize - 1;
        self.builder().build().nth(n).unwrap_or(self.max)
    }

    fn builder(self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.first)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }
}

/// Runs `op` until it succeeds or fails with an error that is not
/// [`transient`], which is returned. `on_retry` sees each transient error and
/// the wait before the next attempt (to log and count it).
pub async fn retry_transient<T, F, Fut>(
    backoff: Backoff,
    op: F,
    on_retry: impl FnMut(&sqlx::Error, Duration),
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    op.retry(backoff.builder())
        .sleep(tokio::time::sleep)
        .when(transient)
        .notify(on_retry)
        .await
}

/// Runs `op` until it succeeds, whatever the error: for work that must not
/// be dropped and has nowhere else to go. `on_retry` sees each error and the
/// wait before the next attempt.
pub async fn retry_always<T, E, F, Fut>(
    backoff: Backoff,
    mut op: F,
    mut on_retry: impl FnMut(&E, Duration),
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut waits = backoff.builder().build();
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                // Endless by construction (`without_max_times`).
                let wait = waits.next().unwrap_or(backoff.max);
                on_retry(&e, wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_with_doubling_jittered_waits_and_others_returned() {
        let calls = Cell::new(0);
        let mut waits = Vec::new();
        let r: Result<(), sqlx::Error> = retry_transient(
            Backoff::new(Duration::from_millis(50), Duration::from_millis(150)),
            || async {
                calls.set(calls.get() + 1);
                if calls.get() < 4 {
                    Err(sqlx::Error::PoolTimedOut)
                } else {
                    Err(sqlx::Error::RowNotFound)
                }
            },
            |_, wait| waits.push(wait.as_millis()),
        )
        .await;
        assert!(matches!(r, Err(sqlx::Error::RowNotFound)));
        assert_eq!(calls.get(), 4);
        // 50, 100, 150 (capped), each plus up to as much again of jitter.
        assert_eq!(waits.len(), 3);
        for (w, base) in waits.iter().zip([50, 100, 150]) {
            assert!((base..=2 * base).contains(w), "{waits:?}");
        }
    }

    /// A server error with only a SQLSTATE.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// Connection-class failures hold acks; errors caused by the data do not.
    #[test]
    fn connection_class_errors_are_transient_and_data_errors_are_not() {
        let db = |code| sqlx::Error::Database(Box::new(Coded(code)));
        for code in [
            "08006", "08001", "53300", "53100", "57P01", "57P03", "57000", "55000", "28P01",
            "28000", "3D000", "40001", "40P01", "55P03",
        ] {
            assert!(transient(&db(code)), "{code} is transient");
        }
        for code in [
            "23505", "23514", "22003", "54000", "P0001", "42P01", "XX000", "57014",
        ] {
            assert!(
                !transient(&db(code)),
                "{code} fails again: the data, or a bug"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_always_ends_only_with_success() {
        let calls = Cell::new(0);
        let got = retry_always(
            Backoff::STEADY,
            || async {
                calls.set(calls.get() + 1);
                if calls.get() < 3 {
                    Err("refused")
                } else {
                    Ok(7)
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!((got, calls.get()), (7, 3));
    }
}
