//! Entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run by `dev/fuzz`).
//!
//! Each takes arbitrary bytes and drives the same code rotor runs on untrusted text:
//! the policy loader, the `--auth-config` loader, and the API's JSON request bodies.
//! None may panic, whatever the input; errors are formatted as they would be shown.
//! `tests/fuzz_replay.rs` feeds every stored corpus and crash input through these same
//! functions in the ordinary test run, so a crash once fixed stays fixed.

use std::path::Path;

/// The policy loader on `data` as the text of one policy file: YAML parsing, the
/// position-keeping deserializer, validation, the checks across documents, and the
/// scheduling of every policy it accepts.
/// Returns how many policies loaded (0 when refused).
pub fn policy_yaml(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    match crate::policy::load_str(Path::new("fuzz/policy.yaml"), &text) {
        Ok(set) => {
            // What the agent and `rotor plan` then do with an accepted policy: schedule
            // it, also from the calendar's ends (a `maxAge` of a billion weeks once
            // passed validation and panicked here).
            let now = chrono::Utc::now();
            let ends = [
                None,
                Some(chrono::DateTime::<chrono::Utc>::MIN_UTC),
                Some(chrono::DateTime::<chrono::Utc>::MAX_UTC),
            ];
            for policy in &set {
                let _ = format!("{policy:?}");
                for t in ends {
                    let inputs = crate::schedule::DueInputs {
                        cron_after: t,
                        secret_created: t,
                        renewal_at: t,
                    };
                    let _ = crate::schedule::next_due(policy, &inputs, now);
                }
            }
            set.len()
        }
        Err(errors) => {
            let _ = errors.to_string();
            let _ = errors.kind();
            0
        }
    }
}

/// The `--auth-config` loader on `data` as the file's text. Returns how many
/// identities loaded (0 when refused).
pub fn auth_config(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    match crate::server::AuthConfig::parse(Path::new("fuzz/auth.yaml"), &text) {
        Ok(config) => {
            let _ = format!("{config:?}");
            config.identities.len()
        }
        Err(error) => {
            let _ = crate::error_chain(&error);
            let _ = error.kind();
            0
        }
    }
}

/// `data` as the body of every API request that has one (rotate, release, retire and
/// enable, approve, bulk rotate), read as the handlers read it. Returns how many of
/// those bodies were accepted.
pub fn api_body(data: &[u8]) -> usize {
    crate::server::fuzzing::request_bodies(data)
}
