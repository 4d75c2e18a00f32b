//! What officers are sent: who hears of each alert change (the recipient
//! chain and its topics), and the notification JSON (documented in the
//! README, "Alerts"), the same on every channel.

use crate::delivery::Channel;
use alerts::{Actor, Alert, AlertEvent, Change};

/// The duty desk's topic (last level of escalation, and alerts of subjects
/// with no officer).
pub const DUTY_TOPIC: &str = "em/v1/duty/alerts";

/// An officer's (or supervisor's) alert topic.
pub fn officer_topic(officer: i64) -> String {
    format!("em/v1/officers/{officer}/alerts")
}

/// A subject's chain of recipients: officer, supervisor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Chain {
    pub(crate) officer: Option<i64>,
    pub(crate) supervisor: Option<i64>,
}

impl Chain {
    /// Who is told at `level`, and as what.
    fn target(&self, level: u8) -> (String, &'static str) {
        match (level, self.officer, self.supervisor) {
            (0, Some(o), _) => (officer_topic(o), "officer"),
            (1, _, Some(s)) => (officer_topic(s), "supervisor"),
            _ => (DUTY_TOPIC.to_owned(), "duty_desk"),
        }
    }
}

/// A notification to write to the outbox.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NewDelivery {
    pub(crate) alert: i64,
    pub(crate) version: i32,
    pub(crate) channel: Channel,
    /// Topic, or webhook id.
    pub(crate) target: String,
    pub(crate) payload: String,
    /// Fix or event time of a live alert's raise (ms), for the latency.
    pub(crate) live_event_ms: Option<i64>,
}

/// Where and what, for a person: read from the database when the change is
/// stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct About {
    /// The subject's case reference.
    pub(crate) subject_reference: Option<String>,
    /// The zone of a zone, inclusion or curfew alert.
    pub(crate) zone_name: Option<String>,
    /// The confirming fix: latitude, longitude, accuracy (m).
    pub(crate) position: Option<(f64, f64, f32)>,
}

/// What an alert change is about beyond the alert itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context<'a> {
    /// The bracelet.
    pub(crate) device: Option<&'a str>,
    /// The fix or event that confirmed the alert (ms).
    pub(crate) trigger_ms: Option<i64>,
    pub(crate) chain: Chain,
    /// Where and what.
    pub(crate) about: Option<&'a About>,
}

/// The notifications of one change: MQTT to whoever the change concerns
/// (the raise to the officer, an escalation to its level, later changes to
/// every level reached), and every change to every active webhook.
pub(crate) fn fan_out(
    a: &Alert,
    e: &AlertEvent,
    cx: Context<'_>,
    webhooks: &[i64],
    out: &mut Vec<NewDelivery>,
) {
    if e.what == Change::Repeated {
        return;
    }
    let live = (!a.historical).then(|| cx.trigger_ms.unwrap_or(a.event_ms));
    let levels: Vec<u8> = match e.what {
        Change::Raised => vec![0],
        Change::Escalated(l) => vec![l],
        _ => (0..=a.level).collect(),
    };
    let mut topics: Vec<(String, &'static str)> = Vec::new();
    for l in levels {
        let t = cx.chain.target(l);
        if !topics.iter().any(|x| x.0 == t.0) {
            topics.push(t);
        }
    }
    let live_event_ms = if e.what == Change::Raised { live } else { None };
    let delivery = |channel, target, to| NewDelivery {
        alert: a.id.0 as i64,
        version: e.version as i32,
        channel,
        target,
        payload: payload(a, e, cx, to),
        live_event_ms,
    };
    for (topic, to) in topics {
        out.push(delivery(Channel::Mqtt, topic, to));
    }
    let (_, to) = cx.chain.target(a.level);
    for id in webhooks {
        out.push(delivery(Channel::Webhook, id.to_string(), to));
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// A notification's JSON.
fn payload(a: &Alert, e: &AlertEvent, cx: Context<'_>, to: &str) -> String {
    let who = match e.who {
        Actor::System => None,
        Actor::User(o) => Some(o),
    };
    serde_json::json!({
        "alert_id": a.id.0,
        "version": e.version,
        "change": e.what.as_str(),
        "type": a.key.kind.as_str(),
        "severity": a.severity.as_str(),
        "state": a.state.as_str(),
        "subject_id": a.key.subject,
        "device_id": cx.device,
        "scope": a.key.scope,
        "episode_time": rfc3339(a.key.episode_ms),
        "event_time": rfc3339(a.event_ms),
        "trigger_time": cx.trigger_ms.map(rfc3339),
        "raised_at": rfc3339(a.raised_ms),
        "changed_at": rfc3339(e.at_ms),
        "historical": a.historical,
        "level": a.level,
        "officer_id": cx.chain.officer,
        "recipient": to,
        "by_user_id": who,
        "subject_reference": cx.about.and_then(|x| x.subject_reference.as_deref()),
        "zone_name": cx.about.and_then(|x| x.zone_name.as_deref()),
        "position": cx.about.and_then(|x| x.position).map(|(lat, lon, acc)| {
            serde_json::json!({"lat": lat, "lon": lon, "accuracy_m": acc})
        }),
        "link": format!("/v1/alerts/{}", a.id.0),
        "note": e.note,
        "disposition": match e.what {
            Change::Resolved { disposition, .. } => disposition.map(|d| d.as_str()),
            _ => None,
        },
    })
    .to_string()
}
