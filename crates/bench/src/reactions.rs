//! The `reactions` scenario: the checkout sample's pipeline beside
//! many-items, each mode on a fresh scratch store, in the same round.
//!
//! - `many-items`: 20,000 purchases over 1,000 items, in process, queued,
//!   as the many-items scenario runs them.
//! - `commands-only`: the four commands of each of 4,000 orders sent by
//!   the bench itself, no reactor: what a reactor's runs cost at least,
//!   counted as the pipeline is (three reactions an order).
//! - `reacting`: 4,000 orders placed by the callers as fast as they are
//!   answered: the pipeline's capacity (its latencies are mostly the
//!   backlog's).
//! - `paced`: orders offered evenly for 5 s at half the rate many-items
//!   just reached (in reactions): whether the pipeline sustains it.
//! - `paced-light`: offered at half the rate `reacting` just reached: its
//!   latency when it is not flooded.
//!
//! In both reacting modes the `checkout` reactor, run in this process,
//! buys each order's unit (items of 10 units, enough for every order),
//! reserves the order and delivers its confirmation to a sink on
//! loopback; buyers follow the log and pay each order as soon as it is
//! reserved. Each order takes three reactions (its placing, the item's
//! purchase, its confirmation), four commands (place, purchase, reserve,
//! pay) and one delivery. Their `cmd/s` is reactions per second, from the
//! first order placed to the last confirmation delivered; `p50`/`p99` are
//! from an order's placing answered to its confirmation read from the log;
//! CPU is per reaction.
//!
//! Modes run in this order every round (the paced ones need the rates
//! measured before them); each has a fresh store, so none meets a bigger
//! table.

use super::{AGGREGATE, BenchError, BenchLine, Driver, purchases_run};
use crate::checkout::{CONFIRMATIONS, CountingSink, ORDER, REACTOR};
use crate::cpu::CpuTimes;
use crate::scratch::Scratch;
use eshost::dispatch::{CommandRequest, Host, HostOptions, RetryPolicy};
use eshost_react::{Runner, Sink, Sinks};
use eshost_store as store;
use eshost_wasm::{LoadedReactor, Modules};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Orders in the `reacting` run.
const BURST_ORDERS: usize = 4_000;
/// How long the `paced` run offers orders.
const PACED_FOR: Duration = Duration::from_secs(5);
/// Units per item: every order finds one.
const STOCK: u64 = 10;
const REACTIONS_PER_ORDER: usize = 3;
/// The longest a reacting run may take to confirm and deliver every order.
const SETTLE: Duration = Duration::from_secs(120);

/// When orders were answered, by order id.
type Placed = Arc<Mutex<HashMap<String, Instant>>>;

pub(super) async fn run(
    modules: &Modules,
    reactors: &[Arc<LoadedReactor>],
    url: &str,
    callers: usize,
) -> Result<Vec<BenchLine>, BenchError> {
    let reactor = reactors
        .iter()
        .find(|r| r.name == REACTOR)
        .ok_or(BenchError::NoCheckout)?;
    if modules.get(ORDER).is_none() || modules.get(AGGREGATE).is_none() {
        return Err(BenchError::NoCheckout);
    }
    let many_items =
        Scratch::around(url, async |url| many_items(modules, &url, callers).await).await?;
    let direct = Scratch::around(url, async |url| {
        commands_only(modules, &url, callers, BURST_ORDERS).await
    })
    .await?;
    let burst = Scratch::around(url, async |url| {
        pipeline(modules, reactor.clone(), &url, callers, BURST_ORDERS, None).await
    })
    .await?;
    // Offered evenly at half a rate measured just before, in reactions.
    let paced_at_half_of = async |line: &BenchLine| {
        let pace = line.commands_per_s / 2.0 / REACTIONS_PER_ORDER as f64;
        let orders = ((pace * PACED_FOR.as_secs_f64()).ceil() as usize).max(1);
        Scratch::around(url, async |url| {
            pipeline(modules, reactor.clone(), &url, callers, orders, Some(pace)).await
        })
        .await
    };
    let paced = paced_at_half_of(&many_items).await?;
    let light = paced_at_half_of(&burst).await?;
    let mut lines = Vec::new();
    for (mode, mut line) in [
        ("many-items", many_items),
        ("commands-only", direct),
        ("reacting", burst),
        ("paced", paced),
        ("paced-light", light),
    ] {
        line.scenario = "reactions".into();
        line.mode = mode.into();
        lines.push(line);
    }
    Ok(lines)
}

async fn many_items(modules: &Modules, url: &str, callers: usize) -> Result<BenchLine, BenchError> {
    let options = HostOptions {
        retry: RetryPolicy {
            max_retries: 20,
            ..RetryPolicy::default()
        },
        ..HostOptions::default()
    };
    let host = Host::with_options(modules.clone(), warmed(url).await?, options);
    let driver = Driver::InProcess(host.clone());
    let line = purchases_run(&host, &driver, 1_000, 10, 20_000, callers).await;
    host.shutdown(Duration::from_secs(10)).await.ok();
    line
}

