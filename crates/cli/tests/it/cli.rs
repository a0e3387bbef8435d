//! The `eshost` binary, driven as a user would: in an empty folder, with no
//! database server (SQLite by default), and against PostgreSQL for the demo.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A user's working directory with its own compiled-code cache.
pub(crate) struct Workspace {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    modules: PathBuf,
}

impl Workspace {
    pub(crate) fn new() -> Self {
        Self::with_modules(modules_dir())
    }

    pub(crate) fn with_modules(modules: PathBuf) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
            modules,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eshost"));
        cmd.current_dir(self.dir.path())
            .env_remove("DATABASE_URL")
            .env("ESHOST_MODULES", &self.modules)
            .env("ESHOST_PROJECTIONS", projections_dir())
            .env("ESHOST_CACHE_DIR", self.cache.path())
            .args(args);
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs with these variables set too.
    pub(crate) fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(vars.iter().copied());
        cmd.output().unwrap()
    }

    /// Starts with these variables set too; its output is piped.
    pub(crate) fn spawn_with(&self, args: &[&str], vars: &[(&str, &str)]) -> std::process::Child {
        let mut cmd = self.command(args);
        cmd.envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    }

    /// The working directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn events(&self, aggregate: &str, id: &str) -> Vec<serde_json::Value> {
        json_lines(&ok(self.run(&["events", aggregate, id])))
    }

    /// The compiled components in the cache (not their records).
    fn cache_entries(&self) -> Vec<PathBuf> {
        let mut entries: Vec<_> = std::fs::read_dir(self.cache.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.retain(|p: &PathBuf| p.extension().is_some_and(|ext| ext == "cwasm"));
        entries.sort();
        entries
    }
}

/// Asserts success and returns stdout.
pub(crate) fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Asserts the exit code and a one-line error; returns that line.
fn fails(output: Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    stderr
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn sqlite_by_default_in_an_empty_folder() {
    let ws = Workspace::new();
    let created = json_lines(&ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "s1",
        "CreateFlashSale",
        r#"{"initialStock":3}"#,
    ])));
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["name"], "FlashSaleCreated");
    assert_eq!(created[0]["sequence"], 1);
    assert!(
        ws.dir.path().join("eshost.db").exists(),
        "the default store is ./eshost.db"
    );

    // Payload as text, from a file, and from stdin.
    ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "s1",
        "PurchaseItem",
        r#"{"buyerId":"ann","quantity":1}"#,
    ]));
    std::fs::write(
        ws.dir.path().join("bob.json"),
        r#"{"buyerId":"bob","quantity":1}"#,
    )
    .unwrap();
    ok(ws.run(&["exec", FLASH_SALE, "s1", "PurchaseItem", "@bob.json"]));
    let rejected = json_lines(&ok(ws.run_with_stdin(
        &["exec", FLASH_SALE, "s1", "PurchaseItem", "-"],
        r#"{"buyerId":"cy","quantity":2}"#,
    )));
    // A recorded rejection is a success.
    assert_eq!(rejected[0]["name"], "PurchaseRejected");
    assert_eq!(rejected[0]["payload"]["reason"], "insufficient_stock");
    assert_eq!(rejected[0]["sequence"], 4);

    let events = ws.events(FLASH_SALE, "s1");
    let sequences: Vec<_> = events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    assert!(
        events[0]["metadata"]["componentDigest"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );

    let state: serde_json::Value =
        serde_json::from_str(&ok(ws.run(&["state", FLASH_SALE, "s1"]))).unwrap();
    // An aggregate never created has no state to show.
    let never = fails(ws.run(&["state", FLASH_SALE, "nobody"]), 1);
    assert!(
        never.contains("FlashSaleItem nobody has no events"),
        "{never}"
    );
    assert_eq!(state["stock"], 1);
    assert_eq!(state["sold"], 2);
    assert_eq!(state["buyers"], serde_json::json!(["ann", "bob"]));
}

