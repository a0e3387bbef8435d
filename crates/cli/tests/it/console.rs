//! The operator console in a real browser: `eshost serve` with named,
//! scoped tokens, running the projections, and the Playwright suite in `tests/console/console.mjs`
//! driving Debian's Chromium against it. The suite writes each page's
//! screenshot into the book.

use crate::util::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The tokens the suite uses, by scope.
const TOKENS: &str = r#"{"read":"viewer-secret","write":"shop-secret","admin":"ops-secret"}"#;

const TOKENS_FILE: &str = r#"
[[token]]
name = "viewer"
secret = "viewer-secret"
scopes = ["read"]

[[token]]
name = "shop"
secret = "shop-secret"
scopes = ["read", "write"]

[[token]]
name = "ops"
secret = "ops-secret"
scopes = ["read", "write", "admin"]
"#;

/// The id of the stream of 10,000 events.
const LONG: &str = "long-sale";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser() {
    if let Ok(why) = std::env::var("ESHOST_SKIP_CONSOLE") {
        println!("skipped: {why}");
        return;
    }
    let db = TestDb::postgres().await;
    // A sale of 10,000 events: created, then 9,999 purchases written
    // straight to the store in pages.
    let host = db.default_host().await;
    host.execute(&create(LONG, 10_000)).await.unwrap();
    let store = host.store().clone();
    for page in 0..10 {
        let from = 1 + page * 1_000;
        let purchases = (from..(from + 1_000).min(10_000))
            .map(|n| {
                (
                    "ItemPurchased",
                    format!(r#"{{"buyerId":"b{n}","quantity":1}}"#),
                )
            })
            .collect();
        append_raw(store.as_ref(), LONG, from as u64, purchases).await;
    }
    // A reactor with a parked event, for the reactors page (no reactor
    // runs: the page reads and writes the store through the API).
    let first = store.log().read_all(0, None, 1).await.unwrap()[0].position;
    let reactions = store.reactions();
    reactions
        .reactor_checkpoint("checkout", "0.1.0", "c0ffee", 1)
        .await
        .unwrap();
    let parked = [eshost::store::reactions::Reaction {
        position: first,
        recorded_at_ms: 1,
        event: format!("FlashSaleItem {LONG} ItemPurchased #2"),
        outcome: Err("missing field `buyerId`".into()),
    }];
    let page = eshost::store::reactions::ReactionPage {
        reactor: "checkout",
        version: "0.1.0",
        digest: "c0ffee",
        from: 0,
        to: first,
        reactions: &parked,
        now_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    };
    assert!(reactions.record_reactions(&page).await.unwrap());
    host.shutdown(Duration::from_secs(10)).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, TOKENS_FILE).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_eshost"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--run-projections",
            "--tokens",
        ])
        .arg(&tokens)
        .env("DATABASE_URL", &db.url)
        .env("ESHOST_MODULES", modules_dir())
        .env("ESHOST_PROJECTIONS", projections_dir())
        .env("ESHOST_CACHE_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = KilledOnDrop::new(child);
    let base = listening_address(&mut server);

    let suite = workspace_root().join("crates/cli/tests/console");
    let screenshots = workspace_root().join("docs/book/src/images");
    std::fs::create_dir_all(&screenshots).unwrap();
    // `cargo xtask test` finds it; Debian puts it here.
    let chromium = std::env::var("ESHOST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    // A projection version to deploy from the page.
    let summary = std::fs::read(projections_dir().join("sales-summary.wasm")).unwrap();
    let projection_v2 = new_version(&summary, "console");
    let projection_file = dir.path().join("sales-summary-v2.wasm");
    std::fs::write(&projection_file, &projection_v2).unwrap();
    let projection_digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&projection_v2))
    );
    let mut run = Command::new("node");
    run.arg(suite.join("console.mjs"))
        .current_dir(&suite)
        .env("ESHOST_URL", &base)
        .env("ESHOST_TOKENS", TOKENS)
        .env("ESHOST_CHROMIUM", chromium)
        .env(
            "ESHOST_INCOMPATIBLE",
            upgrade_fixture("flash-sale-renamed.wasm"),
        )
        .env("ESHOST_COMPATIBLE", upgrade_fixture("flash-sale-v2.wasm"))
        .env("ESHOST_PROJECTION", &projection_file)
        .env("ESHOST_PROJECTION_DIGEST", &projection_digest)
        .env("ESHOST_LONG_STREAM", LONG)
        .env("ESHOST_SCREENSHOTS", &screenshots);
    let output = tokio::task::spawn_blocking(move || run.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run node: {e} (cargo xtask test installs the suite)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the console suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("ok - ").count(), 11, "{stdout}");
    drop(server);
    db.cleanup().await;
}
