//! `eshost aggregates`: what is loaded, here or on a server.

use crate::args::{GlobalArgs, RemoteArgs};
use crate::backend::Backend;
use anyhow::Result;
use clap::Args;

/// List the loaded aggregates: name, version, digest, file, contract,
/// commands, events, and the events that hold personal data.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  eshost aggregates --json\n  eshost aggregates --modules target/modules"
)]
pub struct AggregatesArgs {
    /// Print one JSON array.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

pub async fn run(global: &GlobalArgs, args: AggregatesArgs) -> Result<()> {
    let listing = Backend::choose(global, &args.remote)?.aggregates().await?;
    if args.json {
        println!("{}", serde_json::to_string(&listing)?);
        return Ok(());
    }
    for a in &listing {
        println!("{} {} ({})", a.name, a.version, a.file.display());
        println!("  digest   {}", a.digest);
        println!("  contract {}", a.contract);
        println!("  commands {}", a.commands.join(", "));
        println!("  events   {}", a.events.join(", "));
        if !a.old_events.is_empty() {
            println!("  old events (upcast) {}", a.old_events.join(", "));
        }
        for personal in &a.personal {
            let fields = std::iter::once(format!("{} (subject)", personal.subject))
                .chain(personal.fields.iter().cloned())
                .collect::<Vec<_>>();
            println!("  personal {}: {}", personal.event, fields.join(", "));
        }
        if let Some(refused) = &a.refused {
            println!(
                "  refused  {} ({}): {}",
                refused.version, refused.digest, refused.reason
            );
        }
    }
    Ok(())
}
