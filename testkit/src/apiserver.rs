//! A fake Kubernetes API server over real HTTPS: `kube-fake-client`'s in-memory backend
//! behind a hyper server on loopback.
//!
//! Clients reach it the way they reach a cluster: a kubeconfig with `server: https://ADDR`,
//! the certificate of a CA made for this run ([`ServerTls`]) and a bearer token, so rotor's
//! own kube client, its HTTP and TLS stack, its error handling and real `kubectl` are
//! exercised ([`serve`] without TLS remains for plain-HTTP callers). The backend handles create/get/list/replace/delete, JSON, merge and apply
//! patches with field managers (409 on conflicts unless forced), and 409 on a stale
//! `resourceVersion`; this front drops field ownership of fields an update removed, as a
//! real API server does (the backend alone keeps it, which would block leader election). Like a real API server it answers `/version`, `/healthz`, `/livez`
//! and `/readyz` without a token, and serves discovery (`/api`, `/apis`, `/api/v1`,
//! `/apis/GROUP/VERSION`).
//!
//! Watches are served from a change feed the front keeps (`feed`, `watch`): list, then
//! watch from the list's `resourceVersion`, as kube's `watcher` and client-go's reflector
//! do. Secrets fold `stringData` into `data` and record its ownership as a real server does
//! (`secrets`).
//!
//! Access is checked as on a real cluster with RBAC on: the kubeconfig's token is an
//! unrestricted admin (`system:masters`), ServiceAccount tokens come from `TokenRequest`s
//! (`POST …/serviceaccounts/NAME/token`), and every other request is authorised by the
//! Roles, ClusterRoles and bindings stored in the server, refused with the real `403`
//! message ([`authn`], [`rbac`]).
//!
//! CustomResourceDefinitions ([`crd`]): a stored `apiextensions.k8s.io/v1` CRD is
//! established and its resource served (discovery with verbs, short names, scope and the
//! `/status` subresource; CRUD, list, watch, apply); before it exists the resource is 404.
//! Writes of custom resources are pruned and validated against the CRD's structural
//! schema (`schema`: `422 Invalid` naming the field path), and `kubectl get` gets a
//! `Table` with the CRD's printer columns (`table`). The status subresource and
//! `metadata.generation` behave as on a real server for custom resources and for
//! Deployments, StatefulSets and DaemonSets (`status`: main writes leave `.status`,
//! `/status` writes change only `.status`, the generation counts spec changes only;
//! Secrets and other kinds without one have no generation). `events.k8s.io/v1` Events are
//! validated as the real server validates them, listed by any field selector
//! (`regarding.name`, …), and shown in core `/api/v1` Event lists, converted, so `kubectl
//! describe` lists them (`events`).
//!
//! Limits of the fake: strategic merge patches are plain merge patches; field ownership is
//! recorded for server-side apply (and `stringData` keys), not for other updates; request
//! bodies must be JSON (protobuf is answered with 415); objects the backend deletes by
//! cascade (owner references) are not seen by watches; loopback only. Custom resources
//! can be stored only for the namespaced types in [`crd::STORAGE`] (the backend needs its
//! types when it is built; another CRD is stored and established but its resource is
//! 404), a CRD version without `subresources.status` still has its status kept apart,
//! deleting a CRD stops serving its resource but keeps its objects in the backend, one
//! CRD version is served without conversion; the schema subset is in `schema`; `Table`s
//! are served for custom resources only, and not for watches; the two Event APIs keep
//! separate objects (core lists show both, a core get or watch only core Events).

mod admission;
pub mod crd;
mod events;
mod feed;
mod schema;
mod secrets;
mod status;
mod table;
mod tls;
mod watch;
mod writes;

pub use tls::ServerTls;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_fake_client::discovery as known;
use rand::Rng;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::user_agents::UserAgents;

pub mod authn;
pub mod rbac;

/// Namespaces every fresh server has, like a new cluster.
pub const BUILTIN_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// Kubernetes version the fake reports on `/version` (k8s-openapi's `latest`).
const K8S_MAJOR: &str = "1";
const K8S_MINOR: &str = "36";

