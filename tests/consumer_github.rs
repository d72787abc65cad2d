//! The GitHub consumer against [`rotor_testkit::FakeGithub`], a GitHub Actions secrets
//! API on loopback that holds a key pair per scope and decrypts every sealed value it is
//! sent, so these tests check the plaintext GitHub would store, not just status codes.

use std::path::Path;

use base64::Engine as _;
use crypto_box::PublicKey;
use crypto_box::aead::OsRng;
use rotor::consumers::github::{GithubClient, GithubError, MAX_VALUE_BYTES};
use rotor::policy::{ConsumerSpec, GithubConsumer, GithubTarget, Reference, Template};
use rotor::secret::SecretString;
use rotor_testkit::{FakeGithub, assert_no_secret, canary};

const REPO: &str = "acme/payments";
const NAME: &str = "PAYMENTS_DB_PASSWORD";

/// The policy YAML of one github consumer; `target` holds its target fields, one per
/// line (`repository: acme/payments`, `environment: production`, …).
fn policy_yaml(url: &str, target: &[&str], name: &str) -> String {
    let target = target.join("\n      ");
    format!(
        r#"apiVersion: rotor/v1
kind: RotationPolicy
metadata:
  name: gh-consumer
spec:
  credential:
    type: vault-userpass
    username: app
    password: {{length: 32, alphabet: alphanumeric}}
  vault:
    path: apps/gh-consumer
  consumers:
    - type: github
      url: "{url}"
      tokenFrom: {{env: GITHUB_TOKEN}}
      {target}
      name: {name}
      value: "{{{{ password }}}}"
"#
    )
}

/// A github consumer spec, through the policy loader as a user would write it.
fn consumer(url: &str, target: &[&str], name: &str) -> GithubConsumer {
    let set = rotor::policy::load_str(Path::new("gh.yaml"), &policy_yaml(url, target, name))
        .unwrap_or_else(|e| panic!("{e}"));
    let policy = set.get("gh-consumer").expect("policy loaded");
    match &policy.spec.consumers[..] {
        [ConsumerSpec::Github(g)] => g.clone(),
        other => panic!(
            "expected one github consumer, got {} consumers",
            other.len()
        ),
    }
}

fn repo_consumer(gh: &FakeGithub) -> GithubConsumer {
    consumer(&gh.base_url, &["repository: acme/payments"], NAME)
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

fn token(gh: &FakeGithub) -> SecretString {
    secret(&gh.token)
}

fn client() -> GithubClient {
    rotor_testkit::install_crypto_provider();
    GithubClient::new().expect("client builds")
}

/// A port on loopback where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn repository_secret_is_created_sealed_and_decrypts_to_the_value() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    let value = canary();

    let report = client()
        .push(&repo_consumer(&gh), &token(&gh), &secret(&value))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert!(report.changed && report.verified, "{report:?}");
    let stored = gh.secret(REPO, NAME).expect("secret created");
    assert_eq!(stored.plaintext, value, "GitHub decrypts exactly the value");
    assert_eq!(stored.created_at, stored.updated_at, "a new secret (201)");
    assert_eq!(stored.visibility, None);
    gh.user_agents().assert_all(rotor::outside::USER_AGENT);
}

#[tokio::test]
async fn update_advances_updated_at_and_is_verified() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    let spec = repo_consumer(&gh);
    let client = client();
    let (first, second) = (canary(), canary());

    client
        .push(&spec, &token(&gh), &secret(&first))
        .await
        .unwrap();
    let before = gh.secret(REPO, NAME).unwrap();
    let report = client
        .push(&spec, &token(&gh), &secret(&second))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = gh.secret(REPO, NAME).unwrap();

    assert!(report.changed && report.verified, "{report:?}");
    assert_eq!(after.plaintext, second);
    assert!(
        after.updated_at > before.updated_at,
        "{after:?} / {before:?}"
    );
    assert_eq!(
        after.created_at, before.created_at,
        "updated in place (204)"
    );
}

