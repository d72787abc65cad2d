//! [`LoopbackServer`]: the part every fake HTTP server in this crate shares. It binds
//! `127.0.0.1:0` on a thread of its own with its own current-thread tokio runtime, so it
//! keeps answering while the test blocks and whatever runtime flavour the test uses;
//! dropping the [`LoopbackServer`] stops it.
//!
//! - [`spawn`] serves a hyper [`Service`] over HTTP/1 (the fake key API, GitLab, GitHub).
//! - [`spawn_with`] runs an async setup step before the server counts as started, then
//!   the caller's own serving loop (the fake Kubernetes API server, whose loop lives in
//!   [`crate::apiserver::serve`]).
//!
//! Both return once the server listens, and panic with a message naming the thread when
//! it cannot start.

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// A running server on loopback; dropping it stops the server.
///
/// ```
/// use std::convert::Infallible;
///
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper::service::service_fn;
///
/// let empty = |_req| async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new()))) };
/// let server = rotor_testkit::loopback::spawn("doc-server", service_fn(empty));
/// assert!(server.url().starts_with("http://127.0.0.1:"));
/// ```
#[derive(Debug)]
pub struct LoopbackServer {
    /// The address the server listens on (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl LoopbackServer {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the server thread has ended already.
            let _ = stop.send(());
        }
    }
}

/// Resolves when the server should stop: its [`LoopbackServer`] was dropped (or, should
/// the stop message get lost, its sender was).
#[derive(Debug)]
pub struct Shutdown(oneshot::Receiver<()>);

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Starts a thread named `thread_name` serving `service` over HTTP/1 on `127.0.0.1:0`,
/// each connection in a task of its own, and returns once it listens.
///
/// # Panics
///
/// When the thread, its runtime or the listener cannot be set up.
pub fn spawn<S, B>(thread_name: &str, service: S) -> LoopbackServer
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let name: Arc<str> = Arc::from(thread_name);
    let stop = launch(
        thread_name,
        || async { Ok(()) },
        move |listener, (), shutdown| serve(name, listener, service, shutdown),
        move |ready| {
            let _ = ready_tx.send(ready);
        },
    );
    LoopbackServer {
        addr: started(thread_name, ready_rx.recv().ok()),
        stop: Some(stop),
    }
}

/// Starts a thread named `thread_name` that binds `127.0.0.1:0` and awaits `setup`; once
/// that succeeds the server counts as started and `run` gets the listener, what `setup`
/// returned and the [`Shutdown`] to stop on. Awaits the start instead of blocking.
///
/// # Panics
///
/// When the thread, its runtime or the listener cannot be set up, or `setup` fails (its
/// error is in the message).
pub async fn spawn_with<T, Setup, SetupFut, Run, RunFut>(
    thread_name: &str,
    setup: Setup,
    run: Run,
) -> LoopbackServer
where
    Setup: FnOnce() -> SetupFut + Send + 'static,
    SetupFut: Future<Output = Result<T, String>>,
    Run: FnOnce(TcpListener, T, Shutdown) -> RunFut + Send + 'static,
    RunFut: Future<Output = ()>,
{
    let (ready_tx, ready_rx) = oneshot::channel();
    let stop = launch(thread_name, setup, run, move |ready| {
        let _ = ready_tx.send(ready);
    });
    LoopbackServer {
        addr: started(thread_name, ready_rx.await.ok()),
        stop: Some(stop),
    }
}

/// The server thread: runtime, listener, `setup`, then `report` (the address, or why it
/// could not start) and `run`. Returns the sender that stops it.
fn launch<T, Setup, SetupFut, Run, RunFut>(
    thread_name: &str,
    setup: Setup,
    run: Run,
    report: impl FnOnce(Result<SocketAddr, String>) + Send + 'static,
) -> oneshot::Sender<()>
where
    Setup: FnOnce() -> SetupFut + Send + 'static,
    SetupFut: Future<Output = Result<T, String>>,
    Run: FnOnce(TcpListener, T, Shutdown) -> RunFut + Send + 'static,
    RunFut: Future<Output = ()>,
{
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let body = move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return report(Err(format!("building a tokio runtime failed: {e}"))),
        };
        runtime.block_on(async move {
            let listener = match TcpListener::bind("127.0.0.1:0").await {
                Ok(listener) => listener,
                Err(e) => return report(Err(format!("binding 127.0.0.1:0 failed: {e}"))),
            };
            let addr = match listener.local_addr() {
                Ok(addr) => addr,
                Err(e) => {
                    return report(Err(format!("reading the local address failed: {e}")));
                }
            };
            let state = match setup().await {
                Ok(state) => state,
                Err(message) => return report(Err(message)),
            };
            report(Ok(addr));
            // Should the caller be gone already, its stop sender is too: `run` ends at once.
            run(listener, state, Shutdown(stop_rx)).await;
        });
    };
    std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(body)
        .unwrap_or_else(|e| {
            panic!("spawning the thread of loopback server {thread_name} failed: {e}")
        });
    stop_tx
}

/// The address the server thread reported, or a panic saying why there is none.
fn started(thread_name: &str, ready: Option<Result<SocketAddr, String>>) -> SocketAddr {
    match ready {
        Some(Ok(addr)) => addr,
        Some(Err(message)) => panic!("loopback server {thread_name} did not start: {message}"),
        None => panic!("the thread of loopback server {thread_name} ended before it was ready"),
    }
}

/// Accepts connections until `shutdown`, serving each with `service` over HTTP/1, then
/// ends the open ones.
async fn serve<S, B>(name: Arc<str>, listener: TcpListener, service: S, mut shutdown: Shutdown)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let service = Arc::new(service);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let service = Arc::clone(&service);
                let name = Arc::clone(&name);
                connections.spawn(async move {
                    if let Err(error) = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(
                            server = %name, error = %error, "Connection ended with an error."
                        );
                    }
                });
            }
        }
    }
    connections.shutdown().await;
}
