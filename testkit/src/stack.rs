//! Where the local services started by `dev/stack up` are.
//!
//! `dev/stack up` writes `.stack/env` (lines `export KEY='VALUE'`) and `dev/test` sources it
//! before running cargo. [`stack()`] reads the variables from the process environment and,
//! for any that are missing, from `.stack/env` at the workspace root, so a plain
//! `cargo test` works too once the stack is up.

use std::collections::HashMap;
use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Environment variable with the OpenBao (Vault) address, e.g. `http://127.0.0.1:18200`.
pub const VAULT_ADDR: &str = "VAULT_ADDR";
/// Environment variable with the OpenBao root token of the dev server.
pub const VAULT_TOKEN: &str = "VAULT_TOKEN";
/// Environment variable with the PostgreSQL host (loopback).
pub const PG_HOST: &str = "ROTOR_TEST_PG_HOST";
/// Environment variable with the PostgreSQL port.
pub const PG_PORT: &str = "ROTOR_TEST_PG_PORT";
/// Environment variable with the PostgreSQL superuser name.
pub const PG_ADMIN_USER: &str = "ROTOR_TEST_PG_ADMIN_USER";
/// Environment variable with the PostgreSQL superuser password.
pub const PG_ADMIN_PASSWORD: &str = "ROTOR_TEST_PG_ADMIN_PASSWORD";

/// How long a reachability probe of a service may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The running local services, as `dev/stack up` describes them.
///
/// `Debug` redacts the token and the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Stack {
    /// OpenBao address, e.g. `http://127.0.0.1:18200`.
    pub vault_addr: String,
    /// Root token of the OpenBao dev server (regenerated whenever the server restarts).
    pub vault_token: String,
    /// The project-owned PostgreSQL cluster (enforces scram-sha-256).
    pub pg: PgInfo,
}

/// Connection facts of the test PostgreSQL cluster.
///
/// `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgInfo {
    /// Host, a loopback address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Superuser name.
    pub admin_user: String,
    /// Superuser password.
    pub admin_password: String,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("vault_addr", &self.vault_addr)
            .field("vault_token", &"<redacted>")
            .field("pg", &self.pg)
            .finish()
    }
}

impl fmt::Debug for PgInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgInfo")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("admin_user", &self.admin_user)
            .field("admin_password", &"<redacted>")
            .finish()
    }
}

/// Why the stack description could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A variable is neither in the environment nor in `.stack/env`.
    #[error(
        "{var} is not set: start the services with `dev/stack up` (or run the tests through `dev/test`)"
    )]
    Missing {
        /// The variable's name.
        var: &'static str,
    },
    /// The port variable is not a number in 1..=65535.
    #[error(
        "{var} is not a valid port number: restart the services with `dev/stack up` (or run the tests through `dev/test`)"
    )]
    BadPort {
        /// The variable's name.
        var: &'static str,
    },
}

impl StackError {
    /// A fixed label for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            StackError::Missing { .. } => "missing",
            StackError::BadPort { .. } => "bad_port",
        }
    }
}

impl Stack {
    /// Builds the description from a variable lookup (the environment, a parsed env file,
    /// or a map in a test). Empty values count as missing.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Stack, StackError> {
        let get = |var: &'static str| {
            lookup(var)
                .filter(|v| !v.is_empty())
                .ok_or(StackError::Missing { var })
        };
        // Read in a fixed order so the first missing variable named is VAULT_ADDR.
        let vault_addr = get(VAULT_ADDR)?;
        let vault_token = get(VAULT_TOKEN)?;
        let host = get(PG_HOST)?;
        let port = get(PG_PORT)?
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(StackError::BadPort { var: PG_PORT })?;
        Ok(Stack {
            vault_addr,
            vault_token,
            pg: PgInfo {
                host,
                port,
                admin_user: get(PG_ADMIN_USER)?,
                admin_password: get(PG_ADMIN_PASSWORD)?,
            },
        })
    }
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Environment variable that, when set, replaces the path of the env file [`stack()`]
/// falls back to (tests of the fallback use it; `dev/stack` does not).
pub const STACK_ENV_FILE: &str = "ROTOR_STACK_ENV";

/// Path of the env file `dev/stack up` writes: `$WORKSPACE/.stack/env`, unless
/// [`STACK_ENV_FILE`] names another file.
pub fn env_file_path() -> PathBuf {
    match std::env::var_os(STACK_ENV_FILE) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => workspace_root().join(".stack").join("env"),
    }
}

/// Parses the env file format `dev/stack` writes: `export KEY='VALUE'` lines, where a
/// single quote inside VALUE is written `'\''`. Also accepts `KEY=VALUE`, double quotes
/// and backslash escapes; skips blank lines and `#` comments.
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let valid_key = !key.is_empty()
            && key.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
            && !key.starts_with(|c: char| c.is_ascii_digit());
        if valid_key {
            vars.insert(key.to_string(), unquote_shell_word(raw));
        }
    }
    vars
}

