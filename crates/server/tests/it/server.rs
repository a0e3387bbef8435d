//! The HTTP API over real sockets: against both stores, error kinds and
//! statuses, backpressure, guest isolation and metrics. (The
//! `eshost serve` process itself is tested in the command line's tests.)

use crate::conformance;
use crate::util::*;
use eshost::{Host, HostOptions};
use eshost_server::ServerConfig;
use serde_json::{Value, json};
use std::time::Duration;

fn command_path(aggregate: &str, id: &str, command: &str) -> String {
    format!("/v1/aggregates/{aggregate}/{id}/commands/{command}")
}

/// Sends a command; returns the status, the JSON body and the headers.
async fn post(
    client: &reqwest::Client,
    server: &TestServer,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap();
    (status, body, headers)
}

/// Posts an empty JSON command and gives its status: for a request sent
/// from its own task while the test goes on.
async fn post_status(client: reqwest::Client, url: String) -> u16 {
    client
        .post(url)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends a body over the server's limit. The server answers 413 without
/// reading the rest of the body, and closing a socket with unread data may
/// reset the connection before the client reads the answer (a TCP race, not
/// the server's verdict); then it is sent again on a new connection. Each
/// send has a client of its own, so no other request is given the closed
/// connection from a shared pool.
async fn post_oversized(
    server: &TestServer,
    path: &str,
    body: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    for _ in 0..3 {
        let sent = reqwest::Client::new()
            .post(server.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                return (status, response.json().await.unwrap(), headers);
            }
            Err(e) if e.is_request() => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the connection was reset three times in a row");
}

async fn get(client: &reqwest::Client, server: &TestServer, path: &str) -> (u16, Value) {
    let response = client.get(server.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Asserts an error answer's status and kind, and that it is one line.
fn assert_error(answer: &(u16, Value, reqwest::header::HeaderMap), status: u16, kind: &str) {
    let (got, body, _) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["kind"], kind, "{body}");
    let message = body["detail"].as_str().unwrap();
    assert!(!message.is_empty() && !message.contains('\n'), "{body}");
}

async fn http_commands_state_and_events(db: &TestDb) {
    let host = db.default_host().await;
    let server = TestServer::start(host, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let create = command_path(FLASH_SALE, "s1", "CreateFlashSale");
    let purchase = command_path(FLASH_SALE, "s1", "PurchaseItem");

    let (status, created, _) = post(&client, &server, &create, None, r#"{"initialStock":2}"#).await;
    assert_eq!(status, 200, "{created}");
    assert!(
        !created["command_id"].as_str().unwrap().is_empty(),
        "a generated id is returned"
    );
    assert_eq!(created["replayed"], false);
    assert_eq!(created["events"][0]["name"], "FlashSaleCreated");
    assert_eq!(created["events"][0]["sequence"], 1);

    let ann = r#"{"buyerId":"ann","quantity":1}"#;
    let (status, bought, _) = post(&client, &server, &purchase, Some("order-1"), ann).await;
    assert_eq!(status, 200, "{bought}");
    assert_eq!(bought["command_id"], "order-1");
    assert_eq!(bought["events"][0]["name"], "ItemPurchased");
    // The same key again: the recorded outcome, nothing appended.
    let (status, again, _) = post(&client, &server, &purchase, Some("order-1"), ann).await;
    assert_eq!(status, 200);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["events"], bought["events"]);
    // A rejection is an answer, not an error.
    let whale = r#"{"buyerId":"whale","quantity":5}"#;
    let (status, rejected, _) = post(&client, &server, &purchase, None, whale).await;
    assert_eq!(status, 200);
    assert_eq!(rejected["events"][0]["name"], "PurchaseRejected");

    let (status, state) = get(&client, &server, "/v1/aggregates/FlashSaleItem/s1").await;
    assert_eq!(status, 200);
    assert_eq!(state["version"], 3);
    assert_eq!(state["state"]["stock"], 1);
    assert_eq!(state["state"]["buyers"], json!(["ann"]));

    // Paged: two pages of two, then one of one with no next.
    let events = "/v1/aggregates/FlashSaleItem/s1/events";
    let (_, first) = get(&client, &server, &format!("{events}?limit=2")).await;
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    assert_eq!(first["next_after"], 2);
    let (_, last) = get(&client, &server, &format!("{events}?after=2&limit=2")).await;
    assert_eq!(last["events"][0]["sequence"], 3);
    assert!(last.get("next_after").is_none(), "{last}");
    let (_, all) = get(&client, &server, events).await;
    let stored = db
        .default_host()
        .await
        .events(FLASH_SALE, "s1")
        .await
        .unwrap();
    assert_eq!(all["events"], serde_json::to_value(&stored).unwrap());

    let (status, listing) = get(&client, &server, "/v1/aggregates").await;
    assert_eq!(status, 200);
    // Files by name: the server's directories are not a client's business.
    assert_eq!(listing, served_aggregates());
    server.stop().await;
}

async fn http_errors_have_a_kind_and_a_fitting_status(db: &TestDb) {
    let host = db.default_host().await;
    let server = TestServer::start(host, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let path = |command: &str| command_path(FLASH_SALE, "e1", command);
    let purchase = path("PurchaseItem");
    let ann = r#"{"buyerId":"ann","quantity":1}"#;

    let before_create = post(&client, &server, &purchase, Some("k1"), ann).await;
    assert_error(&before_create, 409, "precondition_failed");
    assert_eq!(before_create.1["command_id"], "k1", "the id comes back");
    let created = post(
        &client,
        &server,
        &path("CreateFlashSale"),
        None,
        r#"{"initialStock":1}"#,
    )
    .await;
    assert_eq!(created.0, 200);
    let twice = post(
        &client,
        &server,
        &path("CreateFlashSale"),
        None,
        r#"{"initialStock":1}"#,
    )
    .await;
    assert_error(&twice, 409, "precondition_failed");
    let unknown_aggregate = post(
        &client,
        &server,
        &command_path("Nope", "x", "Do"),
        None,
        "{}",
    )
    .await;
    assert_error(&unknown_aggregate, 404, "unknown_aggregate");
    assert_error(
        &post(&client, &server, &path("Refund"), None, "{}").await,
        404,
        "unknown_command",
    );
    assert_error(
        &post(&client, &server, &purchase, None, "{nope").await,
        422,
        "invalid_payload",
    );
    let zero = r#"{"buyerId":"ann","quantity":0}"#;
    assert_error(
        &post(&client, &server, &purchase, None, zero).await,
        422,
        "invalid_command",
    );
    let huge = format!(r#"{{"buyerId":"{}","quantity":1}}"#, "x".repeat(200_000));
    let too_large = post_oversized(&server, &purchase, &huge).await;
    assert_error(&too_large, 413, "payload_too_large");
    // A key reused for a different command.
    assert_eq!(
        post(&client, &server, &purchase, Some("k2"), ann).await.0,
        200
    );
    let bob = r#"{"buyerId":"bob","quantity":1}"#;
    assert_error(
        &post(&client, &server, &purchase, Some("k2"), bob).await,
        422,
        "idempotency_key_reused",
    );
    // Reused across callers, the refusal tells nothing of the other's
    // command. (It named the other's aggregate, id and command.)
    let theirs = command_path(FLASH_SALE, "their-private-sale", "CreateFlashSale");
    let create = r#"{"initialStock":1}"#;
    assert_eq!(
        post(&client, &server, &theirs, Some("k3"), create).await.0,
        200
    );
    let reused = post(&client, &server, &purchase, Some("k3"), ann).await;
    assert_error(&reused, 422, "idempotency_key_reused");
    let message = reused.1["detail"].as_str().unwrap();
    for private in ["their-private-sale", "CreateFlashSale"] {
        assert!(!message.contains(private), "{message}");
    }

    let response = client
        .get(server.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["kind"], "not_found");
    let response = client
        .delete(server.url("/v1/aggregates"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let (status, body) = get(
        &client,
        &server,
        "/v1/aggregates/FlashSaleItem/e1/events?limit=0",
    )
    .await;
    assert_eq!((status, body["kind"].as_str()), (400, Some("bad_request")));
    let (status, body) = get(
        &client,
        &server,
        "/v1/aggregates/FlashSaleItem/e1/events?after=x",
    )
    .await;
    assert_eq!((status, body["kind"].as_str()), (400, Some("bad_request")));

    // Nothing of the refused commands was recorded: create, then k2.
    let (_, all) = get(&client, &server, "/v1/aggregates/FlashSaleItem/e1/events").await;
    let names: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["FlashSaleCreated", "ItemPurchased"]);

    let (status, health) = get(&client, &server, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, ready) = get(&client, &server, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["store"], "ok");
    server.stop().await;
}

/// `GET /v1/views/{projection}/{key}` reads what the projection built.
async fn a_projection_document_is_served(db: &TestDb) {
    let host = db.default_host().await;
    host.execute(&create("s1", 5)).await.unwrap();
    host.execute(&purchase("s1", "ann", 2)).await.unwrap();
    let mut projector =
        eshost_read::projector::Projector::live(host.store().clone(), sales_summary())
            .await
            .unwrap();
    projector.catch_up().await.unwrap();
    let server = TestServer::start(host, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let (status, answer) = get(&client, &server, "/v1/views/sales-summary/item:s1").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["key"], &answer["document"]["sold"]),
        (&"item:s1".into(), &2.into()),
        "{answer}"
    );
    let (status, missing) = get(&client, &server, "/v1/views/sales-summary/item:s2").await;
    assert_eq!(
        (status, &missing["kind"]),
        (404, &"not_found".into()),
        "{missing}"
    );
    server.stop().await;
}

/// A stream this version of the logic cannot load is answered 500 with its
/// own kind, which clients map to "do not resend", and the library's message.
async fn an_unreplayable_stream_has_its_own_kind(db: &TestDb) {
    let host = db.default_host().await;
    host.execute(&create("renamed", 10)).await.unwrap();
    let bought = r#"{"buyerId":"a","quantity":1}"#.to_string();
    append_raw(
        host.store().as_ref(),
        "renamed",
        1,
        vec![("ItemBought", bought)],
    )
    .await;
    let message = db
        .default_host()
        .await
        .state(FLASH_SALE, "renamed")
        .await
        .unwrap_err()
        .to_string();
    let server = TestServer::start(db.default_host().await, ServerConfig::default()).await;
    let answer = reqwest::Client::new()
        .post(server.url(&command_path(FLASH_SALE, "renamed", "PurchaseItem")))
        .header("content-type", "application/json")
        .body(r#"{"buyerId":"b","quantity":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 500);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["kind"], "unreplayable", "{body}");
    assert_eq!(body["detail"], message.as_str());
    server.stop().await;
}

conformance!(
    http_commands_state_and_events,
    http_errors_have_a_kind_and_a_fitting_status,
    the_event_log_streams_as_server_sent_events,
    a_projection_document_is_served,
    an_unreplayable_stream_has_its_own_kind,
);

/// Reads Server-Sent Events from `response` until `count` messages came
/// (10 s at most): each message's id and event.
async fn sse_messages(
    response: &mut reqwest::Response,
    buffer: &mut String,
    count: usize,
) -> Vec<(i64, eshost::RecordedEvent)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut messages = Vec::new();
    while messages.len() < count {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(name).map(str::trim))
                    .map(str::to_string)
            };
            // Keep-alive comments have neither.
            if let (Some(id), Some(data)) = (field("id:"), field("data:")) {
                messages.push((id.parse().unwrap(), serde_json::from_str(&data).unwrap()));
            }
        }
        if messages.len() >= count {
            break;
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("no event within 10 s")
            .unwrap()
            .expect("the stream ended");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    messages
}

/// `GET /v1/events`: the recorded events, then new ones as they are
/// recorded; an EventSource's Last-Event-ID resumes after it; followers
/// past the limit are answered 429; shutdown ends the streams.
async fn the_event_log_streams_as_server_sent_events(db: &TestDb) {
    let host = db.default_host().await;
    host.execute(&create("s1", 5)).await.unwrap();
    host.execute(&purchase("s1", "ann", 1)).await.unwrap();
    let config = ServerConfig {
        max_followers: 2,
        ..ServerConfig::default()
    };
    let server = TestServer::start(host, config).await;
    let client = reqwest::Client::new();
    let mut first = client.get(server.url("/v1/events")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let recorded = sse_messages(&mut first, &mut buffer, 2).await;
    let names: Vec<_> = recorded.iter().map(|(_, e)| e.name.as_str()).collect();
    assert_eq!(names, ["FlashSaleCreated", "ItemPurchased"]);
    assert!(recorded.iter().all(|(id, event)| *id == event.position));

    // A command recorded now reaches the follower.
    let path = "/v1/aggregates/FlashSaleItem/s1/commands/PurchaseItem";
    let body = r#"{"buyerId":"bob","quantity":1}"#;
    let sent = client
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let new = sse_messages(&mut first, &mut buffer, 1).await;
    assert_eq!(
        (new[0].1.name.as_str(), new[0].1.sequence),
        ("ItemPurchased", 3)
    );

    // Reconnecting after the first event, filtered by aggregate type.
    let mut second = client
        .get(server.url("/v1/events?aggregate=FlashSaleItem"))
        .header("Last-Event-ID", recorded[0].0.to_string())
        .send()
        .await
        .unwrap();
    let resumed = sse_messages(&mut second, &mut String::new(), 2).await;
    assert_eq!(resumed[0], recorded[1]);
    assert_eq!(resumed[1], new[0]);

    let third = client.get(server.url("/v1/events")).send().await.unwrap();
    assert_eq!(third.status(), 429);
    let error: Value = third.json().await.unwrap();
    assert_eq!(error["kind"], "overloaded");
    let bad = client
        .get(server.url("/v1/events"))
        .header("Last-Event-ID", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Shutdown does not wait for streams that never end.
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the server did not stop with followers connected");
    assert!(matches!(first.chunk().await, Ok(None) | Err(_)));
}

/// A host with the hostile fixture and the flash sale, on SQLite.
async fn hostile_host(options: HostOptions) -> (Host, TestDb) {
    use eshost::wasm::{Budget, Limits, Runtime};
    let runtime = Runtime::with_limits(Limits {
        budget: Budget::WallClock(Duration::from_millis(1000)),
        ..Limits::default()
    });
    let mut modules = eshost::Modules::default();
    let hostile = build_dir().join("fixtures/hostile.wasm");
    modules.insert(runtime.load(&hostile).unwrap()).unwrap();
    let flash_sale = modules_dir().join("flash-sale.wasm");
    modules.insert(runtime.load(&flash_sale).unwrap()).unwrap();
    let db = TestDb::sqlite().await;
    let store = eshost::store::open(&db.url).await.unwrap();
    (Host::with_options(modules, store, options), db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let options = HostOptions {
        queue_capacity: 1,
        ..HostOptions::default()
    };
    let (host, db) = hostile_host(options).await;
    let server = TestServer::start(host, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let looping = command_path("Hostile", "busy", "Loop");
    // The first command keeps the queue's worker busy for its whole budget
    // (1 s); the second waits in the queue, which then is full.
    let first = tokio::spawn(post_status(client.clone(), server.url(&looping)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn(post_status(
        client.clone(),
        server.url(&command_path("Hostile", "busy", "Ok")),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = post(
        &client,
        &server,
        &command_path("Hostile", "busy", "Ok"),
        Some("third"),
        "{}",
    )
    .await;
    assert_error(&third, 429, "overloaded");
    assert_eq!(third.2["retry-after"], "1");
    assert_eq!(third.1["command_id"], "third");
    assert_eq!(first.await.unwrap(), 500, "the loop broke its time limit");
    assert_eq!(second.await.unwrap(), 200, "the queued command was served");
    server.stop().await;
    db.cleanup().await;
}

/// Guest calls never hold the async runtime's threads: while four guests
/// loop for their whole one-second budget at once (more than the runtime's
/// two worker threads), commands on a healthy aggregate are all answered
/// before any of the loops ends. Were a long call kept on the worker that
/// made it (past its first epoch tick), the loops would hold both and the
/// healthy commands would wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_guests_do_not_hold_up_healthy_aggregates() {
    let (host, db) = hostile_host(HostOptions::default()).await;
    let server = TestServer::start(host, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let create = command_path(FLASH_SALE, "calm", "CreateFlashSale");
    assert_eq!(
        post(&client, &server, &create, None, r#"{"initialStock":1000}"#)
            .await
            .0,
        200
    );

    let started = std::time::Instant::now();
    let loops: Vec<_> = (0..4)
        .map(|n| {
            let (client, url) = (
                client.clone(),
                server.url(&command_path("Hostile", &format!("h{n}"), "Loop")),
            );
            tokio::spawn(async move {
                let status = post_status(client, url).await;
                (status, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let purchase = command_path(FLASH_SALE, "calm", "PurchaseItem");
    let mut healthy_done = Duration::ZERO;
    for n in 0..20 {
        let body = format!(r#"{{"buyerId":"b{n}","quantity":1}}"#);
        let (status, answer, _) = post(&client, &server, &purchase, None, &body).await;
        assert_eq!(status, 200, "{answer}");
        healthy_done = started.elapsed();
    }
    let mut first_loop_done = Duration::MAX;
    for handle in loops {
        let (status, done) = handle.await.unwrap();
        assert_eq!(status, 500, "each loop broke its time limit");
        first_loop_done = first_loop_done.min(done);
    }
    assert!(
        healthy_done < first_loop_done,
        "healthy commands finished at {healthy_done:?}, after a loop ended at {first_loop_done:?}"
    );
    server.stop().await;
    db.cleanup().await;
}

/// `/metrics` counts commands by aggregate, command and outcome, and never
/// makes a label of a name the host does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_commands_by_outcome() {
    let db = TestDb::sqlite().await;
    let host = db.default_host().await;
    let server = TestServer::start(host, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let path = |command: &str| command_path(FLASH_SALE, "m1", command);
    let created = post(
        &client,
        &server,
        &path("CreateFlashSale"),
        None,
        r#"{"initialStock":1}"#,
    )
    .await;
    assert_eq!(created.0, 200);
    for buyer in ["a", "b", "c"] {
        let body = format!(r#"{{"buyerId":"{buyer}","quantity":1}}"#);
        assert_eq!(
            post(&client, &server, &path("PurchaseItem"), None, &body)
                .await
                .0,
            200
        );
    }
    let zero = r#"{"buyerId":"z","quantity":0}"#;
    assert_eq!(
        post(&client, &server, &path("PurchaseItem"), None, zero)
            .await
            .0,
        422
    );
    let stranger = command_path("Made-Up-Name", "x", "Whatever");
    assert_eq!(post(&client, &server, &stranger, None, "{}").await.0, 404);

    let response = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // OpenMetrics text is labelled as such (it was labelled Prometheus's
    // 0.0.4 text format), and ends as the format requires.
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    let purchases = |outcome: &str| {
        format!(
            r#"eshost_commands_total{{aggregate="FlashSaleItem",command="PurchaseItem",outcome="{outcome}"}}"#
        )
    };
    assert_eq!(value(&purchases("ok")), 3.0);
    assert_eq!(value(&purchases("invalid_command")), 1.0);
    let unknown = r#"eshost_commands_total{aggregate="(unknown)",command="(unknown)",outcome="unknown_aggregate"}"#;
    assert_eq!(value(unknown), 1.0);
    assert!(
        !text.contains("Made-Up-Name"),
        "a client's text never becomes a label"
    );
    assert_eq!(
        value(r#"eshost_command_seconds_count{aggregate="FlashSaleItem"}"#),
        5.0
    );
    assert_eq!(
        value("eshost_appends_total"),
        4.0,
        "create and three purchases"
    );
    assert!(value("eshost_batch_commands_count") >= 1.0);
    let commits = value("eshost_commits_total");
    assert!(
        (1.0..=4.0).contains(&commits),
        "{commits} transactions for four appends"
    );
    assert_eq!(value("eshost_commit_streams_count"), commits);
    assert!(value(r#"eshost_guest_call_seconds_count{aggregate="FlashSaleItem"}"#) >= 5.0);
    assert_eq!(value("eshost_aggregates_loaded"), modules().len() as f64);
    for series in [
        "eshost_conflicts_total",
        "eshost_cache_hits_total",
        "eshost_cache_misses_total",
        "eshost_queued_commands",
        "eshost_cached_aggregates",
        "eshost_guest_calls_running",
        "eshost_transient_retries_total",
    ] {
        value(series);
    }
    server.stop().await;
    db.cleanup().await;
}
