//! `spec.consumers[]`: what each consumer type is in a policy (its validated settings)
//! and what those settings say about themselves without touching the system they
//! write ([`ConsumerFacts`]: type name, description, templates, target identity).
//! Each type implements the trait next to its definition; [`ConsumerSpec`] asks the
//! type in use through one exhaustive match ([`each_consumer_kind!`]). What a consumer
//! does on its real system lives in `crate::consumers`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use strum::IntoStaticStr;

use super::model::Reference;
use super::template::Template;
use schemars::JsonSchema;

/// What a consumer type's validated settings say about themselves, without any I/O.
/// [`ConsumerSpec`]'s implementation asks the type in use; `crate::consumers::Consumer`
/// builds on it for what a consumer does on its real system.
pub trait ConsumerFacts {
    /// The policy's type name (`kubernetes`, `gitlab`, `github`, `vault-kv`, `file`),
    /// one of [`ConsumerSpec::KINDS`].
    fn kind(&self) -> &'static str;

    /// Human description for `rotor plan`, validation messages, logs and the journal's
    /// consumer records (never a secret). Settings that do not change where the value
    /// goes (restarts, mode, scope, visibility) may be part of it, so two descriptions
    /// can differ for one place: compare [`ConsumerFacts::target_id`] instead.
    fn describe(&self) -> String;

    /// The templates this consumer renders, with their field names (`data.KEY`,
    /// `value`, `content`), for validation.
    fn templates(&self) -> Vec<(String, &Template)>;

    /// A stable, secret-free identity of the place this consumer writes (e.g.
    /// `kubernetes:NS/SECRET`, `file:PATH`): equal for two consumers exactly when they
    /// would overwrite each other, whatever else their settings say. Two consumers of
    /// one policy may not share one.
    fn target_id(&self) -> String;
}

/// `$body` with `$c` bound to the settings of whichever consumer type the
/// [`ConsumerSpec`] `$spec` holds: the one exhaustive match every per-type dispatch
/// (here and in `crate::consumers`) goes through.
macro_rules! each_consumer_kind {
    ($spec:expr, $c:ident => $body:expr) => {
        match $spec {
            $crate::policy::ConsumerSpec::Kubernetes($c) => $body,
            $crate::policy::ConsumerSpec::Gitlab($c) => $body,
            $crate::policy::ConsumerSpec::Github($c) => $body,
            $crate::policy::ConsumerSpec::VaultKv($c) => $body,
            $crate::policy::ConsumerSpec::File($c) => $body,
        }
    };
}
pub(crate) use each_consumer_kind;

/// `spec.consumers[]`: the closed set of consumer kinds.
#[derive(Debug, Clone)]
pub enum ConsumerSpec {
    /// `kubernetes`: a Secret, optionally rolling workloads.
    Kubernetes(KubernetesConsumer),
    /// `gitlab`: a project or group CI/CD variable.
    Gitlab(GitlabConsumer),
    /// `github`: a repository, environment or organisation Actions secret.
    Github(GithubConsumer),
    /// `vault-kv`: an extra KV v2 copy.
    VaultKv(VaultKvConsumer),
    /// `file`: a file on the agent's host.
    File(FileConsumer),
}

impl ConsumerSpec {
    /// Every kind's YAML type name.
    pub const KINDS: &'static [&'static str] =
        &["kubernetes", "gitlab", "github", "vault-kv", "file"];
}

impl ConsumerFacts for ConsumerSpec {
    fn kind(&self) -> &'static str {
        each_consumer_kind!(self, c => c.kind())
    }

    fn describe(&self) -> String {
        each_consumer_kind!(self, c => c.describe())
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        each_consumer_kind!(self, c => c.templates())
    }

    fn target_id(&self) -> String {
        each_consumer_kind!(self, c => c.target_id())
    }
}

/// The templates of a `data` map, named `data.KEY`.
fn data_templates(data: &BTreeMap<String, Template>) -> Vec<(String, &Template)> {
    data.iter().map(|(k, t)| (format!("data.{k}"), t)).collect()
}

