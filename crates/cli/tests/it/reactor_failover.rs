//! The checkout reactor run by two `eshost reactor run` processes (two
//! hosts) on PostgreSQL while orders flow in: the one holding the lease is
//! SIGKILLed three times mid-run, each time with work waiting, and another
//! runner is started in its place. Every order settles; each order's
//! purchase is answered exactly once (none lost, none doubled); each
//! stream records each kind of event once; each confirmation reaches the
//! sink by its Idempotency-Key.

use crate::util::*;
use eshost_bench::checkout::{CheckoutOptions, CountingSink, shop};
use sqlx::{Connection, Row};
use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Kills of the lease holder.
const KILLS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lease_holder_killed_three_times_mid_run_loses_and_doubles_nothing() {
    let db = TestDb::postgres().await;
    let host = db.checkout_host().await;
    let stop = CancellationToken::new();
    let sink = CountingSink::new(Some(4));
    let url = sink.start(stop.clone()).await.unwrap();
    let config = tempfile::tempdir().unwrap();
    let sinks = config.path().join("sinks.toml");
    std::fs::write(&sinks, format!("[confirmations]\nurl = \"{url}\"\n")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runner = || {
        KilledOnDrop::new(
            Command::new(env!("CARGO_BIN_EXE_eshost"))
                .args(["--database-url", &db.url, "reactor", "run", "--no-watch"])
                .env("ESHOST_MODULES", checkout_dir())
                .env("ESHOST_REACTORS", reactors_dir())
                .env("ESHOST_SINKS", &sinks)
                .env("ESHOST_CACHE_DIR", cache.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut runners = vec![runner(), runner()];

    // 600 orders over 15 s for 6 items of 60 units, a fifth never paid,
    // each with 8 s to pay.
    let options = CheckoutOptions {
        items: 6,
        stock: 60,
        orders: 600,
        unpaid_percent: 20,
        pay_within: Duration::from_secs(8),
        deadline: Duration::from_secs(120),
        place_over: Duration::from_secs(15),
    };
    let shopping = {
        let (host, sink, options) = (host.clone(), sink.clone(), options.clone());
        tokio::spawn(async move { shop(&host, &sink, &options).await })
    };

    let mut store = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut kills = Vec::new();
    while kills.len() < KILLS {
        // The lease held by a live runner (after a kill, the dead one's
        // lease lapses and the other takes over).
        let pids: Vec<u32> = runners.iter().map(|r| r.id()).collect();
        let holder = poll("a live runner to hold the lease", async || {
            let row = sqlx::query("SELECT holder FROM reactor_leases WHERE reactor = 'checkout'")
                .fetch_optional(&mut store)
                .await
                .unwrap()?;
            let holder: String = row.get("holder");
            let pid: u32 = holder.rsplit(':').next()?.parse().ok()?;
            pids.contains(&pid).then_some(pid)
        })
        .await;
        // Let it work a while, then kill it with work waiting.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM reactor_timers WHERE reactor = 'checkout') \
                  + (SELECT COUNT(*) FROM reaction_actions \
                     WHERE reactor = 'checkout' AND status = 'pending')",
        )
        .fetch_one(&mut store)
        .await
        .unwrap();
        let index = runners.iter().position(|r| r.id() == holder).unwrap();
        runners[index].kill().unwrap();
        runners[index].wait().unwrap();
        runners[index] = runner();
        eprintln!(
            "killed the lease holder (pid {holder}) with {waiting} timers and actions waiting"
        );
        kills.push((holder, waiting));
    }
    let report = shopping.await.unwrap().unwrap();
    let summary = serde_json::to_string(&report).unwrap();
    eprintln!("after {KILLS} kills: {summary}");
    assert!(
        kills.iter().all(|&(_, waiting)| waiting > 0),
        "each kill came mid-run: {kills:?}"
    );

    assert!(report.errors.is_empty(), "{summary}");
    assert_eq!(report.unsettled, 0, "{summary}");
    assert_eq!(
        report.confirmed + report.rejected + report.cancelled,
        600,
        "{summary}"
    );
    assert!(report.confirmed > 0 && report.rejected > 0, "{summary}");
    // Each confirmation taken by the sink (a runner killed between the
    // sink's answer and recording it sends again under the same key).
    assert_eq!(report.delivered, report.confirmed as usize, "{summary}");
    assert!(report.holds(), "{summary}");

    // The log: each order's purchase answered once, each stream's events
    // each recorded once.
    let mut answers: HashMap<String, BTreeMap<String, u32>> = HashMap::new();
    let mut order_events: HashMap<String, BTreeMap<String, u32>> = HashMap::new();
    let mut after = 0;
    loop {
        let page = host
            .store()
            .log()
            .read_all(after, None, 1_000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in page {
            let payload: serde_json::Value = serde_json::from_str(event.payload.as_str()).unwrap();
            match event.aggregate.as_str() {
                "Order" => {
                    *order_events
                        .entry(event.id.clone())
                        .or_default()
                        .entry(event.name.clone())
                        .or_default() += 1;
                }
                "FlashSaleItem" if event.name != "FlashSaleCreated" => {
                    let buyer = payload["buyerId"].as_str().unwrap().to_owned();
                    *answers
                        .entry(buyer)
                        .or_default()
                        .entry(event.name.clone())
                        .or_default() += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!(order_events.len(), 600);
    for (order, events) in &order_events {
        assert!(
            events.values().all(|&n| n == 1),
            "order {order}: {events:?}"
        );
    }
    assert_eq!(answers.len(), 600, "every order's purchase answered");
    for (buyer, events) in &answers {
        let count = |name: &str| events.get(name).copied().unwrap_or_default();
        assert_eq!(
            count("ItemPurchased") + count("PurchaseRejected"),
            1,
            "{buyer}: {events:?}"
        );
        assert!(
            count("ItemReleased") <= count("ItemPurchased"),
            "{buyer}: {events:?}"
        );
    }
    drop(runners);
    stop.cancel();
    db.cleanup().await;
}
