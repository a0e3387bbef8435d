//! OpenTelemetry: eshost's spans exported as traces by OTLP over HTTP,
//! configured by OpenTelemetry's standard variables and off unless they
//! name where to send them.
//!
//! - On when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, unless
//!   `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The exporter
//!   reads the rest (`..._HEADERS`, `..._TIMEOUT`, `..._COMPRESSION`), the
//!   SDK the sampler (`OTEL_TRACES_SAMPLER`, `..._ARG`), the batch
//!   (`OTEL_BSP_*`: a bounded queue that drops when full) and the
//!   resource (`OTEL_SERVICE_NAME`, default `eshost`;
//!   `OTEL_RESOURCE_ATTRIBUTES`).
//! - OTLP over HTTP with protobuf (`http/protobuf`, the protocol's
//!   default); gRPC and JSON are not built in, and asking for them stops
//!   the start with one line.
//! - Spans from eshost's own crates only, and no log events: the log
//!   lines stay in the log.
//! - W3C trace context (`traceparent`) is the propagator: a request that
//!   carries one continues its caller's trace.
//!
//! The exporter's requests go through the binary's own HTTP client
//! (reqwest) on its tokio runtime; the SDK's batch thread waits for them
//! there, never an async worker.

use anyhow::{Result, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// How long the last spans may take to leave at exit.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// The tracer provider while traces are exported; shut down (its last
/// spans sent) by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Whether the standard variables ask for traces.
fn wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let exporter = var("OTEL_TRACES_EXPORTER").unwrap_or_default();
    let none = exporter.split(',').any(|e| e.trim() == "none");
    !disabled
        && !none
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The protocol the variables name, if it is one built in.
fn protocol(var: impl Fn(&str) -> Option<String>) -> Result<Protocol> {
    let named = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    match named.trim() {
        "" | "http/protobuf" => Ok(Protocol::HttpBinary),
        other => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other}: eshost exports traces over http/protobuf only; \
             point OTEL_EXPORTER_OTLP_ENDPOINT at an OTLP/HTTP receiver (port 4318 on a collector)"
        ),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Telemetry {
    /// Traces as the environment asks; `None` when it does not. Call from
    /// inside the tokio runtime, whose handle the exporter keeps.
    pub fn from_env() -> Result<Option<Self>> {
        if !wanted(env) {
            return Ok(None);
        }
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(protocol(env)?)
            .with_http_client(OnRuntime {
                client: reqwest::Client::new(),
                runtime: tokio::runtime::Handle::current(),
            })
            .build()?;
        let named = env("OTEL_SERVICE_NAME").is_some()
            || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
        let resource = match named {
            true => Resource::builder().build(),
            false => Resource::builder().with_service_name("eshost").build(),
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Some(Self { provider }))
    }

    /// The tracing layer that turns eshost's spans into OpenTelemetry's.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider.tracer("eshost");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("eshost")
            }))
    }

    /// Sends the spans still queued, within [`FLUSH_AT_EXIT`], off the
    /// async workers (the SDK waits on a thread).
    pub async fn shutdown(self) {
        let provider = self.provider;
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_AT_EXIT))
                .await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "could not send the last spans");
        }
    }
}

/// The exporter's HTTP client: the binary's reqwest, run on its tokio
/// runtime (the SDK's batch thread has none of its own).
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = sent.await??;
        Ok(Response::builder().status(status).body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_named() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert!(!wanted(vars(&[])));
        assert!(wanted(vars(&[endpoint])));
        assert!(wanted(vars(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces"
        )])));
        assert!(!wanted(vars(&[endpoint, ("OTEL_SDK_DISABLED", "true")])));
        assert!(!wanted(vars(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])));
    }

    #[test]
    fn only_http_protobuf_is_built_in() {
        assert!(protocol(vars(&[])).is_ok());
        assert!(protocol(vars(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])).is_ok());
        let grpc = protocol(vars(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err();
        assert!(grpc.to_string().contains("http/protobuf only"), "{grpc}");
    }
}
