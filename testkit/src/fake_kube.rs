//! [`FakeKube`]: a fake Kubernetes API server for one test, reached over real HTTPS.
//!
//! The server runs on its own thread with its own tokio runtime, so it keeps answering
//! while the test blocks (for example on `std::process::Command::output()` running the
//! rotor binary against [`FakeKube::kubeconfig`]) and whatever runtime flavour the test
//! uses. Dropping the [`FakeKube`] stops the server.
//!
//! What a test gets is what any client gets: the kubeconfig file (with the server's CA),
//! the URL and the admin token. The testkit's kube crates are its own (they may differ from rotor's): tests build
//! their clients from [`FakeKube::kubeconfig`] with the kube version they use, and the
//! helpers here ([`FakeKube::create_namespace`], [`FakeKube::create_deployment`],
//! [`FakeKube::install_crd`], [`FakeKube::events_for`], [`FakeKube::set_workload_status`])
//! take plain names and JSON, never a kube type.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube_fake_client::discovery as known;
use kube_fake_client::interceptor;
use serde_json::{Value, json};

use crate::apiserver;
use crate::loopback::{self, LoopbackServer};
use crate::user_agents::UserAgents;

/// How the server answers a Secret patch whose body says `kind: Secret` (a server-side
/// apply): a fault a test injects, as an admission webhook could. Other requests are
/// served normally.
#[derive(Clone, Default)]
pub enum SecretPatches {
    /// Applied as a real server would (the default).
    #[default]
    Apply,
    /// Answered 200 with the Secret as stored, unchanged: a webhook that silently
    /// mutates the write away. (404 when the Secret does not exist.)
    Unchanged,
    /// Refused with 422 `Invalid` and the message this function makes of the patch body:
    /// an admission webhook's denial, which may quote the request.
    Refuse(Arc<dyn Fn(&Value) -> String + Send + Sync>),
}

/// Options of [`FakeKube::start_with`].
#[derive(Clone, Default)]
pub struct FakeKubeOptions {
    /// How Secret applies are answered.
    pub secret_patches: SecretPatches,
}

/// A running fake API server (HTTPS, with a CA made for it) and its kubeconfig.
///
/// Holds the temporary directory with the kubeconfig and the server; both go away when
/// this value is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use k8s_openapi::api::core::v1::Secret;
/// use kube::Api;
///
/// let kube = rotor_testkit::FakeKube::start().await;
/// kube.create_namespace("payments").await;
/// // A test builds its client from the kubeconfig, with its own kube version.
/// let client = rotor_testkit::apiserver::client_from_kubeconfig(&kube.kubeconfig)
///     .await
///     .unwrap();
/// let secrets: Api<Secret> = Api::namespaced(client, "payments");
/// assert!(secrets.list(&Default::default()).await.unwrap().items.is_empty());
/// // A rotor binary under test would get `KUBECONFIG=kube.kubeconfig`.
/// assert!(kube.kubeconfig.is_file());
/// assert!(kube.user_agents().seen().iter().any(|s| s.request.contains("/secrets")));
/// # }
/// ```
pub struct FakeKube {
    /// Loopback address the server listens on.
    pub addr: SocketAddr,
    /// Kubeconfig (mode 0600, in a temporary directory) pointing at [`FakeKube::url`]
    /// with the server's CA and [`FakeKube::admin_token`]; hand it to the rotor binary (or
    /// `kubectl`) as `KUBECONFIG`, and build a test's clients from it.
    pub kubeconfig: PathBuf,
    token: String,
    tls: apiserver::ServerTls,
    agents: UserAgents,
    /// The testkit's own client, for the helpers.
    client: kube::Client,
    _dir: tempfile::TempDir,
    _server: LoopbackServer,
}

