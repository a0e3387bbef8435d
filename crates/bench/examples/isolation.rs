//! How much four looping guests cost healthy aggregates: latency of
//! flash-sale purchases on a quiet host and, in the same run, while four
//! hostile aggregates loop for their whole one-second budget, over and over.
//!
//! ```sh
//! cargo xtask build-guests
//! cargo run --release -p eshost-bench --example isolation                      # SQLite
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run --release -p eshost-bench --example isolation
//! ```

use eshost::wasm::Runtime;
use eshost::{CommandRequest, Host, HostOptions, Modules};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PURCHASES: usize = 400;
const CALLERS: usize = 8;
const LOOPERS: usize = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let runtime = Runtime::new();
    let mut modules = Modules::default();
    modules.insert(runtime.load(&root.join("target/fixtures/hostile.wasm"))?)?;
    modules.insert(runtime.load(&root.join("target/modules/flash-sale.wasm"))?)?;
    let scratch = tempfile::tempdir()?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", scratch.path().join("isolation.db").display()));
    let store = eshost::store::open(&url).await?;
    let host = Host::with_options(modules, store, HostOptions::default());

    println!(
        "healthy purchases ({PURCHASES}, {CALLERS} callers, 2 async worker threads), {}",
        eshost::store::redact(&url)
            .split('?')
            .next()
            .unwrap_or_default()
    );
    let quiet = purchases(&host, "quiet").await?;
    report("quiet host", &quiet);

    let stop = Arc::new(AtomicBool::new(false));
    let loopers: Vec<_> = (0..LOOPERS)
        .map(|n| {
            let (host, stop) = (host.clone(), stop.clone());
            tokio::spawn(async move {
                let mut loops = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("looper-{n}");
                    let _ = host
                        .execute(&CommandRequest::new("Hostile", id, "Loop", "{}"))
                        .await;
                    loops += 1;
                }
                loops
            })
        })
        .collect();
    // Let every looper get into its guest first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = purchases(&host, "busy").await?;
    stop.store(true, Ordering::Relaxed);
    let mut loops = 0;
    for looper in loopers {
        loops += looper.await?;
    }
    report(&format!("{LOOPERS} guests looping"), &busy);
    println!("  ({loops} one-second loops stopped by their time limit meanwhile)");
    Ok(())
}

/// Purchases on one healthy item from several callers; each latency in ms.
async fn purchases(host: &Host, item: &str) -> anyhow::Result<Vec<f64>> {
    let id = format!("{item}-{}", uuid::Uuid::new_v4().simple());
    let create = format!(r#"{{"initialStock":{PURCHASES}}}"#);
    host.execute(&CommandRequest::new(
        "FlashSaleItem",
        &id,
        "CreateFlashSale",
        create,
    ))
    .await?;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (host, id) = (host.clone(), id.clone());
            tokio::spawn(async move {
                let mut millis = Vec::new();
                for n in (caller..PURCHASES).step_by(CALLERS) {
                    let payload = format!(r#"{{"buyerId":"b{n}","quantity":1}}"#);
                    let request =
                        CommandRequest::new("FlashSaleItem", &id, "PurchaseItem", payload);
                    let sent = Instant::now();
                    host.execute(&request).await?;
                    millis.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, eshost::CommandError>(millis)
            })
        })
        .collect();
    let mut millis = Vec::new();
    for task in tasks {
        millis.extend(task.await??);
    }
    millis.sort_by(f64::total_cmp);
    Ok(millis)
}

fn report(label: &str, sorted: &[f64]) {
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    println!(
        "  {label:<20} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        at(0.50),
        at(0.99),
        at(1.0)
    );
}