/// A guest the host was never compiled against, in an otherwise empty
/// modules directory.
#[test]
fn a_second_guest_loads_without_rebuilding_the_host() {
    let modules = tempfile::tempdir().unwrap();
    std::fs::copy(
        modules_dir().join("bank-account.wasm"),
        modules.path().join("bank-account.wasm"),
    )
    .unwrap();
    let ws = Workspace::with_modules(modules.path().to_path_buf());

    let listing: serde_json::Value =
        serde_json::from_str(&ok(ws.run(&["aggregates", "--json"]))).unwrap();
    let listing = listing.as_array().unwrap();
    assert_eq!(listing.len(), 1);
    assert_eq!(listing[0]["name"], "BankAccount");
    assert_eq!(
        listing[0]["commands"],
        serde_json::json!(["OpenAccount", "Deposit", "Withdraw"])
    );
    assert_eq!(listing[0]["contract"], "0.3.0");
    assert_eq!(listing[0]["old_events"], serde_json::json!([]));
    assert!(
        listing[0]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(
        listing[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("bank-account.wasm")
    );

    ok(ws.run(&[
        "exec",
        "BankAccount",
        "acc-1",
        "OpenAccount",
        r#"{"owner":"ada"}"#,
    ]));
    ok(ws.run(&[
        "exec",
        "BankAccount",
        "acc-1",
        "Deposit",
        r#"{"amount":100}"#,
    ]));
    let declined = json_lines(&ok(ws.run(&[
        "exec",
        "BankAccount",
        "acc-1",
        "Withdraw",
        r#"{"amount":250}"#,
    ])));
    assert_eq!(declined[0]["name"], "WithdrawalDeclined");
    ok(ws.run(&[
        "exec",
        "BankAccount",
        "acc-1",
        "Withdraw",
        r#"{"amount":30}"#,
    ]));
    let state: serde_json::Value =
        serde_json::from_str(&ok(ws.run(&["state", "BankAccount", "acc-1"]))).unwrap();
    assert_eq!(state["balance"], 70);
    assert_eq!(state["owner"], "ada");

    // The flash sale is not in this directory.
    let error = fails(
        ws.run(&["exec", FLASH_SALE, "s1", "CreateFlashSale", "{}"]),
        1,
    );
    assert!(
        error.contains("unknown aggregate") && error.contains("BankAccount"),
        "{error}"
    );
}

#[test]
fn bad_input_fails_in_one_line_and_appends_nothing() {
    let ws = Workspace::new();
    ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "s1",
        "CreateFlashSale",
        r#"{"initialStock":3}"#,
    ]));

    let error = fails(ws.run(&["exec", "Nope", "s1", "CreateFlashSale", "{}"]), 1);
    assert!(error.contains("unknown aggregate \"Nope\""), "{error}");
    let error = fails(ws.run(&["exec", FLASH_SALE, "s1", "Refund", "{}"]), 1);
    assert!(error.contains("no command \"Refund\""), "{error}");
    let error = fails(
        ws.run(&["exec", FLASH_SALE, "s1", "PurchaseItem", "{buyerId:"]),
        1,
    );
    assert!(error.contains("not JSON the store can hold"), "{error}");
    let error = fails(
        ws.run(&["exec", FLASH_SALE, "s1", "PurchaseItem", "@missing.json"]),
        1,
    );
    assert!(error.contains("missing.json"), "{error}");
    let error = fails(
        ws.run(&[
            "exec",
            FLASH_SALE,
            "s1",
            "PurchaseItem",
            r#"{"buyerId":"a","quantity":0}"#,
        ]),
        1,
    );
    assert!(error.contains("quantity must be at least 1"), "{error}");
    let error = fails(
        ws.run(&[
            "exec",
            FLASH_SALE,
            "s1",
            "CreateFlashSale",
            r#"{"initialStock":9}"#,
        ]),
        1,
    );
    assert!(error.contains("already exists"), "{error}");

    assert_eq!(
        ws.events(FLASH_SALE, "s1").len(),
        1,
        "no command above appended anything"
    );
}