/// Verbs listed in discovery, in the order a real server lists them.
const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// What can go wrong while setting up or running the fake API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// The in-memory backend refused an initial object.
    #[error("building the fake backend failed")]
    Backend(#[source] kube_fake_client::Error),
    /// A seed file could not be read.
    #[error("reading seed file {path} failed")]
    ReadSeed {
        /// The seed file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A seed file is not YAML/JSON.
    #[error("parsing seed file {path} failed")]
    ParseSeed {
        /// The seed file.
        path: PathBuf,
        /// The parser's error (with line and column), boxed: it is large.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A seed object lacks `apiVersion`, `kind` or `metadata.name`.
    #[error("seed object #{index} has no {field}")]
    SeedObject {
        /// Position of the object in the seed (0-based).
        index: usize,
        /// The missing field.
        field: &'static str,
    },
    /// The backend refused a built-in namespace.
    #[error("creating the built-in namespaces failed: {message}")]
    BuiltinRejected {
        /// Why, as the backend said it.
        message: String,
    },
    /// The backend refused a seed object (unknown kind, duplicate, invalid).
    #[error("seed object #{index} was refused: {message}")]
    SeedRejected {
        /// Position of the object in the seed (0-based).
        index: usize,
        /// Why, as the API server said it.
        message: String,
    },
    /// The kubeconfig could not be serialized.
    #[error("serializing the kubeconfig failed")]
    SerializeKubeconfig(#[source] serde_json::Error),
    /// The kubeconfig could not be written.
    #[error("writing kubeconfig {path} failed")]
    WriteKubeconfig {
        /// The kubeconfig path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig could not be read back or turned into a client configuration.
    #[error("loading kubeconfig {path} failed")]
    LoadKubeconfig {
        /// The kubeconfig path.
        path: PathBuf,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// kube could not build a client from the configuration.
    #[error("building a kube client failed")]
    Client(#[source] kube::Error),
    /// The listening socket failed.
    #[error("accepting a connection failed")]
    Accept(#[source] std::io::Error),
    /// The CA, the server certificate or the TLS configuration could not be made.
    #[error("setting up TLS failed: {0}")]
    Tls(String),
    /// The change feed (for watches) could not start on the backend.
    #[error("starting the change feed failed: {0}")]
    Feed(String),
}

impl ApiServerError {
    /// A fixed label for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiServerError::Backend(_) => "backend",
            ApiServerError::ReadSeed { .. } => "read_seed",
            ApiServerError::ParseSeed { .. } => "parse_seed",
            ApiServerError::SeedObject { .. } => "seed_object",
            ApiServerError::BuiltinRejected { .. } => "builtin_rejected",
            ApiServerError::SeedRejected { .. } => "seed_rejected",
            ApiServerError::SerializeKubeconfig(_) => "serialize_kubeconfig",
            ApiServerError::WriteKubeconfig { .. } => "write_kubeconfig",
            ApiServerError::LoadKubeconfig { .. } => "load_kubeconfig",
            ApiServerError::Client(_) => "client",
            ApiServerError::Accept(_) => "accept",
            ApiServerError::Tls(_) => "tls",
            ApiServerError::Feed(_) => "feed",
        }
    }
}

/// Builds the in-memory backend holding [`BUILTIN_NAMESPACES`] and the `seed` objects.
///
/// The returned client talks to memory directly (no HTTP); [`serve`] puts HTTP in front.
/// It spawns a task, so call it inside the runtime that will run [`serve`]. Seed objects are
/// created through the same request path as clients' objects (so namespaces land where
/// `/api/v1/namespaces` finds them); a `resourceVersion` in a seed object is ignored.
pub async fn backend(seed: Vec<Value>) -> Result<kube::Client, ApiServerError> {
    backend_with(seed, kube_fake_client::ClientBuilder::new()).await
}

/// [`backend`] from a `builder` a test configured (for example with interceptors).
pub async fn backend_with(
    seed: Vec<Value>,
    builder: kube_fake_client::ClientBuilder,
) -> Result<kube::Client, ApiServerError> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    let client = crd::register(builder)
        .with_status_subresource::<Deployment>()
        .with_status_subresource::<StatefulSet>()
        .with_status_subresource::<DaemonSet>()
        .with_resource::<NamespaceAlias>()
        .with_resource::<feed::Clock>()
        .build()
        .await
        .map_err(ApiServerError::Backend)?;
    for ns in BUILTIN_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        create_object(&client, object)
            .await
            .map_err(|message| ApiServerError::BuiltinRejected { message })?;
    }
    for object in rbac::bootstrap_objects() {
        create_object(&client, object)
            .await
            .map_err(|message| ApiServerError::BuiltinRejected { message })?;
    }
    for (index, object) in seed.into_iter().enumerate() {
        create_object(&client, object)
            .await
            .map_err(|message| ApiServerError::SeedRejected { index, message })?;
    }
    Ok(client)
}

/// Creates one object in the backend with a POST to its collection.
async fn create_object(backend: &kube::Client, mut object: Value) -> Result<(), String> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let plural = known::get_plural(group, version, &kind)
        .ok_or_else(|| format!("unknown kind {kind} in {api_version}"))?;
    let mut path = if group.is_empty() {
        format!("/api/{version}/")
    } else {
        format!("/apis/{group}/{version}/")
    };
    if known::is_namespaced(group, version, &kind).unwrap_or(true) {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        path.push_str(&format!("namespaces/{namespace}/"));
    }
    path.push_str(plural);
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let uri: http::Uri = backend_path(&path)
        .parse()
        .map_err(|e| format!("bad path {path}: {e}"))?;
    let mut request = Request::new(kube::client::Body::from(object.to_string().into_bytes()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let response = backend.send(request).await.map_err(|e| e.to_string())?;
    if response.status().is_success() {
        return Ok(());
    }
    let code = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    Err(format!("{code}: {message}").replace(NAMESPACES_ALIAS, "namespaces"))
}

/// Plural under which the backend stores Namespaces.
///
/// `kube-fake-client` 0.3 reads `/api/v1/namespaces[/NAME]` as the start of a namespaced
/// path and rejects it, so Namespaces cannot be created, read or listed under their real
/// path. The server rewrites those paths to this alias (registered as kind `Namespace`)
/// and rewrites the alias back to `namespaces` in responses.
const NAMESPACES_ALIAS: &str = "zz-fake-namespaces";

/// The registration of [`NAMESPACES_ALIAS`]: core/v1 `Namespace` under another plural.
struct NamespaceAlias {
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

impl kube::Resource for NamespaceAlias {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "Namespace".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        NAMESPACES_ALIAS.into()
    }
    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

/// The path the backend serves `path` under: Namespace requests go to [`NAMESPACES_ALIAS`].
fn backend_path(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_namespace_path = match parts.as_slice() {
        ["api", "v1", "namespaces"] | ["api", "v1", "namespaces", _] => true,
        ["api", "v1", "namespaces", _, sub] => matches!(*sub, "status" | "finalize"),
        _ => false,
    };
    if !is_namespace_path {
        return path_and_query.to_string();
    }
    let mut rewritten = format!("/api/v1/{NAMESPACES_ALIAS}");
    for part in &parts[3..] {
        rewritten.push('/');
        rewritten.push_str(part);
    }
    if let Some(query) = query {
        rewritten.push('?');
        rewritten.push_str(query);
    }
    rewritten
}

/// Reads a seed file: YAML or JSON, one object, a list of objects, a `kind: List` with
/// `items`, or several `---`-separated documents of those.
pub fn load_seed(path: &Path) -> Result<Vec<Value>, ApiServerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApiServerError::ReadSeed {
        path: path.to_path_buf(),
        source,
    })?;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|source| ApiServerError::ParseSeed {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
    flatten_seed(docs)
}

/// Flattens seed documents into objects and checks each has `apiVersion`, `kind` and
/// `metadata.name`.
pub fn flatten_seed(docs: Vec<Value>) -> Result<Vec<Value>, ApiServerError> {
    let mut objects = Vec::new();
    for doc in docs {
        match doc {
            Value::Null => {}
            Value::Array(items) => objects.extend(items),
            Value::Object(ref map)
                if map
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && map.get("items").is_some_and(Value::is_array) =>
            {
                if let Some(Value::Array(items)) = map.get("items") {
                    objects.extend(items.iter().cloned());
                }
            }
            other => objects.push(other),
        }
    }
    for (index, obj) in objects.iter().enumerate() {
        let has = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        if !has(obj.get("apiVersion")) {
            return Err(ApiServerError::SeedObject {
                index,
                field: "apiVersion",
            });
        }
        if !has(obj.get("kind")) {
            return Err(ApiServerError::SeedObject {
                index,
                field: "kind",
            });
        }
        if !has(obj.get("metadata").and_then(|m| m.get("name"))) {
            return Err(ApiServerError::SeedObject {
                index,
                field: "metadata.name",
            });
        }
    }
    Ok(objects)
}

/// A random bearer token for one server instance.
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..40)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("fake-{tail}")
}

/// Writes a kubeconfig (mode 0600, it holds the token) whose only context points at
/// `http://addr` with `token`, namespace `default`.
pub fn write_kubeconfig(path: &Path, addr: SocketAddr, token: &str) -> Result<(), ApiServerError> {
    write_kubeconfig_for(path, &format!("http://{addr}"), token, None)
}

/// Writes a kubeconfig (mode 0600) whose only context points at `https://addr` with
/// `token`, namespace `default`, trusting `tls`'s CA (`certificate-authority-data`).
pub fn write_kubeconfig_tls(
    path: &Path,
    addr: SocketAddr,
    token: &str,
    tls: &ServerTls,
) -> Result<(), ApiServerError> {
    write_kubeconfig_for(path, &format!("https://{addr}"), token, Some(tls.ca_pem()))
}

/// Writes a kubeconfig (mode 0600) whose only context points at `server` (a URL) with
/// `token`, namespace `default`, trusting the PEM CA `ca_pem` when given.
pub fn write_kubeconfig_for(
    path: &Path,
    server: &str,
    token: &str,
    ca_pem: Option<&str>,
) -> Result<(), ApiServerError> {
    use base64::Engine as _;
    let mut cluster = json!({"server": server});
    if let Some(pem) = ca_pem {
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": cluster}],
        "users": [{"name": "fake", "user": {"token": token}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
        "current-context": "fake",
        "preferences": {}
    });
    // JSON is valid YAML: kube and kubectl read it as a kubeconfig.
    let mut text =
        serde_json::to_string_pretty(&config).map_err(ApiServerError::SerializeKubeconfig)?;
    text.push('\n');
    write_private(path, text.as_bytes()).map_err(|source| ApiServerError::WriteKubeconfig {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `data` to a temporary file next to `path` with mode 0600, then renames it over
/// `path`, so readers never see a half-written kubeconfig.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The `User-Agent` of the requests the testkit's own kube clients make
/// ([`client_from_kubeconfig`]), so a server's record tells them from rotor's.
pub const TESTKIT_USER_AGENT: &str = "rotor-testkit";

/// Builds a kube client from a kubeconfig file, as rotor does outside a cluster, with
/// `User-Agent:` [`TESTKIT_USER_AGENT`]. Installs the rustls crypto provider first.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, ApiServerError> {
    crate::install_crypto_provider();
    let load_err = |source| ApiServerError::LoadKubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(load_err)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(load_err)?;
    config.headers.push((
        header::USER_AGENT,
        HeaderValue::from_static(TESTKIT_USER_AGENT),
    ));
    kube::Client::try_from(config).map_err(ApiServerError::Client)
}

/// Shared state of one server.
struct State {
    backend: kube::Client,
    auth: authn::Authenticator,
    addr: SocketAddr,
    /// Every write through the front, for watches.
    feed: Arc<feed::Feed>,
    /// Every request's `User-Agent`.
    agents: UserAgents,
    /// The true `metadata.generation` of the objects written.
    generations: Arc<status::Generations>,
}

/// The body of every response: a whole JSON document, or a watch stream.
type ReplyBody = BoxBody<Bytes, Infallible>;

/// Serves the Kubernetes API from `backend` on `listener` over plain HTTP until
/// `shutdown` completes. Every request except `/version` and the health endpoints must
/// carry `Authorization: Bearer <token>`: `token` (an unrestricted admin) or a
/// ServiceAccount token minted by a `TokenRequest`, whose requests RBAC authorises
/// ([`rbac`]). Open connections are dropped at shutdown. Real `kubectl` never sends a
/// token over plain HTTP: prefer [`serve_tls`].
pub async fn serve(
    listener: TcpListener,
    backend: kube::Client,
    token: String,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ApiServerError> {
    serve_recording(
        listener,
        backend,
        token,
        None,
        UserAgents::default(),
        shutdown,
    )
    .await
}

/// [`serve`] over HTTPS with `tls`'s certificate (write the kubeconfig with
/// [`write_kubeconfig_tls`]). A connection whose TLS handshake fails is dropped.
pub async fn serve_tls(
    listener: TcpListener,
    backend: kube::Client,
    token: String,
    tls: ServerTls,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ApiServerError> {
    let agents = UserAgents::default();
    serve_recording(listener, backend, token, Some(tls), agents, shutdown).await
}

/// [`serve`], or [`serve_tls`] with `tls`, adding every request (its `User-Agent`) to
/// `agents`.
pub async fn serve_recording(
    listener: TcpListener,
    backend: kube::Client,
    token: String,
    tls: Option<ServerTls>,
    agents: UserAgents,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ApiServerError> {
    let addr = listener.local_addr().map_err(ApiServerError::Accept)?;
    let feed = feed::Feed::start(&backend, feed::LOG_CAPACITY)
        .await
        .map_err(ApiServerError::Feed)?;
    let state = Arc::new(State {
        backend,
        auth: authn::Authenticator::new(token),
        addr,
        feed: Arc::new(feed),
        agents,
        generations: Arc::new(status::Generations::default()),
    });
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = accepted.map_err(ApiServerError::Accept)?;
                let state = Arc::clone(&state);
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    let served = match tls {
                        None => http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await,
                        Some(tls) => match tls.acceptor().accept(stream).await {
                            Ok(stream) => http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await,
                            Err(error) => {
                                debug!(peer = %peer, error = %error, "TLS handshake failed.");
                                return;
                            }
                        },
                    };
                    if let Err(error) = served {
                        debug!(peer = %peer, error = %error, "Connection ended with an error.");
                    }
                });
            }
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// Answers one request; never fails (errors become Kubernetes `Status` responses).
async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    state.agents.record(&method, &path, req.headers());
    let response = route(&state, req).await;
    debug!(method = %method, path = %path, status = response.status().as_u16(), "Request served.");
    Ok(response)
}

async fn route(state: &State, req: Request<Incoming>) -> Response<ReplyBody> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let is_get = req.method() == Method::GET;

    // Public on a real API server too (role system:public-info-viewer).
    if is_get {
        match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => return text(StatusCode::OK, "ok"),
            "/version" => return json_response(StatusCode::OK, &version_info()),
            _ => {}
        }
    }

    let authorization = req.headers().get(header::AUTHORIZATION);
    let Some(user) = state.auth.authenticate(&state.backend, authorization).await else {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    };
    let attrs = rbac::Attributes::of_request(req.method(), &path, req.uri().query());
    let apply = !is_update(req.method(), req.headers().get(header::CONTENT_TYPE))
        && *req.method() == Method::PATCH;
    if let Some(refused) = rbac::check(&state.backend, &user, &attrs, apply).await {
        return refused;
    }
    if let Some((namespace, name)) = authn::token_request_target(req.method(), &path) {
        let body = req.into_body().collect().await.map(|c| c.to_bytes());
        let body = body.unwrap_or_default();
        return state
            .auth
            .token_request(&state.backend, namespace, name, &body)
            .await;
    }

    if is_get && let Some(body) = discovery(&state.backend, &path, state.addr).await {
        return json_response(StatusCode::OK, &body);
    }
    if !(path.starts_with("/api/") || path.starts_with("/apis/")) {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    }
    let served = match custom_resource(state, &path).await {
        Ok(served) => served,
        Err(refused) => return refused,
    };
    if is_watch(req.uri().query(), &path) {
        return match watch::WatchRequest::parse(&path, req.uri().query()) {
            Ok(watch) => watch::respond(
                Arc::clone(&state.feed),
                state.backend.clone(),
                Arc::clone(&state.generations),
                watch,
            ),
            Err(refused) => status(refused.code, refused.reason, &refused.message),
        };
    }
    forward(state, req, served.as_ref()).await
}

/// For a request of a resource that is not built in: the CRD version that serves it, or
/// the 404 a real server answers when no CRD does (or, here, when the backend cannot
/// store it: see [`crd::STORAGE`]). `Ok(None)` for built-in resources and other paths.
async fn custom_resource(
    state: &State,
    path: &str,
) -> Result<Option<crd::Served>, Response<ReplyBody>> {
    let Some(parsed) = feed::ResourcePath::parse(path) else {
        return Ok(None);
    };
    if parsed.resource.is_builtin() || feed::is_private(path) {
        return Ok(None);
    }
    let r = &parsed.resource;
    let Some(served) = crd::lookup(&state.backend, &r.group, &r.version, &r.plural).await else {
        return Err(admission::not_served(path));
    };
    if !served.stored() {
        return Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "the fake API server cannot store {} ({}/{}): only the types in rotor_testkit::apiserver::crd::STORAGE have storage",
                served.kind, served.group, served.version
            ),
        ));
    }
    let bad_sub = match parsed.subresource.as_deref() {
        None => false,
        Some("status") => !served.status,
        Some(_) => true,
    };
    if bad_sub || (!served.namespaced && parsed.namespace.is_some()) {
        return Err(admission::not_served(path));
    }
    Ok(Some(served))
}

