//! The flash-sale aggregate written in TypeScript (`examples/flash-sale-ts`,
//! built by componentize-js) and in Python (`examples/flash-sale-py`, built
//! by componentize-py): each loads like any guest, describes itself as the
//! Rust one does, and on a real store sells out to a crowd without
//! overselling or failing a command. (That each passes the Rust guest's
//! spec file is tested with `eshost test`, in the command line's tests.)

use crate::util::*;
use eshost::{Host, HostOptions, Modules, Runtime};
use std::sync::{Arc, OnceLock};

crate::conformance!(
    a_crowd_never_oversells_the_typescript_guest,
    a_crowd_never_oversells_the_python_guest,
    older_contract_versions_run_side_by_side,
);

/// A tally written against the contract's 0.1.0 bindings
/// (`fixtures/guest-contract-0.1`), and a component built by the Rust SDK
/// before 0.3.0 (kept in `fixtures/prebuilt`) 0.2.0.
/// One host runs both: commands, then a second host that hydrates each
/// from the store (every event through `apply`, called the way each
/// version defines it). The Rust SDK's guests now are 0.3.0, and every
/// other test runs them.
async fn older_contract_versions_run_side_by_side(db: &TestDb) {
    let tally = build_dir().join("fixtures/contract-0.1/tally.wasm");
    let old = Arc::new(Runtime::new().load(&tally).unwrap());
    let prebuilt = workspace_root().join("fixtures/prebuilt/bank-account-contract-0.2.0.wasm");
    let new = Arc::new(Runtime::new().load(&prebuilt).unwrap());
    assert_eq!((old.contract(), new.contract()), ("0.1.0", "0.2.0"));
    let current = modules().get("BankAccount").unwrap().clone();
    assert_eq!(current.contract(), "0.3.0");
    assert!(new.personal.is_empty() && old.personal.is_empty());
    let mut both = Modules::default();
    both.insert_shared(old).unwrap();
    both.insert_shared(new).unwrap();
    let host = |modules: Modules| async {
        let store = eshost::store::open(&db.url).await.unwrap();
        Host::with_options(modules, store, HostOptions::default())
    };
    let first = host(both.clone()).await;
    let account = |command: &str, payload: &str| {
        eshost::CommandRequest::new("BankAccount", "acc-1", command, payload.to_string())
    };
    let add =
        |by: u64| eshost::CommandRequest::new("Tally", "t-1", "Add", format!(r#"{{"by":{by}}}"#));
    first.execute(&add(2)).await.unwrap();
    first.execute(&add(3)).await.unwrap();
    first
        .execute(&account("OpenAccount", r#"{"owner":"ada"}"#))
        .await
        .unwrap();
    first
        .execute(&account("Deposit", r#"{"amount":100}"#))
        .await
        .unwrap();
    first
        .shutdown(std::time::Duration::from_secs(10))
        .await
        .unwrap();

    let second = host(both).await;
    let tally = second.state("Tally", "t-1").await.unwrap();
    assert_eq!(tally["total"], 5);
    let account = second.state("BankAccount", "acc-1").await.unwrap();
    assert_eq!(account["balance"], 100);
}

fn typescript() -> Option<Modules> {
    static LOADED: OnceLock<Option<Modules>> = OnceLock::new();
    TYPESCRIPT.modules(&LOADED)
}

fn python() -> Option<Modules> {
    static LOADED: OnceLock<Option<Modules>> = OnceLock::new();
    PYTHON.modules(&LOADED)
}

fn describes_itself_as_the_rust_guest(modules: Option<Modules>) {
    let Some(modules) = modules else {
        return;
    };
    let (other, rust) = (
        modules.get(FLASH_SALE).unwrap(),
        crate::util::modules().get(FLASH_SALE).unwrap().clone(),
    );
    assert_eq!(
        (&other.commands, &other.events, &other.version),
        (&rust.commands, &rust.events, &rust.version)
    );
}

/// 32 buyers at once, 10 purchases each, on an item with 100 in stock, in
/// the default (queued) mode: every command is answered, exactly 100 units
/// are sold, the other 220 purchases are recorded rejections.
async fn a_crowd_never_oversells(modules: Option<Modules>, db: &TestDb) {
    const BUYERS: usize = 32;
    const EACH: usize = 10;
    const STOCK: u64 = 100;
    let Some(modules) = modules else {
        return;
    };
    let store = eshost::store::open(&db.url).await.unwrap();
    let host = Arc::new(Host::with_options(modules, store, HostOptions::default()));
    host.execute(&create("crowd", STOCK)).await.unwrap();
    let buyers: Vec<_> = (0..BUYERS)
        .map(|b| {
            let host = host.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let buyer = format!("b{b}-{n}");
                    host.execute(&purchase("crowd", &buyer, 1)).await.unwrap();
                }
            })
        })
        .collect();
    for buyer in buyers {
        buyer.await.unwrap();
    }
    let events = host.events(FLASH_SALE, "crowd").await.unwrap();
    let count = |name: &str| events.iter().filter(|e| e.name == name).count();
    assert_eq!(count("ItemPurchased") as u64, STOCK);
    assert_eq!(count("PurchaseRejected"), BUYERS * EACH - STOCK as usize);
    let state = host.state(FLASH_SALE, "crowd").await.unwrap();
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

#[test]
fn the_typescript_guest_describes_itself_as_the_rust_one_does() {
    describes_itself_as_the_rust_guest(typescript());
}

/// Contract 0.3.0 through the language's SDK: the personal data its
/// types declare is what the Rust guest's declare.
fn declares_its_buyer_as_the_rust_guest(modules: Option<Modules>) {
    let Some(modules) = modules else {
        return;
    };
    let (other, rust) = (
        modules.get(FLASH_SALE).unwrap(),
        crate::util::modules().get(FLASH_SALE).unwrap().clone(),
    );
    assert_eq!(other.contract(), "0.3.0");
    assert!(!rust.personal.is_empty());
    assert_eq!(other.personal, rust.personal);
}

#[test]
fn the_typescript_guest_declares_its_buyer_as_the_rust_one_does() {
    declares_its_buyer_as_the_rust_guest(typescript());
}

#[test]
fn the_python_guest_declares_its_buyer_as_the_rust_one_does() {
    declares_its_buyer_as_the_rust_guest(python());
}

#[test]
fn the_python_guest_describes_itself_as_the_rust_one_does() {
    describes_itself_as_the_rust_guest(python());
}

async fn a_crowd_never_oversells_the_typescript_guest(db: &TestDb) {
    a_crowd_never_oversells(typescript(), db).await;
}

async fn a_crowd_never_oversells_the_python_guest(db: &TestDb) {
    a_crowd_never_oversells(python(), db).await;
}

/// The guest memory `items` hydrated items of a language's guest hold, and
/// the instances they live in, with `per_instance` items to an instance.
async fn hydrated_memory(
    dir: &std::path::Path,
    items: usize,
    per_instance: usize,
) -> (usize, usize) {
    let limits = eshost::wasm::Limits {
        aggregates_per_instance: per_instance,
        ..Default::default()
    };
    let runtime = Runtime::with_limits(limits).with_cache_dir(compiled_code_cache());
    let modules = runtime.load_dir(dir).expect("loading the guest");
    let db = TestDb::sqlite().await;
    let store = eshost::store::open(&db.url).await.unwrap();
    let options = HostOptions {
        // Each item goes to the cache as soon as it is answered.
        concurrency: eshost::Concurrency::Optimistic,
        ..HostOptions::default()
    };
    let host = Host::with_options(modules, store, options);
    for i in 0..items {
        host.execute(&create(&format!("item-{i}"), 10))
            .await
            .unwrap();
    }
    assert_eq!(
        host.cached_aggregates(),
        items,
        "{} bytes",
        host.cached_bytes()
    );
    (host.guest_instances(), host.cached_bytes())
}

/// A big guest's items share instances: a hundred hydrated items hold a
/// small fraction of the guest memory they hold with an instance each.
async fn items_share_instances_and_memory(language: &Language) {
    let Some(dir) = language.modules_dir() else {
        return;
    };
    let items = 100;
    let (alone, alone_bytes) = hydrated_memory(&dir, items, 1).await;
    let (shared, shared_bytes) = hydrated_memory(&dir, items, 64).await;
    eprintln!(
        "{items} items: {alone} instances, {} KiB alone; {shared} instances, {} KiB shared",
        alone_bytes >> 10,
        shared_bytes >> 10
    );
    assert_eq!(alone, items);
    assert!(shared <= items.div_ceil(64) + 1, "{shared} instances");
    assert!(
        shared_bytes * 10 < alone_bytes,
        "shared {shared_bytes} bytes, alone {alone_bytes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydrated_typescript_items_share_instances_and_memory() {
    items_share_instances_and_memory(&TYPESCRIPT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydrated_python_items_share_instances_and_memory() {
    items_share_instances_and_memory(&PYTHON).await;
}
