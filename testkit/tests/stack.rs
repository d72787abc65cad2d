//! `stack()`: the contract with `dev/stack up`.
//!
//! The panic tests run this test binary again as a child with a controlled environment,
//! because `stack()` reads the process environment once.

use std::process::Command;

use rotor_testkit::stack::{
    PG_ADMIN_PASSWORD, PG_ADMIN_USER, PG_HOST, PG_PORT, STACK_ENV_FILE, VAULT_ADDR, VAULT_TOKEN,
};

const CHILD: &str = "ROTOR_TESTKIT_STACK_CHILD";
const ALL: [&str; 6] = [
    VAULT_ADDR,
    VAULT_TOKEN,
    PG_HOST,
    PG_PORT,
    PG_ADMIN_USER,
    PG_ADMIN_PASSWORD,
];

/// Runs test `name` of this binary in a child with none of the stack variables set and the
/// env-file fallback pointed at `env_file`; returns (success, combined output).
fn run_child(name: &str, env_file: &std::path::Path) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env(STACK_ENV_FILE, env_file);
    for var in ALL {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn stack_panics_with_the_command_when_nothing_is_set() {
    if std::env::var_os(CHILD).is_some() {
        rotor_testkit::stack();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_child(
        "stack_panics_with_the_command_when_nothing_is_set",
        &dir.path().join("no-such-env"),
    );
    assert!(!ok, "stack() must panic without its variables:\n{out}");
    assert!(
        out.contains(
            "VAULT_ADDR is not set: start the services with `dev/stack up` (or run the tests through `dev/test`)"
        ),
        "{out}"
    );
}

#[test]
fn stack_reads_the_env_file_and_panics_when_a_service_is_down() {
    if std::env::var_os(CHILD).is_some() {
        rotor_testkit::stack();
        return;
    }
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    std::fs::write(
        &env_file,
        format!(
            "export VAULT_ADDR='http://127.0.0.1:{port}'\n\
             export VAULT_TOKEN='do-not-print-this-token'\n\
             export ROTOR_TEST_PG_HOST='127.0.0.1'\n\
             export ROTOR_TEST_PG_PORT='{port}'\n\
             export ROTOR_TEST_PG_ADMIN_USER='admin'\n\
             export ROTOR_TEST_PG_ADMIN_PASSWORD='do-not-print-this-password'\n"
        ),
    )
    .unwrap();
    let (ok, out) = run_child(
        "stack_reads_the_env_file_and_panics_when_a_service_is_down",
        &env_file,
    );
    assert!(!ok, "stack() must panic when OpenBao is down:\n{out}");
    assert!(
        out.contains(&format!(
            "OpenBao at 127.0.0.1:{port} is not reachable: start the services with `dev/stack up`"
        )),
        "{out}"
    );
    rotor_testkit::assert_no_secret(
        &out,
        &["do-not-print-this-token", "do-not-print-this-password"],
    );
}

#[test]
fn running_stack_answers_with_the_recorded_token() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let stack = rotor_testkit::stack();
    assert!(
        stack.vault_addr.starts_with("http://127.0.0.1:"),
        "{}",
        stack.vault_addr
    );
    assert_eq!(stack.pg.host, "127.0.0.1");
    // The token in the environment is the live root token of the running OpenBao.
    let authority = stack.vault_addr.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /v1/auth/token/lookup-self HTTP/1.1\r\nHost: {authority}\r\nX-Vault-Token: {}\r\nConnection: close\r\n\r\n",
        stack.vault_token
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "lookup-self refused the recorded token: {}",
        response.lines().next().unwrap_or_default()
    );
}
