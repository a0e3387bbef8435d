//! The HTTP routes: commands, aggregates, state, events, health.
//! Handlers are thin: read the request, call the [`Host`], shape the answer.

use super::App;
use super::error::ApiError;
use crate::dispatch::{CommandOutcome, CommandRequest};
use crate::runtime::modules::{AggregateInfo, ReloadReport};
use crate::store::RecordedEvent;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The header carrying the command id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const CORRELATION_ID: &str = "x-correlation-id";
pub const CAUSATION_ID: &str = "x-causation-id";

/// Events one page holds when the request names no limit, and at most.
pub const DEFAULT_PAGE: u64 = 1_000;
pub const MAX_PAGE: u64 = 10_000;

/// `GET /v1/aggregates/{aggregate}/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateAnswer {
    pub aggregate: String,
    pub id: String,
    /// The sequence number of the last event the state includes; 0 for an
    /// aggregate with no events.
    pub version: u64,
    pub state: serde_json::Value,
}

/// `GET /v1/aggregates/{aggregate}/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventsPage {
    pub events: Vec<RecordedEvent>,
    /// `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    after: Option<u64>,
    limit: Option<u64>,
}

/// `POST /v1/aggregates/{aggregate}/{id}/commands/{command}`.
pub async fn command(
    State(app): State<App>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CommandOutcome>, ApiError> {
    let Path((aggregate, id, command)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let header = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| ApiError::bad_request(format!("{name} is not visible ASCII")))
            })
            .transpose()
    };
    // The id is settled before anything can fail, so every answer carries
    // it: a caller can always resend safely.
    let command_id = header(IDEMPOTENCY_KEY)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
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
        command_id: Some(command_id.clone()),
        correlation_id: header(CORRELATION_ID).map_err(with_id)?,
        causation_id: header(CAUSATION_ID).map_err(with_id)?,
        ..CommandRequest::new(aggregate, id, command, payload)
    };
    let deadline = app.config.command_timeout;
    match tokio::time::timeout(deadline, app.host.execute(&request)).await {
        Ok(Ok(outcome)) => Ok(Json(outcome)),
        Ok(Err(error)) => Err(with_id(error.into())),
        Err(_elapsed) => Err(ApiError::timeout(&command_id, deadline)),
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
pub async fn aggregates(State(app): State<App>) -> Json<Vec<AggregateInfo>> {
    Json(app.host.modules().describe())
}

/// `GET /v1/aggregates/{aggregate}/{id}`.
pub async fn state(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<StateAnswer>, ApiError> {
    let Path((aggregate, id)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (json, version) = app.host.render(&aggregate, &id).await?;
    let state = serde_json::from_str(&json).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "guest_fault",
            format!("{aggregate}: to-json returned text that is not JSON: {e}"),
        )
    })?;
    Ok(Json(StateAnswer {
        aggregate,
        id,
        version,
        state,
    }))
}

/// `GET /v1/aggregates/{aggregate}/{id}/events?after=N&limit=M`.
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

/// `GET /metrics`: Prometheus' text format.
pub async fn metrics(State(app): State<App>) -> Response {
    let text = app.host.render_metrics();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: ready to take commands: the store answers and modules are
/// loaded. Lists the files the last reload could not load (the versions
/// already running keep serving).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// "ok", or why the store did not answer.
    pub store: String,
    pub aggregates: usize,
    pub load_errors: Vec<String>,
}

pub async fn readyz(State(app): State<App>) -> Response {
    let store = match tokio::time::timeout(std::time::Duration::from_secs(2), app.host.ping()).await
    {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 2 s".to_string(),
    };
    let aggregates = app.host.modules().len();
    let readiness = Readiness {
        ready: store == "ok" && aggregates > 0 && !app.host.is_shutting_down(),
        store,
        aggregates,
        load_errors: app.load_errors(),
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
