//! The `fake-kube-apiserver` binary as `dev/stack up` runs it: seed, kubeconfig, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use rotor_testkit::apiserver::client_from_kubeconfig;

const BIN: &str = env!("CARGO_BIN_EXE_fake-kube-apiserver");

/// Starts the binary on a free loopback port with `kubeconfig` and `args`; answers the
/// child and the first line it printed (after which the kubeconfig is written).
fn start(kubeconfig: &std::path::Path, args: &[&std::ffi::OsStr]) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(kubeconfig)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fake-kube-apiserver");
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .expect("read stdout");
    (child, first_line)
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_serves_its_seed_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n---\n\
         - apiVersion: apps/v1\n  kind: Deployment\n  metadata:\n    name: web\n    namespace: demo\n  \
         spec:\n    selector:\n      matchLabels: {app: web}\n    template:\n      metadata:\n        \
         labels: {app: web}\n      spec:\n        containers: [{name: app, image: pause}]\n",
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");

    let (mut child, first_line) = start(&kubeconfig, &["--seed".as_ref(), seed.as_os_str()]);
    assert!(
        first_line.starts_with("listening on 127.0.0.1:"),
        "{first_line:?}"
    );

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "kubeconfig holds a token");

    let client = client_from_kubeconfig(&kubeconfig).await.expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.get("demo").await.expect("seeded namespace");
    namespaces.get("default").await.expect("built-in namespace");
    let deployments: Api<Deployment> = Api::namespaced(client, "demo");
    deployments
        .restart("web")
        .await
        .expect("restart seeded deployment");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_serves_https_with_its_ca_by_default_and_plain_http_on_request() {
    for (flag, scheme) in [(None, "https://"), (Some("--plain-http"), "http://")] {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let flags: Vec<&std::ffi::OsStr> = flag.iter().map(|f| f.as_ref()).collect();
        let (mut child, _) = start(&kubeconfig, &flags);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
        let cluster = &config["clusters"][0]["cluster"];
        assert!(
            cluster["server"].as_str().unwrap().starts_with(scheme),
            "{cluster}"
        );
        assert_eq!(
            cluster.get("certificate-authority-data").is_some(),
            flag.is_none(),
            "{cluster}"
        );
        let client = client_from_kubeconfig(&kubeconfig).await.expect("client");
        Api::<Namespace>::all(client)
            .get("default")
            .await
            .expect("built-in namespace");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn binary_refuses_a_non_loopback_address_and_a_bad_seed() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let out = Command::new(BIN)
        .args(["--listen", "0.0.0.0:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");

    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        r#"[{"apiVersion": "v1", "kind": "Namespace", "metadata": {}}]"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--seed")
        .arg(&seed)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("seed object #0 has no metadata.name"),
        "{stderr}"
    );
    assert!(
        !kubeconfig.exists(),
        "no kubeconfig for a server that never started"
    );
}

#[test]
fn binary_names_the_bad_seed_object_by_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        "- {apiVersion: v1, kind: Namespace, metadata: {name: ok}}\n\
         - {apiVersion: v1, kind: Nope, metadata: {name: x}}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--kubeconfig"])
        .arg(dir.path().join("kubeconfig"))
        .arg("--seed")
        .arg(&seed)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: seed object #1 was refused: unknown kind Nope in v1"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
}
