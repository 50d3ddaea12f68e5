//! `serve`: the webhook and the token projector in one process (`dev`-like setups and small
//! clusters; the chart's `combined: true`), either part switchable off.

use clap::Args;

use super::controller::ProjectorArgs;
use super::webhook::WebhookFlags;
use super::{CommandError, ServerArgs};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Do not run the webhook (projector only).
    #[arg(
        long,
        env = "IDAAS_PROJECTOR_NO_WEBHOOK",
        conflicts_with = "no_controller"
    )]
    pub no_webhook: bool,
    /// Do not run the projector (webhook only).
    #[arg(long, env = "IDAAS_PROJECTOR_NO_CONTROLLER")]
    pub no_controller: bool,
    #[command(flatten)]
    pub webhook: WebhookFlags,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub projector: ProjectorArgs,
}

/// Runs the parts until SIGTERM.
pub async fn run(args: ServeArgs) -> Result<(), CommandError> {
    let webhook = match args.no_webhook {
        true => None,
        false => Some(args.webhook.settings(false)?),
    };
    let projector = match args.no_controller {
        true => None,
        false => {
            let inject = args
                .webhook
                .inject
                .to_config()
                .map_err(CommandError::Usage)?;
            let opt_in = args.webhook.opt_in.service_account_opt_in;
            Some(args.projector.settings(inject, opt_in))
        }
    };
    let process = args.server.process(webhook, projector);
    Ok(crate::process::run(process).await?)
}
