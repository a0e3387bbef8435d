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
    let text = metrics_text(&client, &server).await;
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

/// `/metrics`, as text.
async fn metrics_text(client: &reqwest::Client, server: &TestServer) -> String {
    let answer = client.get(server.url("/metrics")).send().await.unwrap();
    answer.text().await.unwrap()
}

/// The value of an unlabelled metric in `/metrics`.
async fn metric(client: &reqwest::Client, server: &TestServer, name: &str) -> f64 {
    let text = metrics_text(client, server).await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// A transaction left open on PostgreSQL holds the global log's horizon:
/// the store names its backend, and `/metrics` shows how long it has
/// held it, until it ends. (Nothing showed it: followers and projections
/// just stopped moving.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_holding_the_log_s_horizon_is_shown() {
    let db = TestDb::postgres().await;
    let host = db.default_host().await;
    let store = host.store().clone();
    let config = ServerConfig {
        read_side_check: std::time::Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = TestServer::start(host, config).await;
    let client = reqwest::Client::new();
    let (held, pid) = db.hold_transaction().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let holder = store
        .log()
        .horizon_holder()
        .await
        .unwrap()
        .expect("a holder");
    // Other tests' transactions are younger than this one.
    assert_eq!(holder.pid, pid, "{holder:?}");
    assert!(holder.held_seconds >= 1.0, "{holder:?}");
    let shown = metric(&client, &server, "eshost_log_horizon_held_seconds").await;
    assert!(shown >= 1.0, "{shown}");
    // Past HELD_TOO_LONG, readiness lists it, and stays 200 by default.
    tokio::time::sleep(eshost_server::read_side::HELD_TOO_LONG).await;
    let ready = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    let problems = ready["read_side"].to_string();
    assert!(problems.contains(&format!("backend {pid}")), "{ready}");
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let shown = metric(&client, &server, "eshost_log_horizon_held_seconds").await;
        if shown < 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {shown}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.stop().await;
    db.cleanup().await;
}

/// A projection stopped by an event its guest fails shows in `/metrics`
/// (failed, its position, and the events it has not projected) and in
/// `/readyz`, which stays 200 by default and answers 503 with
/// `ready_requires_read_side`. (Nothing showed it but `eshost projection
/// status`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_projection_is_in_the_metrics_and_readiness() {
    let db = TestDb::sqlite().await;
    let host = db.default_host().await;
    let store = host.store().clone();
    sales_with_an_unreadable_event(&host, &*store).await;
    let first = store.log().read_all(0, None, 1).await.unwrap()[0].position;
    let mut projector = eshost_read::projector::Projector::live(store.clone(), sales_summary())
        .await
        .unwrap();
    assert!(
        projector.catch_up().await.is_err(),
        "the bad event stops it"
    );
    let client = reqwest::Client::new();
    for strict in [false, true] {
        let config = ServerConfig {
            read_side_check: std::time::Duration::from_millis(100),
            ready_requires_read_side: strict,
            ..ServerConfig::default()
        };
        // As if its supervisor ran sales-summary here: its lag is counted.
        let (_, running) = tokio::sync::watch::channel(vec![sales_summary()]);
        let app = eshost_server::App::new(host.clone(), config).with_projections(running);
        let server = TestServer::start_app(app).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let labels = r#"{projection="sales-summary"}"#;
        let failed = metric(
            &client,
            &server,
            &format!("eshost_projection_failed{labels}"),
        )
        .await;
        let position = metric(
            &client,
            &server,
            &format!("eshost_projection_position{labels}"),
        )
        .await;
        let lag = metric(
            &client,
            &server,
            &format!("eshost_projection_lag_events{labels}"),
        )
        .await;
        assert_eq!((failed, position, lag), (1.0, first as f64, 2.0));
        let ready = client.get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), if strict { 503 } else { 200 });
        let ready: serde_json::Value = ready.json().await.unwrap();
        assert!(
            ready["read_side"][0]
                .as_str()
                .is_some_and(|p| p.starts_with("projection sales-summary stopped")),
            "{ready}"
        );
        server.stop().await;
    }
}
