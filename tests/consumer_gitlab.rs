//! The `gitlab` consumer against a fake GitLab that follows the documented CI/CD
//! variables API over real HTTP: create, update, no-op, environment scopes, groups,
//! numeric ids, GitLab's refusals, the create race, and no secret in any error.

use std::path::Path;

use rotor::consumers::gitlab::{GitlabClient, GitlabError, GitlabPushReport};
use rotor::policy::{
    ConsumerSpec, GitlabConsumer, GitlabTarget, GitlabVariableType, Reference, Template, load_str,
};
use rotor::secret::SecretString;
use rotor_testkit::gitlab::FakeVariable;
use rotor_testkit::{FakeGitlab, assert_no_secret, canary};

const PROJECT: &str = "acme/payments";
const KEY: &str = "PAYMENTS_DB_PASSWORD";

fn consumer(gitlab: &FakeGitlab, target: GitlabTarget) -> GitlabConsumer {
    GitlabConsumer {
        url: url::Url::parse(&gitlab.base_url).expect("base url"),
        token_from: Reference::Env("GITLAB_TOKEN".to_owned()),
        target,
        key: KEY.to_owned(),
        value: Template::parse("{{ password }}").expect("template"),
        masked: true,
        protected: true,
        raw: true,
        environment_scope: "*".to_owned(),
        variable_type: GitlabVariableType::EnvVar,
    }
}

fn project(gitlab: &FakeGitlab) -> GitlabConsumer {
    consumer(gitlab, GitlabTarget::Project(PROJECT.to_owned()))
}

/// rotor installs the process-wide rustls provider at start; so do the tests.
fn client() -> GitlabClient {
    rotor::install_crypto_provider();
    GitlabClient::new().expect("client")
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

async fn push(
    gitlab: &FakeGitlab,
    spec: &GitlabConsumer,
    value: &str,
) -> Result<GitlabPushReport, GitlabError> {
    let client = client();
    client
        .push(spec, &secret(&gitlab.token), &secret(value))
        .await
}

fn methods(gitlab: &FakeGitlab) -> Vec<String> {
    gitlab.requests().into_iter().map(|(m, _)| m).collect()
}

/// Display, Debug and the whole source chain of an error.
fn everything_about(err: &GitlabError) -> String {
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    text
}

#[tokio::test]
async fn a_missing_variable_is_created_and_read_back() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let value = canary();
    let report = push(&gitlab, &project(&gitlab), &value)
        .await
        .expect("push");
    assert!(report.changed && report.verified, "{report:?}");
    assert_eq!(
        gitlab.variable(PROJECT, KEY, "*"),
        Some(FakeVariable {
            value: value.clone(),
            masked: true,
            protected: true,
            raw: true,
            environment_scope: "*".to_owned(),
            variable_type: "env_var".to_owned(),
        })
    );
    assert_eq!(gitlab.writes(), 1);
    let item =
        format!("/api/v4/projects/acme%2Fpayments/variables/{KEY}?filter[environment_scope]");
    assert_eq!(
        gitlab.requests(),
        [
            ("GET".to_owned(), item.clone()),
            (
                "POST".to_owned(),
                "/api/v4/projects/acme%2Fpayments/variables".to_owned()
            ),
            ("GET".to_owned(), item),
        ]
    );
    gitlab.user_agents().assert_all(rotor::outside::USER_AGENT);
}

#[tokio::test]
async fn a_changed_value_is_updated_with_put() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let spec = project(&gitlab);
    push(&gitlab, &spec, &canary()).await.expect("first push");
    let second = canary();
    let report = push(&gitlab, &spec, &second).await.expect("second push");
    assert!(report.changed && report.verified);
    assert_eq!(
        gitlab.variable(PROJECT, KEY, "*").expect("variable").value,
        second
    );
    assert_eq!(gitlab.writes(), 2);
    assert_eq!(
        methods(&gitlab),
        ["GET", "POST", "GET", "GET", "PUT", "GET"]
    );
    let put = &gitlab.requests()[4].1;
    assert!(put.ends_with("?filter[environment_scope]"), "{put}");
}

