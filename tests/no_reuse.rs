//! No reuse, strong values (issue 7), against the real OpenBao and PostgreSQL of
//! `dev/stack up`, mostly through the `rotor` binary:
//!
//! - a generator forced to repeat the current value (the debug-build test seam
//!   `ROTOR_TEST_GENERATOR_REPEAT=1`) is regenerated, and the rotation completes;
//! - the history keeps keyed fingerprints of the last values, newest first, never a
//!   value, and recording the same promotion again changes nothing;
//! - a value Vault produced before is refused: a `vault-database` static role whose
//!   connection uses an OpenBao password policy of one repeated character makes
//!   Vault's output deterministic, so switching between two such policies makes Vault
//!   hand back a previous password for real — no seam needed;
//! - generator rules: minima and exclusions hold on 1,000 values of a loaded policy,
//!   and an unsatisfiable generator is refused at load with its field path.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::kinds::{enable_engine, secret_map};
use common::{Fixture, Options, assert_no_leak, text};
use rotor::credentials::AuthOutcome;
use rotor::engine::history::{self, History};
use rotor::engine::{Engine, EngineConfig};
use rotor::policy;
use rotor::secret::{SecretMap, SecretString};
use rotor::vault::{AuthAs, Vault};
use rotor_testkit::stack;
use secrecy::ExposeSecret;
use serde_json::json;

/// The generator line the Fixture writes, and a stricter one with minima and exclusions.
const FIXTURE_PASSWORD: &str = "password: {length: 32, alphabet: alphanumeric}";
const STRICT_PASSWORD: &str = "password: {length: 16, alphabet: alphanumeric, minLower: 2, minUpper: 2, minDigits: 4, exclude: \"0O1lI\"}";

fn use_strict_generator(fx: &Fixture) {
    let file = fx.policy_dir().join("policy.yaml");
    let yaml = std::fs::read_to_string(&file).expect("policy file");
    assert!(
        yaml.contains(FIXTURE_PASSWORD),
        "the fixture's generator line changed"
    );
    std::fs::write(&file, yaml.replace(FIXTURE_PASSWORD, STRICT_PASSWORD)).expect("write policy");
}

fn strict_ok(password: &str) -> bool {
    password.chars().count() == 16
        && password.chars().all(|c| c.is_ascii_alphanumeric())
        && !password.contains(['0', 'O', '1', 'l', 'I'])
        && password.chars().filter(char::is_ascii_lowercase).count() >= 2
        && password.chars().filter(char::is_ascii_uppercase).count() >= 2
        && password.chars().filter(char::is_ascii_digit).count() >= 4
}

fn json_report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{}", text(out)))
}

async fn engine(vault: &Vault) -> Engine {
    Engine::new(
        vault.clone(),
        EngineConfig::default(),
        rotor::consumers::Consumers::new(),
    )
    .await
    .expect("engine")
}

