//! `file`: the rendered content in a file on the agent's host (for apps on VMs).
//!
//! The file is replaced atomically: the content goes to a new temporary file in the
//! same directory (created exclusively with the policy's mode, so it is never readable
//! by others even for a moment), is flushed to disk, gets its owner and group, and is
//! renamed over the target; the directory is then synced. Readers see the old file or
//! the new one, never a mix. Nothing is written when the file already holds the content
//! with the right mode and ownership.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use tracing::info;
use zeroize::Zeroizing;

use super::{
    Consumer, ConsumerKind, Context, NewValue, PushOutcome, PushResult, ReadBack, ReadBackResult,
    RemoveOutcome, RemoveResult, render,
};
use crate::policy::FileConsumer;
use crate::secret::{SecretString, constant_time_eq};

/// A failed file push.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum FileError {
    /// A filesystem operation failed.
    #[error("file {path}: {operation}: {source}")]
    #[strum(serialize = "file_io")]
    Io {
        /// The target file.
        path: PathBuf,
        /// What was attempted.
        operation: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The owner or group does not exist on this host.
    #[error("file {path}: no {what} named {name:?} on this host")]
    #[strum(serialize = "file_unknown_account")]
    UnknownAccount {
        /// The target file.
        path: PathBuf,
        /// `user` / `group`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// What was read back differs from what was written.
    #[error("file {path}: the content read back differs from the content written")]
    #[strum(serialize = "file_mismatch")]
    Mismatch {
        /// The target file.
        path: PathBuf,
    },
    /// The file is still there after it was removed (someone wrote it again).
    #[error("file {path}: still there after it was removed")]
    #[strum(serialize = "file_still_present")]
    StillPresent {
        /// The target file.
        path: PathBuf,
    },
}

impl FileError {
    /// Fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }

    /// Whether a later retry may succeed (a full disk or a transient I/O error may
    /// clear; a missing directory or permission problem needs a person).
    pub fn is_transient(&self) -> bool {
        matches!(self, FileError::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::StorageFull
                | std::io::ErrorKind::TimedOut))
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy)]
pub struct FileReport {
    /// The file was replaced.
    pub changed: bool,
    /// The file holds the content, mode and ownership asked for.
    pub verified: bool,
}

/// Replaces `spec.path` with `content` (see the module docs). Blocking I/O runs on
/// tokio's blocking pool.
pub async fn push(spec: &FileConsumer, content: &SecretString) -> Result<FileReport, FileError> {
    let spec = spec.clone();
    let content = content.clone();
    blocking("run the file writer", move || {
        push_blocking(&spec, &content)
    })
    .await
}

/// Removes `spec.path` (the file rotor wrote) and syncs its directory; returns whether
/// it existed. A missing file is removed already. Checked afterwards: the path must
/// be gone.
pub async fn remove(spec: &FileConsumer) -> Result<bool, FileError> {
    let path = spec.path.clone();
    let work = move || {
        let existed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(&path, "remove the file")(e)),
        };
        if let Ok(d) = File::open(path.parent().unwrap_or(Path::new("/"))) {
            d.sync_all().map_err(io(&path, "sync the directory"))?;
        }
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(_) => return Err(FileError::StillPresent { path }),
            Err(e) => return Err(io(&path, "check the file is gone")(e)),
        }
        if existed {
            info!(file = %path.display(), "File removed.");
        }
        Ok(existed)
    };
    blocking("run the file remover", work).await
}

fn io<'a>(
    path: &'a Path,
    operation: &'static str,
) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        path: path.to_owned(),
        operation,
        source,
    }
}

/// Looks a name up in an `/etc/passwd`-style file (`name:x:id:…`); numeric ids pass.
fn lookup_id(db: &str, name: &str) -> Option<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Some(id);
    }
    let text = fs::read_to_string(db).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

fn ids(spec: &FileConsumer) -> Result<(Option<u32>, Option<u32>), FileError> {
    let resolve = |value: &Option<String>, db: &str, what: &'static str| match value {
        None => Ok(None),
        Some(name) => lookup_id(db, name)
            .map(Some)
            .ok_or_else(|| FileError::UnknownAccount {
                path: spec.path.clone(),
                what,
                name: name.clone(),
            }),
    };
    Ok((
        resolve(&spec.owner, "/etc/passwd", "user")?,
        resolve(&spec.group, "/etc/group", "group")?,
    ))
}

