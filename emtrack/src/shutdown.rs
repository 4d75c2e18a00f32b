//! One stop signal for every task, and one failure path.
//!
//! SIGTERM or Ctrl-C cancels the service's [`CancellationToken`]; every
//! task watches it. Each service task is spawned through [`Supervisor`]: one
//! that ends with an error or panics is logged, cancels the token so that
//! the rest stop in order, and is reported ([`Supervisor::wait`],
//! [`Failures`]), so that `emtrack run` exits non-zero and a process
//! supervisor restarts it. (The alert service's senders are its own tasks;
//! they stop on the same token.)

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The failures recorded so far, readable while tasks still run (a
/// shutdown that times out still reports them).
#[derive(Clone, Debug, Default)]
pub struct Failures(Arc<Mutex<Vec<String>>>);

impl Failures {
    fn push(&self, failure: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(failure);
    }

    /// Every failure so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The service's tasks.
#[derive(Debug)]
pub struct Supervisor {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    failures: Failures,
}

impl Supervisor {
    /// Tasks that stop on `stop`, and cancel it when one fails.
    pub fn new(stop: CancellationToken) -> Supervisor {
        Supervisor {
            tasks: JoinSet::new(),
            stop,
            failures: Failures::default(),
        }
    }

    /// Spawns `task`, named `name` in the log and in the failures. The task
    /// runs in a task of its own, so that a panic is caught and reported
    /// like an error.
    pub fn spawn<E: Display + Send + 'static>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let stop = self.stop.clone();
        let failures = self.failures.clone();
        let inner = tokio::spawn(task);
        self.tasks.spawn(async move {
            let failure = match inner.await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("{name}: {e}"),
                Err(e) => format!("{name} panicked: {e}"),
            };
            tracing::error!(failure = %failure, "a service task failed; stopping");
            failures.push(failure);
            stop.cancel();
        });
    }

    /// Spawns `task`, which cannot fail: it ends when `stop` is cancelled or
    /// its input is gone.
    pub fn spawn_endless(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.spawn(name, async move {
            task.await;
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// The failures, as they are recorded.
    pub fn failures(&self) -> Failures {
        self.failures.clone()
    }

    /// Waits for every task to end; returns the failures.
    pub async fn wait(mut self) -> Vec<String> {
        while self.tasks.join_next().await.is_some() {}
        self.failures.snapshot()
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_stops_the_others_and_is_reported() {
        let stop = CancellationToken::new();
        let mut tasks = Supervisor::new(stop.clone());
        let s = stop.clone();
        tasks.spawn_endless("waits for the stop", async move { s.cancelled().await });
        tasks.spawn("fails", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err("the lock was lost")
        });
        let failures = tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("every task ends once one failed");
        assert!(stop.is_cancelled());
        assert_eq!(failures, vec!["fails: the lock was lost".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_stops_the_others_and_is_reported() {
        let stop = CancellationToken::new();
        let mut tasks = Supervisor::new(stop.clone());
        let s = stop.clone();
        tasks.spawn_endless("waits for the stop", async move { s.cancelled().await });
        tasks.spawn_endless("panics", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            panic!("a bug");
        });
        let failures = tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("every task ends once one panicked");
        assert!(stop.is_cancelled());
        assert_eq!(failures.len(), 1);
        assert!(failures[0].starts_with("panics panicked"), "{failures:?}");
    }
}
