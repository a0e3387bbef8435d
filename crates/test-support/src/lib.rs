//! What eshost's own integration tests share: the built components, a
//! database of its own per test (a PostgreSQL schema or a SQLite file),
//! hosts built on them, and the `conformance!` macro that runs a test
//! against both stores. A test binary brings it in as `util`:
//! `use eshost_test_support as util;`.
//!
//! - [`db`]: a database per test, and PostgreSQL in the states tests need.
//! - [`servers`]: servers in this process and the binary as a child, and
//!   certificates for HTTPS.

use eshost::store::{EventStore, JsonText};
use eshost::wasm::Runtime;
use eshost::{CommandId, CommandRequest, Concurrency, Host, Modules, RecordedEvent, RetryPolicy};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

mod db;
mod servers;
pub use db::*;
pub use servers::*;

pub const FLASH_SALE: &str = "FlashSaleItem";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where cargo builds, and `cargo xtask build-guests` puts the components:
/// `CARGO_TARGET_DIR` when set, else `target/`.
pub fn build_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Where `cargo xtask build-guests` puts the components.
pub fn modules_dir() -> PathBuf {
    let dir = build_dir().join("modules");
    assert!(
        dir.join("flash-sale.wasm").exists(),
        "{} has no flash-sale.wasm: run the tests with `cargo xtask test`, which builds the guests first",
        dir.display()
    );
    dir
}

/// The sales-summary projection component `cargo xtask build-guests` built,
/// compiled once per test binary.
pub fn sales_summary() -> Arc<eshost::wasm::LoadedProjection> {
    static LOADED: OnceLock<Arc<eshost::wasm::LoadedProjection>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = projections_dir().join("sales-summary.wasm");
            Arc::new(
                Runtime::new()
                    .load_projection(&path)
                    .expect("loading sales-summary"),
            )
        })
        .clone()
}

/// Where `cargo xtask build-guests` puts the reactor components.
pub fn reactors_dir() -> PathBuf {
    let dir = build_dir().join("reactors");
    assert!(
        dir.join("checkout.wasm").exists(),
        "{} has no checkout.wasm: run the tests with `cargo xtask test`",
        dir.display()
    );
    dir
}

/// Where `cargo xtask build-guests` puts the checkout sample's aggregates:
/// `Order`, and `FlashSaleItem` 0.2.0, which can release stock.
pub fn checkout_dir() -> PathBuf {
    let dir = build_dir().join("checkout");
    assert!(
        dir.join("order.wasm").exists() && dir.join("flash-sale.wasm").exists(),
        "{} lacks order.wasm or flash-sale.wasm: run the tests with `cargo xtask test`",
        dir.display()
    );
    dir
}

/// Where `cargo xtask build-guests` puts the projection components.
pub fn projections_dir() -> PathBuf {
    let dir = build_dir().join("projections");
    assert!(
        dir.join("sales-summary.wasm").exists(),
        "{} has no sales-summary.wasm: run the tests with `cargo xtask test`",
        dir.display()
    );
    dir
}

