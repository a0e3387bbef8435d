//! The cold-load scenario: one long stream loaded into a fresh host, with
//! and without a snapshot.

use crate::{AGGREGATE, BenchError, BenchLine};
use eshost::dispatch::{Host, HostOptions};
use eshost_store::{self as store, NewCommand, NewEvent, StreamId};
use eshost_wasm::Modules;
use std::time::Instant;

/// Loading one stream of 100,000 events into a fresh host, without and with a
/// snapshot, five times each: one "command" is one load.
pub(crate) async fn cold_load(modules: &Modules, url: &str) -> Result<Vec<BenchLine>, BenchError> {
    const EVENTS: u64 = 100_000;
    const COLD_LOADS: usize = 5;
    let store = store::open(url).await?;
    let component = modules.get(AGGREGATE).ok_or(BenchError::NoFlashSale)?;
    let id = format!("cold-{}", uuid::Uuid::new_v4().simple());
    let stream = StreamId::new(AGGREGATE, &id);
    let metadata = serde_json::json!({ "componentDigest": component.digest }).to_string();
    // Written straight to the store in large batches: the stream is the
    // subject here, not the commands that would have made it.
    let one_command = |n: u64, events: Vec<NewEvent>| NewCommand {
        command_id: format!("{id}-{n}"),
        name: "bench".into(),
        fingerprint: String::new(),
        events,
    };
    let created = NewEvent {
        name: "FlashSaleCreated".into(),
        payload: serde_json::json!({ "itemId": id, "initialStock": EVENTS }).to_string(),
        metadata: metadata.clone(),
        subject: None,
    };
    store
        .streams()
        .append(&stream, 0, &[one_command(0, vec![created])])
        .await?;
    let mut version = 1;
    while version < EVENTS {
        let batch: Vec<NewCommand> = (version..(version + 2_000).min(EVENTS))
            .map(|n| {
                let purchased = NewEvent {
                    name: "ItemPurchased".into(),
                    payload: serde_json::json!({ "buyerId": format!("b{n}"), "quantity": 1 })
                        .to_string(),
                    metadata: metadata.clone(),
                    subject: None,
                };
                one_command(n, vec![purchased])
            })
            .collect();
        store.streams().append(&stream, version, &batch).await?;
        version += batch.len() as u64;
    }

    let mut lines = Vec::new();
    for (mode, snapshot_every) in [("no-snapshot", 0), ("snapshot", 100)] {
        let options = HostOptions {
            snapshot_every,
            ..HostOptions::default()
        };
        if snapshot_every > 0 {
            // Write the snapshot first (outside the timing), as a host that
            // had been running would have.
            let writer = Host::with_options(modules.clone(), store.clone(), options);
            writer.snapshot_now(AGGREGATE, &id).await?;
        }
        // Each load on a fresh host, so nothing is cached.
        let (mut millis, mut failed) = (Vec::new(), 0);
        for _ in 0..COLD_LOADS {
            let host = Host::with_options(modules.clone(), store.clone(), options);
            let started = Instant::now();
            host.load(AGGREGATE, &id).await?;
            millis.push(started.elapsed().as_secs_f64() * 1000.0);
            // Checked after the clock stops: rendering 100,000 buyers as
            // JSON is not part of loading.
            let state = host.state(AGGREGATE, &id).await?;
            failed += usize::from(state["sold"].as_u64() != Some(EVENTS - 1));
        }
        let seconds = millis.iter().sum::<f64>() / 1000.0;
        millis.sort_by(|a, b| a.total_cmp(b));
        lines.push(BenchLine {
            failed,
            ..BenchLine::timed("cold-load", mode, COLD_LOADS, seconds, &millis)
        });
    }
    Ok(lines)
}
