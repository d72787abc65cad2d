//! `spec.consumers`: where the new credential is pushed, validated against the keys
//! the credential kind provides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Validator, has_control, is_dns_label, is_dns_subdomain, one_of};
use crate::policy::kinds::{CredentialKind, CredentialSpec};
use crate::policy::model::*;
use crate::policy::raw::*;
use crate::policy::template::Template;
use crate::policy::yaml::{Checked, Located, ScalarText};
use crate::policy::{
    ConsumerFacts, ConsumerSpec, FileConsumer, GithubConsumer, GithubTarget, GitlabConsumer,
    GitlabTarget, GitlabVariableType, KubernetesConsumer, VaultKvConsumer, WorkloadKind,
    WorkloadRef,
};

/// Characters GitLab can mask when `raw` is false.
const GITLAB_MASKABLE: &str = "_+=/@:.~-";

/// What a consumer's validation needs from the rest of the policy.
struct ConsumerContext<'a> {
    /// The credential's output keys: the variables templates may use (empty when the
    /// credential's kind is unknown, and then not checked).
    vars: &'a [&'a str],
    /// The credential's kind name, for messages (empty when unknown).
    kind: &'a str,
    credential: Option<&'a CredentialSpec>,
    /// `spec.vault`, which no consumer may write.
    vault: Option<&'a VaultLocation>,
}

impl Validator {
    /// `spec.consumers`: `None` when one of them is invalid, or two write to the same
    /// place.
    pub(super) fn consumers(
        &mut self,
        spec: &RawSpec,
        kind: Option<CredentialKind>,
        credential: Option<&CredentialSpec>,
        vault: Option<&VaultLocation>,
    ) -> Option<Vec<ConsumerSpec>> {
        let cx = ConsumerContext {
            vars: kind.map_or(&[], CredentialKind::output_keys),
            kind: kind.map_or("", CredentialKind::as_str),
            credential,
            vault,
        };
        // Exactly as many as written: an empty `Vec` grows to room for four, which
        // thousands of loaded policies would keep.
        let mut consumers = Vec::with_capacity(spec.consumers.as_ref().map_or(0, Vec::len));
        let mut ok = true;
        let mut targets: Vec<(String, String)> = Vec::new();
        for c in spec.consumers.iter().flatten() {
            let Some(c) = c.0.as_ref() else {
                ok = false;
                continue;
            };
            let Some(consumer) = self.consumer(c, &cx) else {
                ok = false;
                continue;
            };
            let target = consumer.target_id();
            if let Some((_, first)) = targets.iter().find(|(t, _)| *t == target) {
                self.at(
                    c,
                    format!("found the same target as {first} ({}), expected each consumer to write somewhere else", consumer.describe()),
                );
                ok = false;
            }
            targets.push((target, c.path.clone()));
            consumers.push(consumer);
        }
        ok.then_some(consumers)
    }

    fn consumer(
        &mut self,
        c: &Located<RawConsumer>,
        cx: &ConsumerContext<'_>,
    ) -> Option<ConsumerSpec> {
        Some(match &c.value {
            RawConsumer::Kubernetes(r) => ConsumerSpec::Kubernetes(self.kubernetes(r, cx)?),
            RawConsumer::Gitlab(r) => ConsumerSpec::Gitlab(self.gitlab(c, r, cx)?),
            RawConsumer::Github(r) => ConsumerSpec::Github(self.github(c, r, cx)?),
            RawConsumer::VaultKv(r) => ConsumerSpec::VaultKv(self.vault_kv(r, cx)?),
            RawConsumer::File(r) => ConsumerSpec::File(self.file(r, cx)?),
        })
    }