/// Passes a resource request to the in-memory backend.
async fn forward(
    state: &State,
    req: Request<Incoming>,
    served: Option<&crd::Served>,
) -> Response<ReplyBody> {
    let (mut parts, body) = req.into_parts();
    if let Some(refused) = unsupported_media(&parts) {
        return refused;
    }
    let (bytes, client_path, aliased) = match read_request(&mut parts, body).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let resource_path = feed::ResourcePath::parse(&client_path);
    let list =
        parts.method == Method::GET && resource_path.as_ref().is_some_and(|p| p.name.is_none());
    // Event lists are filtered here: the backend knows few of their fields.
    let event_fields = match &resource_path {
        Some(p) if list && events::is_events(&p.resource.group, &p.resource.plural) => {
            match take_field_selector(&mut parts) {
                Ok(fields) => fields,
                Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", &message),
            }
        }
        _ => Vec::new(),
    };
    let target = parts.uri.path().to_string();
    let write = writes::Write::of(&parts, &client_path);
    let table = table_request(&parts, served);
    // Writes one at a time, each recorded before the next; lists see none half-done.
    let (_exclusive, _shared) = match (&write, list) {
        (Some(_), _) => (Some(state.feed.write().await), None),
        (None, true) => (None, Some(state.feed.read().await)),
        (None, false) => (None, None),
    };
    let head = state.feed.head();
    let before = match &write {
        Some(write) => write.before(state, &target).await,
        None => writes::Before::default(),
    };
    let mut bytes = bytes;
    if write.is_some()
        && let Some(path) = &resource_path
    {
        let pending = admission::Pending {
            method: &parts.method,
            path,
            content_type: &admission::content_type(&parts),
            served,
            before: before.object(),
        };
        match admission::prepare(&pending, bytes) {
            Ok(prepared) => bytes = prepared,
            Err(refused) => return *refused,
        }
    }
    let request = Request::from_parts(parts, kube::client::Body::from(bytes));
    let response = match state.backend.send(request).await {
        Ok(response) => response,
        Err(error) => {
            // The backend rejects malformed paths and bodies with a plain error.
            warn!(error = %error, "Fake backend rejected a request.");
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the fake API server could not handle the request: {error}"),
            );
        }
    };
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(collected) => {
            let mut bytes = collected.to_bytes();
            if let Some(write) = &write {
                bytes = write
                    .after(state, &target, before, parts.status, bytes)
                    .await;
            } else if parts.status.is_success() {
                if list
                    && resource_path.as_ref().is_some_and(|p| {
                        events::is_events(&p.resource.group, &p.resource.plural)
                            && p.resource.group.is_empty()
                    })
                {
                    bytes = events::with_new_api(&state.backend, &target, bytes).await;
                }
                bytes = presented(state, bytes, list.then_some(head), &event_fields);
                if let Some((served, include)) = &table
                    && let Ok(object) = serde_json::from_slice::<Value>(&bytes)
                {
                    let now = chrono::Utc::now().timestamp();
                    bytes = Bytes::from(table::render(served, &object, include, now).to_string());
                }
            }
            if aliased {
                let text = String::from_utf8_lossy(&bytes).replace(NAMESPACES_ALIAS, "namespaces");
                bytes = Bytes::from(text);
            }
            let mut response = Response::from_parts(parts, Full::new(bytes).boxed());
            response.headers_mut().remove(header::CONTENT_LENGTH);
            response
        }
        Err(error) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("reading the backend response failed: {error}"),
        ),
    }
}