/// Reads one shell word made of unquoted, single-quoted and double-quoted parts.
fn unquote_shell_word(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                if !matches!(n, '"' | '\\' | '$' | '`') {
                                    out.push('\\');
                                }
                                out.push(n);
                            }
                        }
                        c => out.push(c),
                    }
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c if c.is_whitespace() => break,
            c => out.push(c),
        }
    }
    out
}

/// The running services, read once per test process.
///
/// ```no_run
/// let stack = rotor_testkit::stack();
/// let pg = format!("host={} port={} user={}", stack.pg.host, stack.pg.port, stack.pg.admin_user);
/// # let _ = (pg, &stack.vault_addr);
/// ```
///
/// # Panics
///
/// When a variable is missing (the message names it and says to run `dev/stack up`), or
/// when OpenBao or PostgreSQL does not accept a TCP connection at the recorded address.
/// Messages never contain the token or the password.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let file = std::fs::read_to_string(env_file_path())
            .map(|text| parse_env_file(&text))
            .unwrap_or_default();
        let stack = Stack::from_lookup(|var| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| file.get(var).cloned())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        probe("OpenBao", &host_port_of_url(&stack.vault_addr));
        probe(
            "PostgreSQL",
            &format!("{}:{}", stack.pg.host, stack.pg.port),
        );
        stack
    })
}

/// `host:port` of an `http(s)://host:port/...` address (default ports filled in).
fn host_port_of_url(url: &str) -> String {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, 443)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, 80)
    } else {
        (url, 80)
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    }
}

/// Panics unless `addr` accepts a TCP connection.
fn probe(service: &str, addr: &str) {
    let reachable = addr.to_socket_addrs().ok().is_some_and(|mut addrs| {
        addrs.any(|a| TcpStream::connect_timeout(&a, PROBE_TIMEOUT).is_ok())
    });
    if !reachable {
        panic!(
            "{service} at {addr} is not reachable: start the services with `dev/stack up` (or run the tests through `dev/test`)"
        );
    }
}

/// A target system started by `dev/stack up` beside OpenBao and PostgreSQL: where it
/// listens and the admin account rotor's tests act through.
///
/// `Debug` redacts the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Host, a loopback address.
    pub host: String,
    /// TCP port (for RabbitMQ: the AMQP port).
    pub port: u16,
    /// For RabbitMQ: the management API base URL, e.g. `http://127.0.0.1:15672`.
    pub url: Option<String>,
    /// Admin user name.
    pub admin_user: String,
    /// Admin password.
    pub admin_password: String,
}

impl fmt::Debug for ServiceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceInfo")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("url", &self.url)
            .field("admin_user", &self.admin_user)
            .field("admin_password", &"<redacted>")
            .finish()
    }
}

/// Variable prefix of each extra service.
const MYSQL: &str = "ROTOR_TEST_MYSQL";
const REDIS: &str = "ROTOR_TEST_REDIS";
const RABBITMQ: &str = "ROTOR_TEST_RABBITMQ";

impl ServiceInfo {
    /// Reads `<PREFIX>_HOST`, `_PORT`, `_ADMIN_USER`, `_ADMIN_PASSWORD` (and for RabbitMQ
    /// `_URL` and `_AMQP_PORT` in place of host and port).
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ServiceInfo, String> {
        let get = |suffix: &str| {
            let var = format!("{prefix}_{suffix}");
            lookup(&var).filter(|v| !v.is_empty()).ok_or_else(|| {
                format!(
                    "{var} is not set: start the services with `dev/stack up` (or run the tests through `dev/test`)"
                )
            })
        };
        let port_of = |suffix: &str| -> Result<u16, String> {
            get(suffix)?
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{prefix}_{suffix} is not a valid port number: restart the services with `dev/stack up`"))
        };
        if prefix == RABBITMQ {
            let url = get("URL")?;
            let host = host_port_of_url(&url)
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            Ok(ServiceInfo {
                host,
                port: port_of("AMQP_PORT")?,
                url: Some(url),
                admin_user: get("ADMIN_USER")?,
                admin_password: get("ADMIN_PASSWORD")?,
            })
        } else {
            Ok(ServiceInfo {
                host: get("HOST")?,
                port: port_of("PORT")?,
                url: None,
                admin_user: get("ADMIN_USER")?,
                admin_password: get("ADMIN_PASSWORD")?,
            })
        }
    }
}

fn env_or_file() -> impl Fn(&str) -> Option<String> {
    let file = std::fs::read_to_string(env_file_path())
        .map(|text| parse_env_file(&text))
        .unwrap_or_default();
    move |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| file.get(var).cloned())
    }
}

