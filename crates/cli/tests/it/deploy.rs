//! What `eshost serve` serves is what the store has deployed: the modules
//! directory only seeds it, through the upgrade check, and a version the
//! check refused is never served, not even by a restart.

use crate::util::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `eshost serve` on `db` with the modules directory `dir`, its stderr
/// collected as it comes; killed on drop.
struct Served {
    process: Option<Child>,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    fn start(db: &TestDb, dir: &std::path::Path, cache: &std::path::Path) -> Self {
        Self::spawn(db, dir, cache, None)
    }

    /// Also running the projections deployed in the store, seeded from
    /// `projections`.
    fn running_projections(
        db: &TestDb,
        dir: &std::path::Path,
        cache: &std::path::Path,
        projections: &std::path::Path,
    ) -> Self {
        Self::spawn(db, dir, cache, Some(projections))
    }

    fn spawn(
        db: &TestDb,
        dir: &std::path::Path,
        cache: &std::path::Path,
        projections: Option<&std::path::Path>,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_eshost"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &db.url)
            .env("ESHOST_MODULES", dir)
            .env("ESHOST_CACHE_DIR", cache)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(projections) = projections {
            command
                .arg("--run-projections")
                .env("ESHOST_PROJECTIONS", projections);
        }
        let mut process = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(process.stderr.take().unwrap());
        let collected = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let base = listening_address(&mut process);
        Self {
            process: Some(process),
            base,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The lines of stderr so far that contain `text`.
    fn lines_with(&self, text: &str) -> Vec<String> {
        let all = self.stderr.lock().unwrap();
        all.lines()
            .filter(|line| line.contains(text))
            .map(str::to_string)
            .collect()
    }

    async fn aggregates(&self) -> Value {
        reqwest::get(self.url("/v1/aggregates"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Stops the server with SIGTERM and waits for a clean exit.
    async fn stop(mut self) {
        let mut process = self.process.take().unwrap();
        let status =
            tokio::task::spawn_blocking(move || terminate(&mut process, Duration::from_secs(30)))
                .await
                .unwrap();
        assert_eq!(status.code(), Some(0));
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

async fn post(server: &Served, id: &str, command: &str, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url(&format!(
            "/v1/aggregates/FlashSaleItem/{id}/commands/{command}"
        )))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// An incompatible version dropped into the served directory is refused
/// once, and stays refused: the restarted server still serves the version
/// that passed the check (from the store, its file gone) on every stream,
/// shows the refusal with its digest, and logs it once, not a stream of
/// times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_version_stays_refused_across_a_restart() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let original = std::fs::read(modules_dir().join("flash-sale.wasm")).unwrap();
    drop_in(dir.path(), "flash-sale.wasm", &original);
    let server = Served::start(&db, dir.path(), cache.path());
    let streams: Vec<String> = (0..5).map(|n| format!("item-{n}")).collect();
    for id in &streams {
        let created = post(&server, id, "CreateFlashSale", r#"{"initialStock":5}"#).await;
        assert_eq!(created.status(), 200);
        let bought = post(
            &server,
            id,
            "PurchaseItem",
            r#"{"buyerId":"ann","quantity":2}"#,
        )
        .await;
        assert_eq!(bought.status(), 200);
    }
    let served = server.aggregates().await;
    let live_digest = served[0]["digest"].clone();

    // It renames ItemPurchased: the recorded streams do not replay with it.
    let renamed = std::fs::read(upgrade_fixture("flash-sale-renamed.wasm")).unwrap();
    drop_in(dir.path(), "flash-sale.wasm", &renamed);
    let listed = poll("the refusal to be shown", async || {
        let listed = server.aggregates().await;
        listed[0].get("refused").is_some().then_some(listed)
    })
    .await;
    assert_eq!(listed[0]["digest"], live_digest, "{listed}");
    // A while later, still one refusal: no re-check loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refusals = server.lines_with("not switched in");
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    server.stop().await;

    let restarted = Served::start(&db, dir.path(), cache.path());
    let listed = restarted.aggregates().await;
    assert_eq!(listed[0]["version"], "0.1.0", "{listed}");
    assert_eq!(listed[0]["digest"], live_digest, "{listed}");
    assert_eq!(listed[0]["refused"]["version"], "0.2.0", "{listed}");
    for id in &streams {
        let state: Value =
            reqwest::get(restarted.url(&format!("/v1/aggregates/FlashSaleItem/{id}")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(state["version"], 2, "{id}: {state}");
        let bought = post(
            &restarted,
            id,
            "PurchaseItem",
            r#"{"buyerId":"bob","quantity":1}"#,
        )
        .await;
        assert_eq!(bought.status(), 200, "{id}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refusals = restarted.lines_with("not switched in");
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    restarted.stop().await;
    db.cleanup().await;
}

/// `eshost` with the test's store and cache, for a one-shot subcommand.
fn eshost(db: &TestDb, cache: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eshost"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("ESHOST_CACHE_DIR", cache)
        .env_remove("ESHOST_SERVER")
        .output()
        .unwrap()
}

/// `eshost deploy` through a server refuses an incompatible version (exit
/// 1, the check's reason) and deploys a compatible one; `eshost
/// deployments` lists the steps; `eshost rollback` without a server
/// records the rollback in the store, and the server follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eshost_deploy_and_rollback_with_or_without_a_server() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let original = std::fs::read(modules_dir().join("flash-sale.wasm")).unwrap();
    drop_in(dir.path(), "flash-sale.wasm", &original);
    let server = Served::start(&db, dir.path(), cache.path());
    let created = post(&server, "s1", "CreateFlashSale", r#"{"initialStock":5}"#).await;
    assert_eq!(created.status(), 200);
    let bought = post(
        &server,
        "s1",
        "PurchaseItem",
        r#"{"buyerId":"ann","quantity":1}"#,
    )
    .await;
    assert_eq!(bought.status(), 200);
    let fixture = |name: &str| upgrade_fixture(name).display().to_string();

    let refused = eshost(
        &db,
        cache.path(),
        &[
            "deploy",
            &fixture("flash-sale-renamed.wasm"),
            "--server",
            &server.base,
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not deployed: upgrade check failed"),
        "{stderr}"
    );
    assert!(stderr.contains("event 2 (ItemPurchased)"), "{stderr}");

    let deployed = eshost(
        &db,
        cache.path(),
        &[
            "deploy",
            &fixture("flash-sale-v2.wasm"),
            "--server",
            &server.base,
        ],
    );
    let stdout = String::from_utf8_lossy(&deployed.stdout);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert!(
        stdout.starts_with("deployed FlashSaleItem 0.2.0"),
        "{stdout}"
    );
    assert_eq!(server.aggregates().await[0]["version"], "0.2.0");

    let listed = eshost(&db, cache.path(), &["deployments", "FlashSaleItem"]);
    let lines = String::from_utf8_lossy(&listed.stdout);
    let actions: Vec<&str> = lines
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(actions, ["deployed", "refused", "seeded"], "{lines}");

    let rolled = eshost(&db, cache.path(), &["rollback", "FlashSaleItem"]);
    assert!(
        rolled.status.success(),
        "{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    assert!(String::from_utf8_lossy(&rolled.stdout).starts_with("rolled_back FlashSaleItem 0.1.0"));
    poll("the server to follow the rollback", async || {
        (server.aggregates().await[0]["version"] == "0.1.0").then_some(())
    })
    .await;
    server.stop().await;
    db.cleanup().await;
}

/// A projection deployed with `eshost deploy` (straight into the store, or
/// through the server) runs on a server started with an empty projections
/// directory, within seconds; `eshost rollback --projection` brings the
/// earlier version back; `eshost deployments --projection` lists the steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_deployed_with_eshost_deploy_runs_on_the_server() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let projections = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let original = std::fs::read(modules_dir().join("flash-sale.wasm")).unwrap();
    drop_in(dir.path(), "flash-sale.wasm", &original);
    let server = Served::running_projections(&db, dir.path(), cache.path(), projections.path());
    let created = post(&server, "s1", "CreateFlashSale", r#"{"initialStock":5}"#).await;
    assert_eq!(created.status(), 200);
    let client = reqwest::Client::new();
    let status_of = async || -> Value {
        let listed: Value = client
            .get(server.url("/v1/projections"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listed[0].clone()
    };
    let succeeded = |output: &std::process::Output| {
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };

    let first = projections_dir().join("sales-summary.wasm");
    let started = std::time::Instant::now();
    let stdout = succeeded(&eshost(
        &db,
        cache.path(),
        &["deploy", &first.display().to_string()],
    ));
    assert!(stdout.starts_with("deployed sales-summary"), "{stdout}");
    poll("the server to run the deployed projection", async || {
        let view = client
            .get(server.url("/v1/views/sales-summary/item:s1"))
            .send()
            .await
            .unwrap();
        (view.status() == 200).then_some(())
    })
    .await;
    println!(
        "eshost deploy to the view written by the server: {} ms",
        started.elapsed().as_millis()
    );

    let second = new_version(&std::fs::read(&first).unwrap(), "second");
    let second_file = cache.path().join("sales-summary-2.wasm");
    std::fs::write(&second_file, &second).unwrap();
    let stdout = succeeded(&eshost(
        &db,
        cache.path(),
        &[
            "deploy",
            &second_file.display().to_string(),
            "--server",
            &server.base,
        ],
    ));
    assert!(stdout.starts_with("deployed sales-summary"), "{stdout}");
    let second_digest = stdout
        .split(['(', ')'])
        .nth(1)
        .unwrap_or_default()
        .to_string();
    poll("the server to run the second version", async || {
        (status_of().await["digest"] == second_digest.as_str()).then_some(())
    })
    .await;

    let stdout = succeeded(&eshost(
        &db,
        cache.path(),
        &[
            "rollback",
            "--projection",
            "sales-summary",
            "--server",
            &server.base,
        ],
    ));
    assert!(stdout.starts_with("rolled_back sales-summary"), "{stdout}");
    poll("the server to run the first version again", async || {
        let digest = status_of().await["digest"].clone();
        (digest != second_digest.as_str() && digest.is_string()).then_some(())
    })
    .await;
    let listed = succeeded(&eshost(
        &db,
        cache.path(),
        &["deployments", "--projection", "sales-summary"],
    ));
    let actions: Vec<&str> = listed
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(actions, ["rolled_back", "deployed", "deployed"], "{listed}");
    server.stop().await;
    db.cleanup().await;
}

/// `eshost deploy` reads that a file is a reactor and deploys it, through
/// a server or straight to the store; `eshost deployments --reactor` lists
/// the steps and `eshost rollback --reactor` goes back one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_is_deployed_and_rolled_back_with_the_command_line() {
    let db = TestDb::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let original = std::fs::read(modules_dir().join("flash-sale.wasm")).unwrap();
    drop_in(dir.path(), "flash-sale.wasm", &original);
    let server = Served::start(&db, dir.path(), cache.path());
    let run = |args: &[&str]| {
        let output = eshost(&db, cache.path(), args);
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        (output.status.code(), stdout, stderr)
    };
    let first = reactors_dir().join("checkout.wasm").display().to_string();
    let strict = reactor_fixture("checkout-strict.wasm")
        .display()
        .to_string();

    let (code, stdout, stderr) = run(&["deploy", &first, "--server", &server.base]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("deployed checkout"), "{stdout}");
    let (code, stdout, stderr) = run(&["deploy", &strict]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("deployed checkout 0.0.1"), "{stdout}");
    let (code, stdout, stderr) = run(&[
        "rollback",
        "--reactor",
        "checkout",
        "--server",
        &server.base,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("rolled_back checkout"), "{stdout}");

    let (code, stdout, stderr) = run(&["deployments", "--reactor", "checkout"]);
    assert_eq!(code, Some(0), "{stderr}");
    let actions: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    assert_eq!(actions, ["rolled_back", "deployed", "deployed"], "{stdout}");
    let (code, _, stderr) = run(&["rollback", "--reactor", "--projection", "checkout"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    db.cleanup().await;
}