/// Reads a resource request's body (YAML as JSON), refuses the backend's private paths,
/// and points `parts` at the backend's path; answers the body, the path as the client
/// sent it and whether it was rewritten to an alias.
async fn read_request(
    parts: &mut http::request::Parts,
    body: Incoming,
) -> Result<(Bytes, String, bool), Response<ReplyBody>> {
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("reading the request body failed: {error}"),
            ));
        }
    };
    let bytes = match yaml_as_json(parts, bytes) {
        Ok(bytes) => bytes,
        Err(message) => return Err(status(StatusCode::BAD_REQUEST, "BadRequest", &message)),
    };
    let client_path = parts.uri.path().trim_end_matches('/').to_string();
    if feed::is_private(&client_path) {
        return Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({client_path})"),
        ));
    }
    let original = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let rewritten = backend_path(&original);
    let aliased = rewritten != original;
    if aliased {
        match rewritten.parse() {
            Ok(uri) => parts.uri = uri,
            Err(error) => {
                return Err(status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("invalid request path: {error}"),
                ));
            }
        }
    }
    Ok((bytes, client_path, aliased))
}

/// A read's answer as a real server gives it: objects with their true generation
/// ([`status::Generations`]); list items matching `fields`; a list with
/// `resourceVersion` `list_head` (the backend always says "1"), the version a watch
/// continues from without missing or repeating a change.
fn presented(
    state: &State,
    bytes: Bytes,
    list_head: Option<u64>,
    fields: &[watch::FieldRequirement],
) -> Bytes {
    let Ok(mut object) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    state.generations.present(&mut object);
    if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
        items.retain(|item| watch::fields_match(fields, item));
        if let Some(head) = list_head {
            object["metadata"]["resourceVersion"] = Value::String(head.to_string());
        }
    }
    Bytes::from(object.to_string())
}