/// The store `url` names, its pool's connections opened before the clock
/// starts: each mode runs on a fresh scratch schema, and the backends a cold
/// pool would start mid-run (PostgreSQL zeroing their memory) are no part
/// of what a mode measures.
async fn warmed(url: &str) -> Result<Arc<dyn store::EventStore>, BenchError> {
    /// More than any pool the store opens holds.
    const CONNECTIONS: usize = 32;
    let opened = store::open(url).await?;
    let pings = (0..CONNECTIONS).map(|_| opened.ping());
    for pinged in futures_util::future::join_all(pings).await {
        pinged?;
    }
    Ok(opened)
}

/// Creates the items `orders` orders buy from (one unit each, every order
/// finds one): the item of order `n`.
async fn for_sale(host: &Host, orders: usize) -> Result<impl Fn(usize) -> String, BenchError> {
    let items = orders.div_ceil(STOCK as usize);
    let item = move |n: usize| format!("item-{}", n % items);
    for n in 0..items {
        let create = serde_json::json!({ "initialStock": STOCK }).to_string();
        host.execute(&CommandRequest::new(
            AGGREGATE,
            item(n),
            "CreateFlashSale",
            create,
        ))
        .await?;
    }
    Ok(item)
}

/// The four commands of each of `orders` orders (place, purchase, reserve,
/// pay) sent one after another by the bench itself, up to `callers`
/// orders at once, with no reactor: what any reactor's runs cost at least
/// (the two a reactor sends go as the runner sends them).
/// Counted as the pipeline counts (three reactions an order); the
/// latencies run from an order's placing answered to its payment answered.
async fn commands_only(
    modules: &Modules,
    url: &str,
    callers: usize,
    orders: usize,
) -> Result<BenchLine, BenchError> {
    let host = Host::with_options(modules.clone(), warmed(url).await?, HostOptions::default());
    let item = for_sale(&host, orders).await?;
    let cpu_before = CpuTimes::now().await;
    let started = Instant::now();
    let mut ordering = futures_util::stream::iter(0..orders)
        .map(|n| {
            let (host, item) = (&host, &item);
            async move {
                let (order, buyer) = (format!("order-{n}"), format!("buyer-{n}"));
                let place =
                    serde_json::json!({ "itemId": item(n), "buyerId": buyer, "quantity": 1 });
                let buy = serde_json::json!({ "buyerId": buyer, "quantity": 1 });
                host.execute(&CommandRequest::new(
                    ORDER,
                    &order,
                    "PlaceOrder",
                    place.to_string(),
                ))
                .await?;
                let placed = Instant::now();
                // The two a reactor would send carry an id of their own
                // and a correlation, as the runner sends them.
                let as_reaction = |request: CommandRequest, step: &str| {
                    let mut request = request.with_command_id(Some(format!("{order}-{step}")));
                    request.correlation_id = Some(format!("order:{order}"));
                    request
                };
                for request in [
                    as_reaction(
                        CommandRequest::new(AGGREGATE, item(n), "PurchaseItem", buy.to_string()),
                        "purchase",
                    ),
                    as_reaction(
                        CommandRequest::new(ORDER, &order, "ReserveOrder", "{}"),
                        "reserve",
                    ),
                    CommandRequest::new(ORDER, &order, "PayOrder", "{}"),
                ] {
                    host.execute(&request).await?;
                }
                Ok::<_, BenchError>(placed.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(callers);
    let (mut latencies, mut failed) = (Vec::with_capacity(orders), 0);
    while let Some(answered) = ordering.next().await {
        match answered {
            Ok(ms) => latencies.push(ms),
            Err(error) => {
                failed += 1;
                tracing::warn!(%error, "a benchmark order failed");
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuTimes::now()
        .await
        .zip(cpu_before)
        .map(|(after, before)| after.since(&before));
    host.shutdown(Duration::from_secs(10)).await.ok();
    let reactions = latencies.len() * REACTIONS_PER_ORDER;
    latencies.sort_by(f64::total_cmp);
    Ok(BenchLine {
        failed,
        cpu_us_per_command: cpu
            .map(|c| c.busy_share * c.cpus * seconds * 1e6 / reactions.max(1) as f64),
        cpu_busy_share: cpu.map(|c| c.busy_share),
        ..BenchLine::timed("", "", reactions, seconds, &latencies)
    })
}

/// `orders` through the checkout pipeline, up to `callers` placed at once,
/// evenly at `pace` orders per second if given, else as fast as they are
/// answered.
async fn pipeline(
    modules: &Modules,
    reactor: Arc<LoadedReactor>,
    url: &str,
    callers: usize,
    orders: usize,
    pace: Option<f64>,
) -> Result<BenchLine, BenchError> {
    let host = Host::with_options(modules.clone(), warmed(url).await?, HostOptions::default());
    let item = for_sale(&host, orders).await?;
    let stop = CancellationToken::new();
    let sink = CountingSink::new(None);
    let sinks = Sinks::new(BTreeMap::from([(
        CONFIRMATIONS.to_owned(),
        Sink {
            url: sink.start(stop.clone()).await?,
            headers: Vec::new(),
        },
    )]));
    let running =
        tokio::spawn(Runner::new(host.clone(), reactor, sinks, "bench".into()).run(stop.clone()));
    let placed: Placed = Arc::default();
    let paying = tokio::spawn(buyers(host.clone(), placed.clone(), orders, callers));

    let cpu_before = CpuTimes::now().await;
    let started = Instant::now();
    let spacing = pace.map(|per_second| Duration::from_secs_f64(1.0 / per_second));
    let mut placing = futures_util::stream::iter(0..orders)
        .map(|n| {
            let (host, placed, item) = (&host, &placed, &item);
            async move {
                if let Some(spacing) = spacing {
                    tokio::time::sleep_until((started + spacing * n as u32).into()).await;
                }
                let order = format!("order-{n}");
                let place = serde_json::json!({
                    "itemId": item(n), "buyerId": format!("buyer-{n}"), "quantity": 1,
                });
                let request = CommandRequest::new(ORDER, &order, "PlaceOrder", place.to_string());
                let answered = host.execute(&request).await;
                if answered.is_ok()
                    && let Ok(mut placed) = placed.lock()
                {
                    placed.insert(order, Instant::now());
                }
                answered.is_ok()
            }
        })
        .buffer_unordered(callers);
    let mut failed = 0;
    while let Some(answered) = placing.next().await {
        failed += usize::from(!answered);
    }
    let mut latencies = paying.await??;
    // The last reaction's action: every confirmation delivered.
    let deadline = Instant::now() + SETTLE;
    while sink.counts().0 < latencies.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuTimes::now()
        .await
        .zip(cpu_before)
        .map(|(after, before)| after.since(&before));
    stop.cancel();
    if let Ok(Err(e)) = running.await {
        tracing::warn!(error = %e, "the checkout reactor stopped");
    }
    host.shutdown(Duration::from_secs(10)).await.ok();

    let confirmed = latencies.len();
    let delivered = sink.counts().0.min(confirmed);
    let reactions = confirmed * REACTIONS_PER_ORDER;
    latencies.sort_by(f64::total_cmp);
    Ok(BenchLine {
        // Orders not placed, not confirmed, or not delivered.
        failed: failed.max(orders - delivered),
        cpu_us_per_command: cpu
            .map(|c| c.busy_share * c.cpus * seconds * 1e6 / reactions.max(1) as f64),
        cpu_busy_share: cpu.map(|c| c.busy_share),
        ..BenchLine::timed("", "", reactions, seconds, &latencies)
    })
}

/// The buyers: follow the orders in the log, pay each as soon as it is
/// reserved (up to `callers` payments at once), and time each confirmation
/// from its placing being answered. Returns the times, in milliseconds,
/// once `orders` are confirmed, or at [`SETTLE`].
async fn buyers(
    host: Host,
    placed: Placed,
    orders: usize,
    callers: usize,
) -> Result<Vec<f64>, BenchError> {
    let store = host.store().clone();
    let mut signal = store.log().append_signal().await;
    let payments = Arc::new(tokio::sync::Semaphore::new(callers));
    let deadline = Instant::now() + SETTLE;
    let mut latencies = Vec::with_capacity(orders);
    let mut after = 0;
    while latencies.len() < orders && Instant::now() < deadline {
        let page = store.log().read_all(after, Some(ORDER), 1_000).await?;
        let Some(last) = page.last() else {
            signal.wait(Duration::from_millis(100)).await;
            continue;
        };
        after = last.position;
        for event in page {
            match event.name.as_str() {
                "OrderReserved" => {
                    let Ok(permit) = payments.clone().acquire_owned().await else {
                        continue;
                    };
                    let host = host.clone();
                    tokio::spawn(async move {
                        let pay = CommandRequest::new(ORDER, &event.id, "PayOrder", "{}");
                        if let Err(e) = host.execute(&pay).await {
                            tracing::warn!(order = %event.id, error = %e, "a payment failed");
                        }
                        drop(permit);
                    });
                }
                "OrderConfirmed" => {
                    let at = placed.lock().ok().and_then(|p| p.get(&event.id).copied());
                    if let Some(at) = at {
                        latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(latencies)
}