#[tokio::test]
async fn an_unchanged_push_writes_nothing() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let spec = project(&gitlab);
    let value = canary();
    push(&gitlab, &spec, &value).await.expect("first push");
    let before = gitlab.requests().len();
    let report = push(&gitlab, &spec, &value).await.expect("second push");
    assert!(!report.changed && report.verified, "{report:?}");
    assert_eq!(gitlab.writes(), 1);
    // One read, no write and no second read.
    assert_eq!(gitlab.requests().len(), before + 1);
    assert_eq!(methods(&gitlab).last().map(String::as_str), Some("GET"));
}

#[tokio::test]
async fn a_changed_attribute_alone_is_an_update() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let value = canary();
    gitlab.set_variable(PROJECT, KEY, FakeVariable::new(&value));
    let mut spec = project(&gitlab);
    spec.variable_type = GitlabVariableType::File;
    let report = push(&gitlab, &spec, &value).await.expect("push");
    assert!(report.changed && report.verified);
    let stored = gitlab.variable(PROJECT, KEY, "*").expect("variable");
    assert_eq!(
        (
            stored.masked,
            stored.protected,
            stored.raw,
            stored.variable_type.as_str()
        ),
        (true, true, true, "file")
    );
    assert_eq!(methods(&gitlab), ["GET", "PUT", "GET"]);
}

#[tokio::test]
async fn environment_scopes_of_one_key_are_independent() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let mut production = project(&gitlab);
    production.environment_scope = "production".to_owned();
    let mut staging = project(&gitlab);
    staging.environment_scope = "review/*".to_owned();
    let (p1, s1, p2) = (canary(), canary(), canary());

    assert!(
        push(&gitlab, &production, &p1)
            .await
            .expect("production")
            .changed
    );
    assert!(push(&gitlab, &staging, &s1).await.expect("staging").changed);
    assert_eq!(
        gitlab
            .variable(PROJECT, KEY, "production")
            .expect("p")
            .value,
        p1
    );
    assert_eq!(
        gitlab.variable(PROJECT, KEY, "review/*").expect("s").value,
        s1
    );
    assert!(gitlab.variable(PROJECT, KEY, "*").is_none());

    // Updating one scope leaves the other alone; without the filter GitLab would answer
    // 409 for a key held in two scopes, so every item request carries it.
    let report = push(&gitlab, &production, &p2)
        .await
        .expect("update production");
    assert!(report.changed && report.verified);
    assert_eq!(
        gitlab
            .variable(PROJECT, KEY, "production")
            .expect("p")
            .value,
        p2
    );
    assert_eq!(
        gitlab.variable(PROJECT, KEY, "review/*").expect("s").value,
        s1
    );
    let report = push(&gitlab, &staging, &s1).await.expect("staging again");
    assert!(!report.changed);
    for (method, path) in gitlab.requests() {
        if method != "POST" {
            assert!(
                path.ends_with("?filter[environment_scope]"),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn group_variables_are_written_under_groups() {
    let gitlab = FakeGitlab::start();
    gitlab.add_group("acme/platform");
    let spec = consumer(&gitlab, GitlabTarget::Group("acme/platform".to_owned()));
    let value = canary();
    let report = push(&gitlab, &spec, &value).await.expect("push");
    assert!(report.changed && report.verified);
    assert_eq!(
        gitlab
            .variable("acme/platform", KEY, "*")
            .expect("variable")
            .value,
        value
    );
    assert!(
        gitlab
            .requests()
            .iter()
            .all(|(_, p)| p.starts_with("/api/v4/groups/acme%2Fplatform/variables")),
        "{:?}",
        gitlab.requests()
    );
    assert!(!push(&gitlab, &spec, &value).await.expect("again").changed);
}

#[tokio::test]
async fn numeric_ids_and_paths_address_the_same_project() {
    let gitlab = FakeGitlab::start();
    let id = gitlab.add_project(PROJECT);
    let by_id = consumer(&gitlab, GitlabTarget::Project(id.to_string()));
    let value = canary();
    assert!(push(&gitlab, &by_id, &value).await.expect("by id").changed);
    assert!(
        gitlab.requests()[0]
            .1
            .starts_with(&format!("/api/v4/projects/{id}/variables/"))
    );
    let report = push(&gitlab, &project(&gitlab), &value)
        .await
        .expect("by path");
    assert!(
        !report.changed,
        "the path names the variable the id created"
    );
    assert_eq!(gitlab.writes(), 1);
}

#[tokio::test]
async fn an_unknown_project_is_not_found_and_names_it() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let spec = consumer(&gitlab, GitlabTarget::Project("acme/missing".to_owned()));
    let err = push(&gitlab, &spec, &canary()).await.unwrap_err();
    assert_eq!(err.kind(), "not_found");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("project acme/missing"), "{text}");
    assert!(text.contains("404 Project Not Found"), "{text}");
    let group = consumer(&gitlab, GitlabTarget::Group("nobody".to_owned()));
    let err = push(&gitlab, &group, &canary()).await.unwrap_err();
    assert!(err.to_string().contains("group nobody"), "{err}");
    assert!(err.to_string().contains("404 Group Not Found"), "{err}");
    assert_eq!(gitlab.writes(), 0);
}

#[tokio::test]
async fn a_value_gitlab_cannot_mask_is_rejected_with_its_message() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let spec = project(&gitlab);
    // Six characters: GitLab masks only values of at least eight.
    let short = "Zq7xW2";
    let err = push(&gitlab, &spec, short).await.unwrap_err();
    assert_eq!(err.kind(), "rejected");
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("value is invalid"), "{text}");
    assert!(
        text.contains("creating project acme/payments variable"),
        "{text}"
    );
    assert_no_secret(&everything_about(&err), &[short]);

    // With raw: false GitLab masks only [a-zA-Z0-9_+=/@:.~-]; the value is a canary.
    let mut expanding = spec.clone();
    expanding.raw = false;
    let value = format!("{}$HOME", canary());
    let err = push(&gitlab, &expanding, &value).await.unwrap_err();
    assert_eq!(err.kind(), "rejected");
    assert!(err.to_string().contains("value is invalid"), "{err}");
    assert_no_secret(&everything_about(&err), &[&value]);
    assert!(gitlab.variable(PROJECT, KEY, "*").is_none());
    assert_eq!(gitlab.writes(), 0);
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_and_not_transient() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let wrong = format!("glpat-{}", canary());
    let value = canary();
    let client = client();
    let err = client
        .push(&project(&gitlab), &secret(&wrong), &secret(&value))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "auth");
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_transient());
    assert!(err.to_string().contains("401 Unauthorized"), "{err}");
    assert_no_secret(&everything_about(&err), &[&wrong, &value, &gitlab.token]);
    assert_eq!(gitlab.writes(), 0);
}