/// For a read of a custom resource that asks for a `Table`: the CRD version and the
/// `includeObject` parameter.
fn table_request<'s>(
    parts: &http::request::Parts,
    served: Option<&'s crd::Served>,
) -> Option<(&'s crd::Served, String)> {
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if parts.method != Method::GET || !table::wanted(accept) {
        return None;
    }
    let include = form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "includeObject")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    served.map(|served| (served, include))
}

/// Removes `fieldSelector` from a request's query and answers its requirements.
fn take_field_selector(
    parts: &mut http::request::Parts,
) -> Result<Vec<watch::FieldRequirement>, String> {
    let Some(query) = parts.uri.query() else {
        return Ok(Vec::new());
    };
    let mut fields = Vec::new();
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "fieldSelector" {
            fields.extend(
                watch::parse_field_selector(&value)
                    .ok_or_else(|| format!("invalid fieldSelector {value:?}"))?,
            );
        } else {
            kept.append_pair(&key, &value);
        }
    }
    let kept = kept.finish();
    let path = parts.uri.path();
    let uri = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{kept}")
    };
    parts.uri = uri
        .parse()
        .map_err(|e| format!("invalid request path: {e}"))?;
    Ok(fields)
}

/// A YAML body (`application/apply-patch+yaml` need not be JSON) as JSON, which the
/// backend reads; other bodies as they are.
fn yaml_as_json(parts: &http::request::Parts, bytes: Bytes) -> Result<Bytes, String> {
    let yaml = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"));
    if !yaml || bytes.is_empty() || serde_json::from_slice::<Value>(&bytes).is_ok() {
        return Ok(bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    match serde_saphyr::from_str::<Value>(&text) {
        Ok(value) => Ok(Bytes::from(value.to_string())),
        Err(error) => Err(format!("the request body is not valid YAML: {error}")),
    }
}

/// 415 for a request body that is not JSON (client-go sends protobuf for some typed
/// requests; the backend reads JSON only), 406 for a client that accepts no JSON.
fn unsupported_media(parts: &http::request::Parts) -> Option<Response<ReplyBody>> {
    let header_text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let content_type = header_text(header::CONTENT_TYPE);
    if !content_type.is_empty() && !content_type.contains("json") && !content_type.contains("yaml")
    {
        return Some(status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/apply-patch+yaml, application/json-patch+json (got {content_type})"
            ),
        ));
    }
    let accept = header_text(header::ACCEPT);
    let json_ok = accept.is_empty()
        || accept.split(',').any(|t| {
            t.contains("json") || t.trim().starts_with("*/*") || t.trim() == "application/*"
        });
    (!json_ok).then(|| {
        status(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            &format!(
                "only the following media types are accepted: application/json (asked for {accept})"
            ),
        )
    })
}

