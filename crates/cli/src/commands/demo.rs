//! `eshost demo`: the reference scenario, a flash sale with buyers at once;
//! and the checkout sample, orders checked out by a reactor.

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
    /// Orders for flash-sale items, checked out by the `checkout` reactor.
    ///
    /// Each order buys one unit of an item; the reactor reserves or rejects
    /// it; most buyers pay and their orders are confirmed and delivered to a
    /// sink this command runs on loopback (which fails some first tries);
    /// the rest are cancelled by the reactor's timer and their stock goes
    /// back on sale. Needs the checkout's aggregates (`Order`, and a
    /// `FlashSaleItem` that can release stock) in --modules and the
    /// `checkout` reactor in --reactors.
    #[command(
        after_help = "Example (from this repository's root, after `cargo xtask build-guests`):\n  eshost demo checkout --modules target/checkout --orders 60 --items 3 --stock 15"
    )]
    Checkout(CheckoutArgs),
}

#[derive(Debug, Args)]
pub struct CheckoutArgs {
    /// Orders, one unit each, spread over the items.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub orders: u32,
    /// Flash-sale items.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub items: u32,
    /// Units each item has.
    #[arg(long, default_value_t = 10)]
    pub stock: u64,
    /// Of every 100 orders, how many are never paid.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub unpaid_percent: u32,
    /// Each order's payment window, in milliseconds.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub pay_within_ms: u64,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

async fn checkout(global: &GlobalArgs, args: CheckoutArgs) -> Result<()> {
    use eshost_bench::checkout::{self, CheckoutOptions, REACTOR};
    let host = global.host(checkout::retry_policy()).await?;
    let reactors = global.runtime().load_reactors(&global.reactors)?;
    let Some(reactor) = reactors.into_iter().find(|r| r.name == REACTOR) else {
        bail!(
            "{}: no reactor named {REACTOR}; name the directory of checkout.wasm with --reactors DIR",
            global.reactors.display()
        );
    };
    let options = CheckoutOptions {
        items: args.items,
        stock: args.stock,
        orders: args.orders,
        unpaid_percent: args.unpaid_percent,
        pay_within: std::time::Duration::from_millis(args.pay_within_ms),
        ..CheckoutOptions::default()
    };
    let result = checkout::checkout(&host, reactor, &options).await;
    let report = drained(&host, result.map_err(anyhow::Error::from)).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "checkout: {} orders over {} items of {} units, {}% never paid",
            report.orders, args.items, args.stock, args.unpaid_percent
        );
        println!(
            "  confirmed {}, rejected {}, cancelled {}, unsettled {}",
            report.confirmed, report.rejected, report.cancelled, report.unsettled
        );
        for item in &report.items {
            println!(
                "  {}: stock {} = sold {} + remaining {}; bought {} = sold {} + released {}",
                item.id,
                item.stock,
                item.sold,
                item.remaining,
                item.bought,
                item.sold,
                item.released
            );
        }
        println!(
            "  confirmations delivered {} ({} tries, {} taken twice), {:.1} s",
            report.delivered, report.deliveries, report.delivered_twice, report.seconds
        );
        for error in &report.errors {
            println!("  error: {error}");
        }
    }
    if !report.holds() {
        bail!(
            "the checkout did not settle: {} orders unsettled, {} of {} confirmations delivered",
            report.unsettled,
            report.delivered,
            report.confirmed
        );
    }
    Ok(())
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
        DemoCommand::Checkout(args) => checkout(global, args).await,
    }
}
