//! The `vault-kv` and `file` consumers against real OpenBao and the real filesystem:
//! values land where the policy says (another mount, path or namespace; a file with
//! an exact mode and owner), an unchanged value is not rewritten, failures name the
//! place and never the value. Needs `dev/stack up` (OpenBao).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::kinds::secret_map;
use rotor::consumers::{ConsumerError, Consumers};
use rotor::policy::{self, ConsumerSpec};
use rotor::secret::{Fingerprinter, SecretMap, SecretString};
use rotor::vault::{AuthAs, Vault, VaultConfig};
use serde_json::json;

/// The consumers of a policy whose credential is a postgres password.
fn consumers(name: &str, consumers_yaml: &str) -> Vec<ConsumerSpec> {
    let yaml = format!(
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\nspec:\n  credential:\n    type: postgres\n    connection: {{host: 127.0.0.1, port: 5432, database: app, adminFrom: {{env: X}}}}\n    username: app\n  vault:\n    path: apps/{name}\n  consumers:\n{consumers_yaml}"
    );
    let set = policy::load_str(Path::new("test.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("policy must load:\n{e}\n{yaml}"));
    set.get(name).expect("policy").spec.consumers.clone()
}

fn vars(password: &str) -> SecretMap {
    secret_map(&[("username", "app"), ("password", password)])
}

fn fingerprints() -> Fingerprinter {
    Fingerprinter::new(vec![7; 32])
}

async fn push(
    spec: &ConsumerSpec,
    vars: &SecretMap,
) -> Result<rotor::consumers::PushOutcome, ConsumerError> {
    Consumers::new()
        .push(spec, vars, &fingerprints(), &common::vault())
        .await
}

async fn read_kv(
    vault: &Vault,
    ns: Option<&str>,
    mount: &str,
    path: &str,
) -> Option<(serde_json::Value, u64)> {
    let resp = vault
        .request_in(
            ns,
            reqwest::Method::GET,
            &format!("{mount}/data/{path}"),
            None,
            AuthAs::Rotor,
        )
        .await
        .expect("read");
    if resp.status == 404 {
        return None;
    }
    let body = resp.json();
    Some((
        body["data"]["data"].clone(),
        body["data"]["metadata"]["version"]
            .as_u64()
            .expect("version"),
    ))
}

#[tokio::test]
async fn vault_kv_copy_is_written_once_and_read_back() {
    let name = rotor_testkit::unique("kv");
    let specs = consumers(
        &name,
        &format!(
            "    - type: vault-kv\n      path: copies/{name}\n      data:\n        db-password: \"{{{{ password }}}}\"\n        url: \"postgres://{{{{ username }}}}:{{{{ password }}}}@db/app\"\n"
        ),
    );
    let secret = rotor_testkit::canary();
    let out = push(&specs[0], &vars(&secret)).await.expect("push");
    assert!(out.changed && out.verified);
    let vault = common::vault();
    let (data, v1) = read_kv(&vault, None, "secret", &format!("copies/{name}"))
        .await
        .expect("copy exists");
    assert_eq!(
        data,
        json!({"db-password": secret, "url": format!("postgres://app:{secret}@db/app")})
    );

    // The same value again: nothing written.
    let out = push(&specs[0], &vars(&secret)).await.expect("push again");
    assert!(!out.changed && out.verified);
    assert_eq!(
        read_kv(&vault, None, "secret", &format!("copies/{name}"))
            .await
            .expect("copy")
            .1,
        v1
    );

    // A new value: a new version.
    let next = rotor_testkit::canary();
    assert!(
        push(&specs[0], &vars(&next))
            .await
            .expect("push new")
            .changed
    );
    let (data, v2) = read_kv(&vault, None, "secret", &format!("copies/{name}"))
        .await
        .expect("copy");
    assert_eq!(v2, v1 + 1);
    assert_eq!(data["db-password"], json!(next));
}

#[tokio::test]
async fn vault_kv_copy_goes_to_another_namespace() {
    let vault = common::vault();
    let ns = "rotor-test-ns";
    let _ = vault
        .request_in(
            None,
            reqwest::Method::POST,
            &format!("sys/namespaces/{ns}"),
            Some(&json!({})),
            AuthAs::Rotor,
        )
        .await
        .expect("create namespace");
    let _ = vault
        .request_in(
            Some(ns),
            reqwest::Method::POST,
            "sys/mounts/team-kv",
            Some(&json!({"type": "kv", "options": {"version": "2"}})),
            AuthAs::Rotor,
        )
        .await
        .expect("mount KV in the namespace");
    let name = rotor_testkit::unique("kvns");
    let specs = consumers(
        &name,
        &format!(
            "    - type: vault-kv\n      namespace: {ns}\n      mount: team-kv\n      path: {name}\n      data:\n        password: \"{{{{ password }}}}\"\n"
        ),
    );
    let secret = rotor_testkit::canary();
    let out = push(&specs[0], &vars(&secret)).await.expect("push");
    assert!(out.changed && out.verified);
    let (data, _) = read_kv(&vault, Some(ns), "team-kv", &name)
        .await
        .expect("copy in the namespace");
    assert_eq!(data["password"], json!(secret));
    assert!(
        read_kv(&vault, None, "team-kv", &name).await.is_none(),
        "nothing in the root namespace"
    );
}

#[tokio::test]
async fn vault_kv_refusal_names_the_place_not_the_value() {
    let vault = common::vault();
    // A token that may read but not write the copy's path.
    let name = rotor_testkit::unique("kvdeny");
    vault
        .request_ok(
            reqwest::Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(&json!({"policy": format!("path \"secret/data/copies/{name}\" {{ capabilities = [\"read\"] }}")})),
            AuthAs::Rotor,
        )
        .await
        .expect("policy");
    let token = vault
        .request_ok(
            reqwest::Method::POST,
            "auth/token/create",
            Some(&json!({"policies": [name], "ttl": "10m"})),
            AuthAs::Rotor,
        )
        .await
        .expect("token")
        .json()["auth"]["client_token"]
        .as_str()
        .expect("client_token")
        .to_owned();
    let s = rotor_testkit::stack();
    let limited = Vault::connect(&VaultConfig {
        addr: s.vault_addr.clone(),
        token: Some(SecretString::from(token.clone())),
        ..VaultConfig::from_env()
    })
    .expect("client");
    let specs = consumers(
        &name,
        &format!(
            "    - type: vault-kv\n      path: copies/{name}\n      data:\n        password: \"{{{{ password }}}}\"\n"
        ),
    );
    let secret = rotor_testkit::canary();
    let err = Consumers::new()
        .push(&specs[0], &vars(&secret), &fingerprints(), &limited)
        .await
        .expect_err("the write is refused");
    let text = format!("{err} {err:?}");
    assert!(text.contains(&format!("secret/copies/{name}")), "{text}");
    assert!(text.contains("403"), "{text}");
    assert!(!err.is_transient(), "a permission problem needs a person");
    rotor_testkit::assert_no_secret(&text, &[&secret, &token]);
}

#[tokio::test]
async fn file_is_replaced_atomically_with_an_exact_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.env");
    let name = rotor_testkit::unique("file");
    let specs = consumers(
        &name,
        &format!(
            "    - type: file\n      path: {}\n      content: \"PGPASSWORD={{{{ password }}}}\\n\"\n",
            path.display()
        ),
    );
    let secret = rotor_testkit::canary();
    // A restrictive umask must not change the mode, and a loose one must not widen it.
    let out = push(&specs[0], &vars(&secret)).await.expect("push");
    assert!(out.changed && out.verified);
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        format!("PGPASSWORD={secret}\n")
    );
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let inode = meta.ino();

    // Same content: the file is not rewritten.
    let out = push(&specs[0], &vars(&secret)).await.expect("push again");
    assert!(!out.changed && out.verified);
    assert_eq!(std::fs::metadata(&path).expect("stat").ino(), inode);

    // New content: a new file renamed into place; no temporary file is left behind.
    let next = rotor_testkit::canary();
    assert!(
        push(&specs[0], &vars(&next))
            .await
            .expect("push new")
            .changed
    );
    assert_ne!(
        std::fs::metadata(&path).expect("stat").ino(),
        inode,
        "replaced by rename"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["db.env".to_owned()]);

    // A widened mode on disk is put right on the next push even with the same content.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(push(&specs[0], &vars(&next)).await.expect("push").changed);
    assert_eq!(
        std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777,
        0o600
    );
}

