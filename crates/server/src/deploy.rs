//! Deploying an aggregate's component to a running server, with the
//! upgrade check built in (see [`crate::reload`] for what is live):
//!
//! - `PUT /v1/modules/{name}` takes the component's bytes, loads it in the
//!   sandbox, runs the upgrade check against the recorded streams (as the
//!   server is configured, within [`CHECK_DEADLINE`]) and, if it passes,
//!   records it in the store and switches it in; every host on the store
//!   follows within about a second. A refusal answers 409 with the check's
//!   report and is recorded, so that digest is never checked again.
//! - `POST /v1/modules/{name}/rollback` brings back the version live before
//!   the current one, after the same check (events the newer version
//!   recorded may not load in the older one).
//! - `GET /v1/modules/{name}/history` pages through the deployments.
//!
//! Deployments take the reloader's turn, so they and reloads never
//! interleave.

use crate::App;
use crate::auth::TokenName;
use crate::error::ApiError;
use crate::reload::Reloader;
use crate::upgrade_check::{CHECK_DEADLINE, Verdict, check, described};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use eshost_api::{DeployAnswer, Deployment, Problem};
use eshost_core::{ComponentKind, DeployAction, digest_label};
use eshost_store::NewDeployment;
use eshost_store::deployments::{MAX_HISTORY_PAGE, RollbackTarget, origin, rollback_target};
use eshost_wasm::LoadedComponent;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::info;

/// The most a component upload may hold, unless configured otherwise.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 32 << 20;

impl Reloader {
    /// Deploys `bytes` as the component of the aggregate `name`, by the
    /// token named `by` (see the module doc).
    pub async fn deploy(
        &self,
        app: &App,
        name: &str,
        bytes: Vec<u8>,
        by: Option<String>,
    ) -> Result<DeployAnswer, ApiError> {
        let origin = PathBuf::from(format!("upload/{name}.wasm"));
        let component = Arc::new(self.load(bytes.clone(), origin).await?);
        if component.name != name {
            return Err(invalid_component(format!(
                "the component is aggregate {}, not {name}: deploy it as PUT /v1/modules/{}",
                component.name, component.name
            )));
        }
        let digest = digest_label(&component.digest);
        let mut found = self.running.lock().await;
        let deployments = app.host.store().deployments();
        let live = deployments
            .live_deployments(ComponentKind::Aggregate)
            .await?;
        if live.iter().any(|d| d.name == name && d.digest == digest) {
            return Ok(DeployAnswer {
                deployment: None,
                aggregate: aggregate_info(app, name),
                projection: None,
                reactor: None,
                check: None,
            });
        }
        if let Some(seen) = deployments
            .deployment_of(ComponentKind::Aggregate, name, &digest)
            .await?
            && seen.action == DeployAction::Refused
        {
            return Err(upgrade_refused(
                format!(
                    "{} was refused before, and is not checked again: {}",
                    described(&component),
                    seen.reason.unwrap_or_default()
                ),
                None,
            ));
        }
        let check = self.check_against_live(app, name, &component).await;
        let check = match check {
            Ok(report) => report,
            Err(Refusal::Failed(report, reason)) => {
                let refusal = NewDeployment {
                    kind: ComponentKind::Aggregate,
                    name: name.into(),
                    version: component.version.clone(),
                    digest,
                    action: DeployAction::Refused,
                    reason: Some(reason.clone()),
                    by,
                };
                deployments.record_deployment(&refusal, None).await?;
                return Err(upgrade_refused(
                    format!("{} not deployed: {reason}", described(&component)),
                    Some(report),
                ));
            }
            Err(Refusal::CouldNotRun(error)) => return Err(error),
        };
        let deployed = NewDeployment {
            kind: ComponentKind::Aggregate,
            name: name.into(),
            version: component.version.clone(),
            digest,
            action: DeployAction::Deployed,
            reason: None,
            by,
        };
        let recorded = deployments
            .record_deployment(&deployed, Some(&bytes))
            .await?;
        info!(aggregate = %name, version = %component.version, id = recorded.id,
            by = recorded.by.as_deref().unwrap_or("-"), "deployed");
        self.reload_locked(app, &mut found, Some(component)).await;
        Ok(DeployAnswer {
            deployment: Some(recorded),
            aggregate: aggregate_info(app, name),
            projection: None,
            reactor: None,
            check,
        })
    }

