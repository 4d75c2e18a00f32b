//! Configuration: defaults that work with the local services, overridden by a
//! TOML file, then by `EMTRACK_*` environment variables, then by flags. Each
//! service gets its part from here ([`Config::ingest`], the `[alerts]`
//! table, [`Config::alert_mqtt`]).

use alert_service::{AlertConfig, Outbound};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use ingest::IngestConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// `url` with the password of its user info (`user:password@`) and any
/// `password=` parameter replaced by `***`.
pub fn redacted(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@')
            && let Some(colon) = out[rest..rest + at].find(':')
        {
            out.replace_range(rest + colon + 1..rest + at, "***");
        }
    }
    if let Some(q) = out.find('?') {
        let query: Vec<String> = out[q + 1..]
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{}?{}", &out[..q], query.join("&"));
    }
    out
}

/// A secret from its file, as a configuration error naming the file.
fn secret(path: &str) -> Result<link::Secret, ConfigError> {
    link::Secret::from_file(path).map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// An `EMTRACK_*` variable that sets a key.
struct EnvKey {
    var: String,
    /// The key path, `.` between a table and its key.
    key: String,
    value: String,
}

/// Variables of `EMTRACK_*` that are not configuration keys.
const NOT_KEYS: [&str; 2] = ["EMTRACK_CONFIG", "EMTRACK_LOG"];

/// The `EMTRACK_*` variables among `env`, with the key each sets
/// (`EMTRACK_ALERTS__REPLAY_S` → `alerts.replay_s`).
fn env_keys(env: &[(String, String)]) -> Vec<EnvKey> {
    env.iter()
        .filter(|(var, _)| !NOT_KEYS.contains(&var.as_str()))
        .filter_map(|(var, value)| {
            let key = var.strip_prefix("EMTRACK_")?.to_ascii_lowercase();
            Some(EnvKey {
                var: var.clone(),
                key: key.replace("__", "."),
                value: value.clone(),
            })
        })
        .collect()
}

/// figment's error, named by the variable that caused it when one did.
fn env_error(e: &figment::Error, vars: &[EnvKey]) -> ConfigError {
    // The key's path, without figment's profile (`global`, `default`).
    let path = e
        .path
        .iter()
        .skip_while(|p| *p == "global" || *p == "default")
        .cloned()
        .collect::<Vec<_>>()
        .join(".");
    let unknown = match &e.kind {
        figment::error::Kind::UnknownField(field, _) => Some(field.as_str()),
        _ => None,
    };
    // An unknown key is reported at its table or at itself.
    let culprit = vars.iter().find(|v| {
        v.key == path || unknown.is_some_and(|f| v.key == format!("{path}.{f}") || v.key == f)
    });
    match culprit {
        // The value of an unknown variable is never shown: it may be a
        // secret set under a wrong name.
        Some(v) => ConfigError::Env {
            var: v.var.clone(),
            value: match unknown {
                Some(_) => "…".to_owned(),
                None => redacted(&v.value),
            },
            why: match unknown {
                Some(_) => "no such configuration key".to_owned(),
                None => e.kind.to_string(),
            },
        },
        None => ConfigError::Invalid(e.to_string()),
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL connection URL. The database is created if it is missing.
    /// A password in it is never printed (`check-config` shows `***`).
    pub database_url: String,
    /// A file holding the connection URL (its first line), read at load:
    /// a secret kept out of the file, the environment and `ps`. Beats
    /// `database_url` from every layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url_file: Option<String>,
    /// MQTT broker host.
    pub mqtt_host: String,
    /// MQTT broker port.
    pub mqtt_port: u16,
    /// Stable MQTT client id (the broker keeps its session across restarts).
    pub mqtt_client_id: String,
    /// emtrack's service identity on the broker (`emtrack broker setup`
    /// creates it). None connects anonymously, which only the insecure
    /// loopback demo broker allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_username: Option<String>,
    /// A file holding that identity's password (its first line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_password_file: Option<String>,
    /// MQTT over TLS, verifying the broker's certificate against
    /// `mqtt_ca_file` (or the system's roots) and `mqtt_host`.
    pub mqtt_tls: bool,
    /// PEM CA bundle the broker's certificate must chain to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_ca_file: Option<String>,
    /// The broker's dynamic-security admin identity, with which emtrack
    /// issues, rotates and revokes device credentials (`emtrack device`,
    /// and the API's device endpoints). None: the API leaves credentials
    /// to `emtrack device`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_admin_username: Option<String>,
    /// A file holding the admin identity's password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_admin_password_file: Option<String>,
    /// PEM certificate chain: with `tls_key_file`, both HTTP listeners
    /// serve HTTPS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<String>,
    /// The operators' HTTP listener: `/metrics`, `/healthz`, `/readyz`.
    pub http_listen: String,
    /// The officer API's HTTP listener (`/v1/…`), separate from the
    /// operators' so that a metrics scraper cannot reach it.
    pub api_listen: String,
    /// How long a login session lasts, in hours.
    pub session_hours: u32,
    /// Officer API alert streams (SSE) open at once, at most.
    pub max_streams: usize,
    /// How long evidence (fixes, device events) is kept, in days. The default
    /// follows UK practice: 6 years.
    pub retention_days: u32,
    /// Daily partitions created ahead of today.
    pub partitions_ahead_days: u32,
    /// How often partition maintenance runs, in seconds.
    pub maintenance_interval_s: u64,
    /// How long a renewal of the service lease lasts, in seconds: a standby
    /// takes over at most this long after the active node's host is lost
    /// (at its next poll, 1 s, when the active process merely died).
    pub lease_period_s: u64,
    /// Worker tasks; devices are sharded across them.
    pub workers: usize,
    /// Messages received and not yet acked, at most. Keep the broker's
    /// `max_inflight_messages` at or below this.
    pub max_in_flight: usize,
    /// Messages per database transaction, at most (at most `max_in_flight`).
    pub max_batch: usize,
    /// How long a batch waits for more messages after its first, in ms.
    pub linger_ms: u64,
    /// Records dated more than this far ahead of the server clock are refused
    /// (`future_timestamp`), in seconds.
    pub future_skew_s: u64,
    /// A fix dated more than this after its arrival is clock-suspect: stored,
    /// counted, judged at its arrival (see ARCHITECTURE.md), in seconds.
    pub clock_tolerance_s: u64,
    /// A fix implying a faster move from the last good fix is stored as
    /// `suspect` and not judged, in km/h.
    pub max_speed_kmh: f64,
    /// On restart, fixes this far before each device's newest are replayed
    /// into the engine (plus all fixes of open episodes), in seconds.
    pub rebuild_lookback_s: u64,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// The `[alerts]` table.
    pub alerts: AlertConfig,
    /// The `[retention]` table: how long each table that holds personal
    /// data keeps its rows (evidence: `retention_days`).
    pub retention: store::Retention,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "postgres://postgres@127.0.0.1/emtrack".into(),
            database_url_file: None,
            mqtt_host: "127.0.0.1".into(),
            mqtt_port: 1883,
            mqtt_client_id: "emtrack-ingest".into(),
            mqtt_username: None,
            mqtt_password_file: None,
            mqtt_tls: false,
            mqtt_ca_file: None,
            broker_admin_username: None,
            broker_admin_password_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            http_listen: "127.0.0.1:9480".into(),
            api_listen: "127.0.0.1:9481".into(),
            session_hours: 12,
            max_streams: 64,
            retention_days: 6 * 365 + 2,
            partitions_ahead_days: 7,
            maintenance_interval_s: 3600,
            lease_period_s: 8,
            workers: 2,
            max_in_flight: 1000,
            max_batch: 250,
            linger_ms: 5,
            future_skew_s: 300,
            clock_tolerance_s: 10,
            max_speed_kmh: 300.0,
            rebuild_lookback_s: 3600,
            log_format: "text".into(),
            alerts: AlertConfig::default(),
            retention: store::Retention::default(),
        }
    }
}

