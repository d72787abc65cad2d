//! Per-peer defences in front of authentication.
//!
//! - **Throttle.** Each peer (remote IPv4 address, or IPv6 /64) has a budget of failed
//!   authentications: [`PeerLimits::burst`] at once, one more every
//!   [`PeerLimits::refill`]. Every `/v1` request reserves one before its token is
//!   looked at; a request that authenticates (or cannot be checked: TokenReview down)
//!   gives it back, a 401 keeps it spent. An empty budget answers 429 with
//!   `Retry-After` whatever the token, so a throttled peer learns nothing about tokens
//!   and a good token from that peer waits too.
//! - **Folding.** Refusals with status 401 or 429 are audited one by one only for the
//!   first [`PeerLimits::write_first`] of each [`PeerLimits::fold_window`] per peer,
//!   identity (or none) and status; the rest of the window is counted and written as
//!   one record whose `count` says how many requests it stands for (when the window
//!   is over, or when the server stops).
//!
//! The table is bounded ([`PeerLimits::max_peers`]): idle peers are dropped first,
//! then the least recently seen; a dropped peer's pending count is written, not lost.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

use super::RequestAudit;

/// Longest request path kept in a pending count (the rest is cut).
const MAX_KEPT_PATH: usize = 256;

/// Most (identity, status) counts kept per peer.
const MAX_FOLDS_PER_PEER: usize = 8;

/// The throttle's and the folding's settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerLimits {
    /// Failed authentications a peer may make at once.
    pub burst: u32,
    /// Time to regain one.
    pub refill: Duration,
    /// Refusals of one kind from one peer in this window, after the first
    /// `write_first`, make one counted record.
    pub fold_window: Duration,
    /// Refusals of one kind from one peer written one by one in each window.
    pub write_first: u32,
    /// Most peers remembered.
    pub max_peers: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            burst: 20,
            refill: Duration::from_secs(3),
            fold_window: Duration::from_secs(60),
            write_first: 5,
            max_peers: 4096,
        }
    }
}

/// Refusals not audited one by one, waiting to be written as one record.
struct Pending {
    count: u64,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    /// The last of them (path cut to [`MAX_KEPT_PATH`]).
    last: RequestAudit,
}

struct Fold {
    identity: Option<String>,
    status: u16,
    since: Instant,
    /// Refusals written one by one in this window.
    written: u32,
    pending: Option<Pending>,
}

struct Peer {
    /// Failed authentications left.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
    /// The peer's last request.
    seen: Instant,
    folds: Vec<Fold>,
}

/// The peers table (see the module documentation).
pub(super) struct Peers {
    limits: PeerLimits,
    table: Mutex<HashMap<IpAddr, Peer>>,
}

/// What [`Peers::fold`] decided about one refusal.
pub(super) struct Folded {
    /// Whether this refusal is audited on its own (else it was counted).
    pub write: bool,
    /// Counted records now due (an older window ended, or a peer was dropped).
    pub due: Vec<RequestAudit>,
}

/// The key of a peer: an IPv4 address (IPv4-mapped IPv6 included) or an IPv6 /64,
/// since one host commonly holds a whole /64.
pub(super) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn foldable(status: u16) -> bool {
    matches!(status, 401 | 429)
}

impl Pending {
    /// The counted record.
    fn into_record(self, key: IpAddr, window: Duration, write_first: u32) -> RequestAudit {
        let mut record = self.last;
        let last_detail = std::mem::take(&mut record.detail);
        record.count = self.count;
        record.detail = format!(
            "{} more refused requests (status {}) from {key} between {} and {}, counted in one record (the first {write_first} of each {}s window are recorded one by one); the last one: {} {}: {last_detail}",
            self.count,
            record.status,
            self.first_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            self.last_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            window.as_secs(),
            record.method,
            record.path,
        );
        record
    }
}

impl Peer {
    fn new(limits: &PeerLimits, now: Instant) -> Peer {
        Peer {
            tokens: f64::from(limits.burst.max(1)),
            at: now,
            seen: now,
            folds: Vec::new(),
        }
    }

    fn refill(&mut self, limits: &PeerLimits, now: Instant) {
        let capacity = f64::from(limits.burst.max(1));
        let per = limits.refill.as_secs_f64().max(0.001);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed / per).min(capacity);
        self.at = now.max(self.at);
    }

    /// Nothing to remember: a full budget and no pending count.
    fn idle(&mut self, limits: &PeerLimits, now: Instant) -> bool {
        self.refill(limits, now);
        self.tokens >= f64::from(limits.burst.max(1))
            && self.folds.iter().all(|f| f.pending.is_none())
    }

    /// Pending counts whose window is over (all of them with `all`), as records.
    fn take_due(
        &mut self,
        key: IpAddr,
        limits: &PeerLimits,
        now: Instant,
        all: bool,
    ) -> Vec<RequestAudit> {
        let mut due = Vec::new();
        self.folds.retain_mut(|f| {
            let over = now.saturating_duration_since(f.since) >= limits.fold_window;
            if (over || all)
                && let Some(p) = f.pending.take()
            {
                due.push(p.into_record(key, limits.fold_window, limits.write_first));
            }
            !over
        });
        due
    }
}