#[tokio::test]
async fn an_unavailable_gitlab_is_transient_and_recovers() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let spec = project(&gitlab);
    let value = canary();
    gitlab.set_down(true);
    let err = push(&gitlab, &spec, &value).await.unwrap_err();
    assert_eq!((err.kind(), err.status()), ("http", Some(503)));
    assert!(err.is_transient());
    gitlab.set_down(false);
    let report = push(&gitlab, &spec, &value)
        .await
        .expect("push after recovery");
    assert!(report.changed && report.verified);
}

#[tokio::test]
async fn no_listener_is_a_transient_transport_error() {
    let gitlab = FakeGitlab::start();
    let mut spec = project(&gitlab);
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    spec.url = url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    let value = canary();
    let err = push(&gitlab, &spec, &value).await.unwrap_err();
    assert_eq!(err.kind(), "transport");
    assert!(err.is_transient());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert_no_secret(&everything_about(&err), &[&value, &gitlab.token]);
}

#[tokio::test]
async fn a_lost_create_race_recovers_with_put() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    // Another writer's variable, which the first read does not see.
    gitlab.set_variable(PROJECT, KEY, FakeVariable::new("someone-elses-value"));
    gitlab.hide_next_get();
    let value = canary();
    let report = push(&gitlab, &project(&gitlab), &value)
        .await
        .expect("push");
    assert!(report.changed && report.verified, "{report:?}");
    assert_eq!(methods(&gitlab), ["GET", "POST", "PUT", "GET"]);
    let stored = gitlab.variable(PROJECT, KEY, "*").expect("variable");
    assert_eq!(stored.value, value);
    assert!(stored.masked && stored.protected && stored.raw);
    // The refused POST wrote nothing; the PUT did.
    assert_eq!(gitlab.writes(), 1);
}

