//! Unit tests of the PostgreSQL target (no server).

use super::*;

#[test]
fn identifiers_and_literals_are_quoted() {
    assert_eq!(quote_ident("app"), "\"app\"");
    assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    assert_eq!(quote_literal("it's").as_str(), "'it''s'");
}

#[test]
fn role_names_are_checked() {
    assert!(validate_role("payments_app").is_ok());
    assert!(validate_role(&"x".repeat(63)).is_ok());
    for bad in ["", "a\0b", &"x".repeat(64)] {
        let err = validate_role(bad).unwrap_err();
        assert_eq!(err.kind(), "invalid_role_name");
    }
}

#[test]
fn verifier_is_scram_and_hides_the_password() {
    let password = SecretString::from("canary-Pw-7c1e");
    let verifier = scram_verifier("r", &password).unwrap();
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{}", *verifier);
    assert!(!verifier.contains("canary-Pw-7c1e"));
    // Fresh salt each time.
    assert_ne!(*verifier, *scram_verifier("r", &password).unwrap());
    // Nothing in it needs escaping inside a literal.
    assert!(
        verifier
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=$:-".contains(c))
    );
    let err = scram_verifier("r", &SecretString::from("")).unwrap_err();
    assert_eq!(err.kind(), "empty_password");
}
