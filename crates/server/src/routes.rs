//! The HTTP routes: commands, aggregates, state, events, views, health.
//! Handlers are thin: read the request, call the [`Host`], shape the answer.

use super::App;
use super::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use eshost_api::{
    AggregateInfo, CAUSATION_ID, CORRELATION_ID, CommandOutcome, CommandRequest, DEFAULT_PAGE,
    EventsPage, Health, IDEMPOTENCY_KEY, JsonText, MAX_PAGE, Problem, ProblemType, Readiness,
    ReloadReport, SnapshotInfo, StateAnswer, ViewDocument,
};
use eshost_core::StreamId;
use eshost_core::view::stored_key;
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Only events with a greater sequence number; 0 (the default) reads
    /// from the first.
    after: Option<u64>,
    /// At most this many events (1 to 10,000; default 1,000).
    #[param(minimum = 1, maximum = 10_000)]
    limit: Option<u64>,
}

/// `POST /v1/aggregates/{aggregate}/{id}/commands/{command}`.
#[utoipa::path(
    post,
    path = "/v1/aggregates/{aggregate}/{id}/commands/{command}",
    operation_id = "execute_command",
    summary = "Run a command on one aggregate",
    description = "The aggregate's component decides; its events are appended under the command's id. \
        Every answer, success or error, carries `command_id`: resending with it as `Idempotency-Key` \
        is answered with the recorded outcome and never runs the command twice.",
    params(
        ("aggregate" = String, Path, description = "The aggregate type, as `GET /v1/aggregates` lists it", example = "FlashSaleItem"),
        ("id" = String, Path, description = "The aggregate's id (one stream)", example = "sku-1"),
        ("command" = String, Path, description = "The command's name", example = "PurchaseItem"),
        ("Idempotency-Key" = Option<String>, Header, description = "The command id; the host makes one when absent"),
        ("X-Correlation-Id" = Option<String>, Header, description = "Recorded in every event's metadata"),
        ("X-Causation-Id" = Option<String>, Header, description = "Recorded in every event's metadata"),
    ),
    request_body(content = Object, content_type = "application/json", description = "The command's payload; an empty body is `{}`"),
    responses(
        (status = 200, description = "Recorded (or recorded earlier, `replayed`)", body = CommandOutcome),
        (status = 400, description = "A malformed path or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`foreign_origin` (a server without a token): an Origin or Host that is not this server's; `forbidden`: the token does not have the write scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_aggregate` or `unknown_command`", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "`request_timeout`: the body did not arrive in time; nothing recorded", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`precondition_failed`, or `conflict` after every retry", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large` (refused from `Content-Length` before the body is read)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type` (a server without a token): the body not sent as application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_payload`, `invalid_command`, `invalid_id` or `idempotency_key_reused`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`overloaded`: the aggregate's queue is full", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 500, description = "`guest_fault` (nothing recorded), `store_failed` (the store failed in a way resending cannot fix) or `internal`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable`, `shutting_down` or `too_many_connections`; resend with the same key", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 504, description = "`timeout`: outcome unknown; resend with the same key", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "commands"
)]
pub async fn command(
    State(app): State<App>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: CommandHeaders,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CommandOutcome>, ApiError> {
    let Path((aggregate, id, command)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let header = |name: &str, value: Option<HeaderValue>| -> Result<Option<String>, ApiError> {
        value
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| ApiError::bad_request(format!("{name} is not visible ASCII")))
            })
            .transpose()
    };
    // The id is settled before anything can fail, so every answer carries
    // it: a caller can always resend safely.
    let key = header(IDEMPOTENCY_KEY, headers.idempotency_key)?;
    let unsent = CommandRequest::new(aggregate, id, command, String::new()).with_command_id(key);
    let command_id = unsent.command_id.as_str().to_string();
    let with_id = |e: ApiError| e.with_command_id(&command_id);
    let body = body.map_err(|e| with_id(body_error(e)))?;
    let payload = match std::str::from_utf8(&body) {
        Ok(text) if text.trim().is_empty() => "{}".to_string(),
        Ok(text) => text.to_string(),
        Err(e) => {
            return Err(with_id(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_payload",
                format!("the body is not UTF-8: {e}"),
            )));
        }
    };
    let request = CommandRequest {
        payload,
        correlation_id: header(CORRELATION_ID, headers.correlation_id).map_err(with_id)?,
        causation_id: header(CAUSATION_ID, headers.causation_id).map_err(with_id)?,
        ..unsent
    };
    let deadline = app.config.command_timeout;
    match tokio::time::timeout(deadline, app.host.execute(&request)).await {
        Ok(Ok(outcome)) => Ok(Json(outcome)),
        Ok(Err(error)) => Err(with_id(error.into())),
        Err(_elapsed) => Err(ApiError::timeout(&command_id, deadline)),
    }
}