#[tokio::test]
async fn a_forced_repeat_is_regenerated_and_the_rotation_completes() {
    let fx = Fixture::new("reuse-seam", Options::default()).await;
    use_strict_generator(&fx);

    // One ordinary rotation, then two whose generator first repeats the current value.
    let out = fx.rotate();
    assert!(out.status.success(), "first rotation:\n{}", text(&out));
    assert!(!text(&out).contains("regenerating"), "{}", text(&out));
    for round in 2..=3 {
        let (before, _) = fx.current().await;
        let out = fx
            .rotate_cmd()
            .env(history::REPEAT_SEAM_ENV, "1")
            .args(["-o", "json"])
            .output()
            .expect("run rotor");
        assert!(out.status.success(), "rotation {round}:\n{}", text(&out));
        let report = json_report(&out);
        assert_eq!(report["rotation"]["status"], "completed");
        let staged = report["rotation"]["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["step"] == "staged")
            .expect("staged step");
        assert!(
            staged["detail"]
                .as_str()
                .expect("detail")
                .contains("after regenerating 1 value(s) that repeated a previous one"),
            "{staged}"
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains(
                "The generated value repeats the current or a recent one (reuse); regenerating."
            ),
            "the log must say a repeat was regenerated:\n{log}"
        );
        let (after, _) = fx.current().await;
        assert_ne!(after, before);
        assert!(
            strict_ok(&after),
            "rotation {round} broke the generator rules"
        );
        assert_no_leak(&out, &fx.all_passwords().await);
    }

    // The final value differs from every earlier version, and everything agrees on it.
    let (current, latest) = fx.current().await;
    assert_eq!(latest, 4);
    for v in 1..latest {
        assert_ne!(fx.version(v).await, current, "version {v} came back");
    }
    fx.assert_consistent().await;
}

#[tokio::test]
async fn history_holds_fingerprints_of_the_last_values_never_values() {
    let fx = Fixture::new("reuse-hist", Options::default()).await;
    for round in 1..=3 {
        let out = fx.rotate();
        assert!(out.status.success(), "rotation {round}:\n{}", text(&out));
    }
    let (_, latest) = fx.current().await;
    assert_eq!(latest, 4);

    // The raw KV entry: a list of 3 + 1 keyed fingerprints, newest first.
    let engine = engine(&fx.vault).await;
    let store = engine.history();
    let path = store.path(&fx.name);
    assert_eq!(path, format!("rotor/history/{}", fx.name));
    let entry = fx
        .vault
        .kv_read_value(store.mount(), &path)
        .await
        .expect("read history")
        .expect("history exists");
    let raw = serde_json::to_string(&entry.data).expect("json");
    for password in fx.all_passwords().await {
        assert!(!raw.contains(&password), "the history holds a value");
    }
    let stored: Vec<String> = entry.data["fingerprints"]
        .as_array()
        .expect("fingerprints list")
        .iter()
        .map(|f| f.as_str().expect("string").to_owned())
        .collect();
    assert_eq!(entry.data["policy"], fx.name.as_str());
    let mut expected = Vec::new();
    for v in (1..=latest).rev() {
        let value = secret_map_of(&fx.version(v).await);
        expected.push(
            history::secret_fingerprint(
                engine.fingerprints(),
                policy::CredentialKind::Postgres,
                &value,
            )
            .expect("fingerprint"),
        );
    }
    assert_eq!(stored, expected, "versions {latest}..1, newest first");
    for f in &stored {
        let hex = f.strip_prefix("hmac-sha256:").expect("keyed fingerprint");
        assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert_eq!(store.load(&fx.name).await.expect("load"), stored);

    // Recording the latest promotion again (a resumed promote) writes nothing.
    let written = store
        .record(&fx.name, &stored[0], Some(&stored[1]))
        .await
        .expect("record");
    assert!(!written);
    let again = fx
        .vault
        .kv_read_value(store.mount(), &path)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(again.version, entry.version);

    // A short history keeps only the newest fingerprints.
    let short = History::new(fx.vault.clone(), store.mount(), "rotor", 2);
    assert!(
        short
            .record(&fx.name, "hmac-sha256:next", Some(&stored[0]))
            .await
            .expect("record")
    );
    assert_eq!(
        store.load(&fx.name).await.expect("load"),
        ["hmac-sha256:next".to_owned(), stored[0].clone()]
    );
}

fn secret_map_of(password: &str) -> SecretMap {
    let mut m = SecretMap::new();
    m.insert("password", SecretString::from(password.to_owned()));
    m
}

/// An OpenBao password policy that always yields `c` repeated 32 times.
async fn constant_password_policy(vault: &Vault, name: &str, c: char) {
    let hcl = format!("length = 32\nrule \"charset\" {{\n  charset = \"{c}\"\n}}\n");
    vault
        .request_ok(
            reqwest::Method::POST,
            &format!("sys/policies/password/{name}"),
            Some(&json!({ "policy": hcl })),
            AuthAs::Rotor,
        )
        .await
        .expect("password policy");
}

/// Points the database connection `name` at the password policy `policy`.
async fn connection_with_policy(vault: &Vault, mount: &str, name: &str, policy: &str) {
    let s = stack();
    let url = format!(
        "postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/postgres?sslmode=disable",
        s.pg.host, s.pg.port
    );
    vault
        .request_ok(
            reqwest::Method::POST,
            &format!("{mount}/config/{name}"),
            Some(&json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": url,
                "username": s.pg.admin_user,
                "password": s.pg.admin_password,
                "allowed_roles": [name],
                "password_authentication": "scram-sha-256",
                "password_policy": policy,
            })),
            AuthAs::Rotor,
        )
        .await
        .expect("database connection config");
}

