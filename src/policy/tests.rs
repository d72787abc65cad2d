//! Loading and validation through [`super::load_str`] / [`super::load_paths`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveTime;
use secrecy::ExposeSecret;

use super::*;
use crate::secret::{SecretMap, SecretString};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn load(text: &str) -> Result<PolicySet, LoadErrors> {
    load_str(Path::new("t.yaml"), text)
}

fn errors(text: &str) -> Vec<PolicyError> {
    match load(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    }
}

/// How a refused document's error message must read.
#[derive(Debug, Clone, Copy)]
enum Says<'a> {
    /// The whole message.
    Exactly(&'a str),
    /// Its beginning.
    Starts(&'a str),
    /// A part of it.
    Part(&'a str),
}

/// Checks that `text` is refused with exactly one error, at field `path` (and at
/// `(line, column)` when given), whose message reads as `says`.
fn refused_once(text: &str, path: &str, at: Option<(usize, usize)>, says: Says<'_>) {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{path}: {e:#?}");
    let e = &e[0];
    assert_eq!(e.path, path, "{e}");
    if let Some(at) = at {
        assert_eq!((e.line, e.column), at, "{e}");
    }
    let reads = match says {
        Says::Exactly(m) => e.message == m,
        Says::Starts(m) => e.message.starts_with(m),
        Says::Part(m) => e.message.contains(m),
    };
    assert!(reads, "{e}\nexpected it to say {says:?}");
}

/// A minimal valid policy; `{credential}` and `{extra}` are spliced in.
fn policy(credential: &str, extra: &str) -> String {
    format!(
        "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: p\nspec:\n  credential:\n{credential}  vault:\n    path: apps/p\n{extra}"
    )
}

const PG: &str = "    type: postgres\n    connection:\n      host: db\n      adminFrom: {vault: {path: admins/pg}}\n    username: app\n";

#[test]
fn example_policies_load_without_errors() {
    let set = load_paths(&[examples()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.len(), 10);
    assert!(!set.is_empty());
    let names: Vec<&str> = set.names().collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn canonical_example_is_read_field_by_field() {
    let set = load_paths(&[examples().join("payments-db.yaml")]).unwrap_or_else(|e| panic!("{e}"));
    let p = set.get("payments-db").expect("policy");
    assert_eq!(p.labels.get("team").map(String::as_str), Some("payments"));
    let CredentialSpec::Postgres(pg) = &p.spec.credential else {
        panic!("not postgres")
    };
    assert_eq!(pg.connection.host, "127.0.0.1");
    assert_eq!(pg.connection.port, 5432);
    assert_eq!(pg.connection.database, "postgres");
    assert_eq!(
        pg.connection.admin_from,
        Reference::Vault {
            mount: "secret".into(),
            path: "rotor/admins/payments-pg".into(),
            key: None
        }
    );
    assert_eq!(pg.username, "payments_app");
    assert_eq!(pg.strategy, Strategy::Single);
    assert_eq!(pg.password.length, 32);
    assert_eq!(pg.password.alphabet, Alphabet::Alphanumeric);
    assert_eq!(pg.grace, Duration::ZERO);
    assert_eq!(p.spec.credential.output_keys(), ["username", "password"]);
    assert_eq!(
        p.spec.vault,
        VaultLocation {
            mount: "secret".into(),
            path: "apps/payments/db".into()
        }
    );
    let s = p.spec.schedule.as_ref().expect("schedule");
    assert_eq!(s.cron_source.as_deref(), Some("0 3 * * 0"));
    assert!(s.cron.is_some());
    assert_eq!(s.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(s.jitter, Duration::from_secs(600));
    assert_eq!(s.max_age, Some(Duration::from_secs(30 * 86_400)));
    let w = s.window.expect("window");
    assert_eq!(w.to_string(), "02:00-05:00");
    assert_eq!(p.spec.consumers.len(), 3);
    let ConsumerSpec::Kubernetes(k) = &p.spec.consumers[0] else {
        panic!("not kubernetes")
    };
    assert_eq!(k.restart[0].kind, WorkloadKind::Deployment);
    assert_eq!(k.restart[0].to_string(), "deployment/payments-api");
    assert_eq!(
        p.spec.consumers[0].describe(),
        "kubernetes secret payments/payments-db (restart deployment/payments-api)"
    );
    let ConsumerSpec::Gitlab(g) = &p.spec.consumers[1] else {
        panic!("not gitlab")
    };
    assert_eq!(g.url.as_str(), "https://gitlab.com/");
    assert_eq!(g.target, GitlabTarget::Project("acme/payments".into()));
    assert!(g.masked && g.protected && g.raw);
    assert_eq!(g.environment_scope, "production");
    assert_eq!(g.variable_type, GitlabVariableType::EnvVar);
    assert_eq!(
        g.token_from,
        Reference::Vault {
            mount: "secret".into(),
            path: "rotor/gitlab".into(),
            key: Some("token".into())
        }
    );
    assert_eq!(
        p.spec.consumers[2].describe(),
        "github repository acme/payments environment production secret PAYMENTS_DB_PASSWORD"
    );
    assert_eq!(p.spec.verify, VerifySpec::default());
    assert_eq!(p.spec.on_demand, OnDemandSpec::default());
}

#[test]
fn defaults_apply() {
    let set = load(&policy(PG, "")).unwrap_or_else(|e| panic!("{e}"));
    let p = set.get("p").expect("policy");
    assert!(p.spec.schedule.is_none());
    assert!(p.spec.consumers.is_empty());
    assert!(p.spec.verify.old_rejected);
    assert!(!p.spec.verify.terminate_sessions);
    assert!(p.spec.on_demand.require_reason);
    assert!(!p.spec.on_demand.require_ticket);
    let CredentialSpec::Postgres(pg) = &p.spec.credential else {
        panic!()
    };
    assert_eq!(pg.connection.port, 5432);
    assert_eq!(pg.connection.database, "postgres");
    assert!(pg.connection.tls.is_none());
    assert_eq!(pg.password, PasswordGenerator::default());
}

#[test]
fn schedule_defaults_and_wrapping_window() {
    let set = load(&policy(
        PG,
        "  schedule:\n    maxAge: 7d\n    window: \"22:00-02:00\"\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let s = set
        .get("p")
        .and_then(|p| p.spec.schedule.clone())
        .expect("schedule");
    assert_eq!(s.timezone, chrono_tz::Tz::UTC);
    assert_eq!(s.jitter, Duration::ZERO);
    assert!(s.cron.is_none());
    let w = s.window.expect("window");
    let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).expect("time");
    assert!(w.contains(t(23, 0)));
    assert!(w.contains(t(22, 0)));
    assert!(w.contains(t(1, 59)));
    assert!(!w.contains(t(2, 0)));
    assert!(!w.contains(t(12, 0)));
    let plain = Window {
        start: t(2, 0),
        end: t(5, 0),
    };
    assert!(plain.contains(t(2, 0)) && plain.contains(t(4, 59)));
    assert!(!plain.contains(t(5, 0)) && !plain.contains(t(1, 0)));
}

#[test]
fn schedule_needs_a_trigger() {
    refused_once(
        &policy(PG, "  schedule:\n    timezone: UTC\n"),
        "spec.schedule",
        None,
        Says::Part("neither cron nor maxAge"),
    );
}

#[test]
fn cron_must_have_five_fields_and_fire() {
    for (cron, fragment) in [
        ("0 3 * *", "POSIX cron line of 5 fields"),
        ("0 0 3 * * 0", "POSIX cron line of 5 fields"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
    ] {
        refused_once(
            &policy(PG, &format!("  schedule:\n    cron: \"{cron}\"\n")),
            "spec.schedule.cron",
            Some((15, 11)),
            Says::Part(fragment),
        );
    }
    // A leap day fires (every four years), Sunday is 0 and 7.
    for cron in ["0 0 29 2 *", "0 3 * * 0", "0 3 * * 7", "@daily"] {
        load(&policy(PG, &format!("  schedule:\n    cron: \"{cron}\"\n")))
            .unwrap_or_else(|e| panic!("{cron}: {e}"));
    }
}

#[test]
fn many_errors_are_reported_in_one_run() {
    let text = policy(
        "    type: postgres\n    connection:\n      host: db\n      port: 0\n      adminFrom: {env: \"1BAD\"}\n    username: app\n    password: {length: 2000, alphabet: abca}\n",
        "  schedule:\n    cron: nope\n    jitter: 1y\n  consumers:\n    - type: kubernetes\n      namespace: Bad_NS\n      secret: s\n      data: {K: \"{{ token }}\"}\n    - type: file\n      path: relative/file\n      content: \"{{ password }}\"\n  verify: {oldRejected: maybe}\n",
    );
    let e = errors(&text);
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.credential.connection.port",
            "spec.credential.connection.adminFrom.env",
            "spec.credential.password.length",
            "spec.credential.password.alphabet",
            "spec.schedule.cron",
            "spec.schedule.jitter",
            "spec.consumers[0].namespace",
            "spec.consumers[0].data.K",
            "spec.consumers[1].path",
            "spec.verify.oldRejected",
        ],
        "{e:#?}"
    );
    // Sorted by position.
    assert!(
        e.windows(2)
            .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column))
    );
}

#[test]
fn reference_rules() {
    let with_admin = |admin: &str| {
        policy(
            &format!(
                "    type: postgres\n    connection:\n      host: db\n      adminFrom: {admin}\n    username: app\n"
            ),
            "",
        )
    };
    let ok = load(&with_admin("{vault: {path: a/b, key: pw, mount: kv}}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let CredentialSpec::Postgres(pg) = &ok.get("p").expect("p").spec.credential else {
        panic!()
    };
    assert_eq!(
        pg.connection.admin_from,
        Reference::Vault {
            mount: "kv".into(),
            path: "a/b".into(),
            key: Some("pw".into())
        }
    );
    let ok = load(&with_admin("{file: /run/secrets/pg}")).unwrap_or_else(|e| panic!("{e}"));
    let CredentialSpec::Postgres(pg) = &ok.get("p").expect("p").spec.credential else {
        panic!()
    };
    assert_eq!(
        pg.connection.admin_from,
        Reference::File("/run/secrets/pg".into())
    );
    for (admin, fragment) in [
        ("{}", "found an empty reference"),
        ("{env: A, file: /b}", "found `env`, `file` together"),
        ("{vault: {path: /abs}}", "expected a KV path"),
        ("{vault: {key: k}}", "expected required field `path`"),
        (
            "{vault: {path: a, token: x}}",
            "found unknown field `token`",
        ),
        ("[a]", "found a sequence, expected a reference"),
        ("12345678", "found an integer, expected a reference"),
    ] {
        let e = errors(&with_admin(admin));
        assert_eq!(e.len(), 1, "{admin}: {e:?}");
        assert!(e[0].message.contains(fragment), "{admin}: {}", e[0]);
        assert!(!e[0].message.contains("12345678"));
    }
}

#[test]
fn references_without_a_mount_take_the_policy_kv_mount() {
    let text = "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: p\nspec:\n  credential:\n    type: redis\n    connection:\n      host: cache\n      adminFrom: {vault: {path: admins/redis}}\n    username: app\n  vault:\n    mount: kv\n    path: apps/p\n  consumers:\n    - type: gitlab\n      tokenFrom: {vault: {path: ci/gitlab, key: token}}\n      project: acme/app\n      key: APP_PASSWORD\n      value: \"{{ password }}\"\n    - type: vault-kv\n      path: copies/p\n      data: {password: \"{{ password }}\"}\n  notify:\n    - url: https://hooks.example.com/rotor\n      secretFrom: {vault: {path: hooks/p, key: hmac}}\n";
    let set = load(text).unwrap_or_else(|e| panic!("{e}"));
    let spec = &set.get("p").expect("p").spec;
    let vault = |path: &str, key: Option<&str>, mount: &str| Reference::Vault {
        mount: mount.into(),
        path: path.into(),
        key: key.map(Into::into),
    };
    let CredentialSpec::Redis(r) = &spec.credential else {
        panic!("not redis")
    };
    assert_eq!(
        r.connection.admin_from,
        Some(vault("admins/redis", None, "kv"))
    );
    let ConsumerSpec::Gitlab(g) = &spec.consumers[0] else {
        panic!("not gitlab")
    };
    assert_eq!(g.token_from, vault("ci/gitlab", Some("token"), "kv"));
    let ConsumerSpec::VaultKv(copy) = &spec.consumers[1] else {
        panic!("not vault-kv")
    };
    assert_eq!(
        (copy.mount.as_str(), copy.path.as_str()),
        ("kv", "copies/p")
    );
    assert_eq!(
        spec.notify[0].secret_from,
        vault("hooks/p", Some("hmac"), "kv")
    );
}

#[test]
fn template_variables_follow_the_credential_kind() {
    let approle = "    type: vault-approle\n    role: deployer\n";
    let consumer = |value: &str| {
        format!("  consumers:\n    - type: file\n      path: /etc/x\n      content: \"{value}\"\n")
    };
    load(&policy(approle, &consumer("{{ roleId }}:{{ secretId }}")))
        .unwrap_or_else(|e| panic!("{e}"));
    let e = errors(&policy(approle, &consumer("{{ password }}")));
    assert_eq!(e[0].path, "spec.consumers[0].content");
    assert!(
        e[0].message
            .contains("`roleId`, `secretId`, `secretIdAccessor`"),
        "{}",
        e[0]
    );
    let e = errors(&policy(approle, &consumer("{{ roleId")));
    assert!(e[0].message.contains("without a closing"), "{}", e[0]);
}

#[test]
fn http_api_key_templates_are_checked_per_request() {
    let cred = |probe_headers: &str, revoke_url: &str| {
        format!(
            "    type: http-api-key\n    adminFrom: {{env: ADMIN}}\n    create: {{method: POST, url: \"https://x/keys\", headers: {{Authorization: \"Bearer {{{{ admin }}}}\"}}, keyField: key, idField: id}}\n    revoke: {{method: DELETE, url: \"{revoke_url}\"}}\n    probe: {{method: GET, url: \"https://x/me\", headers: {probe_headers}}}\n"
        )
    };
    let set = load(&policy(
        &cred("{X-Key: \"{{ key }}\"}", "https://x/keys/{{ id }}"),
        "",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let CredentialSpec::HttpApiKey(h) = &set.get("p").expect("p").spec.credential else {
        panic!()
    };
    assert_eq!(h.create.method, HttpMethod::Post);
    // revoke reuses create's headers
    assert_eq!(
        h.revoke.headers.get("Authorization").map(Template::source),
        Some("Bearer {{ admin }}")
    );
    assert_eq!(h.strategy, Strategy::Overlap);
    let e = errors(&policy(
        &cred("{X-Key: \"{{ admin }}\"}", "https://x/keys/{{ id }}"),
        "",
    ));
    let msgs: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert!(
        msgs.iter()
            .any(|m| m
                .contains("spec.credential.probe.headers.X-Key: found unknown variable `admin`")),
        "{msgs:#?}"
    );
    let e = errors(&policy(
        &cred("{X-Key: \"{{ key }}\"}", "https://x/keys"),
        "",
    ));
    assert_eq!(e[0].path, "spec.credential.revoke");
    assert!(e[0].message.contains("names no key"));
}

#[test]
fn gitlab_masking_rules() {
    let gitlab = |extra: &str| {
        format!(
            "  consumers:\n    - type: gitlab\n      tokenFrom: {{env: T}}\n      project: \"1234\"\n      key: K\n      masked: true\n{extra}"
        )
    };
    // Alphanumeric, 32 chars: fine either way.
    load(&policy(
        PG,
        &gitlab("      value: \"{{ password }}\"\n      raw: false\n"),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    // Short: username `app` alone is 3 characters.
    let e = errors(&policy(PG, &gitlab("      value: \"{{ username }}\"\n")));
    assert!(
        e[0].message
            .contains("value of 3 characters, expected at least 8"),
        "{}",
        e[0]
    );
    assert_eq!(e[0].path, "spec.consumers[0].masked");
    // Literal characters GitLab cannot mask with raw: false.
    let e = errors(&policy(
        PG,
        &gitlab("      value: \"pw {{ password }}\"\n      raw: false\n"),
    ));
    assert!(e[0].message.contains("literal character ` `"), "{}", e[0]);
    // Multi-line values (a certificate) cannot be masked.
    let pki = "    type: vault-pki\n    role: r\n    commonName: x.example.com\n    ttl: 24h\n";
    let e = errors(&policy(
        pki,
        &gitlab("      value: \"{{ certificate }}\"\n"),
    ));
    assert!(e[0].message.contains("spans several lines"), "{}", e[0]);
    // Custom alphabets within the maskable set are accepted.
    let custom = "    type: postgres\n    connection:\n      host: db\n      adminFrom: {env: A}\n    username: app\n    password: {length: 16, alphabet: \"abcdef0123456789@:\"}\n";
    load(&policy(
        custom,
        &gitlab("      value: \"{{ password }}\"\n      raw: false\n"),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A postgres credential with `password:` lines (indented 6) spliced in.
fn pg_with_password(lines: &str) -> String {
    format!("{PG}    password:\n{lines}")
}

#[test]
fn generator_rules_are_read() {
    let set = load(&policy(
        &pg_with_password(
            "      length: 20\n      alphabet: ascii-printable\n      minLower: 1\n      minUpper: 2\n      minDigits: 3\n      minSymbols: 4\n      exclude: \"$`\\\\\"\n",
        ),
        "",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let g = set
        .get("p")
        .and_then(|p| p.spec.credential.password_generator())
        .expect("generator");
    assert_eq!(
        (
            g.length,
            g.min_lower,
            g.min_upper,
            g.min_digits,
            g.min_symbols
        ),
        (20, 1, 2, 3, 4)
    );
    assert_eq!(g.exclude, "$`\\");
    assert_eq!(g.chars().len(), 94 - 3);
    for _ in 0..100 {
        let p = g.generate();
        assert!(g.accepts(p.expose_secret()));
    }
}

#[test]
fn unsatisfiable_generators_are_refused_at_the_field() {
    // Line 12 is `password:`; its fields start on line 13, column 7.
    for (lines, field, at, says) in [
        (
            "      alphabet: abc123\n      minUpper: 1\n",
            ".minUpper",
            Some((14, 17)),
            Says::Exactly(
                "found minUpper 1 but alphabet custom has no upper-case letter, expected 0 or an alphabet that has one",
            ),
        ),
        (
            "      minDigits: 2\n      exclude: \"0123456789\"\n",
            ".minDigits",
            None,
            Says::Part("alphabet alphanumeric after exclude has no digit 0-9"),
        ),
        (
            "      alphabet: ascii-printable\n      minSymbols: 1\n      exclude: \"!\\\"#$%&'()*+,-./:;<=>?@[\\\\]^_`{|}~\"\n",
            ".minSymbols",
            None,
            Says::Part("has no symbol"),
        ),
        (
            "      length: 8\n      minLower: 3\n      minUpper: 3\n      minDigits: 3\n",
            "",
            Some((13, 7)),
            Says::Exactly(
                "found minLower + minUpper + minDigits + minSymbols = 9 with length 8, expected a sum of at most the length",
            ),
        ),
        // The default length (32) counts when none is given.
        (
            "      minDigits: 33\n",
            "",
            None,
            Says::Part("= 33 with length 32"),
        ),
        (
            "      alphabet: \"ab\"\n      exclude: \"b\"\n",
            ".exclude",
            None,
            Says::Part("leaves 1 of the 2 characters of alphabet custom, expected at least 2"),
        ),
        (
            "      minSymbols: -1\n",
            ".minSymbols",
            None,
            Says::Exactly("found minSymbols -1, expected 0 to 1024"),
        ),
        (
            "      minLower: some\n",
            ".minLower",
            None,
            Says::Part("expected a character count 0-1024"),
        ),
        (
            "      minUpper: 2\n      extra: 1\n",
            ".extra",
            None,
            Says::Part("found unknown field `extra`"),
        ),
        // A bad length or alphabet is reported once, not again as an unsatisfiable sum.
        (
            "      length: 4\n      minDigits: 6\n",
            ".length",
            None,
            Says::Exactly("found length 4, expected 8 to 1024"),
        ),
    ] {
        refused_once(
            &policy(&pg_with_password(lines), ""),
            &format!("spec.credential.password{field}"),
            at,
            says,
        );
    }
}

#[test]
fn gitlab_masking_takes_exclude_into_account() {
    let masked = "  consumers:\n    - type: gitlab\n      tokenFrom: {env: T}\n      project: \"1234\"\n      key: K\n      value: \"{{ password }}\"\n      masked: true\n      raw: false\n";
    // Every printable ASCII character GitLab cannot mask with raw: false.
    let unmaskable: String = ('!'..='~')
        .filter(|c| !c.is_ascii_alphanumeric() && !"_+=/@:.~-".contains(*c))
        .collect();
    assert_eq!(unmaskable.len(), 23);
    let with_exclude = |exclude: &str| {
        let yaml_exclude = exclude.replace('\'', "''");
        policy(
            &pg_with_password(&format!(
                "      alphabet: ascii-printable\n      minSymbols: 2\n      exclude: '{yaml_exclude}'\n"
            )),
            masked,
        )
    };
    let set = load(&with_exclude(&unmaskable)).unwrap_or_else(|e| panic!("{e}"));
    let g = set
        .get("p")
        .and_then(|p| p.spec.credential.password_generator())
        .expect("generator");
    for _ in 0..200 {
        let p = g.generate();
        assert!(
            p.expose_secret()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=/@:.~-".contains(c))
        );
    }
    // Leaving `$` in: refused, naming the character and that exclude was applied.
    let e = errors(&with_exclude(&unmaskable.replace('$', "")));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].path, "spec.consumers[0].masked");
    assert!(
        e[0].message.contains(
            "raw: false and password alphabet ascii-printable after exclude containing `$`"
        ),
        "{}",
        e[0]
    );
    // Without exclude, the first unmaskable character is named as before.
    let e = errors(&policy(
        &pg_with_password("      alphabet: ascii-printable\n"),
        masked,
    ));
    assert!(
        e[0].message
            .contains("raw: false and password alphabet ascii-printable containing `!`"),
        "{}",
        e[0]
    );
}

#[test]
fn kubernetes_secret_types_need_their_keys() {
    let e = errors(&policy(
        PG,
        "  consumers:\n    - type: kubernetes\n      namespace: n\n      secret: s\n      secretType: kubernetes.io/tls\n      data: {tls.crt: \"{{ password }}\"}\n",
    ));
    assert_eq!(e[0].path, "spec.consumers[0].data");
    assert!(e[0].message.contains("found no tls.key key"), "{}", e[0]);
    let e = errors(&policy(
        PG,
        "  consumers:\n    - type: kubernetes\n      namespace: n\n      secret: s\n      data: {MODE: require}\n",
    ));
    assert!(
        e[0].message
            .contains("found no {{ variable }} in any value"),
        "{}",
        e[0]
    );
}

#[test]
fn vault_kv_copy_cannot_overwrite_the_canonical_copy() {
    let e = errors(&policy(
        PG,
        "  consumers:\n    - type: vault-kv\n      path: apps/p\n      data: {password: \"{{ password }}\"}\n",
    ));
    assert_eq!(e[0].path, "spec.consumers[0].path");
    assert!(e[0].message.contains("canonical"), "{}", e[0]);
}

#[test]
fn two_consumers_cannot_share_a_target() {
    let k = "    - type: kubernetes\n      namespace: n\n      secret: s\n      data: {P: \"{{ password }}\"}\n";
    let e = errors(&policy(PG, &format!("  consumers:\n{k}{k}")));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "spec.consumers[1]");
    assert!(
        e[0].message.contains("same target as spec.consumers[0]"),
        "{}",
        e[0]
    );
}

#[test]
fn a_target_is_the_place_written_whatever_else_differs() {
    // Another restart list, mode or visibility writes the same place.
    let k = |restart: &str| {
        format!(
            "    - type: kubernetes\n      namespace: n\n      secret: s\n      data: {{P: \"{{{{ password }}}}\"}}\n{restart}"
        )
    };
    let f = |mode: &str| {
        format!(
            "    - type: file\n      path: /etc/app/db.env\n      content: \"{{{{ password }}}}\"\n      mode: \"{mode}\"\n"
        )
    };
    let g = |visibility: &str| {
        format!(
            "    - type: github\n      tokenFrom: {{env: T}}\n      organization: acme\n      visibility: {visibility}\n      name: DB\n      value: \"{{{{ password }}}}\"\n"
        )
    };
    for (a, b, target) in [
        (
            k(""),
            k("      restart: [deployment/api]\n"),
            "kubernetes:n/s",
        ),
        (f("0600"), f("0640"), "file:/etc/app/db.env"),
        (
            g("all"),
            g("private"),
            "github:org:acme/DB at https://api.github.com/",
        ),
    ] {
        let e = errors(&policy(PG, &format!("  consumers:\n{a}{b}")));
        assert_eq!(e.len(), 1, "{target}: {e:#?}");
        assert!(
            e[0].message.contains("same target as spec.consumers[0]"),
            "{}",
            e[0]
        );
        let set = load(&policy(PG, &format!("  consumers:\n{a}"))).expect("one consumer loads");
        let consumer = &set.get("p").expect("policy").spec.consumers[0];
        assert_eq!(consumer.target_id(), target);
    }
    // One GitLab key in two environment scopes is two variables.
    let gl = |scope: &str| {
        format!(
            "    - type: gitlab\n      tokenFrom: {{env: T}}\n      project: acme/payments\n      key: DB\n      value: \"{{{{ password }}}}\"\n      environmentScope: {scope}\n"
        )
    };
    let set = load(&policy(
        PG,
        &format!("  consumers:\n{}{}", gl("production"), gl("staging")),
    ))
    .expect("two scopes load");
    let targets: Vec<String> = set
        .get("p")
        .expect("policy")
        .spec
        .consumers
        .iter()
        .map(ConsumerFacts::target_id)
        .collect();
    assert_eq!(
        targets,
        [
            "gitlab:project:acme/payments/DB@production at https://gitlab.com/",
            "gitlab:project:acme/payments/DB@staging at https://gitlab.com/",
        ]
    );
}

#[test]
fn grace_needs_a_strategy_with_two_credentials() {
    let e = errors(&policy(&format!("{PG}    grace: 5m\n"), ""));
    assert_eq!(e[0].path, "spec.credential.grace");
    assert!(e[0].message.contains("with strategy single"), "{}", e[0]);
    load(&policy(
        &format!("{PG}    strategy: alternating\n    grace: 5m\n"),
        "",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn urls_with_credentials_are_rejected_without_echo() {
    let rabbit = "    type: rabbitmq\n    managementUrl: http://admin:hunter2-canary@mq:15672\n    adminFrom: {env: A}\n    username: u\n";
    let e = errors(&policy(rabbit, ""));
    assert_eq!(e[0].path, "spec.credential.managementUrl");
    assert!(e[0].message.contains("credentials inside the URL"));
    assert!(!e[0].to_string().contains("hunter2-canary"));
}

#[test]
fn yaml_features_keep_positions() {
    // Anchors and aliases, flow and block styles, several documents, comments.
    let one = policy(
        PG,
        "  consumers:\n    - &k {type: kubernetes, namespace: n, secret: s, data: {P: \"{{ password }}\"}}\n",
    );
    let two = one
        .replace("name: p", "name: q")
        .replace("apps/p", "apps/q");
    let text = format!("# first\n{one}---\n# second\n{two}...\n");
    let set = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.len(), 2);
    let bad = format!("{one}---\n{}", two.replace("secret: s", "secret: S"));
    let e = errors(&bad);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "spec.consumers[0].secret");
    // The second document starts after `---`; the value sits in a flow mapping.
    assert_eq!((e[0].line, e[0].column), (one.lines().count() + 1 + 15, 51));
}

#[test]
fn unknown_top_level_fields_and_kinds() {
    let e = errors(&format!("{}status: {{}}\n", policy(PG, "")));
    assert_eq!(e[0].path, "status");
    assert!(e[0].message.contains("found unknown field `status`"));
    let e = errors(&policy(PG, "").replace("kind: RotationPolicy", "kind: Deployment"));
    assert_eq!((e[0].path.as_str(), e[0].line, e[0].column), ("kind", 2, 7));
    let e = errors("just text\n");
    assert_eq!(e[0].path, "(document)");
    assert!(
        e[0].message
            .starts_with("found a literal string, expected a RotationPolicy mapping")
    );
}

#[test]
fn empty_documents_and_missing_paths() {
    assert!(load("# nothing here\n").expect("empty").is_empty());
    assert!(load("---\n---\n").expect("empty").is_empty());
    let e = load_paths(&[PathBuf::from("/nonexistent/rotor-policies")]).expect_err("missing");
    assert_eq!(e.0[0].path, "(file)");
    assert_eq!((e.0[0].line, e.0[0].column), (1, 1));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/rotor-policies:1:1: (file): found nothing")
    );
}

#[test]
fn directories_are_searched_recursively_for_yaml_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("a/b");
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::write(sub.join("p.yml"), policy(PG, "")).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").expect("write");
    std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
    std::fs::write(dir.path().join(".git/x.yaml"), "broken: [").expect("write");
    let set = load_paths(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.len(), 1);
    assert_eq!(set.get("p").expect("p").file, sub.join("p.yml"));
    // The same file given twice (directly and through its directory) loads once.
    let set = load_paths(&[dir.path().to_path_buf(), sub.join("p.yml")])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.len(), 1);
}

#[test]
fn load_errors_display_one_per_line() {
    let e = LoadErrors(vec![
        PolicyError {
            file: "a.yaml".into(),
            line: 1,
            column: 2,
            path: "spec".into(),
            message: "found x, expected y".into(),
        },
        PolicyError {
            file: "b.yaml".into(),
            line: 3,
            column: 4,
            path: "metadata.name".into(),
            message: "m".into(),
        },
    ]);
    assert_eq!(
        e.to_string(),
        "a.yaml:1:2: spec: found x, expected y\nb.yaml:3:4: metadata.name: m"
    );
    let json = serde_json::to_value(&e.0[0]).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"file": "a.yaml", "line": 1, "column": 2, "path": "spec", "message": "found x, expected y"})
    );
}

#[test]
fn rendered_templates_and_generated_passwords_fit_together() {
    let set = load_paths(&[examples().join("payments-db.yaml")]).unwrap_or_else(|e| panic!("{e}"));
    let p = set.get("payments-db").expect("policy");
    let generator = p.spec.credential.password_generator().expect("generator");
    let password = generator.generate();
    let mut vars = SecretMap::new();
    vars.insert("username", SecretString::from("payments_app"));
    vars.insert("password", password.clone());
    let ConsumerSpec::Kubernetes(k) = &p.spec.consumers[0] else {
        panic!()
    };
    let url = k.data["DATABASE_URL"].render(&vars).expect("render");
    assert_eq!(
        url.expose_secret(),
        format!(
            "postgres://payments_app:{}@db.payments:5432/payments",
            password.expose_secret()
        )
    );
    assert!(!format!("{p:?}").contains(password.expose_secret()));
}

#[test]
fn empty_values_point_at_their_key() {
    let e = errors("apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata: {name: a}\nspec:\n");
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].path.as_str(), e[0].line, e[0].column), ("spec", 4, 1));
    assert!(e[0].message.starts_with("found null, expected a mapping"));
}

#[test]
fn approval_is_read_with_its_defaults() {
    let set = load(&policy(
        PG,
        "  onDemand:\n    approval:\n      approvers: [alice, \"group:security\", team.ops]\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let a = set
        .get("p")
        .and_then(|p| p.spec.on_demand.approval.clone())
        .expect("approval");
    assert_eq!(a.required, 1);
    assert_eq!(a.ttl, None, "the agent's --approval-ttl applies");
    assert_eq!(
        a.approvers,
        [
            Approver::Identity("alice".into()),
            Approver::Group("security".into()),
            Approver::Identity("team.ops".into())
        ]
    );
    assert!(a.allows("alice", &[]));
    assert!(a.allows("carol", &["security".into()]));
    assert!(!a.allows("carol", &["ops".into()]));
    assert_eq!(a.approvers[1].to_string(), "group:security");

    let set = load(&policy(
        PG,
        "  onDemand:\n    requireTicket: true\n    approval: {required: 2, approvers: [a, b, c], ttl: 30m}\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let on_demand = &set.get("p").expect("policy").spec.on_demand;
    assert!(on_demand.require_ticket);
    let a = on_demand.approval.as_ref().expect("approval");
    assert_eq!((a.required, a.ttl), (2, Some(Duration::from_secs(1800))));
    // Groups can hold any number of people: `required` is not bounded by the list.
    load(&policy(
        PG,
        "  onDemand:\n    approval: {required: 5, approvers: [a, \"group:sre\"]}\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn approval_errors_name_the_field_and_what_was_expected() {
    for (extra, field, at, says) in [
        (
            "      required: 1\n",
            "",
            Some((16, 7)),
            Says::Part("found no `approvers`"),
        ),
        (
            "      approvers: []\n",
            ".approvers",
            None,
            Says::Part("expected at least one identity"),
        ),
        (
            "      required: 0\n      approvers: [a]\n",
            ".required",
            Some((16, 17)),
            Says::Starts("found 0, expected a number of approvals from 1"),
        ),
        (
            "      required: 3\n      approvers: [a, b]\n",
            ".required",
            None,
            Says::Part("found 3, expected at most 2"),
        ),
        (
            "      required: two\n      approvers: [a]\n",
            ".required",
            None,
            Says::Part("a number of approvals"),
        ),
        (
            "      approvers: [a, \"bad name\"]\n",
            ".approvers[1]",
            None,
            Says::Part("found `bad name`, expected an API identity name or `group:NAME`"),
        ),
        (
            "      approvers: [\"group:\"]\n",
            ".approvers[0]",
            None,
            Says::Part("found `group:`"),
        ),
        (
            "      approvers: [a, a]\n",
            ".approvers[1]",
            None,
            Says::Part("found `a` twice"),
        ),
        (
            "      approvers: [a]\n      ttl: 0s\n",
            ".ttl",
            None,
            Says::Part("expected a positive duration"),
        ),
        (
            "      approvers: [a]\n      ttl: soon\n",
            ".ttl",
            None,
            Says::Part("expected a duration like"),
        ),
        (
            "      approvers: [a]\n      quorum: 2\n",
            ".quorum",
            None,
            Says::Part("quorum"),
        ),
    ] {
        refused_once(
            &policy(PG, &format!("  onDemand:\n    approval:\n{extra}")),
            &format!("spec.onDemand.approval{field}"),
            at,
            says,
        );
    }
}

#[test]
fn equal_labels_and_templates_are_shared_between_policies() {
    let doc = |name: &str, team: &str| {
        format!(
            "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\n  labels: {{team: {team}, tier: db}}\nspec:\n  credential:\n{PG}  vault:\n    path: apps/{name}\n  consumers:\n    - type: kubernetes\n      namespace: ns\n      secret: {name}\n      data:\n        URL: \"postgres://{{{{ username }}}}:{{{{ password }}}}@db/app\"\n"
        )
    };
    let text = [doc("a", "x"), doc("b", "x"), doc("c", "y")].join("---\n");
    let set = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let (a, b, c) = (
        set.get("a").unwrap(),
        set.get("b").unwrap(),
        set.get("c").unwrap(),
    );
    assert!(std::sync::Arc::ptr_eq(&a.labels, &b.labels));
    assert!(!std::sync::Arc::ptr_eq(&a.labels, &c.labels));
    assert_eq!(c.labels.get("team").map(String::as_str), Some("y"));
    let url = |p: &ValidatedPolicy| match &p.spec.consumers[0] {
        ConsumerSpec::Kubernetes(k) => k.data["URL"].clone(),
        other => panic!("not kubernetes: {other:?}"),
    };
    assert_eq!(url(a), url(c));
    assert_eq!(
        url(a).variables().collect::<Vec<_>>(),
        ["username", "password"]
    );
}

#[test]
fn a_max_age_past_ten_years_is_rejected_with_its_field_path() {
    // Accepted once, this made the agent panic on every run (`DateTime + TimeDelta
    // overflowed` when computing the next due time).
    refused_once(
        &policy(PG, "  schedule:\n    maxAge: 1000000000w\n"),
        "spec.schedule.maxAge",
        Some((15, 13)),
        Says::Exactly(
            "found maxAge `1000000000w`, expected a duration of at most 3650d (10 years)",
        ),
    );
    // The bound itself is accepted.
    let set =
        load(&policy(PG, "  schedule:\n    maxAge: 3650d\n")).unwrap_or_else(|e| panic!("{e}"));
    let s = set.get("p").and_then(|p| p.spec.schedule.clone());
    assert_eq!(s.and_then(|s| s.max_age), Some(MAX_AGE_BOUND.max));
}

#[test]
fn every_duration_field_has_an_upper_bound() {
    let token = "    type: vault-token\n    policies: [p]\n";
    let pki = "    type: vault-pki\n    role: r\n    commonName: x.example.com\n";
    // (credential, the lines setting the field with `{d}` for the duration, path of the
    // error, bound): at the bound is accepted, one second more is rejected with "found
    // <field> `<text>`, expected ... at most <bound>".
    let cases = [
        (
            PG,
            "  schedule:\n    maxAge: {d}\n",
            "spec.schedule.maxAge",
            MAX_AGE_BOUND,
        ),
        (
            PG,
            "  schedule:\n    cron: \"0 3 * * *\"\n    jitter: {d}\n",
            "spec.schedule.jitter",
            JITTER_BOUND,
        ),
        (
            token,
            "    grace: {d}\n",
            "spec.credential.grace",
            GRACE_BOUND,
        ),
        (
            token,
            "    ttl: {d}\n",
            "spec.credential.ttl",
            LIFETIME_BOUND,
        ),
        (
            token,
            "    period: {d}\n",
            "spec.credential.period",
            LIFETIME_BOUND,
        ),
        (pki, "    ttl: {d}\n", "spec.credential.ttl", LIFETIME_BOUND),
        (
            PG,
            "  onDemand:\n    approval: {approvers: [a], ttl: {d}}\n",
            "spec.onDemand.approval.ttl",
            APPROVAL_TTL_BOUND,
        ),
    ];
    for (credential, field, path, bound) in cases {
        // A credential's own field follows its other fields; the rest follows `vault`.
        let with = |d: &str| {
            let field = field.replace("{d}", d);
            if path.starts_with("spec.credential") {
                policy(&format!("{credential}{field}"), "")
            } else {
                policy(credential, &field)
            }
        };
        let at = format_duration(bound.max);
        load(&with(&at)).unwrap_or_else(|e| panic!("{path} = {at}: {e}"));
        let over = format_duration(bound.max + Duration::from_secs(1));
        let name = path.rsplit('.').next().unwrap_or_default();
        refused_once(
            &with(&over),
            path,
            None,
            Says::Exactly(&format!(
                "found {name} `{over}`, expected a duration of at most {}",
                bound.text
            )),
        );
    }
}

#[test]
fn names_are_the_yaml_names() {
    // Each enum's `as_str` (and `Display`) is the name its YAML field is read with.
    fn reads_back<T>(all: &[T], name: impl Fn(&T) -> &'static str) -> Vec<&'static str>
    where
        T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        all.iter()
            .map(|v| {
                let read: T = serde_json::from_value(serde_json::json!(name(v))).expect("name");
                assert_eq!(&read, v);
                name(v)
            })
            .collect()
    }
    assert_eq!(
        reads_back(&NotifyEvent::ALL, |e| e.as_str()),
        [
            "success",
            "failure",
            "compromise",
            "quarantine",
            "approval_requested",
            "approval_expired"
        ]
    );
    assert_eq!(NotifyEvent::ApprovalExpired.to_string(), "approval_expired");
    let strategies = [Strategy::Single, Strategy::Alternating, Strategy::Overlap];
    assert_eq!(
        reads_back(&strategies, Strategy::as_str),
        ["single", "alternating", "overlap"]
    );
    assert_eq!(Strategy::Alternating.to_string(), "alternating");
    let modes = [TlsMode::Disable, TlsMode::Require, TlsMode::VerifyFull];
    assert_eq!(
        reads_back(&modes, TlsMode::as_str),
        ["disable", "require", "verify-full"]
    );
    let methods = [
        HttpMethod::Get,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
    ];
    assert_eq!(
        reads_back(&methods, HttpMethod::as_str),
        ["GET", "POST", "PUT", "PATCH", "DELETE"]
    );
    let probes = [ProbeKind::Postgres, ProbeKind::Mysql, ProbeKind::Redis];
    assert_eq!(
        reads_back(&probes, ProbeKind::as_str),
        ["postgres", "mysql", "redis"]
    );
    let types = [GitlabVariableType::EnvVar, GitlabVariableType::File];
    assert_eq!(
        reads_back(&types, GitlabVariableType::as_str),
        ["env_var", "file"]
    );
    let visibilities = [
        GithubVisibility::All,
        GithubVisibility::Private,
        GithubVisibility::Selected,
    ];
    assert_eq!(
        reads_back(&visibilities, GithubVisibility::as_str),
        ["all", "private", "selected"]
    );
    let workloads = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ];
    assert_eq!(
        workloads.map(|w| w.as_str()),
        ["deployment", "statefulset", "daemonset"]
    );
}
