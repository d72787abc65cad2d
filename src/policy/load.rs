//! Finding files, splitting documents, and assembling the [`PolicySet`]: names unique
//! across everything loaded, and no two policies owning the same Vault location.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{LoadErrors, PolicyError};
use super::raw::RawPolicy;
use super::resource::RotationPolicy;
use super::validate::{Validator, validate_policy};
use super::yaml::{DeError, Located, Node, NodeDe, Pos, Sink, parse_documents};
use super::{PolicySet, ValidatedPolicy};

/// Directory levels followed at most (guards against symlink loops).
const MAX_DEPTH: usize = 32;

fn file_error(file: &Path, message: String) -> PolicyError {
    PolicyError {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        path: "(file)".into(),
        message,
    }
}

/// `e` in `file`; a resource read from a cluster (`positioned` false) has no text to
/// point into and keeps line and column 0.
fn to_policy_error(file: &Path, e: DeError, positioned: bool) -> PolicyError {
    let pos = match e.pos {
        Some(pos) if positioned => Pos {
            line: pos.line.max(1),
            column: pos.column.max(1),
        },
        Some(pos) => pos,
        None if positioned => Pos { line: 1, column: 1 },
        None => Pos::default(),
    };
    let path = e.path.unwrap_or_default();
    PolicyError {
        file: file.to_path_buf(),
        line: pos.line,
        column: pos.column,
        path: if path.is_empty() {
            "(document)".into()
        } else {
            path
        },
        message: e.message,
    }
}

fn is_policy_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>, errors: &mut Vec<PolicyError>) {
    if depth > MAX_DEPTH {
        errors.push(file_error(
            dir,
            format!("found directories nested deeper than {MAX_DEPTH} levels (a symlink loop?), expected a policy tree"),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(file_error(
                dir,
                format!(
                    "found an unreadable directory ({e}), expected a readable policy directory"
                ),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, depth + 1, files, errors);
        } else if is_policy_file(&p) {
            files.push(p);
        }
    }
}

/// See [`super::load_all`].
pub(crate) fn load_paths(
    paths: &[PathBuf],
    resources: &[RotationPolicy],
) -> Result<PolicySet, LoadErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Err(e) => errors.push(file_error(
                p,
                format!(
                    "found nothing readable at this path ({e}), expected a policy file or directory"
                ),
            )),
            Ok(m) if m.is_dir() => walk(p, 0, &mut files, &mut errors),
            Ok(_) => files.push(p.clone()),
        }
    }
    // The same file reached twice (a file and its directory) is loaded once.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    let sources = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f);
            (f, text)
        })
        .collect();
    match load_sources(sources, resources) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(finish(errors)),
        Err(LoadErrors(more)) => {
            errors.extend(more);
            Err(finish(errors))
        }
    }
}

fn finish(mut errors: Vec<PolicyError>) -> LoadErrors {
    errors.sort_by(|a, b| {
        (&a.file, a.line, a.column, &a.path, &a.message)
            .cmp(&(&b.file, b.line, b.column, &b.path, &b.message))
    });
    errors.dedup();
    LoadErrors(errors)
}

/// Where a policy's name and Vault location were written.
struct Seen {
    name: String,
    file: PathBuf,
    pos: Pos,
    path: String,
    /// The namespace of a RotationPolicy resource.
    namespace: Option<String>,
}

impl Seen {
    /// `file:line:col` (a resource from a cluster has no position: `namespace/name`),
    /// with a manifest's namespace.
    fn place(&self) -> String {
        let mut place = super::error::place(&self.file, self.pos.line, self.pos.column);
        if let Some(ns) = &self.namespace
            && self.pos.line > 0
        {
            place.push_str(&format!(" (namespace `{ns}`)"));
        }
        place
    }
}

/// What loading some files produced, in file order.
#[derive(Default)]
struct Loaded {
    errors: Vec<PolicyError>,
    policies: Vec<ValidatedPolicy>,
    names: Vec<Seen>,
    vaults: Vec<Seen>,
    cascades: Vec<(String, Seen)>,
}

