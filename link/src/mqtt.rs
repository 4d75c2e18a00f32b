//! The MQTT link: where the broker is, who we are to it, and whether TLS
//! protects the connection.

use crate::secret::Secret;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use std::sync::Arc;
use std::time::Duration;

/// The waits between reconnects to the broker, for every emtrack session
/// (ingest, the alert sender, the dynsec admin): 100 ms doubling up to
/// 20 s, plus up to as much again of jitter, so that sessions (and a fleet
/// of emtracks) do not reconnect in step: at most 40 s. Start a new one
/// after each successful connect.
pub fn reconnect_waits() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(20))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The next wait of `waits` (never exhausted; 20 s if it were).
pub fn next_wait(waits: &mut ExponentialBackoff) -> Duration {
    waits.next().unwrap_or(Duration::from_secs(20))
}

/// How to reach the broker. `Debug` shows the password as `***`.
#[derive(Clone, Debug)]
pub struct MqttLink {
    /// Broker host (also the name its TLS certificate must carry).
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The broker identity's user name; none connects anonymously.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
    /// TLS, verifying the broker's certificate; none is plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl MqttLink {
    /// An anonymous plain-TCP link (loopback tests of other concerns).
    pub fn plain(host: impl Into<String>, port: u16) -> MqttLink {
        MqttLink {
            host: host.into(),
            port,
            username: None,
            password: None,
            tls: None,
        }
    }

    /// The same link as another identity.
    pub fn as_identity(&self, username: impl Into<String>, password: Secret) -> MqttLink {
        MqttLink {
            username: Some(username.into()),
            password: Some(password),
            ..self.clone()
        }
    }

    /// rumqttc's options for a session with `client_id` over this link; the
    /// caller adds keep-alive, session and flow settings.
    pub fn options(&self, client_id: impl Into<String>) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        if let Some(user) = &self.username {
            let password = self.password.as_ref().map_or("", Secret::expose);
            o.set_credentials(user.clone(), password);
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        o
    }

    /// `host:port`, with `mqtts://` or `mqtt://`, for messages.
    pub fn address(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_double_to_a_cap_and_stay_within_their_jitter() {
        let mut waits = reconnect_waits();
        let seen: Vec<Duration> = (0..12).map(|_| next_wait(&mut waits)).collect();
        for (k, w) in seen.iter().enumerate() {
            let base =
                (Duration::from_millis(100) * 2u32.pow(k as u32)).min(Duration::from_secs(20));
            assert!(
                *w >= base && *w <= base * 2,
                "wait {k}: {w:?}, base {base:?}"
            );
        }
    }
}
