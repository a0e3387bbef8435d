//! A server without a token, driven as a web page of another origin
//! would drive it: a `text/plain` command (a form or a simple `fetch`,
//! sent with no question asked), a foreign `Origin`, a rebound `Host`.
//! None is answered; the same requests from its own origin, or from curl,
//! are.

use crate::util::*;
use eshost_server::ServerConfig;
use reqwest::header::{CONTENT_TYPE, HOST, ORIGIN};

const CREATE: &str = "/v1/aggregates/FlashSaleItem/s1/commands/CreateFlashSale";

async fn recorded(host: &eshost::Host) -> usize {
    host.store()
        .streams()
        .load(&eshost::StreamId::new("FlashSaleItem", "s1"), 0)
        .await
        .unwrap()
        .len()
}

async fn kind_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    (status, body["kind"].as_str().unwrap_or("").to_string())
}

/// A command whose body is not declared JSON is refused with 415, and
/// nothing is recorded. (It was recorded.)
#[tokio::test]
async fn without_a_token_a_command_must_be_sent_as_json() {
    let db = TestDb::sqlite().await;
    let host = db.default_host().await;
    let server = TestServer::start(host.clone(), ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let body = r#"{"initialStock":3}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = client.post(server.url(CREATE)).body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let (status, kind) = kind_of(request.send().await.unwrap()).await;
        assert_eq!(
            (status, kind.as_str()),
            (415, "unsupported_media_type"),
            "{content_type:?}"
        );
    }
    assert_eq!(recorded(&host).await, 0, "nothing recorded");
    let sent = client
        .post(server.url(CREATE))
        .header(CONTENT_TYPE, "Application/JSON; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(recorded(&host).await, 1);
    server.stop().await;
    db.cleanup().await;
}

/// A request naming another origin, or sent to a name that is not a
/// loopback one (DNS rebinding), is refused with 403, reload included.
/// (Each was answered.) Its own origin, and curl with no Origin, are.
#[tokio::test]
async fn without_a_token_a_foreign_origin_or_host_is_refused() {
    let db = TestDb::sqlite().await;
    let host = db.default_host().await;
    let server = TestServer::start(host.clone(), ServerConfig::default()).await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let client = reqwest::Client::new();
    let command = || {
        client
            .post(server.url(CREATE))
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"initialStock":3}"#)
    };
    let refused = [
        command().header(ORIGIN, "http://evil.example"),
        command().header(ORIGIN, "null"),
        client
            .post(server.url("/v1/admin/reload"))
            .header(ORIGIN, "https://evil.example"),
        client
            .get(server.url("/v1/aggregates"))
            .header(HOST, format!("rebound.evil.example:{port}")),
        command().header(HOST, format!("rebound.evil.example:{port}")),
    ];
    for request in refused {
        let (status, kind) = kind_of(request.send().await.unwrap()).await;
        assert_eq!((status, kind.as_str()), (403, "foreign_origin"));
    }
    assert_eq!(recorded(&host).await, 0, "nothing recorded");

    let own = format!("http://127.0.0.1:{port}");
    let answered = [
        command().header(ORIGIN, own.as_str()),
        client
            .get(server.url("/v1/aggregates"))
            .header(HOST, format!("localhost:{port}")),
    ];
    for request in answered {
        assert_eq!(request.send().await.unwrap().status(), 200);
    }
    server.stop().await;
    db.cleanup().await;
}

/// With a token the token is the guard: a page cannot send it.
#[tokio::test]
async fn with_a_token_the_origin_checks_give_way_to_it() {
    let db = TestDb::sqlite().await;
    let config = ServerConfig {
        tokens: eshost_server::auth::Tokens::single("s3cret").unwrap(),
        ..ServerConfig::default()
    };
    let server = TestServer::start(db.default_host().await, config).await;
    let sent = reqwest::Client::new()
        .post(server.url(CREATE))
        .bearer_auth("s3cret")
        .body(r#"{"initialStock":3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    server.stop().await;
    db.cleanup().await;
}