impl Loaded {
    /// Parses and validates one file's documents.
    fn file(&mut self, file: PathBuf, text: std::io::Result<String>) {
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(file_error(
                    &file,
                    format!("found an unreadable file ({e}), expected a UTF-8 policy file"),
                ));
                return;
            }
        };
        for doc in parse_documents(&text) {
            for e in doc.errors {
                self.errors.push(to_policy_error(
                    &file,
                    DeError::at(e.pos, &e.path, e.message),
                    true,
                ));
            }
            let Some(root) = doc.root else { continue };
            if root.is_null() {
                continue; // an empty document (`---` at the end, comments only)
            }
            self.document(&file, &root, true);
        }
    }

    /// Parses and validates one document (a policy, or a RotationPolicy resource)
    /// read from `source`: a file (`positioned`) or a cluster.
    fn document(&mut self, source: &Path, root: &Node, positioned: bool) {
        let sink = Sink::default();
        let result = RawPolicy::deserialize(NodeDe::root(root, &sink));
        let mut doc_errors = sink.into_inner();
        let raw = match result {
            Ok(raw) => Some(raw),
            Err(e) => {
                if !e.reported {
                    doc_errors.push(e);
                }
                None
            }
        };
        let mut policy = None;
        if let Some(raw) = &raw {
            let mut v = Validator::default();
            policy = validate_policy(raw, source, &mut v);
            doc_errors.extend(v.errors);
            self.seen(source, raw, policy.as_ref());
        }
        if doc_errors.is_empty() {
            self.policies.extend(policy);
        }
        self.errors.extend(
            doc_errors
                .into_iter()
                .filter(|e| !e.reported)
                .map(|e| to_policy_error(source, e, positioned)),
        );
    }

    /// Records where a document's name, Vault location and cascades were written.
    fn seen(&mut self, source: &Path, raw: &RawPolicy, policy: Option<&ValidatedPolicy>) {
        let at = |name: String, l: &Located<String>| Seen {
            name,
            file: source.to_path_buf(),
            pos: l.pos,
            path: l.path.clone(),
            namespace: raw
                .metadata
                .0
                .as_ref()
                .and_then(|m| m.value.namespace.as_ref())
                .map(|n| n.value.clone()),
        };
        if let Some(m) = raw.metadata.0.as_ref() {
            self.names
                .push(at(m.value.name.value.clone(), &m.value.name));
        }
        let (Some(p), Some(spec)) = (policy, raw.spec.0.as_ref()) else {
            return;
        };
        if let Some(vault) = spec.vault.0.as_ref() {
            let location = format!("{}/{}", p.spec.vault.mount, p.spec.vault.path);
            self.vaults.push(at(location, &vault.value.path));
        }
        for c in spec.cascade.iter().flatten() {
            self.cascades.push((p.name.clone(), at(c.value.clone(), c)));
        }
    }

    /// Validates RotationPolicy resources read from a cluster, each named by its
    /// `namespace/name`.
    fn resources(&mut self, resources: &[RotationPolicy]) {
        for r in resources {
            let root = Node::from_json(&r.document());
            self.document(Path::new(&r.source()), &root, false);
        }
    }

    /// Appends `other`, which came from later files.
    fn append(&mut self, other: Loaded) {
        self.errors.extend(other.errors);
        self.policies.extend(other.policies);
        self.names.extend(other.names);
        self.vaults.extend(other.vaults);
        self.cascades.extend(other.cascades);
    }
}

/// A file and what reading it gave.
type Source = (PathBuf, std::io::Result<String>);

/// Files loaded at most per thread before loading is split across threads.
const FILES_PER_THREAD: usize = 128;

/// Parses and validates `sources` (independent files) on up to one thread per core,
/// returning each part in file order: with thousands of policies, YAML parsing is most
/// of `validate`, `plan` and an agent's start-up and reloads.
fn load_parallel(sources: Vec<Source>) -> Vec<Loaded> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(sources.len() / FILES_PER_THREAD).clamp(1, 8);
    let load = |chunk: Vec<Source>| {
        let mut part = Loaded::default();
        for (file, text) in chunk {
            part.file(file, text);
        }
        part
    };
    if threads == 1 {
        return vec![load(sources)];
    }
    let per = sources.len().div_ceil(threads);
    let mut chunks = Vec::with_capacity(threads);
    let mut rest = sources;
    while rest.len() > per {
        let tail = rest.split_off(per);
        chunks.push(rest);
        rest = tail;
    }
    chunks.push(rest);
    // Each chunk waits in a slot its thread takes it from; a thread that cannot be
    // started leaves its slot to this one.
    let slots: Vec<std::sync::Mutex<Option<_>>> = chunks
        .into_iter()
        .map(|c| std::sync::Mutex::new(Some(c)))
        .collect();
    let take = |slot: &std::sync::Mutex<Option<Vec<Source>>>| {
        slot.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default()
    };
    std::thread::scope(|scope| {
        let running: Vec<_> = slots
            .iter()
            .map(|slot| {
                std::thread::Builder::new()
                    .name("rotor-load".into())
                    .spawn_scoped(scope, || load(take(slot)))
                    .ok()
            })
            .collect();
        running
            .into_iter()
            .zip(&slots)
            .map(|(handle, slot)| match handle {
                Some(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                None => load(take(slot)),
            })
            .collect()
    })
}

/// Validates RotationPolicy resources alone (see [`RotationPolicy::validate`]).
pub(crate) fn load_resources(resources: &[RotationPolicy]) -> Result<PolicySet, LoadErrors> {
    load_sources(Vec::new(), resources)
}

