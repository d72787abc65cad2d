//! One rotation feeding all five consumer types (Kubernetes Secret, GitLab CI/CD
//! variable, GitHub Actions secret, an extra Vault KV copy, a file), through the
//! `rotor` binary. Consumers are independent: one whose server is down stays pending
//! while the others complete, and the next run finishes it without pushing the others
//! again. Needs `dev/stack up`.

mod common;

use common::kinds::{self, KindFixture, KindOptions, report, seed, text};
use rotor_testkit::{FakeGithub, FakeGitlab};

struct World {
    fx: KindFixture,
    gitlab: FakeGitlab,
    github: FakeGithub,
    file: std::path::PathBuf,
    kv_path: String,
    _files: tempfile::TempDir,
}

async fn world(prefix: &str) -> World {
    let gitlab = FakeGitlab::start();
    gitlab.add_project("acme/payments");
    let github = FakeGithub::start();
    github.add_repository("acme/payments");
    let files = tempfile::tempdir().expect("tempdir");
    let file = files.path().join("db.env");
    let (gl_url, gh_url, file_path) = (
        gitlab.base_url.clone(),
        github.base_url.clone(),
        file.display().to_string(),
    );
    let (gl_token, gh_token) = (gitlab.token.clone(), github.token.clone());
    let name = rotor_testkit::unique(prefix);
    let vault = common::vault();
    let gl_ref = seed(&vault, &name, "gitlab", &[("token", &gl_token)]).await;
    let gh_ref = seed(&vault, &name, "github", &[("token", &gh_token)]).await;
    let extra = format!(
        r#"    - type: gitlab
      url: {gl_url}
      tokenFrom: {{vault: {{path: {gl_ref}, key: token}}}}
      project: acme/payments
      key: DB_PASSWORD
      value: "{{{{ password }}}}"
      masked: true
      protected: true
      environmentScope: production
    - type: github
      url: {gh_url}
      tokenFrom: {{vault: {{path: {gh_ref}, key: token}}}}
      repository: acme/payments
      name: DB_PASSWORD
      value: "{{{{ password }}}}"
    - type: vault-kv
      path: copies/{{{{NAME}}}}
      data:
        password: "{{{{ password }}}}"
    - type: file
      path: {file_path}
      content: "PGPASSWORD={{{{ password }}}}\n"
"#
    )
    .replace("{{NAME}}", &name);
    let fx = KindFixture::new(
        prefix,
        KindOptions {
            extra_consumers: extra,
            ..KindOptions::default()
        },
        |n, v| async move { kinds::postgres_single(&n, &v).await },
    )
    .await;
    World {
        fx,
        kv_path: format!("copies/{name}"),
        gitlab,
        github,
        file,
        _files: files,
    }
}

impl World {
    /// Every consumer holds `password`.
    async fn assert_everywhere(&self, password: &str) {
        let var = self
            .gitlab
            .variable("acme/payments", "DB_PASSWORD", "production")
            .expect("GitLab variable");
        assert_eq!(var.value, password, "GitLab");
        assert!(var.masked && var.protected && var.raw);
        let secret = self
            .github
            .secret("acme/payments", "DB_PASSWORD")
            .expect("GitHub secret");
        assert_eq!(secret.plaintext, password, "GitHub (decrypted by the fake)");
        let data = self.fx.secret_data().await.expect("Kubernetes Secret");
        assert_eq!(data.get("password").map(String::as_str), Some(password));
        let copy = self
            .fx
            .vault
            .kv_read("secret", &self.kv_path)
            .await
            .expect("read copy")
            .expect("copy exists");
        assert_eq!(copy.data.expose("password"), Some(password), "vault-kv");
        assert_eq!(
            std::fs::read_to_string(&self.file).expect("file"),
            format!("PGPASSWORD={password}\n")
        );
    }
}

fn states(r: &serde_json::Value) -> Vec<(String, String, u64)> {
    r["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .map(|c| {
            (
                c["consumer"]
                    .as_str()
                    .expect("consumer")
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                c["state"].as_str().expect("state").to_owned(),
                c["attempts"].as_u64().expect("attempts"),
            )
        })
        .collect()
}

