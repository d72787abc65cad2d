//! The `rotor` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // The global allocator (mimalloc, chosen by a dependency) backs its arena with
    // transparent huge pages where the kernel allows it: 2 MiB pages that an I/O-bound
    // agent fills sparsely (some 13 MB of RSS with 10,000 policies), each zeroed on
    // first touch. Best effort: an older kernel simply keeps them.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = rotor::cli::Cli::parse();
    rotor::install_crypto_provider();
    rotor::cli::init_tracing(cli.verbose, cli.log_format);
    rotor::cli::run(cli).await
}
