//! `vault-kv`: an extra KV v2 copy of the rendered values, at another mount, path or
//! namespace (for teams whose apps read their own Vault path). Written only when the
//! values differ, with check-and-set on the version read, then read back.

use reqwest::Method;
use serde_json::{Map, Value, json};
use tracing::info;

use super::{
    Consumer, ConsumerKind, Context, NewValue, PushOutcome, PushResult, ReadBack, ReadBackResult,
    RemoveOutcome, RemoveResult, differing_keys, render_map,
};
use crate::credentials::target::wipe_json;
use crate::policy::VaultKvConsumer;
use crate::secret::{SecretMap, SecretString};
use crate::vault::{AuthAs, RawResponse, Vault, VaultError};

/// A failed push to a KV copy.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum VaultKvError {
    /// Vault could not be reached or answered 5xx/429.
    #[error("vault-kv {location}: {source}")]
    #[strum(disabled)]
    Vault {
        /// `namespace:mount/path`.
        location: String,
        /// The cause (never a value).
        #[source]
        source: VaultError,
    },
    /// Vault refused the request (permissions, missing mount…).
    #[error("vault-kv {location}: {operation} answered HTTP {status}: {errors}")]
    #[strum(serialize = "vault_kv_refused")]
    Refused {
        /// `namespace:mount/path`.
        location: String,
        /// `read` / `write`.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// Vault's error strings.
        errors: String,
    },
    /// Someone else kept writing the path between our read and write.
    #[error("vault-kv {location}: the path changed during the write (check-and-set), twice")]
    #[strum(serialize = "vault_kv_conflict")]
    Conflict {
        /// `namespace:mount/path`.
        location: String,
    },
    /// The value read back is not the value written.
    #[error("vault-kv {location}: the value read back differs from the value written")]
    #[strum(serialize = "vault_kv_mismatch")]
    Mismatch {
        /// `namespace:mount/path`.
        location: String,
    },
}

impl VaultKvError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            VaultKvError::Vault { source, .. } => source.kind(),
            other => other.into(),
        }
    }

    /// Whether a later retry may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            VaultKvError::Vault { source, .. } => source.is_transient(),
            VaultKvError::Refused { status, .. } => *status >= 500 || *status == 429,
            VaultKvError::Conflict { .. } => true,
            VaultKvError::Mismatch { .. } => false,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy)]
pub struct VaultKvReport {
    /// A new version was written.
    pub changed: bool,
    /// The latest version holds exactly the rendered values.
    pub verified: bool,
}

fn location(spec: &VaultKvConsumer) -> String {
    match &spec.namespace {
        Some(ns) => format!("{ns}:{}/{}", spec.mount, spec.path),
        None => format!("{}/{}", spec.mount, spec.path),
    }
}

/// The latest version's data and number; `None` when the path has no live version.
async fn read(
    vault: &Vault,
    spec: &VaultKvConsumer,
) -> Result<Option<(SecretMap, u64)>, VaultKvError> {
    let ns = spec.namespace.as_deref().or(vault.namespace());
    let path = format!("{}/data/{}", spec.mount, spec.path);
    let resp = vault
        .request_in(ns, Method::GET, &path, None, AuthAs::Rotor)
        .await
        .map_err(|source| VaultKvError::Vault {
            location: location(spec),
            source,
        })?;
    if resp.status == 404 {
        return Ok(None);
    }
    let body = checked(resp, spec, "read")?;
    let version = body["data"]["metadata"]["version"].as_u64().unwrap_or(0);
    match body["data"]["data"].as_object() {
        Some(obj) => Ok(Some((SecretMap::from_json_object(obj), version))),
        // Deleted or destroyed latest version: rewrite on top of it.
        None => Ok(Some((SecretMap::new(), version))),
    }
}

fn checked(
    resp: RawResponse,
    spec: &VaultKvConsumer,
    operation: &'static str,
) -> Result<Value, VaultKvError> {
    if resp.is_success() {
        let mut json = resp.json();
        // The response holds the secret values; drop the raw bytes promptly.
        drop(resp);
        Ok(std::mem::take(&mut json))
    } else {
        Err(VaultKvError::Refused {
            location: location(spec),
            operation,
            status: resp.status,
            errors: resp.errors(),
        })
    }
}

/// Writes `rendered` to the copy unless it already holds exactly that, then reads
/// it back ([`read_back`]).
pub async fn push(
    vault: &Vault,
    spec: &VaultKvConsumer,
    rendered: &SecretMap,
) -> Result<VaultKvReport, VaultKvError> {
    let changed = write_next(vault, spec, |current| {
        let same = current.is_some_and(|data| data.same_values(rendered));
        (!same).then(|| (rendered.clone(), ()))
    })
    .await?
    .is_some();
    if read_back(vault, spec, rendered).await? != ReadBack::Matches {
        return Err(VaultKvError::Mismatch {
            location: location(spec),
        });
    }
    info!(copy = %location(spec), changed, "Vault KV copy up to date.");
    Ok(VaultKvReport {
        changed,
        verified: true,
    })
}