/// A write that is not a server-side apply: PUT, or PATCH with another content type.
fn is_update(method: &Method, content_type: Option<&HeaderValue>) -> bool {
    let apply = content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("apply-patch"));
    *method == Method::PUT || (*method == Method::PATCH && !apply)
}

/// On a real API server a field that no longer exists is owned by nobody: when an
/// update removes a field, it leaves every manager's `managedFields` entry. The backend
/// keeps such entries, so after a Lease is released (a merge patch that nulls the holder)
/// every other candidate's apply of the holder would conflict with the former holder
/// forever. After a successful update this drops the owned paths that `object` no
/// longer has and writes the result back (guarded by `resourceVersion`); the answer to
/// the client is the object as written. `None`: nothing to prune, or the write-back lost
/// a race (then the original answer stands).
async fn prune_stale_ownership(state: &State, path: &str, object: &Bytes) -> Option<Bytes> {
    let object: Value = serde_json::from_slice(object).ok()?;
    let entries = object.pointer("/metadata/managedFields")?.as_array()?;
    let mut changed = false;
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(fields) = entry.get("fieldsV1").and_then(Value::as_object) else {
            kept.push(entry.clone());
            continue;
        };
        let pruned = secrets::keep_string_data(fields, prune_fields(fields, &object));
        if pruned.len() == fields.len() && pruned == *fields {
            kept.push(entry.clone());
            continue;
        }
        changed = true;
        if !pruned.is_empty() {
            let mut entry = entry.clone();
            entry["fieldsV1"] = Value::Object(pruned);
            kept.push(entry);
        }
    }
    if !changed {
        return None;
    }
    let resource_version = object.pointer("/metadata/resourceVersion")?.clone();
    let body = json!({"metadata": {"managedFields": kept, "resourceVersion": resource_version}});
    let request = Request::patch(path)
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .ok()?;
    let response = state.backend.send(request).await.ok()?;
    let ok = response.status().is_success();
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    if !ok {
        debug!(path = %path, "Pruning stale field ownership lost a race; left as is.");
        return None;
    }
    Some(bytes)
}

