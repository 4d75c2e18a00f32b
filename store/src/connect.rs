//! Connecting to PostgreSQL (creating the database if it is missing) and
//! migrating it.

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
    /// The database does not exist (and was not to be created).
    Missing(String),
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
            DbError::Missing(target) => write!(
                f,
                "database {target} does not exist: create and migrate it with `emtrack migrate`, \
                 or check database_url for a typo"
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
    connect_to(url, true).await
}

/// Connects to `url`; a missing database is [`DbError::Missing`], never
/// created: a typo in `database_url` must not start a service on a new,
/// empty database.
pub async fn connect_existing(url: &str) -> Result<PgPool, DbError> {
    connect_to(url, false).await
}

async fn connect_to(url: &str, create: bool) -> Result<PgPool, DbError> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| DbError::BadUrl(e.to_string()))?;
    let pool = |o: PgConnectOptions| {
        PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(o)
    };
    match pool(opts.clone()).await {
        Ok(p) => Ok(p),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") && !create => {
            Err(DbError::Missing(target(&opts)))
        }
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