impl FakeKube {
    /// Starts a server on `127.0.0.1:0` holding the namespaces `default`, `kube-system` and
    /// `kube-public`, and writes its kubeconfig.
    ///
    /// # Panics
    ///
    /// When the server cannot start or the kubeconfig cannot be written or loaded.
    pub async fn start() -> FakeKube {
        FakeKube::start_with(FakeKubeOptions::default()).await
    }

    /// [`FakeKube::start`] with `options` (faults to inject).
    ///
    /// # Panics
    ///
    /// As [`FakeKube::start`].
    pub async fn start_with(options: FakeKubeOptions) -> FakeKube {
        let token = apiserver::random_token();
        let server_token = token.clone();
        let tls =
            apiserver::ServerTls::generate().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        let server_tls = Some(tls.clone());
        let agents = UserAgents::default();
        let recorded = agents.clone();
        // The backend (kube-fake-client) is built on the server's runtime, before the
        // server counts as started.
        let server = loopback::spawn_with(
            "fake-kube-apiserver",
            || async move {
                let mut builder = kube_fake_client::ClientBuilder::new();
                if let Some(funcs) = interceptors(options.secret_patches) {
                    builder = builder.with_interceptor_funcs(funcs);
                }
                apiserver::backend_with(Vec::new(), builder)
                    .await
                    .map_err(|e| error_chain(&e))
            },
            move |listener, backend, shutdown| async move {
                let served = apiserver::serve_recording(
                    listener,
                    backend,
                    server_token,
                    server_tls,
                    recorded,
                    shutdown,
                );
                if let Err(e) = served.await {
                    tracing::error!(error = %error_chain(&e), "Fake API server stopped.");
                }
            },
        )
        .await;
        let addr = server.addr;

        let dir = tempfile::Builder::new()
            .prefix("rotor-fake-kube-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
        let kubeconfig = dir.path().join("kubeconfig");
        apiserver::write_kubeconfig_tls(&kubeconfig, addr, &token, &tls)
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        let client = apiserver::client_from_kubeconfig(&kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        FakeKube {
            addr,
            kubeconfig,
            token,
            tls,
            agents,
            client,
            _dir: dir,
            _server: server,
        }
    }

    /// The server's base URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url_via(self.addr)
    }

    /// The URL of this server when reached at `addr` instead (a [`crate::Proxy`] in
    /// front of it): `https://addr`. The certificate is valid for any loopback port.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("https://{addr}")
    }

    /// Writes to `path` a kubeconfig like [`FakeKube::kubeconfig`] whose server is
    /// reached at `addr` (a proxy in front of it); same CA and token.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn kubeconfig_via(&self, addr: SocketAddr, path: &Path) {
        apiserver::write_kubeconfig_for(
            path,
            &self.url_via(addr),
            &self.token,
            Some(self.tls.ca_pem()),
        )
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    }

    /// The PEM certificate of the CA that signed the server's certificate (also in
    /// [`FakeKube::kubeconfig`] as `certificate-authority-data`).
    pub fn ca_pem(&self) -> &str {
        self.tls.ca_pem()
    }

    /// The bearer token of the kubeconfig's user, an unrestricted admin.
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// Every request the server received so far (the testkit's own helpers carry
    /// `User-Agent:` [`apiserver::TESTKIT_USER_AGENT`]).
    pub fn user_agents(&self) -> &UserAgents {
        &self.agents
    }

    /// Creates namespace `name`.
    ///
    /// # Panics
    ///
    /// When the API server refuses (for example 409 because it exists already).
    pub async fn create_namespace(&self, name: &str) {
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name}
        }))
        .unwrap_or_else(|e| panic!("building namespace {name} failed: {e}"));
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name} failed: {e}"));
    }

    /// Creates a minimal valid Deployment `ns/name`: one replica of `registry.k8s.io/pause`,
    /// selector and pod labels `app: NAME`.
    ///
    /// # Panics
    ///
    /// When the API server refuses.
    pub async fn create_deployment(&self, ns: &str, name: &str) {
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
                }
            }
        }))
        .unwrap_or_else(|e| panic!("building deployment {ns}/{name} failed: {e}"));
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap_or_else(|e| panic!("creating deployment {ns}/{name} failed: {e}"));
    }
}

