//! `fake-kube-apiserver`: the fake Kubernetes API server of `rotor-testkit` as a process,
//! for demos and black-box runs (`dev/stack up` starts one). Thin: parses the command
//! line, sets up logging and calls into `rotor_testkit::apiserver`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use rotor_testkit::apiserver;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Serves an in-memory Kubernetes API over HTTPS on loopback until SIGTERM or SIGINT.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on; loopback only. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Kubeconfig to write (mode 0600) once the port is known; it holds the random token
    /// and the certificate of the CA made for this run.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Serve plain HTTP instead of HTTPS (real kubectl then refuses to send the token).
    #[arg(long)]
    plain_http: bool,
    /// YAML or JSON objects to create at start: a list, a `kind: List`, or `---` documents.
    #[arg(long)]
    seed: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the cause chain on one line, without a backtrace.
            eprintln!("fake-kube-apiserver: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {} is not a loopback address: this fake accepts anything a token allows",
            args.listen
        );
    }

    let seed = match &args.seed {
        Some(path) => apiserver::load_seed(path)?,
        None => Vec::new(),
    };
    let seeded = seed.len();
    let backend = apiserver::backend(seed).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {} failed", args.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the local address failed")?;
    let token = apiserver::random_token();
    let tls = if args.plain_http {
        apiserver::write_kubeconfig(&args.kubeconfig, addr, &token)?;
        None
    } else {
        let tls = apiserver::ServerTls::generate()?;
        apiserver::write_kubeconfig_tls(&args.kubeconfig, addr, &token, &tls)?;
        Some(tls)
    };

    let mut term =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler failed")?;
    let mut int =
        signal(SignalKind::interrupt()).context("installing the SIGINT handler failed")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("Shutting down.");
    };

    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(addr = %addr, scheme, kubeconfig = %args.kubeconfig.display(), seeded, "Fake API server ready.");
    // The line `dev/lib/kube.sh` waits for; stdout is line-buffered, so it is flushed here.
    println!("listening on {addr}");
    match tls {
        Some(tls) => apiserver::serve_tls(listener, backend, token, tls, shutdown).await?,
        None => apiserver::serve(listener, backend, token, shutdown).await?,
    }
    Ok(())
}