    /// Brings back the version of `name` that was live before the current
    /// one, after the upgrade check.
    pub async fn rollback(
        &self,
        app: &App,
        name: &str,
        by: Option<String>,
    ) -> Result<DeployAnswer, ApiError> {
        let mut found = self.running.lock().await;
        let deployments = app.host.store().deployments();
        let (earlier, bytes) =
            match rollback_target(deployments, ComponentKind::Aggregate, name).await? {
                RollbackTarget::NotDeployed => {
                    return Err(ApiError::not_found(format!("no {name} is deployed")));
                }
                RollbackTarget::OnlyVersion(live) => {
                    return Err(no_earlier_version(format!(
                        "{name} {} is the only version deployed",
                        live.version
                    )));
                }
                RollbackTarget::Earlier(earlier, None) => {
                    return Err(no_earlier_version(format!(
                        "{name} {}: the store does not keep its bytes",
                        earlier.version
                    )));
                }
                RollbackTarget::Earlier(earlier, Some(bytes)) => (earlier, bytes),
            };
        let component = Arc::new(self.load(bytes, origin(&earlier)).await?);
        let check = match self.check_against_live(app, name, &component).await {
            Ok(report) => report,
            // A rollback refused is not the old version's verdict: later
            // events may be what it cannot read. Nothing is recorded.
            Err(Refusal::Failed(report, reason)) => {
                return Err(upgrade_refused(
                    format!("{} not rolled back to: {reason}", described(&component)),
                    Some(report),
                ));
            }
            Err(Refusal::CouldNotRun(error)) => return Err(error),
        };
        let rolled_back = NewDeployment {
            kind: ComponentKind::Aggregate,
            name: name.into(),
            version: earlier.version.clone(),
            digest: earlier.digest.clone(),
            action: DeployAction::RolledBack,
            reason: None,
            by,
        };
        let recorded = deployments.record_deployment(&rolled_back, None).await?;
        info!(aggregate = %name, version = %earlier.version, id = recorded.id,
            by = recorded.by.as_deref().unwrap_or("-"), "rolled back");
        self.reload_locked(app, &mut found, Some(component)).await;
        Ok(DeployAnswer {
            deployment: Some(recorded),
            aggregate: aggregate_info(app, name),
            projection: None,
            reactor: None,
            check,
        })
    }

    /// Loads a component from its bytes, off the async runtime.
    async fn load(&self, bytes: Vec<u8>, origin: PathBuf) -> Result<LoadedComponent, ApiError> {
        let runtime = self.runtime.clone();
        match tokio::task::spawn_blocking(move || runtime.load_bytes(bytes, &origin)).await {
            Ok(Ok(component)) => Ok(component),
            Ok(Err(e)) => Err(invalid_component(e.to_string())),
            Err(e) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("loading the component panicked: {e}"),
            )),
        }
    }

    /// The upgrade check of `candidate` against what this host serves for
    /// `name`, as the server is configured; the report when one ran.
    async fn check_against_live(
        &self,
        app: &App,
        name: &str,
        candidate: &Arc<LoadedComponent>,
    ) -> Result<Option<serde_json::Value>, Refusal> {
        let Some(selection) = &app.config.upgrade_check else {
            return Ok(None);
        };
        let baseline = app.host.modules().get(name).cloned();
        let to_json = |report| serde_json::to_value(report).ok();
        match check(app, baseline, candidate, selection).await {
            Verdict::Passed(report) => Ok(to_json(&report)),
            Verdict::Failed(report, reason) => Err(Refusal::Failed(
                to_json(&report).unwrap_or_default(),
                reason,
            )),
            Verdict::CouldNotRun(e) => Err(Refusal::CouldNotRun(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!(
                        "the upgrade check could not run ({e}); nothing deployed (the check may take up to {} s)",
                        CHECK_DEADLINE.as_secs()
                    ),
                )
            })),
        }
    }
}

/// Why a check let nothing go live.
enum Refusal {
    /// The report, and why in one line.
    Failed(serde_json::Value, String),
    CouldNotRun(ApiError),
}

fn aggregate_info(app: &App, name: &str) -> Option<eshost_api::AggregateInfo> {
    app.aggregates().into_iter().find(|a| a.name == name)
}