/// `kubernetes` consumer.
#[derive(Debug, Clone)]
pub struct KubernetesConsumer {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Secret name.
    pub secret: String,
    /// Secret keys and their templates.
    pub data: BTreeMap<String, Template>,
    /// `Opaque` | `kubernetes.io/tls` | `kubernetes.io/basic-auth` (absent: `Opaque`).
    pub secret_type: Option<String>,
    /// Workloads rolled (only if the data changed).
    pub restart: Vec<WorkloadRef>,
    /// Take over a Secret that rotor did not create (default false).
    pub force: bool,
}

impl ConsumerFacts for KubernetesConsumer {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn describe(&self) -> String {
        let mut s = format!("kubernetes secret {}/{}", self.namespace, self.secret);
        if !self.restart.is_empty() {
            let names: Vec<String> = self.restart.iter().map(ToString::to_string).collect();
            s.push_str(&format!(" (restart {})", names.join(", ")));
        }
        s
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        data_templates(&self.data)
    }

    fn target_id(&self) -> String {
        format!("kubernetes:{}/{}", self.namespace, self.secret)
    }
}

/// A workload to restart, written `deployment/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    /// Workload kind.
    pub kind: WorkloadKind,
    /// Workload name (DNS subdomain).
    pub name: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

/// Kinds of workload rotor can restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

impl WorkloadKind {
    /// The lower-case prefix used in policies (`deployment`, `statefulset`, `daemonset`).
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// `gitlab` consumer.
#[derive(Debug, Clone)]
pub struct GitlabConsumer {
    /// GitLab base URL, default `https://gitlab.com`.
    pub url: url::Url,
    /// The API token (scope `api`).
    pub token_from: Reference,
    /// Project or group owning the variable.
    pub target: GitlabTarget,
    /// Variable key (`[A-Za-z0-9_]`, at most 255).
    pub key: String,
    /// Value template.
    pub value: Template,
    /// Masked in job logs (default false).
    pub masked: bool,
    /// Only exposed to protected branches/tags (default false).
    pub protected: bool,
    /// No `$` expansion (default true).
    pub raw: bool,
    /// Environment scope, default `*`.
    pub environment_scope: String,
    /// `env_var` (default) or `file`.
    pub variable_type: GitlabVariableType,
}

impl GitlabConsumer {
    /// `project P` or `group G`.
    fn owner(&self) -> String {
        match &self.target {
            GitlabTarget::Project(p) => format!("project {p}"),
            GitlabTarget::Group(g) => format!("group {g}"),
        }
    }
}

impl ConsumerFacts for GitlabConsumer {
    fn kind(&self) -> &'static str {
        "gitlab"
    }

    fn describe(&self) -> String {
        let mut s = format!("gitlab {} variable {}", self.owner(), self.key);
        if self.environment_scope != "*" {
            s.push_str(&format!(" (scope {})", self.environment_scope));
        }
        s
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        vec![("value".to_owned(), &self.value)]
    }

    /// `gitlab:project:P/KEY@SCOPE at URL` (or `group:G`): a key is one variable per
    /// environment scope, on one GitLab instance.
    fn target_id(&self) -> String {
        let owner = self.owner().replacen(' ', ":", 1);
        format!(
            "gitlab:{owner}/{}@{} at {}",
            self.key, self.environment_scope, self.url
        )
    }
}

/// Owner of a GitLab variable: a project or group path (or numeric id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitlabTarget {
    /// `project: acme/payments`.
    Project(String),
    /// `group: acme`.
    Group(String),
}

/// GitLab variable type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, JsonSchema, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum GitlabVariableType {
    /// `env_var`.
    EnvVar,
    /// `file`.
    File,
}

impl GitlabVariableType {
    /// The API name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// `github` consumer.
#[derive(Debug, Clone)]
pub struct GithubConsumer {
    /// API base URL, default `https://api.github.com`.
    pub url: url::Url,
    /// The API token.
    pub token_from: Reference,
    /// Repository (optionally an environment of it) or organisation.
    pub target: GithubTarget,
    /// Secret name (`[A-Za-z0-9_]`, not starting with a digit, no `GITHUB_` prefix).
    pub name: String,
    /// Value template.
    pub value: Template,
}

impl ConsumerFacts for GithubConsumer {
    fn kind(&self) -> &'static str {
        "github"
    }

