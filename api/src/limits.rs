//! Limits that keep the API usable under abuse: failed logins per name and
//! per address, a deadline on every request but the stream, and a cap on
//! open streams (the body limit and the header-read timeout are set where
//! the router and the listener are built).

use crate::error::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins allowed per name within [`WINDOW`].
pub(crate) const FAILURES_PER_NAME: u32 = 5;
/// Failed logins allowed per client address within [`WINDOW`].
pub(crate) const FAILURES_PER_ADDRESS: u32 = 20;
/// The window failed logins are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(300);
/// How long a request may take (the stream excepted).
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// Failed logins, by name and by address, in fixed windows.
#[derive(Debug, Default)]
pub(crate) struct LoginThrottle {
    names: Mutex<HashMap<String, (Instant, u32)>>,
    addresses: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

fn over<K: std::hash::Hash + Eq>(
    m: &Mutex<HashMap<K, (Instant, u32)>>,
    k: &K,
    max: u32,
    now: Instant,
) -> Option<u64> {
    let m = m.lock().unwrap_or_else(|p| p.into_inner());
    let (start, n) = m.get(k)?;
    let end = *start + WINDOW;
    (*n >= max && now < end).then(|| (end - now).as_secs().max(1))
}

fn bump<K: std::hash::Hash + Eq>(m: &Mutex<HashMap<K, (Instant, u32)>>, k: K, now: Instant) {
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    // Forget closed windows now and then, so the map stays small.
    if m.len() > 10_000 {
        m.retain(|_, (start, _)| now < *start + WINDOW);
    }
    let e = m.entry(k).or_insert((now, 0));
    if now >= e.0 + WINDOW {
        *e = (now, 0);
    }
    e.1 += 1;
}

impl LoginThrottle {
    /// 429 (with the seconds to wait) while the name or the address has
    /// used up its failures.
    pub(crate) fn check(&self, name: &str, from: Option<IpAddr>) -> Result<(), ApiError> {
        let now = Instant::now();
        let by_name = over(
            &self.names,
            &name.to_ascii_lowercase(),
            FAILURES_PER_NAME,
            now,
        );
        let by_addr = from.and_then(|a| over(&self.addresses, &a, FAILURES_PER_ADDRESS, now));
        match by_name.max(by_addr) {
            Some(wait) => Err(ApiError::TooMany(wait)),
            None => Ok(()),
        }
    }

    /// Counts a failed login.
    pub(crate) fn failed(&self, name: &str, from: Option<IpAddr>) {
        let now = Instant::now();
        bump(&self.names, name.to_ascii_lowercase(), now);
        if let Some(a) = from {
            bump(&self.addresses, a, now);
        }
    }
}

/// Answers 503 `timeout` when the handler takes longer than
/// [`REQUEST_DEADLINE`].
pub(crate) async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await {
        Ok(r) => r,
        Err(_) => crate::error::answer(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} s",
                REQUEST_DEADLINE.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_throttled_after_its_failures_and_others_are_not() {
        let t = LoginThrottle::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..FAILURES_PER_NAME {
            assert!(t.check("ann", Some(ip)).is_ok());
            t.failed("ann", Some(ip));
        }
        assert!(matches!(t.check("ANN", None), Err(ApiError::TooMany(s)) if s > 0));
        assert!(t.check("bob", Some(ip)).is_ok());
    }
}
