//! `eshost reactor run` as a real process, on PostgreSQL, with a sinks
//! file and a sink on loopback: an order placed is bought and reserved by
//! the checkout reactor; the runner is SIGKILLed while a payment timer is
//! running; the order paid meanwhile and the timer that fell due while no
//! runner ran are both handled by the next runner: the confirmation is
//! delivered once, the unpaid order is cancelled and its stock released.

use crate::util::*;
use eshost::dispatch::{CommandRequest, Host};
use eshost_bench::checkout::CountingSink;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The unpaid order's payment window.
const UNPAID_WINDOW_MS: u64 = 4_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timer_due_while_no_runner_ran_fires_when_one_comes_back() {
    let db = TestDb::postgres().await;
    let host = db.checkout_host().await;
    let stop = CancellationToken::new();
    // No first try fails here: this test is about the timer.
    let sink = CountingSink::new(None);
    let url = sink.start(stop.clone()).await.unwrap();
    let config = tempfile::tempdir().unwrap();
    let sinks = config.path().join("sinks.toml");
    std::fs::write(
        &sinks,
        format!("[confirmations]\nurl = \"{url}\"\nheaders = {{ Authorization = \"Bearer ${{SINK_TOKEN}}\" }}\n"),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runner = || {
        let child = Command::new(env!("CARGO_BIN_EXE_eshost"))
            .args(["--database-url", &db.url, "reactor", "run", "--no-watch"])
            .env("ESHOST_MODULES", checkout_dir())
            .env("ESHOST_REACTORS", reactors_dir())
            .env("ESHOST_SINKS", &sinks)
            .env("SINK_TOKEN", "t0ken")
            .env("ESHOST_CACHE_DIR", cache.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        KilledOnDrop::new(child)
    };

    execute(
        &host,
        "FlashSaleItem",
        "s1",
        "CreateFlashSale",
        json!({"initialStock": 2}),
    )
    .await;
    let mut first = runner();
    // Placed once the runner runs, so that the unpaid order is reserved
    // well before its window closes.
    poll("the runner to start", async || {
        let reactors = host.store().reactions().reactors().await.unwrap();
        (!reactors.is_empty()).then_some(())
    })
    .await;
    let placed = std::time::Instant::now();
    for (order, window) in [("paid", 600_000), ("unpaid", UNPAID_WINDOW_MS)] {
        execute(
            &host,
            "Order",
            order,
            "PlaceOrder",
            json!({"itemId": "s1", "buyerId": order, "quantity": 1, "payWithinMs": window}),
        )
        .await;
    }
    for order in ["paid", "unpaid"] {
        poll_status(&host, order, "reserved").await;
    }
    first.kill().unwrap();
    first.wait().unwrap();

    // While no runner runs: the buyer pays, and the unpaid order's window
    // closes.
    execute(&host, "Order", "paid", "PayOrder", json!({})).await;
    let closed = Duration::from_millis(UNPAID_WINDOW_MS + 200);
    tokio::time::sleep(closed.saturating_sub(placed.elapsed())).await;
    assert_eq!(status(&host, "unpaid").await, "reserved");
    assert_eq!(sink.counts(), (0, 0));

    let mut second = runner();
    poll_status(&host, "unpaid", "cancelled").await;
    poll("the stock to be released", async || {
        let item = host.state("FlashSaleItem", "s1").await.unwrap();
        (item["stock"] == 1 && item["sold"] == 1).then_some(())
    })
    .await;
    poll("the confirmation to be delivered", async || {
        (sink.counts().0 == 1).then_some(())
    })
    .await;
    assert_eq!(status(&host, "paid").await, "confirmed");

    // What `eshost reactors` shows: nothing parked, no timer left.
    poll("the reactor to have nothing left", async || {
        let output = Command::new(env!("CARGO_BIN_EXE_eshost"))
            .args(["--database-url", &db.url, "reactors", "--json"])
            .env("ESHOST_REACTORS", reactors_dir())
            .env("ESHOST_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let lines: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let checkout = &lines[0];
        assert_eq!(checkout["name"], "checkout", "{lines}");
        assert_eq!(checkout["parked"], 0, "{lines}");
        (checkout["timers"] == 0 && checkout["lag"] == 0).then_some(())
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    // Each delivery once: one key, one try.
    assert_eq!(sink.counts(), (1, 1));
    stop.cancel();
    db.cleanup().await;
}

async fn execute(
    host: &Host,
    aggregate: &str,
    id: &str,
    command: &str,
    payload: serde_json::Value,
) {
    host.execute(&CommandRequest::new(
        aggregate,
        id,
        command,
        payload.to_string(),
    ))
    .await
    .unwrap_or_else(|e| panic!("{aggregate} {id} {command}: {e}"));
}

async fn status(host: &Host, order: &str) -> String {
    let state = host.state("Order", order).await.unwrap();
    state["status"].as_str().unwrap_or_default().to_owned()
}

async fn poll_status(host: &Host, order: &str, wanted: &str) {
    poll(&format!("order {order} to be {wanted}"), async || {
        (status(host, order).await == wanted).then_some(())
    })
    .await;
}

/// `eshost serve --run-reactors`: the server's own host runs the checkout
/// reactor; an order placed by another process on the same store is
/// bought and reserved, and the server stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_runs_its_reactors_beside_its_commands() {
    let db = TestDb::postgres().await;
    let host = db.checkout_host().await;
    let cache = tempfile::tempdir().unwrap();
    let mut server = KilledOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_eshost"))
            .args([
                "--database-url",
                &db.url,
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--run-reactors", "--no-watch"])
            .env("ESHOST_MODULES", checkout_dir())
            .env("ESHOST_REACTORS", reactors_dir())
            .env("ESHOST_CACHE_DIR", cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _address = listening_address(&mut server);
    execute(
        &host,
        "FlashSaleItem",
        "s1",
        "CreateFlashSale",
        json!({"initialStock": 1}),
    )
    .await;
    execute(
        &host,
        "Order",
        "o1",
        "PlaceOrder",
        json!({"itemId": "s1", "buyerId": "ann", "quantity": 1}),
    )
    .await;
    poll_status(&host, "o1", "reserved").await;
    let item = host.state("FlashSaleItem", "s1").await.unwrap();
    assert_eq!(
        (item["sold"].as_u64(), item["stock"].as_u64()),
        (Some(1), Some(0))
    );
    let exited =
        tokio::task::spawn_blocking(move || terminate(&mut server, Duration::from_secs(20)))
            .await
            .unwrap();
    assert!(exited.success(), "{exited}");
    db.cleanup().await;
}

/// A parked event, listed with its reason; a fixed version dropped into
/// the watched directory; the event retried; the flow completes. The
/// reactor's policy is `stop`, so the order placed after the parked one
/// waits until it is retried, then goes through too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_event_is_retried_with_a_fixed_version_and_the_flow_completes() {
    let db = TestDb::postgres().await;
    let host = db.checkout_host().await;
    let reactors = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::copy(
        reactor_fixture("checkout-strict.wasm"),
        reactors.path().join("checkout.wasm"),
    )
    .unwrap();
    let eshost = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_eshost"));
        command
            .args(["--database-url", &db.url])
            .args(args)
            .env("ESHOST_MODULES", checkout_dir())
            .env("ESHOST_REACTORS", reactors.path())
            .env("ESHOST_CACHE_DIR", cache.path());
        command
    };
    let json_of = |args: &[&str]| -> serde_json::Value {
        let output = eshost(args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let policy = eshost(&["reactor", "policy", "checkout", "stop"])
        .output()
        .unwrap();
    assert!(policy.status.success(), "{policy:?}");
    let mut runner = KilledOnDrop::new(
        eshost(&["reactor", "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    execute(
        &host,
        "FlashSaleItem",
        "s1",
        "CreateFlashSale",
        json!({"initialStock": 5}),
    )
    .await;
    for (order, quantity) in [("big", 2), ("small", 1)] {
        execute(
            &host,
            "Order",
            order,
            "PlaceOrder",
            json!({"itemId": "s1", "buyerId": order, "quantity": quantity}),
        )
        .await;
    }
    let parked = poll("the big order to be parked", async || {
        let parked = json_of(&["reactor", "parked", "checkout", "--json"]);
        (parked.as_array()?.len() == 1).then_some(parked)
    })
    .await;
    let reason = parked[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("one unit per order; order big asks for 2"),
        "{parked}"
    );
    assert!(
        parked[0]["event"]
            .as_str()
            .unwrap()
            .contains("Order big OrderPlaced"),
        "{parked}"
    );
    let listed = json_of(&["reactors", "--json"]);
    assert_eq!(
        (
            &listed[0]["version"],
            &listed[0]["on_failure"],
            &listed[0]["parked"]
        ),
        (&json!("0.0.1"), &json!("stop"), &json!(1)),
        "{listed}"
    );
    // Stopped at the big order: the small one waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(&host, "small").await, "placed");

    // The fixed version, written with a rename as the help says.
    let staged = reactors.path().join(".checkout.tmp");
    std::fs::copy(reactors_dir().join("checkout.wasm"), &staged).unwrap();
    std::fs::rename(&staged, reactors.path().join("checkout.wasm")).unwrap();
    poll("the fixed version to run", async || {
        let listed = json_of(&["reactors", "--json"]);
        (listed[0]["version"] == "0.1.0").then_some(())
    })
    .await;
    let retry = eshost(&["reactor", "retry", "checkout"]).output().unwrap();
    assert!(retry.status.success(), "{retry:?}");

    for order in ["big", "small"] {
        poll_status(&host, order, "reserved").await;
    }
    execute(&host, "Order", "big", "PayOrder", json!({})).await;
    poll_status(&host, "big", "confirmed").await;
    let parked = json_of(&["reactor", "parked", "checkout", "--json"]);
    assert_eq!(parked, json!([]));
    let item = host.state("FlashSaleItem", "s1").await.unwrap();
    assert_eq!(item["sold"], 3, "{item}");
    // A retry with nothing parked is a one-line error.
    let nothing = eshost(&["reactor", "retry", "checkout"]).output().unwrap();
    assert_eq!(nothing.status.code(), Some(1), "{nothing:?}");
    let stderr = String::from_utf8_lossy(&nothing.stderr);
    assert!(stderr.contains("checkout has no parked event"), "{stderr}");
    runner.kill().unwrap();
    runner.wait().unwrap();
    db.cleanup().await;
}
