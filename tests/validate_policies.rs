//! Black-box tests of `rotor validate`: every bad fixture under
//! `tests/fixtures/policies/bad/` is rejected with the exact file:line:column, field path
//! and message, in text and JSON output; secrets written inline are never echoed; the
//! example policies under `policies/` are valid; RotationPolicy manifests
//! (`rotor.dev/v1`) are read beside policy files; `rotor crd` prints the CRD the chart
//! ships.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rotor::policy::ConsumerFacts;

/// One expected error.
struct Case {
    /// Fixture file (or directory) under `tests/fixtures/policies/bad/`.
    fixture: &'static str,
    /// File the error is in, relative to the fixture (empty: the fixture itself).
    file: &'static str,
    line: usize,
    column: usize,
    path: &'static str,
    fragment: &'static str,
}

const fn case(
    fixture: &'static str,
    line: usize,
    column: usize,
    path: &'static str,
    fragment: &'static str,
) -> Case {
    Case {
        fixture,
        file: "",
        line,
        column,
        path,
        fragment,
    }
}

const CASES: &[Case] = &[
    case(
        "01-unknown-field.yaml",
        24,
        7,
        "spec.consumers[0].secrett",
        "found unknown field `secrett`, expected one of `namespace`, `secret`",
    ),
    case(
        "02-wrong-type.yaml",
        22,
        18,
        "spec.verify.oldRejected",
        "found a literal string, expected a boolean",
    ),
    case(
        "03-bad-cron.yaml",
        17,
        11,
        "spec.schedule.cron",
        "found `61 3 * * 0` (Component error",
    ),
    case(
        "04-cron-never-fires.yaml",
        17,
        11,
        "spec.schedule.cron",
        "found `0 0 31 2 *`, which never fires",
    ),
    case(
        "05-unknown-timezone.yaml",
        18,
        15,
        "spec.schedule.timezone",
        "found `Europe/Berln`, expected an IANA time zone name",
    ),
    case(
        "06-bad-duration.yaml",
        20,
        13,
        "spec.schedule.maxAge",
        "found `30days`, expected a duration like 90s",
    ),
    case(
        "07-empty-window.yaml",
        19,
        13,
        "spec.schedule.window",
        "found an empty window `03:00-03:00`",
    ),
    case(
        "08-bad-window-syntax.yaml",
        19,
        13,
        "spec.schedule.window",
        "found `2am-5am`, expected a local time window HH:MM-HH:MM",
    ),
    case(
        "09-unknown-template-variable.yaml",
        26,
        21,
        "spec.consumers[0].data.PGPASSWORD",
        "found unknown variable `pasword`, expected one of `username`, `password`",
    ),
    Case {
        fixture: "10-duplicate-name",
        file: "a.yaml",
        line: 4,
        column: 9,
        path: "metadata.name",
        fragment: "found duplicate policy name `payments-db` (also at ",
    },
    Case {
        fixture: "10-duplicate-name",
        file: "b.yaml",
        line: 32,
        column: 9,
        path: "metadata.name",
        fragment: "found duplicate policy name `payments-db` (also at ",
    },
    case(
        "11-bad-name.yaml",
        4,
        9,
        "metadata.name",
        "found `Payments_DB`, expected a DNS label",
    ),
    case(
        "12-inline-admin-password.yaml",
        11,
        18,
        "spec.credential.connection.adminFrom",
        "found a literal string, expected a reference {vault: {path, key?, mount?}} | {env: NAME} | {file: PATH}",
    ),
    case(
        "13-inline-password.yaml",
        13,
        15,
        "spec.credential.password",
        "found a literal string, expected a password generator",
    ),
    case(
        "14-missing-credential.yaml",
        5,
        1,
        "spec.credential",
        "expected required field `credential`",
    ),
    case(
        "15-missing-vault-path.yaml",
        14,
        3,
        "spec.vault.path",
        "expected required field `path`",
    ),
    case(
        "16-bad-reference.yaml",
        11,
        18,
        "spec.credential.connection.adminFrom",
        "found `vault`, `env` together, expected exactly one of",
    ),
    case(
        "17-port-zero.yaml",
        10,
        13,
        "spec.credential.connection.port",
        "found 0, expected a port number 1-65535",
    ),
    case(
        "18-port-too-large.yaml",
        10,
        13,
        "spec.credential.connection.port",
        "found 70000, expected a port number 1-65535",
    ),
    case(
        "19-password-too-short.yaml",
        13,
        24,
        "spec.credential.password.length",
        "found length 6, expected 8 to 1024",
    ),
    case(
        "20-empty-alphabet.yaml",
        13,
        38,
        "spec.credential.password.alphabet",
        "found an empty alphabet",
    ),
    case(
        "21-bad-restart.yaml",
        27,
        42,
        "spec.consumers[0].restart[1]",
        "found `deploy/payments-worker`, expected deployment/NAME, statefulset/NAME or daemonset/NAME",
    ),
    case(
        "22-github-secret-name.yaml",
        30,
        13,
        "spec.consumers[1].name",
        "found `GITHUB_PAT`, expected a name without the reserved GITHUB_ prefix",
    ),
    case(
        "23-gitlab-cannot-mask.yaml",
        32,
        15,
        "spec.consumers[1].masked",
        "raw: false and password alphabet ascii-printable containing `!`",
    ),
    case(
        "24-gitlab-project-and-group.yaml",
        27,
        7,
        "spec.consumers[1]",
        "found both `project` and `group`, expected exactly one",
    ),
    case(
        "25-github-no-target.yaml",
        27,
        7,
        "spec.consumers[1]",
        "found neither `repository` nor `organization`, expected exactly one",
    ),
    case(
        "26-github-org-without-visibility.yaml",
        29,
        21,
        "spec.consumers[1].organization",
        "found organization without visibility, expected visibility: all | private | selected",
    ),
    case(
        "27-strategy-not-offered.yaml",
        12,
        15,
        "spec.credential.strategy",
        "found strategy `alternating`, expected `overlap` (the strategies redis offers)",
    ),
    case(
        "28-file-mode-not-octal.yaml",
        30,
        13,
        "spec.consumers[1].mode",
        "found `rw-------`, expected an octal mode such as 0600",
    ),
    case(
        "29-unknown-credential-type.yaml",
        7,
        11,
        "spec.credential.type",
        "found `postgress`, expected one of `postgres`, `mysql`",
    ),
    case(
        "30-yaml-syntax.yaml",
        20,
        11,
        "(yaml)",
        "found invalid YAML: ",
    ),
    case(
        "31-literal-consumer-value.yaml",
        31,
        14,
        "spec.consumers[1].value",
        "found a literal string without any {{ variable }}",
    ),
    case(
        "32-consumer-without-type.yaml",
        22,
        7,
        "spec.consumers[0].type",
        "expected required field `type`",
    ),
    case(
        "33-password-length-wrong-type.yaml",
        13,
        24,
        "spec.credential.password.length",
        "found a literal string, expected a password length 8-1024",
    ),
    case(
        "34-github-name-leading-digit.yaml",
        30,
        13,
        "spec.consumers[1].name",
        "found `1PASSWORD`, expected a name that does not start with a digit",
    ),
    case(
        "35-generator-unsatisfiable.yaml",
        17,
        19,
        "spec.credential.password.minSymbols",
        "found minSymbols 1 but alphabet alphanumeric after exclude has no symbol",
    ),
    case(
        "36-gitlab-mask-exclude.yaml",
        32,
        15,
        "spec.consumers[1].masked",
        "raw: false and password alphabet ascii-printable after exclude containing `$`",
    ),
    // Once accepted, and then the agent panicked on every run computing the next due
    // time: every duration has an upper bound.
    case(
        "37-max-age-past-ten-years.yaml",
        20,
        13,
        "spec.schedule.maxAge",
        "found maxAge `1000000000w`, expected a duration of at most 3650d (10 years)",
    ),
    case(
        "38-manifest-without-namespace.yaml",
        4,
        3,
        "metadata",
        "found no `namespace`, expected `metadata.namespace`: a `rotor.dev/v1` RotationPolicy is a namespaced resource",
    ),
    case(
        "39-manifest-wrong-api-version.yaml",
        1,
        13,
        "apiVersion",
        "found `rotor.dev/v2`, expected one of `rotor/v1`, `rotor.dev/v1`",
    ),
    Case {
        fixture: "40-manifest-and-file-same-name",
        file: "file.yaml",
        line: 4,
        column: 9,
        path: "metadata.name",
        fragment: "40-manifest-and-file-same-name/manifest.yaml:5:9 (namespace `finance`)), expected a unique one",
    },
    Case {
        fixture: "40-manifest-and-file-same-name",
        file: "manifest.yaml",
        line: 5,
        column: 9,
        path: "metadata.name",
        fragment: "found duplicate policy name `ledger-db` (also at ",
    },
    case(
        "41-manifest-bad-port.yaml",
        11,
        13,
        "spec.credential.connection.port",
        "found 70000, expected a port number 1-65535",
    ),
];

