//! The dynsec objects (roles, clients) each kind of identity gets.
//!
//! Mosquitto 2.0's dynsec matches ACL topics literally (no `%u`/`%c`
//! substitution, checked on 2.0.11), so each device and officer gets a role
//! of its own naming its topics exactly.

use protocol::DeviceId;
use serde_json::{Value, json};

/// Role of emtrack's service identity.
pub const SERVICE_ROLE: &str = "emtrack-service";

/// Prefixes no device may have as its id (and so as its client id):
/// emtrack's own client ids (`mqtt_client_id` must begin with `emtrack`)
/// and officers' identities.
pub const RESERVED_PREFIXES: [&str; 2] = ["emtrack", "officer-"];

/// Whether `username` is in a reserved namespace (whatever its case).
pub fn reserved(username: &str) -> bool {
    let lower = username.to_ascii_lowercase();
    RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// A device's broker user name and client id: its device id.
pub fn device_username(device: &DeviceId) -> String {
    device.as_str().to_owned()
}

/// A device's role.
pub fn device_role(device: &DeviceId) -> String {
    format!("emtrack-device:{device}")
}

/// The topics a device may publish to.
pub fn device_topics(device: &DeviceId) -> Vec<String> {
    match device.owntracks_parts() {
        Some((user, dev)) => vec![format!("{}{user}/{dev}", protocol::OWNTRACKS_TOPIC_PREFIX)],
        None => vec![format!("{}{device}/#", protocol::DEVICE_TOPIC_PREFIX)],
    }
}

/// An officer's broker user name and client id.
pub fn officer_username(officer_id: i64) -> String {
    format!("officer-{officer_id}")
}

/// An officer's role.
pub fn officer_role(officer_id: i64) -> String {
    format!("emtrack-officer:{officer_id}")
}

fn acl(acltype: &str, topic: &str) -> Value {
    json!({ "acltype": acltype, "topic": topic, "allow": true })
}

/// `createRole` for a device.
pub fn device_role_command(device: &DeviceId) -> Value {
    let acls: Vec<Value> = device_topics(device)
        .iter()
        .map(|t| acl("publishClientSend", t))
        .collect();
    json!({ "command": "createRole", "rolename": device_role(device),
            "textdescription": "emtrack: one device publishes its own topics", "acls": acls })
}

/// `createRole` for an officer: reads its own alert topic, nothing else.
pub fn officer_role_command(officer_id: i64) -> Value {
    let topic = format!("em/v1/officers/{officer_id}/alerts");
    json!({ "command": "createRole", "rolename": officer_role(officer_id),
            "textdescription": "emtrack: one officer reads its own alerts",
            "acls": [acl("subscribeLiteral", &topic), acl("publishClientReceive", &topic)] })
}

/// `createRole` for emtrack's service identity.
pub fn service_role_command() -> Value {
    let mut acls: Vec<Value> = protocol::SUBSCRIPTIONS
        .iter()
        .map(|f| acl("subscribeLiteral", f))
        .collect();
    for t in ["em/v1/dev/#", "owntracks/#"] {
        acls.push(acl("publishClientReceive", t));
        // `emtrack rejected replay` publishes refused messages again, on
        // their own topics.
        acls.push(acl("publishClientSend", t));
    }
    acls.push(acl("publishClientSend", "em/v1/officers/+/alerts"));
    json!({ "command": "createRole", "rolename": SERVICE_ROLE,
            "textdescription": "emtrack: the service reads devices and alerts officers",
            "acls": acls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emtrack_and_officer_ids_are_reserved_whatever_their_case() {
        for id in ["emtrack-ingest", "EMTRACK", "Emtrack-alerts", "officer-3"] {
            assert!(reserved(id), "{id}");
        }
        for id in ["EM-000001", "em-trackless", "officer3", "ot:alice:phone"] {
            assert!(!reserved(id), "{id}");
        }
    }

    #[test]
    fn a_device_may_publish_under_its_own_topic_only() {
        let bracelet = DeviceId::parse("EM-1").expect("id");
        assert_eq!(device_topics(&bracelet), ["em/v1/dev/EM-1/#"]);
        let phone = DeviceId::owntracks("alice", "phone").expect("id");
        assert_eq!(device_topics(&phone), ["owntracks/alice/phone"]);
        assert_eq!(device_username(&phone), "ot:alice:phone");
    }
}
