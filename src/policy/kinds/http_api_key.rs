//! `http-api-key`: an API key behind templated HTTP requests (`create`, `revoke`,
//! `probe`). A new key is created next to the old one, which is revoked after `grace`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::common::raw_credential;
use super::{CredentialKind, KindFacts, KindSpec};
use crate::policy::model::{Reference, Strategy};
use crate::policy::raw::{RawReference, raw_mapping};
use crate::policy::template::Template;
use crate::policy::validate::Validator;
use crate::policy::yaml::{Checked, Located};
use schemars::JsonSchema;

/// What `http-api-key` is, whatever a policy sets.
pub(super) const FACTS: KindFacts = KindFacts {
    name: "http-api-key",
    output_keys: &["key", "id"],
    secret_keys: &["key"],
    strategies: &[Strategy::Overlap],
    required_current_keys: &["key", "id"],
    shapes: &[],
};

raw_credential! {
    "an http-api-key credential",
    RawHttpApiKey {
        pub admin_from: Checked<Located<RawReference>>,
        pub create: Located<RawHttpCreate>,
        pub revoke: Located<RawHttpRequest>,
        pub probe: Located<RawHttpRequest>,
    }
}

raw_mapping! {
    "a request mapping {method, url, headers?, body?, keyField, idField}",
    pub(crate) struct RawHttpCreate {
        pub method: HttpMethod,
        pub url: Located<String>,
        pub headers: Option<BTreeMap<String, Located<String>>>,
        pub body: Option<Located<String>>,
        pub key_field: Located<String>,
        pub id_field: Located<String>,
    }
}

raw_mapping! {
    "a request mapping {method, url, headers?}",
    pub(crate) struct RawHttpRequest {
        pub method: HttpMethod,
        pub url: Located<String>,
        pub headers: Option<BTreeMap<String, Located<String>>>,
    }
}

/// `http-api-key`: an API key behind templated HTTP requests.
///
/// Template variables: the admin secret is `{{ admin }}` when `adminFrom` names one value
/// (env, file, or Vault with `key`), or `{{ username }}`/`{{ password }}` for a Vault
/// reference without `key`. `create` sees the admin variables; `revoke` sees them plus
/// `{{ id }}` and `{{ key }}`; `probe` sees `{{ key }}` and `{{ id }}`.
#[derive(Debug, Clone)]
pub struct HttpApiKeyCredential {
    /// The admin secret used by `create` and `revoke`.
    pub admin_from: Reference,
    /// Request that creates a new key.
    pub create: HttpCreateRequest,
    /// Request that revokes a key by id.
    pub revoke: HttpRequestSpec,
    /// Request that proves a key works (2xx) or is dead (401/403).
    pub probe: HttpRequestSpec,
    /// Always [`Strategy::Overlap`].
    pub strategy: Strategy,
    /// How long the old key stays valid (default 0).
    /// At most 90d ([`crate::policy::GRACE_BOUND`], checked at validation).
    pub grace: Duration,
}

/// `http-api-key` `create`.
#[derive(Debug, Clone)]
pub struct HttpCreateRequest {
    /// HTTP method.
    pub method: HttpMethod,
    /// URL template.
    pub url: Template,
    /// Header templates.
    pub headers: BTreeMap<String, Template>,
    /// Body template.
    pub body: Option<Template>,
    /// Response field holding the new key: a top-level name or a JSON pointer (`/a/b`).
    pub key_field: String,
    /// Response field holding the new key's id: a top-level name or a JSON pointer.
    pub id_field: String,
}

/// `http-api-key` `revoke` and `probe`.
#[derive(Debug, Clone)]
pub struct HttpRequestSpec {
    /// HTTP method.
    pub method: HttpMethod,
    /// URL template.
    pub url: Template,
    /// Header templates (for `revoke`, default: `create.headers`).
    pub headers: BTreeMap<String, Template>,
}

/// An HTTP method (written upper case in YAML).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, JsonSchema, strum::IntoStaticStr,
)]
#[serde(rename_all = "UPPERCASE")]
#[strum(serialize_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl HttpMethod {
    /// The method name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

impl KindSpec for HttpApiKeyCredential {
    fn target(&self) -> String {
        format!(
            "http api key created by {} {}",
            self.create.method.as_str(),
            self.create.url.source()
        )
    }
}

