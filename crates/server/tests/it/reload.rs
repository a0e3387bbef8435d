//! Hot reload while commands flow: a new version of the flash-sale
//! component dropped into the watched directory mid-run takes over at a
//! batch boundary of each stream, a broken file changes nothing, a removed
//! file leaves its aggregate deployed; no command fails.

use crate::util::*;
use eshost::wasm::Runtime;
use eshost::{Host, HostOptions};
use eshost_server::{App, ServerConfig};
use serde_json::Value;
use sha2::Digest;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const ITEMS: usize = 20;
const COMMANDS: usize = 5_000;
const CALLERS: usize = 64;

/// Sends a request and reads its answer's JSON body.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_under_load_fails_no_command() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(modules_dir().join("flash-sale.wasm")).unwrap();
    drop_in(dir.path(), "flash-sale.wasm", &original);
    let runtime = Runtime::new();
    let loaded = runtime.load_dir(dir.path()).unwrap();
    let old_digest = loaded.get(FLASH_SALE).unwrap().digest.clone();
    let store = eshost::store::open(&db.url).await.unwrap();
    let host = Host::with_options(loaded, store, HostOptions::default());
    // The upgrade check replays a few streams before the switch (more would
    // delay it past the end of the run).
    let config = ServerConfig {
        upgrade_check: Some(eshost::upgrade::Selection::Sample(3)),
        ..ServerConfig::default()
    };
    let app = App::new(host, config).with_reloader(runtime, dir.path().to_path_buf());
    let server = TestServer::start_app(app).await;
    let client = reqwest::Client::new();
    let command = |id: &str, name: &str| {
        server.url(&format!(
            "/v1/aggregates/FlashSaleItem/{id}/commands/{name}"
        ))
    };
    for n in 0..ITEMS {
        let created = client
            .post(command(&format!("r{n}"), "CreateFlashSale"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"initialStock":{COMMANDS}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 200);
    }

    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    // Past half the run, callers wait for the new version to be live: on a
    // fast machine the run could otherwise end before the new component
    // is compiled and checked, and the switch would not come mid-run.
    let switched = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, next, answered, switched) = (
                client.clone(),
                next.clone(),
                answered.clone(),
                switched.clone(),
            );
            let urls: Vec<String> = (0..ITEMS)
                .map(|n| command(&format!("r{n}"), "PurchaseItem"))
                .collect();
            tokio::spawn(async move {
                let mut failed = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= COMMANDS {
                        return failed;
                    }
                    while n >= COMMANDS / 2 && !switched.load(Ordering::Acquire) {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let response = client
                        .post(&urls[n % ITEMS])
                        .header("content-type", "application/json")
                        .body(format!(r#"{{"buyerId":"b{n}","quantity":1}}"#))
                        .send()
                        .await
                        .unwrap();
                    if response.status().as_u16() != 200 {
                        failed.push(response.text().await.unwrap());
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // A third of the way in: a new version.
    while answered.load(Ordering::Relaxed) < COMMANDS / 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let upgraded = new_version(&original, "v2");
    drop_in(dir.path(), "flash-sale.wasm", &upgraded);
    let listing = server.url("/v1/aggregates");
    let new_digest = poll("the new version to be loaded", async || {
        let listed: Value = client.get(&listing).send().await.ok()?.json().await.ok()?;
        let digest = listed[0]["digest"]
            .as_str()?
            .trim_start_matches("sha256:")
            .to_string();
        (digest != old_digest).then_some(digest)
    })
    .await;
    let switched_at = answered.load(Ordering::Relaxed);
    switched.store(true, Ordering::Release);
    // Two thirds in: a broken file.
    while answered.load(Ordering::Relaxed) < 2 * COMMANDS / 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop_in(dir.path(), "broken.wasm", b"\0asm not a component at all");
    let readyz = server.url("/readyz");
    let ready: Value = poll("the broken file to be reported", async || {
        let ready: Value = client.get(&readyz).send().await.ok()?.json().await.ok()?;
        (!ready["load_errors"].as_array()?.is_empty()).then_some(ready)
    })
    .await;
    assert_eq!(
        ready["ready"], true,
        "the running version keeps serving: {ready}"
    );
    assert!(
        ready["load_errors"][0]
            .as_str()
            .unwrap()
            .contains("broken.wasm"),
        "{ready}"
    );

    let mut failed = Vec::new();
    for caller in callers {
        failed.extend(caller.await.unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {}",
        failed.len(),
        failed[0]
    );
    assert!(switched_at < COMMANDS, "the switch came mid-run");

    // Per stream, the old digest until one batch, the new one from the next.
    let reader = db.default_host().await;
    let (mut old_events, mut new_events) = (0, 0);
    for n in 0..ITEMS {
        let stream = reader.events(FLASH_SALE, &format!("r{n}")).await.unwrap();
        assert_gapless(&stream);
        assert_eq!(stream.len(), 1 + COMMANDS / ITEMS);
        let digests: Vec<&str> = stream
            .iter()
            .map(|e| e.metadata["componentDigest"].as_str().unwrap())
            .collect();
        let switch = digests
            .iter()
            .position(|d| *d == new_digest)
            .unwrap_or(digests.len());
        assert!(
            digests[..switch].iter().all(|d| *d == old_digest),
            "r{n}: {digests:?}"
        );
        assert!(
            digests[switch..].iter().all(|d| *d == new_digest),
            "r{n}: old after new"
        );
        old_events += switch;
        new_events += digests.len() - switch;
    }
    assert!(
        old_events > ITEMS && new_events > 0,
        "{old_events} old, {new_events} new"
    );

    // On demand: nothing changed but the broken file, still reported.
    let reload = server.url("/v1/admin/reload");
    let report = json_of(
        client
            .post(&reload)
            .header("content-type", "application/json"),
    )
    .await;
    assert_eq!(report["unchanged"].as_array().unwrap().len(), 1, "{report}");
    assert!(
        report["errors"][0]
            .as_str()
            .unwrap()
            .contains("broken.wasm"),
        "{report}"
    );
    // The directory only seeds the store: a removed file changes nothing,
    // the version deployed from it keeps serving (the watcher and this
    // reload may race; neither removes it).
    std::fs::remove_file(dir.path().join("flash-sale.wasm")).unwrap();
    std::fs::remove_file(dir.path().join("broken.wasm")).unwrap();
    let report = json_of(
        client
            .post(&reload)
            .header("content-type", "application/json"),
    )
    .await;
    assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["removed"], serde_json::json!([]), "{report}");
    let listed = json_of(client.get(&listing)).await;
    assert_eq!(
        listed[0]["digest"],
        format!("sha256:{new_digest}"),
        "{listed}"
    );
    let late = client
        .post(command("r0", "PurchaseItem"))
        .header("content-type", "application/json")
        .body(r#"{"buyerId":"late","quantity":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status().as_u16(), 200);
    server.stop().await;
    db.cleanup().await;
}

/// A server on `db` serving the flash-sale component from a directory of
/// its own, reloading only on demand, checking upgrades as `upgrade_check`
/// says; with one stream, `s1`, holding a purchase.
async fn server_with_a_purchase(
    db: &TestDb,
    dir: &Path,
    upgrade_check: Option<eshost::upgrade::Selection>,
) -> TestServer {
    let original = std::fs::read(modules_dir().join("flash-sale.wasm")).unwrap();
    drop_in(dir, "flash-sale.wasm", &original);
    let runtime = Runtime::new();
    let loaded = runtime.load_dir(dir).unwrap();
    let store = eshost::store::open(&db.url).await.unwrap();
    let host = Host::with_options(loaded, store, HostOptions::default());
    let config = ServerConfig {
        watch: false,
        upgrade_check,
        ..ServerConfig::default()
    };
    let server =
        TestServer::start_app(App::new(host, config).with_reloader(runtime, dir.to_path_buf()))
            .await;
    let client = reqwest::Client::new();
    for (command, body) in [
        ("CreateFlashSale", r#"{"initialStock":5}"#),
        ("PurchaseItem", r#"{"buyerId":"ann","quantity":1}"#),
    ] {
        let url = server.url(&format!(
            "/v1/aggregates/FlashSaleItem/s1/commands/{command}"
        ));
        let answer = client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
    }
    server
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(upgrade_fixture(name)).unwrap()
}

/// A reload replays recorded streams with a new version before switching it
/// in: one that renamed a recorded event is refused (the running version
/// keeps serving, the reason names the stream and the event), one that
/// replays them is switched in. With the check off, nothing is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_switches_in_only_versions_that_pass_the_upgrade_check() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let sample = Some(eshost::upgrade::Selection::Sample(100));
    let server = server_with_a_purchase(&db, dir.path(), sample).await;
    let client = reqwest::Client::new();
    let reload = || {
        json_of(
            client
                .post(server.url("/v1/admin/reload"))
                .header("content-type", "application/json"),
        )
    };
    let version =
        async || json_of(client.get(server.url("/v1/aggregates"))).await[0]["version"].clone();

    drop_in(
        dir.path(),
        "flash-sale.wasm",
        &fixture_bytes("flash-sale-renamed.wasm"),
    );
    let refused = reload().await;
    assert_eq!(refused["replaced"], serde_json::json!([]), "{refused}");
    // Refused, the file is an error, not also "unchanged".
    assert_eq!(refused["unchanged"], serde_json::json!([]), "{refused}");
    let error = refused["errors"][0].as_str().unwrap_or_default();
    let digest = hex::encode(sha2::Sha256::digest(fixture_bytes(
        "flash-sale-renamed.wasm",
    )));
    let named = format!(
        "FlashSaleItem 0.2.0 (sha256 {}…) not switched in: upgrade check failed",
        &digest[..12]
    );
    assert!(
        error.contains(&named)
            && error.contains(
                "FlashSaleItem s1 cannot be loaded by FlashSaleItem 0.2.0: event 2 (ItemPurchased)"
            ),
        "{refused}"
    );
    assert_eq!(version().await, "0.1.0");
    let ready = json_of(client.get(server.url("/readyz"))).await;
    assert_eq!(ready["load_errors"][0].as_str(), Some(error), "{ready}");
    // Reloaded again, the same file is refused again, for the same reason.
    let again = reload().await;
    assert_eq!(again["errors"], refused["errors"], "{again}");
    assert_eq!(version().await, "0.1.0");
    // The aggregates show the version refused beside the one serving.
    let listed = json_of(client.get(server.url("/v1/aggregates"))).await;
    let shown = &listed[0]["refused"];
    assert_eq!(shown["version"], "0.2.0", "{listed}");
    assert_eq!(shown["digest"], format!("sha256:{digest}"), "{listed}");
    assert!(
        shown["reason"]
            .as_str()
            .is_some_and(|r| r.contains("event 2 (ItemPurchased)")),
        "{listed}"
    );

    drop_in(
        dir.path(),
        "flash-sale.wasm",
        &fixture_bytes("flash-sale-v2.wasm"),
    );
    let switched = reload().await;
    assert_eq!(switched["errors"], serde_json::json!([]), "{switched}");
    assert_eq!(
        switched["replaced"].as_array().map(Vec::len),
        Some(1),
        "{switched}"
    );
    assert_eq!(version().await, "0.2.0");
    let listed = json_of(client.get(server.url("/v1/aggregates"))).await;
    assert!(listed[0].get("refused").is_none(), "{listed}");
    server.stop().await;

    // Off: the renamed version goes in unchecked.
    let unchecked_db = TestDb::postgres().await;
    let unchecked_dir = tempfile::tempdir().unwrap();
    let unchecked = server_with_a_purchase(&unchecked_db, unchecked_dir.path(), None).await;
    drop_in(
        unchecked_dir.path(),
        "flash-sale.wasm",
        &fixture_bytes("flash-sale-renamed.wasm"),
    );
    let answer = json_of(
        client
            .post(unchecked.url("/v1/admin/reload"))
            .header("content-type", "application/json"),
    )
    .await;
    assert_eq!(
        answer["replaced"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    unchecked.stop().await;
    db.cleanup().await;
    unchecked_db.cleanup().await;
}
