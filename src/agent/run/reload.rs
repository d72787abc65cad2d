//! Reloading the policy paths when their files change (an invalid set is rejected
//! whole and the previous one keeps running).

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{error, info};

use super::{Entry, Inner, Job};
use crate::audit::AuditEvent;

impl Inner {
    /// Reloads the policy paths when they changed; an invalid set is rejected whole.
    pub(super) fn maybe_reload(&self) {
        if self.config.policy_paths.is_empty() {
            return;
        }
        let now_stamp = stamp(&self.config.policy_paths);
        if self.lock().policy_stamp == now_stamp {
            return;
        }
        match crate::policy::load_paths(&self.config.policy_paths) {
            Err(errors) => {
                let detail = errors.to_string();
                error!(errors = %detail, "The changed policies are invalid; the previous set keeps running.");
                self.metrics.reload(false);
                self.audit_event(&AuditEvent::Agent {
                    action: "reload_rejected".into(),
                    detail: Some(detail),
                });
                self.lock().policy_stamp = now_stamp;
            }
            Ok(set) => {
                let now = self.clock.now();
                let mut st = self.lock();
                st.policy_stamp = now_stamp;
                let names: Vec<String> = set.iter().map(|p| p.name.clone()).collect();
                let removed: Vec<String> = st
                    .entries
                    .keys()
                    .filter(|n| !names.contains(n))
                    .cloned()
                    .collect();
                for name in &removed {
                    if st.entries.get(name).is_some_and(|e| !e.running) {
                        st.entries.remove(name);
                        self.metrics.forget_policy(name);
                    }
                }
                st.queue.retain(|q| !removed.contains(&q.policy));
                let mut added = Vec::new();
                for p in set.iter() {
                    match st.entries.get_mut(&p.name) {
                        Some(e) => {
                            e.policy = Arc::new(p.clone());
                            e.recompute(now);
                        }
                        None => {
                            st.entries
                                .insert(p.name.clone(), Entry::new(Arc::new(p.clone()), now));
                            added.push(p.name.clone());
                        }
                    }
                }
                for name in added {
                    st.enqueue(name, Job::Sync { end_grace: false }, 2, None);
                }
                let count = st.entries.len();
                drop(st);
                self.metrics.set_policies_loaded(count);
                self.metrics.reload(true);
                // The parse of the whole set is garbage now.
                crate::agent::return_free_memory();
                info!(policies = count, "Policies reloaded.");
                self.audit_event(&AuditEvent::Agent {
                    action: "reloaded".into(),
                    detail: Some(format!("{count} policies")),
                });
                self.wake.notify_one();
            }
        }
    }
}

/// A digest of the name, modification time and size of every policy file under the
/// policy paths: what the reload poll compares. `clear` forces the next poll to reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct PolicyStamp(Option<(u64, usize)>);

impl PolicyStamp {
    pub(super) fn clear(&mut self) {
        self.0 = None;
    }
}

/// [`PolicyStamp`] of `paths`. Order-independent (a sum of per-file hashes), so it
/// needs no sorting, and directory entries are read relative to their directory: with
/// thousands of policies this poll was the idle agent's main cost.
pub(super) fn stamp(paths: &[PathBuf]) -> PolicyStamp {
    use std::hash::{DefaultHasher, Hash, Hasher};
    pub(super) fn entry(path: &std::path::Path, meta: &std::fs::Metadata) -> u64 {
        let mut h = DefaultHasher::new();
        path.hash(&mut h);
        meta.modified()
            .unwrap_or(std::time::UNIX_EPOCH)
            .hash(&mut h);
        meta.len().hash(&mut h);
        h.finish()
    }
    let is_policy = |p: &std::path::Path| p.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let (mut sum, mut files) = (0u64, 0usize);
    let mut dirs = Vec::new();
    for p in paths {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        if meta.is_dir() {
            dirs.push(p.clone());
        } else if is_policy(p) {
            sum = sum.wrapping_add(entry(p, &meta));
            files += 1;
        }
    }
    while let Some(dir) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            // Follows symbolic links, as `std::fs::metadata` does.
            let meta = match e.file_type() {
                Ok(t) if t.is_symlink() => std::fs::metadata(&path),
                _ => e.metadata(),
            };
            let Ok(meta) = meta else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(path);
            } else if is_policy(&path) {
                sum = sum.wrapping_add(entry(&path, &meta));
                files += 1;
            }
        }
    }
    PolicyStamp(Some((sum, files)))
}
