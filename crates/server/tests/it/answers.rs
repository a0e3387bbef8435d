//! Answers tell the truth: an aggregate never created is 404, as in the
//! command line, and leaves nothing cached; ids and view keys are checked
//! as the command route checks ids, so a NUL or an id of 60 KB is the
//! caller's mistake (422), never a store outage to retry (503); and a
//! store that fails for good is a 500 with no Retry-After.

use crate::util::*;
use eshost_server::ServerConfig;
use serde_json::Value;

async fn get(client: &reqwest::Client, url: String) -> (u16, Value, bool) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    (status, response.json().await.unwrap(), retry_after)
}

/// A GET of an aggregate with no events is 404 `not_found`, with the
/// command line's words. (It was 200 with a made-up state, and the empty
/// aggregate stayed in the cache.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_never_created_is_not_found_and_not_cached() {
    let db = TestDb::sqlite().await;
    let host = db.default_host().await;
    let server = TestServer::start(host.clone(), ServerConfig::default()).await;
    let client = reqwest::Client::new();
    for n in 0..20 {
        let url = server.url(&format!("/v1/aggregates/FlashSaleItem/nobody-{n}"));
        let (status, body, _) = get(&client, url).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["kind"], "not_found");
        assert_eq!(
            body["detail"],
            format!("FlashSaleItem nobody-{n} has no events: it was never created")
        );
    }
    assert_eq!(
        host.cached_aggregates(),
        0,
        "reads of nothing filled the cache"
    );
    server.stop().await;
    db.cleanup().await;
}

/// Ids on the read routes are checked as on the command route: 422
/// `invalid_id`, without Retry-After. (A NUL answered 503
/// `store_unavailable` with Retry-After; 60 KB ids were loaded, hydrated
/// and cached.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_routes_refuse_invalid_ids_as_the_caller_s_mistake() {
    for db in [TestDb::sqlite().await, TestDb::postgres().await] {
        let host = db.default_host().await;
        let server = TestServer::start(host.clone(), ServerConfig::default()).await;
        let client = reqwest::Client::new();
        let long = "x".repeat(60_000);
        for id in ["a%00b", long.as_str()] {
            for route in ["", "/events"] {
                let url = server.url(&format!("/v1/aggregates/FlashSaleItem/{id}{route}"));
                let (status, body, retry_after) = get(&client, url).await;
                let what = format!("{}{route}", &id[..id.len().min(8)]);
                assert_eq!(status, 422, "{what}: {body}");
                assert_eq!(body["kind"], "invalid_id", "{what}");
                assert!(
                    !retry_after,
                    "{what}: told to retry a request that cannot succeed"
                );
            }
        }
        assert_eq!(host.cached_aggregates(), 0);
        server.stop().await;
        db.cleanup().await;
    }
}

/// A view key with a NUL is the caller's mistake, and a long one is
/// looked up, not refused (a projection may store one: see
/// `stored_key`). (A NUL in it answered 503 `store_unavailable` with
/// Retry-After on PostgreSQL.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_key_with_a_nul_is_the_caller_s_mistake() {
    for db in [TestDb::sqlite().await, TestDb::postgres().await] {
        let server = TestServer::start(db.default_host().await, ServerConfig::default()).await;
        let client = reqwest::Client::new();
        let long = "k".repeat(2_000);
        for (key, status_wanted, kind) in [
            ("a%00b", 422, "invalid_id"),
            (long.as_str(), 404, "not_found"),
        ] {
            let url = server.url(&format!("/v1/views/sales-summary/{key}"));
            let (status, body, retry_after) = get(&client, url).await;
            assert_eq!(status, status_wanted, "{body}");
            assert_eq!(body["kind"], kind, "{body}");
            assert!(!retry_after);
        }
        server.stop().await;
        db.cleanup().await;
    }
}

