//! `emtrack`: command-line front end. Parses flags, loads the configuration,
//! then calls the library.

use clap::{Args, Parser, Subcommand};
use emtrack::config::{Config, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

/// The emtrack service for electronic monitoring: bracelet messages in over
/// MQTT, violations judged, evidence stored in PostgreSQL.
///
/// Configuration comes from defaults (the local services), then --config FILE
/// (TOML), then EMTRACK_* environment variables (EMTRACK_DATABASE_URL,
/// EMTRACK_MQTT_HOST, EMTRACK_MQTT_PORT, EMTRACK_MQTT_CLIENT_ID,
/// EMTRACK_HTTP_LISTEN, EMTRACK_RETENTION_DAYS, EMTRACK_WORKERS,
/// EMTRACK_LOG_FORMAT), then flags. Log level: EMTRACK_LOG.
#[derive(Parser, Debug)]
#[command(name = "emtrack", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// PostgreSQL URL (the database is created if missing).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// MQTT broker host.
    #[arg(long, global = true)]
    mqtt_host: Option<String>,
    /// MQTT broker port.
    #[arg(long, global = true)]
    mqtt_port: Option<u16>,
    /// Days of evidence to keep (default 2192, about 6 years).
    #[arg(long, global = true)]
    retention_days: Option<u32>,
    /// HTTP listen address for /metrics, /healthz, /readyz.
    #[arg(long, global = true)]
    http_listen: Option<String>,
    /// Stable MQTT client id (the broker keeps the session under it).
    #[arg(long, global = true)]
    mqtt_client_id: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: consume MQTT, judge, store, ack; serve /metrics.
    /// Stops on SIGTERM or Ctrl-C, committing and acking what it holds.
    Run,
    /// Create the database if it is missing, apply migrations, and create the
    /// evidence partitions ahead of today.
    Migrate,
    /// Import a `device-sim world --out DIR` export (zones.geojson, world.json).
    ImportWorld {
        /// The export directory.
        dir: PathBuf,
    },
    /// Print the effective configuration as TOML and exit.
    CheckConfig,
    /// Refused messages kept in `rejected_messages`.
    Rejected {
        #[command(subcommand)]
        command: RejectedCommand,
    },
}

#[derive(Subcommand, Debug)]
enum RejectedCommand {
    /// Publish refused messages again, to their own topics, so that the
    /// running service takes them through the normal path (once their cause
    /// is fixed). Idempotent: storage absorbs a message handled twice; each
    /// is marked `replayed_at` once the broker has acknowledged it.
    Replay {
        /// Their refusal reason.
        #[arg(long, default_value = "storage_failed")]
        reason: String,
        /// Received at or after this time (RFC 3339, e.g. 2026-12-01T10:00:00Z).
        #[arg(long)]
        since: Option<jiff::Timestamp>,
        /// Received before this time (RFC 3339).
        #[arg(long)]
        until: Option<jiff::Timestamp>,
        /// Also those already replayed.
        #[arg(long)]
        again: bool,
    },
}

/// Connects (creating the database if missing) and applies pending migrations.
async fn open(config: &Config) -> Result<sqlx::PgPool, String> {
    let pool = store::connect(&config.database_url)
        .await
        .map_err(|e| e.to_string())?;
    store::migrate(&pool).await.map_err(|e| e.to_string())?;
    Ok(pool)
}

async fn run(cli: Cli) -> Result<(), String> {
    let flags = Overrides {
        database_url: cli.global.database_url,
        mqtt_host: cli.global.mqtt_host,
        mqtt_port: cli.global.mqtt_port,
        retention_days: cli.global.retention_days,
        http_listen: cli.global.http_listen,
        mqtt_client_id: cli.global.mqtt_client_id,
    };
    let config = Config::load(
        cli.global.config.as_deref(),
        |k| std::env::var(k).ok(),
        &flags,
    )
    .map_err(|e| e.to_string())?;
    init_logs(&config.log_format);
    match cli.command {
        Command::Run => {
            let pool = open(&config).await?;
            emtrack::service::run(&config, pool)
                .await
                .map_err(|e| e.to_string())?;
        }
        Command::CheckConfig => print!("{}", config.to_toml()),
        Command::Migrate => {
            let pool = open(&config).await?;
            let today = jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .date();
            let m = store::maintain_partitions(
                &pool,
                today,
                config.partitions_ahead_days,
                config.retention_days,
            )
            .await
            .map_err(|e| e.to_string())?;
            println!(
                "migrated; partitions: {} created, {} dropped past {} days of retention",
                m.created, m.dropped, config.retention_days
            );
        }
        Command::Rejected {
            command:
                RejectedCommand::Replay {
                    reason,
                    since,
                    until,
                    again,
                },
        } => {
            let pool = open(&config).await?;
            let sel = ingest::replay::Selection {
                reason,
                since_ms: since.map(|t| t.as_millisecond()),
                until_ms: until.map(|t| t.as_millisecond()),
                again,
            };
            let done = ingest::replay::replay(&pool, &config.ingest(), &sel)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "replayed {} {} message(s); the running service takes them as they arrive",
                done.messages, sel.reason
            );
        }
        Command::ImportWorld { dir } => {
            let pool = open(&config).await?;
            let n = reference::world::import(&pool, &dir)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "imported {} officers, {} zones, {} subjects, {} devices, {} assignments, {} rules, {} victims",
                n.officers, n.zones, n.subjects, n.devices, n.assignments, n.rules, n.victims
            );
        }
    }
    Ok(())
}

/// Log lines on stderr, as text or JSON; the level comes from `EMTRACK_LOG`
/// (`error`, `warn`, `info` (default), `debug`, `trace`).
fn init_logs(format: &str) {
    let level = std::env::var("EMTRACK_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("emtrack: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emtrack: {e}");
            ExitCode::FAILURE
        }
    }
}
