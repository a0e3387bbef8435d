//! What the server tells an operator about itself, beside the host's own
//! metrics: each request counted and timed by route and status, the build
//! it runs, the process (CPU, memory, files), a request id on every
//! answer and on every log line of its request, and the request log: one
//! line per request at debug level, target `eshost::access`
//! (`RUST_LOG=info,eshost::access=debug` shows them).
//!
//! Names follow the conventions scrapers know: `eshost_build_info`,
//! `eshost_http_requests_total{route,method,status}`,
//! `eshost_http_request_seconds{route,method}`, and the `process_*`
//! metrics of Prometheus' client libraries (read from `/proc` on Linux;
//! absent elsewhere).

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::Instrument;

/// The header that carries a request's id, both ways.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a client; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Route,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
    method: &'static str,
}

/// The route's template (`/v1/aggregates/{aggregate}/{id}`), never the
/// path a client sent, so the label sets stay bounded. Axum keeps each
/// template once; a request's copy is a reference to it, not a string.
#[derive(Clone, Debug)]
struct Route(Option<MatchedPath>);

/// The command route, as matched.
const COMMAND_ROUTE: &str = "/v1/aggregates/{aggregate}/{id}/commands/{command}";

impl Route {
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or("(unmatched)", MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

/// The HTTP layer's metrics.
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Family<RouteLabels, Histogram>,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics").finish_non_exhaustive()
    }
}

impl HttpMetrics {
    /// The HTTP layer's metrics, the build and the process, in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to about 26 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 19,
            ))
        });
        {
            let eshost = registry.sub_registry_with_prefix("eshost");
            eshost.register(
                "build",
                "The running build",
                Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
            );
            eshost.register(
                "http_requests",
                "HTTP requests answered, by route template, method and status",
                requests.clone(),
            );
            eshost.register(
                "http_request_seconds",
                "Time from a request's headers to its answer's head, by route template and method",
                seconds.clone(),
            );
        }
        registry.register_collector(Box::new(Process));
        Self { requests, seconds }
    }

    fn count(&self, route: Route, method: &'static str, status: u16, took: f64) {
        self.seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(took);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }
}

/// What [`observe`] needs: where to count, and whether spans are exported.
#[derive(Clone, Debug)]
pub struct Observe {
    pub metrics: Arc<HttpMetrics>,
    /// Where each command's latency is counted for the console.
    pub history: Arc<crate::history::History>,
    /// Spans are exported (OpenTelemetry): the request's span carries the
    /// HTTP attributes, and continues a caller's `traceparent`.
    pub traces: bool,
}

/// Gives each request an id (the client's `X-Request-Id` if it is short
/// visible ASCII, else a new one), runs it inside a span that carries the
/// id (so every log line of the request names it), sends the id back, and
/// counts and times the request by route and status, and writes the
/// request log's line. With traces, the span is named and described as
/// OpenTelemetry's HTTP conventions say, and continues the trace of a
/// W3C `traceparent` the request carries.
pub async fn observe(
    axum::extract::State(observe): axum::extract::State<Observe>,
    mut request: Request,
    next: Next,
) -> Response {
    let metrics = &observe.metrics;
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| value.len() <= MAX_REQUEST_ID && value.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| {
            let mut text = [0u8; uuid::fmt::Simple::LENGTH];
            let text = uuid::Uuid::new_v4().simple().encode_lower(&mut text);
            HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
        });
    request.headers_mut().insert(REQUEST_ID.clone(), id.clone());
    let route = Route(request.extensions().get::<MatchedPath>().cloned());
    let method = method_label(request.method());
    // The path only: a query may hold an access token.
    let path = access_logged().then(|| request.uri().path().to_owned());
    // Two call sites: without traces the span has only its id, so the
    // request log's span costs what it always did.
    let span = if observe.traces {
        let span = tracing::info_span!(
            "request",
            id = id.to_str().unwrap_or("-"),
            otel.name = tracing::field::Empty,
            otel.kind = "server",
            http.request.method = method,
            http.route = route.as_str(),
            http.response.status_code = tracing::field::Empty,
        );
        describe_for_traces(&span, &request, &route, method);
        span
    } else {
        tracing::info_span!("request", id = id.to_str().unwrap_or("-"))
    };
    let mut response = next.run(request).instrument(span.clone()).await;
    response.headers_mut().insert(REQUEST_ID.clone(), id);
    let status = response.status().as_u16();
    if observe.traces {
        span.record("http.response.status_code", status);
    }
    let took = started.elapsed();
    if let Some(path) = path {
        let token = response.extensions().get::<crate::auth::TokenName>();
        span.in_scope(|| {
            tracing::debug!(
                target: "eshost::access",
                method,
                path,
                token = token.map(|t| &*t.0),
                status,
                micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            )
        });
    }
    if route.as_str() == COMMAND_ROUTE {
        observe.history.record(took);
    }
    metrics.count(route, method, status, took.as_secs_f64());
    response
}

/// The span named as OpenTelemetry's HTTP server conventions say, under
/// the caller's trace if the request carries a `traceparent`.
fn describe_for_traces(span: &tracing::Span, request: &Request, route: &Route, method: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.record("otel.name", format!("{method} {}", route.as_str()));
    if request.headers().contains_key("traceparent") {
        let extractor = opentelemetry_http::HeaderExtractor(request.headers());
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&extractor)
        });
        // Fails only without an OpenTelemetry layer, when nothing is exported.
        let _ = span.set_parent(parent);
    }
}

/// Whether the request log is on: the filter is set once at start.
fn access_logged() -> bool {
    tracing::enabled!(target: "eshost::access", tracing::Level::DEBUG)
}

/// A bounded label for a method: the ones the API serves, else "other".
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// The process metrics Prometheus' client libraries export, read from
/// `/proc` at each scrape.
#[derive(Debug)]
struct Process;

/// Clock ticks per second in `/proc/<pid>/stat`: USER_HZ, 100 on every
/// architecture Linux's ABI fixes it for.
const USER_HZ: f64 = 100.0;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stat) = ProcessStat::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stat.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                stat.resident_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                stat.start_time_seconds,
            ),
            ("process_open_fds", "Open file descriptors", stat.open_fds),
            (
                "process_max_fds",
                "The most file descriptors the process may open",
                stat.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

/// What `/proc` says of this process.
struct ProcessStat {
    cpu_seconds: f64,
    resident_bytes: Option<f64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

impl ProcessStat {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces: count fields after
        // its closing parenthesis, where field 3 starts.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let cpu_seconds = (field(14)? + field(15)?) / USER_HZ;
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        let start_time_seconds = boot_time
            .zip(field(22))
            .map(|(boot, ticks)| boot + ticks / USER_HZ);
        let resident_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                    .map(|kb| kb * 1024.0)
            });
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64);
        let max_fds = crate::connections::open_file_limit().map(|n| n as f64);
        Some(Self {
            cpu_seconds,
            resident_bytes,
            start_time_seconds,
            open_fds,
            max_fds,
        })
    }
}
