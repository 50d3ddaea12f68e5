//! `wait-for-token`: the init container that holds a pod until its token file holds a usable
//! JWT.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{CommandError, parse_duration, parse_duration_flag};
use crate::webhook::mutate::{DEFAULT_TOKEN_WAIT, TOKEN_FILE};

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The token file to wait for.
    #[arg(long, env = "IDAAS_PROJECTOR_FILE", default_value = TOKEN_FILE)]
    pub file: PathBuf,
    /// Give up (exit 1) after this long.
    #[arg(long, env = "IDAAS_PROJECTOR_TIMEOUT", default_value_t = DEFAULT_TOKEN_WAIT.into(), value_parser = parse_duration_flag)]
    pub timeout: humantime::Duration,
    /// How often to look at the file.
    #[arg(long, env = "IDAAS_PROJECTOR_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How often to log that it is still waiting.
    #[arg(long, env = "IDAAS_PROJECTOR_PROGRESS_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub progress_interval: Duration,
}

/// Waits; a timeout is a failure (exit 1), so the pod's start fails visibly.
pub async fn run(args: WaitArgs) -> Result<(), CommandError> {
    crate::wait::wait_for_token(
        &args.file,
        *args.timeout,
        args.poll_interval.max(Duration::from_millis(10)),
        args.progress_interval.max(Duration::from_millis(10)),
    )
    .await
    .map(|_| ())
    .map_err(|e| CommandError::Failed(e.to_string()))
}
