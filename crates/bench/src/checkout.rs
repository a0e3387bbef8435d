//! The checkout sample as a demo: orders for flash-sale items, the
//! `checkout` reactor buying their stock, buyers paying (some never do,
//! and their orders are cancelled by the reactor's timer, their stock
//! released), confirmations delivered to a sink this process runs on
//! loopback. Counts what every order and item came to.

use eshost::dispatch::{CommandRequest, Host};
use eshost::wasm::LoadedReactor;
use eshost::{CommandError, RetryPolicy};
use eshost_react::{Runner, Sink, Sinks};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const ORDER: &str = "Order";
pub const ITEM: &str = "FlashSaleItem";
pub const REACTOR: &str = "checkout";
/// The sink the reactor delivers confirmations to.
pub const CONFIRMATIONS: &str = "confirmations";

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct CheckoutOptions {
    pub items: u32,
    /// Units each item has.
    pub stock: u64,
    pub orders: u32,
    /// Of every 100 orders reserved, how many are never paid.
    pub unpaid_percent: u32,
    /// Each order's payment window.
    pub pay_within: Duration,
    /// How long the run may take once the last order is placed.
    pub deadline: Duration,
    /// Placing the orders evenly over this long; zero: all at once.
    pub place_over: Duration,
}

impl Default for CheckoutOptions {
    fn default() -> Self {
        Self {
            items: 3,
            stock: 10,
            orders: 40,
            unpaid_percent: 20,
            pay_within: Duration::from_secs(2),
            deadline: Duration::from_secs(60),
            place_over: Duration::ZERO,
        }
    }
}

/// What one item came to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemReport {
    pub id: String,
    pub stock: u64,
    /// Units sold to orders that were confirmed (the item's `sold`).
    pub sold: u64,
    /// Units the reactor bought for orders (its `ItemPurchased` events).
    pub bought: u64,
    /// Units bought for orders that were then cancelled, given back.
    pub released: u64,
    /// Units on sale at the end.
    pub remaining: u64,
    /// Units of this item in confirmed orders: always `sold`.
    pub confirmed_units: u64,
}

/// What a run did. Every order is counted once in `confirmed`, `rejected`,
/// `cancelled` or `unsettled` (none expected).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckoutReport {
    pub orders: u32,
    pub confirmed: u32,
    pub rejected: u32,
    pub cancelled: u32,
    pub unsettled: u32,
    pub items: Vec<ItemReport>,
    /// Confirmations the sink took, each under its own Idempotency-Key.
    pub delivered: usize,
    /// Deliveries the sink saw, repeats included.
    pub deliveries: usize,
    /// Confirmations the sink took more than once. A runner killed
    /// between the sink's answer and recording it sends again under the
    /// same `Idempotency-Key`, which the sink uses to take it once; with
    /// no such kill, 0.
    pub delivered_twice: usize,
    pub seconds: f64,
    /// The first few errors, if any.
    pub errors: Vec<String>,
}