/// Loads already-read sources and resources read from a cluster.
pub(crate) fn load_sources(
    sources: Vec<(PathBuf, std::io::Result<String>)>,
    resources: &[RotationPolicy],
) -> Result<PolicySet, LoadErrors> {
    // Most files hold one policy: room for all up front saves copying them as it grows.
    let mut all = Loaded {
        policies: Vec::with_capacity(sources.len()),
        ..Loaded::default()
    };
    if !sources.is_empty() {
        for part in load_parallel(sources) {
            all.append(part);
        }
    }
    all.resources(resources);
    let Loaded {
        mut errors,
        policies,
        names,
        vaults,
        cascades,
    } = all;
    errors.extend(clashes(
        &names,
        "policy name",
        "names are unique across all files and resources (a resource's policy name is its `metadata.name`, whatever its namespace)",
    ));
    errors.extend(clashes(
        &vaults,
        "Vault location",
        "each policy owns its canonical Vault path",
    ));
    errors.extend(cascade_errors(&names, &cascades));
    if errors.is_empty() {
        Ok(PolicySet::from_policies(policies))
    } else {
        Err(finish(errors))
    }
}

/// `spec.cascade` entries must name other loaded policies, without cycles.
fn cascade_errors(names: &[Seen], cascades: &[(String, Seen)]) -> Vec<PolicyError> {
    let known: std::collections::BTreeSet<&str> = names.iter().map(|n| n.name.as_str()).collect();
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in cascades {
        edges
            .entry(from.as_str())
            .or_default()
            .push(to.name.as_str());
    }
    let reaches = |start: &str, goal: &str| {
        let mut stack = vec![start];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(n) = stack.pop() {
            if n == goal {
                return true;
            }
            if seen.insert(n) {
                stack.extend(edges.get(n).into_iter().flatten().copied());
            }
        }
        false
    };
    let mut out = Vec::new();
    for (from, to) in cascades {
        let message = if to.name == *from {
            Some(format!(
                "found `{}`, the policy itself, expected the name of a dependent policy",
                to.name
            ))
        } else if !known.contains(to.name.as_str()) {
            Some(format!(
                "found `{}`, expected the name of a loaded policy",
                to.name
            ))
        } else if reaches(&to.name, from) {
            Some(format!(
                "found `{}`, which cascades back to `{from}`, expected no cycles",
                to.name
            ))
        } else {
            None
        };
        if let Some(message) = message {
            out.push(PolicyError {
                file: to.file.clone(),
                line: to.pos.line,
                column: to.pos.column,
                path: to.path.clone(),
                message,
            });
        }
    }
    out
}

/// One error per occurrence of a value seen more than once, naming the other places.
fn clashes(seen: &[Seen], what: &str, rule: &str) -> Vec<PolicyError> {
    let mut by_value: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in seen {
        by_value.entry(&s.name).or_default().push(s);
    }
    let mut out = Vec::new();
    for (value, places) in by_value {
        if places.len() < 2 {
            continue;
        }
        for here in &places {
            let others: Vec<String> = places
                .iter()
                .filter(|o| !std::ptr::eq(**o, *here))
                .map(|o| o.place())
                .collect();
            out.push(PolicyError {
                file: here.file.clone(),
                line: here.pos.line,
                column: here.pos.column,
                path: here.path.clone(),
                message: format!(
                    "found duplicate {what} `{value}` (also at {}), expected a unique one: {rule}",
                    others.join(", ")
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, path: &str) -> String {
        format!(
            "apiVersion: rotor/v1\nkind: RotationPolicy\nmetadata:\n  name: {name}\nspec:\n  credential:\n    type: postgres\n    connection:\n      host: 127.0.0.1\n      port: 5432\n      database: postgres\n      adminFrom: {{vault: {{path: admins/pg}}}}\n    username: app\n  vault:\n    path: {path}\n  consumers:\n    - type: kubernetes\n      namespace: ns\n      secret: {name}\n      data:\n        PGPASSWORD: \"{{{{ password }}}}\"\n"
        )
    }

    /// Enough files to load on several threads: the result is the same set, and a
    /// clash between the first and the last file is still found with both places.
    #[test]
    fn many_files_load_in_parallel_with_the_same_result() {
        let sources = |clash: bool| -> Vec<(PathBuf, std::io::Result<String>)> {
            (0..600)
                .map(|i| {
                    let path = if clash && i == 599 {
                        "apps/p0".to_owned()
                    } else {
                        format!("apps/p{i}")
                    };
                    (
                        PathBuf::from(format!("p{i:03}.yaml")),
                        Ok(policy(&format!("p{i:03}"), &path)),
                    )
                })
                .collect()
        };
        let set = load_sources(sources(false), &[]).expect("valid");
        assert_eq!(set.len(), 600);
        assert!(set.names().eq((0..600).map(|i| format!("p{i:03}"))));

        let errors = load_sources(sources(true), &[]).expect_err("a clash").0;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].file, PathBuf::from("p000.yaml"));
        assert!(
            errors[0].message.contains("p599.yaml"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[1].file, PathBuf::from("p599.yaml"));
    }
}