    fn kubernetes(
        &mut self,
        r: &RawKubernetes,
        cx: &ConsumerContext<'_>,
    ) -> Option<KubernetesConsumer> {
        let namespace = self.dns(&r.namespace, true, "a namespace name (RFC 1123 label)");
        let secret = self.dns(&r.secret, false, "a Secret name (RFC 1123 subdomain)");
        let data = self.data_map(&r.data, cx.vars, cx.kind, true);
        let secret_type = match &r.secret_type {
            None => None,
            Some(t) => {
                const TYPES: &[&str] = &["Opaque", "kubernetes.io/tls", "kubernetes.io/basic-auth"];
                if !TYPES.contains(&t.value.as_str()) {
                    self.at(
                        t,
                        format!(
                            "found `{}`, expected one of {}",
                            t.value.escape_debug(),
                            one_of(TYPES)
                        ),
                    );
                    None
                } else {
                    let keys: Vec<&str> = r.data.value.keys().map(String::as_str).collect();
                    let missing: Vec<&str> = match t.value.as_str() {
                        "kubernetes.io/tls" => ["tls.crt", "tls.key"]
                            .into_iter()
                            .filter(|k| !keys.contains(k))
                            .collect(),
                        "kubernetes.io/basic-auth"
                            if !keys.contains(&"username") && !keys.contains(&"password") =>
                        {
                            vec!["username or password"]
                        }
                        _ => vec![],
                    };
                    if !missing.is_empty() {
                        self.at(
                            &r.data,
                            format!(
                                "found no {} key for a {} Secret, expected it in data",
                                missing.join(" and "),
                                t.value
                            ),
                        );
                    }
                    Some(t.value.clone())
                }
            }
        };
        let mut restart = Vec::new();
        for w in r.restart.iter().flatten() {
            match parse_workload(&w.value) {
                Some(wr) => restart.push(wr),
                None => self.found(
                    w,
                    &w.value,
                    "deployment/NAME, statefulset/NAME or daemonset/NAME with NAME an RFC 1123 subdomain",
                ),
            }
        }
        Some(KubernetesConsumer {
            namespace: namespace?,
            secret: secret?,
            data: data?,
            secret_type,
            restart,
            force: r.force.unwrap_or(false),
        })
    }

    fn gitlab(
        &mut self,
        c: &Located<RawConsumer>,
        r: &RawGitlab,
        cx: &ConsumerContext<'_>,
    ) -> Option<GitlabConsumer> {
        let (url, token_from) = self.api(r.url.as_ref(), "https://gitlab.com", &r.token_from);
        let target = match (&r.project, &r.group) {
            (Some(p), None) => self.gitlab_path(p, true).map(GitlabTarget::Project),
            (None, Some(g)) => self.gitlab_path(g, false).map(GitlabTarget::Group),
            (Some(_), Some(_)) => {
                self.at(c, "found both `project` and `group`, expected exactly one");
                None
            }
            (None, None) => {
                self.at(
                    c,
                    "found neither `project` nor `group`, expected exactly one",
                );
                None
            }
        };
        let k = &r.key.value;
        let key = self.accepted(
            &r.key,
            (1..=255).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "a variable key of 1-255 characters [A-Za-z0-9_]",
        );
        let value = self.template(&r.value, cx.vars, cx.kind, true);
        let raw = r.raw.as_ref().is_none_or(|l| l.value);
        let masked = r.masked.as_ref().is_some_and(|l| l.value);
        if let (Some(m), Some(v), Some(cred)) = (&r.masked, &value, cx.credential)
            && m.value
            && let Some(problem) = gitlab_mask_problem(v, cred, raw)
        {
            self.at(m, problem);
        }
        let environment_scope = self.non_empty_or(
            r.environment_scope.as_ref(),
            "an environment scope such as production or *",
            "*",
        );
        Some(GitlabConsumer {
            url: url?,
            token_from: token_from?,
            target: target?,
            key: key?,
            value: value?,
            masked,
            protected: r.protected.unwrap_or(false),
            raw,
            environment_scope: environment_scope?,
            variable_type: r.variable_type.unwrap_or(GitlabVariableType::EnvVar),
        })
    }

    fn github(
        &mut self,
        c: &Located<RawConsumer>,
        r: &RawGithub,
        cx: &ConsumerContext<'_>,
    ) -> Option<GithubConsumer> {
        let (url, token_from) = self.api(r.url.as_ref(), "https://api.github.com", &r.token_from);
        let target = self.github_target(c, r);
        let name = self.github_secret_name(&r.name);
        let value = self.template(&r.value, cx.vars, cx.kind, true);
        Some(GithubConsumer {
            url: url?,
            token_from: token_from?,
            target: target?,
            name: name?,
            value: value?,
        })
    }

