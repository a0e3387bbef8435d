//! `eshost demo`: the reference scenario, a flash sale with buyers at once.

use crate::args::{GlobalArgs, drained};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use eshost::dispatch::RetryPolicy;
use eshost_bench::demo;

/// The demo scenarios.
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

async fn flash_sale(global: &GlobalArgs, args: FlashSaleArgs) -> Result<()> {
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
    let result = demo::flash_sale(&host, args.stock, args.buyers).await;
    let report = drained(&host, result.map_err(anyhow::Error::from)).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "flash sale {}: {} in stock, {} buyers at once ({:?}, max retries {})",
            report.sale_id,
            report.initial_stock,
            report.buyers,
            host.concurrency(),
            args.max_retries
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

pub async fn run(global: &GlobalArgs, command: DemoCommand) -> Result<()> {
    match command {
        DemoCommand::FlashSale(args) => flash_sale(global, args).await,
    }
}
