//! The reactors over HTTP: `GET /v1/reactors` (each one's position, lag,
//! parked events, timers and policy), `GET /v1/reactors/{name}/parked`,
//! `POST /v1/reactors/{name}/retry` and `PUT /v1/reactors/{name}/policy`;
//! and their deployments, as for projections (`PUT /v1/reactors/{name}`,
//! `POST .../rollback`, `GET .../history`; see `eshost_read::deployed`).
//!
//! Any server on the store answers them: what a reactor has done is in the
//! store, and a retry or a policy change is a row there that the runner
//! holding the reactor's lease, on whatever host, takes on its next pass.

use crate::App;
use crate::auth::TokenName;
use crate::deploy::{HistoryPage, history_of, reloader, token_name};
use crate::error::ApiError;
use crate::projections::deploy_error;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use eshost_api::{
    DeployAnswer, Deployment, ParkedEvent, Problem, ReactorInfo, ReactorPolicy, ReactorStatus,
    RetryAnswer,
};
use eshost_core::{ComponentKind, digest_label};
use eshost_read::deployed;
use eshost_wasm::LoadedReactor;
use serde::Deserialize;

/// A reactor's deployment, as the HTTP API answers it.
pub fn deploy_answer(deployed: deployed::Deployed<LoadedReactor>) -> DeployAnswer {
    let reactor = &deployed.component;
    DeployAnswer {
        deployment: deployed.deployment,
        aggregate: None,
        projection: None,
        reactor: Some(ReactorInfo {
            name: reactor.name.clone(),
            version: reactor.version.clone(),
            digest: digest_label(&reactor.digest),
            reads: reactor
                .subscriptions
                .iter()
                .map(|s| s.aggregate.clone())
                .collect(),
            sinks: reactor.sinks.clone(),
        }),
        check: None,
    }
}

