//! [`HttpRecorder`]: an HTTP/1 forwarder on loopback that a test puts in front of a
//! plain-HTTP outside system (OpenBao, RabbitMQ's management API) to see what reached it
//! — today the `User-Agent` of every request ([`UserAgents`]) — without touching the
//! shared service.
//!
//! Each request is forwarded on a connection of its own and answered once the whole
//! upstream answer has arrived (no streaming); an upstream that cannot be reached is
//! answered with 502. Like the other fakes it runs on its own thread
//! ([`crate::loopback`]); dropping the [`HttpRecorder`] stops it.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::loopback::{self, LoopbackServer};
use crate::user_agents::UserAgents;

/// A running forwarder to one upstream address.
///
/// ```
/// let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let recorder = rotor_testkit::HttpRecorder::start(upstream.local_addr().unwrap());
/// assert!(recorder.url().starts_with("http://127.0.0.1:"));
/// assert!(recorder.user_agents().seen().is_empty());
/// ```
#[derive(Debug)]
pub struct HttpRecorder {
    /// The address clients connect to (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    /// The address requests are forwarded to.
    pub upstream: SocketAddr,
    agents: UserAgents,
    _server: LoopbackServer,
}

impl HttpRecorder {
    /// Starts forwarding `127.0.0.1:0` to `upstream` and returns once it listens.
    ///
    /// # Panics
    ///
    /// When the forwarder's thread, runtime or listener cannot start.
    pub fn start(upstream: SocketAddr) -> HttpRecorder {
        let agents = UserAgents::default();
        let recorded = agents.clone();
        let server = loopback::spawn(
            "http-recorder",
            service_fn(move |req| forward(upstream, recorded.clone(), req)),
        );
        HttpRecorder {
            addr: server.addr,
            upstream,
            agents,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What every request that reached the forwarder carried.
    pub fn user_agents(&self) -> &UserAgents {
        &self.agents
    }
}

/// Records `req` and answers with what `upstream` answered (502 when it could not).
async fn forward(
    upstream: SocketAddr,
    agents: UserAgents,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    agents.record(req.method(), req.uri().path(), req.headers());
    Ok(relay(upstream, req).await.unwrap_or_else(|error| {
        let mut response = Response::new(Full::new(Bytes::from(format!(
            "http-recorder: forwarding failed: {error}"
        ))));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response
    }))
}

/// Sends `req` to `upstream` on a new connection and reads the whole answer.
async fn relay(
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the answer is read and the sender dropped; an error is the caller's.
        let _ = connection.await;
    });
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    // The body is whole now: the server frames it again.
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.remove(header::CONNECTION);
    Ok(Response::from_parts(parts, Full::new(body)))
}
