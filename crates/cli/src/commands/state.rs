//! `eshost state`: an aggregate's current state, here or on a server.

use crate::args::{GlobalArgs, RemoteArgs};
use crate::backend::Backend;
use anyhow::Result;
use clap::Args;

/// Print an aggregate's current state as JSON (exits 1 if it has no events).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  eshost state FlashSaleItem s1")]
pub struct StateArgs {
    /// Aggregate type, e.g. FlashSaleItem.
    aggregate: String,
    /// Aggregate instance id.
    id: String,

    #[command(flatten)]
    remote: RemoteArgs,
}

pub async fn run(global: &GlobalArgs, args: StateArgs) -> Result<()> {
    let backend = Backend::choose(global, &args.remote)?;
    // An aggregate with no events is an error here and on a server alike
    // ("... it was never created"), never a made-up default state.
    let state = backend.state(&args.aggregate, &args.id).await?;
    // One line, as the component wrote it (see JsonText).
    println!("{}", serde_json::to_string(&state)?);
    Ok(())
}
