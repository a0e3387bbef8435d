//! The projections over HTTP: `GET /v1/projections` (each one's status,
//! position and lag) and `POST /v1/projections/{name}/rebuild` (admin).
//!
//! A server that runs the projections (`eshost serve --run-projections`)
//! can rebuild them: the rebuild projects every event into a new
//! generation of the view beside the live one, in the background, and
//! switches readers over when it has caught up (see
//! [`eshost_read::projector::rebuild`]). The answer comes at once (202);
//! the new generation shows in `GET /v1/projections` when it is live. One
//! rebuild of a projection runs at a time.

use crate::App;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use eshost_api::{Problem, ProjectionStatus};
use eshost_read::projector;
use eshost_wasm::Runtime;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// The projections this server runs: where to load them from, to
/// rebuild one, and the rebuilds under way.
pub struct ProjectionsHere {
    runtime: Runtime,
    dir: PathBuf,
    rebuilding: Mutex<HashSet<String>>,
}

impl ProjectionsHere {
    pub fn new(runtime: Runtime, dir: PathBuf) -> Self {
        Self {
            runtime,
            dir,
            rebuilding: Mutex::default(),
        }
    }

    fn rebuilding(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.rebuilding.lock().unwrap_or_else(|p| p.into_inner())
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
    let mut listed = Vec::with_capacity(records.len());
    for record in records {
        let read = app.config.projection_aggregates.get(&record.name);
        let lag = match read {
            Some(aggregates) => Some(
                views
                    .events_after(
                        record.position,
                        aggregates,
                        crate::read_side::MAX_LAG_COUNTED,
                    )
                    .await?,
            ),
            None => None,
        };
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
        (status = 422, description = "`invalid_component`: its component does not load", body = Problem, content_type = "application/problem+json"),
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
    let (runtime, dir) = (here.runtime.clone(), here.dir.clone());
    let loaded = tokio::task::spawn_blocking(move || runtime.load_projections(&dir))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_component",
                e.to_string(),
            )
        })?;
    let Some(component) = loaded.into_iter().find(|p| p.name == name) else {
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
