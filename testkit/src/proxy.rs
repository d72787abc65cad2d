//! [`Proxy`]: a TCP proxy on loopback that a test owns, put in front of an outside system
//! (OpenBao, the fake Kubernetes API, a database) so the test can make that system
//! unreachable or hung without touching the shared service.
//!
//! - [`Proxy::cut`]: connections are refused (accepted and reset at once) and open ones
//!   are closed: the system is down.
//! - [`Proxy::freeze`]: connections are accepted but nothing is forwarded either way,
//!   on new and open connections alike: the system hangs (as under `SIGSTOP`) and
//!   clients run into their timeouts.
//! - [`Proxy::freeze_new`]: new connections are accepted and then get nothing, while
//!   connections opened before keep working: a server whose accept queue hangs, seen
//!   by a client that still holds a pooled connection to it.
//! - [`Proxy::restore`]: forwarding again; connections held during a freeze resume.
//!
//! The proxy runs on its own thread with its own tokio runtime (like
//! [`crate::loopback::LoopbackServer`]), so it keeps working while the test blocks and
//! whatever runtime flavour the test uses. Dropping the [`Proxy`] stops it and closes
//! every connection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let proxy = rotor_testkit::Proxy::start(upstream.local_addr().unwrap());
//! let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
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
    /// Refusing new connections and closing open ones.
    Cut,
    /// Accepting connections but forwarding nothing.
    Frozen,
    /// Accepting new connections but forwarding nothing on them; open ones forward.
    FrozenNew,
}

/// A running TCP proxy to one upstream address; see the module documentation.
#[derive(Debug)]
pub struct Proxy {
    /// The address clients connect to (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    /// The address traffic is forwarded to.
    pub upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    /// Starts forwarding `127.0.0.1:0` to `upstream` and returns once it listens.
    ///
    /// # Panics
    ///
    /// When the proxy's thread, runtime or listener cannot start.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let (mode, mode_rx) = watch::channel(Mode::Open);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
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
                    let listener = match TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("bind: {e}")));
                            return;
                        }
                    };
                    let addr = match listener.local_addr() {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("local address: {e}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(addr));
                    tokio::select! {
                        _ = stop_rx => {}
                        () = accept_loop(listener, upstream, mode_rx) => {}
                    }
                });
            })
            .unwrap_or_else(|e| panic!("starting the tcp-proxy thread failed: {e}"));
        let addr = match ready_rx.recv() {
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

    /// `http://127.0.0.1:PORT`, for HTTP upstreams.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses new connections and closes open ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Accepts connections but forwards nothing (either way) until [`Proxy::restore`].
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    /// Accepts new connections but forwards nothing on them until [`Proxy::restore`];
    /// connections opened before keep forwarding.
    pub fn freeze_new(&self) {
        self.mode.send_replace(Mode::FrozenNew);
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
            // An error means the proxy thread has ended already.
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
    let _ = socket_linger_zero(&stream);
    drop(stream);
}

fn socket_linger_zero(stream: &TcpStream) -> std::io::Result<()> {
    #[allow(deprecated)] // set_linger blocks on close only for a non-zero linger.
    stream.set_linger(Some(Duration::ZERO))
}

/// Waits while the proxy is frozen; `false` when it is (or becomes) cut.
async fn passable(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Frozen).await {
        Ok(m) => matches!(*m, Mode::Open | Mode::FrozenNew),
        Err(_) => false,
    }
}

/// [`passable`] for a connection not yet forwarded: [`Mode::FrozenNew`] holds it too.
async fn admitted(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode
        .wait_for(|m| !matches!(*m, Mode::Frozen | Mode::FrozenNew))
        .await
    {
        Ok(m) => *m == Mode::Open,
        Err(_) => false,
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if !admitted(&mut mode).await {
        reset(client);
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pipe(client_read, server_write, mode.clone());
    let down = pipe(server_read, client_write, mode.clone());
    let cut = async {
        let _ = mode.wait_for(|m| *m == Mode::Cut).await;
    };
    // Whichever ends first ends the connection: a side closing, or a cut.
    tokio::select! {
        () = async { tokio::join!(up, down); } => {}
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
        if !passable(&mut mode).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}