#[tokio::test]
async fn environment_secret_lands_in_the_environment_only() {
    let gh = FakeGithub::start();
    gh.add_environment(REPO, "production");
    let spec = consumer(
        &gh.base_url,
        &["repository: acme/payments", "environment: production"],
        NAME,
    );
    let value = canary();

    let report = client()
        .push(&spec, &token(&gh), &secret(&value))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert!(report.verified);
    assert_eq!(
        gh.secret("acme/payments:production", NAME)
            .unwrap()
            .plaintext,
        value
    );
    assert!(gh.secret(REPO, NAME).is_none(), "not a repository secret");
}

#[tokio::test]
async fn organization_secret_carries_its_visibility() {
    let gh = FakeGithub::start();
    gh.add_organization("acme");
    let client = client();
    for visibility in ["private", "all"] {
        let spec = consumer(
            &gh.base_url,
            &["organization: acme", &format!("visibility: {visibility}")],
            NAME,
        );
        let value = canary();
        let report = client
            .push(&spec, &token(&gh), &secret(&value))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(report.verified, "{visibility}");
        let stored = gh.secret("org:acme", NAME).unwrap();
        assert_eq!(stored.plaintext, value);
        assert_eq!(stored.visibility.as_deref(), Some(visibility));
    }
}

#[tokio::test]
async fn selected_visibility_without_repository_ids_is_refused_before_any_request() {
    let gh = FakeGithub::start();
    gh.add_organization("acme");
    let spec = consumer(
        &gh.base_url,
        &["organization: acme", "visibility: selected"],
        NAME,
    );

    let err = client()
        .push(&spec, &token(&gh), &secret(&canary()))
        .await
        .unwrap_err();

    assert!(
        matches!(err, GithubError::SelectedWithoutRepositories { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains("selected_repository_ids") && text.contains("`private`"),
        "{text}"
    );
    assert_eq!(gh.requests(), 0);
    assert!(gh.secret("org:acme", NAME).is_none());
}

#[test]
fn secret_names_github_refuses_are_refused_when_the_policy_loads() {
    for (name, expected) in [
        (
            "GITHUB_X",
            "found `GITHUB_X`, expected a name without the reserved GITHUB_ prefix",
        ),
        (
            "1ABC",
            "found `1ABC`, expected a name that does not start with a digit",
        ),
        ("A-B", "found `A-B`, expected only [A-Za-z0-9_]"),
    ] {
        let yaml = policy_yaml(
            "https://api.github.com",
            &["repository: acme/payments"],
            name,
        );
        let errors = rotor::policy::load_str(Path::new("gh.yaml"), &yaml).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        let e = &errors.0[0];
        assert_eq!(e.path, "spec.consumers[0].name", "{errors}");
        assert_eq!(e.message, expected, "{errors}");
        assert_eq!((e.line, e.column), (17, 13), "{errors}");
    }
    // And the same names load fine once they are valid.
    let yaml = policy_yaml(
        "https://api.github.com",
        &["repository: acme/payments"],
        "_A1",
    );
    rotor::policy::load_str(Path::new("gh.yaml"), &yaml).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_name_github_rejects_comes_back_as_rejected_with_githubs_message() {
    // The policy loader refuses this name; a spec built in code reaches GitHub's check.
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    let spec = GithubConsumer {
        url: url::Url::parse(&gh.base_url).unwrap(),
        token_from: Reference::Env("GITHUB_TOKEN".into()),
        target: GithubTarget::Repository {
            owner: "acme".into(),
            name: "payments".into(),
            environment: None,
        },
        name: "GITHUB_TOKEN_COPY".into(),
        value: Template::parse("{{ password }}").unwrap(),
    };

    let err = client()
        .push(&spec, &token(&gh), &secret(&canary()))
        .await
        .unwrap_err();

    assert!(matches!(err, GithubError::Rejected { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("GITHUB_ prefix"), "{err}");
}

#[tokio::test]
async fn after_github_rotates_its_key_the_next_push_uses_the_new_key() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    let spec = repo_consumer(&gh);
    let client = client();
    client
        .push(&spec, &token(&gh), &secret(&canary()))
        .await
        .unwrap();

    // What a client holding on to the old key would send is now refused.
    let old_key = public_key(&gh).await;
    let new_key_id = gh.rotate_key(REPO);
    assert_ne!(old_key.0, new_key_id);
    let stale = raw_put(&gh, &old_key, "stale-value").await;
    assert_eq!(stale, 422, "the fake refuses the old key, as GitHub does");

    let value = canary();
    let report = client
        .push(&spec, &token(&gh), &secret(&value))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.verified);
    assert_eq!(gh.secret(REPO, NAME).unwrap().plaintext, value);
}

/// The repository's current `(key_id, key)`, read over HTTP.
async fn public_key(gh: &FakeGithub) -> (String, PublicKey) {
    let doc: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/repos/acme/payments/actions/secrets/public-key",
            gh.base_url
        ))
        .bearer_auth(&gh.token)
        .header("user-agent", "test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(doc["key"].as_str().unwrap())
        .unwrap();
    (
        doc["key_id"].as_str().unwrap().to_owned(),
        PublicKey::try_from(raw.as_slice()).unwrap(),
    )
}

/// A PUT of `value` sealed to `key`; returns the status.
async fn raw_put(gh: &FakeGithub, key: &(String, PublicKey), value: &str) -> u16 {
    let sealed = key.1.seal(&mut OsRng, value.as_bytes()).unwrap();
    reqwest::Client::new()
        .put(format!(
            "{}/repos/acme/payments/actions/secrets/{NAME}",
            gh.base_url
        ))
        .bearer_auth(&gh.token)
        .header("user-agent", "test")
        .json(&serde_json::json!({
            "encrypted_value": base64::engine::general_purpose::STANDARD.encode(sealed),
            "key_id": key.0,
        }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_that_retrying_cannot_fix() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);

    let err = client()
        .push(
            &repo_consumer(&gh),
            &secret("ghp_wrong"),
            &secret(&canary()),
        )
        .await
        .unwrap_err();

    assert!(matches!(err, GithubError::Auth { .. }), "{err:?}");
    assert_eq!(err.kind(), "auth");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("Bad credentials"), "{err}");
    assert!(gh.secret(REPO, NAME).is_none());
}

#[tokio::test]
async fn github_down_is_transient_and_a_retry_succeeds() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    let spec = repo_consumer(&gh);
    let client = client();
    let value = canary();

    gh.set_down(true);
    let err = client
        .push(&spec, &token(&gh), &secret(&value))
        .await
        .unwrap_err();
    assert!(
        matches!(err, GithubError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());

    gh.set_down(false);
    client
        .push(&spec, &token(&gh), &secret(&value))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gh.secret(REPO, NAME).unwrap().plaintext, value);
}

#[tokio::test]
async fn no_answer_at_all_is_transient() {
    let spec = consumer(
        &format!("http://127.0.0.1:{}", closed_port()),
        &["repository: acme/payments"],
        NAME,
    );
    let err = client()
        .push(&spec, &secret("ghp_any"), &secret(&canary()))
        .await
        .unwrap_err();
    assert!(matches!(err, GithubError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn rate_limits_are_transient_and_say_when_to_retry() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    gh.set_rate_limited(Some(60));

    let err = client()
        .push(&repo_consumer(&gh), &token(&gh), &secret(&canary()))
        .await
        .unwrap_err();

    assert!(
        matches!(err, GithubError::RateLimited { status: 403, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    let wait = err.retry_after().expect("GitHub said when").as_secs();
    assert!((58..=60).contains(&wait), "{wait}");
    assert!(err.to_string().contains("retry after"), "{err}");
}

#[tokio::test]
async fn a_token_without_write_access_is_forbidden_not_transient() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    gh.set_read_only(true);

    let err = client()
        .push(&repo_consumer(&gh), &token(&gh), &secret(&canary()))
        .await
        .unwrap_err();

    assert!(matches!(err, GithubError::Forbidden { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("Resource not accessible"), "{err}");
}

#[tokio::test]
async fn unknown_repository_environment_or_organization_is_not_found_by_name() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    let client = client();
    for (target, named) in [
        (vec!["repository: acme/missing"], "repository acme/missing"),
        (
            vec!["repository: acme/payments", "environment: staging"],
            "environment \"staging\" of repository acme/payments",
        ),
        (
            vec!["organization: nobody", "visibility: all"],
            "organization nobody",
        ),
    ] {
        let spec = consumer(&gh.base_url, &target, NAME);
        let err = client
            .push(&spec, &token(&gh), &secret(&canary()))
            .await
            .unwrap_err();
        assert!(matches!(err, GithubError::NotFound { .. }), "{err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains(named), "{err}");
    }
}

#[tokio::test]
async fn values_over_48_kb_are_refused_before_any_request() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    let spec = repo_consumer(&gh);
    let client = client();

    let err = client
        .push(
            &spec,
            &token(&gh),
            &secret(&"x".repeat(MAX_VALUE_BYTES + 1)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GithubError::ValueTooLarge { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(gh.requests(), 0, "nothing was sent");

    // Exactly 48 KB is what GitHub stores.
    let largest = "y".repeat(MAX_VALUE_BYTES);
    client
        .push(&spec, &token(&gh), &secret(&largest))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gh.secret(REPO, NAME).unwrap().plaintext, largest);
}

#[tokio::test]
async fn the_value_and_token_never_appear_in_errors_or_debug_output() {
    let gh = FakeGithub::start();
    gh.add_repository(REPO);
    let client = client();
    let value = canary();
    let wrong_token = canary();
    let spec = repo_consumer(&gh);
    let mut output = format!("{client:?} {spec:?} {gh:?}");

    let mut errors = Vec::new();
    errors.push(
        client
            .push(&spec, &secret(&wrong_token), &secret(&value))
            .await
            .unwrap_err(),
    );
    let missing = consumer(&gh.base_url, &["repository: acme/missing"], NAME);
    errors.push(
        client
            .push(&missing, &token(&gh), &secret(&value))
            .await
            .unwrap_err(),
    );
    let selected = consumer(
        &gh.base_url,
        &["organization: acme", "visibility: selected"],
        NAME,
    );
    errors.push(
        client
            .push(&selected, &token(&gh), &secret(&value))
            .await
            .unwrap_err(),
    );
    errors.push(
        client
            .push(
                &spec,
                &token(&gh),
                &secret(&format!("{value}{}", "z".repeat(MAX_VALUE_BYTES))),
            )
            .await
            .unwrap_err(),
    );
    errors.push(
        client
            .push(
                &spec,
                &secret(&format!("{wrong_token}\nx")),
                &secret(&value),
            )
            .await
            .unwrap_err(),
    );
    for fault in [0, 1, 2] {
        match fault {
            0 => gh.set_down(true),
            1 => gh.set_rate_limited(Some(5)),
            _ => gh.set_read_only(true),
        }
        errors.push(
            client
                .push(&spec, &token(&gh), &secret(&value))
                .await
                .unwrap_err(),
        );
        gh.set_down(false);
        gh.set_rate_limited(None);
        gh.set_read_only(false);
    }
    let report = client
        .push(&spec, &token(&gh), &secret(&value))
        .await
        .unwrap();
    output.push_str(&format!("{report:?}"));

    assert_eq!(errors.len(), 8);
    for err in &errors {
        output.push_str(&format!("\n{err}\n{err:?}\n{}", err.kind()));
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            output.push_str(&format!("\n{s}"));
            source = s.source();
        }
    }
    assert_no_secret(&output, &[&value, &wrong_token, &gh.token]);
}

#[tokio::test]
async fn an_enterprise_base_url_with_an_api_prefix_works() {
    let gh = FakeGithub::start_with_prefix("/api/v3");
    gh.add_repository(REPO);
    assert!(gh.base_url.ends_with("/api/v3"), "{}", gh.base_url);
    let client = client();

    for base in [gh.base_url.clone(), format!("{}/", gh.base_url)] {
        let value = canary();
        let spec = consumer(&base, &["repository: acme/payments"], NAME);
        let report = client
            .push(&spec, &token(&gh), &secret(&value))
            .await
            .unwrap_or_else(|e| panic!("{base}: {e}"));
        assert!(report.verified);
        assert_eq!(gh.secret(REPO, NAME).unwrap().plaintext, value);
    }

    // The prefix is really used: the same host without it has no API.
    let root = gh.base_url.trim_end_matches("/api/v3");
    let spec = consumer(root, &["repository: acme/payments"], NAME);
    let err = client
        .push(&spec, &token(&gh), &secret(&canary()))
        .await
        .unwrap_err();
    assert!(matches!(err, GithubError::NotFound { .. }), "{err:?}");
}