#[test]
fn a_garbage_module_is_named_and_nothing_runs() {
    let modules = tempfile::tempdir().unwrap();
    std::fs::copy(
        modules_dir().join("flash-sale.wasm"),
        modules.path().join("flash-sale.wasm"),
    )
    .unwrap();
    std::fs::write(
        modules.path().join("junk.wasm"),
        b"\0asm this is not a component",
    )
    .unwrap();
    let ws = Workspace::with_modules(modules.path().to_path_buf());

    let error = fails(
        ws.run(&[
            "exec",
            FLASH_SALE,
            "s1",
            "CreateFlashSale",
            r#"{"initialStock":3}"#,
        ]),
        3,
    );
    assert!(
        error.contains("junk.wasm") && error.contains("not a WebAssembly component"),
        "{error}"
    );
    assert!(
        !ws.dir.path().join("eshost.db").exists(),
        "the store was not even opened"
    );

    // Two components claiming one aggregate.
    std::fs::remove_file(modules.path().join("junk.wasm")).unwrap();
    std::fs::copy(
        modules_dir().join("flash-sale.wasm"),
        modules.path().join("flash-sale-copy.wasm"),
    )
    .unwrap();
    let error = fails(ws.run(&["aggregates"]), 3);
    assert!(error.contains("already provided by"), "{error}");
}

#[test]
fn a_corrupt_cache_entry_is_detected_and_rebuilt() {
    let ws = Workspace::new();
    ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "s1",
        "CreateFlashSale",
        r#"{"initialStock":3}"#,
    ]));
    let entries = ws.cache_entries();
    assert_eq!(
        entries.len(),
        2,
        "one compiled entry per module: {entries:?}"
    );
    let entry = entries
        .iter()
        .find(|p| is_entry_for(p, "flash-sale.wasm"))
        .unwrap()
        .clone();
    let good = std::fs::read(&entry).unwrap();

    // Truncated, bit-flipped, and foreign: each is caught before wasmtime maps it.
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    for (what, bytes) in [
        ("truncated", good[..good.len() / 3].to_vec()),
        ("bit flip", flipped),
        ("foreign", b"definitely not a compiled component".to_vec()),
    ] {
        std::fs::write(&entry, &bytes).unwrap();
        let output = ws.run(&[
            "exec",
            FLASH_SALE,
            "s1",
            "PurchaseItem",
            r#"{"buyerId":"b","quantity":1}"#,
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        ok(output);
        assert!(
            stderr.contains("rebuilding cache entry"),
            "{what}: {stderr}"
        );
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            good,
            "{what}: entry rewritten"
        );
    }
    assert_eq!(ws.events(FLASH_SALE, "s1").len(), 4);
}

fn is_entry_for(entry: &Path, module: &str) -> bool {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(
        std::fs::read(modules_dir().join(module)).unwrap(),
    ));
    entry
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&digest)
}