/// The value written inline in fixtures 12, 13 and 31; it must never be printed.
const CANARY: &str = "hunter2-canary";

fn bad_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policies/bad")
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn rotor(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rotor"));
    cmd.args(args).args(paths);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", env!("CARGO_BIN_EXE_rotor")))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn error_file(c: &Case) -> PathBuf {
    let fixture = bad_dir().join(c.fixture);
    if c.file.is_empty() {
        fixture
    } else {
        fixture.join(c.file)
    }
}

fn cases_of(fixture: &str) -> Vec<&'static Case> {
    CASES.iter().filter(|c| c.fixture == fixture).collect()
}

fn fixtures() -> BTreeSet<&'static str> {
    CASES.iter().map(|c| c.fixture).collect()
}

#[test]
fn every_fixture_has_expectations_and_there_are_enough() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(bad_dir())
        .expect("fixture directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = fixtures().iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, expected, "fixtures on disk and cases differ");
    assert!(expected.len() >= 20, "only {} fixtures", expected.len());
}

#[test]
fn text_output_names_file_line_column_path_and_message() {
    for fixture in fixtures() {
        let out = rotor(&["validate"], &[&bad_dir().join(fixture)]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{fixture}: {}", text(&out));
        let cases = cases_of(fixture);
        let error_lines: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.ends_with("error(s)"))
            .collect();
        assert_eq!(
            error_lines.len(),
            cases.len(),
            "{fixture}: expected exactly {} error(s), got:\n{stdout}",
            cases.len()
        );
        for c in cases {
            let prefix = format!(
                "{}:{}:{}: {}: ",
                error_file(c).display(),
                c.line,
                c.column,
                c.path
            );
            assert!(
                error_lines
                    .iter()
                    .any(|l| l.starts_with(&prefix) && l.contains(c.fragment)),
                "{fixture}: no line starting with {prefix:?} containing {:?} in:\n{stdout}",
                c.fragment
            );
        }
    }
}

