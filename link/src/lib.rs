//! `link`: how emtrack reaches its peers across a network, safely.
//!
//! - [`secret`]: a secret read from a file, which never prints itself;
//! - [`tls`]: rustls configurations from PEM files (a CA bundle for clients,
//!   a certificate and key for servers);
//! - [`mqtt`]: the MQTT link, address, identity and TLS, turned into
//!   rumqttc's options;
//! - [`seal`]: secrets kept in the database (webhook secrets), sealed with
//!   a key kept outside it.
//!
//! Every TLS configuration here uses one crypto provider (aws-lc-rs) and the
//! protocol versions rustls considers safe (TLS 1.2 and 1.3).

pub mod mqtt;
pub mod seal;
pub mod secret;
pub mod tls;

pub use mqtt::MqttLink;
pub use seal::{SealError, SealKey};
pub use secret::{Secret, SecretError};
pub use tls::TlsError;
