//! A dynsec admin session: commands published to
//! `$CONTROL/dynamic-security/v1`, answers read from `…/response` and
//! matched by correlation data.

use crate::acl;
use link::{MqttLink, Secret};
use protocol::DeviceId;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Packet, QoS};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

const CONTROL: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";
/// How long the broker has to answer a connect or a command.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Why an identity could not be changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// The broker could not be reached or refused the admin identity.
    Connect(String),
    /// The broker did not answer in time.
    Timeout,
    /// The identity exists already (enrol an enrolled device: rotate it).
    Exists(String),
    /// No such identity.
    NotFound(String),
    /// The id is in emtrack's or the officers' namespace.
    Reserved(String),
    /// The broker refused a command.
    Refused {
        /// The dynsec command.
        command: String,
        /// The broker's reason.
        reason: String,
    },
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Connect(d) => write!(f, "cannot administer the broker: {d}"),
            IdentityError::Timeout => write!(f, "the broker did not answer within 10 s"),
            IdentityError::Exists(u) => {
                write!(f, "{u} already has a broker credential (rotate it instead)")
            }
            IdentityError::NotFound(u) => write!(f, "{u} has no broker credential"),
            IdentityError::Reserved(u) => write!(
                f,
                "{u} is reserved: ids beginning with `emtrack` are emtrack's own client ids, \
                 `officer-` officers'"
            ),
            IdentityError::Refused { command, reason } => {
                write!(f, "the broker refused {command}: {reason}")
            }
        }
    }
}

impl std::error::Error for IdentityError {}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// A connected dynsec admin session. Cheap to share behind an `Arc`;
/// commands from many tasks may be in flight at once.
pub struct Admin {
    client: AsyncClient,
    pending: Pending,
    /// This session's random tag prefix.
    session: String,
    next: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Admin {
    /// Connects as the admin identity of `link` with `client_id` and
    /// subscribes to the answers.
    pub async fn connect(link: &MqttLink, client_id: &str) -> Result<Admin, IdentityError> {
        let mut opts = link.options(client_id);
        opts.set_clean_session(true);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, eventloop) = AsyncClient::new(opts, 256);
        let pending: Pending = Arc::default();
        let (ready_tx, mut ready) = watch::channel(None);
        let task = tokio::spawn(drive(eventloop, client.clone(), pending.clone(), ready_tx));
        let admin = Admin {
            client,
            pending,
            session: crate::new_password().expose()[..32].to_owned(),
            next: AtomicU64::new(0),
            task,
        };
        let answer = tokio::time::timeout(ANSWER_WITHIN, ready.wait_for(Option::is_some)).await;
        match answer.ok().and_then(|r| r.ok().and_then(|v| v.clone())) {
            Some(Ok(())) => Ok(admin),
            Some(Err(e)) => Err(IdentityError::Connect(format!("{}: {e}", link.address()))),
            None => Err(IdentityError::Connect(format!(
                "{}: no answer within 10 s",
                link.address()
            ))),
        }
    }

    /// Sends `commands` in one message; returns each one's answer, in order.
    ///
    /// Every admin session subscribed to the answer topic receives every
    /// answer, so tags start with this session's random prefix, and an
    /// answer must name the command it answers. On a timeout the outcome
    /// is unknown (the command may still reach the broker): callers make
    /// each change so that doing it again is safe.
    async fn run(&self, commands: Vec<Value>) -> Result<Vec<Value>, IdentityError> {
        let mut waits = Vec::with_capacity(commands.len());
        let mut tagged = Vec::with_capacity(commands.len());
        let mut tags = Vec::with_capacity(commands.len());
        for mut c in commands {
            let tag = format!(
                "{}-{}",
                self.session,
                self.next.fetch_add(1, Ordering::Relaxed)
            );
            let (tx, rx) = oneshot::channel();
            lock(&self.pending).insert(tag.clone(), tx);
            let command = c["command"].as_str().unwrap_or_default().to_owned();
            c["correlationData"] = Value::String(tag.clone());
            tagged.push(c);
            tags.push(tag);
            waits.push((command, rx));
        }
        let answers = self
            .wait_for(json!({ "commands": tagged }).to_string(), waits)
            .await;
        // Whatever happened, no waiter is left behind.
        let mut pending = lock(&self.pending);
        for t in &tags {
            pending.remove(t);
        }
        answers
    }

