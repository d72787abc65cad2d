//! Raw structs → validated model. Pure: no I/O, no clock (cron is checked from a fixed
//! date). Every problem is recorded with its position and path; validation goes on
//! after a problem so that one run reports as much as possible.
//!
//! This file holds the policy as a whole and the pieces every part uses (scalars,
//! references, templates); `schedule`, `consumer` and `notify` the parts of `spec`
//! named so, and each credential kind validates its own fields in [`super::kinds`].

mod consumer;
mod notify;
mod schedule;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::duration::{DURATION_EXPECTED, DurationBound, parse_duration};
use super::model::*;
use super::raw::*;
use super::shared::SharedValues;
use super::template::{Template, is_identifier};
use super::yaml::{Checked, DeError, Located, Pos, ScalarText};

/// Expected text for a reference.
const REFERENCE_EXPECTED: &str =
    "exactly one of {vault: {path, key?, mount?}} | {env: NAME} | {file: PATH}";

/// Collects problems while validating one document.
#[derive(Default)]
pub(crate) struct Validator {
    pub errors: Vec<DeError>,
    /// The document's KV mount (`spec.vault.mount`, default `secret`): the mount of a
    /// Vault reference or a vault-kv consumer that names none. [`validate_policy`] sets
    /// it before it validates the credential, the consumers and the notify targets.
    kv_mount: String,
}

/// `names` quoted and joined by commas: `` `a`, `b` ``.
pub(in crate::policy) fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub(in crate::policy) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes label name segment: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, ≤ 63.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// A Vault mount or path: segments separated by `/`, none empty, `.` or `..`, no spaces
/// or control characters.
fn is_vault_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub(in crate::policy) fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

impl Validator {
    pub(in crate::policy) fn push(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(DeError::at(pos, path, message));
    }

    pub(in crate::policy) fn at<T>(&mut self, at: &Located<T>, message: impl Into<String>) {
        self.errors.push(at.error(message));
    }

    /// Records that `at` holds `found` (shown escaped) where `expected` was expected.
    pub(in crate::policy) fn found<T>(
        &mut self,
        at: &Located<T>,
        found: &str,
        expected: impl std::fmt::Display,
    ) {
        self.at(
            at,
            format!("found `{}`, expected {expected}", found.escape_debug()),
        );
    }

    /// `s` itself when `ok`; otherwise records that `expected` was expected there.
    pub(in crate::policy) fn accepted(
        &mut self,
        s: &Located<String>,
        ok: bool,
        expected: impl std::fmt::Display,
    ) -> Option<String> {
        if ok {
            return Some(s.value.clone());
        }
        self.found(s, &s.value, expected);
        None
    }

    // ---- scalars -------------------------------------------------------------------

    pub(in crate::policy) fn non_empty(
        &mut self,
        s: &Located<String>,
        expected: &str,
    ) -> Option<String> {
        if s.value.trim().is_empty() {
            self.at(s, format!("found an empty string, expected {expected}"));
            None
        } else if has_control(&s.value) {
            self.at(s, format!("found control characters, expected {expected}"));
            None
        } else {
            Some(s.value.clone())
        }
    }

    /// An optional text field: `default` when it is absent, else checked by
    /// [`Validator::non_empty`].
    pub(in crate::policy) fn non_empty_or(
        &mut self,
        s: Option<&Located<String>>,
        expected: &str,
        default: &str,
    ) -> Option<String> {
        match s {
            Some(s) => self.non_empty(s, expected),
            None => Some(default.to_owned()),
        }
    }

    /// A duration no longer than `bound` (every duration field has one, so that times
    /// computed from policies stay on the calendar).
    pub(in crate::policy) fn duration(
        &mut self,
        d: &Located<ScalarText>,
        bound: DurationBound,
    ) -> Option<Duration> {
        match parse_duration(&d.value.0) {
            Some(v) if v <= bound.max => Some(v),
            Some(_) => {
                let field = d.path.rsplit('.').next().unwrap_or("the duration");
                self.at(
                    d,
                    format!(
                        "found {field} `{}`, expected a duration of at most {}",
                        d.value.0.escape_debug(),
                        bound.text
                    ),
                );
                None
            }
            None => {
                self.found(d, &d.value.0, DURATION_EXPECTED);
                None
            }
        }
    }

