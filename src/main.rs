use std::process::ExitCode;

use clap::Parser;
use idaas_projector::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("error: a rustls crypto provider was already installed");
        return ExitCode::from(cli::EXIT_FAILURE);
    }
    if let Err(e) = cli::init_tracing(&cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(cli::EXIT_USAGE);
    }
    cli::run(cli).await
}
