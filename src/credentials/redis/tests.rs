//! Unit tests of the Redis target (no server).

use ::redis::Value;

use super::acl::*;
use super::*;

#[test]
fn hash_is_lowercase_sha256_hex() {
    let hash = password_hash("u", &SecretString::from("foobar")).unwrap();
    // `echo -n foobar | sha256sum`
    assert_eq!(
        hash,
        "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"
    );
    let err = password_hash("u", &SecretString::from("")).unwrap_err();
    assert_eq!(err.kind(), "empty_password");
}

#[test]
fn user_names_are_checked() {
    assert!(validate_user("app_1-x").is_ok());
    for bad in ["", "a b", "a\0b", "a\nb"] {
        assert_eq!(validate_user(bad).unwrap_err().kind(), "invalid_user_name");
    }
}

#[test]
fn getuser_reply_is_parsed() {
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let reply = Value::Array(vec![
        bulk("flags"),
        Value::Array(vec![bulk("on")]),
        bulk("passwords"),
        Value::Array(vec![bulk("aa"), bulk("bb")]),
        bulk("commands"),
        bulk("+@all"),
    ]);
    let user = AclUser::parse(reply).unwrap().unwrap();
    assert_eq!(user.flags, ["on"]);
    assert_eq!(user.passwords, ["aa", "bb"]);
    assert!(!user.nopass());
    assert!(AclUser::parse(Value::Nil).unwrap().is_none());
    assert!(AclUser::parse(Value::Array(vec![bulk("flags")])).is_err());
}

#[test]
fn tls_modes_other_than_disable_are_refused_without_io() {
    let err = RedisTarget::from_parts(
        "127.0.0.1",
        6379,
        TargetTls::VerifyFull { ca_file: None },
        None,
    )
    .unwrap_err();
    assert_eq!(err.kind(), "tls_unsupported");
    assert!(err.to_string().contains("verify-full"), "{err}");
}
