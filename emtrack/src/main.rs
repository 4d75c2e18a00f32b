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
/// (TOML; default $EMTRACK_CONFIG, else /etc/emtrack/emtrack.toml if it
/// exists), then EMTRACK_* environment variables (every key: EMTRACK_MQTT_PORT,
/// EMTRACK_ALERTS__ESCALATE_CRITICAL_S for a key of a table), then flags.
/// Log filter: EMTRACK_LOG (`info`, or `warn,ingest=debug`).
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
    /// TOML configuration file [default: $EMTRACK_CONFIG, else
    /// /etc/emtrack/emtrack.toml if it exists, else none].
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
    /// The officer API's listen address (/v1/…).
    #[arg(long, global = true)]
    api_listen: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: consume MQTT, judge, store, ack; serve /metrics
    /// (http_listen) and the officer API (api_listen).
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
    /// Officer API accounts (the first admin, scripts). Every change is
    /// written to the audit log. Passwords are read from the terminal
    /// without echo, or from the first line of standard input; never
    /// from a flag (flags show in `ps`).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Device credentials on the broker (Mosquitto's dynamic security),
    /// through the admin identity broker_admin_username. Takes effect at
    /// once, without a broker restart.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// emtrack's own identities on the broker.
    Broker {
        #[command(subcommand)]
        command: BrokerCommand,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Issue each device a credential: user name and client id = its id;
    /// it may publish under its own topic only.
    Enrol {
        /// Device ids (`ot:{user}:{device}` for an OwnTracks phone).
        #[arg(required = true)]
        ids: Vec<String>,
        /// A new file (mode 0600) for the `<id> <password>` lines.
        #[arg(long)]
        out: PathBuf,
    },
    /// Give each device a new password; the old one stops working and its
    /// session is disconnected.
    Rotate {
        /// Device ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// A new file (mode 0600) for the `<id> <password>` lines.
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke each device's credential.
    Retire {
        /// Device ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BrokerCommand {
    /// Create or update emtrack's service identity (mqtt_username, with the
    /// password in mqtt_password_file) and its role.
    Setup,
    /// Issue an officer's identity: it may read its own alert topic only.
    Officer {
        /// The officer's id.
        officer_id: i64,
        /// A new file (mode 0600) for the `<user> <password>` line.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user.
    Add {
        /// Login name (1–64 of A-Z a-z 0-9 . _ @ -).
        username: String,
        /// officer, supervisor, duty, admin or auditor.
        #[arg(long)]
        role: String,
        /// The officer whose caseload an officer or supervisor holds.
        #[arg(long)]
        officer_id: Option<i64>,
        /// Shown in the console.
        #[arg(long)]
        display_name: Option<String>,
        /// No password: the account uses API tokens only.
        #[arg(long)]
        no_password: bool,
    },
    /// Set a user's password (its login sessions end).
    Passwd {
        /// Login name.
        username: String,
    },
    /// Issue an API token for a user; it is printed once and stored only
    /// as a digest.
    Token {
        /// Login name.
        username: String,
        /// What the token is for.
        #[arg(long)]
        name: String,
        /// Its lifetime in days (1–366).
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Disable a user: every credential stops working at once.
    Disable {
        /// Login name.
        username: String,
    },
}

/// A password from the terminal (no echo) or the first line of stdin.
fn read_password(prompt: &str) -> Result<String, String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the password: {e}"))
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// `emtrack migrate`: the one command that creates a missing database.
async fn migrate(config: &Config) -> Result<(), String> {
    let pool = store::connect(&config.database_url)
        .await
        .map_err(|e| e.to_string())?;
    store::migrate(&pool).await.map_err(|e| e.to_string())?;
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
    Ok(())
}

/// `emtrack rejected …`.
async fn rejected(config: &Config, command: RejectedCommand) -> Result<(), String> {
    let RejectedCommand::Replay {
        reason,
        since,
        until,
        again,
    } = command;
    let pool = open(config).await?;
    let sel = ingest::replay::Selection {
        reason,
        since_ms: since.map(|t| t.as_millisecond()),
        until_ms: until.map(|t| t.as_millisecond()),
        again,
    };
    let ingest = config.ingest().map_err(|e| e.to_string())?;
    let done = ingest::replay::replay(&pool, &ingest, &sel)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "replayed {} {} message(s); the running service takes them as they arrive",
        done.messages, sel.reason
    );
    Ok(())
}

/// `emtrack device …`: what was done, to print.
async fn device(config: &Config, command: DeviceCommand) -> Result<String, String> {
    use emtrack::broker::DeviceOp;
    let (op, ids, out) = match command {
        DeviceCommand::Enrol { ids, out } => (DeviceOp::Enrol, ids, Some(out)),
        DeviceCommand::Rotate { ids, out } => (DeviceOp::Rotate, ids, Some(out)),
        DeviceCommand::Retire { ids } => (DeviceOp::Retire, ids, None),
    };
    emtrack::broker::devices(config, op, &ids, out.as_deref()).await
}

/// `emtrack user …`.
async fn user(config: &Config, command: UserCommand) -> Result<(), String> {
    let pool = open(config).await?;
    match command {
        UserCommand::Add {
            username,
            role,
            officer_id,
            display_name,
            no_password,
        } => {
            let role = api::identity::Role::from_name(&role).ok_or_else(|| {
                format!("role {role:?} is unknown (officer, supervisor, duty, admin, auditor)")
            })?;
            let password = if no_password {
                None
            } else {
                Some(read_password("password: ")?)
            };
            let u = api::accounts::NewUser {
                username,
                role,
                officer_id,
                display_name,
                password,
            };
            let id = api::accounts::cli_add_user(&pool, &u)
                .await
                .map_err(|e| e.to_string())?;
            println!("user {} added (id {id}, role {})", u.username, u.role);
        }
        UserCommand::Passwd { username } => {
            let password = read_password("new password: ")?;
            api::accounts::cli_set_password(&pool, &username, &password)
                .await
                .map_err(|e| e.to_string())?;
            println!("password of {username} set; its sessions have ended");
        }
        UserCommand::Token {
            username,
            name,
            days,
        } => {
            let (token, expires) = api::accounts::cli_issue_token(&pool, &username, &name, days)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "API token for {username} ({name}), valid until {}; shown once:",
                expires.0
            );
            println!("{token}");
        }
        UserCommand::Disable { username } => {
            api::accounts::cli_disable_user(&pool, &username)
                .await
                .map_err(|e| e.to_string())?;
            println!("user {username} disabled; its credentials no longer work");
        }
    }
    Ok(())
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

/// Connects to the existing database (a missing one is an error naming it:
/// `emtrack migrate` creates it) and applies pending migrations.
async fn open(config: &Config) -> Result<sqlx::PgPool, String> {
    let pool = store::connect_existing(&config.database_url)
        .await
        .map_err(|e| e.to_string())?;
    store::migrate(&pool).await.map_err(|e| e.to_string())?;
    Ok(pool)
}

/// The process's environment (variables that are not UTF-8 are no
/// `EMTRACK_*` setting: skipped).
fn env_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Where the installed package keeps the configuration.
const DEFAULT_CONFIG: &str = "/etc/emtrack/emtrack.toml";

/// `--config`, else `EMTRACK_CONFIG`, else [`DEFAULT_CONFIG`] if it exists.
fn config_file(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("EMTRACK_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let default = PathBuf::from(DEFAULT_CONFIG);
            default.exists().then_some(default)
        })
}

async fn run(cli: Cli) -> Result<(), String> {
    let flags = Overrides {
        database_url: cli.global.database_url,
        mqtt_host: cli.global.mqtt_host,
        mqtt_port: cli.global.mqtt_port,
        retention_days: cli.global.retention_days,
        http_listen: cli.global.http_listen,
        api_listen: cli.global.api_listen,
        mqtt_client_id: cli.global.mqtt_client_id,
    };
    let config = Config::load(
        config_file(cli.global.config).as_deref(),
        &env_vars(),
        &flags,
    )
    .map_err(|e| e.to_string())?;
    init_logs(&config.log_format)?;
    match cli.command {
        Command::Run => {
            let pool = open(&config).await?;
            emtrack::service::run(&config, pool)
                .await
                .map_err(|e| e.to_string())?;
        }
        Command::CheckConfig => print!("{}", config.shown()),
        Command::Device { command } => println!("{}", device(&config, command).await?),
        Command::Broker { command } => match command {
            BrokerCommand::Setup => println!("{}", emtrack::broker::setup(&config).await?),
            BrokerCommand::Officer { officer_id, out } => {
                println!(
                    "{}",
                    emtrack::broker::officer(&config, officer_id, &out).await?
                );
            }
        },
        Command::Migrate => migrate(&config).await?,
        Command::Rejected { command } => rejected(&config, command).await?,
        Command::User { command } => user(&config, command).await?,
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
/// Logs to stderr, filtered by `EMTRACK_LOG`: a level (`warn`) or
/// per-target directives (`info,ingest=debug,rumqttc=warn,sqlx=warn`); by
/// default `info`. The broker client's own records (the `log` crate) are
/// bridged in; the database driver's are `tracing` events already.
fn init_logs(format: &str) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("EMTRACK_LOG") {
        Ok(v) => EnvFilter::try_new(&v).map_err(|e| {
            format!(
                "EMTRACK_LOG={v:?} is not a log filter ({e}); e.g. `info` or `warn,ingest=debug`"
            )
        })?,
        Err(_) => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // With the `tracing-log` feature, `init` also installs the bridge from
    // the `log` crate.
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
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
