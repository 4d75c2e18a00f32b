//! PostgreSQL: connecting (creating the database if it is missing), migrating,
//! and partition maintenance.

use jiff::civil::Date;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Why the database could not be used.
#[derive(Debug)]
pub enum DbError {
    /// The URL does not parse.
    BadUrl(String),
    /// Postgres refused or is unreachable.
    Connect {
        /// Host and database, without credentials.
        target: String,
        /// The driver's error.
        error: sqlx::Error,
    },
    /// A migration failed or the database is ahead of this binary.
    Migrate(sqlx::migrate::MigrateError),
    /// A query failed.
    Query(sqlx::Error),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::BadUrl(e) => write!(f, "database_url does not parse: {e}"),
            DbError::Connect { target, error } => write!(
                f,
                "cannot connect to PostgreSQL at {target}: {error}. Is it running \
                 (pg_ctlcluster --skip-systemctl-redirect <version> main start), and does \
                 database_url / EMTRACK_DATABASE_URL name the right host, user and port?"
            ),
            DbError::Migrate(e) => write!(
                f,
                "migrations failed: {e}. If the database was migrated by a newer emtrack, run that version"
            ),
            DbError::Query(e) => write!(f, "database query failed: {e}"),
        }
    }
}

impl std::error::Error for DbError {}

fn target(o: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or("(default)")
    )
}

/// Connects to `url`, creating its database first if it does not exist.
pub async fn connect(url: &str) -> Result<PgPool, DbError> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| DbError::BadUrl(e.to_string()))?;
    let pool = |o: PgConnectOptions| {
        PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(o)
    };
    match pool(opts.clone()).await {
        Ok(p) => Ok(p),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            create_database(&opts).await?;
            pool(opts.clone()).await.map_err(|error| DbError::Connect {
                target: target(&opts),
                error,
            })
        }
        Err(error) => Err(DbError::Connect {
            target: target(&opts),
            error,
        }),
    }
}

async fn create_database(opts: &PgConnectOptions) -> Result<(), DbError> {
    let name = opts.get_database().unwrap_or("emtrack").to_owned();
    let admin = opts.clone().database("postgres");
    let mut conn = admin.connect().await.map_err(|error| DbError::Connect {
        target: target(&admin),
        error,
    })?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&sql).execute(&mut conn).await {
        Ok(_) => {}
        // Another process created it first.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
        Err(e) => return Err(DbError::Query(e)),
    }
    conn.close().await.map_err(DbError::Query)
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::Migrate)
}

/// What partition maintenance did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Maintenance {
    /// Daily partitions created.
    pub created: i32,
    /// Daily partitions dropped (past retention).
    pub dropped: i32,
}

/// Ensures daily partitions from `today - 1` to `today + ahead_days`, and drops
/// those wholly older than `today - retention_days`. Under TimescaleDB it sets
/// the retention policy instead.
pub async fn maintain_partitions(
    pool: &PgPool,
    today: Date,
    ahead_days: u32,
    retention_days: u32,
) -> Result<Maintenance, DbError> {
    let day = |offset: i64| {
        today
            .checked_add(jiff::Span::new().days(offset))
            .unwrap_or(today)
            .to_string()
    };
    let native: bool = sqlx::query_scalar("SELECT emtrack_native_partitions()")
        .fetch_one(pool)
        .await
        .map_err(DbError::Query)?;
    if !native {
        for table in ["fixes", "device_events"] {
            sqlx::query("SELECT add_retention_policy($1::regclass, make_interval(days => $2), if_not_exists => true)")
                .bind(table)
                .bind(retention_days as i32)
                .execute(pool)
                .await
                .map_err(DbError::Query)?;
        }
        return Ok(Maintenance {
            created: 0,
            dropped: 0,
        });
    }
    let created: i32 =
        sqlx::query_scalar("SELECT emtrack_ensure_partitions($1::text::date, $2::text::date)")
            .bind(day(-1))
            .bind(day(i64::from(ahead_days)))
            .fetch_one(pool)
            .await
            .map_err(DbError::Query)?;
    let dropped: i32 = sqlx::query_scalar("SELECT emtrack_drop_partitions_before($1::text::date)")
        .bind(day(-i64::from(retention_days)))
        .fetch_one(pool)
        .await
        .map_err(DbError::Query)?;
    Ok(Maintenance { created, dropped })
}
