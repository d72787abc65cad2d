//! Replays every stored fuzz input through the entry points the fuzz targets call
//! ([`rotor::fuzzing`]), as an ordinary test: the hand-written seeds (`fuzz/seeds/`),
//! the corpora `dev/fuzz` grew (`fuzz/corpus/`), every crash libFuzzer kept
//! (`fuzz/artifacts/`), and the policy fixtures the policy target is seeded with. No
//! sanitizer, no libFuzzer: a crash once found and fixed stays fixed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Every file under `dir`, recursively, sorted; none when `dir` does not exist (no
/// crash artifacts yet). Hidden files (`.gitkeep`) are skipped.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Feeds each input of `target` (its seeds, corpus, artifacts, and `fixtures`) to
/// `entry`; fails naming every input that panicked. Returns the sum of what `entry`
/// returned (policies, identities or bodies accepted) and the number of inputs.
fn replay(target: &str, fixtures: &[&str], entry: fn(&[u8]) -> usize) -> (usize, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![
        root.join("fuzz/seeds").join(target),
        root.join("fuzz/corpus").join(target),
        root.join("fuzz/artifacts").join(target),
    ];
    dirs.extend(fixtures.iter().map(|d| root.join(d)));
    let mut files = Vec::new();
    for dir in &dirs {
        files_under(dir, &mut files);
    }
    let mut accepted = 0;
    let mut panicked = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        match catch_unwind(AssertUnwindSafe(|| entry(&data))) {
            Ok(n) => accepted += n,
            Err(_) => panicked.push(file.strip_prefix(root).unwrap_or(file).to_path_buf()),
        }
    }
    assert!(
        panicked.is_empty(),
        "{} of {} {target} inputs panicked (the panic messages are above): {panicked:#?}",
        panicked.len(),
        files.len()
    );
    (accepted, files.len())
}

#[test]
fn policy_loader_survives_every_stored_input() {
    let (policies, inputs) = replay(
        "policy_yaml",
        &["policies", "tests/fixtures/policies"],
        rotor::fuzzing::policy_yaml,
    );
    // The seeds alone: 10 example policies, 37 bad fixtures, 3 hand-written.
    assert!(inputs >= 50, "only {inputs} inputs found");
    assert!(policies >= 10, "only {policies} policies loaded");
}

#[test]
fn auth_config_loader_survives_every_stored_input() {
    let (identities, inputs) = replay("auth_config", &[], rotor::fuzzing::auth_config);
    assert!(inputs >= 5, "only {inputs} inputs found");
    assert!(identities >= 4, "only {identities} identities loaded");
}

#[test]
fn api_bodies_survive_every_stored_input() {
    let (bodies, inputs) = replay("api_body", &[], rotor::fuzzing::api_body);
    assert!(inputs >= 10, "only {inputs} inputs found");
    assert!(bodies >= 5, "only {bodies} bodies accepted");
}
