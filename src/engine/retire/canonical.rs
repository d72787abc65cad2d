//! The retired marks on Vault's canonical copy (custom metadata; every version kept).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{MAX_METADATA_VALUE, RETIRED_METADATA_KEYS, Run};
use crate::engine::Engine;
use crate::engine::runner::StepFailure;
use crate::policy::ValidatedPolicy;
use crate::state::records::time;
use crate::vault::{AuthAs, VaultError};

impl Engine {
    /// Sets rotor's retired marks in the canonical path's custom metadata (other keys
    /// kept) and reports how many versions Vault keeps.
    pub(super) async fn mark_canonical(&self, run: &mut Run<'_>) -> Result<String, StepFailure> {
        let r = &run.record;
        let retired_at = time::format(&r.started_at);
        let mut marks = BTreeMap::from([
            ("rotor_retired_at", retired_at.clone()),
            ("rotor_retired_by", cut(&r.actor)),
            ("rotor_retired_reason", cut(&r.reason)),
            ("rotor_retired_version", r.canonical_version.to_string()),
        ]);
        if let Some(t) = &r.ticket {
            marks.insert("rotor_retired_ticket", cut(t));
        }
        let loc = &run.policy.spec.vault;
        let (mut metadata, versions) = self.canonical_metadata(&loc.mount, &loc.path).await?;
        metadata.retain(|k, _| !RETIRED_METADATA_KEYS.contains(&k.as_str()));
        for (k, v) in marks {
            metadata.insert(k.to_owned(), Value::String(v));
        }
        self.set_custom_metadata(&loc.mount, &loc.path, metadata)
            .await?;
        let (read_back, _) = self.canonical_metadata(&loc.mount, &loc.path).await?;
        if read_back.get("rotor_retired_at").and_then(Value::as_str) != Some(&retired_at) {
            return Err(StepFailure::retryable(
                format!(
                    "{}: the retired marks did not read back from its metadata",
                    r.canonical
                ),
                true,
            ));
        }
        Ok(format!(
            "{} marked retired in its custom metadata (rotor_retired_*); {versions}",
            r.canonical
        ))
    }

    /// The path's custom metadata and a summary of its versions
    /// (`GET <mount>/metadata/<path>`).
    pub(super) async fn canonical_metadata(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<(Map<String, Value>, String), VaultError> {
        let meta = self
            .vault
            .request_ok(
                reqwest::Method::GET,
                &format!("{mount}/metadata/{path}"),
                None,
                AuthAs::Rotor,
            )
            .await?
            .json();
        let data = &meta["data"];
        let custom = data["custom_metadata"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let versions = data["versions"].as_object();
        let total = versions.map_or(0, Map::len);
        let destroyed = versions.map_or(0, |v| {
            v.values()
                .filter(|x| x["destroyed"].as_bool() == Some(true))
                .count()
        });
        let deleted = versions.map_or(0, |v| {
            v.values()
                .filter(|x| x["deletion_time"].as_str().is_some_and(|t| !t.is_empty()))
                .count()
        });
        Ok((
            custom,
            format!(
                "{total} version(s) kept (current {}; destroyed {destroyed}, deleted {deleted}, none by rotor)",
                data["current_version"].as_u64().unwrap_or(0)
            ),
        ))
    }

    /// `POST <mount>/metadata/<path>` with `custom_metadata` only (Vault keeps the
    /// path's other settings).
    pub(super) async fn set_custom_metadata(
        &self,
        mount: &str,
        path: &str,
        custom: Map<String, Value>,
    ) -> Result<(), VaultError> {
        let body = serde_json::json!({ "custom_metadata": custom });
        self.vault
            .request_ok(
                reqwest::Method::POST,
                &format!("{mount}/metadata/{path}"),
                Some(&body),
                AuthAs::Rotor,
            )
            .await?;
        Ok(())
    }

    /// Removes rotor's retired marks from the canonical path's custom metadata.
    pub(super) async fn unmark_canonical(
        &self,
        policy: &ValidatedPolicy,
    ) -> Result<(), VaultError> {
        let loc = &policy.spec.vault;
        let (mut metadata, _) = self.canonical_metadata(&loc.mount, &loc.path).await?;
        if !metadata
            .keys()
            .any(|k| RETIRED_METADATA_KEYS.contains(&k.as_str()))
        {
            return Ok(());
        }
        metadata.retain(|k, _| !RETIRED_METADATA_KEYS.contains(&k.as_str()));
        self.set_custom_metadata(&loc.mount, &loc.path, metadata)
            .await
    }
}

/// `text` cut to what a custom-metadata value may hold.
pub(super) fn cut(text: &str) -> String {
    if text.len() <= MAX_METADATA_VALUE {
        return text.to_owned();
    }
    let mut end = MAX_METADATA_VALUE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
