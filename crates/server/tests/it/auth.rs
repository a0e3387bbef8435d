//! A server with tokens: each route needs its scope, the probes stay open
//! for a load balancer unless protected, a browser can follow the log with
//! `?access_token=`, and a refusal says which scope is missing and nothing
//! else.

use crate::util::*;
use eshost_server::ServerConfig;
use eshost_server::auth::{Scope, Token, Tokens};
use serde_json::Value;

const CREATE: &str = "/v1/aggregates/FlashSaleItem/t1/commands/CreateFlashSale";

/// A reader, a writer and an admin.
fn tokens() -> Tokens {
    Tokens::new(vec![
        Token::new("dashboard", "read-secret", &[Scope::Read]).unwrap(),
        Token::new("shop", "write-secret", &[Scope::Read, Scope::Write]).unwrap(),
        Token::new("ops", "admin-secret", &Scope::ALL).unwrap(),
    ])
    .unwrap()
}

async fn status_and_body(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// With a token, every request but the probes needs it; a wrong one is
/// 401 as a missing one is; the scheme is case-insensitive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_the_probes() {
    let db = TestDb::sqlite().await;
    let config = ServerConfig {
        tokens: Tokens::single("s3cret").unwrap(),
        ..ServerConfig::default()
    };
    let server = TestServer::start(db.default_host().await, config).await;
    let client = reqwest::Client::new();
    let aggregates = server.url("/v1/aggregates");
    let bare = client.get(&aggregates).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(bare.headers()["www-authenticate"], "Bearer");
    let body: Value = bare.json().await.unwrap();
    assert_eq!(body["kind"], "unauthorized");
    let wrong = client.get(&aggregates).bearer_auth("guess").send().await;
    assert_eq!(wrong.unwrap().status(), 401);
    let refused = client
        .post(server.url(CREATE))
        .header("content-type", "application/json")
        .body(r#"{"initialStock":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "a command without the token");
    // The scheme is case-insensitive (RFC 9110); it was refused in lower case.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let spelled = client
            .get(&aggregates)
            .header("authorization", format!("{scheme} s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(spelled.status(), 200, "{scheme}");
    }
    // A load balancer's health check sends no header. /readyz and
    // /metrics answered 401, which took every host out of HAProxy.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let answer = client.get(server.url(probe)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{probe}");
    }
    server.stop().await;
    db.cleanup().await;
}

/// With --protect-probes, the probes need a token with the read scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_probes_need_the_read_scope() {
    let db = TestDb::sqlite().await;
    let config = ServerConfig {
        tokens: tokens(),
        protect_probes: true,
        ..ServerConfig::default()
    };
    let server = TestServer::start(db.default_host().await, config).await;
    let client = reqwest::Client::new();
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let bare = client.get(server.url(probe)).send().await.unwrap();
        assert_eq!(bare.status(), 401, "{probe}");
        let read = client.get(server.url(probe)).bearer_auth("read-secret");
        assert_eq!(read.send().await.unwrap().status(), 200, "{probe}");
    }
    server.stop().await;
    db.cleanup().await;
}

/// Each route needs its scope: a reader cannot send a command, a writer
/// cannot reload. The 403 names the scope missing, and nothing of the
/// token or of other callers; nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_needs_its_scope() {
    let db = TestDb::sqlite().await;
    let host = db.default_host().await;
    let server = TestServer::start(
        host.clone(),
        ServerConfig {
            tokens: tokens(),
            ..ServerConfig::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    let command = |secret: &str| {
        client
            .post(server.url(CREATE))
            .bearer_auth(secret)
            .header("content-type", "application/json")
            .body(r#"{"initialStock":2}"#)
    };
    let (status, body) = status_and_body(command("read-secret")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["kind"], "forbidden");
    assert_eq!(body["detail"], "this token does not have the write scope");
    let stream = eshost::StreamId::new("FlashSaleItem", "t1");
    let recorded = host.store().streams().load(&stream, 0).await.unwrap();
    assert!(recorded.is_empty(), "a refused command recorded events");

    let reload = |secret: &str| {
        client
            .post(server.url("/v1/admin/reload"))
            .bearer_auth(secret)
    };
    let (status, body) = status_and_body(reload("write-secret")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["detail"], "this token does not have the admin scope");
    let (status, _) = status_and_body(reload("read-secret")).await;
    assert_eq!(status, 403);

    // And with the scope, each goes through.
    let (status, body) = status_and_body(command("write-secret")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = status_and_body(reload("admin-secret")).await;
    assert_ne!(status, 403, "{body}");
    let state = client
        .get(server.url("/v1/aggregates/FlashSaleItem/t1"))
        .bearer_auth("read-secret");
    assert_eq!(state.send().await.unwrap().status(), 200);
    server.stop().await;
    db.cleanup().await;
}

/// A browser's `EventSource` cannot send a header: the global log takes
/// the secret as `?access_token=`. Only the log does, and only a valid
/// one with the read scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_follows_the_log_with_an_access_token_in_the_query() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(
        db.default_host().await,
        ServerConfig {
            tokens: tokens(),
            ..ServerConfig::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    let followed = client
        .get(server.url("/v1/events?from=0&access_token=read-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), 200);
    assert_eq!(followed.headers()["content-type"], "text/event-stream");
    drop(followed);
    let wrong = client
        .get(server.url("/v1/events?access_token=guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // Other routes take the header only: a secret in a URL ends up in
    // proxies' logs and browser history.
    let elsewhere = client
        .get(server.url("/v1/aggregates?access_token=read-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 401);
    server.stop().await;
    db.cleanup().await;
}
