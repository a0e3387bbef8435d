//! OpenTelemetry: `eshost serve` exports its spans to an OTLP/HTTP
//! receiver when the standard variables name one, continues a caller's
//! `traceparent`, and exports nothing when they do not.

use crate::util::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An OTLP/HTTP receiver on a port of its own: every span it was sent.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let request =
                        ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                    let mut kept = kept.lock().unwrap();
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            kept.extend(scope.spans);
                        }
                    }
                    // An empty ExportTraceServiceResponse.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// Serves with these variables, sends one command with `traceparent`
/// and one without, stops the server (which sends its last spans), and
/// returns what the receiver got.
async fn serve_and_send(receiver: &Receiver, otel: &[(&str, &str)]) -> Vec<Span> {
    let db = TestDb::sqlite().await;
    let cache = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_eshost"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env("ESHOST_MODULES", modules_dir())
        .env("ESHOST_CACHE_DIR", cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
    ] {
        command.env_remove(name);
    }
    for (name, value) in otel {
        command.env(name, value);
    }
    let mut server = command.spawn().unwrap();
    let base = listening_address(&mut server);
    let client = reqwest::Client::new();
    for (id, traceparent) in [("traced", Some(TRACEPARENT)), ("untraced", None)] {
        let mut post = client
            .post(format!(
                "{base}/v1/aggregates/FlashSaleItem/{id}/commands/CreateFlashSale"
            ))
            .header("content-type", "application/json")
            .body(r#"{"initialStock":2}"#);
        if let Some(traceparent) = traceparent {
            post = post.header("traceparent", traceparent);
        }
        assert_eq!(post.send().await.unwrap().status(), 200);
    }
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || {
        wait_with_deadline(&mut server, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    receiver.spans()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// With `OTEL_EXPORTER_OTLP_ENDPOINT`, each request is a server span named
/// by its route; one sent with a `traceparent` continues that trace under
/// that parent, one without starts its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_exported_as_spans_continuing_the_caller_s_trace() {
    let receiver = Receiver::start().await;
    let spans = serve_and_send(
        &receiver,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let commands: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "POST /v1/aggregates/{aggregate}/{id}/commands/{command}")
        .collect();
    assert_eq!(commands.len(), 2, "{spans:#?}");
    let continued: Vec<&&Span> = commands
        .iter()
        .filter(|s| hex::encode(&s.trace_id) == TRACE_ID)
        .collect();
    let [continued] = continued[..] else {
        panic!("one span in the caller's trace: {commands:#?}");
    };
    assert_eq!(hex::encode(&continued.parent_span_id), PARENT_ID);
    let own = commands
        .iter()
        .find(|s| hex::encode(&s.trace_id) != TRACE_ID)
        .unwrap();
    assert!(
        own.parent_span_id.is_empty(),
        "a trace of its own: {own:#?}"
    );
    let status_code = continued
        .attributes
        .iter()
        .find(|a| a.key == "http.response.status_code")
        .expect("the answer's status");
    assert!(
        format!("{status_code:?}").contains("200"),
        "{status_code:?}"
    );
}

/// `OTEL_SDK_DISABLED=true` turns the export off, endpoint or not (and
/// without an endpoint it is off: see the unit tests of `telemetry`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_when_disabled() {
    let receiver = Receiver::start().await;
    let spans = serve_and_send(
        &receiver,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    )
    .await;
    assert!(spans.is_empty(), "{spans:#?}");
}
