//! Many one-command processes on one item at once. Alone, `eshost exec` (in
//! queued mode) takes turns per aggregate across processes instead of
//! racing; with `--server` the server's queue serializes them. Either way,
//! on both stores: every command answered, nothing oversold.

use crate::util::*;
use std::process::Command;
use std::time::Duration;

const PROCESSES: usize = 16;
const PER_PROCESS: usize = 10;
const STOCK: usize = 100;

fn eshost(url: &str, cache: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eshost"));
    command
        .env("DATABASE_URL", url)
        .env("ESHOST_MODULES", modules_dir())
        .env("ESHOST_CACHE_DIR", cache)
        .env_remove("ESHOST_SERVER");
    command
}

/// 16 threads, each running 10 `exec` processes one after another, all on
/// one item of 100 in stock; `server` adds `--server`.
fn crowd(url: &str, cache: &std::path::Path, server: Option<&str>) {
    let exec = |args: &[&str]| {
        let mut command = eshost(url, cache);
        command.arg("exec").args(args);
        if let Some(server) = server {
            command.args(["--server", server]);
        }
        command.output().unwrap()
    };
    let created = exec(&[
        "FlashSaleItem",
        "crowd",
        "CreateFlashSale",
        &format!(r#"{{"initialStock":{STOCK}}}"#),
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PROCESSES)
            .map(|p| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for n in 0..PER_PROCESS {
                        let payload = format!(r#"{{"buyerId":"p{p}-{n}","quantity":1}}"#);
                        let output = exec(&["FlashSaleItem", "crowd", "PurchaseItem", &payload]);
                        if !output.status.success() {
                            failures.push(String::from_utf8_lossy(&output.stderr).into_owned());
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {}",
        failures.len(),
        failures[0]
    );

    let listed = eshost(url, cache)
        .args(["events", "FlashSaleItem", "crowd"])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let events: Vec<eshost::RecordedEvent> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_gapless(&events);
    let count = |name: &str| events.iter().filter(|e| e.name == name).count();
    assert_eq!(count("ItemPurchased"), STOCK, "sold exactly the stock");
    assert_eq!(count("PurchaseRejected"), PROCESSES * PER_PROCESS - STOCK);
}

/// `eshost serve` on `url`, for the `--server` runs.
fn serving(url: &str, cache: &std::path::Path) -> (std::process::Child, String) {
    let mut child = eshost(url, cache)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = listening_address(&mut child);
    (child, base)
}

fn stop(mut child: std::process::Child) {
    assert_eq!(
        terminate(&mut child, Duration::from_secs(30)).code(),
        Some(0)
    );
}

async fn exec_processes_take_turns(db: &TestDb) {
    let cache = tempfile::tempdir().unwrap();
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || crowd(&url, cache.path(), None))
        .await
        .unwrap();
}

async fn exec_processes_through_a_server(db: &TestDb) {
    let cache = tempfile::tempdir().unwrap();
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let (server, base) = serving(&url, cache.path());
        crowd(&url, cache.path(), Some(&base));
        stop(server);
    })
    .await
    .unwrap();
}

crate::conformance!(exec_processes_take_turns, exec_processes_through_a_server);
