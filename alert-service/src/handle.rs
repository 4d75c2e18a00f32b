//! [`AlertHandle`]: what the rest of emtrack (the HTTP API) holds of the
//! running alert service. Officers' actions go to the service's task, which
//! owns the book; the answer comes back once the change is stored.

use alerts::{AlertId, BookError, OfficerAction};
use std::fmt;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Why an officer's action was not done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// The lifecycle refused it (unknown, already resolved, note missing or
    /// unusable).
    Book(BookError),
    /// The database refused to store it.
    NotStored,
    /// The alert service has stopped.
    Stopped,
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::Book(e) => e.fmt(f),
            ActionError::NotStored => write!(f, "the database refused the change; try again"),
            ActionError::Stopped => write!(f, "the alert service has stopped"),
        }
    }
}

impl std::error::Error for ActionError {}

/// The answer to an officer's action.
pub(crate) type Reply = oneshot::Sender<Result<(), ActionError>>;

/// An officer's action, on its way to the service's task.
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) alert: AlertId,
    pub(crate) officer: u64,
    pub(crate) action: OfficerAction,
    pub(crate) note: Option<String>,
    pub(crate) reply: Reply,
}

/// Handles to the running alert service.
#[derive(Clone, Debug)]
pub struct AlertHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) broadcast: broadcast::Sender<Arc<str>>,
    pub(crate) stopped: CancellationToken,
}

impl AlertHandle {
    /// `officer` acknowledges or resolves `alert`, with an optional note
    /// (required to resolve); returns once the change is stored.
    pub async fn act(
        &self,
        alert: u64,
        officer: u64,
        action: OfficerAction,
        note: Option<String>,
    ) -> Result<(), ActionError> {
        let (reply, answer) = oneshot::channel();
        let command = Command {
            alert: AlertId(alert),
            officer,
            action,
            note,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| ActionError::Stopped)?;
        answer.await.unwrap_or(Err(ActionError::Stopped))
    }

    /// Every notification's JSON from now on, as stored (a receiver that
    /// lags is told how many it missed; `alert_deliveries` has them all).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.broadcast.subscribe()
    }

    /// Cancelled once the service has stopped (its last changes stored, its
    /// lock released).
    pub fn stopped(&self) -> CancellationToken {
        self.stopped.clone()
    }
}