/// `PUT /v1/reactors/{name}`: deploy a version of a reactor.
#[utoipa::path(
    put,
    path = "/v1/reactors/{name}",
    operation_id = "deploy_reactor",
    summary = "Deploy a version of a reactor's component",
    description = "Loaded in the sandbox, recorded in the store, and run within about a second wherever reactors run on that store (one runner at a time, by the reactor's lease). It goes on from the reactor's checkpoint.",
    params(("name" = String, Path, description = "The reactor the component implements", example = "checkout")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The component's bytes (any content type is taken)"),
    responses(
        (status = 200, description = "Recorded (or live already: no deployment recorded)", body = DeployAnswer),
        (status = 404, description = "The server takes no deployments", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The component is over the upload limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_component`: not a reactor component this server loads, or another reactor's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed; nothing deployed", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "admin"
)]
pub async fn deploy(
    State(app): State<App>,
    Path(name): Path<String>,
    token: Option<Extension<TokenName>>,
    body: Bytes,
) -> Result<Json<DeployAnswer>, ApiError> {
    let runtime = reloader(&app)?.runtime.clone();
    let store = app.host.store().clone();
    let deployed = deployed::deploy::<LoadedReactor>(
        &*store,
        &runtime,
        &name,
        body.to_vec(),
        token_name(token),
    )
    .await
    .map_err(deploy_error)?;
    Ok(Json(deploy_answer(deployed)))
}

/// `POST /v1/reactors/{name}/rollback`: bring back the previous version.
#[utoipa::path(
    post,
    path = "/v1/reactors/{name}/rollback",
    operation_id = "rollback_reactor",
    summary = "Bring back the version of a reactor live before the current one",
    params(("name" = String, Path, description = "The reactor", example = "checkout")),
    responses(
        (status = 200, description = "The earlier version is live again", body = DeployAnswer),
        (status = 404, description = "Nothing of that name is deployed, or the server takes no deployments", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`no_earlier_version`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_component`: the earlier version no longer loads on this server", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed; nothing changed", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "admin"
)]
pub async fn rollback(
    State(app): State<App>,
    Path(name): Path<String>,
    token: Option<Extension<TokenName>>,
) -> Result<Json<DeployAnswer>, ApiError> {
    let runtime = reloader(&app)?.runtime.clone();
    let store = app.host.store().clone();
    let deployed = deployed::rollback::<LoadedReactor>(&*store, &runtime, &name, token_name(token))
        .await
        .map_err(deploy_error)?;
    Ok(Json(deploy_answer(deployed)))
}

/// `GET /v1/reactors/{name}/history`: the deployments of a reactor.
#[utoipa::path(
    get,
    path = "/v1/reactors/{name}/history",
    operation_id = "reactor_deployment_history",
    summary = "The deployments of a reactor, newest first",
    params(("name" = String, Path, description = "The reactor", example = "checkout"), HistoryPage),
    responses(
        (status = 200, description = "Newest first", body = Vec<Deployment>),
        (status = 400, description = "A malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed for now", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "admin"
)]
pub async fn history(
    State(app): State<App>,
    Path(name): Path<String>,
    page: Result<Query<HistoryPage>, QueryRejection>,
) -> Result<Json<Vec<Deployment>>, ApiError> {
    history_of(&app, ComponentKind::Reactor, &name, page).await
}

/// `GET /v1/reactors`: every reactor the store has a record of.
#[utoipa::path(
    get,
    path = "/v1/reactors",
    operation_id = "reactors",
    summary = "Every reactor: position, lag, parked events, timers, policy",
    responses(
        (status = 200, description = "By name", body = Vec<ReactorStatus>),
        (status = 503, description = "The store failed for now", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "reactors"
)]
pub async fn list(State(app): State<App>) -> Result<Json<Vec<ReactorStatus>>, ApiError> {
    let store = app.host.store();
    let reactions = store.reactions();
    let reads = app.reactor_reads();
    let mut listed = Vec::new();
    for record in reactions.reactors().await? {
        let lag = crate::read_side::lag_of(store.views(), record.position, reads.get(&record.name))
            .await?;
        let counts = reactions.reactor_counts(&record.name).await?;
        // Under `stop`, it stopped at the first parked event after its
        // position (it parks at most that one while stopped).
        let stopped_at = match record.on_failure {
            eshost_core::OnFailure::Stop if counts.parked > 0 => reactions
                .parked_events(&record.name)
                .await?
                .iter()
                .map(|p| p.position)
                .find(|&p| p > record.position),
            _ => None,
        };
        listed.push(ReactorStatus {
            parked: counts.parked,
            timers: counts.timers,
            pending: counts.pending,
            digest: if record.digest.is_empty() {
                String::new()
            } else {
                digest_label(&record.digest)
            },
            name: record.name,
            version: record.version,
            position: record.position,
            lag,
            on_failure: record.on_failure,
            stopped_at,
        });
    }
    Ok(Json(listed))
}

/// `GET /v1/reactors/{name}/parked`: the events a reactor parked.
#[utoipa::path(
    get,
    path = "/v1/reactors/{name}/parked",
    operation_id = "parked_events",
    summary = "The events a reactor parked, with the reasons",
    params(("name" = String, Path, description = "The reactor", example = "checkout")),
    responses(
        (status = 200, description = "In position order; empty for a reactor with none", body = Vec<ParkedEvent>),
        (status = 503, description = "The store failed for now", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "reactors"
)]
pub async fn parked(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ParkedEvent>>, ApiError> {
    let parked = app.host.store().reactions().parked_events(&name).await?;
    Ok(Json(
        parked
            .into_iter()
            .map(|p| ParkedEvent {
                reactor: p.reactor,
                position: p.position,
                event: p.event,
                reason: p.reason,
                at_ms: p.at_ms,
                retry_requested_at_ms: p.retry_requested_at_ms,
            })
            .collect(),
    ))
}

/// The query of `POST /v1/reactors/{name}/retry`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetryQuery {
    /// Only the parked event at this position (else every one).
    position: Option<i64>,
}

/// `POST /v1/reactors/{name}/retry`: ask for parked events to be retried.
#[utoipa::path(
    post,
    path = "/v1/reactors/{name}/retry",
    operation_id = "retry_parked",
    summary = "Ask for a reactor's parked events (or one) to be retried by its runner",
    params(("name" = String, Path, description = "The reactor", example = "checkout"), RetryQuery),
    responses(
        (status = 202, description = "Marked: the runner holding the reactor's lease retries them on its next pass", body = RetryAnswer),
        (status = 400, description = "A malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No parked event (at that position)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed for now", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "reactors"
)]
pub async fn retry(
    State(app): State<App>,
    Path(name): Path<String>,
    query: Result<Query<RetryQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<RetryAnswer>), ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let asked = app
        .host
        .store()
        .reactions()
        .request_retry(&name, query.position, eshost_core::now_ms())
        .await?;
    if asked == 0 {
        return Err(ApiError::not_found(format!(
            "{name} has no parked event{}",
            query
                .position
                .map_or(String::new(), |p| format!(" at position {p}"))
        )));
    }
    tracing::info!(reactor = %name, asked, position = ?query.position, "retry of parked events asked for");
    Ok((
        StatusCode::ACCEPTED,
        Json(RetryAnswer {
            reactor: name,
            asked,
        }),
    ))
}

/// `PUT /v1/reactors/{name}/policy`: what a reactor does with an event it
/// fails.
#[utoipa::path(
    put,
    path = "/v1/reactors/{name}/policy",
    operation_id = "reactor_policy",
    summary = "Set what a reactor does with an event it fails: park it and go on, or stop there",
    params(("name" = String, Path, description = "The reactor", example = "checkout")),
    request_body(content = ReactorPolicy, content_type = "application/json"),
    responses(
        (status = 200, description = "Set; every runner of the reactor follows it from its next pass", body = ReactorPolicy),
        (status = 422, description = "Not a policy", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed for now", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "reactors"
)]
pub async fn policy(
    State(app): State<App>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ReactorPolicy>, ApiError> {
    let policy: ReactorPolicy = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
            format!("a policy is {{\"on_failure\": \"park\" or \"stop\"}}: {e}"),
        )
    })?;
    app.host
        .store()
        .reactions()
        .set_on_failure(&name, policy.on_failure, eshost_core::now_ms())
        .await?;
    tracing::info!(reactor = %name, on_failure = policy.on_failure.as_str(), "reactor policy set");
    Ok(Json(policy))
}
