//! `eshost migrate`: create or upgrade the store's tables.

use crate::args::GlobalArgs;
use anyhow::Result;
use clap::Args;

/// Create or upgrade the event store's tables (every other command does
/// this too when it opens the store).
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  eshost migrate --database-url postgres://postgres@127.0.0.1/postgres"
)]
pub struct MigrateArgs {}

pub async fn run(global: &GlobalArgs, _args: MigrateArgs) -> Result<()> {
    global.store().await?;
    eprintln!("{}: migrated", eshost_store::redact(&global.database_url));
    Ok(())
}
