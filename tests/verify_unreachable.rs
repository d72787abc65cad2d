//! "Old credential rejected" is only ever proven by an authentication error from the
//! target. When the target cannot be reached at verification time, the rotation must
//! fail verification, never pass it. Needs `dev/stack up`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Fixture, Options, assert_no_leak, text};
use tokio::net::{TcpListener, TcpStream};

/// A loopback TCP proxy to PostgreSQL that can be cut.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let flag = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { port, open, task }
    }

    /// Refuses every new connection from now on.
    fn cut(self) {
        self.open.store(false, Ordering::SeqCst);
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_fails_verification_instead_of_passing() {
    let s = rotor_testkit::stack();
    let proxy = Proxy::start(format!("{}:{}", s.pg.host, s.pg.port)).await;
    let fx = Fixture::new(
        "unreach",
        Options {
            pg_port: Some(proxy.port),
            ..Options::default()
        },
    )
    .await;

    // Everything up to and including propagation happens, then the process dies just
    // before verification (a probe-only verify is journaled with the next write, so
    // the journal says propagation is where to resume).
    let crashed = fx
        .rotate_cmd()
        .env("ROTOR_FAILPOINT", "verified:begun")
        .output()
        .expect("run rotor");
    assert!(!crashed.status.success(), "{}", text(&crashed));

    // The target becomes unreachable before verification runs.
    proxy.cut();
    let out = fx
        .rotor()
        .args(["-o", "json", "resume", "--policies"])
        .arg(fx.policy_dir())
        .arg(&fx.name)
        .output()
        .expect("run rotor resume");
    assert!(
        !out.status.success(),
        "an unverifiable rotation must not succeed:\n{}",
        text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rotation = &report["resumed"][0];
    assert_eq!(rotation["status"], "failed", "{report:#}");
    let check = &rotation["verification"][0];
    assert_eq!(check["check"], "old_credential_rejected");
    assert_eq!(check["passed"], false);
    assert!(
        check["evidence"]
            .as_str()
            .expect("evidence")
            .starts_with("inconclusive"),
        "{check}"
    );
    assert!(
        rotation["error"]
            .as_str()
            .expect("error")
            .contains("could not prove the old credential is rejected"),
        "{rotation:#}"
    );
    assert_no_leak(&out, &fx.all_passwords().await);
}