/// The headers a command reads, taken out of the request as they are: the
/// command path reads three headers, and copying the whole map for them
/// is most of what a request's headers cost.
pub struct CommandHeaders {
    idempotency_key: Option<HeaderValue>,
    correlation_id: Option<HeaderValue>,
    causation_id: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for CommandHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            idempotency_key: parts.headers.remove(IDEMPOTENCY_KEY),
            correlation_id: parts.headers.remove(CORRELATION_ID),
            causation_id: parts.headers.remove(CAUSATION_ID),
        })
    }
}

/// A body that could not be read: too large, or cut off.
fn body_error(error: BytesRejection) -> ApiError {
    let status = error.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "payload_too_large", error.body_text())
    } else {
        ApiError::bad_request(error.body_text())
    }
}

/// `GET /v1/aggregates`.
#[utoipa::path(
    get,
    path = "/v1/aggregates",
    operation_id = "list_aggregates",
    summary = "The loaded aggregate types, their versions, commands and events",
    responses((status = 200, description = "One entry per loaded component", body = Vec<AggregateInfo>)),
    tag = "aggregates"
)]
pub async fn aggregates(State(app): State<App>) -> Json<Vec<AggregateInfo>> {
    let mut loaded = app.aggregates();
    // The file by its name: where the server keeps it is not a client's
    // business.
    for info in &mut loaded {
        if let Some(name) = info.file.file_name() {
            info.file = name.into();
        }
    }
    Json(loaded)
}

/// `GET /v1/aggregates/{aggregate}/{id}`.
#[utoipa::path(
    get,
    path = "/v1/aggregates/{aggregate}/{id}",
    operation_id = "get_state",
    summary = "One aggregate's state, as its component renders it",
    params(
        ("aggregate" = String, Path, description = "The aggregate type", example = "FlashSaleItem"),
        ("id" = String, Path, description = "The aggregate's id", example = "sku-1"),
    ),
    responses(
        (status = 200, description = "The state and the version it includes", body = StateAnswer),
        (status = 400, description = "A malformed path", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_aggregate`, or `not_found`: the aggregate has no events (never created)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_id`", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`guest_fault`: the component could not rebuild or render the state; `store_failed`: the store failed in a way resending cannot fix", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 504, description = "`timeout`: no answer within --read-timeout-ms", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "aggregates"
)]
pub async fn state(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<StateAnswer>, ApiError> {
    let Path((aggregate, id)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (json, version) = app.host.render(&aggregate, &id).await?;
    let state = JsonText::new(json).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "guest_fault",
            format!("{aggregate}: to-json returned text that is not JSON: {e}"),
        )
    })?;
    // The snapshot the serving component would load, if any.
    let snapshot = match app.host.modules().get(&aggregate) {
        Some(component) => app
            .host
            .store()
            .streams()
            .load_snapshot(&StreamId::new(&aggregate, &id), &component.digest)
            .await?
            .map(|s| SnapshotInfo {
                version: s.version,
                bytes: s.state.len() as u64,
            }),
        None => None,
    };
    Ok(Json(StateAnswer {
        aggregate,
        id,
        version,
        state,
        snapshot,
    }))
}

