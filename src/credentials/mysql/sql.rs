//! The SQL side of the MariaDB/MySQL target: account names checked and quoted, the
//! `mysql_native_password` hash and the `ALTER USER` that carries it, account lookups
//! and the wait for killed sessions. No statement here ever holds a cleartext password.

use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use secrecy::ExposeSecret;
use sha1::{Digest, Sha1};
use tracing::warn;
use zeroize::{Zeroize, Zeroizing};

use super::MysqlError;
use crate::credentials::target::check_name;
use crate::secret::SecretString;

/// How long [`super::MysqlTarget::terminate_sessions`] waits for killed sessions to be gone.
const TERMINATE_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn account_exists(
    conn: &mut Conn,
    user: &str,
    account_host: &str,
) -> Result<bool, MysqlError> {
    conn.exec_first::<i64, _, _>(
        "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?",
        (user, account_host),
    )
    .await
    .map(|count| count.unwrap_or(0) > 0)
    .map_err(|source| MysqlError::LookupUser {
        user: user.to_owned(),
        account_host: account_host.to_owned(),
        source: Box::new(source),
    })
}

/// Polls `PROCESSLIST` until none of `ids` is listed (killed sessions show as `Killed`
/// until their thread has ended), for at most [`TERMINATE_WAIT`].
pub(super) async fn wait_until_gone(
    conn: &mut Conn,
    ids: &[u64],
) -> Result<(), mysql_async::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let sql = format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID IN ({list})");
    let deadline = Instant::now() + TERMINATE_WAIT;
    loop {
        let left: Option<i64> = conn.query_first(sql.as_str()).await?;
        if left.unwrap_or(0) == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            warn!(
                sessions = left.unwrap_or(0),
                "Killed sessions still listed after {}s.",
                TERMINATE_WAIT.as_secs()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn set_password_error(
    user: &str,
    account_host: &str,
    error: &mysql_async::Error,
    hash: &str,
) -> MysqlError {
    let (code, text) = match error {
        mysql_async::Error::Server(e) => (Some(e.code), e.message.clone()),
        other => (None, crate::error_chain(other)),
    };
    // A syntax error echoes part of the statement; keep the hash out of the message.
    let message = text.replace(hash, "[REDACTED]");
    MysqlError::SetPassword {
        user: user.to_owned(),
        account_host: account_host.to_owned(),
        code,
        message,
    }
}

/// The `mysql_native_password` hash the server stores: `*` followed by the upper-case hex
/// of SHA1(SHA1(password)). The intermediate SHA1(password) — what the protocol's
/// scramble is made of — is wiped.
pub(super) fn native_password_hash(password: &SecretString) -> Zeroizing<String> {
    let mut stage1: [u8; 20] = Sha1::digest(password.expose_secret().as_bytes()).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    stage1.zeroize();
    Zeroizing::new(format!("*{}", hex::encode_upper(stage2)))
}

/// `ALTER USER` with the hash (which holds only `*` and hex digits, so it needs no escaping).
pub(super) fn alter_user_sql(
    user: &str,
    account_host: &str,
    hash: &str,
    mariadb: bool,
) -> Zeroizing<String> {
    let account = quote_account(user, account_host);
    Zeroizing::new(if mariadb {
        format!("ALTER USER {account} IDENTIFIED VIA mysql_native_password USING '{hash}'")
    } else {
        format!("ALTER USER {account} IDENTIFIED WITH mysql_native_password AS '{hash}'")
    })
}

/// `` `user`@`host` `` with embedded backticks doubled. Account names may be quoted as
/// identifiers; inside backticks a backslash is an ordinary character whatever the
/// `sql_mode` (unlike in a string literal under `NO_BACKSLASH_ESCAPES` or not).
pub(super) fn quote_account(user: &str, account_host: &str) -> String {
    format!("{}@{}", quote_ident(user), quote_ident(account_host))
}

fn quote_ident(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Names longer than the server allows need no check: the server refuses them itself
/// (no silent truncation).
pub(super) fn validate_user(user: &str) -> Result<(), MysqlError> {
    check_name(
        user,
        &[
            // The anonymous account: never a rotation target.
            (str::is_empty, "empty (the anonymous account)"),
            (|user| user.contains('\0'), "contains a NUL character"),
        ],
    )
    .map_err(|reason| MysqlError::InvalidUserName {
        user: user.to_owned(),
        reason,
    })
}

pub(super) fn validate_account_host(account_host: &str) -> Result<(), MysqlError> {
    if account_host.contains('\0') {
        return Err(MysqlError::InvalidAccountHost {
            account_host: account_host.to_owned(),
            reason: "contains a NUL character",
        });
    }
    Ok(())
}