/// Compares the file with `content`, `mode` and the wanted ids: `Missing` when there
/// is no file, `Differs` naming `mode`, `owner`, `group` and `content` as they differ.
fn compare(
    path: &Path,
    content: &str,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<ReadBack, FileError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadBack::Missing),
        Err(e) => return Err(io(path, "open the current file")(e)),
    };
    let meta = file.metadata().map_err(io(path, "stat the current file"))?;
    let mut fields = Vec::new();
    for (field, differs) in [
        ("mode", meta.permissions().mode() & 0o7777 != mode),
        ("owner", uid.is_some_and(|u| u != meta.uid())),
        ("group", gid.is_some_and(|g| g != meta.gid())),
    ] {
        if differs {
            fields.push(field.to_owned());
        }
    }
    let mut current = Zeroizing::new(String::new());
    if file.read_to_string(&mut current).is_err() || !constant_time_eq(&current, content) {
        fields.push("content".to_owned());
    }
    Ok(ReadBack::of_differences(fields))
}

/// Reads the file back and compares it with `content` and `spec`'s mode and
/// ownership ([`compare`]). Blocking I/O runs on tokio's blocking pool.
pub async fn read_back(spec: &FileConsumer, content: &SecretString) -> Result<ReadBack, FileError> {
    let spec = spec.clone();
    let content = content.clone();
    blocking("run the file reader", move || {
        let (uid, gid) = ids(&spec)?;
        compare(&spec.path, content.expose_secret(), spec.mode, uid, gid)
    })
    .await
}

/// Runs `work` on tokio's blocking pool; a panic there is an I/O error `doing` it.
async fn blocking<T: Send + 'static>(
    doing: &'static str,
    work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(FileError::Io {
            path: PathBuf::new(),
            operation: doing,
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

fn push_blocking(spec: &FileConsumer, content: &SecretString) -> Result<FileReport, FileError> {
    let path = &spec.path;
    let (uid, gid) = ids(spec)?;
    let text = content.expose_secret();
    if compare(path, text, spec.mode, uid, gid)? == ReadBack::Matches {
        return Ok(FileReport {
            changed: false,
            verified: true,
        });
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.rotor-{}",
        name.as_deref().unwrap_or("file"),
        ulid::Ulid::new()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(spec.mode)
            .open(&tmp)
            .map_err(io(path, "create the temporary file"))?;
        // The process umask may have narrowed the mode: set it exactly.
        file.set_permissions(fs::Permissions::from_mode(spec.mode))
            .map_err(io(path, "set the mode"))?;
        file.write_all(text.as_bytes())
            .map_err(io(path, "write the temporary file"))?;
        file.sync_all()
            .map_err(io(path, "flush the temporary file"))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&file, uid, gid).map_err(io(path, "set owner and group"))?;
        }
        drop(file);
        fs::rename(&tmp, path).map_err(io(path, "rename over the target"))?;
        if let Ok(d) = File::open(dir) {
            d.sync_all().map_err(io(path, "sync the directory"))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    if compare(path, text, spec.mode, uid, gid)? != ReadBack::Matches {
        return Err(FileError::Mismatch { path: path.clone() });
    }
    info!(file = %path.display(), mode = format!("{:04o}", spec.mode), "File replaced.");
    Ok(FileReport {
        changed: true,
        verified: true,
    })
}

impl Consumer for FileConsumer {
    fn consumer_kind(&self) -> ConsumerKind {
        ConsumerKind::File
    }

    async fn push(&self, _ctx: &Context<'_>, new: &NewValue<'_>) -> PushResult {
        let content = render(&self.content, new.vars, "content")?;
        let r = push(self, &content).await?;
        Ok(PushOutcome::written(r.changed, r.verified))
    }

    async fn read_back(&self, _ctx: &Context<'_>, new: &NewValue<'_>) -> ReadBackResult {
        let content = render(&self.content, new.vars, "content")?;
        Ok(read_back(self, &content).await?)
    }

    async fn remove(&self, _ctx: &Context<'_>) -> RemoveResult {
        let existed = remove(self).await?;
        Ok(RemoveOutcome::of_one(
            existed,
            "file removed",
            "no such file",
        ))
    }
}
