//! The `projection` scenario: the sales-summary projection catching up on
//! 100,000 recorded events, then following the log while hot-item runs,
//! with the lag from each purchase's answer to the view including it.
//!
//! It runs in a scratch store of its own (a PostgreSQL schema, or a SQLite
//! file, dropped afterwards), so the projection's view in the store named
//! is never touched.

use super::{AGGREGATE, BenchError, BenchLine};
use crate::scratch::Scratch;
use eshost::dispatch::{CommandRequest, Host, HostOptions};
use eshost_read::projector::Projector;
use eshost_store::{self as store, EventStore, NewCommand, NewEvent, StreamId};
use eshost_wasm::{LoadedProjection, Modules};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events the catch-up reads: items of one creation and purchases each.
const ITEMS: u64 = 1_000;
const EVENTS_PER_ITEM: u64 = 100;

/// Purchases of the hot item while the projection follows.
const HOT_PURCHASES: usize = 2_000;

/// The longest the projection may take to include the last purchase.
const SETTLE: Duration = Duration::from_secs(30);

pub(super) async fn run(
    modules: &Modules,
    projection: Arc<LoadedProjection>,
    url: &str,
    callers: usize,
) -> Result<Vec<BenchLine>, BenchError> {
    Scratch::around(url, async |url| {
        measure(modules, projection, &url, callers).await
    })
    .await
}

async fn measure(
    modules: &Modules,
    projection: Arc<LoadedProjection>,
    url: &str,
    callers: usize,
) -> Result<Vec<BenchLine>, BenchError> {
    let store = store::open(url).await?;
    let events = seed(&*store).await?;
    let mut projector = Projector::live(store.clone(), projection).await?;
    let started = Instant::now();
    let caught_up = projector.catch_up().await?;
    let seconds = started.elapsed().as_secs_f64();
    let catch_up = BenchLine {
        failed: (events - caught_up.projected) as usize,
        ..BenchLine::timed(
            "projection",
            "catch-up",
            caught_up.projected as usize,
            seconds,
            &[],
        )
    };

    // Then the projection follows while buyers crowd one item.
    let commits: Arc<Mutex<Vec<(Instant, i64)>>> = Arc::default();
    let recorder = commits.clone();
    projector.on_commit(Box::new(move |through| {
        if let Ok(mut commits) = recorder.lock() {
            commits.push((Instant::now(), through));
        }
    }));
    let stop = tokio_util::sync::CancellationToken::new();
    let following = {
        let stop = stop.clone();
        tokio::spawn(async move {
            projector.run(stop.cancelled()).await?;
            Ok::<_, eshost_read::projector::ProjectorError>(())
        })
    };
    let host = Host::with_options(modules.clone(), store.clone(), HostOptions::default());
    let (answered, seconds, failed) = hot_item(&host, callers).await?;
    let last = answered.iter().map(|(_, p)| *p).max().unwrap_or(0);
    let deadline = Instant::now() + SETTLE;
    while commits
        .lock()
        .map(|c| c.last().is_none_or(|(_, through)| *through < last))
        .unwrap_or(false)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    following.await??;
    let commits = commits.lock().map(|c| c.clone()).unwrap_or_default();
    let mut lags = lags_ms(&answered, &commits);
    let unseen = answered.len() - lags.len();
    lags.sort_by(|a, b| a.total_cmp(b));
    let lag = BenchLine {
        failed: failed + unseen,
        ..BenchLine::timed("projection", "lag-hot-item", HOT_PURCHASES, seconds, &lags)
    };
    host.shutdown(Duration::from_secs(10)).await.ok();
    Ok(vec![catch_up, lag])
}

/// Writes the catch-up's events straight to the store, 100 per append.
async fn seed(store: &dyn EventStore) -> Result<u64, BenchError> {
    for item in 0..ITEMS {
        let id = format!("seed-{item}");
        let event = |name: &str, payload: serde_json::Value| NewEvent {
            name: name.into(),
            payload: payload.to_string(),
            metadata: "{}".into(),
            subject: None,
        };
        let mut events = vec![event(
            "FlashSaleCreated",
            serde_json::json!({ "itemId": id, "initialStock": EVENTS_PER_ITEM }),
        )];
        events.extend((1..EVENTS_PER_ITEM).map(|n| {
            event(
                "ItemPurchased",
                serde_json::json!({ "buyerId": format!("b{n}"), "quantity": 1 }),
            )
        }));
        let command = NewCommand {
            command_id: format!("seed-{item}"),
            name: "seed".into(),
            fingerprint: String::new(),
            events,
        };
        store
            .streams()
            .append(&StreamId::new(AGGREGATE, &id), 0, &[command])
            .await?;
    }
    Ok(ITEMS * EVENTS_PER_ITEM)
}

/// Hot-item through `host`: one item, stock 1,000, 2,000 purchases from
/// `callers` callers. Returns each answered purchase's answer time and
/// event position, the seconds it took, and how many failed.
async fn hot_item(
    host: &Host,
    callers: usize,
) -> Result<(Vec<(Instant, i64)>, f64, usize), BenchError> {
    let id = format!("hot-{}", uuid::Uuid::new_v4().simple());
    let create = serde_json::json!({ "initialStock": 1_000 }).to_string();
    host.execute(&CommandRequest::new(
        AGGREGATE,
        &id,
        "CreateFlashSale",
        create,
    ))
    .await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let (host, id, next) = (host.clone(), id.clone(), next.clone());
            tokio::spawn(async move {
                let (mut answered, mut failed) = (Vec::new(), 0);
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= HOT_PURCHASES {
                        return (answered, failed);
                    }
                    let payload = serde_json::json!({ "buyerId": format!("b{n}"), "quantity": 1 });
                    let request =
                        CommandRequest::new(AGGREGATE, &id, "PurchaseItem", payload.to_string());
                    match host.execute(&request).await {
                        Ok(outcome) => {
                            let at = Instant::now();
                            answered.extend(outcome.events.iter().map(|e| (at, e.position)));
                        }
                        Err(_) => failed += 1,
                    }
                }
            })
        })
        .collect();
    let (mut answered, mut failed) = (Vec::new(), 0);
    for worker in workers {
        let (a, f) = worker.await?;
        answered.extend(a);
        failed += f;
    }
    Ok((answered, started.elapsed().as_secs_f64(), failed))
}

/// For each answered event, the time from its answer to the first commit
/// whose checkpoint includes it (0 if that commit came first), in ms.
/// Events no commit included are left out.
fn lags_ms(answered: &[(Instant, i64)], commits: &[(Instant, i64)]) -> Vec<f64> {
    answered
        .iter()
        .filter_map(|(at, position)| {
            // Checkpoints only grow, so the first one past the position is
            // found by bisection.
            let first = commits.partition_point(|(_, through)| through < position);
            commits
                .get(first)
                .map(|(seen, _)| seen.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect()
}
