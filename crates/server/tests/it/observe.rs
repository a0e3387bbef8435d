//! What the server tells an operator about itself: a request id on every
//! answer, and metrics of its requests (by route template, never by the
//! path sent), its build and its process, in one OpenMetrics exposition.

use crate::util::*;
use eshost_server::ServerConfig;

/// Every answer carries an id: the client's, if it is short visible
/// ASCII, or a new one. (There was none.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(db.default_host().await, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let url = server.url("/v1/aggregates");
    let given = client
        .get(&url)
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "abc-123");
    let mut made = Vec::new();
    for header in [None, Some("x".repeat(200))] {
        let mut request = client.get(server.url("/no/such/route"));
        if let Some(value) = header {
            request = request.header("x-request-id", value);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 404);
        let id = answer.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(!id.is_empty() && id.len() <= 128, "{id}");
        made.push(id);
    }
    assert_ne!(made[0], made[1], "each request its own id");
    server.stop().await;
    db.cleanup().await;
}

/// `/metrics` holds the build, the requests by route template and status,
/// and the process, and ends once with `# EOF`. (It had none of the
/// three.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_build_the_requests_and_the_process() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(db.default_host().await, ServerConfig::default()).await;
    let client = reqwest::Client::new();
    for id in ["a", "b", "c"] {
        let url = server.url(&format!("/v1/aggregates/FlashSaleItem/{id}"));
        assert_eq!(client.get(url).send().await.unwrap().status(), 404);
    }
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    for expected in [
        format!("eshost_build_info{{version=\"{version}\"}} 1"),
        "eshost_http_requests_total{route=\"/v1/aggregates/{aggregate}/{id}\",method=\"GET\",status=\"404\"} 3".to_string(),
        "eshost_http_request_seconds_count{route=\"/v1/aggregates/{aggregate}/{id}\",method=\"GET\"} 3".to_string(),
        "process_cpu_seconds_total ".to_string(),
        "process_resident_memory_bytes ".to_string(),
        "process_open_fds ".to_string(),
        "process_start_time_seconds ".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected} not in:\n{text}");
    }
    assert!(
        !text.contains("FlashSaleItem/a"),
        "a path sent became a label"
    );
    assert_eq!(text.matches("# EOF").count(), 1);
    assert!(text.ends_with("# EOF\n"));
    server.stop().await;
    db.cleanup().await;
}
