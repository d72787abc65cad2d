//! [`FakeKube`]: a fake Kubernetes API server for one test, reached over real HTTPS.
//!
//! The server runs on its own thread with its own tokio runtime, so it keeps answering
//! while the test blocks (for example on `std::process::Command::output()` running the
//! rotor binary against [`FakeKube::kubeconfig`]) and whatever runtime flavour the test
//! uses. Dropping the [`FakeKube`] stops the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube_fake_client::discovery as known;
use serde_json::json;

use crate::apiserver;
use crate::loopback::{self, LoopbackServer};

/// A running fake API server (HTTPS, with a CA made for it), its kubeconfig and a client
/// built from that kubeconfig.
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
/// rotor_testkit::create_namespace(&kube.client, "payments").await;
/// let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), "payments");
/// assert!(secrets.list(&Default::default()).await.unwrap().items.is_empty());
/// // A rotor binary under test would get `KUBECONFIG=kube.kubeconfig`.
/// assert!(kube.kubeconfig.is_file());
/// # }
/// ```
pub struct FakeKube {
    /// Loopback address the server listens on.
    pub addr: SocketAddr,
    /// Kubeconfig (mode 0600, in a temporary directory) pointing at `https://addr` with
    /// the server's CA and a bearer token; hand it to the rotor binary (or `kubectl`) as
    /// `KUBECONFIG`.
    pub kubeconfig: PathBuf,
    /// A `kube::Client` built from [`FakeKube::kubeconfig`]; it goes over HTTPS like rotor's.
    pub client: kube::Client,
    token: String,
    tls: apiserver::ServerTls,
    _dir: tempfile::TempDir,
    _server: LoopbackServer,
}

impl FakeKube {
    /// Starts a server on `127.0.0.1:0` holding the namespaces `default`, `kube-system` and
    /// `kube-public`, writes its kubeconfig and builds [`FakeKube::client`].
    ///
    /// # Panics
    ///
    /// When the server cannot start or the kubeconfig cannot be written or loaded.
    pub async fn start() -> FakeKube {
        let token = apiserver::random_token();
        let server_token = token.clone();
        let tls =
            apiserver::ServerTls::generate().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        let server_tls = tls.clone();
        // The backend (kube-fake-client) is built on the server's runtime, before the
        // server counts as started.
        let server = loopback::spawn_with(
            "fake-kube-apiserver",
            || async {
                apiserver::backend(Vec::new())
                    .await
                    .map_err(|e| error_chain(&e))
            },
            move |listener, backend, shutdown| async move {
                if let Err(e) =
                    apiserver::serve_tls(listener, backend, server_token, server_tls, shutdown)
                        .await
                {
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
            client,
            token,
            tls,
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

/// Creates namespace `name`.
///
/// # Panics
///
/// When the API server refuses (for example 409 because it exists already).
pub async fn create_namespace(client: &kube::Client, name: &str) {
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name}
    }))
    .unwrap_or_else(|e| panic!("building namespace {name} failed: {e}"));
    Api::<Namespace>::all(client.clone())
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
pub async fn create_deployment(client: &kube::Client, ns: &str, name: &str) {
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
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap_or_else(|e| panic!("creating deployment {ns}/{name} failed: {e}"));
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

    /// A client of the admin (the kubeconfig's token), built from the kubeconfig.
    async fn admin_client(&self) -> kube::Client {
        apiserver::client_from_kubeconfig(&self.kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)))
    }
}

/// The API resource of `object` (from its `apiVersion` and `kind`) and whether it is
/// namespaced, as the server's discovery says.
fn api_resource(object: &serde_json::Value) -> (ApiResource, bool) {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = known::get_plural(group, version, kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve {kind} in {api_version}"));
    let namespaced = known::is_namespaced(group, version, kind).unwrap_or(true);
    let gvk = GroupVersionKind::gvk(group, version, kind);
    (ApiResource::from_gvk_with_plural(&gvk, plural), namespaced)
}