/// `GET /v1/views/{projection}/{key}`.
#[utoipa::path(
    get,
    path = "/v1/views/{projection}/{key}",
    operation_id = "get_view_document",
    summary = "One document of a projection's live view",
    description = "Read from the store: what `eshost projection run` has built. A rebuild never shows part-built: a read sees the old view or the new one.",
    params(
        ("projection" = String, Path, description = "The projection", example = "sales-summary"),
        ("key" = String, Path, description = "The document's key", example = "total"),
    ),
    responses(
        (status = 200, description = "The document", body = ViewDocument),
        (status = 400, description = "A malformed path", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: the view has no such document", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_id`: a key no document can have (empty, or a NUL)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`store_failed`: the store failed in a way resending cannot fix", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 504, description = "`timeout`: no answer within --read-timeout-ms", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "views"
)]
pub async fn view_document(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ViewDocument>, ApiError> {
    let Path((projection, key)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // The keys a projection can write: anything else is the caller's
    // mistake, not a lookup for the store to fail on. A key over the
    // stored limit is looked up where the projection stored it.
    if key.is_empty() || key.contains('\0') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_id",
            "a document key is not empty and holds no NUL",
        ));
    }
    match app
        .host
        .store()
        .views()
        .view_document(&projection, &stored_key(&key))
        .await?
    {
        Some(document) => Ok(Json(ViewDocument {
            projection,
            key,
            document,
        })),
        None => Err(ApiError::not_found(format!(
            "{projection} has no document {key:?}"
        ))),
    }
}

