//! The Helm chart's RBAC in a [`FakeKube`]: rendered by the real Helm engine
//! ([`crate::helm`]) with a test's values, created in the server as the admin, and a
//! kubeconfig for the chart's ServiceAccount. rotor under test runs with that kubeconfig
//! only, so it can do exactly what an installed chart lets it do.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let kube = rotor_testkit::FakeKube::start().await;
//! let values = serde_json::json!({"rbac": {"namespaces": [
//!     {"namespace": "payments", "secrets": ["payments-db"]},
//! ]}});
//! let rbac = rotor_testkit::chart::install_rbac(&kube, "prod", "rotor-system", &values).await;
//! // A rotor binary under test gets `KUBECONFIG=rbac.kubeconfig.path`.
//! assert_eq!(rbac.kubeconfig.user, "system:serviceaccount:rotor-system:prod-rotor");
//! # }
//! ```

use serde_json::{Value, json};

use crate::fake_kube::{FakeKube, ServiceAccountKubeconfig};
use crate::helm;

/// The kinds of the chart's access objects: what [`install_rbac`] creates.
pub const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// The chart's RBAC as installed in a server, and its ServiceAccount's kubeconfig.
pub struct ChartRbac {
    /// The release namespace (where the ServiceAccount and the Lease live).
    pub namespace: String,
    /// The chart's ServiceAccount.
    pub service_account: String,
    /// The objects created, as rendered (ServiceAccount, Roles, bindings).
    pub objects: Vec<Value>,
    /// A kubeconfig with the ServiceAccount's token.
    pub kubeconfig: ServiceAccountKubeconfig,
}

impl ChartRbac {
    /// The rendered objects of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }
}

/// Renders `charts/rotor` with `values` as release `release` in `namespace`, creates the
/// release namespace and the rendered [`RBAC_KINDS`] objects in `kube` as the admin, and
/// mints a token for the chart's ServiceAccount.
///
/// # Panics
///
/// When Helm refuses the values, the chart renders no ServiceAccount, or the server
/// refuses an object.
pub async fn install_rbac(
    kube: &FakeKube,
    release: &str,
    namespace: &str,
    values: &Value,
) -> ChartRbac {
    let objects: Vec<Value> = helm::render_objects(&helm::chart_dir(), values, release, namespace)
        .into_iter()
        .map(|(_, object)| object)
        .filter(|o| RBAC_KINDS.iter().any(|k| o["kind"] == *k))
        .collect();
    let service_account = objects
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .and_then(|o| o["metadata"]["name"].as_str())
        .unwrap_or_else(|| panic!("the chart rendered no ServiceAccount with {values}"))
        .to_owned();
    let release_namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace},
    });
    kube.create_objects(&[release_namespace]).await;
    kube.create_objects(&objects).await;
    let kubeconfig = kube
        .service_account_kubeconfig(namespace, &service_account)
        .await;
    ChartRbac {
        namespace: namespace.to_owned(),
        service_account,
        objects,
        kubeconfig,
    }
}
