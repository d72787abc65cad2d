//! Unit tests of the GitLab consumer (no server).

use super::api::*;
use super::*;
use crate::consumers::scrub::Scrubber;
use crate::policy::GitlabTarget;
use crate::policy::{GitlabVariableType, Reference, Template};
use serde_json::json;

fn spec(url: &str, target: GitlabTarget) -> GitlabConsumer {
    GitlabConsumer {
        url: Url::parse(url).unwrap(),
        token_from: Reference::Env("T".to_owned()),
        target,
        key: "DB_PASSWORD".to_owned(),
        value: Template::parse("{{ password }}").unwrap(),
        masked: true,
        protected: false,
        raw: true,
        environment_scope: "production/*".to_owned(),
        variable_type: GitlabVariableType::EnvVar,
    }
}

/// What a [`Call`] borrows: a project variable's spec on gitlab.com, a token, a value.
struct Inputs {
    spec: GitlabConsumer,
    token: SecretString,
    value: SecretString,
}

impl Inputs {
    /// `project`'s variable, token `glpat-x`, `value`.
    fn new(project: &str, value: &str) -> Self {
        Inputs {
            spec: spec("https://gitlab.com", GitlabTarget::Project(project.into())),
            token: SecretString::from("glpat-x".to_owned()),
            value: SecretString::from(value.to_owned()),
        }
    }

    fn call(&self) -> Call<'_> {
        Call::new(&self.spec, &self.token, &self.value).unwrap()
    }
}

fn remote(value: Option<&str>) -> RemoteVariable {
    RemoteVariable {
        value: value.map(str::to_owned),
        variable_type: Some("env_var".to_owned()),
        protected: Some(false),
        masked: Some(true),
        raw: Some(true),
        environment_scope: Some("production/*".to_owned()),
    }
}

#[test]
fn urls_encode_the_path_and_keep_a_prefix() {
    let s = spec(
        "https://git.example.com/gitlab/",
        GitlabTarget::Project("acme/pay.ments".into()),
    );
    let (collection, item) = urls(&s).unwrap();
    assert_eq!(
        collection.as_str(),
        "https://git.example.com/gitlab/api/v4/projects/acme%2Fpay.ments/variables"
    );
    assert_eq!(
        item.as_str(),
        "https://git.example.com/gitlab/api/v4/projects/acme%2Fpay.ments/variables/DB_PASSWORD?filter%5Benvironment_scope%5D=production%2F*"
    );
    let s = spec("http://127.0.0.1:8080", GitlabTarget::Group("42".into()));
    let (collection, _) = urls(&s).unwrap();
    assert_eq!(
        collection.as_str(),
        "http://127.0.0.1:8080/api/v4/groups/42/variables"
    );
    assert_eq!(VariableLocation::of(&s).host, "127.0.0.1:8080");
    let s = spec(
        "https://user:pw@gitlab.com",
        GitlabTarget::Group("acme".into()),
    );
    let err = urls(&s).unwrap_err();
    assert_eq!(err.kind(), "invalid_url");
    assert!(!err.to_string().contains("pw"), "{err}");
}

#[test]
fn messages_are_rendered_from_every_gitlab_shape() {
    for (body, want) in [
        (
            json!({"message": "404 Project Not Found"}),
            "404 Project Not Found",
        ),
        (
            json!({"message": {"value": ["is invalid"]}}),
            "value is invalid",
        ),
        (
            json!({"message": {"key": ["(K) has already been taken"], "value": ["is invalid", "x"]}}),
            "key (K) has already been taken; value is invalid; value x",
        ),
        (
            json!({"error": "insufficient_scope", "error_description": "The request requires higher privileges."}),
            "The request requires higher privileges.",
        ),
        (json!({"error": "value is missing"}), "value is missing"),
    ] {
        assert_eq!(render_message(&body).as_deref(), Some(want));
    }
    assert_eq!(render_message(&json!({"other": 1})), None);
    assert_eq!(render_message(&json!({"message": null})), None);
}

#[test]
fn scrubber_removes_plain_and_json_escaped_secrets() {
    let scrubber = Scrubber::new(["pa\"ss\nword", "tok-123", ""]);
    let out = scrubber.scrub("echo pa\"ss\nword and {\"v\":\"pa\\\"ss\\nword\"} with tok-123 end");
    assert!(
        !out.contains("ss\nword") && !out.contains("ss\\nword"),
        "{out}"
    );
    assert!(!out.contains("tok-123"), "{out}");
    assert!(
        out.starts_with("echo [REDACTED] and") && out.ends_with(" end"),
        "{out}"
    );
}