    fn vault_kv(&mut self, r: &RawVaultKv, cx: &ConsumerContext<'_>) -> Option<VaultKvConsumer> {
        let kv_mount = self.kv_mount(r.mount.as_ref());
        let path = self.vault_path(&r.path, "a KV path");
        if let (Some(p), Some(v)) = (&path, cx.vault)
            && *p == v.path
            && kv_mount == v.mount
        {
            self.at(
                &r.path,
                "found the canonical spec.vault location, expected a different path for the extra copy",
            );
        }
        let data = self.data_map(&r.data, cx.vars, cx.kind, false);
        let namespace = r.namespace.as_ref().and_then(|n| self.vault_namespace(n));
        Some(VaultKvConsumer {
            namespace,
            mount: kv_mount,
            path: path?,
            data: data?,
        })
    }

    fn file(&mut self, r: &RawFile, cx: &ConsumerContext<'_>) -> Option<FileConsumer> {
        let path = if Path::new(&r.path.value).is_absolute() {
            Some(PathBuf::from(&r.path.value))
        } else {
            self.found(&r.path, &r.path.value, "an absolute path");
            None
        };
        let content = self.template(&r.content, cx.vars, cx.kind, true);
        let mode = match &r.mode {
            None => Some(0o600),
            Some(m) => self.file_mode(m),
        };
        let owner = r.owner.as_ref().and_then(|o| self.account_name(o, "owner"));
        let group = r.group.as_ref().and_then(|g| self.account_name(g, "group"));
        Some(FileConsumer {
            path: path?,
            content: content?,
            mode: mode?,
            owner,
            group,
        })
    }

    /// The API a hosted consumer talks to: its base URL (`url`, else `default`) and
    /// its token (`tokenFrom`).
    fn api(
        &mut self,
        url: Option<&Located<String>>,
        default: &str,
        token_from: &Checked<Located<RawReference>>,
    ) -> (Option<url::Url>, Option<Reference>) {
        let url = match url {
            Some(u) => self.http_url(u, &["https", "http"]),
            None => url::Url::parse(default).ok(),
        };
        (url, self.single_reference(token_from, "the token"))
    }

    fn dns(&mut self, s: &Located<String>, label: bool, expected: &str) -> Option<String> {
        let ok = if label {
            is_dns_label(&s.value)
        } else {
            is_dns_subdomain(&s.value)
        };
        self.accepted(s, ok, expected)
    }