impl CheckoutReport {
    /// Every order settled, every confirmation delivered once, and every
    /// item's stock accounted for: every unit bought was sold to a
    /// confirmed order or released, and sold plus remaining is the stock.
    pub fn holds(&self) -> bool {
        self.unsettled == 0
            && self.errors.is_empty()
            && self.delivered == self.confirmed as usize
            && self.items.iter().all(|item| {
                item.sold == item.confirmed_units
                    && item.bought == item.sold + item.released
                    && item.sold + item.remaining == item.stock
            })
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(
        "no component provides {0} (the checkout's aggregates are built into target/checkout: --modules target/checkout)"
    )]
    Missing(&'static str),
    #[error(
        "{ITEM} {0} cannot release stock (no ReleaseItem command); the checkout needs 0.2.0, target/checkout/flash-sale.wasm"
    )]
    NoRelease(String),
    #[error("the sink could not listen on loopback: {0}")]
    Sink(std::io::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// A sink on loopback that keeps each delivery's `Idempotency-Key`, and
/// answers 503 to the first try of about one key in `fail_first_of`, so a
/// run shows the retries too.
#[derive(Clone)]
pub struct CountingSink {
    fail_first_of: Option<u32>,
    seen: Arc<Mutex<HashMap<String, u32>>>,
}

impl CountingSink {
    pub fn new(fail_first_of: Option<u32>) -> Self {
        Self {
            fail_first_of,
            seen: Arc::default(),
        }
    }

    /// Whether the first try of `key` is answered 503.
    fn fails_first(&self, key: &str) -> bool {
        self.fail_first_of
            .is_some_and(|n| n > 0 && key.bytes().map(u32::from).sum::<u32>() % n == 0)
    }

    /// Listens on 127.0.0.1 until `stop`; returns its URL.
    pub async fn start(&self, stop: CancellationToken) -> std::io::Result<reqwest::Url> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let sink = self.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let sink = sink.clone();
                async move {
                    let Some(key) = headers.get("idempotency-key").and_then(|k| k.to_str().ok())
                    else {
                        return axum::http::StatusCode::BAD_REQUEST;
                    };
                    let tries = {
                        let mut seen = sink.seen.lock().unwrap_or_else(|p| p.into_inner());
                        let tries = seen.entry(key.to_owned()).or_default();
                        *tries += 1;
                        *tries
                    };
                    if tries == 1 && sink.fails_first(key) {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        reqwest::Url::parse(&format!("http://{address}/")).map_err(std::io::Error::other)
    }

    /// Keys taken more than once: answered 2xx again after the first
    /// success (0 when each delivery is performed once).
    pub fn repeats(&self) -> usize {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|&(key, &n)| n > if self.fails_first(key) { 2 } else { 1 })
            .count()
    }

    /// Keys taken (answered 2xx at least once) and all tries.
    pub fn counts(&self) -> (usize, usize) {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let tries = seen.values().map(|&n| n as usize).sum();
        let taken = seen
            .iter()
            .filter(|&(key, &n)| n >= if self.fails_first(key) { 2 } else { 1 })
            .count();
        (taken, tries)
    }
}

/// Orders placed at once, at most.
const PLACING_AT_ONCE: usize = 256;

/// Every how many deliveries the demo's sink fails a first try.
const DEMO_FAIL_FIRST_OF: Option<u32> = Some(4);

/// Runs the checkout on `host` (which must hold `Order` and a
/// `FlashSaleItem` that can release) with `reactor`.
pub async fn checkout(
    host: &Host,
    reactor: Arc<LoadedReactor>,
    options: &CheckoutOptions,
) -> Result<CheckoutReport, CheckoutError> {
    let modules = host.modules();
    modules.get(ORDER).ok_or(CheckoutError::Missing(ORDER))?;
    let item = modules.get(ITEM).ok_or(CheckoutError::Missing(ITEM))?;
    if !item.commands.iter().any(|c| c == "ReleaseItem") {
        return Err(CheckoutError::NoRelease(item.version.clone()));
    }

    let stop = CancellationToken::new();
    let sink = CountingSink::new(DEMO_FAIL_FIRST_OF);
    let url = sink
        .start(stop.clone())
        .await
        .map_err(CheckoutError::Sink)?;
    let sinks = Sinks::new(BTreeMap::from([(
        CONFIRMATIONS.to_owned(),
        Sink {
            url,
            headers: Vec::new(),
        },
    )]));
    let runner = Runner::new(host.clone(), reactor, sinks, "demo".into());
    let running = tokio::spawn(runner.run(stop.clone()));

    let settled = shop(host, &sink, options).await;
    stop.cancel();
    if let Ok(Err(e)) = running.await {
        tracing::warn!(error = %e, "the checkout reactor stopped");
    }
    settled
}

/// The buyers' side of a checkout, with the reactor run elsewhere (by
/// [`checkout`], or by `eshost reactor run` processes): places the orders,
/// pays the paying ones as they are reserved, and waits until every order
/// settled and every confirmation reached `sink`, or the deadline.
pub async fn shop(
    host: &Host,
    sink: &CountingSink,
    options: &CheckoutOptions,
) -> Result<CheckoutReport, CheckoutError> {
    let placed = run_orders(host, options).await?;
    wait_for_settling(host, sink, options, placed).await
}

/// The run's orders and items, by id.
struct Placed {
    run: String,
    orders: Vec<(String, String, bool)>,
    items: Vec<String>,
    started: Instant,
    errors: Vec<String>,
}

async fn run_orders(host: &Host, options: &CheckoutOptions) -> Result<Placed, CheckoutError> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let items: Vec<String> = (0..options.items.max(1))
        .map(|n| format!("item-{run}-{n}"))
        .collect();
    for item in &items {
        host.execute(&CommandRequest::new(
            ITEM,
            item,
            "CreateFlashSale",
            serde_json::json!({ "initialStock": options.stock }).to_string(),
        ))
        .await?;
    }
    let started = Instant::now();
    let orders: Vec<(String, String, bool)> = (0..options.orders)
        .map(|n| {
            let item = items[n as usize % items.len()].clone();
            // Spread the unpaid ones evenly over the run.
            let unpaid = options.unpaid_percent.min(100);
            let paid = (n * unpaid) % 100 >= unpaid;
            (format!("order-{run}-{n}"), item, paid)
        })
        .collect();
    let pay_within_ms = u64::try_from(options.pay_within.as_millis()).unwrap_or(u64::MAX);
    let requests: Vec<CommandRequest> = orders
        .iter()
        .enumerate()
        .map(|(n, (order, item, _))| {
            CommandRequest::new(
                ORDER,
                order,
                "PlaceOrder",
                serde_json::json!({
                    "itemId": item, "buyerId": format!("buyer-{n}"),
                    "quantity": 1, "payWithinMs": pay_within_ms,
                })
                .to_string(),
            )
        })
        .collect();
    // Buyers at once, as many as the host's queue for one aggregate type
    // takes with room to spare.
    let spacing = options.place_over / options.orders.max(1);
    let mut placing = futures_util::stream::iter(requests.into_iter().zip(0u32..))
        .map(|(request, n)| async move {
            tokio::time::sleep_until((started + spacing * n).into()).await;
            host.execute(&request).await
        })
        .buffer_unordered(PLACING_AT_ONCE);
    let mut errors = Vec::new();
    while let Some(placed) = placing.next().await {
        if let Err(e) = placed {
            errors.push(e.to_string());
        }
    }
    errors.truncate(5);
    Ok(Placed {
        run,
        orders,
        items,
        started,
        errors,
    })
}

