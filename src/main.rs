//! The `rotor` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = rotor::cli::Cli::parse();
    rotor::install_crypto_provider();
    rotor::cli::init_tracing(cli.verbose, cli.log_format);
    rotor::cli::run(cli).await
}
