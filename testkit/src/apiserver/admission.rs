//! What a write goes through before the backend stores it, as on a real server's
//! request path: the status subresource's rules ([`status`]), pruning and structural
//! validation of custom resources ([`schema`]), and the validation of CRDs and of
//! `events.k8s.io/v1` Events ([`events`]). A refused write gets the real `422 Invalid`.

use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::crd::{self, Served};
use super::feed::ResourcePath;
use super::status::{self, BodyKind};
use super::{ReplyBody, events, json_response, schema, status as reply_status};

/// A write about to be sent to the backend.
pub(super) struct Pending<'a> {
    pub(super) method: &'a Method,
    pub(super) path: &'a ResourcePath,
    pub(super) content_type: &'a str,
    /// The custom resource's served CRD version, for a custom resource.
    pub(super) served: Option<&'a Served>,
    /// The object as it is (presented), when it exists.
    pub(super) before: Option<&'a Value>,
}

impl Pending<'_> {
    fn body_kind(&self) -> BodyKind {
        match *self.method {
            Method::POST | Method::PUT => BodyKind::Object,
            _ if self.content_type.contains("json-patch") => BodyKind::JsonPatch,
            _ => BodyKind::MergeLike,
        }
    }

    fn status_write(&self) -> bool {
        self.path.subresource.as_deref() == Some("status")
    }

    fn has_status(&self) -> bool {
        match self.served {
            Some(served) => served.status,
            None => {
                status::builtin_has_status(&self.path.resource.group, &self.path.resource.plural)
            }
        }
    }

    /// The name the write is about (for messages).
    fn name(&self, body: &Value) -> String {
        self.path
            .name
            .clone()
            .or_else(|| {
                body.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }
}

/// The body to send instead of `bytes`, or the refusal to answer.
pub(super) fn prepare(
    pending: &Pending<'_>,
    bytes: bytes::Bytes,
) -> Result<bytes::Bytes, Box<http::Response<ReplyBody>>> {
    if *pending.method == Method::DELETE || bytes.is_empty() {
        return Ok(bytes);
    }
    let Ok(mut body) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(bytes);
    };
    let kind = pending.body_kind();
    if pending.has_status() && (pending.path.subresource.is_none() || pending.status_write()) {
        body = status::shape(
            body,
            kind,
            pending.status_write(),
            *pending.method == Method::POST,
            pending.before,
        );
    }
    if let Some(served) = pending.served {
        check_custom(pending, served, kind, &mut body)?;
    }
    let resource = &pending.path.resource;
    if crd::is_crd_path(&resource.group, &resource.plural)
        && pending.path.subresource.is_none()
        && kind == BodyKind::Object
    {
        let errors = crd::invalid(&body);
        if !errors.is_empty() {
            let errors: Vec<schema::FieldError> = errors
                .into_iter()
                .map(|(field, detail)| schema::FieldError {
                    field,
                    detail,
                    reason: "FieldValueInvalid",
                })
                .collect();
            return Err(refuse(
                &resource.group,
                "CustomResourceDefinition",
                &pending.name(&body),
                &errors,
            ));
        }
    }
    if resource.group == "events.k8s.io"
        && resource.plural == "events"
        && *pending.method == Method::POST
    {
        let errors = events::validate_create(&body, pending.path.namespace.as_deref());
        if !errors.is_empty() {
            return Err(refuse(
                "events.k8s.io",
                "Event",
                &pending.name(&body),
                &errors,
            ));
        }
    }
    Ok(bytes::Bytes::from(body.to_string()))
}

/// Prunes a custom resource write and validates what it results in.
fn check_custom(
    pending: &Pending<'_>,
    served: &Served,
    kind: BodyKind,
    body: &mut Value,
) -> Result<(), Box<http::Response<ReplyBody>>> {
    let Some(schema) = &served.schema else {
        return Ok(());
    };
    let result = match kind {
        BodyKind::Object => {
            schema::prune_object(body, schema);
            body.clone()
        }
        BodyKind::MergeLike => {
            schema::prune_object(body, schema);
            if pending.before.is_none() && !pending.content_type.contains("apply-patch") {
                // Nothing to patch: the backend answers 404.
                return Ok(());
            }
            let mut merged = pending.before.cloned().unwrap_or_else(|| json!({}));
            merge(&mut merged, body);
            merged
        }
        BodyKind::JsonPatch => {
            let Some(before) = pending.before else {
                return Ok(());
            };
            let Ok(ops) = serde_json::from_value::<json_patch::Patch>(body.clone()) else {
                return Ok(());
            };
            let mut patched = before.clone();
            if json_patch::patch(&mut patched, &ops).is_err() {
                return Ok(());
            }
            schema::prune_object(&mut patched, schema);
            patched
        }
    };
    let errors = schema::validate_object(&result, schema);
    if errors.is_empty() {
        return Ok(());
    }
    Err(refuse(
        &served.group,
        &served.kind,
        &pending.name(&result),
        &errors,
    ))
}

fn refuse(
    group: &str,
    kind: &str,
    name: &str,
    errors: &[schema::FieldError],
) -> Box<http::Response<ReplyBody>> {
    let body = schema::invalid_status(group, kind, name, errors);
    Box::new(json_response(StatusCode::UNPROCESSABLE_ENTITY, &body))
}

/// RFC 7386 JSON merge patch.
pub(super) fn merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(map) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The 404 a real server answers for a resource nobody serves.
pub(super) fn not_served(path: &str) -> http::Response<ReplyBody> {
    reply_status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("the server could not find the requested resource ({path})"),
    )
}

/// The content type of a request, lower-case.
pub(super) fn content_type(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patches_merge() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge(&mut target, &json!({"a": {"b": null, "e": 4}, "d": [1]}));
        assert_eq!(target, json!({"a": {"c": 2, "e": 4}, "d": [1]}));
    }
}
