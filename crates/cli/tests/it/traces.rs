//! OpenTelemetry: `eshost serve` exports its spans to an OTLP/HTTP
//! receiver when the standard variables name one, continues a caller's
//! `traceparent` through the command's queue wait, decision, append and
//! commit to the projection and the relay, and exports nothing when the
//! variables do not ask for it.

use crate::relay::{RelayProcess, nats_url};
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

    /// The variables that send `eshost serve`'s spans here, in batches
    /// sent every 100 ms.
    fn variables(&self) -> [(&str, &str); 2] {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]
    }

    /// Waits (20 s at most) until a span named `name` in trace `trace_id`
    /// has arrived.
    async fn wait_for(&self, name: &str, trace_id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self
            .spans()
            .iter()
            .any(|s| s.name == name && hex::encode(&s.trace_id) == trace_id)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {name} span in trace {trace_id}: {:#?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `eshost serve` on `db` with these variables (and the projections
/// running, when `projections`); killed if dropped before [`Served::stop`]
/// (a failed assertion).
struct Served {
    process: Option<std::process::Child>,
    base: String,
    _cache: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Served {
    fn start(db: &TestDb, otel: &[(&str, &str)], projections: bool) -> Self {
        let cache = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_eshost"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &db.url)
            .env("ESHOST_MODULES", modules_dir())
            .env("ESHOST_CACHE_DIR", cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if projections {
            command
                .arg("--run-projections")
                .env("ESHOST_PROJECTIONS", projections_dir());
        }
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
        let mut process = command.spawn().unwrap();
        let base = listening_address(&mut process);
        Self {
            process: Some(process),
            base,
            _cache: cache,
        }
    }

    /// Sends `command` to FlashSaleItem `id`, with `traceparent` if given.
    async fn send(&self, id: &str, command: &str, body: &str, traceparent: Option<&str>) {
        let mut post = reqwest::Client::new()
            .post(format!(
                "{}/v1/aggregates/FlashSaleItem/{id}/commands/{command}",
                self.base
            ))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(traceparent) = traceparent {
            post = post.header("traceparent", traceparent);
        }
        let answer = post.send().await.unwrap();
        assert_eq!(answer.status(), 200, "{command} {id}");
    }

    /// Stops the server with SIGTERM (it sends its last spans) and waits
    /// for a clean exit.
    async fn stop(mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let status =
            tokio::task::spawn_blocking(move || terminate(&mut process, Duration::from_secs(30)))
                .await
                .unwrap();
        assert_eq!(status.code(), Some(0));
    }
}

/// Serves with these variables, sends one command with `traceparent`
/// and one without, stops the server, and returns what the receiver got.
async fn serve_and_send(receiver: &Receiver, otel: &[(&str, &str)]) -> Vec<Span> {
    let db = TestDb::sqlite().await;
    let served = Served::start(&db, otel, false);
    let create = r#"{"initialStock":2}"#;
    served
        .send("traced", "CreateFlashSale", create, Some(TRACEPARENT))
        .await;
    served
        .send("untraced", "CreateFlashSale", create, None)
        .await;
    served.stop().await;
    receiver.spans()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// With `OTEL_EXPORTER_OTLP_ENDPOINT`, each request is a server span named
/// by its route; one sent with a `traceparent` continues that trace under
/// that parent, one without starts its own. Guest calls on a fuel budget
/// say on their `decide` span what they used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_exported_as_spans_continuing_the_caller_s_trace() {
    let receiver = Receiver::start().await;
    let [endpoint, delay] = receiver.variables();
    let fuel = ("ESHOST_GUEST_FUEL", "100000000");
    let spans = serve_and_send(&receiver, &[endpoint, delay, fuel]).await;
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
    let decide = spans
        .iter()
        .find(|s| s.name == "decide" && hex::encode(&s.trace_id) == TRACE_ID)
        .expect("the guest's decision in the caller's trace");
    let used = number(decide, "fuel");
    assert!(used > 0 && used < 100_000_000, "{used}");
}

/// `OTEL_SDK_DISABLED=true` turns the export off, endpoint or not (and
/// without an endpoint it is off: see the unit tests of `telemetry`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_when_disabled() {
    let receiver = Receiver::start().await;
    let [endpoint, delay] = receiver.variables();
    let spans = serve_and_send(&receiver, &[endpoint, delay, ("OTEL_SDK_DISABLED", "true")]).await;
    assert!(spans.is_empty(), "{spans:#?}");
}

const COMMAND_ROUTE: &str = "POST /v1/aggregates/{aggregate}/{id}/commands/{command}";

/// The one span named `name` among `spans`.
fn one<'a>(spans: &[&'a Span], name: &str) -> &'a Span {
    let named: Vec<&&Span> = spans.iter().filter(|s| s.name == name).collect();
    let [span] = named[..] else {
        panic!("one {name} span: {spans:#?}");
    };
    span
}

/// An attribute's value, as text.
fn attribute(span: &Span, key: &str) -> String {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)
        .unwrap_or_else(|| panic!("{key} on {span:#?}"));
    format!("{:?}", value.value)
}