/// Validates `spec.credential` of `type: http-api-key`.
pub(super) fn validate(v: &mut Validator, r: &RawHttpApiKey) -> Option<HttpApiKeyCredential> {
    let admin_from = v.reference(&r.admin_from);
    let admin_vars: &[&str] = match &admin_from {
        Some(a) if !a.is_single_value() => &["username", "password"],
        _ => &["admin"],
    };
    let create_vars = admin_vars.to_vec();
    let mut revoke_vars = admin_vars.to_vec();
    revoke_vars.extend(["id", "key"]);
    let probe_vars = ["key", "id"];
    let cr = &r.create.value;
    let create_url = url_template(v, &cr.url, &create_vars);
    let create_headers = headers(v, cr.headers.as_ref(), &create_vars);
    let body = cr
        .body
        .as_ref()
        .and_then(|b| v.template(b, &create_vars, "credential", false));
    let key_field = v.non_empty(&cr.key_field, "a response field name or JSON pointer");
    let id_field = v.non_empty(&cr.id_field, "a response field name or JSON pointer");
    let revoke = request(
        v,
        &r.revoke,
        &revoke_vars,
        Some(&create_headers),
        &["id", "key"],
        "found a revoke request that names no key, expected {{ id }} (or {{ key }}) in its url or headers",
    );
    let probe = request(
        v,
        &r.probe,
        &probe_vars,
        None,
        &["key"],
        "found a probe that never sends the key, expected {{ key }} in its url or headers",
    );
    let (strategy, grace) = v.strategy_and_grace(CredentialKind::HttpApiKey, r);
    Some(HttpApiKeyCredential {
        admin_from: admin_from?,
        create: HttpCreateRequest {
            method: cr.method,
            url: create_url?,
            headers: create_headers?,
            body,
            key_field: key_field?,
            id_field: id_field?,
        },
        revoke: revoke?,
        probe: probe?,
        strategy,
        grace,
    })
}

/// `revoke` or `probe`: its URL and headers (`default_headers` when it sets none) may
/// use `vars`, and must send one of `must_send`; `complaint` says it does not.
fn request(
    v: &mut Validator,
    raw: &Located<RawHttpRequest>,
    vars: &[&str],
    default_headers: Option<&Option<BTreeMap<String, Template>>>,
    must_send: &[&str],
    complaint: &str,
) -> Option<HttpRequestSpec> {
    let r = &raw.value;
    let url = url_template(v, &r.url, vars);
    let headers = match (r.headers.as_ref(), default_headers) {
        (None, Some(default)) => default.clone(),
        (given, _) => headers(v, given, vars),
    };
    if !sends(&url, &headers, must_send) {
        v.at(raw, complaint);
    }
    Some(HttpRequestSpec {
        method: r.method,
        url: url?,
        headers: headers?,
    })
}

/// Whether a request uses one of `vars` in its URL or headers; true when either failed
/// to validate (its own error says why).
fn sends(
    url: &Option<Template>,
    headers: &Option<BTreeMap<String, Template>>,
    vars: &[&str],
) -> bool {
    let (Some(u), Some(h)) = (url, headers) else {
        return true;
    };
    let mut uses = u.variables().chain(h.values().flat_map(|t| t.variables()));
    uses.any(|used| vars.contains(&used))
}

fn url_template(v: &mut Validator, u: &Located<String>, vars: &[&str]) -> Option<Template> {
    let t = v.template(u, vars, "credential", false)?;
    if !(t.source().starts_with("https://") || t.source().starts_with("http://")) {
        v.at(
            u,
            "found a URL that does not start with http:// or https://, expected an absolute URL",
        );
        return None;
    }
    Some(t)
}

fn headers(
    v: &mut Validator,
    h: Option<&BTreeMap<String, Located<String>>>,
    vars: &[&str],
) -> Option<BTreeMap<String, Template>> {
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, value) in h.into_iter().flatten() {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            v.at(
                value,
                format!(
                    "found header name `{}`, expected an HTTP header name",
                    name.escape_debug()
                ),
            );
            ok = false;
            continue;
        }
        match v.template(value, vars, "credential", false) {
            Some(t) => {
                out.insert(name.clone(), t);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}
