//! Admin sessions, kept for reuse: after a call that succeeded, the connection waits up
//! to 30 s (at most 8 per server and admin login) for the next call, checked alive
//! before reuse. Only under a multi-threaded tokio runtime (the agent's and the CLI's),
//! because a connection belongs to the runtime that opened it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use tracing::debug;

use super::PostgresTarget;
use crate::credentials::target::AbortOnDrop;

/// How long a session may take to say goodbye before its task is aborted.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an admin connection stays open, idle, for the next call.
const ADMIN_IDLE: Duration = Duration::from_secs(30);
/// Idle admin connections kept per server and admin login.
const ADMIN_IDLE_MAX: usize = 8;
/// How long a kept connection may take to prove it is alive before it is replaced.
const ADMIN_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle admin connections by [`PostgresTarget::pool_key`], newest last, each with the
/// id its expiry timer looks for.
type IdleSessions = HashMap<String, Vec<(u64, Session)>>;
static ADMIN_POOL: LazyLock<Mutex<IdleSessions>> = LazyLock::new(Mutex::default);
/// Ids of kept connections.
static ADMIN_POOL_IDS: AtomicU64 = AtomicU64::new(0);

fn admin_pool() -> std::sync::MutexGuard<'static, IdleSessions> {
    // Entries are inserted and removed whole; a panic cannot leave one half-written.
    ADMIN_POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection: the client and the task driving its socket.
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) task: AbortOnDrop,
}

impl Session {
    /// Drops the client (the connection then sends Terminate and ends) and waits briefly
    /// for the task; a task still running after that is aborted when dropped.
    pub(super) async fn close(self) {
        let Session { client, mut task } = self;
        drop(client);
        if tokio::time::timeout(CLOSE_TIMEOUT, &mut task.0)
            .await
            .is_err()
        {
            debug!("PostgreSQL connection did not close in time; aborting it.");
        }
    }
}

impl PostgresTarget {
    /// Server, database, TLS and admin login: which kept connections this target may
    /// use. The password enters only as a SHA-256 digest and the key is never shown.
    fn pool_key(&self) -> String {
        let digest = Sha256::digest(self.admin.password.expose_secret().as_bytes());
        format!(
            "{}\0{}\0{}\0{:?}\0{}\0{}",
            self.endpoint.host(),
            self.endpoint.port(),
            self.database,
            self.tls,
            self.admin.username,
            hex::encode(digest)
        )
    }

    /// A kept admin connection that answers a sync message, newest first; dead ones
    /// are dropped.
    pub(super) async fn kept_session(&self) -> Option<Session> {
        let key = self.pool_key();
        loop {
            let (_, session) = admin_pool().get_mut(&key)?.pop()?;
            if session.client.is_closed() {
                continue;
            }
            let alive =
                tokio::time::timeout(ADMIN_CHECK_TIMEOUT, session.client.check_connection()).await;
            if matches!(alive, Ok(Ok(()))) {
                debug!(target = %self.address(), "Reusing an admin connection.");
                return Some(session);
            }
            session.close().await;
        }
    }

    /// Ends an admin call: after a call that succeeded the connection is kept for
    /// [`ADMIN_IDLE`] (see the module documentation), else closed.
    pub(super) async fn release(&self, session: Session, succeeded: bool) {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !succeeded || !multi_thread || session.client.is_closed() {
            return session.close().await;
        }
        let key = self.pool_key();
        let id = ADMIN_POOL_IDS.fetch_add(1, Ordering::Relaxed);
        let full = {
            let mut pool = admin_pool();
            let idle = pool.entry(key.clone()).or_default();
            if idle.len() >= ADMIN_IDLE_MAX {
                Some(session)
            } else {
                idle.push((id, session));
                None
            }
        };
        if let Some(session) = full {
            return session.close().await;
        }
        tokio::spawn(async move {
            tokio::time::sleep(ADMIN_IDLE).await;
            let expired = {
                let mut pool = admin_pool();
                let found = pool.get_mut(&key).and_then(|idle| {
                    let at = idle.iter().position(|(i, _)| *i == id)?;
                    Some(idle.remove(at).1)
                });
                if pool.get(&key).is_some_and(Vec::is_empty) {
                    pool.remove(&key);
                }
                found
            };
            if let Some(session) = expired {
                session.close().await;
            }
        });
    }
}