/// The part of a `fieldsV1` trie (`f:` keys, `{}` leaves) whose paths `object` still has.
fn prune_fields(
    trie: &serde_json::Map<String, Value>,
    object: &Value,
) -> serde_json::Map<String, Value> {
    let mut kept = serde_json::Map::new();
    for (key, sub) in trie {
        let Some(name) = key.strip_prefix("f:") else {
            // `k:`, `v:`, `i:` and `.` keys: not produced by the backend; keep them.
            kept.insert(key.clone(), sub.clone());
            continue;
        };
        let Some(value) = object.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        match sub.as_object() {
            Some(children) if !children.is_empty() && value.is_object() => {
                let pruned = prune_fields(children, value);
                if !pruned.is_empty() {
                    kept.insert(key.clone(), Value::Object(pruned));
                }
            }
            _ => {
                kept.insert(key.clone(), sub.clone());
            }
        }
    }
    kept
}

fn is_watch(query: Option<&str>, path: &str) -> bool {
    path.contains("/watch/")
        || query.is_some_and(|q| {
            q.split('&')
                .any(|pair| matches!(pair, "watch" | "watch=true" | "watch=1"))
        })
}

fn version_info() -> Value {
    json!({
        "major": K8S_MAJOR,
        "minor": K8S_MINOR,
        "gitVersion": format!("v{K8S_MAJOR}.{K8S_MINOR}.0-fake"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "none",
        "compiler": "rotor-testkit",
        "platform": "linux/amd64"
    })
}

/// Discovery documents for the built-in resource types and those of the stored CRDs.
async fn discovery(backend: &kube::Client, path: &str, addr: SocketAddr) -> Option<Value> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        ["api"] => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]
        })),
        ["apis"] => {
            let mut list = group_list();
            add_custom_groups(&mut list, &crd::served(backend).await);
            Some(list)
        }
        ["api", version] => resource_list("", version),
        ["apis", group, version] => match resource_list(group, version) {
            Some(list) => Some(list),
            None => custom_resource_list(&crd::served(backend).await, group, version),
        },
        ["apis", group] => {
            let mut list = group_list();
            add_custom_groups(&mut list, &crd::served(backend).await);
            list["groups"]
                .as_array()?
                .iter()
                .find(|g| g["name"] == *group)
                .map(|g| {
                    let mut g = g.clone();
                    g["kind"] = json!("APIGroup");
                    g["apiVersion"] = json!("v1");
                    g
                })
        }
        _ => None,
    }
}

/// Adds the groups of the served custom resources to an `APIGroupList`.
fn add_custom_groups(list: &mut Value, served: &[crd::Served]) {
    let Some(groups) = list["groups"].as_array_mut() else {
        return;
    };
    for (group, versions) in crd::discovery(served) {
        let mut names: Vec<&String> = versions.keys().collect();
        names.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        let entries: Vec<Value> = names
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        let preferred = entries.first().cloned().unwrap_or(Value::Null);
        groups.push(json!({"name": group, "versions": entries, "preferredVersion": preferred}));
    }
}

/// The `APIResourceList` of a custom resource group version, when a CRD serves it.
fn custom_resource_list(served: &[crd::Served], group: &str, version: &str) -> Option<Value> {
    let resources = crd::discovery(served).remove(group)?.remove(version)?;
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/{version}"),
        "resources": resources
    }))
}

