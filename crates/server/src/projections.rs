//! The projections over HTTP: `GET /v1/projections` (each one's status,
//! position and lag), `POST /v1/projections/{name}/rebuild`, and deploying
//! them: `PUT /v1/projections/{name}`, `POST .../rollback` and
//! `GET .../history` (see [`eshost_read::deployed`]).
//!
//! A server that runs the projections (`eshost serve --run-projections`)
//! can rebuild them: the rebuild projects every event into a new
//! generation of the view beside the live one, in the background, and
//! switches readers over when it has caught up (see
//! [`eshost_read::projector::rebuild`]). The answer comes at once (202);
//! the new generation shows in `GET /v1/projections` when it is live. One
//! rebuild of a projection runs at a time.
//!
//! Any server that takes deployments takes a projection's: it is recorded
//! in the store, and every process running projections on that store runs
//! it within about a second.

use crate::App;
use crate::auth::TokenName;
use crate::deploy::{
    HistoryPage, history_of, invalid_component, no_earlier_version, reloader, token_name,
};
use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use eshost_api::{DeployAnswer, Deployment, Problem, ProjectionInfo, ProjectionStatus};
use eshost_core::{ComponentKind, digest_label};
use eshost_read::deployed::{self, DeployError};
use eshost_read::projector;
use eshost_read::supervisor::Running;
use eshost_wasm::LoadedProjection;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// The projections this server runs, as its supervisor wants them, and
/// the rebuilds under way.
pub struct ProjectionsHere {
    running: Running,
    rebuilding: Mutex<HashSet<String>>,
}

impl ProjectionsHere {
    pub fn new(running: Running) -> Self {
        Self {
            running,
            rebuilding: Mutex::default(),
        }
    }

    fn rebuilding(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.rebuilding.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The one of that name that runs here.
    fn running(&self, name: &str) -> Option<Arc<LoadedProjection>> {
        self.running
            .borrow()
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    /// The aggregate types each projection running here reads, by name.
    pub(crate) fn reads(&self) -> BTreeMap<String, Vec<String>> {
        self.running
            .borrow()
            .iter()
            .map(|p| (p.name.clone(), p.aggregates.clone()))
            .collect()
    }
}

/// A rebuild under way: its name leaves the set when this drops, however
/// the rebuild ends.
struct Rebuilding(Arc<ProjectionsHere>, String);

impl Drop for Rebuilding {
    fn drop(&mut self) {
        self.0.rebuilding().remove(&self.1);
    }
}

/// `GET /v1/projections`: every projection the store has a record of.
#[utoipa::path(
    get,
    path = "/v1/projections",
    operation_id = "projections",
    summary = "Every projection: status, position, lag, the last error",
    responses(
        (status = 200, description = "By name", body = Vec<ProjectionStatus>),
        (status = 503, description = "The store failed for now", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "projections"
)]
pub async fn list(State(app): State<App>) -> Result<Json<Vec<ProjectionStatus>>, ApiError> {
    let views = app.host.store().views();
    let records = views.projections().await?;
    let reads = app.projection_reads();
    let mut listed = Vec::with_capacity(records.len());
    for record in records {
        let read = reads.get(&record.name);
        let lag = crate::read_side::lag_of(views, record.position, read).await?;
        let rebuilding = app
            .projections
            .as_ref()
            .is_some_and(|here| here.rebuilding().contains(&record.name));
        listed.push(ProjectionStatus {
            runs_here: read.is_some(),
            lag,
            rebuilding,
            record,
        });
    }
    Ok(Json(listed))
}

/// `POST /v1/projections/{name}/rebuild`: rebuild a projection's view.
#[utoipa::path(
    post,
    path = "/v1/projections/{name}/rebuild",
    operation_id = "rebuild_projection",
    summary = "Rebuild a projection's view beside the live one, then switch readers to it",
    params(("name" = String, Path, description = "The projection", example = "sales-summary")),
    responses(
        (status = 202, description = "Started; the new generation shows in GET /v1/projections once live", body = ProjectionStatus),
        (status = 404, description = "This server does not run that projection", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`conflict`: a rebuild of it is under way", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "projections"
)]
pub async fn rebuild(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<ProjectionStatus>), ApiError> {
    let Some(here) = app.projections.clone() else {
        return Err(ApiError::not_found(
            "this server runs no projections (eshost serve --run-projections)",
        ));
    };
    let Some(component) = here.running(&name) else {
        return Err(ApiError::not_found(format!(
            "this server does not run a projection named {name}"
        )));
    };
    if !here.rebuilding().insert(name.clone()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a rebuild of {name} is under way"),
        ));
    }
    let under_way = Rebuilding(here.clone(), name.clone());
    let store = app.host.store().clone();
    let record = store
        .views()
        .projections()
        .await?
        .into_iter()
        .find(|r| r.name == name);
    tokio::spawn(async move {
        let name = &under_way.1;
        match projector::rebuild(store, component).await {
            Ok((view, progress)) => info!(projection = %name, generation = view.generation,
                position = progress.position, projected = progress.projected, "rebuilt; readers see the new generation"),
            Err(e) => warn!(projection = %name, error = %e, "the rebuild stopped"),
        }
    });
    let record = record.unwrap_or_else(|| eshost_core::ProjectionRecord {
        name: name.clone(),
        version: String::new(),
        digest: String::new(),
        generation: 0,
        position: 0,
        status: eshost_core::view::STATUS_OK.into(),
        error: None,
        updated_at: String::new(),
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(ProjectionStatus {
            record,
            lag: None,
            runs_here: true,
            rebuilding: true,
        }),
    ))
}

