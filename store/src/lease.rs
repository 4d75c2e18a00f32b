//! The service lease: which `emtrack run` is the active node of a database,
//! and the fence that keeps a node that lost it from writing.
//!
//! One row of `service_lease` (migration 0016). The active node renews it
//! every quarter of its period through a connection of its own, whose
//! `application_name` is the holder's name. A standby polls every second and
//! takes the lease when it has expired by the database server's clock (host
//! loss, a partition: the hosts' clocks never matter) or once no session of
//! that name is left and the holder has not renewed for a renewal interval
//! and a second (its process died and the server closed its connections:
//! kill -9 is noticed within about 3 s; a holder whose connection merely
//! dropped, in a database restart, reconnects within that and keeps it).
//!
//! Fencing: each write transaction of ingest and the alert service first
//! begins with [`Fence::begin`] (`emtrack_fence`), which locks the row `FOR SHARE`
//! and refuses with SQLSTATE `EMF01` unless this node still holds the epoch
//! it took. A takeover waits for those transactions to end, and every later
//! one of the old node fails ([`fenced`]): a node that was paused,
//! partitioned or slow cannot write once another took over, even before it
//! notices.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, PgPool, Postgres, Transaction};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// SQLSTATE raised by `emtrack_fence` when the caller lost the lease.
pub const FENCED: &str = "EMF01";

/// True if `e` is the fence refusing a write: this node is no longer the
/// active one. Not transient: retrying cannot succeed.
pub fn fenced(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(FENCED))
}

/// What a write transaction checks first (cheap to clone).
#[derive(Clone, Debug)]
pub struct Fence {
    holder: Arc<str>,
    epoch: i64,
}

impl Fence {
    /// Begins a write transaction on `pool` behind the fence: refused (an
    /// error for which [`fenced`] is true) unless this node still holds the
    /// lease, and holding the lease row until it ends, so that a takeover
    /// waits for it. Every write of the active node starts here.
    pub async fn begin(
        &self,
        pool: &PgPool,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT emtrack_fence($1, $2)")
            .bind(&*self.holder)
            .bind(self.epoch)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// Why the active node stopped holding the lease.
#[derive(Debug)]
pub enum LeaseLost {
    /// Another node holds it now.
    TakenBy(String),
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseLost::TakenBy(h) => write!(
                f,
                "lost the service lease: {h} is the active node now; this one stops (restart it to make it the standby)"
            ),
        }
    }
}

impl std::error::Error for LeaseLost {}

/// The lease held by this node (the active one).
#[derive(Debug)]
pub struct Lease {
    options: PgConnectOptions,
    conn: Option<PgConnection>,
    fence: Fence,
    period: Duration,
}

/// A name for this node's lease: host, process id and a start-time nonce
/// (unique per process; at most 63 bytes, PostgreSQL's `application_name`).
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let host: String = host
        .chars()
        .filter(char::is_ascii_graphic)
        .take(32)
        .collect();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("emtrack {host} {} {nonce:08x}", std::process::id())
}

impl Lease {
    /// Takes the lease if it is free (never taken, expired, or its holder's
    /// sessions are gone); `None` if another node holds it. `period` is how
    /// long a renewal lasts.
    pub async fn try_take(
        pool: &PgPool,
        holder: &str,
        period: Duration,
    ) -> Result<Option<Lease>, sqlx::Error> {
        Lease::take_on(pool, holder, period, &mut None).await
    }