/// A new version of the flash-sale component built for the upgrade tests
/// (`flash-sale-v2.wasm`: compatible; `flash-sale-renamed.wasm`: renamed an
/// event). They live apart, as both claim `FlashSaleItem`.
/// A reactor built for a test (`target/fixtures/reactors/`).
pub fn reactor_fixture(name: &str) -> PathBuf {
    let path = build_dir().join("fixtures/reactors").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

pub fn upgrade_fixture(name: &str) -> PathBuf {
    let path = build_dir().join("fixtures/upgrade").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo xtask test`",
        path.display()
    );
    path
}

/// The components, compiled once per test binary (compiling is the slow part).
pub fn modules() -> Modules {
    static MODULES: OnceLock<Modules> = OnceLock::new();
    MODULES
        .get_or_init(|| {
            Runtime::new()
                .load_dir(&modules_dir())
                .expect("loading the built guests")
        })
        .clone()
}

/// What `GET /v1/aggregates` lists for [`modules`]: each file by its
/// name alone, never the server's directories.
pub fn served_aggregates() -> serde_json::Value {
    let mut listed = modules().describe();
    for info in &mut listed {
        info.file = info.file.file_name().expect("a module file").into();
    }
    serde_json::to_value(listed).expect("the listing serialises")
}

/// Runs each listed `async fn name(db: &TestDb)` once against PostgreSQL and
/// once against SQLite, as `postgres::name` and `sqlite::name`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

/// Appends `events` (name, payload) to a flash-sale stream after `version`,
/// as one command written straight to the store: the way another version
/// of the logic, or a bulk import, would have left them.
pub async fn append_raw(
    store: &dyn eshost::EventStore,
    id: &str,
    version: u64,
    events: Vec<(&str, String)>,
) {
    let command = eshost::store::NewCommand {
        command_id: uuid::Uuid::new_v4().to_string(),
        name: "Import".into(),
        fingerprint: "import".into(),
        events: events
            .into_iter()
            .map(|(name, payload)| eshost::store::NewEvent {
                name: name.into(),
                payload,
                metadata: "{}".into(),
                subject: None,
            })
            .collect(),
    };
    store
        .streams()
        .append(&eshost::StreamId::new(FLASH_SALE, id), version, &[command])
        .await
        .unwrap();
}

/// A log a projection stops in: sale `a` created, then a purchase the
/// guests cannot read (a quantity of `"two"`, appended straight to the
/// store), then sale `b` created.
pub async fn sales_with_an_unreadable_event(host: &eshost::Host, store: &dyn eshost::EventStore) {
    host.execute(&create("a", 5)).await.unwrap();
    let unreadable = r#"{"buyerId":"x","quantity":"two"}"#;
    append_raw(store, "a", 1, vec![("ItemPurchased", unreadable.into())]).await;
    host.execute(&create("b", 5)).await.unwrap();
}

pub fn create(id: &str, stock: u64) -> CommandRequest {
    CommandRequest::new(
        FLASH_SALE,
        id,
        "CreateFlashSale",
        format!(r#"{{"initialStock":{stock}}}"#),
    )
}

pub fn purchase(id: &str, buyer: &str, quantity: i64) -> CommandRequest {
    CommandRequest::new(
        FLASH_SALE,
        id,
        "PurchaseItem",
        format!(r#"{{"buyerId":"{buyer}","quantity":{quantity}}}"#),
    )
}

pub fn names(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

/// Asserts the stream's sequence numbers are exactly 1..=n.
pub fn assert_gapless(events: &[RecordedEvent]) {
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(sequences, expected, "stream has a gap or a duplicate");
}

/// Options patient with conflicts (50 retries): for runs whose point is what
/// survives, not how soon a command gives up.
pub fn patient(concurrency: Concurrency) -> eshost::HostOptions {
    eshost::HostOptions {
        concurrency,
        retry: RetryPolicy {
            max_retries: 50,
            ..RetryPolicy::default()
        },
        ..eshost::HostOptions::default()
    }
}

/// Hosts on `url`, one per mode, each with its own pool and cache (as
/// separate processes would have), patient with conflicts.
pub async fn patient_hosts(url: &str, modes: &[Concurrency]) -> Vec<Arc<Host>> {
    let mut hosts = Vec::new();
    for &mode in modes {
        let store = eshost::store::open(url).await.expect("opening the store");
        hosts.push(Arc::new(Host::with_options(
            modules(),
            store,
            patient(mode),
        )));
    }
    hosts
}

/// A purchase run on one item with caller-chosen command ids, spread over
/// `hosts` round-robin from `callers` tasks, each pausing `pace` between its
/// commands (so faults injected meanwhile land mid-run). Returns each
/// request with its answer.
pub async fn paced_purchases(
    hosts: &[Arc<Host>],
    item: &str,
    purchases: usize,
    callers: usize,
    pace: std::time::Duration,
) -> Vec<(
    CommandRequest,
    Result<eshost::CommandOutcome, eshost::CommandError>,
)> {
    let per_caller = purchases.div_ceil(callers);
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let host = hosts[caller % hosts.len()].clone();
            let item = item.to_string();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for n in caller * per_caller..((caller + 1) * per_caller).min(purchases) {
                    let mut request = purchase(&item, &format!("buyer-{n}"), 1);
                    request.command_id = CommandId::chosen(format!("{item}-order-{n}"));
                    let answer = host.execute(&request).await;
                    answers.push((request, answer));
                    tokio::time::sleep(pace).await;
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    answers
}

/// After a run (faults or not): every command answered with events, the
/// stream gapless, nothing oversold, each command's events recorded exactly
/// once and as answered; then every command sent again is a replay that
/// appends nothing.
pub async fn assert_each_recorded_once(
    host: &Host,
    item: &str,
    stock: u64,
    answers: &[(
        CommandRequest,
        Result<eshost::CommandOutcome, eshost::CommandError>,
    )],
) {
    let stream = host.events(FLASH_SALE, item).await.unwrap();
    assert_gapless(&stream);
    let purchased = stream.iter().filter(|e| e.name == "ItemPurchased").count() as u64;
    assert!(purchased <= stock, "oversold: {purchased} of {stock}");
    let state = host.state(FLASH_SALE, item).await.unwrap();
    assert_eq!(state["sold"].as_u64(), Some(purchased));
    assert_eq!(state["stock"].as_u64(), Some(stock - purchased));
    let mut by_command: std::collections::HashMap<&str, Vec<&RecordedEvent>> = Default::default();
    for event in &stream[1..] {
        let id = event.metadata["commandId"].as_str().unwrap();
        by_command.entry(id).or_default().push(event);
    }
    assert_eq!(
        by_command.len(),
        answers.len(),
        "one recorded command per request"
    );
    for (request, answer) in answers {
        let id = request.command_id.as_str();
        let outcome = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("{id} failed: {e}"));
        let recorded: Vec<RecordedEvent> = by_command[id].iter().map(|e| (*e).clone()).collect();
        assert_eq!(outcome.events, recorded, "{id} answered as recorded");
    }
    for (request, answer) in answers {
        let again = host.execute(request).await.unwrap();
        assert!(again.replayed);
        assert_eq!(again.events, answer.as_ref().unwrap().events);
    }
    assert_eq!(
        host.events(FLASH_SALE, item).await.unwrap().len(),
        stream.len()
    );
}

/// Writers working at once, each creating its items (named by
/// `item(writer, index)`, stock 100) and buying one unit of each
/// `purchases` times; returns when every command is recorded.
pub async fn sell_concurrently(
    host: Arc<Host>,
    writers: usize,
    items_per_writer: usize,
    purchases: usize,
    item: fn(usize, usize) -> String,
) {
    let writers: Vec<_> = (0..writers)
        .map(|w| {
            let host = host.clone();
            tokio::spawn(async move {
                for i in 0..items_per_writer {
                    let item = item(w, i);
                    host.execute(&create(&item, 100)).await.unwrap();
                    for p in 0..purchases {
                        let buyer = format!("b{p}");
                        host.execute(&purchase(&item, &buyer, 1)).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}

/// The same component with a custom section appended: the same logic, a
/// new digest (a new "version" as far as the host can tell).
pub fn new_version(component: &[u8], note: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"eshost-test-note";
    let mut section = Vec::new();
    leb(name.len(), &mut section);
    section.extend_from_slice(name);
    section.extend_from_slice(note.as_bytes());
    let mut bytes = component.to_vec();
    bytes.push(0); // a custom section
    leb(section.len(), &mut bytes);
    bytes.extend_from_slice(&section);
    bytes
}

/// Writes a file the way the book says to: a temporary name, then a rename.
pub fn drop_in(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Calls `check` every 50 ms until it finds something, for up to 30 s
/// (a loaded machine compiles a new component slowly).
pub async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(found) = check().await {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("gave up waiting for {what}");
}

// The sales-summary projection's view, as the projection tests check it.

/// The sample projection's name.
pub const SALES_SUMMARY: &str = "sales-summary";

/// Every document of the live view, by key.
pub async fn documents(store: &dyn EventStore) -> BTreeMap<String, Value> {
    let mut documents = BTreeMap::new();
    let mut visit = |key: &str, body: &JsonText| {
        documents.insert(key.to_string(), body.to_value());
        Ok(())
    };
    store
        .views()
        .scan_view(SALES_SUMMARY, &mut visit)
        .await
        .unwrap();
    documents
}

/// The view `sell_concurrently(writers, items, purchases)` must produce.
pub fn expected_view(
    writers: usize,
    items: usize,
    purchases: u64,
    item: fn(usize, usize) -> String,
) -> BTreeMap<String, (u64, u64, u64)> {
    let mut expected = BTreeMap::new();
    for w in 0..writers {
        for i in 0..items {
            // stock, sold, buyers
            expected.insert(
                format!("item:{}", item(w, i)),
                (100 - purchases, purchases, purchases),
            );
        }
    }
    expected
}

/// Checks the view against what the sales were, document by document.
pub fn assert_view(view: &BTreeMap<String, Value>, expected: &BTreeMap<String, (u64, u64, u64)>) {
    for (key, (stock, sold, buyers)) in expected {
        let document = view.get(key).unwrap_or_else(|| panic!("no document {key}"));
        let found = (
            document["stock"].as_u64().unwrap(),
            document["sold"].as_u64().unwrap(),
            document["buyers"].as_u64().unwrap(),
        );
        assert_eq!(found, (*stock, *sold, *buyers), "{key}: {document}");
    }
    let total = &view["total"];
    let sold: u64 = expected.values().map(|(_, sold, _)| sold).sum();
    assert_eq!(total["sold"].as_u64(), Some(sold), "{total}");
    assert_eq!(
        total["items"].as_u64(),
        Some(expected.len() as u64),
        "{total}"
    );
    assert_eq!(
        view.len(),
        expected.len() + 1,
        "documents: {:?}",
        view.keys()
    );
}

/// The last position of the log.
pub async fn head(store: &dyn EventStore) -> i64 {
    let mut after = 0;
    loop {
        let page = store.log().read_all(after, None, 1_000).await.unwrap();
        match page.last() {
            Some(last) => after = last.position,
            None => return after,
        }
    }
}

// Guests in other languages.

/// A guest in another language, as `cargo xtask build-guests` builds it.
pub struct Language {
    /// Its modules directory under the build directory.
    dir: &'static str,
    file: &'static str,
    /// Set by `cargo xtask test` when the toolchain is missing, saying why.
    skipped: &'static str,
}

pub const TYPESCRIPT: Language = Language {
    dir: "modules-ts",
    file: "flash-sale-ts.wasm",
    skipped: "ESHOST_SKIP_TS_GUEST",
};

/// The checkout reactor in TypeScript (a second `checkout`).
pub const TYPESCRIPT_REACTOR: Language = Language {
    dir: "reactors-ts",
    file: "checkout-ts.wasm",
    skipped: "ESHOST_SKIP_TS_GUEST",
};

pub const PYTHON: Language = Language {
    dir: "modules-py",
    file: "flash-sale-py.wasm",
    skipped: "ESHOST_SKIP_PY_GUEST",
};

/// The checkout reactor in Python (a third `checkout`).
pub const PYTHON_REACTOR: Language = Language {
    dir: "reactors-py",
    file: "checkout-py.wasm",
    skipped: "ESHOST_SKIP_PY_GUEST",
};

impl Language {
    /// The guest's modules directory, or `None` when `cargo xtask test`
    /// could not build it and said so.
    pub fn modules_dir(&self) -> Option<PathBuf> {
        let dir = build_dir().join(self.dir);
        if dir.join(self.file).exists() {
            return Some(dir);
        }
        if let Ok(why) = std::env::var(self.skipped) {
            eprintln!("skipped: {} was not built: {why}", self.file);
            return None;
        }
        panic!(
            "{} has no {}: run the tests with `cargo xtask test`, which builds it",
            dir.display(),
            self.file
        );
    }

    /// The guest, loaded once per test binary.
    pub fn modules(&self, loaded: &'static OnceLock<Option<Modules>>) -> Option<Modules> {
        loaded
            .get_or_init(|| {
                let dir = self.modules_dir()?;
                let runtime = Runtime::new().with_cache_dir(compiled_code_cache());
                Some(runtime.load_dir(&dir).expect("loading the guest"))
            })
            .clone()
    }
}

/// Compiled code kept between test runs: compiling the language runtime
/// inside each component (12 and 18 MB) takes a while.
pub fn compiled_code_cache() -> PathBuf {
    build_dir().join("test-cache")
}
