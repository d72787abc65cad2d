//! [`UserAgents`]: the `User-Agent` of every request a fake server (or the
//! [`crate::HttpRecorder`]) received, so a test can check who called.

use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderMap, Method, header};

/// One request a server received: what was asked and the `User-Agent` it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `METHOD /path` (without the query).
    pub request: String,
    /// The `User-Agent` header; `None` when the request had none (or it was not text).
    pub user_agent: Option<String>,
}

/// The requests a server received, in order. Clones share one record.
///
/// ```
/// let agents = rotor_testkit::UserAgents::default();
/// let mut headers = http::HeaderMap::new();
/// headers.insert(http::header::USER_AGENT, "rotor/0.1.0".parse().unwrap());
/// agents.record(&http::Method::GET, "/v1/sys/health", &headers);
/// assert_eq!(agents.seen()[0].user_agent.as_deref(), Some("rotor/0.1.0"));
/// agents.assert_all("rotor/0.1.0");
/// ```
#[derive(Debug, Clone, Default)]
pub struct UserAgents(Arc<Mutex<Vec<Seen>>>);

impl UserAgents {
    /// Adds one request.
    pub fn record(&self, method: &Method, path: &str, headers: &HeaderMap) {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Seen {
                request: format!("{method} {path}"),
                user_agent,
            });
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asserts that requests were received and every one carried exactly `expected`.
    ///
    /// # Panics
    ///
    /// When none arrived, or one had another `User-Agent` or none (the message lists them).
    pub fn assert_all(&self, expected: &str) {
        let seen = self.seen();
        assert!(!seen.is_empty(), "no request was received");
        let other: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.user_agent.as_deref() != Some(expected))
            .collect();
        assert!(
            other.is_empty(),
            "{} of {} requests did not carry User-Agent {expected:?}: {other:?}",
            other.len(),
            seen.len()
        );
    }
}
