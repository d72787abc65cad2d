//! Durability of ACL changes (see the module documentation of [`super`]): `ACL SAVE`
//! with an ACL file, else `CONFIG REWRITE`; servers that cannot persist, or hide
//! `CONFIG` from the admin, are warned about once.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use ::redis::{ErrorKind, ServerErrorKind};
use tracing::warn;

use super::{RedisError, RedisTarget, Session};

impl RedisTarget {
    pub(super) async fn persist(&self, session: &mut Session) -> Result<(), RedisError> {
        let persist_error = |method, source| RedisError::Persist {
            address: self.address(),
            method,
            source,
        };
        let aclfile = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("aclfile")
            .query_async::<std::collections::HashMap<String, String>>(&mut session.conn)
            .await;
        let aclfile = match aclfile {
            Ok(map) => map.get("aclfile").cloned().unwrap_or_default(),
            Err(e) if config_unavailable(&e) => {
                self.warn_once(
                    "CONFIG is not available to the admin, so rotor cannot tell how this server persists ACL changes; make sure they survive a restart",
                );
                return Ok(());
            }
            Err(source) => return Err(persist_error("CONFIG GET aclfile", source)),
        };
        if !aclfile.is_empty() {
            return ::redis::cmd("ACL")
                .arg("SAVE")
                .query_async::<()>(&mut session.conn)
                .await
                .map_err(|source| persist_error("ACL SAVE", source));
        }
        match ::redis::cmd("CONFIG")
            .arg("REWRITE")
            .query_async::<()>(&mut session.conn)
            .await
        {
            Ok(()) => Ok(()),
            Err(e)
                if e.detail()
                    .is_some_and(|d| d.contains("without a config file")) =>
            {
                self.warn_once(
                    "the server runs without a config file or ACL file, so ACL changes are lost when it restarts",
                );
                Ok(())
            }
            Err(e) if config_unavailable(&e) => {
                self.warn_once(
                    "CONFIG REWRITE is not available to the admin; ACL changes may be lost when the server restarts",
                );
                Ok(())
            }
            Err(source) => Err(persist_error("CONFIG REWRITE", source)),
        }
    }

    /// Logs `message` once per server address for the life of the process.
    fn warn_once(&self, message: &'static str) {
        static WARNED: OnceLock<Mutex<HashSet<(String, &'static str)>>> = OnceLock::new();
        let first = WARNED
            .get_or_init(Default::default)
            .lock()
            .map(|mut set| set.insert((self.address(), message)))
            .unwrap_or(true);
        if first {
            warn!(target_address = %self.address(), "{message}");
        }
    }
}

fn config_unavailable(error: &::redis::RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(ServerErrorKind::NoPerm))
        || error.code() == Some("NOPERM")
        || error
            .detail()
            .is_some_and(|d| d.contains("unknown command"))
}