/// Compares the copy's latest version with `rendered`: `Missing` when there is no
/// live version or it holds none of the rendered keys, `Differs` naming the rendered
/// keys it lacks or holds with other values and the keys it holds besides them.
pub async fn read_back(
    vault: &Vault,
    spec: &VaultKvConsumer,
    rendered: &SecretMap,
) -> Result<ReadBack, VaultKvError> {
    let Some((data, _)) = read(vault, spec).await? else {
        return Ok(ReadBack::Missing);
    };
    if !data.keys().any(|k| rendered.get(k).is_some()) {
        return Ok(ReadBack::Missing);
    }
    let mut fields = differing_keys(rendered, |k| data.expose(k));
    fields.extend(
        data.keys()
            .filter(|k| rendered.get(k).is_none())
            .map(str::to_owned),
    );
    Ok(ReadBack::of_differences(fields))
}

/// Reads the copy and writes what `next` makes of its data (`None`: nothing to write)
/// with check-and-set on the version read. When another writer wins, reads and tries
/// once more; losing twice is [`VaultKvError::Conflict`]. Returns the `T` that came
/// with the write that landed, `None` when nothing was written.
async fn write_next<T>(
    vault: &Vault,
    spec: &VaultKvConsumer,
    next: impl Fn(Option<&SecretMap>) -> Option<(SecretMap, T)>,
) -> Result<Option<T>, VaultKvError> {
    for _ in 0..2 {
        let current = read(vault, spec).await?;
        let cas = current.as_ref().map_or(0, |(_, version)| *version);
        let Some((entries, done)) = next(current.as_ref().map(|(data, _)| data)) else {
            return Ok(None);
        };
        if write_version(vault, spec, entries.iter(), cas).await? {
            return Ok(Some(done));
        }
    }
    Err(VaultKvError::Conflict {
        location: location(spec),
    })
}

/// Writes `entries` as the copy's next version with check-and-set on `cas` (the
/// version read; 0: none yet). `Ok(false)` when someone else wrote first. The request
/// body holding the values is wiped once sent.
async fn write_version<'v>(
    vault: &Vault,
    spec: &VaultKvConsumer,
    entries: impl Iterator<Item = (&'v str, &'v SecretString)>,
    cas: u64,
) -> Result<bool, VaultKvError> {
    let ns = spec.namespace.as_deref().or(vault.namespace());
    let path = format!("{}/data/{}", spec.mount, spec.path);
    let mut data = Map::new();
    for (k, v) in entries {
        data.insert(
            k.to_owned(),
            Value::String(secrecy::ExposeSecret::expose_secret(v).to_owned()),
        );
    }
    let mut body = json!({"options": {"cas": cas}, "data": Value::Object(data)});
    let result = vault
        .request_in(ns, Method::POST, &path, Some(&body), AuthAs::Rotor)
        .await;
    wipe_json(&mut body);
    let resp = result.map_err(|source| VaultKvError::Vault {
        location: location(spec),
        source,
    })?;
    if resp.status == 400 && resp.errors().contains("check-and-set") {
        return Ok(false);
    }
    checked(resp, spec, "write")?;
    Ok(true)
}

/// Writes a new version of the copy without the policy's keys (`spec.data`), with
/// check-and-set on the version read, keeping every other key and every earlier
/// version; then reads it back. Returns how many of the keys were there. A path with
/// no live version, or none of the keys, is removed already (nothing is written).
pub async fn remove(vault: &Vault, spec: &VaultKvConsumer) -> Result<usize, VaultKvError> {
    let ours = |k: &str| spec.data.contains_key(k);
    let removed = write_next(vault, spec, |current| {
        let current = current?;
        let present = current.keys().filter(|k| ours(k)).count();
        let kept = current
            .iter()
            .filter(|(k, _)| !ours(k))
            .map(|(k, v)| (k.to_owned(), v.clone()));
        (present > 0).then(|| (kept.collect(), present))
    })
    .await?
    .unwrap_or(0);
    let left = read(vault, spec)
        .await?
        .is_some_and(|(data, _)| data.keys().any(ours));
    if left {
        return Err(VaultKvError::Mismatch {
            location: location(spec),
        });
    }
    info!(copy = %location(spec), keys = removed, "Vault KV copy no longer holds the policy's keys.");
    Ok(removed)
}

impl Consumer for VaultKvConsumer {
    fn consumer_kind(&self) -> ConsumerKind {
        ConsumerKind::VaultKv
    }

    async fn push(&self, ctx: &Context<'_>, new: &NewValue<'_>) -> PushResult {
        let rendered = render_map(&self.data, new.vars)?;
        let r = push(ctx.vault, self, &rendered).await?;
        Ok(PushOutcome::written(r.changed, r.verified))
    }

    async fn read_back(&self, ctx: &Context<'_>, new: &NewValue<'_>) -> ReadBackResult {
        let rendered = render_map(&self.data, new.vars)?;
        Ok(read_back(ctx.vault, self, &rendered).await?)
    }

    async fn remove(&self, ctx: &Context<'_>) -> RemoveResult {
        let n = remove(ctx.vault, self).await?;
        Ok(RemoveOutcome::verified(
            n > 0,
            if n > 0 {
                format!("a new version without the policy's {n} key(s); earlier versions kept")
            } else {
                "no key of the policy was there".to_owned()
            },
        ))
    }
}