#[tokio::test]
async fn one_rotation_updates_all_five_consumer_types() {
    let w = world("all5").await;
    let out = w.fx.rotate_cmd().output().expect("run rotor");
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&out);
    assert_eq!(r["rotation"]["status"], "completed", "{r:#}");
    let (current, _) = w.fx.current().await;
    let password = current.expose("password").expect("password").to_owned();
    w.assert_everywhere(&password).await;
    assert_eq!(
        states(&r["rotation"]),
        [
            ("kubernetes".into(), "verified".into(), 1),
            ("gitlab".into(), "verified".into(), 1),
            ("github".into(), "verified".into(), 1),
            ("vault-kv".into(), "verified".into(), 1),
            ("file".into(), "verified".into(), 1),
        ]
    );
    let mut secrets = w.fx.all_secrets().await;
    secrets.push(w.gitlab.token.clone());
    secrets.push(w.github.token.clone());
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    rotor_testkit::assert_no_secret(&text(&out), &refs);
}

#[tokio::test]
async fn a_consumer_that_is_down_stays_pending_and_completes_on_the_next_run() {
    let w = world("pend").await;
    w.gitlab.set_down(true);
    let out = w.fx.rotate_cmd().output().expect("run rotor");
    assert!(
        !out.status.success(),
        "a pending consumer is not success:\n{}",
        text(&out)
    );
    let r = report(&out);
    let rotation = &r["rotation"];
    assert_eq!(rotation["status"], "open", "{r:#}");
    // Exactly GitLab is pending, after the in-run retries; the others completed once.
    assert_eq!(
        states(rotation),
        [
            ("kubernetes".into(), "verified".into(), 1),
            ("gitlab".into(), "pending".into(), 4),
            ("github".into(), "verified".into(), 1),
            ("vault-kv".into(), "verified".into(), 1),
            ("file".into(), "verified".into(), 1),
        ],
        "{r:#}"
    );
    let pending = &rotation["consumers"][1];
    assert!(
        pending["error"].as_str().expect("error").contains("503"),
        "{pending}"
    );
    assert!(
        rotation["error"]
            .as_str()
            .expect("error")
            .contains("1 of 5 consumer(s) pending")
    );
    // Promoted already: the new value is canonical and the old one is dead.
    let (current, v) = w.fx.current().await;
    assert_eq!(v, 2);
    let password = current.expose("password").expect("password").to_owned();
    let github_requests = w.github.requests();

    // A new rotation is refused while this one is pending…
    let again = w.fx.rotate_cmd().output().expect("run rotor");
    assert!(!again.status.success());
    assert!(text(&again).contains("still open"), "{}", text(&again));

    // …and once GitLab is back, the next run finishes it.
    w.gitlab.set_down(false);
    let out = w.fx.resume_cmd().output().expect("run rotor resume");
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&out);
    let resumed = &r["resumed"][0];
    assert_eq!(resumed["status"], "completed", "{r:#}");
    assert!(resumed.get("error").is_none(), "the cleared failure: {r:#}");
    let states = states(resumed);
    assert_eq!(states[1].1, "verified");
    assert!(states[1].2 >= 5, "GitLab tried again: {states:?}");
    assert_eq!(
        states[2],
        ("github".into(), "verified".into(), 1),
        "not pushed again"
    );
    assert_eq!(
        w.github.requests(),
        github_requests,
        "GitHub untouched by the retry"
    );
    w.assert_everywhere(&password).await;
    w.fx.assert_consistent().await;
}

/// Certificates land as `kubernetes.io/tls` Secrets with `tls.crt` and `tls.key`.
#[tokio::test]
async fn a_certificate_lands_as_a_tls_secret() {
    use k8s_openapi::api::core::v1::Secret;
    let fx = KindFixture::new(
        "tls",
        KindOptions {
            extra_consumers: "    - type: kubernetes\n      namespace: %NAMESPACE%\n      secret: web-tls\n      secretType: kubernetes.io/tls\n      data:\n        tls.crt: \"{{ certificate }}\"\n        tls.key: \"{{ privateKey }}\"\n".into(),
            ..KindOptions::default()
        },
        |n, v| async move { kinds::vault_pki(&n, &v).await },
    )
    .await;
    let out = fx.rotate_cmd().output().expect("run rotor");
    assert!(out.status.success(), "{}", text(&out));
    let api: kube::Api<Secret> = kube::Api::namespaced(fx.kube_client.clone(), &fx.namespace);
    let secret = api.get("web-tls").await.expect("the TLS Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.expect("data");
    let (current, _) = fx.current().await;
    assert_eq!(
        std::str::from_utf8(&data["tls.crt"].0).expect("utf-8"),
        current.expose("certificate").expect("certificate")
    );
    assert_eq!(
        std::str::from_utf8(&data["tls.key"].0).expect("utf-8"),
        current.expose("privateKey").expect("privateKey")
    );
}