/// A store that fails the same way every time (here, a table gone) is a
/// 500 `store_failed` with no Retry-After: resending cannot help. (It was
/// 503 `store_unavailable`, "resend".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_for_good_is_not_worth_a_retry() {
    let db = TestDb::postgres().await;
    let server = TestServer::start(db.default_host().await, ServerConfig::default()).await;
    db.execute_postgres("ALTER TABLE events RENAME TO events_gone")
        .await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/aggregates/FlashSaleItem/s1/events");
    let (status, body, retry_after) = get(&client, url).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["kind"], "store_failed", "{body}");
    assert!(!retry_after, "told to retry what fails for good");
    server.stop().await;
    db.cleanup().await;
}

/// A read the store does not answer is cut at the read deadline with 504
/// `timeout`, and the server keeps answering others. (It waited as long
/// as the store did: here, for as long as a lock was held.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_the_store_does_not_answer_is_cut_at_the_deadline() {
    let db = TestDb::postgres().await;
    let config = ServerConfig {
        read_timeout: std::time::Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let server = TestServer::start(db.default_host().await, config).await;
    let lock = db.lock_postgres_table("events").await;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let url = server.url("/v1/aggregates/FlashSaleItem/s1/events");
    let (status, body, _) = get(&client, url).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["kind"], "timeout", "{body}");
    let (status, _, _) = get(&client, server.url("/v1/aggregates")).await;
    assert_eq!(status, 200, "others are answered meanwhile");
    drop(lock);
    server.stop().await;
    db.cleanup().await;
}

/// When PostgreSQL refuses the host every connection, a command gets a
/// clear 503 `store_unavailable` with Retry-After well within a client's
/// patience, and `/readyz` says the host is not ready. (Commands took
/// 10 s, and /readyz stayed 200.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_gives_no_connection_is_answered_fast_and_not_ready() {
    let mut crowded = CrowdedPostgres::new(6).await;
    let store = eshost::store::open(&crowded.url).await.unwrap();
    let host = eshost::Host::with_options(modules(), store, eshost::HostOptions::default());
    let server = TestServer::start(host, ServerConfig::default()).await;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let (status, _, _) = get(&client, server.url("/readyz")).await;
    assert_eq!(status, 200, "ready before");
    crowded.crowd_out().await;
    let create = client
        .post(server.url("/v1/aggregates/FlashSaleItem/c1/commands/CreateFlashSale"))
        .header("content-type", "application/json")
        .body(r#"{"initialStock":1}"#)
        .send()
        .await
        .expect("an answer within the client's 5 s");
    assert_eq!(create.status(), 503);
    assert!(create.headers().contains_key("retry-after"));
    let body: Value = create.json().await.unwrap();
    assert_eq!(body["kind"], "store_unavailable", "{body}");
    let (status, body, _) = get(&client, server.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    crowded.make_room();
    server.stop().await;
    drop(crowded);
}

/// Errors are RFC 9457 problem details, served as
/// `application/problem+json`, keeping `kind` and `command_id`; a
/// problem's `type` is a route that says what the kind means. (Errors
/// were `{"error": {...}}` as `application/json`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_problem_details_whose_type_says_what_they_mean() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(db.default_host().await, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let refused = client
        .post(server.url("/v1/aggregates/FlashSaleItem/p1/commands/PurchaseItem"))
        .header("content-type", "application/json")
        .header("idempotency-key", "p1-buy")
        .body(r#"{"buyerId":"ann","quantity":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["type"], "/v1/problems/precondition_failed",
        "{problem}"
    );
    assert_eq!(problem["status"], 409);
    assert_eq!(problem["kind"], "precondition_failed");
    assert_eq!(problem["command_id"], "p1-buy");
    assert!(
        problem["detail"].as_str().unwrap().contains("p1"),
        "{problem}"
    );
    let title = problem["title"].as_str().unwrap().to_string();
    // The type, resolved against the request's URL, says what it means.
    let meaning: Value = client
        .get(server.url(problem["type"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meaning["kind"], "precondition_failed");
    assert_eq!(meaning["status"], 409);
    assert_eq!(meaning["title"], title.as_str());
    let (status, unknown, _) = get(&client, server.url("/v1/problems/no_such_kind")).await;
    assert_eq!(status, 404);
    assert_eq!(unknown["kind"], "not_found");
    server.stop().await;
    db.cleanup().await;
}
