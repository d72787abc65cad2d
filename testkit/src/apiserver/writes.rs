//! What a write through the front does besides the backend call: it reads the object as
//! it was (for selector watches and to tell a create from an update), fixes up what the
//! backend stores differently from a real server (Secrets' `stringData`, ownership of
//! fields an update removed), and records the change in the [`Feed`] for watches.
//!
//! The caller holds the feed's write gate from [`Write::before`] to [`Write::after`].

use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde_json::Value;

use super::feed::{self, Change, ChangeType, ResourcePath};
use super::{State, crd, is_update, prune_stale_ownership, secrets};

/// Now, as `metadata` timestamps are written.
fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A write request (POST, PUT, PATCH or DELETE on a resource path).
#[derive(Debug)]
pub(super) struct Write {
    method: Method,
    path: ResourcePath,
    /// The writer of a non-apply write, for the ownership of `stringData` keys.
    update_manager: Option<String>,
    /// PUT or a non-apply PATCH (whose removed fields lose their owners).
    update: bool,
}

/// The object (or, for a collection DELETE, the objects) before the write.
#[derive(Debug, Default)]
pub(super) struct Before {
    object: Option<Value>,
    collection: Vec<Value>,
}

impl Before {
    /// The object as it was (with its true generation), when it existed.
    pub(super) fn object(&self) -> Option<&Value> {
        self.object.as_ref()
    }
}

impl Write {
    /// The write a request is, if it is one; `client_path` is the path as the client sent
    /// it (`namespaces`, not the backend's alias).
    pub(super) fn of(parts: &http::request::Parts, client_path: &str) -> Option<Write> {
        let method = parts.method.clone();
        if !matches!(
            method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            return None;
        }
        let path = ResourcePath::parse(client_path)?;
        let content_type = parts.headers.get(header::CONTENT_TYPE);
        let update = is_update(&method, content_type);
        let apply = method == Method::PATCH && !update;
        let update_manager = (!apply && method != Method::DELETE).then(|| {
            let field_manager = parts.uri.query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "fieldManager")
                    .map(|(_, v)| v.into_owned())
            });
            let agent = parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok());
            secrets::manager_name(field_manager.as_deref(), agent)
        });
        Some(Write {
            method,
            path,
            update_manager,
            update,
        })
    }

    /// Reads what the write will change from the backend (`target`: the backend path).
    pub(super) async fn before(&self, state: &State, target: &str) -> Before {
        let get = |path: String| async move { feed::get(&state.backend, &path).await };
        match (&self.method, &self.path.name) {
            (&Method::POST, _) => Before::default(),
            (&Method::DELETE, None) => Before {
                object: None,
                collection: get(target.to_owned())
                    .await
                    .and_then(|list| list.get("items").and_then(Value::as_array).cloned())
                    .unwrap_or_default(),
            },
            _ => Before {
                object: get(object_path(target, &self.path))
                    .await
                    .map(|mut object| {
                        state.generations.present(&mut object);
                        object
                    }),
                collection: Vec::new(),
            },
        }
    }

    /// After the backend answered `code` with `bytes`: fixes the stored object up where
    /// needed, records the change, and answers the body to send to the client.
    pub(super) async fn after(
        &self,
        state: &State,
        target: &str,
        before: Before,
        code: StatusCode,
        mut bytes: Bytes,
    ) -> Bytes {
        if !code.is_success() {
            return bytes;
        }
        if self.method == Method::DELETE {
            let gone = match self.path.name {
                Some(_) => serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .into_iter()
                    .collect(),
                None => self.deleted_from(state, target, before.collection).await,
            };
            for object in gone {
                self.record_deletion(state, object).await;
            }
            return bytes;
        }
        let Ok(mut object) = serde_json::from_slice::<Value>(&bytes) else {
            return bytes;
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let path = match self.method {
            Method::POST => format!("{target}/{name}"),
            _ => object_path(target, &self.path),
        };
        if self.is_secret()
            && let Some(patch) = secrets::fold(&object, self.update_manager.as_deref(), &now())
            && let Ok((code, folded)) = feed::call(
                &state.backend,
                Method::PATCH,
                &path,
                "application/merge-patch+json",
                patch.to_string(),
            )
            .await
            && code.is_success()
        {
            bytes = Bytes::from(folded.to_string());
            object = folded;
        }
        if self.update
            && let Some(fixed) = prune_stale_ownership(state, target, &bytes).await
            && let Ok(fixed_object) = serde_json::from_slice(&fixed)
        {
            object = fixed_object;
        }
        if self.is_crd()
            && self.path.subresource.is_none()
            && let Some(established) = crd::establish(&state.backend, &object, &now()).await
        {
            object = established;
        }
        state.generations.record(before.object.as_ref(), &object);
        state.generations.present(&mut object);
        bytes = Bytes::from(object.to_string());
        if let Some(rv) = feed::resource_version(&object) {
            let change = if before.object.is_some() {
                ChangeType::Modified
            } else {
                ChangeType::Added
            };
            state.feed.record(Change {
                rv,
                change,
                resource: self.path.resource.clone(),
                object,
                previous: before.object,
            });
        }
        bytes
    }

    fn is_crd(&self) -> bool {
        crd::is_crd_path(&self.path.resource.group, &self.path.resource.plural)
    }

    fn is_secret(&self) -> bool {
        let r = &self.path.resource;
        r.group.is_empty() && r.version == "v1" && r.plural == "secrets"
    }

    /// The objects of a collection DELETE that are gone now.
    async fn deleted_from(&self, state: &State, target: &str, listed: Vec<Value>) -> Vec<Value> {
        let mut gone = Vec::new();
        for object in listed {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let path = format!("{}/{name}", target.split('?').next().unwrap_or(target));
            let still = feed::get(&state.backend, &path).await.is_some();
            if !still {
                gone.push(object);
            }
        }
        gone
    }

    /// Logs a deletion with a `resourceVersion` of its own, as a real server does.
    async fn record_deletion(&self, state: &State, mut object: Value) {
        if object.get("kind").and_then(Value::as_str) == Some("Status") {
            return;
        }
        let Some(rv) = feed::tick(&state.backend).await else {
            return;
        };
        state.generations.present(&mut object);
        state.generations.forget(&object);
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        state.feed.record(Change {
            rv,
            change: ChangeType::Deleted,
            resource: self.path.resource.clone(),
            object,
            previous: None,
        });
    }
}

/// The backend path of the object a write to `target` touches (its subresource dropped).
fn object_path(target: &str, path: &ResourcePath) -> String {
    let target = target.split('?').next().unwrap_or(target);
    match &path.subresource {
        Some(sub) => target
            .strip_suffix(&format!("/{sub}"))
            .unwrap_or(target)
            .to_owned(),
        None => target.to_owned(),
    }
}