    /// `data: {KEY: template}` of kubernetes and vault-kv consumers.
    fn data_map(
        &mut self,
        d: &Located<BTreeMap<String, Located<String>>>,
        vars: &[&str],
        kind: &str,
        k8s_keys: bool,
    ) -> Option<BTreeMap<String, Template>> {
        if d.value.is_empty() {
            self.at(d, "found no keys, expected at least one KEY: template");
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in &d.value {
            let key_ok = if k8s_keys {
                !key.is_empty()
                    && key.len() <= 253
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            } else {
                !key.is_empty() && !has_control(key)
            };
            if !key_ok {
                self.at(
                    value,
                    format!(
                        "found key `{}`, expected {}",
                        key.escape_debug(),
                        if k8s_keys {
                            "a Secret key [-._a-zA-Z0-9]+"
                        } else {
                            "a non-empty key"
                        }
                    ),
                );
                ok = false;
                continue;
            }
            match self.template(value, vars, kind, false) {
                Some(t) => {
                    out.insert(key.clone(), t);
                }
                None => ok = false,
            }
        }
        if ok && out.values().all(Template::is_literal) {
            self.at(
                d,
                "found no {{ variable }} in any value, expected at least one template such as \"{{ password }}\"",
            );
            return None;
        }
        ok.then_some(out)
    }

    fn gitlab_path(&mut self, p: &Located<ScalarText>, project: bool) -> Option<String> {
        let v = &p.value.0;
        let numeric = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        let segments: Vec<&str> = v.split('/').collect();
        let path_ok = segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }) && (!project || segments.len() >= 2);
        if numeric || path_ok {
            Some(v.clone())
        } else {
            let what = if project {
                "a project path such as acme/payments or a numeric id"
            } else {
                "a group path such as acme or acme/team, or a numeric id"
            };
            self.found(p, v, what);
            None
        }
    }

    fn github_target(&mut self, c: &Located<RawConsumer>, r: &RawGithub) -> Option<GithubTarget> {
        match (&r.repository, &r.organization) {
            (Some(_), Some(_)) => {
                self.at(
                    c,
                    "found both `repository` and `organization`, expected exactly one",
                );
                None
            }
            (None, None) => {
                self.at(
                    c,
                    "found neither `repository` nor `organization`, expected exactly one",
                );
                None
            }
            (Some(repo), None) => {
                if let Some(v) = &r.visibility {
                    self.at(v, "found visibility on a repository secret, expected it only with organization");
                }
                let parts = repo.value.split_once('/').filter(|(o, n)| {
                    !o.is_empty()
                        && o.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                });
                let Some((owner, name)) = parts else {
                    self.found(repo, &repo.value, "owner/name");
                    return None;
                };
                let environment = match &r.environment {
                    Some(e) => Some(self.non_empty(e, "an environment name")?),
                    None => None,
                };
                Some(GithubTarget::Repository {
                    owner: owner.to_owned(),
                    name: name.to_owned(),
                    environment,
                })
            }
            (None, Some(org)) => {
                if let Some(e) = &r.environment {
                    self.at(e, "found environment on an organization secret, expected it only with repository");
                }
                let org_ok = !org.value.is_empty()
                    && org
                        .value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !org_ok {
                    self.found(org, &org.value, "an organization login");
                }
                let Some(visibility) = &r.visibility else {
                    self.at(
                        org,
                        "found organization without visibility, expected visibility: all | private | selected",
                    );
                    return None;
                };
                let visibility = visibility.value;
                org_ok.then(|| GithubTarget::Organization {
                    name: org.value.clone(),
                    visibility,
                })
            }
        }
    }

    fn github_secret_name(&mut self, n: &Located<String>) -> Option<String> {
        let v = &n.value;
        let problem = if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            Some("only [A-Za-z0-9_]")
        } else if v.as_bytes()[0].is_ascii_digit() {
            Some("a name that does not start with a digit")
        } else if v.to_ascii_uppercase().starts_with("GITHUB_") {
            Some("a name without the reserved GITHUB_ prefix")
        } else {
            None
        };
        match problem {
            Some(p) => {
                self.found(n, v, p);
                None
            }
            None => Some(v.clone()),
        }
    }

    /// A Vault namespace: path segments of `[A-Za-z0-9_.-]`, no leading/trailing `/`.
    fn vault_namespace(&mut self, n: &Located<String>) -> Option<String> {
        let ok = !n.value.is_empty()
            && n.value.split('/').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            });
        self.accepted(n, ok, "a Vault namespace such as team-a or team-a/child")
    }

    /// A user or group: a POSIX name or a numeric id.
    fn account_name(&mut self, a: &Located<ScalarText>, what: &str) -> Option<String> {
        let text = a.value.0.as_str();
        let numeric =
            !text.is_empty() && text.len() <= 10 && text.chars().all(|c| c.is_ascii_digit());
        let name = text.len() <= 32
            && text.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        if (numeric && text.parse::<u32>().is_ok()) || name {
            Some(text.to_owned())
        } else {
            self.found(
                a,
                text,
                format_args!("a {what} name (such as app or _app-1) or a numeric id"),
            );
            None
        }
    }

    fn file_mode(&mut self, m: &Located<ScalarText>) -> Option<u32> {
        let text = m.value.0.as_str();
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let mode = (!digits.is_empty() && digits.len() <= 5)
            .then(|| u32::from_str_radix(digits, 8).ok())
            .flatten()
            .filter(|m| *m <= 0o7777);
        match mode {
            None => {
                self.found(m, text, "an octal mode such as 0600");
                None
            }
            Some(mode) if mode & 0o007 != 0 => {
                self.at(
                    m,
                    format!("found mode {mode:04o}, which gives other users access to the secret, expected no permissions for others (such as 0600 or 0640)"),
                );
                None
            }
            Some(mode) => Some(mode),
        }
    }
}

