use std::process::ExitCode;

use clap::Parser;
use idaas_projector::cli::{self, Cli};

/// mimalloc: a webhook admission allocates a JSON tree per pod and frees it at once, where
/// glibc's malloc spent a fifth of the CPU (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