#[tokio::test]
async fn neither_value_nor_token_reaches_errors_debug_or_requests() {
    let gitlab = FakeGitlab::start();
    gitlab.add_project(PROJECT);
    let value = canary();
    let client = client();
    let token = secret(&gitlab.token);
    let spec = project(&gitlab);

    let report = client
        .push(&spec, &token, &secret(&value))
        .await
        .expect("push");
    let mut seen = format!("{client:?} {report:?} {report} {spec:?}");

    let mut errors = Vec::new();
    let mut rejected = spec.clone();
    rejected.raw = false;
    errors.push(
        client
            .push(&rejected, &token, &secret(&format!("{value}\n")))
            .await
            .unwrap_err(),
    );
    let missing = consumer(&gitlab, GitlabTarget::Project("acme/gone".to_owned()));
    errors.push(
        client
            .push(&missing, &token, &secret(&value))
            .await
            .unwrap_err(),
    );
    gitlab.set_down(true);
    errors.push(
        client
            .push(&spec, &token, &secret(&value))
            .await
            .unwrap_err(),
    );
    gitlab.set_down(false);
    let bad_token = secret(&format!("{}\r\nX-Leak: {value}", gitlab.token));
    errors.push(
        client
            .push(&spec, &bad_token, &secret(&value))
            .await
            .unwrap_err(),
    );
    let kinds: Vec<&str> = errors.iter().map(GitlabError::kind).collect();
    assert_eq!(kinds, ["rejected", "not_found", "http", "invalid_token"]);
    for err in &errors {
        seen.push_str(&everything_about(err));
    }
    for (method, path) in gitlab.requests() {
        seen.push_str(&format!(" {method} {path}"));
    }
    assert_no_secret(&seen, &[&value, &gitlab.token]);
}

/// A masked consumer whose generator can produce characters GitLab cannot mask without
/// `raw` is refused when the policy is loaded, before anything is pushed.
#[test]
fn a_masked_expanding_variable_with_unmaskable_characters_is_refused_at_load() {
    let policy = |alphabet: &str, raw: &str| {
        format!(
            "apiVersion: rotor/v1
kind: RotationPolicy
metadata:
  name: gl
spec:
  credential:
    type: postgres
    connection:
      host: db
      adminFrom: {{vault: {{path: admins/pg}}}}
    username: app
    password: {{length: 32, alphabet: {alphabet}}}
  vault:
    path: apps/gl
  consumers:
    - type: gitlab
      tokenFrom: {{env: GITLAB_TOKEN}}
      project: acme/payments
      key: PAYMENTS_DB_PASSWORD
      value: \"{{{{ password }}}}\"
      masked: true
{raw}"
        )
    };
    let file = Path::new("gitlab.yaml");
    let errors = load_str(file, &policy("ascii-printable", "      raw: false\n"))
        .expect_err("ascii-printable passwords cannot be masked without raw");
    assert_eq!(errors.0.len(), 1, "{errors}");
    let e = &errors.0[0];
    assert_eq!(e.path, "spec.consumers[0].masked");
    assert!(e.message.contains("raw: false"), "{e}");
    assert!(e.message.contains("[a-zA-Z0-9_+=/@:.~-]"), "{e}");

    // The same generator with raw (the default) and an alphanumeric one without are fine.
    for (alphabet, raw) in [
        ("ascii-printable", ""),
        ("alphanumeric", "      raw: false\n"),
    ] {
        let set = load_str(file, &policy(alphabet, raw)).unwrap_or_else(|e| panic!("{e}"));
        let p = set.get("gl").expect("policy");
        let ConsumerSpec::Gitlab(g) = &p.spec.consumers[0] else {
            panic!("not a gitlab consumer");
        };
        assert!(g.masked);
        assert_eq!(g.raw, raw.is_empty());
    }
}