/// A numeric attribute's value (the exporter sends an unsigned integer as
/// an integer or as its digits).
fn number(span: &Span, key: &str) -> u64 {
    let value = attribute(span, key);
    value
        .split(|c: char| !c.is_ascii_digit())
        .find(|digits| !digits.is_empty())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a number: {value}"))
}

/// One purchase over HTTP is one trace: the request (continuing the
/// caller's `traceparent`), its queue wait, the guest's decision, the
/// append, the commit and the projection that read its event, each a
/// child of the span that caused it. A group commit links the append of
/// every command it carried. The relay puts the trace on the event's NATS
/// message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_one_trace_from_the_request_to_the_projection_and_the_relay() {
    let receiver = Receiver::start().await;
    let db = TestDb::sqlite().await;
    let served = Served::start(&db, &receiver.variables(), true);
    let create = r#"{"initialStock":5}"#;
    served.send("sale", "CreateFlashSale", create, None).await;
    let purchase = r#"{"buyerId":"ann","quantity":1}"#;
    served
        .send("sale", "PurchaseItem", purchase, Some(TRACEPARENT))
        .await;
    receiver.wait_for("project", TRACE_ID).await;

    // Many purchases at once, each in a trace of its own, so that
    // commits carry several.
    const BURST: usize = 24;
    for i in 0..BURST {
        served
            .send(&format!("burst-{i}"), "CreateFlashSale", create, None)
            .await;
    }
    let burst_traces: Vec<String> = (0..BURST)
        .map(|i| format!("00-{:032x}-{:016x}-01", i + 1, i + 1))
        .collect();
    let sends = burst_traces.iter().enumerate().map(|(i, traceparent)| {
        let id = format!("burst-{i}");
        let served = &served;
        async move {
            served
                .send(&id, "PurchaseItem", purchase, Some(traceparent))
                .await
        }
    });
    futures_util::future::join_all(sends).await;
    served.stop().await;

    let spans = receiver.spans();
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| hex::encode(&s.trace_id) == TRACE_ID)
        .collect();
    let request = one(&trace, COMMAND_ROUTE);
    assert_eq!(hex::encode(&request.parent_span_id), PARENT_ID);
    let [queue, decide, append, commit, project] =
        ["queue", "decide", "append", "commit", "project"].map(|name| one(&trace, name));
    for child in [queue, decide, append, project] {
        assert_eq!(
            child.parent_span_id, request.span_id,
            "{} under the request",
            child.name
        );
    }
    assert_eq!(commit.parent_span_id, append.span_id, "commit under append");
    assert!(attribute(decide, "command").contains("PurchaseItem"));
    assert!(attribute(project, "projection").contains("sales-summary"));
    assert!(
        commit.links.iter().any(|l| l.span_id == append.span_id),
        "{commit:#?}"
    );

    // Every purchase of the burst appended once, and each append is
    // linked by exactly one commit, which links as many as it carried.
    let burst_appends: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "append")
        .filter(|s| {
            let trace_id = hex::encode(&s.trace_id);
            burst_traces.iter().any(|t| t[3..35] == trace_id)
        })
        .collect();
    assert_eq!(burst_appends.len(), BURST);
    let commits: Vec<&Span> = spans.iter().filter(|s| s.name == "commit").collect();
    for commit in &commits {
        let carried = number(commit, "commands");
        assert_eq!(
            carried,
            commit.links.len() as u64,
            "a commit of {carried} commands links {}",
            commit.links.len()
        );
    }
    for append in &burst_appends {
        let linking = commits
            .iter()
            .filter(|c| c.links.iter().any(|l| l.span_id == append.span_id))
            .count();
        assert_eq!(linking, 1, "one commit links {append:#?}");
    }

    // The relay, reading the same store, carries each event's trace on.
    let nats = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (stream, prefix) = (format!("ESHOST_TRACE_{run}"), format!("trace.{run}"));
    let relay = RelayProcess::start(&db, &stream, &prefix);
    let events = 2 + 2 * BURST as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let relayed = loop {
        if let Ok(mut relayed) = js.get_stream(&stream).await
            && relayed.info().await.map_or(0, |i| i.state.messages) >= events
        {
            break relayed;
        }
        assert!(tokio::time::Instant::now() < deadline, "relayed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(relay);
    let mut carried = 0;
    for sequence in 1..=events {
        let message = relayed.get_raw_message(sequence).await.unwrap();
        let event: eshost::RecordedEvent = serde_json::from_slice(&message.payload).unwrap();
        let header = message.headers.get("traceparent").map(|h| h.as_str());
        assert_eq!(header, event.traceparent(), "{event:?}");
        if header.is_some_and(|h| h.contains(TRACE_ID)) {
            assert_eq!(event.name, "ItemPurchased");
            carried += 1;
        }
    }
    assert_eq!(carried, 1, "the purchase's message carries its trace");
    let _ = js.delete_stream(&stream).await;
}