impl Peers {
    /// An empty table with `limits`.
    pub fn new(limits: PeerLimits) -> Peers {
        Peers {
            limits,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The peer's entry, made room for when the table is full (records of dropped
    /// peers' pending counts go to `due`).
    fn entry<'a>(
        &self,
        table: &'a mut HashMap<IpAddr, Peer>,
        key: IpAddr,
        now: Instant,
        due: &mut Vec<RequestAudit>,
    ) -> &'a mut Peer {
        if !table.contains_key(&key) && table.len() >= self.limits.max_peers {
            table.retain(|_, p| !p.idle(&self.limits, now));
            while table.len() >= self.limits.max_peers {
                let Some(oldest) = table.iter().min_by_key(|(_, p)| p.seen).map(|(k, _)| *k) else {
                    break;
                };
                if let Some(mut p) = table.remove(&oldest) {
                    due.extend(p.take_due(oldest, &self.limits, now, true));
                }
            }
        }
        let peer = table
            .entry(key)
            .or_insert_with(|| Peer::new(&self.limits, now));
        peer.seen = now.max(peer.seen);
        peer
    }

    /// Reserves one failed authentication for a request from `ip`; `Err(wait)` when
    /// the peer has none left, with the time until it has one. Records of dropped
    /// peers' pending counts go to `due`.
    pub fn admit(
        &self,
        ip: IpAddr,
        now: Instant,
        due: &mut Vec<RequestAudit>,
    ) -> Result<(), Duration> {
        let key = peer_key(ip);
        // A std mutex, held for a few operations and never across an await.
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let peer = self.entry(&mut table, key, now, due);
        peer.refill(&self.limits, now);
        if peer.tokens >= 1.0 {
            peer.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - peer.tokens) * self.limits.refill.as_secs_f64();
            Err(Duration::from_secs_f64(wait.max(0.0)))
        }
    }

    /// Gives back the reservation of a request that was not a failed authentication.
    pub fn refund(&self, ip: IpAddr, now: Instant) {
        let key = peer_key(ip);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = table.get_mut(&key) {
            peer.refill(&self.limits, now);
            peer.tokens = (peer.tokens + 1.0).min(f64::from(self.limits.burst.max(1)));
        }
    }

    /// Decides whether `record` (a refusal, status set) is audited on its own or
    /// counted; `now_wall` is the wall clock at `now`.
    pub fn fold(&self, record: &RequestAudit, now: Instant, now_wall: DateTime<Utc>) -> Folded {
        let mut due = Vec::new();
        if !foldable(record.status) {
            return Folded { write: true, due };
        }
        let key = peer_key(record.remote.ip());
        let limits = self.limits;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let peer = self.entry(&mut table, key, now, &mut due);
        due.extend(peer.take_due(key, &limits, now, false));
        let position = peer
            .folds
            .iter()
            .position(|f| f.status == record.status && f.identity == record.identity);
        let Some(i) = position else {
            if peer.folds.len() >= MAX_FOLDS_PER_PEER {
                // Unusual: many identities refused from one peer. Audit one by one.
                return Folded { write: true, due };
            }
            peer.folds.push(Fold {
                identity: record.identity.clone(),
                status: record.status,
                since: now,
                written: 1,
                pending: None,
            });
            return Folded { write: true, due };
        };
        let fold = &mut peer.folds[i];
        if fold.written < limits.write_first {
            fold.written += 1;
            return Folded { write: true, due };
        }
        let mut last = record.clone();
        if last.path.len() > MAX_KEPT_PATH {
            let mut cut = MAX_KEPT_PATH;
            while !last.path.is_char_boundary(cut) {
                cut -= 1;
            }
            last.path.truncate(cut);
            last.path.push('…');
        }
        match &mut fold.pending {
            Some(p) => {
                p.count += 1;
                p.last_at = now_wall;
                p.last = last;
            }
            None => {
                fold.pending = Some(Pending {
                    count: 1,
                    first_at: now_wall,
                    last_at: now_wall,
                    last,
                });
            }
        }
        Folded { write: false, due }
    }

    /// Counted records whose window is over (every pending one with `all`, when the
    /// server stops); drops idle peers.
    pub fn due(&self, now: Instant, all: bool) -> Vec<RequestAudit> {
        let mut due = Vec::new();
        let limits = self.limits;
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for (key, peer) in table.iter_mut() {
            due.extend(peer.take_due(*key, &limits, now, all));
        }
        table.retain(|_, p| !p.idle(&limits, now));
        due
    }

    /// Peers remembered (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, Uri};
    use std::net::SocketAddr;

    fn limits() -> PeerLimits {
        PeerLimits {
            burst: 3,
            refill: Duration::from_secs(10),
            fold_window: Duration::from_secs(60),
            write_first: 2,
            max_peers: 4,
        }
    }

    fn refusal(ip: &str, status: u16) -> RequestAudit {
        let remote: SocketAddr = format!("{ip}:40000").parse().unwrap();
        let mut r = RequestAudit::new(&Method::GET, &Uri::from_static("/v1/policies"), remote);
        r.status = status;
        r.detail = "invalid bearer token".into();
        r
    }

    #[test]
    fn a_peer_spends_its_budget_on_failures_only() {
        let peers = Peers::new(limits());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let mut due = Vec::new();
        // Successes give the reservation back.
        for _ in 0..10 {
            peers.admit(ip, t0, &mut due).unwrap();
            peers.refund(ip, t0);
        }
        for _ in 0..3 {
            peers.admit(ip, t0, &mut due).unwrap();
        }
        let wait = peers.admit(ip, t0, &mut due).unwrap_err();
        assert_eq!(wait.as_secs_f64().round(), 10.0, "{wait:?}");
        // Another peer has its own budget; an IPv6 /64 is one peer.
        peers
            .admit("10.0.0.2".parse().unwrap(), t0, &mut due)
            .unwrap();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        // Refilled after `refill`.
        peers
            .admit(ip, t0 + Duration::from_secs(10), &mut due)
            .unwrap();
        assert!(due.is_empty());
    }

    #[test]
    fn refusals_fold_into_one_counted_record_per_window() {
        let peers = Peers::new(limits());
        let t0 = Instant::now();
        let w0 = Utc::now();
        for _ in 0..2 {
            let first = peers.fold(&refusal("10.0.0.1", 401), t0, w0);
            assert!(first.write && first.due.is_empty());
        }
        for i in 1..=50 {
            let f = peers.fold(&refusal("10.0.0.1", 401), t0 + Duration::from_millis(i), w0);
            assert!(!f.write && f.due.is_empty());
        }
        // A 403 is never folded; a 429 is folded apart from the 401s.
        assert!(peers.fold(&refusal("10.0.0.1", 403), t0, w0).write);
        assert!(peers.fold(&refusal("10.0.0.1", 429), t0, w0).write);
        assert!(peers.due(t0 + Duration::from_secs(30), false).is_empty());
        // The window ends: the count is due, and the next refusal is written again.
        let later = t0 + Duration::from_secs(61);
        let f = peers.fold(&refusal("10.0.0.1", 401), later, w0);
        assert!(f.write);
        let [record] = &f.due[..] else {
            panic!("one counted record, got {}", f.due.len())
        };
        assert_eq!((record.count, record.status), (50, 401));
        assert!(
            record.detail.contains("50 more refused requests"),
            "{}",
            record.detail
        );
        assert!(
            record.detail.contains("invalid bearer token"),
            "{}",
            record.detail
        );
        // Stopping writes what is pending.
        for _ in 0..2 {
            peers.fold(&refusal("10.0.0.1", 401), later, w0);
        }
        let all = peers.due(later, true);
        assert_eq!(all.iter().map(|r| r.count).sum::<u64>(), 1);
    }

    #[test]
    fn the_table_is_bounded_and_a_dropped_peer_keeps_its_count() {
        let peers = Peers::new(limits());
        let t0 = Instant::now();
        let w0 = Utc::now();
        let mut due = Vec::new();
        for i in 0..4u64 {
            let ip = format!("10.0.1.{i}");
            for _ in 0..3 {
                peers.fold(&refusal(&ip, 401), t0 + Duration::from_millis(i), w0);
            }
            peers.admit(ip.parse().unwrap(), t0, &mut due).unwrap();
        }
        assert_eq!(peers.len(), 4);
        for i in 0..100u64 {
            let ip: IpAddr = format!("10.0.2.{i}").parse().unwrap();
            let _ = peers.admit(ip, t0 + Duration::from_millis(10 + i), &mut due);
            assert!(peers.len() <= 4);
        }
        // The four first peers were dropped, and their counts came out as records.
        let mut counted: Vec<String> = due
            .iter()
            .filter(|r| r.count == 1)
            .map(|r| r.remote.ip().to_string())
            .collect();
        counted.sort();
        assert_eq!(counted, ["10.0.1.0", "10.0.1.1", "10.0.1.2", "10.0.1.3"]);
    }
}
