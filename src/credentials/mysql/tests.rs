//! Unit tests of the MariaDB/MySQL target (no server).

use std::io;
use std::path::PathBuf;

use mysql_async::IoError;

use super::sql::*;
use super::tls::*;
use super::*;

#[test]
fn native_hash_matches_the_server_password_function() {
    // SELECT PASSWORD('password') on MariaDB and MySQL 5.7.
    assert_eq!(
        native_password_hash(&SecretString::from("password")).as_str(),
        "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    );
    let hash = native_password_hash(&SecretString::from("canary-Pw-7c1e"));
    assert_eq!(hash.len(), 41);
    assert!(!hash.contains("canary"));
}

#[test]
fn alter_user_carries_the_hash_not_the_password() {
    let password = SecretString::from("canary-Pw-7c1e");
    let hash = native_password_hash(&password);
    let maria = alter_user_sql("app", "%", &hash, true);
    assert_eq!(
        maria.as_str(),
        format!(
            "ALTER USER `app`@`%` IDENTIFIED VIA mysql_native_password USING '{}'",
            *hash
        )
    );
    assert!(!maria.contains("canary-Pw-7c1e"));
    let mysql = alter_user_sql("app", "10.0.0.%", &hash, false);
    assert!(mysql.ends_with(&format!(
        "IDENTIFIED WITH mysql_native_password AS '{}'",
        *hash
    )));
    assert!(!mysql.contains("canary-Pw-7c1e"));
}

#[test]
fn accounts_are_quoted_as_identifiers() {
    assert_eq!(quote_account("app", "%"), "`app`@`%`");
    assert_eq!(quote_account("a`b", "h'\\"), "`a``b`@`h'\\`");
}

#[test]
fn names_are_checked() {
    assert!(validate_user("payments_app").is_ok());
    for bad in ["", "a\0b"] {
        assert_eq!(validate_user(bad).unwrap_err().kind(), "invalid_user_name");
    }
    assert!(validate_account_host("%").is_ok());
    assert_eq!(
        validate_account_host("a\0").unwrap_err().kind(),
        "invalid_account_host"
    );
}

#[test]
fn set_password_errors_never_echo_the_hash() {
    let hash = native_password_hash(&SecretString::from("x"));
    let server = mysql_async::Error::Server(mysql_async::ServerError {
        code: 1064,
        message: format!("You have an error in your SQL syntax near '{}'", *hash),
        state: "42000".into(),
    });
    let err = set_password_error("app", "%", &server, &hash);
    let text = err.to_string();
    assert!(!text.contains(hash.as_str()), "{text}");
    assert!(text.contains("[REDACTED]"));
    assert!(!err.is_transient());
    assert!(!format!("{err:?}").contains(hash.as_str()));
}

#[test]
fn ca_files_are_read_up_front() {
    let err = MysqlTarget::from_parts(
        "127.0.0.1",
        3306,
        TargetTls::VerifyFull {
            ca_file: Some(PathBuf::from("/nonexistent/rotor-ca.pem")),
        },
        "admin",
        SecretString::from("x"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), "read_ca_file");
    assert!(err.to_string().contains("/nonexistent/rotor-ca.pem"));

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = build_ssl_opts(&TargetTls::Require {
        ca_file: Some(junk.clone()),
    })
    .unwrap_err();
    assert_eq!(err.kind(), "invalid_ca_file");
}

#[test]
fn a_host_name_mismatch_under_require_with_a_ca_explains_the_gap() {
    let mismatch = || {
        mysql_async::Error::Io(IoError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        )))
    };
    let with_ca = TargetTls::Require {
        ca_file: Some(PathBuf::from("/ca.pem")),
    };
    assert!(is_name_mismatch(&mismatch()));
    assert!(tls_hint(&with_ca, &mismatch()).contains("host-name check"));
    assert_eq!(
        tls_hint(&TargetTls::VerifyFull { ca_file: None }, &mismatch()),
        ""
    );
    let unknown_ca = mysql_async::Error::Io(IoError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
    )));
    assert_eq!(tls_hint(&with_ca, &unknown_ca), "");
    // A TLS failure is not worth retrying; a refused connection is.
    assert!(!connection_failed(&unknown_ca));
    let refused = mysql_async::Error::Io(IoError::Io(io::Error::from(
        io::ErrorKind::ConnectionRefused,
    )));
    assert!(connection_failed(&refused));
}

#[test]
fn only_access_denied_is_a_rejection() {
    let server = |code| {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "msg".into(),
            state: "28000".into(),
        })
    };
    assert!(matches!(
        classify_login_error(&server(1045)),
        AuthOutcome::Rejected { code, .. } if code == "1045"
    ));
    for code in [1044, 1130, 4151, 1040] {
        assert!(matches!(
            classify_login_error(&server(code)),
            AuthOutcome::Unreachable { .. }
        ));
    }
}
