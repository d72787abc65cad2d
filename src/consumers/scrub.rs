//! Taking secrets out of the text a consumer's API sends back (error messages, response
//! bodies) before it reaches an error or a log: GitHub, GitLab and Kubernetes may echo
//! the value rotor sent, or the token it sent it with.

use std::cmp::Reverse;

use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::secret::SecretMap;

/// Replaces secrets in a message in every form an API may echo them: as given,
/// JSON-escaped and, for Kubernetes Secret data, base64. The default scrubs nothing.
#[derive(Default)]
pub(super) struct Scrubber {
    needles: Vec<Zeroizing<String>>,
}

impl Scrubber {
    /// A scrubber of `secrets`, plain and JSON-escaped; empty ones scrub nothing.
    pub(super) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        Self::build(secrets, false)
    }

    /// A scrubber of the values of a rendered Kubernetes Secret: plain, base64 (how the
    /// Secret's `data` carries them) and JSON-escaped.
    pub(super) fn of_secret_data(rendered: &SecretMap) -> Self {
        Self::build(rendered.keys().filter_map(|key| rendered.expose(key)), true)
    }

    fn build<'a>(secrets: impl IntoIterator<Item = &'a str>, base64: bool) -> Self {
        let mut needles = Vec::new();
        for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
            needles.push(Zeroizing::new(secret.to_owned()));
            if base64 {
                needles.push(Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(secret),
                ));
            }
            if let Ok(json) = serde_json::to_string(secret) {
                let json = Zeroizing::new(json);
                let inner = json
                    .strip_prefix('"')
                    .and_then(|j| j.strip_suffix('"'))
                    .unwrap_or(&json);
                if inner != secret {
                    needles.push(Zeroizing::new(inner.to_owned()));
                }
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        needles.sort_by_key(|n| Reverse(n.len()));
        Scrubber { needles }
    }

    /// `text` with every secret replaced by `[REDACTED]`; the copies made on the way
    /// are wiped.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                let replaced = out.replace(needle.as_str(), "[REDACTED]");
                out.zeroize();
                out = replaced;
            }
        }
        out
    }
}