#[test]
fn guest_logs_and_panics_reach_the_host_tagged_with_the_aggregate() {
    let ws = Workspace::with_modules(build_dir().join("fixtures"));
    let output = ws
        .command(&["exec", "Hostile", "h1", "Log"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    ok(output);
    let line = stderr
        .lines()
        .find(|l| l.contains("hello from inside the sandbox"))
        .unwrap_or_else(|| panic!("the guest's log line is missing: {stderr}"));
    assert!(line.contains("INFO") && line.contains("Hostile"), "{line}");

    let error = fails(ws.run(&["exec", "Hostile", "h1", "Panic"]), 3);
    assert!(
        error.contains("panicked at") && error.contains("on purpose"),
        "{error}"
    );
    assert_eq!(ws.events("Hostile", "h1").len(), 1);
}

#[test]
fn help_documents_exit_codes_and_examples() {
    let ws = Workspace::new();
    let help = ok(ws.run(&["--help"]));
    assert!(help.contains("Exit codes"), "{help}");
    assert!(
        help.contains("sqlite://eshost.db"),
        "default store shown: {help}"
    );
    for sub in [
        &["aggregates"][..],
        &["exec"],
        &["events"],
        &["state"],
        &["migrate"],
        &["test"],
        &["bench"],
        &["demo", "flash-sale"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let help = ok(ws.run(&args));
        assert!(
            help.contains("Example"),
            "{sub:?} --help has no example: {help}"
        );
    }
    let usage = ws.run(&["exec", FLASH_SALE]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn migrate_creates_the_store() {
    let ws = Workspace::new();
    ok(ws.run(&["migrate", "--database-url", "sqlite://other.db"]));
    assert!(ws.dir.path().join("other.db").exists());
}

#[tokio::test]
async fn demo_flash_sale_json_on_postgres() {
    let db = TestDb::postgres().await;
    let ws = Workspace::new();
    let output = ws.run(&["demo", "flash-sale", "--json", "--database-url", &db.url]);
    let stdout = ok(output);
    // Exactly one JSON object on stdout.
    assert_eq!(stdout.trim().lines().count(), 1);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["purchased"], 5);
    assert_eq!(report["rejected"], 3);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["stock_remaining"], 0);
    assert_eq!(report["sold"], 5);
    assert_eq!(report["events"], 9);
    assert!(report["retries"].is_u64());
    db.cleanup().await;
}

#[test]
fn demo_on_the_default_sqlite_store() {
    let ws = Workspace::new();
    let report: serde_json::Value =
        serde_json::from_str(ok(ws.run(&["demo", "flash-sale", "--json"])).trim()).unwrap();
    assert_eq!(
        (report["purchased"].as_u64(), report["rejected"].as_u64()),
        (Some(5), Some(3))
    );
}

#[test]
fn an_unreachable_store_is_a_one_line_failure() {
    let ws = Workspace::new();
    let error = fails(
        ws.run(&[
            "state",
            FLASH_SALE,
            "s1",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ]),
        3,
    );
    assert!(error.contains("database error"), "{error}");
}

/// `eshost bench` runs and reports both modes (correctness only: speed is for
/// the benchmark's own output, never a test's assertion).
#[test]
fn bench_sample_reports_both_modes_as_json_lines() {
    let ws = Workspace::new();
    let stdout = ok(ws.run(&["bench", "--scenario", "sample", "--json"]));
    let lines = json_lines(&stdout);
    let modes: Vec<_> = lines.iter().map(|l| l["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["queued", "optimistic"]);
    for line in &lines {
        assert_eq!(line["scenario"], "sample");
        assert_eq!(line["commands"], 8);
        assert_eq!(line["failed"], 0, "{line}");
        assert_eq!(line["oversold"], false, "{line}");
        assert!(
            line["baseline_inserts_per_s"].as_f64().unwrap() > 0.0,
            "{line}"
        );
    }
}

/// The HTTP scenario drives a real server over sockets: every command is
/// answered, none fails, nothing is oversold, and batching shows.
#[test]
fn bench_over_http_answers_every_command() {
    let ws = Workspace::new();
    let args = [
        "bench",
        "--scenario",
        "http-hot-item",
        "--callers",
        "32",
        "--rounds",
        "2",
        "--json",
    ];
    let lines = json_lines(&ok(ws.run(&args)));
    let modes: Vec<_> = lines.iter().map(|l| l["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["queued", "http", "queued", "http"]);
    let rounds: Vec<_> = lines.iter().map(|l| l["round"].as_u64().unwrap()).collect();
    assert_eq!(rounds, [1, 1, 2, 2]);
    for line in &lines {
        // The machine's CPU while the commands ran (this is Linux).
        let busy = line["cpu_busy_share"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&busy), "{line}");
        assert!(line["cpu_us_per_command"].as_f64().unwrap() > 0.0, "{line}");
        // Only callers over sockets have a thread of their own to measure.
        let client = &line["client_cpu_us_per_command"];
        assert_eq!(client.is_f64(), line["mode"] == "http", "{line}");
        assert_eq!(line["commands"], 2000, "{line}");
        assert_eq!(line["failed"], 0, "{line}");
        assert_eq!(line["oversold"], false, "{line}");
        let per_append = line["commands_per_append"].as_f64().unwrap();
        let per_commit = line["commands_per_commit"].as_f64().unwrap();
        assert!(per_append >= 1.0, "{line}");
        assert!(
            per_commit >= per_append,
            "a commit holds whole appends: {line}"
        );
    }
}

/// `eshost exec` twice with one `--command-id` appends once and prints the
/// same events both times.
fn exec_twice_with_one_command_id(database_url: &str) {
    let ws = Workspace::new();
    let db = ["--database-url", database_url];
    let exec = |args: &[&str]| ok(ws.run(&[&db[..], &["exec", "FlashSaleItem"], args].concat()));
    exec(&["s1", "CreateFlashSale", r#"{"initialStock":1}"#]);
    let buy = [
        "s1",
        "PurchaseItem",
        r#"{"buyerId":"ann","quantity":1}"#,
        "--command-id",
        "order-42",
    ];
    let first = ws.run(&[&db[..], &["exec", "FlashSaleItem"], &buy[..]].concat());
    let second = ws.run(&[&db[..], &["exec", "FlashSaleItem"], &buy[..]].concat());
    let replay_notice = "command id order-42 was already recorded: nothing appended";
    assert!(!String::from_utf8_lossy(&first.stderr).contains(replay_notice));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains(replay_notice),
        "{second:?}"
    );
    let (first, second) = (ok(first), ok(second));
    assert_eq!(json_lines(&first)[0]["name"], "ItemPurchased");
    assert_eq!(first, second);
    let events = json_lines(&ok(
        ws.run(&[&db[..], &["events", "FlashSaleItem", "s1"]].concat())
    ));
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["metadata"]["commandId"], "order-42");
    // The same id for a different command is refused, in one line.
    let reused = [
        "s1",
        "PurchaseItem",
        r#"{"buyerId":"bob","quantity":1}"#,
        "--command-id",
        "order-42",
    ];
    let line = fails(
        ws.run(&[&db[..], &["exec", "FlashSaleItem"], &reused[..]].concat()),
        1,
    );
    assert!(
        line.contains("command id \"order-42\" was already used for a different command"),
        "{line}"
    );
}

#[test]
fn exec_with_a_repeated_command_id_on_sqlite() {
    exec_twice_with_one_command_id("sqlite://events.db");
}

#[tokio::test]
async fn exec_with_a_repeated_command_id_on_postgres() {
    let db = TestDb::postgres().await;
    exec_twice_with_one_command_id(&db.url);
    db.cleanup().await;
}

/// Twenty one-command processes with `--snapshot-every 1`, in the default
/// queued mode: each drains before it exits, so each leaves its snapshot and
/// the latest is at version 20.
async fn exec_runs_leave_their_snapshots(database_url: &str) {
    let ws = Workspace::new();
    let exec = |args: &[&str]| {
        let global = ["--database-url", database_url, "--snapshot-every", "1"];
        ok(ws.run(&[&global[..], &["exec", FLASH_SALE, "snap-1"], args].concat()))
    };
    exec(&["CreateFlashSale", r#"{"initialStock":100}"#]);
    for n in 1..20 {
        exec(&[
            "PurchaseItem",
            &format!(r#"{{"buyerId":"b{n}","quantity":1}}"#),
        ]);
    }
    let store = eshost::store::open(database_url).await.unwrap();
    let digest = modules().get(FLASH_SALE).unwrap().digest.clone();
    let stream = eshost::StreamId::new(FLASH_SALE, "snap-1");
    let latest = store
        .streams()
        .load_snapshot(&stream, &digest)
        .await
        .unwrap();
    assert_eq!(latest.map(|s| s.version), Some(20));
}

#[tokio::test]
async fn exec_runs_leave_their_snapshots_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("events.db").display());
    exec_runs_leave_their_snapshots(&url).await;
}

#[tokio::test]
async fn exec_runs_leave_their_snapshots_on_postgres() {
    let db = TestDb::postgres().await;
    exec_runs_leave_their_snapshots(&db.url).await;
    db.cleanup().await;
}

/// A command whose outcome is unknown names its id on the error line, so it
/// can be resent; with no id given, the one the command line made up.
#[test]
fn an_unknown_outcome_names_the_command_id() {
    let ws = Workspace::new();
    // Nothing listens on port 1: the command cannot have been recorded, but
    // the client cannot know that in general.
    let purchase = r#"{"buyerId":"ann","quantity":1}"#;
    let error = fails(
        ws.run(&[
            "exec",
            FLASH_SALE,
            "s1",
            "PurchaseItem",
            purchase,
            "--command-id",
            "order-77",
            "--server",
            "http://127.0.0.1:1",
        ]),
        3,
    );
    assert!(
        error.contains("resend with --command-id order-77"),
        "{error}"
    );
    let error = fails(
        ws.run(&[
            "exec",
            FLASH_SALE,
            "s1",
            "PurchaseItem",
            purchase,
            "--server",
            "http://127.0.0.1:1",
        ]),
        3,
    );
    let id = error
        .split("resend with --command-id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id in {error}"));
    assert_eq!(uuid::Uuid::parse_str(id).map(|_| ()), Ok(()), "{error}");
}

/// [`append_raw`] into the workspace's default SQLite store.
async fn append_raw_to(ws: &Workspace, id: &str, version: u64, events: Vec<(&str, String)>) {
    let url = format!("sqlite://{}", ws.dir.path().join("eshost.db").display());
    let store = eshost::store::open(&url).await.unwrap();
    append_raw(store.as_ref(), id, version, events).await;
}

/// `events` prints a stream longer than a page whole, in order.
#[tokio::test]
async fn events_prints_a_stream_of_many_pages() {
    let ws = Workspace::new();
    ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "long",
        "CreateFlashSale",
        r#"{"initialStock":1}"#,
    ]));
    let rejected = |n: u64| format!(r#"{{"buyerId":"b{n}","reason":"out_of_stock"}}"#);
    let count = eshost::dispatch::REPLAY_PAGE * 2 + 500;
    append_raw_to(
        &ws,
        "long",
        1,
        (0..count)
            .map(|n| ("PurchaseRejected", rejected(n)))
            .collect(),
    )
    .await;
    let events = ws.events(FLASH_SALE, "long");
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=count + 1).collect::<Vec<_>>());
}

/// A stream the loaded version cannot replay: exit 5, the event named, and
/// no advice to resend.
#[tokio::test]
async fn an_unreplayable_stream_exits_5_naming_the_event() {
    let ws = Workspace::new();
    ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "s1",
        "CreateFlashSale",
        r#"{"initialStock":5}"#,
    ]));
    append_raw_to(
        &ws,
        "s1",
        1,
        vec![("ItemBought", r#"{"buyerId":"a","quantity":1}"#.into())],
    )
    .await;
    for args in [
        vec!["state", FLASH_SALE, "s1"],
        vec![
            "exec",
            FLASH_SALE,
            "s1",
            "PurchaseItem",
            r#"{"buyerId":"b","quantity":1}"#,
        ],
    ] {
        let error = fails(ws.run(&args), 5);
        assert!(
            error.contains(
                "FlashSaleItem s1 cannot be loaded by FlashSaleItem 0.1.0: event 2 (ItemBought)"
            ),
            "{error}"
        );
        assert!(!error.contains("resend"), "{error}");
    }
}

/// `upgrade check` through the binary: a version that renamed an event
/// fails (exit 1), the report on stdout naming the stream and the event; a
/// compatible one passes (exit 0) with its state change shown.
#[test]
fn upgrade_check_reports_and_exits_by_its_verdict() {
    let ws = Workspace::new();
    ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "s1",
        "CreateFlashSale",
        r#"{"initialStock":5}"#,
    ]));
    ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "s1",
        "PurchaseItem",
        r#"{"buyerId":"a","quantity":1}"#,
    ]));
    let renamed = upgrade_fixture("flash-sale-renamed.wasm");
    let output = ws.run(&["upgrade", "check", renamed.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("FAILED  s1: FlashSaleItem s1 cannot be loaded by FlashSaleItem 0.2.0: event 2 (ItemPurchased)"),
        "{stdout}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("upgrade check failed"), "{stderr}");

    let v2 = upgrade_fixture("flash-sale-v2.wasm");
    let report: serde_json::Value = serde_json::from_str(&ok(ws.run(&[
        "upgrade",
        "check",
        v2.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["changed"][0]["patch"][0]["path"], "/rejections");
}

/// Once the schema is current, a command opens the store without running
/// the migrator: no "already exists" notice, even at `info`, and the first
/// run (which migrates) still works.
#[tokio::test]
async fn a_current_schema_is_not_migrated_again() {
    let db = TestDb::postgres().await;
    let ws = Workspace::new();
    let run = |args: &[&str]| {
        let mut cmd = ws.command(&[&["--database-url", db.url.as_str()], args].concat());
        cmd.env("RUST_LOG", "info").output().unwrap()
    };
    ok(run(&[
        "exec",
        FLASH_SALE,
        "s1",
        "CreateFlashSale",
        r#"{"initialStock":1}"#,
    ]));
    let second = run(&["state", FLASH_SALE, "s1"]);
    let stderr = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(second.status.success(), "{stderr}");
    assert!(!stderr.contains("already exists"), "{stderr}");
    db.cleanup().await;
}

/// Every `exec` failure names the command's id, generated or not, and
/// `--json` prints it with the outcome: a caller can always resend.
#[test]
fn exec_always_names_the_command_id() {
    let ws = Workspace::new();
    // Creating the same sale, with extra flags: `--json`'s object.
    let create = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "exec",
            FLASH_SALE,
            "s1",
            "CreateFlashSale",
            r#"{"initialStock":1}"#,
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(ws.run(&args))).unwrap()
    };
    let answer = create(&[]);
    let id = answer["command_id"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).map(|_| ()), Ok(()), "{answer}");
    assert_eq!(
        (
            answer["replayed"].as_bool(),
            answer["events"][0]["sequence"].as_u64()
        ),
        (Some(false), Some(1))
    );
    let again = create(&["--command-id", &id]);
    assert_eq!(again["replayed"], true);

    // Refused (exit 1): the generated id is on the error line, with no
    // advice to resend.
    let refused = fails(
        ws.run(&[
            "exec",
            FLASH_SALE,
            "s1",
            "CreateFlashSale",
            r#"{"initialStock":1}"#,
        ]),
        1,
    );
    let named = refused.rsplit("; command id ").next().unwrap_or_default();
    assert_eq!(
        uuid::Uuid::parse_str(named).map(|_| ()),
        Ok(()),
        "{refused}"
    );
    assert!(!refused.contains("resend"), "{refused}");
}

#[test]
fn events_all_prints_the_global_log_in_order_filtered_and_from_a_position() {
    let ws = Workspace::new();
    let create = r#"{"initialStock":3}"#;
    ok(ws.run(&["exec", FLASH_SALE, "s1", "CreateFlashSale", create]));
    ok(ws.run(&[
        "exec",
        "BankAccount",
        "a1",
        "OpenAccount",
        r#"{"owner":"ann"}"#,
    ]));
    ok(ws.run(&["exec", FLASH_SALE, "s2", "CreateFlashSale", create]));
    let all = json_lines(&ok(ws.run(&["events", "--all"])));
    let streams: Vec<_> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(streams, ["s1", "a1", "s2"]);
    let first = all[0]["position"].as_i64().unwrap().to_string();
    let rest = json_lines(&ok(ws.run(&[
        "events",
        "--all",
        "--from",
        &first,
        "--aggregate",
        FLASH_SALE,
    ])));
    assert_eq!(rest, [all[2].clone()]);
    // --all's options mean nothing for one stream, and a stream needs both names.
    for usage in [
        &["events", "--from", "1", FLASH_SALE, "s1"][..],
        &["events", "--all", FLASH_SALE, "s1"],
        &["events", FLASH_SALE],
    ] {
        let output = ws.run(usage);
        assert_eq!(output.status.code(), Some(2), "{usage:?}");
        assert!(output.stdout.is_empty(), "{usage:?}");
    }
}

#[test]
fn projections_run_show_their_views_and_rebuild() {
    let ws = Workspace::new();
    let buy = |buyer: &str| format!(r#"{{"buyerId":"{buyer}","quantity":2}}"#);
    ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "s1",
        "CreateFlashSale",
        r#"{"initialStock":3}"#,
    ]));
    ok(ws.run(&["exec", FLASH_SALE, "s1", "PurchaseItem", &buy("b1")]));
    ok(ws.run(&["exec", FLASH_SALE, "s1", "PurchaseItem", &buy("b2")]));
    ok(ws.run(&["projection", "run", "--once"]));

    let item: serde_json::Value =
        serde_json::from_str(&ok(ws.run(&["view", "sales-summary", "item:s1"]))).unwrap();
    assert_eq!(
        (
            &item["stock"],
            &item["sold"],
            &item["buyers"],
            &item["rejected"]
        ),
        (&1.into(), &2.into(), &1.into(), &1.into()),
        "{item}"
    );
    let all = json_lines(&ok(ws.run(&["view", "sales-summary", "--all"])));
    let keys: Vec<_> = all.iter().map(|d| d["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["item:s1", "total"]);
    // b2's purchase was refused (too few left): b1 is the latest buyer.
    assert_eq!(all[0]["document"]["lastBuyer"], "b1");
    assert_eq!(all[1]["document"]["sold"], 2);

    let listed = |ws: &Workspace| -> serde_json::Value {
        serde_json::from_str(&ok(ws.run(&["projections", "--json"]))).unwrap()
    };
    let before = listed(&ws);
    assert_eq!(
        (
            &before[0]["name"],
            &before[0]["status"],
            &before[0]["lag"],
            &before[0]["generation"]
        ),
        (&"sales-summary".into(), &"ok".into(), &0.into(), &1.into()),
        "{before}"
    );
    ok(ws.run(&[
        "exec",
        FLASH_SALE,
        "s2",
        "CreateFlashSale",
        r#"{"initialStock":1}"#,
    ]));
    assert_eq!(listed(&ws)[0]["lag"], 1);

    ok(ws.run(&["projection", "rebuild", "sales-summary"]));
    let after = listed(&ws);
    assert_eq!(
        (&after[0]["generation"], &after[0]["lag"]),
        (&2.into(), &0.into()),
        "{after}"
    );
    let total: serde_json::Value =
        serde_json::from_str(&ok(ws.run(&["view", "sales-summary", "total"]))).unwrap();
    assert_eq!(
        (&total["sold"], &total["items"]),
        (&2.into(), &2.into()),
        "{total}"
    );

    let missing = fails(ws.run(&["view", "sales-summary", "item:nope"]), 1);
    assert!(missing.contains("item:nope"), "{missing}");
    let unknown = fails(ws.run(&["projection", "run", "nope"]), 1);
    assert!(unknown.contains("sales-summary"), "{unknown}");
    assert_eq!(ws.run(&["view", "sales-summary"]).status.code(), Some(2));
}
