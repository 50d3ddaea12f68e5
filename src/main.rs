use std::process::ExitCode;

use clap::Parser;
use idaas_projector::cli::{self, Cli, CommandError, Voice};

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
        let e = CommandError::Failed("a rustls crypto provider was already installed".to_owned());
        return cli::exit_code(Err(e), Voice::Terminal);
    }
    if let Err(e) = cli::init_tracing(&cli.log) {
        return cli::exit_code(Err(CommandError::Usage(e)), Voice::Terminal);
    }
    cli::run(cli).await
}
