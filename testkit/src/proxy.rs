//! [`Proxy`]: a TCP proxy on loopback that a test owns and puts in front of an outside
//! system (OpenBao, a database, the fake Kubernetes API, a fake GitLab…), so the test
//! can make that system unreachable or hung without touching the shared service.
//!
//! - [`Proxy::cut`]: open connections are reset and new ones are accepted and reset at
//!   once: the system is down (fast failure).
//! - [`Proxy::freeze`]: connections are accepted but nothing is forwarded either way, on
//!   new and open connections alike: the system hangs (as under `SIGSTOP`) and clients
//!   run into their timeouts.
//! - [`Proxy::restore`]: forwarding again; connections held by a freeze resume where
//!   they stood.
//!
//! The proxy runs on its own thread with its own tokio runtime (like
//! [`crate::loopback::LoopbackServer`]), so it keeps forwarding while a test blocks, in
//! any runtime flavour. Dropping the [`Proxy`] stops it and closes every connection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let proxy = rotor_testkit::Proxy::start(upstream.local_addr().unwrap()).await;
//! let mut client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
//! let (mut server, _) = upstream.accept().await.unwrap();
//! client.write_all(b"ping").await.unwrap();
//! let mut buf = [0u8; 4];
//! server.read_exact(&mut buf).await.unwrap();
//! assert_eq!(&buf, b"ping");
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// What the proxy does with traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwarding.
    Open,
    /// Resetting new connections and open ones.
    Cut,
    /// Accepting connections but forwarding nothing.
    Frozen,
}

/// A running TCP proxy to one upstream address; see the module documentation.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    /// Starts forwarding a fresh port on `127.0.0.1` to `upstream`; returns once it
    /// listens.
    ///
    /// # Panics
    ///
    /// When the proxy's thread, runtime or listener cannot start.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let (mode, mode_rx) = watch::channel(Mode::Open);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<SocketAddr, String>>();
        std::thread::Builder::new()
            .name("tcp-proxy".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let bound = TcpListener::bind("127.0.0.1:0")
                        .await
                        .and_then(|l| Ok((l.local_addr()?, l)));
                    let listener = match bound {
                        Ok((addr, listener)) => {
                            let _ = ready_tx.send(Ok(addr));
                            listener
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("bind: {e}")));
                            return;
                        }
                    };
                    tokio::select! {
                        _ = stop_rx => {}
                        () = accept_loop(listener, upstream, mode_rx) => {}
                    }
                });
            })
            .unwrap_or_else(|e| panic!("starting the tcp-proxy thread failed: {e}"));
        let addr = match ready_rx.await {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!("the tcp proxy could not start: {e}"),
            Err(_) => panic!("the tcp proxy thread ended before it listened"),
        };
        Proxy {
            addr,
            upstream,
            mode,
            stop: Some(stop),
        }
    }

    /// The address clients connect to (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address traffic is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `http://127.0.0.1:PORT`, for HTTP upstreams.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resets open connections and every new one until [`Proxy::restore`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Accepts connections but forwards nothing (either way) until [`Proxy::restore`].
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    /// Forwards again; connections held by a freeze resume.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error only means the proxy thread has ended already.
            let _ = stop.send(());
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors and the like: try again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if *mode.borrow() == Mode::Cut {
            reset(client);
            continue;
        }
        tokio::spawn(connection(client, upstream, mode.clone()));
    }
}

/// Closes `stream` with a reset (no orderly shutdown), as a refused connection looks.
fn reset(stream: TcpStream) {
    // A zero linger makes the close send RST; it never blocks.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Waits while the proxy is frozen; `false` when it is (or becomes) cut.
async fn passable(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Frozen).await {
        Ok(m) => *m == Mode::Open,
        Err(_) => false,
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if !passable(&mut mode).await {
        reset(client);
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pipe(client_read, server_write, mode.clone());
    let down = pipe(server_read, client_write, mode.clone());
    let cut = async {
        let _ = mode.wait_for(|m| *m == Mode::Cut).await;
    };
    // Whichever ends first ends the connection: both sides closed, or a cut. Dropping
    // the halves closes both sockets.
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = cut => {}
    }
}

/// Copies `from` to `to`, holding every chunk while frozen and stopping when cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !passable(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn ping(stream: &mut TcpStream) -> std::io::Result<[u8; 4]> {
        stream.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn cut_resets_and_freeze_holds_until_restored() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(&ping(&mut open).await.unwrap(), b"ping");

        proxy.freeze();
        let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), ping(&mut held)).await;
        assert!(waiting.is_err(), "a frozen proxy forwards nothing");
        let pending = tokio::spawn(async move { ping(&mut open).await.map(|b| (b, open)) });
        proxy.restore();
        let (echoed, mut open) = pending.await.unwrap().unwrap();
        assert_eq!(&echoed, b"ping", "a held connection resumes");

        proxy.cut();
        assert!(
            ping(&mut open).await.is_err(),
            "a cut closes open connections"
        );
        // The reset may come before `connect` returns or at the first exchange.
        if let Ok(mut refused) = TcpStream::connect(proxy.addr()).await {
            assert!(ping(&mut refused).await.is_err(), "a cut refuses new ones");
        }

        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(&ping(&mut again).await.unwrap(), b"ping");
    }
}