/// The backend's interceptors for `secret_patches` (none for [`SecretPatches::Apply`]).
fn interceptors(secret_patches: SecretPatches) -> Option<interceptor::Funcs> {
    if matches!(secret_patches, SecretPatches::Apply) {
        return None;
    }
    let funcs = interceptor::Funcs::new().patch(move |ctx| {
        if ctx.patch.get("kind").and_then(Value::as_str) != Some("Secret") {
            return Ok(None);
        }
        match &secret_patches {
            SecretPatches::Apply => Ok(None),
            SecretPatches::Unchanged => {
                let current = ctx.client.get::<Secret>(ctx.namespace, ctx.name)?;
                Ok(Some(serde_json::to_value(current)?))
            }
            SecretPatches::Refuse(message) => {
                Err(kube_fake_client::Error::InvalidRequest(message(ctx.patch)))
            }
        }
    });
    Some(funcs)
}

/// `error: cause: cause` for panics and logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A kubeconfig for a ServiceAccount of a [`FakeKube`], with a token from a
/// `TokenRequest`: clients using it are that ServiceAccount, and RBAC decides what they
/// may do. The kubeconfig lives in a temporary directory removed on drop.
pub struct ServiceAccountKubeconfig {
    /// The user the token authenticates as, `system:serviceaccount:NS:NAME`.
    pub user: String,
    /// The kubeconfig (mode 0600): the server's kubeconfig with the ServiceAccount's
    /// token instead of the admin's.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeKube {
    /// Creates `objects` (each with `apiVersion`, `kind` and `metadata.name`; namespaced
    /// ones in `metadata.namespace`, else `default`) in order, as the admin.
    ///
    /// # Panics
    ///
    /// When the API server refuses one (its message is in the panic).
    pub async fn create_objects(&self, objects: &[serde_json::Value]) {
        let client = self.admin_client().await;
        for object in objects {
            let (resource, namespaced) = api_resource(object);
            let dynamic: DynamicObject = serde_json::from_value(object.clone())
                .unwrap_or_else(|e| panic!("{object} is not an object: {e}"));
            let name = dynamic.metadata.name.clone().unwrap_or_default();
            let api: Api<DynamicObject> = if namespaced {
                let ns = dynamic.metadata.namespace.as_deref().unwrap_or("default");
                Api::namespaced_with(client.clone(), ns, &resource)
            } else {
                Api::all_with(client.clone(), &resource)
            };
            api.create(&PostParams::default(), &dynamic)
                .await
                .unwrap_or_else(|e| panic!("creating {} {name} failed: {e}", resource.kind));
        }
    }

    /// Mints a token for ServiceAccount `namespace/name` with a `TokenRequest` (as the
    /// admin, lifetime one hour) and writes a kubeconfig that uses it.
    ///
    /// # Panics
    ///
    /// When the ServiceAccount does not exist or the kubeconfig cannot be written.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> ServiceAccountKubeconfig {
        let client = self.admin_client().await;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let minted = Api::<ServiceAccount>::namespaced(client, namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("a TokenRequest for {namespace}/{name} failed: {e}"));
        let token = minted
            .status
            .and_then(|s| s.token)
            .unwrap_or_else(|| panic!("the TokenRequest for {namespace}/{name} has no token"));
        let dir = tempfile::Builder::new()
            .prefix("rotor-fake-kube-sa-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
        let path = dir.path().join("kubeconfig");
        let text = std::fs::read_to_string(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("reading {} failed: {e}", self.kubeconfig.display()));
        let mut config: serde_json::Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", self.kubeconfig.display()));
        for user in config["users"].as_array_mut().into_iter().flatten() {
            user["user"] = json!({ "token": token });
        }
        let mut text = serde_json::to_string_pretty(&config).expect("a kubeconfig serialises");
        text.push('\n');
        apiserver::write_private(&path, text.as_bytes())
            .unwrap_or_else(|e| panic!("writing {} failed: {e}", path.display()));
        ServiceAccountKubeconfig {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            path,
            _dir: dir,
        }
    }