#[tokio::test]
async fn file_owner_and_group_are_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key.pem");
    let name = rotor_testkit::unique("fown");
    // The test runs as root (the machine's CI user), so it may give the file away.
    let specs = consumers(
        &name,
        &format!(
            "    - type: file\n      path: {}\n      content: \"{{{{ password }}}}\"\n      mode: \"0640\"\n      owner: \"65534\"\n      group: root\n",
            path.display()
        ),
    );
    let out = push(&specs[0], &vars(&rotor_testkit::canary()))
        .await
        .expect("push");
    assert!(out.verified);
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!(meta.uid(), 65534);
    assert_eq!(meta.gid(), 0);
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
}

#[tokio::test]
async fn file_errors_name_the_file_and_never_the_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = rotor_testkit::canary();
    let name = rotor_testkit::unique("ferr");
    let missing = dir.path().join("no-such-dir").join("db.env");
    let specs = consumers(
        &name,
        &format!(
            "    - type: file\n      path: {}\n      content: \"{{{{ password }}}}\"\n    - type: file\n      path: {}\n      content: \"{{{{ password }}}}\"\n      owner: no-such-user-x\n",
            missing.display(),
            dir.path().join("b").display()
        ),
    );
    let err = push(&specs[0], &vars(&secret))
        .await
        .expect_err("no directory");
    let text = format!("{err} {err:?}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(!err.is_transient());
    rotor_testkit::assert_no_secret(&text, &[&secret]);

    let err = push(&specs[1], &vars(&secret))
        .await
        .expect_err("unknown owner");
    assert!(err.to_string().contains("no-such-user-x"), "{err}");
    assert!(
        !dir.path().join("b").exists(),
        "nothing written for an unknown owner"
    );
}

#[test]
fn bad_consumer_fields_are_refused_at_load_time() {
    let bad = [
        (
            "    - type: file\n      path: /tmp/x\n      content: \"{{ password }}\"\n      owner: \"Bad Name\"\n",
            "owner",
        ),
        (
            "    - type: vault-kv\n      namespace: \"/x/\"\n      path: c\n      data: {p: \"{{ password }}\"}\n",
            "namespace",
        ),
        (
            "    - type: file\n      path: /tmp/x\n      content: \"{{ password }}\"\n      mode: \"0644\"\n",
            "mode",
        ),
    ];
    for (yaml, field) in bad {
        let text = format!(
            "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: bad\nspec:\n  credential:\n    type: postgres\n    connection: {{host: h, port: 5432, database: d, adminFrom: {{env: X}}}}\n    username: app\n  vault:\n    path: apps/x\n  consumers:\n{yaml}"
        );
        let err = policy::load_str(Path::new("bad.yaml"), &text)
            .expect_err(field)
            .to_string();
        assert!(
            err.contains(&format!("spec.consumers[0].{field}")),
            "{field}: {err}"
        );
    }
}