#[test]
fn differences_compare_value_and_returned_attributes_only() {
    let inputs = Inputs::new("1", "s3cr3t-value");
    let call = inputs.call();
    let read_back = |r: &RemoteVariable| call.differences(r).read_back();
    let differs = |fields: &[&str]| ReadBack::Differs {
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    };
    assert_eq!(read_back(&remote(Some("s3cr3t-value"))), ReadBack::Matches);
    assert_eq!(read_back(&remote(Some("old-value"))), differs(&["value"]));
    let mut r = remote(Some("s3cr3t-value"));
    r.protected = Some(true);
    r.variable_type = Some("file".to_owned());
    assert_eq!(read_back(&r), differs(&["protected", "variable_type"]));
    // Older GitLab without `raw`: not compared.
    let mut r = remote(Some("s3cr3t-value"));
    r.raw = None;
    assert_eq!(read_back(&r), ReadBack::Matches);
    // Hidden: no value returned, so it cannot be proven; with an attribute off, the
    // attribute is named.
    let d = call.differences(&remote(None));
    assert_eq!(d.value, ValueState::Unreadable);
    assert_eq!(d.read_back(), ReadBack::NotReadable);
    let mut r = remote(None);
    r.protected = Some(true);
    assert_eq!(read_back(&r), differs(&["value (hidden)", "protected"]));
    // Another scope is refused, a missing scope field is not.
    let mut r = remote(Some("s3cr3t-value"));
    r.environment_scope = Some("*".to_owned());
    let err = call.check_scope(&r, GitlabOperation::Read).unwrap_err();
    assert_eq!(err.kind(), "scope_mismatch");
    assert!(!err.is_transient());
    r.environment_scope = None;
    assert!(call.check_scope(&r, GitlabOperation::Read).is_ok());
}

#[test]
fn a_variable_read_without_some_fields_has_none_of_them() {
    let r: RemoteVariable =
        serde_json::from_str(r#"{"key": "DB_PASSWORD", "value": null, "masked": true}"#).unwrap();
    assert!(r.value.is_none() && r.variable_type.is_none() && r.protected.is_none());
    assert!(r.raw.is_none() && r.environment_scope.is_none());
    assert_eq!(r.masked, Some(true));
}

#[test]
fn bodies_hold_every_attribute_and_the_key_only_on_create() {
    let inputs = Inputs::new("1", "va\"lue\u{1}");
    let call = inputs.call();
    let post: serde_json::Value = serde_json::from_slice(&call.body(true).unwrap()).unwrap();
    assert_eq!(
        post,
        json!({"key": "DB_PASSWORD", "value": "va\"lue\u{1}", "variable_type": "env_var",
               "protected": false, "masked": true, "raw": true,
               "environment_scope": "production/*"})
    );
    let put: serde_json::Value = serde_json::from_slice(&call.body(false).unwrap()).unwrap();
    assert!(put.get("key").is_none());
    assert_eq!(put["value"], "va\"lue\u{1}");
}

#[test]
fn tokens_must_be_header_values_and_are_never_shown() {
    let Inputs { spec, value, .. } = Inputs::new("1", "v");
    for bad in ["", "  ", "glpat-abc\ndef"] {
        let token = SecretString::from(bad.to_owned());
        let err = Call::new(&spec, &token, &value).err().unwrap();
        assert_eq!(err.kind(), "invalid_token");
        assert!(!err.is_transient());
    }
    let token = SecretString::from("glpat-canary-token".to_owned());
    let call = Call::new(&spec, &token, &value).unwrap();
    assert!(call.token.is_sensitive());
    assert!(!format!("{:?}", call.token).contains("canary"));
    assert_eq!(
        format!("{:?}", GitlabClient::new().unwrap()),
        "GitlabClient"
    );
}

#[test]
fn status_classification() {
    let inputs = Inputs::new("acme/x", "the-value");
    let call = inputs.call();
    let answer = |status: u16, body: serde_json::Value| Answer {
        status: StatusCode::from_u16(status).unwrap(),
        body: Zeroizing::new(body.to_string().into_bytes()),
    };
    for (status, kind, transient) in [
        (401, "auth", false),
        (403, "auth", false),
        (404, "not_found", false),
        (400, "rejected", false),
        (409, "rejected", false),
        (422, "rejected", false),
        (429, "http", true),
        (408, "http", true),
        (500, "http", true),
        (503, "http", true),
        (418, "http", false),
    ] {
        let err = answer(status, json!({"message": "m"})).failure(&call, GitlabOperation::Read);
        assert_eq!(
            (err.kind(), err.is_transient()),
            (kind, transient),
            "{status}"
        );
        assert_eq!(err.status(), Some(status));
    }
    // A message echoing the value is scrubbed.
    let err = answer(400, json!({"message": {"value": ["the-value is bad"]}}))
        .failure(&call, GitlabOperation::Create);
    let text = err.to_string();
    assert!(!text.contains("the-value"), "{text}");
    assert!(text.contains("value [REDACTED] is bad"), "{text}");
    assert!(
        text.contains(
            "project acme/x variable DB_PASSWORD (environment scope production/*) on gitlab.com"
        ),
        "{text}"
    );
    assert!(answer(404, json!({"message": "404 Variable Not Found"})).is_missing_variable(&call));
    assert!(!answer(404, json!({"message": "404 Project Not Found"})).is_missing_variable(&call));
    assert!(!answer(404, json!("<html>")).is_missing_variable(&call));
}
