//! Redis ACL users as rotor reads them: names checked, passwords by their SHA-256,
//! and `ACL GETUSER`'s answer (RESP2 array or RESP3 map) parsed.

use ::redis::Value;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::{RedisError, RedisTarget, Session};
use crate::credentials::target::check_name;
use crate::secret::SecretString;

/// `ACL SETUSER <user> <rules…>`. The caller maps the error: a rule may hold a password
/// hash, which the server's message can quote.
pub(super) async fn set_user(
    session: &mut Session,
    user: &str,
    rules: &[&str],
) -> Result<(), ::redis::RedisError> {
    ::redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg(rules)
        .query_async::<()>(&mut session.conn)
        .await
}

impl RedisTarget {
    /// `ACL GETUSER`: `None` when the user does not exist.
    pub(super) async fn get_user(
        &self,
        session: &mut Session,
        user: &str,
    ) -> Result<Option<AclUser>, RedisError> {
        let value = ::redis::cmd("ACL")
            .arg("GETUSER")
            .arg(user)
            .query_async::<Value>(&mut session.conn)
            .await
            .map_err(|source| RedisError::LookupUser {
                user: user.to_owned(),
                address: self.address(),
                source,
            })?;
        AclUser::parse(value).map_err(|detail| RedisError::UnexpectedReply {
            user: user.to_owned(),
            address: self.address(),
            detail,
        })
    }
}

/// Redis refuses user names with spaces or NUL; other control characters would corrupt
/// the ACL file.
pub(super) fn validate_user(user: &str) -> Result<(), RedisError> {
    check_name(
        user,
        &[
            (str::is_empty, "it is empty"),
            (
                |user| user.chars().any(|c| c.is_whitespace() || c.is_control()),
                "it contains whitespace or control characters",
            ),
        ],
    )
    .map_err(|reason| RedisError::InvalidUserName {
        user: user.to_owned(),
        reason,
    })
}

/// Lowercase hex SHA-256 of the password, as Redis stores and `ACL GETUSER` lists it.
pub(super) fn password_hash(user: &str, password: &SecretString) -> Result<String, RedisError> {
    let text = password.expose_secret();
    if text.is_empty() {
        return Err(RedisError::EmptyPassword {
            user: user.to_owned(),
        });
    }
    Ok(hex::encode(Sha256::digest(text.as_bytes())))
}

/// What `ACL GETUSER` says about a user, as far as rotor needs it.
#[derive(Debug, Default)]
pub(super) struct AclUser {
    pub(super) flags: Vec<String>,
    pub(super) passwords: Vec<String>,
}

impl AclUser {
    pub(super) fn nopass(&self) -> bool {
        self.flags.iter().any(|f| f == "nopass")
    }

    /// Reads the flat key/value array of RESP2 or the map of RESP3; `Nil` = no such user.
    pub(super) fn parse(value: Value) -> Result<Option<AclUser>, &'static str> {
        let pairs: Vec<(Value, Value)> = match value {
            Value::Nil => return Ok(None),
            Value::Map(pairs) => pairs,
            Value::Array(items) => {
                if items.len() % 2 != 0 {
                    return Err("an odd number of fields");
                }
                let mut items = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            _ => return Err("neither a map nor an array"),
        };
        let mut user = AclUser::default();
        let mut saw_passwords = false;
        for (key, value) in pairs {
            match text(&key).as_deref() {
                Some("flags") => user.flags = texts(value)?,
                Some("passwords") => {
                    user.passwords = texts(value)?;
                    saw_passwords = true;
                }
                _ => {}
            }
        }
        if !saw_passwords {
            return Err("no passwords field");
        }
        Ok(Some(user))
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn texts(value: Value) -> Result<Vec<String>, &'static str> {
    match value {
        Value::Array(items) | Value::Set(items) => items
            .iter()
            .map(|item| text(item).ok_or("a list item that is not a string"))
            .collect(),
        _ => Err("a field that is not a list"),
    }
}