    /// The testkit's own client of the admin (the kubeconfig's token).
    async fn admin_client(&self) -> kube::Client {
        self.client.clone()
    }
}

/// The API resource of `object` (from its `apiVersion` and `kind`) and whether it is
/// namespaced, as the server's discovery says.
fn api_resource(object: &serde_json::Value) -> (ApiResource, bool) {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let custom = apiserver::crd::STORAGE
        .iter()
        .find(|(g, v, k, _)| *g == group && *v == version && *k == kind)
        .map(|(_, _, _, plural)| *plural);
    let plural = known::get_plural(group, version, kind)
        .or(custom)
        .unwrap_or_else(|| panic!("the fake API server does not serve {kind} in {api_version}"));
    let namespaced = known::is_namespaced(group, version, kind).unwrap_or(true);
    let gvk = GroupVersionKind::gvk(group, version, kind);
    (ApiResource::from_gvk_with_plural(&gvk, plural), namespaced)
}

/// Custom resources, Events and workload status: what tests of a controller need.
impl FakeKube {
    /// Creates the `apiextensions.k8s.io/v1` CustomResourceDefinition `crd` (JSON, or YAML
    /// parsed with `serde_saphyr`) as the admin. The server establishes it at once and
    /// serves its resource from then on (only for the types in
    /// [`apiserver::crd::STORAGE`]; others answer 404).
    ///
    /// # Panics
    ///
    /// When the server refuses the CRD (its message is in the panic).
    pub async fn install_crd(&self, crd: &Value) {
        self.create_objects(std::slice::from_ref(crd)).await;
    }

    /// The `events.k8s.io/v1` Events in `namespace` about the object `kind`/`name`
    /// (`regarding`), oldest first (by `eventTime`), as JSON.
    ///
    /// # Panics
    ///
    /// When the server refuses the list.
    pub async fn events_for(&self, kind: &str, namespace: &str, name: &str) -> Vec<Value> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        );
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.admin_client().await, namespace, &resource);
        let selector = format!("regarding.kind={kind},regarding.name={name}");
        let list = api
            .list(&kube::api::ListParams::default().fields(&selector))
            .await
            .unwrap_or_else(|e| {
                panic!("listing the events of {kind} {namespace}/{name} failed: {e}")
            });
        let mut events: Vec<Value> = list
            .items
            .into_iter()
            .map(|e| serde_json::to_value(e).expect("an event serialises"))
            .collect();
        events.sort_by(|a, b| a["eventTime"].as_str().cmp(&b["eventTime"].as_str()));
        events
    }

    /// Writes `status` as the `.status` of the workload `kind` (`Deployment`,
    /// `StatefulSet` or `DaemonSet`) `namespace/name` through its `/status` subresource
    /// (a merge patch, as the admin), as the workload's controller would: a test plays
    /// the controller that reports a rollout's progress. Answers the object after.
    ///
    /// # Panics
    ///
    /// When the kind is not a workload or the server refuses the write.
    pub async fn set_workload_status(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Value {
        let plural = match kind {
            "Deployment" => "deployments",
            "StatefulSet" => "statefulsets",
            "DaemonSet" => "daemonsets",
            other => panic!("{other} is not a workload kind (Deployment, StatefulSet, DaemonSet)"),
        };
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", kind), plural);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.admin_client().await, namespace, &resource);
        let patched = api
            .patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|e| {
                panic!("writing the status of {kind} {namespace}/{name} failed: {e}")
            });
        serde_json::to_value(patched).expect("an object serialises")
    }
}