fn rotor_cmd(dir: &Path, name: &str) -> Command {
    let s = stack();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rotor"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("VAULT_ADDR", &s.vault_addr)
        .env("VAULT_TOKEN", &s.vault_token)
        .env("RUST_LOG", "trace")
        .args(["-vv", "rotate", "-o", "json", "--policies"])
        .arg(dir)
        .arg(name)
        .args(["--reason", "reuse test"]);
    cmd
}

#[tokio::test]
async fn a_value_vault_produced_before_is_refused() {
    let name = rotor_testkit::unique("reuse-db");
    let role = name.replace('-', "_");
    let mount = "rotor-test-database";
    let vault = common::vault();
    enable_engine(&vault, mount, "database").await;
    let (q_policy, z_policy) = (format!("{name}-q"), format!("{name}-z"));
    constant_password_policy(&vault, &q_policy, 'q').await;
    constant_password_policy(&vault, &z_policy, 'Z').await;
    let (q_password, z_password) = ("q".repeat(32), "Z".repeat(32));

    // The static role starts on the `q` password (Vault rotates it on creation).
    common::admin_target()
        .ensure_role(
            &role,
            &SecretString::from(format!("init{}", rotor_testkit::canary())),
        )
        .await
        .expect("create the test role");
    connection_with_policy(&vault, mount, &name, &q_policy).await;
    vault
        .request_ok(
            reqwest::Method::POST,
            &format!("{mount}/static-roles/{name}"),
            Some(&json!({"db_name": name, "username": role, "rotation_period": "720h"})),
            AuthAs::Rotor,
        )
        .await
        .expect("static role");
    let canonical = format!("rotor-test/{name}/db");
    vault
        .kv_write(
            "secret",
            &canonical,
            &secret_map(&[("username", &role), ("password", &q_password)]),
            None,
        )
        .await
        .expect("seed canonical");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = stack();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!(
            "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata: {{name: {name}}}\nspec:\n  credential:\n    type: vault-database\n    mount: {mount}\n    role: {name}\n    probe: {{type: postgres, host: {}, port: {}, database: postgres}}\n  vault: {{path: {canonical}}}\n",
            s.pg.host, s.pg.port
        ),
    )
    .expect("write policy");
    let secrets = [
        q_password.clone(),
        z_password.clone(),
        s.pg.admin_password.clone(),
    ];

    // q → Z: a new value, accepted and remembered.
    connection_with_policy(&vault, mount, &name, &z_policy).await;
    let out = rotor_cmd(dir.path(), &name).output().expect("run rotor");
    assert!(out.status.success(), "q → Z must rotate:\n{}", text(&out));
    assert_no_leak(&out, &secrets);
    let current = || async {
        let e = vault
            .kv_read("secret", &canonical)
            .await
            .expect("read canonical")
            .expect("canonical exists");
        (
            e.data.expose("password").expect("password").to_owned(),
            e.version,
        )
    };
    let (password, promoted) = current().await;
    assert_eq!(password, z_password);
    let engine = engine(&vault).await;
    assert_eq!(
        engine.history().load(&name).await.expect("history").len(),
        2
    );

    // Z → q again: Vault hands back the password it produced first. Refused before
    // promote, with the policy and "reuse" named and no value anywhere.
    connection_with_policy(&vault, mount, &name, &q_policy).await;
    let out = rotor_cmd(dir.path(), &name).output().expect("run rotor");
    assert!(
        !out.status.success(),
        "a reused value must fail:\n{}",
        text(&out)
    );
    assert_no_leak(&out, &secrets);
    let report = json_report(&out);
    let rotation = &report["rotation"];
    let error = rotation["error"].as_str().expect("error");
    assert!(error.starts_with("staged: "), "{error}");
    assert!(
        error.contains(&format!(
            "policy {name}: the new vault-database credential repeats the current or a recent value (reuse); refused"
        )),
        "{error}"
    );
    let steps: Vec<&str> = rotation["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step"].as_str().expect("step"))
        .collect();
    assert_eq!(steps, ["planned", "staged"], "nothing ran after staging");
    // Vault's copy was not promoted to the reused value, and the history is unchanged.
    assert_eq!(current().await, (z_password.clone(), promoted));
    assert_eq!(
        engine.history().load(&name).await.expect("history").len(),
        2
    );
    // Vault's static role keeps only its own new password, so this kind cannot be
    // rolled back (as for any failure before promote): the rotation needs a person.
    assert_eq!(rotation["status"], "failed");
    assert!(error.contains("cannot roll back"), "{error}");
    let outcome: AuthOutcome = common::admin_target()
        .login(&role, &SecretString::from(q_password.clone()))
        .await;
    assert!(matches!(outcome, AuthOutcome::Accepted));
}