/// `deployment/NAME` etc.
pub(crate) fn parse_workload(s: &str) -> Option<WorkloadRef> {
    let (kind, name) = s.split_once('/')?;
    let kind = match kind {
        "deployment" => WorkloadKind::Deployment,
        "statefulset" => WorkloadKind::StatefulSet,
        "daemonset" => WorkloadKind::DaemonSet,
        _ => return None,
    };
    is_dns_subdomain(name).then(|| WorkloadRef {
        kind,
        name: name.to_owned(),
    })
}

/// What is statically known about the value of a template variable.
struct Shape {
    chars: Option<Vec<char>>,
    min_len: Option<usize>,
    multiline: bool,
    source: String,
}

fn shape_of(var: &str, cred: &CredentialSpec) -> Shape {
    let unknown = |source: &str| Shape {
        chars: None,
        min_len: None,
        multiline: false,
        source: source.to_owned(),
    };
    match var {
        // What the generator can emit: its alphabet minus `exclude`.
        "password" => match cred.password_generator() {
            Some(g) => Shape {
                chars: Some(g.chars()),
                min_len: Some(g.length),
                multiline: false,
                source: if g.exclude.is_empty() {
                    format!("password alphabet {}", g.alphabet.name())
                } else {
                    format!("password alphabet {} after exclude", g.alphabet.name())
                },
            },
            None => unknown("password"),
        },
        "username" => match cred.generated() {
            Some(g) => Shape {
                chars: Some(g.username.chars().collect()),
                min_len: Some(g.username.chars().count()),
                multiline: false,
                source: format!("username `{}`", g.username),
            },
            None => unknown("username"),
        },
        other => match cred.credential_kind().shape(other) {
            Some(known) => Shape {
                chars: known.chars.map(|c| c.chars().collect()),
                min_len: known.min_len,
                multiline: known.multiline,
                source: other.to_owned(),
            },
            None => unknown(other),
        },
    }
}

/// Why GitLab could not mask what `value` renders to, if it could not. Masked values
/// are at least 8 characters on one line; with `raw: false` only `[a-zA-Z0-9_+=/@:.~-]`.
fn gitlab_mask_problem(value: &Template, cred: &CredentialSpec, raw: bool) -> Option<String> {
    let maskable = |c: char| c.is_ascii_alphanumeric() || GITLAB_MASKABLE.contains(c);
    let literal: String = value.literals().collect();
    let shapes: Vec<Shape> = value.variables().map(|v| shape_of(v, cred)).collect();
    if literal.contains('\n') {
        return Some(
            "found masked: true for a value with a line break, expected a single-line value (GitLab cannot mask it)".into(),
        );
    }
    if let Some(s) = shapes.iter().find(|s| s.multiline) {
        return Some(format!(
            "found masked: true for `{}`, which spans several lines, expected a single-line value (GitLab cannot mask it)",
            s.source
        ));
    }
    if shapes.iter().all(|s| s.min_len.is_some()) {
        let len = literal.chars().count() + shapes.iter().filter_map(|s| s.min_len).sum::<usize>();
        if len < 8 {
            return Some(format!(
                "found masked: true for a value of {len} characters, expected at least 8 (GitLab cannot mask shorter values)"
            ));
        }
    }
    if !raw {
        if let Some(c) = literal.chars().find(|c| !maskable(*c)) {
            return Some(format!(
                "found masked: true with raw: false and literal character `{c}`, expected only [a-zA-Z0-9_+=/@:.~-] (GitLab cannot mask it)"
            ));
        }
        for s in &shapes {
            if let Some(c) = s.chars.iter().flatten().find(|c| !maskable(**c)) {
                return Some(format!(
                    "found masked: true with raw: false and {} containing `{c}`, expected only [a-zA-Z0-9_+=/@:.~-] (GitLab cannot mask it)",
                    s.source
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads() {
        assert_eq!(
            parse_workload("deployment/payments-api").map(|w| w.to_string()),
            Some("deployment/payments-api".into())
        );
        assert!(parse_workload("statefulset/db").is_some());
        assert!(parse_workload("daemonset/agent").is_some());
        assert!(parse_workload("deploy/x").is_none());
        assert!(parse_workload("deployment/X_y").is_none());
        assert!(parse_workload("deployment").is_none());
    }
}