    /// An optional field checked by `check`: `Some(None)` when it is absent,
    /// `Some(Some(value))` when it is valid, `None` when it is not (its error recorded).
    pub(in crate::policy) fn optional<R, T>(
        &mut self,
        raw: Option<R>,
        check: impl FnOnce(&mut Self, R) -> Option<T>,
    ) -> Option<Option<T>> {
        match raw {
            None => Some(None),
            Some(r) => check(self, r).map(Some),
        }
    }

    pub(in crate::policy) fn opt_duration(
        &mut self,
        d: Option<&Located<ScalarText>>,
        bound: DurationBound,
    ) -> Option<Duration> {
        d.and_then(|d| self.duration(d, bound))
    }

    pub(in crate::policy) fn vault_path(
        &mut self,
        s: &Located<String>,
        expected: &str,
    ) -> Option<String> {
        self.accepted(
            s,
            is_vault_path(&s.value),
            format_args!("{expected} (segments separated by `/`, no leading or trailing `/`, no empty, `.` or `..` segments)"),
        )
    }

    pub(in crate::policy) fn mount(
        &mut self,
        m: Option<&Located<String>>,
        default: &str,
    ) -> String {
        match m {
            None => default.to_owned(),
            Some(m) => self
                .vault_path(m, "a mount path")
                .unwrap_or_else(|| default.to_owned()),
        }
    }

    /// A KV mount: `m`, or the document's KV mount when `m` is not set.
    pub(in crate::policy) fn kv_mount(&mut self, m: Option<&Located<String>>) -> String {
        let default = self.kv_mount.clone();
        self.mount(m, &default)
    }

    pub(in crate::policy) fn http_url(
        &mut self,
        s: &Located<String>,
        schemes: &[&str],
    ) -> Option<url::Url> {
        // The URL is never echoed: it might carry a password.
        match url::Url::parse(&s.value) {
            Err(e) => {
                self.at(
                    s,
                    format!(
                        "found an invalid URL ({e}), expected an absolute {} URL",
                        schemes.join("/")
                    ),
                );
                None
            }
            Ok(u) if !schemes.contains(&u.scheme()) => {
                self.at(
                    s,
                    format!(
                        "found a URL with scheme `{}`, expected {}",
                        u.scheme(),
                        one_of(schemes)
                    ),
                );
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                self.at(
                    s,
                    "found credentials inside the URL, expected them in a reference (adminFrom/tokenFrom)",
                );
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                self.at(s, "found a URL without a host, expected an absolute URL");
                None
            }
            Ok(u) => Some(u),
        }
    }

    // ---- shared pieces -------------------------------------------------------------