pub(crate) fn invalid_component(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_component",
        message,
    )
}

fn upgrade_refused(message: String, report: Option<serde_json::Value>) -> ApiError {
    ApiError {
        check: report,
        ..ApiError::new(StatusCode::CONFLICT, "upgrade_refused", message)
    }
}

pub(crate) fn no_earlier_version(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "no_earlier_version", message)
}

/// The reloader, or 404 on a server built without one.
pub(crate) fn reloader(app: &App) -> Result<Arc<Reloader>, ApiError> {
    app.reloader.clone().ok_or_else(|| {
        ApiError::not_found(
            "this server serves the components it was built with; it takes no deployments",
        )
    })
}

pub(crate) fn token_name(token: Option<Extension<TokenName>>) -> Option<String> {
    token.map(|Extension(TokenName(name))| name.to_string())
}

/// `PUT /v1/modules/{name}`: deploy a new version of an aggregate.
#[utoipa::path(
    put,
    path = "/v1/modules/{name}",
    operation_id = "deploy",
    summary = "Deploy a version of an aggregate's component, after the upgrade check",
    params(("name" = String, Path, description = "The aggregate the component implements", example = "FlashSaleItem")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The component's bytes (any content type is taken)"),
    responses(
        (status = 200, description = "Live on this server, and within about a second on every server on its store (or live already: no deployment recorded)", body = DeployAnswer),
        (status = 404, description = "The server takes no deployments", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`upgrade_refused`: the check failed (its report is in `check`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The component is over the upload limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_component`: not a component this server loads, or another aggregate's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed, or the check could not run in time; nothing deployed", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "admin"
)]
pub async fn deploy(
    State(app): State<App>,
    Path(name): Path<String>,
    token: Option<Extension<TokenName>>,
    body: Bytes,
) -> Result<Json<DeployAnswer>, ApiError> {
    let reloader = reloader(&app)?;
    let answer = reloader
        .deploy(&app, &name, body.to_vec(), token_name(token))
        .await?;
    Ok(Json(answer))
}

/// `POST /v1/modules/{name}/rollback`: bring back the previous version.
#[utoipa::path(
    post,
    path = "/v1/modules/{name}/rollback",
    operation_id = "rollback",
    summary = "Bring back the version live before the current one, after the upgrade check",
    params(("name" = String, Path, description = "The aggregate", example = "FlashSaleItem")),
    responses(
        (status = 200, description = "The earlier version is live again", body = DeployAnswer),
        (status = 404, description = "Nothing of that name is deployed, or the server takes no deployments", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`no_earlier_version`, or `upgrade_refused`: the earlier version cannot read what is recorded now", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_component`: the earlier version no longer loads on this server", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed, or the check could not run in time; nothing changed", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "admin"
)]
pub async fn rollback(
    State(app): State<App>,
    Path(name): Path<String>,
    token: Option<Extension<TokenName>>,
) -> Result<Json<DeployAnswer>, ApiError> {
    let reloader = reloader(&app)?;
    Ok(Json(
        reloader.rollback(&app, &name, token_name(token)).await?,
    ))
}

/// Which page of a history.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryPage {
    /// Entries with ids below this one (the last id of the page before).
    before: Option<i64>,
    /// At most this many entries (default and at most 1,000).
    limit: Option<u64>,
}

/// `GET /v1/modules/{name}/history`: the deployments of an aggregate.
#[utoipa::path(
    get,
    path = "/v1/modules/{name}/history",
    operation_id = "deployment_history",
    summary = "The deployments of an aggregate, newest first",
    params(("name" = String, Path, description = "The aggregate", example = "FlashSaleItem"), HistoryPage),
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
    history_of(&app, ComponentKind::Aggregate, &name, page).await
}

/// A page of the deployments of `name` of `kind`, newest first.
pub(crate) async fn history_of(
    app: &App,
    kind: ComponentKind,
    name: &str,
    page: Result<Query<HistoryPage>, QueryRejection>,
) -> Result<Json<Vec<Deployment>>, ApiError> {
    let Query(page) = page.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page.limit.unwrap_or(MAX_HISTORY_PAGE).min(MAX_HISTORY_PAGE);
    let entries = app
        .host
        .store()
        .deployments()
        .deployment_history(kind, name, page.before, limit)
        .await?;
    Ok(Json(entries))
}