    fn describe(&self) -> String {
        match &self.target {
            GithubTarget::Repository {
                owner,
                name,
                environment: None,
            } => format!("github repository {owner}/{name} secret {}", self.name),
            GithubTarget::Repository {
                owner,
                name,
                environment: Some(env),
            } => format!(
                "github repository {owner}/{name} environment {env} secret {}",
                self.name
            ),
            GithubTarget::Organization { name, visibility } => format!(
                "github organization {name} secret {} (visibility {})",
                self.name,
                visibility.as_str()
            ),
        }
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        vec![("value".to_owned(), &self.value)]
    }

    /// `github:repo:O/N/NAME`, `github:repo:O/N/env:E/NAME` or `github:org:O/NAME`,
    /// then ` at URL`; an organisation secret's visibility does not make it another
    /// secret.
    fn target_id(&self) -> String {
        let owner = match &self.target {
            GithubTarget::Repository {
                owner,
                name,
                environment: None,
            } => format!("repo:{owner}/{name}"),
            GithubTarget::Repository {
                owner,
                name,
                environment: Some(env),
            } => format!("repo:{owner}/{name}/env:{env}"),
            GithubTarget::Organization { name, .. } => format!("org:{name}"),
        };
        format!("github:{owner}/{} at {}", self.name, self.url)
    }
}

/// Owner of a GitHub Actions secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubTarget {
    /// A repository secret, or an environment secret when `environment` is set.
    Repository {
        /// Repository owner.
        owner: String,
        /// Repository name.
        name: String,
        /// Environment name.
        environment: Option<String>,
    },
    /// An organisation secret.
    Organization {
        /// Organisation login.
        name: String,
        /// Which repositories see it.
        visibility: GithubVisibility,
    },
}

/// Visibility of an organisation secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, JsonSchema, IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum GithubVisibility {
    /// `all`.
    All,
    /// `private`.
    Private,
    /// `selected`.
    Selected,
}

impl GithubVisibility {
    /// The API name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// `vault-kv` consumer: an extra KV v2 copy.
#[derive(Debug, Clone)]
pub struct VaultKvConsumer {
    /// KV v2 mount; defaults to `spec.vault.mount`.
    pub mount: String,
    /// Vault namespace of the copy (Enterprise/OpenBao); default: rotor's own.
    pub namespace: Option<String>,
    /// Path inside the mount (never the canonical `spec.vault` location).
    pub path: String,
    /// Keys and their templates.
    pub data: BTreeMap<String, Template>,
}

impl ConsumerFacts for VaultKvConsumer {
    fn kind(&self) -> &'static str {
        "vault-kv"
    }

    fn describe(&self) -> String {
        format!("vault-kv {}/{}", self.mount, self.path)
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        data_templates(&self.data)
    }

    /// `vault-kv:MOUNT/PATH`. The namespace is left out on purpose: rotor's own
    /// namespace (the default) is not known to the policy, so copies that might land
    /// in one place count as one.
    fn target_id(&self) -> String {
        format!("vault-kv:{}/{}", self.mount, self.path)
    }
}

/// `file` consumer: a file on the agent's host.
#[derive(Debug, Clone)]
pub struct FileConsumer {
    /// Absolute path of the file.
    pub path: PathBuf,
    /// Content template.
    pub content: Template,
    /// Permission bits, default `0o600`.
    pub mode: u32,
    /// Owner: a user name or numeric uid (default: the agent's user).
    pub owner: Option<String>,
    /// Group: a group name or numeric gid (default: the agent's group).
    pub group: Option<String>,
}

impl ConsumerFacts for FileConsumer {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn describe(&self) -> String {
        format!("file {} (mode {:04o})", self.path.display(), self.mode)
    }

    fn templates(&self) -> Vec<(String, &Template)> {
        vec![("content".to_owned(), &self.content)]
    }

    fn target_id(&self) -> String {
        format!("file:{}", self.path.display())
    }
}