fn service(cell: &'static OnceLock<ServiceInfo>, prefix: &str, name: &str) -> &'static ServiceInfo {
    cell.get_or_init(|| {
        let info =
            ServiceInfo::from_lookup(prefix, env_or_file()).unwrap_or_else(|e| panic!("{e}"));
        probe(name, &format!("{}:{}", info.host, info.port));
        if let Some(url) = &info.url {
            probe(&format!("{name} management API"), &host_port_of_url(url));
        }
        info
    })
}

/// The test MariaDB server (enforces passwords; admin may create users and KILL).
///
/// # Panics
/// When `dev/stack up` has not recorded it or it does not accept connections.
pub fn mysql() -> &'static ServiceInfo {
    static CELL: OnceLock<ServiceInfo> = OnceLock::new();
    service(&CELL, MYSQL, "MariaDB")
}

/// The test Redis server (ACL users; the admin may `ACL SETUSER` and `CLIENT KILL`).
///
/// # Panics
/// When `dev/stack up` has not recorded it or it does not accept connections.
pub fn redis() -> &'static ServiceInfo {
    static CELL: OnceLock<ServiceInfo> = OnceLock::new();
    service(&CELL, REDIS, "Redis")
}

/// The test RabbitMQ broker with its management API (`url`) and AMQP port (`port`).
///
/// # Panics
/// When `dev/stack up` has not recorded it or it does not accept connections.
pub fn rabbitmq() -> &'static ServiceInfo {
    static CELL: OnceLock<ServiceInfo> = OnceLock::new();
    service(&CELL, RABBITMQ, "RabbitMQ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> HashMap<String, String> {
        [
            (VAULT_ADDR, "http://127.0.0.1:18200"),
            (VAULT_TOKEN, "tok"),
            (PG_HOST, "127.0.0.1"),
            (PG_PORT, "15432"),
            (PG_ADMIN_USER, "rotor_admin"),
            (PG_ADMIN_PASSWORD, "pw"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn from_lookup_reads_every_field() {
        let vars = full();
        let stack = Stack::from_lookup(|k| vars.get(k).cloned()).unwrap();
        assert_eq!(stack.vault_addr, "http://127.0.0.1:18200");
        assert_eq!(stack.pg.port, 15432);
        assert_eq!(stack.pg.admin_user, "rotor_admin");
    }

    #[test]
    fn missing_variable_names_it_and_the_command() {
        for var in [
            VAULT_ADDR,
            VAULT_TOKEN,
            PG_HOST,
            PG_PORT,
            PG_ADMIN_USER,
            PG_ADMIN_PASSWORD,
        ] {
            let mut vars = full();
            vars.remove(var);
            let err = Stack::from_lookup(|k| vars.get(k).cloned()).unwrap_err();
            assert_eq!(err.kind(), "missing");
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("{var} is not set")), "{msg}");
            assert!(msg.contains("`dev/stack up`"), "{msg}");
        }
    }

    #[test]
    fn empty_value_counts_as_missing() {
        let mut vars = full();
        vars.insert(VAULT_TOKEN.into(), String::new());
        let err = Stack::from_lookup(|k| vars.get(k).cloned()).unwrap_err();
        assert!(matches!(err, StackError::Missing { var } if var == VAULT_TOKEN));
    }

    #[test]
    fn bad_port_is_rejected() {
        for bad in ["x", "0", "70000", ""] {
            let mut vars = full();
            vars.insert(PG_PORT.into(), bad.into());
            let err = Stack::from_lookup(|k| vars.get(k).cloned()).unwrap_err();
            assert!(matches!(err.kind(), "bad_port" | "missing"), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut vars = full();
        vars.insert(VAULT_TOKEN.into(), "s3cr3t-token".into());
        vars.insert(PG_ADMIN_PASSWORD.into(), "s3cr3t-pw".into());
        let stack = Stack::from_lookup(|k| vars.get(k).cloned()).unwrap();
        let dbg = format!("{stack:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("15432"), "{dbg}");
    }

    #[test]
    fn env_file_round_trips_shell_quoting() {
        let text = "# written by dev/stack\n\
                    export VAULT_ADDR='http://127.0.0.1:18200'\n\
                    export VAULT_TOKEN='it'\\''s \"odd\" $x'\n\
                    \n\
                    PLAIN=value\n\
                    export DQ=\"a\\\"b\"\n\
                    export 1BAD='x'\n";
        let vars = parse_env_file(text);
        assert_eq!(vars["VAULT_ADDR"], "http://127.0.0.1:18200");
        assert_eq!(vars["VAULT_TOKEN"], "it's \"odd\" $x");
        assert_eq!(vars["PLAIN"], "value");
        assert_eq!(vars["DQ"], "a\"b");
        assert!(!vars.contains_key("1BAD"));
    }

    #[test]
    fn url_authority_gets_default_port() {
        assert_eq!(
            host_port_of_url("http://127.0.0.1:18200"),
            "127.0.0.1:18200"
        );
        assert_eq!(host_port_of_url("http://localhost/v1"), "localhost:80");
        assert_eq!(host_port_of_url("https://vault"), "vault:443");
    }

    #[test]
    fn workspace_root_holds_the_stack_dir() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("testkit").is_dir());
    }
}
