//! `identities`: who may speak on the broker.
//!
//! Every device, officer and emtrack itself connects to Mosquitto as its own
//! identity, kept by Mosquitto's dynamic security plugin (dynsec). emtrack
//! administers them over MQTT ([`Admin`], as a dynsec admin identity), so
//! enrolling, rotating or retiring a credential takes effect at once, with no
//! broker restart and from any host that can reach the broker.
//!
//! The rules the identities carry ([`acl`]):
//! - a device publishes only under its own topic (`em/v1/dev/{id}/…`, an
//!   OwnTracks phone to `owntracks/{user}/{device}`), subscribes to nothing,
//!   and connects only with its own id as client id;
//! - an officer identity reads only its own alert topic;
//! - emtrack's service identity subscribes to device topics and publishes
//!   officer alerts (and replays refused messages to device topics);
//! - every identity but the service's is bound to one client id, and no
//!   device id may begin with `emtrack` ([`acl::reserved`]), the prefix
//!   emtrack's own client ids must have: no one else can take emtrack's
//!   session (and with it its unacknowledged messages).
//!
//! Anonymous clients get nothing: the shipped broker config sets
//! `allow_anonymous false`.

pub mod acl;
mod admin;

pub use admin::{Admin, IdentityError};

use link::Secret;
use rand_core::{OsRng, RngCore};

/// A new random password: 32 bytes from the OS, as 64 hex digits.
pub fn new_password() -> Secret {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The broker's admin side as a long-running service holds it: connected
/// on first use (so that the service starts while the broker is down),
/// reconnected by the session itself afterwards.
#[derive(Debug)]
pub struct Broker {
    link: link::MqttLink,
    client_id: String,
    admin: tokio::sync::Mutex<Option<std::sync::Arc<Admin>>>,
}

impl Broker {
    /// The admin identity `link` (with its user name and password),
    /// connecting as `client_id`.
    pub fn new(link: link::MqttLink, client_id: String) -> Broker {
        Broker {
            link,
            client_id,
            admin: tokio::sync::Mutex::new(None),
        }
    }

    /// The admin session, connecting it if this is the first use or the
    /// last connect failed.
    pub async fn admin(&self) -> Result<std::sync::Arc<Admin>, IdentityError> {
        let mut held = self.admin.lock().await;
        if let Some(a) = held.as_ref().filter(|a| a.is_alive()) {
            return Ok(a.clone());
        }
        let a = std::sync::Arc::new(Admin::connect(&self.link, &self.client_id).await?);
        *held = Some(a.clone());
        Ok(a)
    }
}