#[test]
fn a_loaded_generator_keeps_its_minima_and_exclusions_on_1000_values() {
    let yaml = "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata: {name: strong}\nspec:\n  credential:\n    type: postgres\n    connection: {host: db, adminFrom: {env: PGADMIN}}\n    username: app\n    password:\n      length: 12\n      alphabet: ascii-printable\n      minLower: 2\n      minUpper: 2\n      minDigits: 2\n      minSymbols: 3\n      exclude: \"0O1lI|'`\\\"\\\\\"\n  vault: {path: apps/strong}\n";
    let set = policy::load_str(Path::new("strong.yaml"), yaml).unwrap_or_else(|e| panic!("{e}"));
    let g = set
        .get("strong")
        .and_then(|p| p.spec.credential.password_generator())
        .expect("generator");
    let excluded = "0O1lI|'`\"\\";
    assert_eq!(g.exclude, excluded);
    let mut distinct = std::collections::HashSet::new();
    for _ in 0..1_000 {
        let p = g.generate();
        let p = p.expose_secret();
        assert_eq!(p.chars().count(), 12);
        assert!(p.chars().all(|c| c.is_ascii_graphic()));
        assert!(!p.contains(|c| excluded.contains(c)));
        assert!(p.chars().filter(char::is_ascii_lowercase).count() >= 2);
        assert!(p.chars().filter(char::is_ascii_uppercase).count() >= 2);
        assert!(p.chars().filter(char::is_ascii_digit).count() >= 2);
        assert!(p.chars().filter(char::is_ascii_punctuation).count() >= 3);
        distinct.insert(p.to_owned());
    }
    assert_eq!(distinct.len(), 1_000);
}

#[test]
fn an_unsatisfiable_generator_is_refused_at_load_with_its_field_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("weak.yaml");
    std::fs::write(
        &file,
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata: {name: weak}\nspec:\n  credential:\n    type: postgres\n    connection: {host: db, adminFrom: {env: PGADMIN}}\n    username: app\n    password:\n      length: 8\n      alphabet: \"abcdef\"\n      minUpper: 1\n      minLower: 9\n  vault: {path: apps/weak}\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["validate", "-o", "json"])
        .arg(&file)
        .output()
        .expect("run rotor validate");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json_report(&out);
    let errors: Vec<(String, u64, u64, String)> = doc["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["path"].as_str().expect("path").to_owned(),
                e["line"].as_u64().expect("line"),
                e["column"].as_u64().expect("column"),
                e["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect();
    assert_eq!(errors.len(), 2, "{doc:#}");
    assert_eq!(
        (errors[0].0.as_str(), errors[0].1, errors[0].2),
        ("spec.credential.password", 10, 7)
    );
    assert!(
        errors[0].3.contains("= 10 with length 8"),
        "{}",
        errors[0].3
    );
    assert_eq!(
        (errors[1].0.as_str(), errors[1].1, errors[1].2),
        ("spec.credential.password.minUpper", 12, 17)
    );
    assert!(
        errors[1]
            .3
            .contains("alphabet custom has no upper-case letter"),
        "{}",
        errors[1].3
    );
}