/// A refusal of the read side's deployer, as the HTTP API answers it.
pub fn deploy_error(error: DeployError) -> ApiError {
    match error {
        DeployError::InvalidComponent(message) => invalid_component(message),
        DeployError::NotDeployed(message) => ApiError::not_found(message),
        DeployError::NoEarlierVersion(message) => no_earlier_version(message),
        DeployError::Store(e) => e.into(),
    }
}

/// A projection's deployment, as the HTTP API answers it.
pub fn deploy_answer(deployed: deployed::Deployed<LoadedProjection>) -> DeployAnswer {
    let projection = &deployed.component;
    DeployAnswer {
        deployment: deployed.deployment,
        aggregate: None,
        projection: Some(ProjectionInfo {
            name: projection.name.clone(),
            version: projection.version.clone(),
            digest: digest_label(&projection.digest),
            reads: projection.aggregates.clone(),
        }),
        reactor: None,
        check: None,
    }
}

/// `PUT /v1/projections/{name}`: deploy a version of a projection.
#[utoipa::path(
    put,
    path = "/v1/projections/{name}",
    operation_id = "deploy_projection",
    summary = "Deploy a version of a projection's component",
    description = "Loaded in the sandbox, recorded in the store, and run within about a second wherever projections run on that store. It goes on from the view's checkpoint; a rebuild recomputes the view from the start.",
    params(("name" = String, Path, description = "The projection the component implements", example = "sales-summary")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The component's bytes (any content type is taken)"),
    responses(
        (status = 200, description = "Recorded (or live already: no deployment recorded)", body = DeployAnswer),
        (status = 404, description = "The server takes no deployments", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The component is over the upload limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_component`: not a projection component this server loads, or another projection's", body = Problem, content_type = "application/problem+json"),
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
    let deployed = deployed::deploy::<LoadedProjection>(
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

/// `POST /v1/projections/{name}/rollback`: bring back the previous version.
#[utoipa::path(
    post,
    path = "/v1/projections/{name}/rollback",
    operation_id = "rollback_projection",
    summary = "Bring back the version of a projection live before the current one",
    params(("name" = String, Path, description = "The projection", example = "sales-summary")),
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
    let deployed =
        deployed::rollback::<LoadedProjection>(&*store, &runtime, &name, token_name(token))
            .await
            .map_err(deploy_error)?;
    Ok(Json(deploy_answer(deployed)))
}

/// `GET /v1/projections/{name}/history`: the deployments of a projection.
#[utoipa::path(
    get,
    path = "/v1/projections/{name}/history",
    operation_id = "projection_deployment_history",
    summary = "The deployments of a projection, newest first",
    params(("name" = String, Path, description = "The projection", example = "sales-summary"), HistoryPage),
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
    history_of(&app, ComponentKind::Projection, &name, page).await
}