#[test]
fn json_output_carries_the_same_errors() {
    for fixture in fixtures() {
        let out = rotor(&["validate", "-o", "json"], &[&bad_dir().join(fixture)]);
        assert_eq!(out.status.code(), Some(1), "{fixture}: {}", text(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{fixture}: not JSON ({e}): {}", text(&out)));
        assert_eq!(doc["valid"], false, "{fixture}: {doc}");
        let errors = doc["errors"].as_array().expect("errors array");
        let cases = cases_of(fixture);
        assert_eq!(errors.len(), cases.len(), "{fixture}: {doc:#}");
        for c in cases {
            let file = error_file(c).display().to_string();
            let found = errors.iter().any(|e| {
                e["file"] == file.as_str()
                    && e["line"] == c.line
                    && e["column"] == c.column
                    && e["path"] == c.path
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(c.fragment))
            });
            assert!(
                found,
                "{fixture}: no error {file}:{}:{} {} ~ {:?} in {doc:#}",
                c.line, c.column, c.path, c.fragment
            );
        }
    }
}

#[test]
fn the_whole_bad_directory_reports_every_error_at_once() {
    let out = rotor(&["validate", "-o", "json"], &[&bad_dir()]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let errors = doc["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), CASES.len(), "{doc:#}");
}

#[test]
fn secrets_written_inline_are_never_echoed() {
    for fixture in [
        "12-inline-admin-password.yaml",
        "13-inline-password.yaml",
        "31-literal-consumer-value.yaml",
    ] {
        let path = bad_dir().join(fixture);
        let source = std::fs::read_to_string(&path).expect("fixture");
        assert!(source.contains(CANARY), "{fixture} lost its canary");
        for args in [&["validate"][..], &["validate", "-o", "json"][..]] {
            let out = rotor(args, &[&path]);
            assert_eq!(out.status.code(), Some(1));
            assert!(
                !text(&out).contains(CANARY),
                "{fixture}: output echoes the inline secret:\n{}",
                text(&out)
            );
        }
    }
}

#[test]
fn example_policies_are_valid_through_the_binary() {
    let out = rotor(&["validate", "-o", "json"], &[&examples_dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["valid"], true, "{doc}");
    assert_eq!(doc["policies"], 10, "{doc}");
    let out = rotor(&["validate"], &[&examples_dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn example_policies_cover_every_credential_and_consumer_type() {
    let set = rotor::policy::load_paths(&[examples_dir()])
        .unwrap_or_else(|e| panic!("example policies are invalid:\n{e}"));
    let credential_kinds: BTreeSet<&str> = set.iter().map(|p| p.spec.credential.kind()).collect();
    let all: BTreeSet<&str> = rotor::policy::CredentialSpec::KINDS
        .iter()
        .copied()
        .collect();
    assert_eq!(credential_kinds, all);
    let consumer_kinds: BTreeSet<&str> = set
        .iter()
        .flat_map(|p| p.spec.consumers.iter().map(|c| c.kind()))
        .collect();
    let all: BTreeSet<&str> = rotor::policy::ConsumerSpec::KINDS.iter().copied().collect();
    assert_eq!(consumer_kinds, all);
    let first = set.iter().next().expect("a policy");
    assert!(
        set.iter().all(|p| p.name >= first.name),
        "not sorted by name"
    );
    let canonical = set.get("payments-db").expect("payments-db");
    assert_eq!(
        canonical.spec.credential.target(),
        "postgres role payments_app on 127.0.0.1:5432/postgres"
    );
    assert!(canonical.file.ends_with("policies/payments-db.yaml"));
}

#[test]
fn manifests_validate_beside_policy_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policies/manifests");
    let out = rotor(&["validate", "-o", "json"], &[&dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc, serde_json::json!({"valid": true, "policies": 2}));
    let set = rotor::policy::load_paths(&[dir]).expect("valid");
    let names: Vec<&str> = set.names().collect();
    assert_eq!(names, ["billing-db", "orders-db"]);
    let orders = set.get("orders-db").expect("the manifest's policy");
    assert_eq!(
        orders.labels.get("team").map(String::as_str),
        Some("orders")
    );
}

/// The chart's `crds/` holds exactly what `rotor crd` prints, so the schema the API
/// server enforces cannot drift from the model `rotor validate` checks.
#[test]
fn rotor_crd_prints_the_crd_the_chart_ships() {
    let out = rotor(&["crd"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let chart = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/rotor/crds/rotationpolicies.rotor.dev.yaml");
    let committed = std::fs::read_to_string(&chart).expect("the chart's CRD");
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "{} differs from `rotor crd`: regenerate it with `rotor crd > {}`",
        chart.display(),
        chart.display()
    );
    let json = rotor(&["crd", "-o", "json"], &[]);
    let crd: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(crd["metadata"]["name"], "rotationpolicies.rotor.dev");
}