    async fn wait_for(
        &self,
        body: String,
        waits: Vec<(String, oneshot::Receiver<Value>)>,
    ) -> Result<Vec<Value>, IdentityError> {
        self.client
            .publish(CONTROL, QoS::AtLeastOnce, false, body)
            .await
            .map_err(|e| IdentityError::Connect(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        let mut answers = Vec::with_capacity(waits.len());
        for (command, rx) in waits {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(v)) if v["command"].as_str() == Some(command.as_str()) => answers.push(v),
                Ok(Ok(v)) => {
                    return Err(IdentityError::Refused {
                        command,
                        reason: format!("answered as {}", v["command"]),
                    });
                }
                _ => return Err(IdentityError::Timeout),
            }
        }
        Ok(answers)
    }

    /// Whether the session still runs (it ends when the broker refuses the
    /// admin identity).
    pub fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }

    /// Runs `commands`; the first refusal is the error, with "already
    /// exists" and "not found" told apart.
    async fn run_all(&self, who: &str, commands: Vec<Value>) -> Result<(), IdentityError> {
        for answer in self.run(commands).await? {
            if let Some(reason) = answer.get("error").and_then(Value::as_str) {
                return Err(refusal(who, &answer, reason));
            }
        }
        Ok(())
    }

    /// Issues a device's credential: its role and its client, bound to its
    /// id as client id. Returns the password, which the broker keeps only
    /// as a salted hash. An id in emtrack's or the officers' namespace
    /// ([`acl::reserved`]) is refused.
    pub async fn enrol_device(&self, device: &DeviceId) -> Result<Secret, IdentityError> {
        let user = acl::device_username(device);
        if acl::reserved(&user) {
            return Err(IdentityError::Reserved(user));
        }
        let password = crate::new_password();
        self.ensure_role(acl::device_role_command(device)).await?;
        self.run_all(
            &user,
            vec![
                json!({ "command": "createClient", "username": user, "clientid": user,
                         "password": password.expose(), "textname": "emtrack device",
                         "roles": [{ "rolename": acl::device_role(device) }] }),
            ],
        )
        .await?;
        Ok(password)
    }

    /// Replaces a device's password: the old one stops working at once and
    /// a session opened with it is disconnected.
    pub async fn rotate_device(&self, device: &DeviceId) -> Result<Secret, IdentityError> {
        self.rotate(&acl::device_username(device)).await
    }

    /// Revokes a device's credential and removes its role. Returns false if
    /// it had none.
    pub async fn retire_device(&self, device: &DeviceId) -> Result<bool, IdentityError> {
        let user = acl::device_username(device);
        let gone = self.delete_client(&user).await?;
        match self
            .run_all(
                &user,
                vec![json!({ "command": "deleteRole", "rolename": acl::device_role(device) })],
            )
            .await
        {
            Ok(()) | Err(IdentityError::NotFound(_)) => Ok(gone),
            Err(e) => Err(e),
        }
    }

    /// Issues an officer's credential: it may read its own alert topic only.
    pub async fn enrol_officer(&self, officer_id: i64) -> Result<Secret, IdentityError> {
        let user = acl::officer_username(officer_id);
        let password = crate::new_password();
        self.ensure_role(acl::officer_role_command(officer_id))
            .await?;
        self.run_all(
            &user,
            vec![
                json!({ "command": "createClient", "username": user, "clientid": user,
                         "password": password.expose(), "textname": "emtrack officer",
                         "roles": [{ "rolename": acl::officer_role(officer_id) }] }),
            ],
        )
        .await?;
        Ok(password)
    }

    /// Creates or updates emtrack's own service identity with `password`
    /// (idempotent: run it again to change the password).
    pub async fn setup_service(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<(), IdentityError> {
        // The role's ACLs are replaced whole, so a new release's ACLs apply.
        match self
            .run_all(
                SERVICE,
                vec![json!({ "command": "deleteRole", "rolename": acl::SERVICE_ROLE })],
            )
            .await
        {
            Ok(()) | Err(IdentityError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.ensure_role(acl::service_role_command()).await?;
        let create = json!({ "command": "createClient", "username": username,
                             "password": password.expose(), "textname": "emtrack service",
                             "roles": [{ "rolename": acl::SERVICE_ROLE }] });
        match self.run_all(username, vec![create]).await {
            Ok(()) => Ok(()),
            Err(IdentityError::Exists(_)) => {
                self.run_all(
                    username,
                    vec![
                        json!({ "command": "setClientPassword", "username": username,
                                "password": password.expose() }),
                        json!({ "command": "addClientRole", "username": username,
                                "rolename": acl::SERVICE_ROLE }),
                    ],
                )
                .await
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `username` is an identity the broker knows.
    pub async fn exists(&self, username: &str) -> Result<bool, IdentityError> {
        match self
            .run_all(
                username,
                vec![json!({ "command": "getClient", "username": username })],
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(IdentityError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn rotate(&self, user: &str) -> Result<Secret, IdentityError> {
        let password = crate::new_password();
        // Disabling disconnects a session opened with the old password;
        // enabling lets the new one in.
        self.run_all(
            user,
            vec![
                json!({ "command": "setClientPassword", "username": user,
                        "password": password.expose() }),
                json!({ "command": "disableClient", "username": user }),
                json!({ "command": "enableClient", "username": user }),
            ],
        )
        .await?;
        Ok(password)
    }

    async fn delete_client(&self, user: &str) -> Result<bool, IdentityError> {
        match self
            .run_all(
                user,
                vec![
                    json!({ "command": "disableClient", "username": user }),
                    json!({ "command": "deleteClient", "username": user }),
                ],
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(IdentityError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates a role; one left by an earlier, interrupted change is kept
    /// (its ACLs are the same by construction).
    async fn ensure_role(&self, command: Value) -> Result<(), IdentityError> {
        let name = command["rolename"].as_str().unwrap_or_default().to_owned();
        match self.run_all(&name, vec![command]).await {
            Ok(()) | Err(IdentityError::Exists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

const SERVICE: &str = "service role";

fn refusal(who: &str, answer: &Value, reason: &str) -> IdentityError {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("already exists") {
        IdentityError::Exists(who.to_owned())
    } else if lower.contains("not found") {
        IdentityError::NotFound(who.to_owned())
    } else {
        IdentityError::Refused {
            command: answer["command"].as_str().unwrap_or("?").to_owned(),
            reason: reason.to_owned(),
        }
    }
}

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records the first connect's outcome; later ones change nothing.
fn settle(ready: &watch::Sender<Option<Result<(), String>>>, outcome: Result<(), String>) {
    ready.send_if_modified(|v| {
        if v.is_none() {
            *v = Some(outcome);
            true
        } else {
            false
        }
    });
}

/// Polls the admin session: (re)subscribes after each connect, hands each
/// answer to its waiter, and reports the first connect's outcome.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    pending: Pending,
    ready: watch::Sender<Option<Result<(), String>>>,
) {
    let mut waits = link::mqtt::reconnect_waits();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                waits = link::mqtt::reconnect_waits();
                if client.try_subscribe(RESPONSE, QoS::AtLeastOnce).is_err() {
                    settle(&ready, Err("cannot subscribe to answers".into()));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
                let outcome = if granted {
                    Ok(())
                } else {
                    Err("the identity may not administer dynamic security".to_owned())
                };
                settle(&ready, outcome);
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == RESPONSE => {
                let Ok(doc) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                let answers = doc["responses"].as_array().cloned().unwrap_or_default();
                let mut waiting = lock(&pending);
                for a in answers {
                    if let Some(tx) = a["correlationData"]
                        .as_str()
                        .and_then(|t| waiting.remove(t))
                    {
                        let _ = tx.send(a);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                settle(&ready, Err(e.to_string()));
                // Refused credentials do not get better by retrying: the
                // session ends, and the next use connects afresh.
                if matches!(e, ConnectionError::ConnectionRefused(_)) {
                    return;
                }
                tokio::time::sleep(link::mqtt::next_wait(&mut waits)).await;
            }
        }
    }
}
