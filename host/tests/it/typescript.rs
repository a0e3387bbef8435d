//! The flash-sale aggregate written in TypeScript (`guest-flash-sale-ts`,
//! built by componentize-js): it loads like any guest, passes the same spec
//! as the Rust one, and on a real store sells out to a crowd without
//! overselling or failing a command.

use crate::util::*;
use eshost::runtime::Runtime;
use eshost::{Host, HostOptions, Modules};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

crate::conformance!(a_crowd_never_oversells_the_typescript_guest);

/// The TypeScript guest's modules directory, or `None` when `cargo xtask
/// test` could not build it (no node or npm) and said so.
fn ts_modules_dir() -> Option<PathBuf> {
    let dir = build_dir().join("modules-ts");
    if dir.join("flash-sale-ts.wasm").exists() {
        return Some(dir);
    }
    if let Ok(why) = std::env::var("ESHOST_SKIP_TS_GUEST") {
        eprintln!("skipped: the TypeScript guest was not built: {why}");
        return None;
    }
    panic!(
        "{} has no flash-sale-ts.wasm: run the tests with `cargo xtask test`, which builds it (with node and npm)",
        dir.display()
    );
}

/// Compiled code kept between test runs: compiling the 12 MB JavaScript
/// engine inside the component takes a while.
fn compiled_code_cache() -> PathBuf {
    build_dir().join("test-cache")
}

/// The TypeScript guest, loaded once for the tests here.
fn ts_modules() -> Option<Modules> {
    static MODULES: OnceLock<Option<Modules>> = OnceLock::new();
    MODULES
        .get_or_init(|| {
            let dir = ts_modules_dir()?;
            let runtime = Runtime::new().with_cache_dir(compiled_code_cache());
            Some(
                runtime
                    .load_dir(&dir)
                    .expect("loading the TypeScript guest"),
            )
        })
        .clone()
}

#[test]
fn the_typescript_guest_describes_itself_as_the_rust_one_does() {
    let Some(typescript) = ts_modules() else {
        return;
    };
    let (ts, rust) = (
        typescript.get(FLASH_SALE).unwrap(),
        modules().get(FLASH_SALE).unwrap().clone(),
    );
    assert_eq!(
        (&ts.commands, &ts.events, &ts.version),
        (&rust.commands, &rust.events, &rust.version)
    );
}

#[test]
fn the_typescript_guest_passes_the_flash_sale_spec() {
    let Some(dir) = ts_modules_dir() else {
        return;
    };
    let spec = workspace_root().join("guest-flash-sale/tests/flash-sale.spec.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_eshost"))
        .env_remove("DATABASE_URL")
        .env("ESHOST_CACHE_DIR", compiled_code_cache())
        .arg("--modules")
        .arg(dir)
        .arg("test")
        .arg(spec)
        .output()
        .unwrap();
    crate::spec::assert_passed(&output, "9 passed, 0 failed");
}

/// 32 buyers at once, 10 purchases each, on an item with 100 in stock, in
/// the default (queued) mode: every command is answered, exactly 100 units
/// are sold, the other 220 purchases are recorded rejections.
async fn a_crowd_never_oversells_the_typescript_guest(db: &TestDb) {
    const BUYERS: usize = 32;
    const EACH: usize = 10;
    const STOCK: u64 = 100;
    let Some(modules) = ts_modules() else {
        return;
    };
    let store = eshost::store::open(&db.url).await.unwrap();
    let host = Arc::new(Host::with_options(modules, store, HostOptions::default()));
    host.execute(&create("ts-1", STOCK)).await.unwrap();
    let buyers: Vec<_> = (0..BUYERS)
        .map(|b| {
            let host = host.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let buyer = format!("b{b}-{n}");
                    host.execute(&purchase("ts-1", &buyer, 1)).await.unwrap();
                }
            })
        })
        .collect();
    for buyer in buyers {
        buyer.await.unwrap();
    }
    let events = host.events(FLASH_SALE, "ts-1").await.unwrap();
    let count = |name: &str| events.iter().filter(|e| e.name == name).count();
    assert_eq!(count("ItemPurchased") as u64, STOCK);
    assert_eq!(count("PurchaseRejected"), BUYERS * EACH - STOCK as usize);
    let state = host.state(FLASH_SALE, "ts-1").await.unwrap();
    assert_eq!(
        (&state["stock"], &state["sold"]),
        (&0.into(), &STOCK.into())
    );
    assert_eq!(
        state["buyers"].as_array().map(Vec::len),
        Some(STOCK as usize)
    );
    host.shutdown(std::time::Duration::from_secs(10))
        .await
        .unwrap();
}
