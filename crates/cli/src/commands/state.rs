//! `eshost state`: an aggregate's current state, here or on a server.

use crate::args::{GlobalArgs, RemoteArgs};
use crate::backend::Backend;
use anyhow::{Result, bail};
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
    let (state, version) = backend.state(&args.aggregate, &args.id).await?;
    // A default state for a stream with no events would look like a real
    // aggregate; say what is true instead.
    if version == 0 {
        bail!(
            "{} {} has no events: it was never created",
            args.aggregate,
            args.id
        );
    }
    println!("{state}");
    Ok(())
}