/// Why the configuration is unusable.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    Parse {
        /// The file.
        path: String,
        /// The parser's message (it names the line and the key).
        error: String,
    },
    /// An `EMTRACK_*` variable names no key, or has a value of the wrong
    /// type.
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A value is out of range.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read config file {path}: {error}")
            }
            ConfigError::Parse { path, error } => {
                write!(f, "config file {path} is invalid: {error}")
            }
            ConfigError::Env { var, value, why } => {
                write!(f, "environment variable {var}={value:?}: {why}")
            }
            ConfigError::Invalid(msg) => write!(f, "invalid configuration: {msg}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--mqtt-host`.
    pub mqtt_host: Option<String>,
    /// `--mqtt-port`.
    pub mqtt_port: Option<u16>,
    /// `--retention-days`.
    pub retention_days: Option<u32>,
    /// `--http-listen`.
    pub http_listen: Option<String>,
    /// `--api-listen`.
    pub api_listen: Option<String>,
    /// `--mqtt-client-id`.
    pub mqtt_client_id: Option<String>,
}

impl Config {
    /// Builds the configuration (figment): defaults, then `file` (if
    /// given), then the environment, then `flags`; reads the secret files
    /// it names and validates everything `run` would use.
    ///
    /// Every key can come from the environment: `EMTRACK_<KEY>`, and
    /// `EMTRACK_<TABLE>__<KEY>` for the `[alerts]` and `[retention]` tables
    /// (`EMTRACK_ALERTS__ESCALATE_CRITICAL_S=300`). `env` is the process's
    /// variables (`std::env::vars()`), passed in so that tests need not
    /// change the process's own. `EMTRACK_CONFIG` (the file) and
    /// `EMTRACK_LOG` (the log filter) are not keys; any other `EMTRACK_*`
    /// that names no key is an error naming it.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let p = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: p.clone(),
                error,
            })?;
            // The TOML parser's own message names the line and the key.
            toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                path: p,
                error: e.to_string(),
            })?;
            fig = fig.merge(Toml::string(&text));
        }
        let vars = env_keys(env);
        for v in &vars {
            // As figment's `Env` provider does, from `env` rather than the
            // process: the key nested at `.`; the text typed by the field it
            // sets (`extract_lossy`: "8883" a port, "12345" a client id).
            fig = fig.merge(Serialized::global(&v.key, &v.value));
        }
        let mut c: Config = fig.extract_lossy().map_err(|e| env_error(&e, &vars))?;
        c.apply(flags);
        c.read_url_file()?;
        c.validate()?;
        Ok(c)
    }

    /// The command line's values, over every other layer.
    fn apply(&mut self, flags: &Overrides) {
        let strings = [
            (&flags.database_url, &mut self.database_url),
            (&flags.mqtt_host, &mut self.mqtt_host),
            (&flags.http_listen, &mut self.http_listen),
            (&flags.api_listen, &mut self.api_listen),
            (&flags.mqtt_client_id, &mut self.mqtt_client_id),
        ];
        for (flag, slot) in strings {
            if let Some(v) = flag {
                slot.clone_from(v);
            }
        }
        if let Some(v) = flags.mqtt_port {
            self.mqtt_port = v;
        }
        if let Some(v) = flags.retention_days {
            self.retention_days = v;
        }
    }

    /// The database URL from `database_url_file`, which beats every layer.
    fn read_url_file(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.database_url_file {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.clone(),
                error,
            })?;
            self.database_url = text.lines().next().unwrap_or_default().trim().to_owned();
        }
        Ok(())
    }

    /// The broker link of emtrack's service identity: its password read,
    /// its TLS built.
    pub fn mqtt_link(&self) -> Result<link::MqttLink, ConfigError> {
        let tls = if self.mqtt_tls {
            let ca = self.mqtt_ca_file.as_deref().map(Path::new);
            Some(
                link::tls::client_config(ca)
                    .map_err(|e| ConfigError::Invalid(format!("mqtt_ca_file: {e}")))?,
            )
        } else {
            None
        };
        let password = match &self.mqtt_password_file {
            Some(path) => Some(secret(path)?),
            None => None,
        };
        Ok(link::MqttLink {
            host: self.mqtt_host.clone(),
            port: self.mqtt_port,
            username: self.mqtt_username.clone(),
            password,
            tls,
        })
    }

    /// The broker link of the dynamic-security admin identity, if set.
    pub fn admin_link(&self) -> Result<Option<link::MqttLink>, ConfigError> {
        let Some(user) = &self.broker_admin_username else {
            return Ok(None);
        };
        let Some(path) = &self.broker_admin_password_file else {
            return Err(ConfigError::Invalid(
                "broker_admin_username needs broker_admin_password_file".into(),
            ));
        };
        Ok(Some(
            self.mqtt_link()?.as_identity(user.clone(), secret(path)?),
        ))
    }

    /// The HTTP listeners' TLS, if `tls_cert_file` and `tls_key_file` are set.
    pub fn https(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => link::tls::acceptor(Path::new(cert), Path::new(key))
                .map(Some)
                .map_err(|e| ConfigError::Invalid(format!("tls_cert_file / tls_key_file: {e}"))),
            _ => Err(ConfigError::Invalid(
                "tls_cert_file and tls_key_file go together".into(),
            )),
        }
    }

    /// The trust of `https://` webhooks: `alerts.webhook_ca_file`, or the
    /// system's roots.
    pub fn webhook_tls(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, ConfigError> {
        let ca = self.alerts.webhook_ca_file.as_deref().map(Path::new);
        match link::tls::client_config(ca) {
            Ok(c) => Ok(c),
            // No CA bundle and none on the system: `https://` webhooks fail
            // (counted, retried, dead-lettered); `http://` ones still work.
            Err(e @ link::TlsError::NoSystemRoots { .. }) => {
                tracing::warn!(error = %e, "https:// webhooks cannot be verified; set alerts.webhook_ca_file");
                Ok(std::sync::Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ))
            }
            Err(e) => Err(ConfigError::Invalid(format!("alerts.webhook_ca_file: {e}"))),
        }
    }

    /// The configuration as `check-config` shows it: TOML, with the
    /// database password replaced by `***`.
    pub fn shown(&self) -> String {
        let mut c = self.clone();
        c.database_url = redacted(&self.database_url);
        c.to_toml()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_security()?;
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(ConfigError::Invalid(format!(
                "database_url must be a postgres:// URL, not {:?}",
                redacted(&self.database_url)
            )));
        }
        self.validate_http()?;
        if self.retention_days < 1 {
            return Err(ConfigError::Invalid(
                "retention_days must be at least 1".into(),
            ));
        }
        if let Some((key, _)) = self.retention.periods().into_iter().find(|(_, d)| *d < 1) {
            return Err(ConfigError::Invalid(format!(
                "retention.{key} must be at least 1"
            )));
        }
        // Late fixes are judged against the order versions of their time.
        if self.retention.order_versions_days < self.retention_days {
            return Err(ConfigError::Invalid(format!(
                "retention.order_versions_days ({}) must be at least retention_days ({}): \
                 stored evidence is judged against the orders of its time",
                self.retention.order_versions_days, self.retention_days
            )));
        }
        if self.partitions_ahead_days < 1 {
            return Err(ConfigError::Invalid(
                "partitions_ahead_days must be at least 1 (tomorrow's partition must exist before midnight)".into(),
            ));
        }
        if self.mqtt_client_id.is_empty() || self.mqtt_client_id.len() > 64 {
            return Err(ConfigError::Invalid(
                "mqtt_client_id must be 1..=64 bytes".into(),
            ));
        }
        if !(2..=120).contains(&self.lease_period_s) {
            return Err(ConfigError::Invalid(
                "lease_period_s must be 2..=120".into(),
            ));
        }
        if !(1..=256).contains(&self.workers) {
            return Err(ConfigError::Invalid("workers must be 1..=256".into()));
        }
        if self.max_in_flight < 1 || self.max_in_flight > 65_535 {
            return Err(ConfigError::Invalid(
                "max_in_flight must be 1..=65535".into(),
            ));
        }
        if self.max_batch < 1 || self.max_batch > self.max_in_flight {
            return Err(ConfigError::Invalid(format!(
                "max_batch must be 1..=max_in_flight ({}): a batch is acked only once committed",
                self.max_in_flight
            )));
        }
        if self.clock_tolerance_s > self.future_skew_s {
            return Err(ConfigError::Invalid(format!(
                "clock_tolerance_s must be at most future_skew_s ({})",
                self.future_skew_s
            )));
        }
        if self.max_speed_kmh.is_nan() || self.max_speed_kmh <= 0.0 {
            return Err(ConfigError::Invalid(
                "max_speed_kmh must be positive".into(),
            ));
        }
        self.alerts
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.log_format != "text" && self.log_format != "json" {
            return Err(ConfigError::Invalid(format!(
                "log_format must be \"text\" or \"json\", not {:?}",
                self.log_format
            )));
        }
        Ok(())
    }

    /// The HTTP listeners and the officer API's limits.
    /// The broker identity, TLS and secret settings.
    fn validate_security(&self) -> Result<(), ConfigError> {
        // Every file `run` would read, read now: check-config reports them.
        self.mqtt_link()?;
        self.admin_link()?;
        self.https()?;
        self.webhook_tls()?;
        self.webhook_seal()?;
        if self.mqtt_ca_file.is_some() && !self.mqtt_tls {
            return Err(ConfigError::Invalid(
                "mqtt_ca_file is set but mqtt_tls is false: set mqtt_tls = true".into(),
            ));
        }
        if self.mqtt_username.is_some()
            && !self
                .mqtt_client_id
                .to_ascii_lowercase()
                .starts_with("emtrack")
        {
            return Err(ConfigError::Invalid(format!(
                "mqtt_client_id {:?} must begin with `emtrack` on a broker with identities: \
                 no device may have such an id, so none can take emtrack's session",
                self.mqtt_client_id
            )));
        }
        if self.mqtt_password_file.is_some() && self.mqtt_username.is_none() {
            return Err(ConfigError::Invalid(
                "mqtt_password_file needs mqtt_username".into(),
            ));
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        for (key, addr) in [
            ("http_listen", &self.http_listen),
            ("api_listen", &self.api_listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be an address and port such as 127.0.0.1:9481, not {addr:?}"
                )));
            }
        }
        if self.http_listen == self.api_listen && !self.http_listen.ends_with(":0") {
            return Err(ConfigError::Invalid(
                "api_listen must differ from http_listen: the officer API has its own listener"
                    .into(),
            ));
        }
        if !(1..=24 * 30).contains(&self.session_hours) {
            return Err(ConfigError::Invalid("session_hours must be 1..=720".into()));
        }
        if !(1..=10_000).contains(&self.max_streams) {
            return Err(ConfigError::Invalid("max_streams must be 1..=10000".into()));
        }
        Ok(())
    }

    /// The configuration as TOML (for `emtrack check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Ingest's settings.
    pub fn ingest(&self) -> Result<IngestConfig, ConfigError> {
        Ok(IngestConfig {
            link: self.mqtt_link()?,
            client_id: self.mqtt_client_id.clone(),
            workers: self.workers,
            max_in_flight: self.max_in_flight,
            max_batch: self.max_batch,
            linger: Duration::from_millis(self.linger_ms),
            future_skew: Duration::from_secs(self.future_skew_s),
            clock_tolerance: Duration::from_secs(self.clock_tolerance_s),
            max_age: Duration::from_secs(u64::from(self.retention_days.saturating_sub(1)) * 86_400),
            max_speed_kmh: self.max_speed_kmh,
            rebuild_lookback: Duration::from_secs(self.rebuild_lookback_s),
        })
    }

    /// The officer API's settings.
    pub fn api(&self) -> api::ApiConfig {
        api::ApiConfig {
            session_s: i64::from(self.session_hours) * 3600,
            max_streams: self.max_streams,
        }
    }

    /// Where the alert service delivers: its own broker connection
    /// (`{mqtt_client_id}-alerts`, as the service identity) and webhooks.
    pub fn outbound(&self) -> Result<Outbound, ConfigError> {
        Ok(Outbound {
            mqtt: self.mqtt_link()?,
            mqtt_client_id: format!("{}-alerts", self.mqtt_client_id),
            webhook_tls: self.webhook_tls()?,
            webhook_seal: self.webhook_seal()?,
        })
    }

    /// The key that seals webhook secrets, if `alerts.webhook_key_file`.
    pub fn webhook_seal(&self) -> Result<Option<std::sync::Arc<link::SealKey>>, ConfigError> {
        match &self.alerts.webhook_key_file {
            None => Ok(None),
            Some(path) => link::SealKey::from_file(path)
                .map(|k| Some(std::sync::Arc::new(k)))
                .map_err(|e| ConfigError::Invalid(format!("alerts.webhook_key_file: {e}"))),
        }
    }
}
