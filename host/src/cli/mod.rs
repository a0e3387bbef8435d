//! The `eshost` command line: parses arguments, builds a [`Host`], runs one
//! subcommand and reports. Exit codes: 0 success, 1 error, 2 usage error.

use crate::dispatch::{Host, RetryPolicy};
use crate::runtime::{Modules, engine};
use crate::{demo, store};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (one line on stderr)
  2  usage error";

#[derive(Debug, Parser)]
#[command(name = "eshost", version, about = "Run event-sourced aggregates compiled to WebAssembly components", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Event store URL (postgres://user@host:port/db).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory of aggregate components: every *.wasm in it is loaded.
    #[arg(
        long,
        env = "ESHOST_MODULES",
        global = true,
        default_value = "target/modules"
    )]
    pub modules: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run a demo scenario.
    #[command(subcommand)]
    Demo(DemoCommand),
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Create a flash sale and let buyers purchase one unit each, all at once.
    ///
    /// Every buyer's command completes: a purchase while stock lasts, a
    /// recorded rejection after. Conflicts between buyers are retried.
    #[command(after_help = "Example:\n  eshost demo flash-sale --stock 5 --buyers 8 --json")]
    FlashSale(FlashSaleArgs),
}

#[derive(Debug, Args)]
pub struct FlashSaleArgs {
    /// Units in stock.
    #[arg(long, default_value_t = 5)]
    pub stock: u64,
    /// Concurrent buyers, one unit each.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub buyers: u32,
    /// Conflict retries per command before it fails.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl GlobalArgs {
    async fn host(&self, retry: RetryPolicy) -> Result<Arc<Host>> {
        let url = self.database_url.as_deref().context(
            "no event store: pass --database-url or set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)",
        )?;
        let modules = Modules::load_dir(&engine(), &self.modules)?;
        if modules.is_empty() {
            bail!(
                "{}: no *.wasm components (build them with `cargo xtask build-guests`)",
                self.modules.display()
            );
        }
        let store = store::open(url).await?;
        Ok(Arc::new(Host::new(modules, store, retry)))
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        CliCommand::Demo(DemoCommand::FlashSale(args)) => demo_flash_sale(&cli.global, args).await,
    }
}

async fn demo_flash_sale(global: &GlobalArgs, args: FlashSaleArgs) -> Result<()> {
    let retry = RetryPolicy {
        max_retries: args.max_retries,
        ..RetryPolicy::default()
    };
    let host = global.host(retry).await?;
    if host.modules().get(demo::AGGREGATE).is_none() {
        bail!(
            "{}: no component provides {}",
            global.modules.display(),
            demo::AGGREGATE
        );
    }
    let report = demo::flash_sale(host, args.stock, args.buyers).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "flash sale {}: {} in stock, {} buyers at once (max retries {})",
            report.sale_id, report.initial_stock, report.buyers, args.max_retries
        );
        println!(
            "  purchased {}, rejected {}, failed {}",
            report.purchased, report.rejected, report.failed
        );
        println!(
            "  stock remaining {}, sold {}, stream length {}",
            report.stock_remaining, report.sold, report.events
        );
        println!(
            "  conflict retries {}, {:.1} ms",
            report.retries,
            report.seconds * 1000.0
        );
        for error in &report.errors {
            println!("  error: {error}");
        }
    }
    if report.failed > 0 {
        bail!("{} of {} purchases failed", report.failed, report.buyers);
    }
    Ok(())
}
