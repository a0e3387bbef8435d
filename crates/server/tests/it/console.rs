//! What the console stands on: its files served without a token and with a
//! policy that lets them call only this server, the last minutes' samples
//! behind the read scope, and the event log started at its tail.

use crate::conformance;
use crate::util::*;
use eshost_server::ServerConfig;
use eshost_server::auth::{Scope, Token, Tokens};
use serde_json::Value;
use std::time::Duration;

fn reader() -> ServerConfig {
    ServerConfig {
        tokens: Tokens::new(vec![
            Token::new("viewer", "read-secret", &[Scope::Read]).unwrap(),
        ])
        .unwrap(),
        ..ServerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_and_its_data_with_one() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(db.default_host().await, reader()).await;
    let client = reqwest::Client::new();
    for (path, media_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let answer = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        assert_eq!(answer.headers()["content-type"], media_type, "{path}");
        let policy = answer.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(
            policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"),
            "{policy}"
        );
    }
    let missing = client
        .get(server.url("/console/secrets.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(
        eshost_server::console::size() < 40 << 10,
        "the console grew past 40 KB"
    );

    let stats = client.get(server.url("/v1/stats")).send().await.unwrap();
    assert_eq!(stats.status(), 401);
    let stats: Value = client
        .get(server.url("/v1/stats"))
        .bearer_auth("read-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(stats.is_array(), "{stats}");
    server.stop().await;
    db.cleanup().await;
}

/// `?tail=N` starts the log with its newest N events (of the aggregate
/// type, if named), then follows.
async fn the_log_starts_at_its_tail_when_asked(db: &TestDb) {
    let host = db.default_host().await;
    for item in ["t1", "t2"] {
        host.execute(&create(item, 5)).await.unwrap();
        host.execute(&purchase(item, "ann", 1)).await.unwrap();
    }
    let server = TestServer::start(host, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let first = |path: &str| {
        let request = client.get(server.url(path));
        async move {
            let mut answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 200);
            let mut text = String::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !text.contains("\n\n") {
                let chunk = tokio::time::timeout_at(deadline, answer.chunk())
                    .await
                    .expect("no event within 10 s")
                    .unwrap()
                    .expect("the stream ended");
                text.push_str(std::str::from_utf8(&chunk).unwrap());
            }
            let data = text.lines().find_map(|l| l.strip_prefix("data:")).unwrap();
            serde_json::from_str::<Value>(data.trim()).unwrap()
        }
    };
    let newest_two = first("/v1/events?tail=2").await;
    assert_eq!(
        (newest_two["id"].as_str(), newest_two["sequence"].as_u64()),
        (Some("t2"), Some(1))
    );
    let everything = first("/v1/events?tail=100").await;
    assert_eq!(
        (everything["id"].as_str(), everything["sequence"].as_u64()),
        (Some("t1"), Some(1))
    );
    let from_wins = first("/v1/events?tail=1&from=0").await;
    assert_eq!(from_wins["id"], "t1");
    server.stop().await;
}

/// A stream's state names the snapshot the serving component would load
/// (its version and size), and a stream without one has none.
async fn a_stream_s_state_names_its_snapshot(db: &TestDb) {
    let store = eshost::store::open(&db.url).await.unwrap();
    let options = eshost::HostOptions {
        snapshot_every: 2,
        ..eshost::HostOptions::default()
    };
    let host = eshost::Host::with_options(modules(), store, options);
    host.execute(&create("snap", 5)).await.unwrap();
    for buyer in ["ann", "bob", "cy"] {
        host.execute(&purchase("snap", buyer, 1)).await.unwrap();
    }
    host.execute(&create("fresh", 5)).await.unwrap();
    let server = TestServer::start(host, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let state = |id: &str| {
        let request = client.get(server.url(&format!("/v1/aggregates/FlashSaleItem/{id}")));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // Snapshots are written after the batch that passes the interval.
    let answer = poll("a snapshot of snap", async || {
        let answer = state("snap").await;
        answer.get("snapshot").is_some().then_some(answer)
    })
    .await;
    let snapshot = &answer["snapshot"];
    let version = snapshot["version"].as_u64().unwrap();
    assert!((2..=4).contains(&version), "{answer}");
    assert!(snapshot["bytes"].as_u64().unwrap() > 0, "{answer}");
    assert_eq!(answer["version"], 4);
    let fresh = state("fresh").await;
    assert!(fresh.get("snapshot").is_none(), "{fresh}");
    server.stop().await;
}

conformance!(
    the_log_starts_at_its_tail_when_asked,
    a_stream_s_state_names_its_snapshot
);
