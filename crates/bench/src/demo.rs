//! The reference scenario as a demo: create a flash sale, let buyers purchase
//! one unit each, all at once, and count what happened.

use eshost::CommandError;
use eshost::dispatch::{CommandRequest, Host};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

pub const AGGREGATE: &str = "FlashSaleItem";

/// What a demo run did. Every buyer is counted exactly once in `purchased`,
/// `rejected` or `failed`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DemoReport {
    pub sale_id: String,
    pub initial_stock: u64,
    pub buyers: u32,
    pub purchased: u32,
    pub rejected: u32,
    /// Commands that ended in an error (none expected).
    pub failed: u32,
    pub stock_remaining: u64,
    pub sold: u64,
    /// Conflict retries over all purchases.
    pub retries: u32,
    /// Length of the sale's stream.
    pub events: u64,
    pub seconds: f64,
    /// The first few errors, if any failed.
    pub errors: Vec<String>,
}

/// Creates a fresh sale of `stock` units and fires `buyers` concurrent
/// purchases of one unit each.
pub async fn flash_sale(host: &Host, stock: u64, buyers: u32) -> Result<DemoReport, CommandError> {
    let sale_id = format!("sale-{}", uuid::Uuid::new_v4());
    host.execute(&CommandRequest::new(
        AGGREGATE,
        &sale_id,
        "CreateFlashSale",
        serde_json::json!({ "initialStock": stock }).to_string(),
    ))
    .await?;

    let started = Instant::now();
    // Every buyer waits at the barrier so they really do arrive at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(buyers as usize));
    let tasks: Vec<_> = (0..buyers)
        .map(|n| {
            let host = host.clone();
            let barrier = barrier.clone();
            let request = CommandRequest::new(
                AGGREGATE,
                &sale_id,
                "PurchaseItem",
                serde_json::json!({ "buyerId": format!("buyer-{n}"), "quantity": 1 }).to_string(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                host.execute(&request).await
            })
        })
        .collect();

    let mut report = DemoReport {
        sale_id: sale_id.clone(),
        initial_stock: stock,
        buyers,
        purchased: 0,
        rejected: 0,
        failed: 0,
        stock_remaining: 0,
        sold: 0,
        retries: 0,
        events: 0,
        seconds: 0.0,
        errors: Vec::new(),
    };
    for task in tasks {
        let result = task.await.unwrap_or_else(|join| {
            Err(CommandError::Guest(eshost::error::GuestError::Trap {
                aggregate: AGGREGATE.into(),
                call: "task",
                message: join.to_string(),
            }))
        });
        match result {
            Ok(outcome) => {
                report.retries += outcome.retries;
                for event in &outcome.events {
                    match event.name.as_str() {
                        "ItemPurchased" => report.purchased += 1,
                        "PurchaseRejected" => report.rejected += 1,
                        _ => {}
                    }
                }
            }
            Err(e) => {
                report.failed += 1;
                if report.errors.len() < 5 {
                    report.errors.push(e.to_string());
                }
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();

    let state = host.state(AGGREGATE, &sale_id).await?;
    report.stock_remaining = state["stock"].as_u64().unwrap_or_default();
    report.sold = state["sold"].as_u64().unwrap_or_default();
    report.events = host.events(AGGREGATE, &sale_id).await?.len() as u64;
    Ok(report)
}