    /// [`Lease::try_take`] on `session`, the waiting node's own connection:
    /// opened when `None`, left there when another node holds the lease (a
    /// standby polls on one session, not a new one per poll), and gone after
    /// an error, a timeout or once the lease is taken (it becomes the
    /// lease's).
    async fn take_on(
        pool: &PgPool,
        holder: &str,
        period: Duration,
        session: &mut Option<PgConnection>,
    ) -> Result<Option<Lease>, sqlx::Error> {
        let options = (*pool.connect_options()).clone().application_name(holder);
        let mut conn = match session.take() {
            Some(conn) => conn,
            None => {
                let mut conn = options.connect().await?;
                // A holder frozen inside a fenced transaction keeps the row
                // locked until the server ends its session (the fence allows
                // 5 s idle): do not queue behind it, try again at the next poll.
                sqlx::query("SET lock_timeout = '1s'")
                    .execute(&mut conn)
                    .await?;
                sqlx::query(
                    "INSERT INTO service_lease (name, holder, epoch, taken_at, expires_at) \
                     VALUES ('run', '', 0, now(), '-infinity') ON CONFLICT (name) DO NOTHING",
                )
                .execute(&mut conn)
                .await?;
                conn
            }
        };
        // Taken when expired, or when the holder's sessions are gone and it
        // has not renewed for over a renewal interval and a second: a holder
        // whose lease connection merely dropped (a database restart)
        // reconnects at its next renewal and keeps it.
        let grace = millis(period.saturating_sub(renewal(period) + Duration::from_secs(1)));
        let epoch: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
            "UPDATE service_lease SET holder = $1, epoch = epoch + 1, taken_at = now(), \
                    expires_at = now() + $2 * interval '1 millisecond' \
              WHERE name = 'run' \
                AND (expires_at < now() \
                     OR (expires_at < now() + $3 * interval '1 millisecond' \
                         AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a \
                                          WHERE a.datname = current_database() \
                                            AND a.application_name = service_lease.holder))) \
             RETURNING epoch",
        )
        .bind(holder)
        .bind(millis(period))
        .bind(grace)
        .fetch_optional(&mut conn)
        .await;
        let epoch = match epoch {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => None,
            other => other?,
        };
        let Some(epoch) = epoch else {
            *session = Some(conn);
            return Ok(None);
        };
        // Renewals wait behind this node's own fenced transactions.
        sqlx::query("RESET lock_timeout").execute(&mut conn).await?;
        Ok(Some(Lease {
            options,
            conn: Some(conn),
            fence: Fence {
                holder: holder.into(),
                epoch,
            },
            period,
        }))
    }

    /// Waits until the lease can be taken, polling every `poll`; `None` if
    /// `stop` is cancelled first. Database errors are logged and retried.
    pub async fn wait(
        pool: &PgPool,
        holder: &str,
        period: Duration,
        poll: Duration,
        stop: &CancellationToken,
    ) -> Option<Lease> {
        // Bounded and stoppable: a database that does not answer must not
        // keep a standby from stopping.
        let bound = poll.max(Duration::from_secs(5));
        let mut session = None;
        loop {
            let taken = tokio::select! {
                _ = stop.cancelled() => return None,
                t = tokio::time::timeout(bound, Lease::take_on(pool, holder, period, &mut session)) => t,
            };
            match taken {
                Ok(Ok(Some(lease))) => return Some(lease),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "standby: cannot read the service lease; retrying")
                }
                Err(_) => tracing::warn!("standby: the database does not answer; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Who holds the lease now, if anyone (for logs and readiness).
    pub async fn holder(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT holder FROM service_lease WHERE name = 'run' AND expires_at > now()",
        )
        .fetch_optional(pool)
        .await
    }

    /// The fence for this node's write transactions.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// The epoch taken: one more than the previous holder's.
    pub fn epoch(&self) -> i64 {
        self.fence.epoch
    }

    /// Renews the lease every quarter period until `stop`; an error once
    /// another node holds it. While the database is unreachable it keeps
    /// trying: this node's writes wait for the database like everything
    /// else, and if a standby took over meanwhile they are fenced, and the
    /// next renewal that reaches the database says so.
    pub async fn keep(&mut self, stop: &CancellationToken) -> Result<(), LeaseLost> {
        let mut confirmed = Instant::now();
        let every = renewal(self.period);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
            // A renewal that hangs (a dead connection) is a failed one.
            let renewed = match tokio::time::timeout(every, self.renew()).await {
                Ok(r) => r,
                Err(_) => {
                    self.conn = None;
                    Err(sqlx::Error::PoolTimedOut)
                }
            };
            match renewed {
                Ok(true) => confirmed = Instant::now(),
                Ok(false) => return Err(LeaseLost::TakenBy(self.current_holder().await)),
                Err(e) if confirmed.elapsed() >= self.period => {
                    tracing::error!(error = %e, unconfirmed_s = confirmed.elapsed().as_secs(), "cannot renew the service lease for longer than its period: a standby may take over, and then this node's writes are fenced; retrying");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the service lease; retrying");
                }
            }
        }
    }

    /// Gives the lease up at once (a clean stop): a standby takes over at
    /// its next poll instead of waiting for the period to run out.
    pub async fn release(&mut self) {
        let fence = self.fence.clone();
        let r = match self.connection().await {
            Ok(c) => sqlx::query(
                "UPDATE service_lease SET expires_at = '-infinity' \
                  WHERE name = 'run' AND holder = $1 AND epoch = $2",
            )
            .bind(&*fence.holder)
            .bind(fence.epoch)
            .execute(c)
            .await
            .map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot release the service lease; a standby takes over when it expires");
        }
        if let Some(c) = self.conn.take() {
            let _ = sqlx::Connection::close(c).await;
        }
    }

    /// True if renewed; false if another node holds the lease now.
    async fn renew(&mut self) -> Result<bool, sqlx::Error> {
        let (holder, epoch, period) = (self.fence.holder.clone(), self.fence.epoch, self.period);
        let r = sqlx::query(
            "UPDATE service_lease SET expires_at = now() + $3 * interval '1 millisecond' \
              WHERE name = 'run' AND holder = $1 AND epoch = $2",
        )
        .bind(&*holder)
        .bind(epoch)
        .bind(millis(period))
        .execute(self.connection().await?)
        .await;
        match r {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(e) => {
                // A broken connection is replaced at the next renewal (the
                // session named after this node must exist for it to keep
                // the lease); one the server answered on stays.
                if !matches!(e, sqlx::Error::Database(_)) {
                    self.conn = None;
                }
                Err(e)
            }
        }
    }

    async fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.options.connect().await?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn current_holder(&mut self) -> String {
        let r: Result<Option<String>, sqlx::Error> = match self.connection().await {
            Ok(c) => {
                sqlx::query_scalar("SELECT holder FROM service_lease WHERE name = 'run'")
                    .fetch_optional(c)
                    .await
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(Some(h)) => h,
            Ok(None) => "nobody".to_owned(),
            Err(e) => format!("another node (cannot read the lease: {e})"),
        }
    }
}

/// How often the holder renews: a quarter of the period.
fn renewal(period: Duration) -> Duration {
    period / 4
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
