//! Who else writes the keys rotor applies to a Secret, read from its `managedFields`.
//!
//! A real API server records a key written through `stringData` as
//! `f:stringData.f:KEY`, never `f:data.f:KEY` (`stringData` is folded into `data` after
//! field ownership is computed). rotor applies `data.KEY`, so such a key never conflicts
//! on apply: rotor silently takes the value, and the other manager's next write puts its
//! own value back, leaving the Secret stale against Vault. Such a key is a conflict rotor
//! has to report itself. So is a key whose value differs from what rotor just applied
//! when another manager owns it through `data`.
//!
//! Pure: decides from the `managedFields` JSON, so it does not depend on the Kubernetes
//! client's types.

use std::fmt;

use serde_json::Value;

/// Through which field another manager writes a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// `stringData.KEY`: folded into `data` after ownership, so applies never conflict.
    StringData,
    /// `data.KEY`, with a value other than the one rotor applied.
    Data,
}

/// A key rotor writes that another field manager also writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConflict {
    /// The Secret key.
    pub key: String,
    /// The other field manager, as `managedFields` names it.
    pub manager: String,
    /// How that manager writes the key.
    pub through: Through,
}

impl fmt::Display for KeyConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = match self.through {
            Through::StringData => "stringData",
            Through::Data => "data",
        };
        write!(
            f,
            "key {} is written through {field} by field manager {:?}",
            self.key, self.manager
        )
    }
}

/// The conflicts over `keys` (the keys rotor applies) that `managed_fields` (a Secret's
/// `metadata.managedFields`, as JSON) shows: every manager other than `me` that owns
/// `f:stringData.f:KEY`, and, for the keys in `differing` (read back with a value other
/// than rotor's), every manager other than `me` that owns `f:data.f:KEY`. Entries of
/// subresources are ignored. Sorted by key, then manager.
pub fn conflicts<'a>(
    managed_fields: &Value,
    keys: impl IntoIterator<Item = &'a str>,
    differing: &[String],
    me: &str,
) -> Vec<KeyConflict> {
    let entries = managed_fields.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut found = Vec::new();
    for key in keys {
        for entry in entries {
            let manager = entry.get("manager").and_then(Value::as_str).unwrap_or("");
            let subresource = entry
                .get("subresource")
                .and_then(Value::as_str)
                .unwrap_or("");
            if manager == me || !subresource.is_empty() {
                continue;
            }
            let owns = |field: &str| {
                entry
                    .get("fieldsV1")
                    .and_then(|f| f.get(field))
                    .and_then(|f| f.get(format!("f:{key}")))
                    .is_some()
            };
            let through = if owns("f:stringData") {
                Through::StringData
            } else if owns("f:data") && differing.iter().any(|d| d == key) {
                Through::Data
            } else {
                continue;
            };
            found.push(KeyConflict {
                key: key.to_owned(),
                manager: manager.to_owned(),
                through,
            });
        }
    }
    found.sort_by(|a, b| (&a.key, &a.manager).cmp(&(&b.key, &b.manager)));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(manager: &str, fields: Value) -> Value {
        json!({"manager": manager, "operation": "Apply", "fieldsV1": fields})
    }

    #[test]
    fn string_data_of_another_manager_is_a_conflict_whatever_the_value() {
        let fields = json!([
            entry("rotor", json!({"f:data": {"f:PGPASSWORD": {}}})),
            entry(
                "helm",
                json!({"f:stringData": {"f:PGPASSWORD": {}, "f:OTHER": {}}})
            ),
        ]);
        let found = conflicts(&fields, ["PGPASSWORD", "DATABASE_URL"], &[], "rotor");
        assert_eq!(
            found,
            [KeyConflict {
                key: "PGPASSWORD".into(),
                manager: "helm".into(),
                through: Through::StringData
            }]
        );
        assert_eq!(
            found[0].to_string(),
            "key PGPASSWORD is written through stringData by field manager \"helm\""
        );
    }

    #[test]
    fn data_of_another_manager_conflicts_only_when_the_value_differs() {
        let fields = json!([
            entry("rotor", json!({"f:data": {"f:K": {}}})),
            entry("ops", json!({"f:data": {"f:K": {}, "f:J": {}}})),
        ]);
        assert!(conflicts(&fields, ["K"], &[], "rotor").is_empty());
        let found = conflicts(&fields, ["K"], &["K".to_owned()], "rotor");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].through, Through::Data);
        assert_eq!(found[0].manager, "ops");
    }

    #[test]
    fn rotor_itself_subresources_and_missing_fields_are_no_conflict() {
        let fields = json!([
            entry("rotor", json!({"f:stringData": {"f:K": {}}})),
            {"manager": "status-writer", "subresource": "status",
             "fieldsV1": {"f:stringData": {"f:K": {}}}},
            {"manager": "no-fields"},
        ]);
        assert!(conflicts(&fields, ["K"], &["K".to_owned()], "rotor").is_empty());
        assert!(conflicts(&Value::Null, ["K"], &[], "rotor").is_empty());
    }
}
