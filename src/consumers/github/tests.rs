//! Unit tests of the GitHub consumer (no server).

use std::time::{SystemTime, UNIX_EPOCH};

use super::api::*;
use super::*;

fn url(s: &str) -> url::Url {
    url::Url::parse(s).unwrap()
}

#[test]
fn paths_join_onto_github_com_and_enterprise_bases() {
    let segs = ["repos", "acme", "payments", "actions", "secrets"];
    for (base, want) in [
        (
            "https://api.github.com",
            "https://api.github.com/repos/acme/payments/actions/secrets/public-key",
        ),
        (
            "https://api.github.com/",
            "https://api.github.com/repos/acme/payments/actions/secrets/public-key",
        ),
        (
            "https://ghe.example.com/api/v3",
            "https://ghe.example.com/api/v3/repos/acme/payments/actions/secrets/public-key",
        ),
        (
            "https://ghe.example.com/api/v3/",
            "https://ghe.example.com/api/v3/repos/acme/payments/actions/secrets/public-key",
        ),
    ] {
        assert_eq!(
            join(&url(base), &segs, "public-key").unwrap().as_str(),
            want
        );
    }
}

#[test]
fn environment_names_are_one_encoded_segment() {
    let segs = [
        "repos",
        "acme",
        "payments",
        "environments",
        "prod/eu 1",
        "secrets",
    ];
    let joined = join(&url("https://api.github.com"), &segs, "X").unwrap();
    assert_eq!(
        joined.path(),
        "/repos/acme/payments/environments/prod%2Feu%201/secrets/X"
    );
}

#[test]
fn updated_at_must_advance() {
    assert!(advanced("2024-05-01T10:00:00Z", "2024-05-01T10:00:01Z"));
    assert!(!advanced("2024-05-01T10:00:01Z", "2024-05-01T10:00:01Z"));
    assert!(!advanced("2024-05-01T10:00:02Z", "2024-05-01T10:00:01Z"));
    assert!(advanced(
        "2024-05-01T10:00:00Z",
        "2024-05-01T12:00:01+02:00"
    ));
    assert!(!advanced("garbage", "2024-05-01T10:00:01Z"));
}

#[test]
fn rate_limits_read_retry_after_then_reset() {
    let mut h = HeaderMap::new();
    h.insert("retry-after", HeaderValue::from_static("42"));
    assert_eq!(retry_after_secs(&h), Some(42));
    let mut h = HeaderMap::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    h.insert(
        "x-ratelimit-reset",
        HeaderValue::from_str(&(now + 120).to_string()).unwrap(),
    );
    let secs = retry_after_secs(&h).unwrap();
    assert!((118..=120).contains(&secs), "{secs}");
    assert_eq!(retry_after_secs(&HeaderMap::new()), None);
}

#[test]
fn messages_are_scrubbed_and_shortened() {
    let s = Scrubber::new(["ghp_token123", "va\"lue"]);
    assert_eq!(
        s.scrub(r#"x ghp_token123 va"lue va\"lue"#),
        "x [REDACTED] [REDACTED] [REDACTED]"
    );
    let long = shorten("é".repeat(400));
    assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
}

#[test]
fn github_messages_include_listed_errors() {
    let body = br#"{"message":"Validation Failed","errors":[{"message":"name is bad"}]}"#;
    assert_eq!(
        github_message(body).as_deref(),
        Some("Validation Failed; name is bad")
    );
    assert_eq!(github_message(b"<html>"), None);
}

#[test]
fn tokens_that_cannot_be_headers_are_refused_without_echo() {
    let err = bearer(&SecretString::from("bad\ntoken-secret")).unwrap_err();
    assert_eq!(err.kind(), "invalid_token");
    assert!(!err.to_string().contains("token-secret"));
}