    pub(in crate::policy) fn reference(
        &mut self,
        r: &Checked<Located<RawReference>>,
    ) -> Option<Reference> {
        let r = r.0.as_ref()?;
        let raw = &r.value;
        let given: Vec<&str> = [
            raw.vault.as_ref().map(|_| "vault"),
            raw.env.as_ref().map(|_| "env"),
            raw.file.as_ref().map(|_| "file"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() != 1 {
            let found = if given.is_empty() {
                "an empty reference".to_owned()
            } else {
                format!("{} together", one_of(&given))
            };
            self.at(r, format!("found {found}, expected {REFERENCE_EXPECTED}"));
            return None;
        }
        if let Some(v) = &raw.vault {
            let path = self.vault_path(&v.value.path, "a KV path");
            let key = match &v.value.key {
                Some(k) => Some(self.non_empty(k, "a key name")?),
                None => None,
            };
            let mount = self.kv_mount(v.value.mount.as_ref());
            return Some(Reference::Vault {
                mount,
                path: path?,
                key,
            });
        }
        if let Some(e) = &raw.env {
            if !is_identifier(&e.value) {
                self.found(
                    e,
                    &e.value,
                    "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                );
                return None;
            }
            return Some(Reference::Env(e.value.clone()));
        }
        let f = raw.file.as_ref()?;
        let path = self.non_empty(f, "a file path")?;
        Some(Reference::File(PathBuf::from(path)))
    }

    /// A reference that must name one value (an API token, a signing key: `naming`).
    pub(in crate::policy) fn single_reference(
        &mut self,
        r: &Checked<Located<RawReference>>,
        naming: &str,
    ) -> Option<Reference> {
        let reference = self.reference(r)?;
        let r = r.0.as_ref()?;
        if !reference.is_single_value() {
            let at = r.value.vault.as_ref().map(|v| (v.pos, v.path.clone()));
            let (pos, path) = at.unwrap_or((r.pos, r.path.clone()));
            self.push(
                pos,
                &path,
                format!("found a Vault reference without `key`, expected `key` naming {naming} (without it a reference yields username and password)"),
            );
            return None;
        }
        Some(reference)
    }

    /// Parses a template and checks its variables against `vars` (skipped when empty,
    /// i.e. the credential kind is unknown because it failed to parse).
    pub(in crate::policy) fn template(
        &mut self,
        t: &Located<String>,
        vars: &[&str],
        source: &str,
        require_variable: bool,
    ) -> Option<Template> {
        let template = match Template::parse(&t.value) {
            Ok(template) => template,
            Err(e) => {
                self.at(t, e.to_string());
                return None;
            }
        };
        let mut ok = true;
        if !vars.is_empty() {
            for v in template.variables() {
                if !vars.contains(&v) {
                    self.at(
                        t,
                        format!(
                            "found unknown variable `{v}`, expected one of {} (the keys {source} provides)",
                            one_of(vars)
                        ),
                    );
                    ok = false;
                }
            }
        }
        if require_variable && template.is_literal() {
            // Never echo the value: it may be a password written inline.
            self.at(
                t,
                "found a literal string without any {{ variable }}, expected a template such as \"{{ password }}\" (secrets are never written inline)",
            );
            ok = false;
        }
        ok.then_some(template)
    }
}

/// Validates one parsed document. Returns the policy when it is entirely valid (and
/// nothing was recorded in `v`'s errors by this call or by deserialization).
pub(crate) fn validate_policy(
    raw: &RawPolicy,
    file: &Path,
    v: &mut Validator,
) -> Option<ValidatedPolicy> {
    let metadata = raw.metadata.0.as_ref();
    let name = metadata.and_then(|m| v.policy_name(&m.value.name));
    let labels = metadata.map(|m| v.labels(&m.value)).unwrap_or_default();
    if let (Some(api), Some(m)) = (raw.api_version.0.as_ref(), metadata) {
        v.namespace(api, m);
    }

    let spec = raw.spec.0.as_ref()?;
    let vault = spec.vault.0.as_ref().and_then(|l| {
        let mount = v.mount(l.value.mount.as_ref(), "secret");
        let path = v.vault_path(&l.value.path, "a KV path")?;
        Some(VaultLocation { mount, path })
    });
    v.kv_mount = vault
        .as_ref()
        .map(|l| l.mount.clone())
        .unwrap_or_else(|| "secret".to_owned());

    let raw_credential = spec.credential.0.as_ref();
    let credential = raw_credential.and_then(|c| v.credential(c));
    let kind = raw_credential.map(|c| c.value.kind());

    let schedule: Option<Option<ScheduleSpec>> = match &spec.schedule {
        None => Some(None),
        Some(s) => s.0.as_ref().and_then(|s| v.schedule(s)).map(Some),
    };
    let consumers = v.consumers(spec, kind, credential.as_ref(), vault.as_ref());
    let verify = match &spec.verify {
        None => Some(VerifySpec::default()),
        Some(c) => c.0.as_ref().map(|r| VerifySpec {
            old_rejected: r.old_rejected.unwrap_or(true),
            terminate_sessions: r.terminate_sessions.unwrap_or(false),
        }),
    };
    let on_demand = match &spec.on_demand {
        None => Some(OnDemandSpec::default()),
        Some(c) => c.0.as_ref().and_then(|r| v.on_demand(r)),
    };

    // Every target is validated (collected first) so that one run reports all problems.
    let notify: Option<Vec<NotifyTarget>> = spec
        .notify
        .iter()
        .flatten()
        .map(|n| n.0.as_ref().and_then(|n| v.notify_target(n)))
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    let cascade = v.cascade(spec.cascade.iter().flatten());

    if raw.api_version.0.is_none() || raw.kind.0.is_none() {
        return None;
    }
    Some(ValidatedPolicy {
        name: name?,
        labels: shared_labels(labels),
        file: file.to_path_buf(),
        spec: PolicySpec {
            credential: credential?,
            vault: vault?,
            schedule: schedule?,
            consumers: consumers?,
            verify: verify?,
            on_demand: on_demand?,
            notify: notify?,
            cascade: cascade?,
        },
    })
}

impl Validator {
    /// `metadata.name`.
    fn policy_name(&mut self, n: &Located<String>) -> Option<String> {
        self.accepted(
            n,
            is_dns_label(&n.value),
            "a DNS label: at most 63 characters a-z, 0-9 and `-`, starting and ending with a letter or digit",
        )
    }

    /// `metadata.namespace`: required in a `rotor.dev/v1` resource (a namespaced
    /// object), absent from a `rotor/v1` policy file.
    fn namespace(&mut self, api: &ApiVersion, m: &Located<RawMetadata>) {
        match (api, &m.value.namespace) {
            (ApiVersion::Resource, None) => self.at(
                m,
                "found no `namespace`, expected `metadata.namespace`: a `rotor.dev/v1` RotationPolicy is a namespaced resource",
            ),
            (ApiVersion::Resource, Some(ns)) => {
                self.accepted(ns, is_dns_label(&ns.value), "a namespace name (a DNS label)");
            }
            (ApiVersion::V1, Some(ns)) => self.at(
                ns,
                "found a `namespace` in a `rotor/v1` policy, expected none: only a `rotor.dev/v1` RotationPolicy resource has one",
            ),
            (ApiVersion::V1, None) => {}
        }
    }

    /// `metadata.labels`: the valid ones (each invalid one, and each invalid
    /// `metadata.annotations` key, is reported).
    fn labels(&mut self, metadata: &RawMetadata) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        for (key, value) in metadata.labels.iter().flat_map(|l| &l.value) {
            if !is_label_key(key) {
                self.at(
                    value,
                    format!(
                        "found label key `{}`, expected a Kubernetes label key",
                        key.escape_debug()
                    ),
                );
            } else if !(value.value.is_empty() || is_label_name(&value.value)) {
                self.found(
                    value,
                    &value.value,
                    "a label value: at most 63 characters [A-Za-z0-9_.-], starting and ending alphanumeric",
                );
            } else {
                labels.insert(key.clone(), value.value.clone());
            }
        }
        for (key, value) in metadata.annotations.iter().flat_map(|a| &a.value) {
            if !is_label_key(key) {
                self.at(
                    value,
                    format!(
                        "found annotation key `{}`, expected a Kubernetes annotation key",
                        key.escape_debug()
                    ),
                );
            }
        }
        labels
    }

    /// `spec.onDemand`.
    fn on_demand(&mut self, r: &RawOnDemand) -> Option<OnDemandSpec> {
        let approval = match &r.approval {
            None => Some(None),
            Some(a) => a.0.as_ref().and_then(|a| self.approval(a)).map(Some),
        };
        Some(OnDemandSpec {
            require_reason: r.require_reason.unwrap_or(true),
            require_ticket: r.require_ticket.unwrap_or(false),
            approval: approval?,
        })
    }

    /// `spec.cascade`: names of other policies, each once.
    fn cascade<'a>(
        &mut self,
        names: impl Iterator<Item = &'a Located<String>>,
    ) -> Option<Vec<String>> {
        let mut ok = true;
        let mut cascade = Vec::new();
        for c in names {
            if !is_dns_label(&c.value) {
                self.found(c, &c.value, "the name of another policy (a DNS label)");
                ok = false;
            } else if cascade.contains(&c.value) {
                self.at(
                    c,
                    format!("found `{}` twice, expected each dependent once", c.value),
                );
                ok = false;
            } else {
                cascade.push(c.value.clone());
            }
        }
        ok.then_some(cascade)
    }
}

/// Label sets of loaded policies, shared by every policy that carries the same set.
static LABELS: SharedValues<LabelSet> = SharedValues::new();

/// `metadata.labels`.
type LabelSet = BTreeMap<String, String>;

/// `labels`, or the equal set already loaded.
fn shared_labels(labels: LabelSet) -> Arc<LabelSet> {
    let Ok(shared) = LABELS.share(
        labels,
        |loaded, labels| loaded == labels,
        Ok::<_, Infallible>,
    );
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_rules() {
        assert!(is_dns_label("payments-db"));
        assert!(is_dns_label("a"));
        assert!(!is_dns_label("Payments"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("a-"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_label(&"a".repeat(63)));
        assert!(is_dns_subdomain("api.payments"));
        assert!(!is_dns_subdomain("api..payments"));
    }

    #[test]
    fn vault_paths() {
        assert!(is_vault_path("apps/payments/db"));
        assert!(!is_vault_path("/apps"));
        assert!(!is_vault_path("apps/"));
        assert!(!is_vault_path("apps//db"));
        assert!(!is_vault_path("apps/../db"));
        assert!(!is_vault_path(""));
    }
}
