//! The MQTT link: where the broker is, who we are to it, and whether TLS
//! protects the connection.

use crate::secret::Secret;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use std::sync::Arc;

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