fn group_list() -> Value {
    let mut groups: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (group, version, _, _) in known::list_resources() {
        if !group.is_empty() {
            groups.entry(group).or_default().insert(version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let mut versions: Vec<&str> = versions.into_iter().collect();
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
            let entries: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            let preferred = entries.first().cloned().unwrap_or(Value::Null);
            json!({"name": group, "versions": entries, "preferredVersion": preferred})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = known::list_resources()
        .iter()
        .filter(|(g, v, _, _)| *g == group && *v == version)
        .map(|(g, v, kind, plural)| {
            let verbs: Vec<&str> = VERBS
                .iter()
                .copied()
                .filter(|verb| known::supports_verb(g, v, kind, verb))
                .collect();
            json!({
                "name": plural,
                "singularName": known::get_singular(g, v, kind).unwrap_or_default(),
                "namespaced": known::is_namespaced(g, v, kind).unwrap_or(true),
                "kind": kind,
                "verbs": verbs,
                "shortNames": known::get_short_names(g, v, kind),
            })
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources
    }))
}

/// Orders API versions like Kubernetes does: GA over beta over alpha, then higher numbers.
fn version_priority(version: &str) -> (u8, u32, u32) {
    let rest = version.strip_prefix('v').unwrap_or(version);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stability, minor) = if let Some(n) = tail.strip_prefix("beta") {
        (1, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (0, n.parse().unwrap_or(0))
    } else if tail.is_empty() {
        (2, 0)
    } else {
        (0, 0)
    };
    (stability, major, minor)
}

fn text(code: StatusCode, body: &'static str) -> Response<ReplyBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(code: StatusCode, body: &Value) -> Response<ReplyBody> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A Kubernetes `Status` failure response.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<ReplyBody> {
    json_response(code, &status_body(code.as_u16(), reason, message))
}

/// A Kubernetes `Status` failure object (also the object of a watch's `ERROR` event).
fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_paths_go_to_the_alias() {
        let alias = format!("/api/v1/{NAMESPACES_ALIAS}");
        assert_eq!(backend_path("/api/v1/namespaces"), alias);
        assert_eq!(
            backend_path("/api/v1/namespaces?labelSelector=a%3Db"),
            format!("{alias}?labelSelector=a%3Db")
        );
        assert_eq!(backend_path("/api/v1/namespaces/x"), format!("{alias}/x"));
        assert_eq!(
            backend_path("/api/v1/namespaces/x/status"),
            format!("{alias}/x/status")
        );
        for untouched in [
            "/api/v1/namespaces/x/secrets",
            "/api/v1/namespaces/x/secrets/y",
            "/apis/apps/v1/namespaces/x/deployments/y",
            "/api/v1/nodes",
        ] {
            assert_eq!(backend_path(untouched), untouched);
        }
    }

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1beta1", "v2", "v1", "v1beta2", "v2beta1"];
        v.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(v, ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1"]);
    }

    #[test]
    fn watch_requests_are_recognised() {
        assert!(is_watch(
            Some("watch=true&resourceVersion=1"),
            "/api/v1/pods"
        ));
        assert!(is_watch(Some("labelSelector=a&watch=1"), "/api/v1/pods"));
        assert!(is_watch(None, "/api/v1/watch/pods"));
        assert!(!is_watch(Some("labelSelector=watch"), "/api/v1/pods"));
    }

    #[test]
    fn seed_accepts_lists_and_documents() {
        let docs = vec![
            json!([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}]),
            json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}
            ]}),
            Value::Null,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "c", "namespace": "a"}}),
        ];
        let objects = flatten_seed(docs).unwrap();
        assert_eq!(objects.len(), 3);
    }

    #[test]
    fn seed_object_without_name_is_rejected() {
        let err = flatten_seed(vec![json!([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {}}
        ])])
        .unwrap_err();
        assert_eq!(err.kind(), "seed_object");
        assert_eq!(err.to_string(), "seed object #1 has no metadata.name");
    }

    #[test]
    fn ownership_of_removed_fields_is_pruned() {
        // A released Lease: the holder fields are gone, leaseTransitions stays.
        let object = json!({"spec": {"leaseTransitions": 1}});
        let trie = json!({"f:spec": {
            "f:holderIdentity": {}, "f:renewTime": {}, "f:leaseTransitions": {}
        }});
        let pruned = prune_fields(trie.as_object().unwrap(), &object);
        assert_eq!(
            Value::Object(pruned),
            json!({"f:spec": {"f:leaseTransitions": {}}})
        );
        let holder_only = json!({"f:spec": {"f:holderIdentity": {}}});
        assert!(prune_fields(holder_only.as_object().unwrap(), &object).is_empty());
    }

    #[tokio::test]
    async fn discovery_lists_the_types_rotor_uses() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let backend = backend(Vec::new()).await.unwrap();
        let core = discovery(&backend, "/api/v1", addr).await.unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"secrets") && names.contains(&"namespaces"));
        let apps = discovery(&backend, "/apis/apps/v1", addr).await.unwrap();
        assert!(
            apps["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["kind"] == "Deployment")
        );
        assert!(
            discovery(&backend, "/apis/coordination.k8s.io/v1", addr)
                .await
                .is_some()
        );
        assert!(
            discovery(&backend, "/apis/nope.example/v1", addr)
                .await
                .is_none()
        );
        let groups = group_list();
        let apps_group = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "apps")
            .unwrap();
        assert_eq!(apps_group["preferredVersion"]["version"], "v1");
    }
}