/// `GET /v1/aggregates/{aggregate}/{id}/events?after=N&limit=M`.
#[utoipa::path(
    get,
    path = "/v1/aggregates/{aggregate}/{id}/events",
    operation_id = "list_events",
    summary = "One aggregate's events, a page at a time, oldest first",
    params(
        ("aggregate" = String, Path, description = "The aggregate type", example = "FlashSaleItem"),
        ("id" = String, Path, description = "The aggregate's id", example = "sku-1"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of events; `next_after` when more follow", body = EventsPage),
        (status = 400, description = "A malformed path or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`unknown_aggregate`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_id`", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`store_failed`: the store failed in a way resending cannot fix", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`store_unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 504, description = "`timeout`: no answer within --read-timeout-ms", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "aggregates"
)]
pub async fn events(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<EventsPage>, ApiError> {
    let Path((aggregate, id)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Query(page) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = page.after.unwrap_or(0);
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    // One more than asked, to tell whether another page follows.
    let mut events = app
        .host
        .events_page(&aggregate, &id, after, Some(limit + 1))
        .await?;
    let more = events.len() as u64 > limit;
    events.truncate(limit as usize);
    let next_after = more.then(|| events.last().map_or(after, |e| e.sequence));
    Ok(Json(EventsPage { events, next_after }))
}

/// The most events `tail` starts back from the end of the log.
const MAX_TAIL: u64 = 1_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FollowQuery {
    /// Only events after this position; 0 (the default) reads from the
    /// first. A `Last-Event-ID` header (an EventSource reconnecting) wins.
    from: Option<i64>,
    /// Only this aggregate type's events.
    aggregate: Option<String>,
    /// Without `from`: start with the newest this many events (of the
    /// aggregate type, if one is named), at most 1,000, rather than the
    /// first.
    tail: Option<u64>,
    /// The bearer token, for a browser's `EventSource`, which cannot send
    /// an `Authorization` header (read by the auth layer, never logged).
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// `GET /v1/events?from=P`: the global log as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "follow_events",
    summary = "Every stream's events in global order, then new ones as they are recorded (Server-Sent Events)",
    description = "Each event is one message: `id` its position, `data` the event as JSON. \
        An EventSource that reconnects sends the last id as `Last-Event-ID` and resumes after it. \
        The stream ends when the server shuts down; a store error ends it with an `error` message.",
    params(
        FollowQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this position"),
    ),
    responses(
        (status = 200, description = "The events, as they come", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed query or Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`overloaded`: the server serves as many followers as it may", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ),
    tag = "events"
)]
pub async fn follow_events(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<FollowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = match headers.get("last-event-id") {
        Some(id) => id
            .to_str()
            .ok()
            .and_then(|id| id.trim().parse().ok())
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a position"))?,
        None => match (query.from, query.tail) {
            (Some(from), _) => from,
            (None, Some(tail)) => {
                let log = app.host.store().log();
                log.tail_start(tail.min(MAX_TAIL), query.aggregate.as_deref())
                    .await?
            }
            (None, None) => 0,
        },
    };
    let place = app
        .followers
        .places
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!(
                    "this host already serves {} followers of the event log",
                    app.config.max_followers
                ),
            )
        })?;
    let store = app.host.store().clone();
    let signal = app.followers.signal(store.as_ref()).await;
    let from = eshost_read::subscription::Subscription {
        after,
        aggregate: query.aggregate,
    };
    let events = eshost_read::subscription::follow_with(store, from, Some(Box::new(signal)));
    let messages = events
        .map(move |event| {
            // The place is the stream's while it lives.
            let _place = &place;
            let message = match event {
                Ok(event) => Event::default()
                    .id(event.position.to_string())
                    .json_data(&event)
                    .unwrap_or_else(|e| Event::default().event("error").data(e.to_string())),
                Err(e) => Event::default().event("error").data(e.to_string()),
            };
            Ok::<_, std::convert::Infallible>(message)
        })
        .take_until(app.stopping.clone().cancelled_owned());
    Ok(Sse::new(messages)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /metrics`: Prometheus' text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Metrics in Prometheus' text format",
    responses((status = 200, description = "OpenMetrics text exposition", body = String, content_type = "application/openmetrics-text")),
    tag = "operations"
)]
pub async fn metrics(State(app): State<App>) -> Response {
    let mut text = app.host.render_metrics();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(&mut text, &app.metrics);
    let _ = prometheus_client::encoding::text::encode_eof(&mut text);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /healthz`: the process is alive and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    summary = "Liveness: the process is serving (no token needed unless --protect-probes)",
    responses((status = 200, description = "Alive", body = Health)),
    security(()),
    tag = "operations"
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    summary = "Readiness: the store answers and modules are loaded",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready (store down, nothing loaded, draining, or, with --ready-requires-read-side, a read-side problem)", body = Readiness),
    ),
    tag = "operations"
)]
pub async fn readyz(State(app): State<App>) -> Response {
    let store = match tokio::time::timeout(std::time::Duration::from_secs(2), app.host.ping()).await
    {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 2 s".to_string(),
    };
    let aggregates = app.host.modules().len();
    let read_side = app.read_side.problems();
    let read_side_ok = read_side.is_empty() || !app.config.ready_requires_read_side;
    let readiness = Readiness {
        ready: store == "ok" && aggregates > 0 && !app.host.is_shutting_down() && read_side_ok,
        store,
        aggregates,
        load_errors: app.load_errors(),
        read_side,
    };
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

/// `POST /v1/admin/reload`: reload the modules directory now; answers what
/// changed and what could not be loaded.
#[utoipa::path(
    post,
    path = "/v1/admin/reload",
    operation_id = "reload",
    summary = "Reload the modules directory now",
    responses(
        (status = 200, description = "What changed, and the files that could not be loaded", body = ReloadReport),
        (status = 404, description = "The server has no modules directory", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "admin"
)]
pub async fn reload(State(app): State<App>) -> Result<Json<ReloadReport>, ApiError> {
    let Some(reloader) = app.reloader.clone() else {
        return Err(ApiError::not_found(
            "this server has no modules directory to reload",
        ));
    };
    Ok(Json(reloader.reload(&app).await))
}

/// Any other path.
pub async fn fallback() -> ApiError {
    ApiError::not_found("no such route; see /v1/openapi.json")
}

/// A known path with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// `GET /v1/problems/{kind}`: what an error kind means. Every problem's
/// `type` points here.
#[utoipa::path(
    get,
    path = "/v1/problems/{kind}",
    operation_id = "get_problem_type",
    summary = "What an error kind means",
    params(("kind" = String, Path, description = "The error kind", example = "precondition_failed")),
    responses(
        (status = 200, description = "The kind, its status and its meaning", body = ProblemType),
        (status = 404, description = "`not_found`: no such kind", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "operations"
)]
pub async fn problem(Path(kind): Path<String>) -> Result<Json<ProblemType>, ApiError> {
    match crate::error::KINDS
        .iter()
        .find(|(known, _, _)| *known == kind)
    {
        Some((kind, status, title)) => Ok(Json(ProblemType {
            kind: kind.to_string(),
            status: *status,
            title: title.to_string(),
        })),
        None => Err(ApiError::not_found(format!("no error kind {kind:?}"))),
    }
}
