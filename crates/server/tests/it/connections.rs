//! The server's connections as a careless or hostile client uses them:
//! connections that send nothing, headers or bodies that never finish, a
//! body over the limit announced with `Expect: 100-continue`, a shutdown
//! with all of these open. Raw TCP, so nothing is sent that the test does
//! not write.

use crate::util::*;
use eshost_server::ServerConfig;
use eshost_server::connections::ConnectionLimits;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PURCHASE: &str = "/v1/aggregates/FlashSaleItem/s1/commands/PurchaseItem";

fn quick(header_ms: u64, body_ms: u64) -> ServerConfig {
    ServerConfig {
        connections: ConnectionLimits {
            header_timeout: Duration::from_millis(header_ms),
            body_timeout: Duration::from_millis(body_ms),
            ..ConnectionLimits::default()
        },
        ..ServerConfig::default()
    }
}

async fn connect(server: &TestServer) -> TcpStream {
    let address = server.base.trim_start_matches("http://");
    TcpStream::connect(address).await.unwrap()
}

/// Reads until the server closes the connection, or `within` passes:
/// what it sent, and whether it closed.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&answer).into(), true),
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&answer).into(), false),
        }
    }
}

/// A connection that sends nothing, one that stops halfway through its
/// headers, and one kept alive after an answer are all closed once the
/// header timeout passes. (They stayed open for good.)
#[tokio::test]
async fn idle_and_slow_connections_are_closed_after_the_header_timeout() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(db.default_host().await, quick(300, 10_000)).await;
    let mut silent = connect(&server).await;
    let mut half = connect(&server).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut kept = connect(&server).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    for (what, tcp) in [
        ("silent", &mut silent),
        ("half-sent headers", &mut half),
        ("kept alive", &mut kept),
    ] {
        let (answer, closed) = read_until_closed(tcp, Duration::from_secs(5)).await;
        assert!(
            closed,
            "{what}: still open 5 s after a 300 ms header timeout"
        );
        if what == "kept alive" {
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
    }
    server.stop().await;
    db.cleanup().await;
}

/// A body over the limit by its Content-Length is refused at once: a
/// client asking `Expect: 100-continue` gets 413, not `100 Continue`.
#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_100_continue() {
    let db = TestDb::sqlite().await;
    let server = TestServer::start(db.default_host().await, ServerConfig::default()).await;
    let mut tcp = connect(&server).await;
    let request = format!(
        "POST {PURCHASE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nIdempotency-Key: huge-1\r\nContent-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("payload_too_large") && answer.contains("huge-1"),
        "{answer}"
    );
    assert!(closed, "the unread body leaves the connection unusable");
    server.stop().await;
    db.cleanup().await;
}

/// A body that stops arriving is answered 408 once the body timeout
/// passes, and nothing is recorded. (The request waited for good.)
#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408() {
    let db = TestDb::sqlite().await;
    let host = db.default_host().await;
    host.execute(&create("s1", 5)).await.unwrap();
    let server = TestServer::start(host.clone(), quick(10_000, 300)).await;
    let mut tcp = connect(&server).await;
    let request = format!(
        "POST {PURCHASE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"buyerId\""
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("request_timeout"), "{answer}");
    let events = host
        .store()
        .streams()
        .load(&eshost::StreamId::new("FlashSaleItem", "s1"), 0)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "only the creation is recorded");
    server.stop().await;
    db.cleanup().await;
}

/// Stopping closes idle and half-sent connections at once rather than
/// waiting out the shutdown timeout for them (20 half-sent requests held
/// it for all of it), while a command being answered still finishes.
#[tokio::test]
async fn stopping_closes_idle_and_half_sent_connections_at_once() {
    let db = TestDb::sqlite().await;
    let host = db.default_host().await;
    host.execute(&create("s1", 5)).await.unwrap();
    let config = ServerConfig {
        shutdown_timeout: Duration::from_secs(20),
        ..ServerConfig::default()
    };
    let server = TestServer::start(host, config).await;
    let mut open = Vec::new();
    for n in 0..20 {
        let mut tcp = connect(&server).await;
        let partial = match n % 3 {
            0 => String::new(),
            1 => "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_string(),
            _ => format!(
                "POST {PURCHASE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40\r\n\r\n{{"
            ),
        };
        tcp.write_all(partial.as_bytes()).await.unwrap();
        open.push(tcp);
    }
    // Let the server see them all before it stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stopping took {took:?} with 20 idle or half-sent connections open"
    );
    for mut tcp in open {
        let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(1)).await;
        assert!(closed);
    }
    db.cleanup().await;
}

/// With TLS, a request over HTTPS is answered, and a connection that
/// never starts its handshake is closed at the header timeout, like one
/// that never sends its headers.
#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_closed_after_the_header_timeout() {
    let db = TestDb::sqlite().await;
    let certificates = TestCertificates::new();
    let tls = eshost_server::tls::Tls::from_pem_files(&certificates.cert, &certificates.key)
        .expect("the test certificate serves");
    let config = ServerConfig {
        tls: Some(tls),
        ..quick(300, 10_000)
    };
    let server = TestServer::start(db.default_host().await, config).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certificates.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let answer = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let address = server.base.trim_start_matches("https://");
    let mut silent = TcpStream::connect(address).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a connection with no handshake stayed open");
    server.stop().await;
}