/// Buyers pay their reserved orders (the paying ones) as the reactor
/// reserves them, until every order is settled and every confirmation
/// delivered, or the deadline. Each tick reads each order not yet settled
/// once; a settled order does not change again.
async fn wait_for_settling(
    host: &Host,
    sink: &CountingSink,
    options: &CheckoutOptions,
    placed: Placed,
) -> Result<CheckoutReport, CheckoutError> {
    let deadline = Instant::now() + options.pay_within + options.deadline;
    let mut paid: HashSet<&str> = HashSet::new();
    // Settled orders: their status and their units.
    let mut settled: HashMap<&str, (&'static str, u64)> = HashMap::new();
    loop {
        for (order, _, pays) in &placed.orders {
            if settled.contains_key(order.as_str()) {
                continue;
            }
            let state = host.state(ORDER, order).await?;
            let status = state["status"].as_str().unwrap_or("new");
            if status == "reserved" && *pays && paid.insert(order) {
                let request = CommandRequest::new(ORDER, order, "PayOrder", "{}")
                    .with_command_id(Some(format!("pay-{order}")));
                // Refused when its window closed first: it is cancelled.
                let _ = host.execute(&request).await;
            }
            let status = match status {
                "confirmed" => "confirmed",
                "rejected" => "rejected",
                "cancelled" => "cancelled",
                _ => continue,
            };
            let units = state["quantity"].as_u64().unwrap_or_default();
            settled.insert(order, (status, units));
        }
        let count = |wanted: &str| settled.values().filter(|(s, _)| *s == wanted).count() as u32;
        let (delivered, deliveries) = sink.counts();
        let confirmed = count("confirmed");
        let unsettled = (placed.orders.len() - settled.len()) as u32;
        let past_deadline = Instant::now() >= deadline;
        // The items are read once everything else is done.
        let done = unsettled == 0 && delivered == confirmed as usize;
        if !(done || past_deadline || !placed.errors.is_empty()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let report = CheckoutReport {
            orders: placed.orders.len() as u32,
            confirmed,
            rejected: count("rejected"),
            cancelled: count("cancelled"),
            unsettled,
            items: item_reports(host, &placed, &settled).await?,
            delivered,
            deliveries,
            delivered_twice: sink.repeats(),
            seconds: placed.started.elapsed().as_secs_f64(),
            errors: placed.errors.clone(),
        };
        if report.holds() || past_deadline || !report.errors.is_empty() {
            tracing::debug!(run = %placed.run, "checkout settled");
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What each item came to, with the units of the settled orders.
async fn item_reports(
    host: &Host,
    placed: &Placed,
    settled: &HashMap<&str, (&'static str, u64)>,
) -> Result<Vec<ItemReport>, CheckoutError> {
    let mut confirmed_units: HashMap<&str, u64> = HashMap::new();
    for (order, item, _) in &placed.orders {
        if let Some(("confirmed", units)) = settled.get(order.as_str()) {
            *confirmed_units.entry(item).or_default() += units;
        }
    }
    let mut reports = Vec::with_capacity(placed.items.len());
    for item in &placed.items {
        let state = host.state(ITEM, item).await?;
        let events = host.events(ITEM, item).await?;
        let units_of = |name: &str| -> u64 {
            events
                .iter()
                .filter(|e| e.name == name)
                .map(|e| {
                    serde_json::from_str::<serde_json::Value>(e.payload.as_str())
                        .ok()
                        .and_then(|p| p["quantity"].as_u64())
                        .unwrap_or_default()
                })
                .sum()
        };
        reports.push(ItemReport {
            id: item.clone(),
            stock: state["initialStock"].as_u64().unwrap_or_default(),
            sold: state["sold"].as_u64().unwrap_or_default(),
            bought: units_of("ItemPurchased"),
            released: units_of("ItemReleased"),
            remaining: state["stock"].as_u64().unwrap_or_default(),
            confirmed_units: confirmed_units
                .get(item.as_str())
                .copied()
                .unwrap_or_default(),
        });
    }
    Ok(reports)
}

/// The retry policy the demo's host uses: orders for one item conflict.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 20,
        ..RetryPolicy::default()
    }
}
